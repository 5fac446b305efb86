"""Redaction on a planted corpus: ordinary CI lines plus secrets of every kind."""

import random
import string

import pytest

from services.detector.redaction import StreamingRedactor, redact


def _random(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def _planted(rng: random.Random) -> list[tuple[str, str]]:
    """(line containing a fresh secret, the secret) — one of each kind."""
    aws_id = "AKIA" + _random(rng, UPPER_DIGITS, 16)
    aws_secret = _random(rng, ALNUM + "/+", 40)
    github = "ghp_" + _random(rng, ALNUM, 36)
    github_pat = "github_pat_" + _random(rng, ALNUM + "_", 82)
    gitlab = "glpat-" + _random(rng, ALNUM + "-_", 20)
    slack = (
        "xoxb-" + _random(rng, string.digits, 12) + "-" + _random(rng, string.digits, 12)
        + "-" + _random(rng, ALNUM, 24)
    )
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ" + _random(rng, ALNUM, 30) + "." + _random(rng, ALNUM + "-_", 43)
    gcp = "AIza" + _random(rng, ALNUM + "-_", 35)
    azure = _random(rng, ALNUM + "+/", 86) + "=="
    password = _random(rng, ALNUM + "!#%", 14)
    url_password = _random(rng, ALNUM, 12)
    token_value = _random(rng, ALNUM, 32)
    entropy = (
        _random(rng, string.ascii_lowercase, 8) + _random(rng, string.ascii_uppercase, 8)
        + _random(rng, string.digits, 8)
    )
    stripe = "sk_live_" + _random(rng, ALNUM, 24)
    return [
        (f"  AWS_ACCESS_KEY_ID: {aws_id}", aws_id),
        (f"export AWS_SECRET_ACCESS_KEY={aws_secret}", aws_secret),
        (f"+ git remote set-url origin https://x-access-token:{github}@github.com/acme/web", github),
        (f"  GH_PAT={github_pat}", github_pat),
        (f"Using token {gitlab} for the registry", gitlab),
        (f"curl -d 'token={slack}' https://slack.com/api/chat.postMessage", slack),
        (f"Authorization: Bearer {jwt}", jwt),
        (f"maps api key loaded: {gcp}", gcp),
        (f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={azure};EndpointSuffix=core.windows.net", azure),
        (f"  DB_PASSWORD={password}", password),
        (f"pip install --index-url https://ci-bot:{url_password}@pypi.acme.internal/simple pkg", url_password),
        (f"  NPM_TOKEN: {token_value}", token_value),
        (f"settings.signing_salt = '{entropy}'", entropy),
        (f"charging with {stripe}", stripe),
    ]


ORDINARY = [
    "2025-03-11T10:09:44.1180000Z ##[group]Run actions/checkout@v4",
    "remote: Counting objects: 100% (1843/1843), done.",
    "[command]/usr/bin/git -c protocol.version=2 fetch --no-tags --depth=1 origin "
    "+9f2c1e7a4b3d8c6e5f1a0b9c8d7e6f5a4b3c2d1e:refs/remotes/origin/main",
    "Download action repository 'actions/cache@v4' (SHA:1bd1e32a3bdc45362d1e726936510720a7c30a57)",
    "   Compiling tokio v1.42.0",
    "tests/api/test_billing.py ....................................              [ 23%]",
    "npm http fetch GET 200 https://registry.npmjs.org/react 41ms (cache revalidated)",
    "#4 sha256:5e2b1d9c4a7f0e3b6d8c1a5f9e2b7d4c0a3f6e8b1d5c9a2e7f4b0d3c6a8e1f5b 35.00MB / 398.41MB 0.5s",
    "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/postgresql/postgresql/42.7.4/postgresql-42.7.4.pom",
    "Cache restored from key: node-cache-Linux-x64-npm-6f1e2d3c4b5a",
    "  token: ***",
    "Successfully installed fastapi-0.115.6 pydantic-2.10.4 pytest-8.3.4",
    "E       AssertionError: debounce took 0.412s",
    "    at Object.toBe (src/checkout/__tests__/discounts.test.ts:42:19)",
    "Using docker image sha256:4c2f0e1b7a9d3e5f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f for python:3.11",
    "request_id=6f0b6c4e-1d2a-4b8e-9c1f-2a7d3e5b9f10 status=200 duration=12ms",
    "Secret source: Actions",
    "ok  \tgithub.com/acme/web/internal/ledger\t0.412s",
    "Waiting for pod gitlab-runners/runner-vn3k8qlw-project-4411-concurrent-3-9xk2d to be running, status is Pending",
    "error[E0308]: mismatched types",
]


def test_planted_corpus_recall_and_false_positive_rate() -> None:
    rng = random.Random(7)
    lines: list[str] = []
    secrets: list[str] = []
    ordinary_indexes: list[int] = []
    for round_ in range(30):
        for line in ORDINARY:
            ordinary_indexes.append(len(lines))
            lines.append(line.replace("0.412", f"0.{round_:03d}"))
        for line, secret in _planted(rng):
            lines.append(line)
            secrets.append(secret)
    result = redact("\n".join(lines) + "\n")
    out = result.text.split("\n")
    assert len(out) == len(lines) + 1  # line breaks are preserved
    surviving = [s for s in secrets if s in result.text]
    recall = 1 - len(surviving) / len(secrets)
    altered = sum(out[i] != lines[i] for i in ordinary_indexes) / len(ordinary_indexes)
    assert recall >= 0.99, f"secrets survived: {surviving[:5]}"
    assert not surviving
    assert altered <= 0.01, [lines[i] for i in ordinary_indexes if out[i] != lines[i]][:5]
    assert result.count >= len(secrets)


def test_replacement_names_the_kind() -> None:
    result = redact("key AKIAABCDEFGHIJKLMNOP here\n")
    assert result.text == "key [REDACTED:aws_access_key] here\n"
    assert result.kinds == {"aws_access_key": 1}


PRIVATE_KEY = (
    "deploying with key:\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx6cD9Kq1yZ2pLm3nO4pQ5rS6tU7vW8xY9zA0bC1dE2fGAAAAJgAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\ndone\n"
)


def test_private_key_block_is_redacted_line_by_line() -> None:
    result = redact(PRIVATE_KEY)
    assert "b3BlbnNzaC1rZXkt" not in result.text and "QyNTUxOQ" not in result.text
    assert result.text.count("\n") == PRIVATE_KEY.count("\n")
    assert result.text.startswith("deploying with key:\n") and result.text.endswith("done\n")


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_streaming_redactor_handles_a_key_block_split_across_chunks(chunk_size: int) -> None:
    redactor = StreamingRedactor()
    pieces = [redactor.feed(PRIVATE_KEY[i : i + chunk_size]) for i in range(0, len(PRIVATE_KEY), chunk_size)]
    text = "".join(pieces) + redactor.finish()
    assert text == redact(PRIVATE_KEY).text


def test_unterminated_key_block_is_redacted_to_the_end() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1x2y3z\nQWERTYasdfgh123456\n"
    assert "MIIEow" not in redact(text).text


def test_masked_values_and_references_are_left_alone() -> None:
    text = "  GITHUB_TOKEN: ***\n  API_KEY=${{ secrets.API_KEY }}\n  password: $DB_PASSWORD\n"
    assert redact(text).text == text


def _every_line_redacted(text: str) -> str:
    """Reference: every rule the RE2 set says matches, applied to every line (no
    prefilter, no entropy gate shortcut) — the fast path must redact exactly this."""
    from collections import Counter

    from services.detector.redaction import _redact_line, _rule_set

    rules, kinds = _rule_set(), Counter[str]()
    return "\n".join(
        _redact_line(line.encode(), rules, kinds).decode() for line in text.split("\n")
    )


def test_the_prefilter_flags_every_line_a_rule_would_redact() -> None:
    rng = random.Random(11)
    lower_digits = string.ascii_lowercase + string.digits
    lines = [line for _ in range(20) for line, _secret in _planted(rng)] + ORDINARY
    for _ in range(300):
        # Values the tightened "long value after = or :" trigger no longer flags by itself
        # (one case and digits only) behind the keywords of rules that capture such values.
        value = _random(rng, rng.choice([lower_digits, string.ascii_lowercase, string.ascii_uppercase + "/+"]), 40)
        head = rng.choice([
            "aws_pw: '{v}'", "aws pass='{v}'", "AWS key: \"{v}\"", "cl_pass = {v}", "cloudant-key: {v}",
            "clpw={v}", "sl_api_key: {v}", "softlayer_pass = {v}", "api-key: {v}", "access-key={v}",
            "--api-key={v}", "x-api-key: {v}", "config: {v}", "KEY={v}", "sha256:{v}",
        ])
        lines.append(head.format(v=value))
        mixed = _random(rng, ALNUM + "+/_=-", rng.randint(18, 50))
        lines.append(
            rng.choice(["{k}={v}", "{k}: '{v}'", "{k} = \"{v}\"", "x={k}={v}"])
            .format(k=rng.choice(["a", "ID", "x.y"]), v=mixed)
        )
    text = "\n".join(lines) + "\n"
    assert redact(text).text == _every_line_redacted(text)
