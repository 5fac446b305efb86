"""Noise every CI log carries: runner framing, setup steps, progress bars, colours.

None of this says why a job failed; the generator wraps every failure in it so a
classifier has to find the few lines that matter among many that do not. Some
noise lines are deliberate near-misses ("test_timeout_handling PASSED", a pip
retry that then succeeded) because real logs are full of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

ESC = "\x1b"

PACKAGES_PY = ["requests", "numpy", "pydantic", "sqlalchemy", "boto3", "fastapi", "httpx", "attrs",
               "click", "jinja2", "pyyaml", "cryptography", "protobuf", "grpcio", "pandas", "lxml"]
PACKAGES_JS = ["react", "lodash", "express", "axios", "typescript", "webpack", "eslint", "jest",
               "@babel/core", "@types/node", "vite", "zod", "dayjs", "chalk", "commander"]
CRATES = ["serde", "tokio", "clap", "anyhow", "reqwest", "rand", "regex", "hyper", "tracing"]
JAVA_ARTIFACTS = ["com.fasterxml.jackson.core:jackson-databind", "org.slf4j:slf4j-api",
                  "io.netty:netty-handler", "org.apache.commons:commons-lang3",
                  "com.google.guava:guava", "org.junit.jupiter:junit-jupiter-api"]
SERVICES = ["billing", "checkout", "inventory", "auth", "search", "payments", "gateway", "reports",
            "ledger", "notifier", "catalog", "scheduler"]
WORDS = ["order", "user", "invoice", "cart", "session", "token", "report", "account", "profile",
         "shipment", "coupon", "ledger", "event", "queue", "cache", "webhook"]


def version(rng: random.Random) -> str:
    return f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"


def sha(rng: random.Random, n: int = 40) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def ident(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}_{rng.choice(['service', 'handler', 'client', 'repo', 'model', 'api'])}"


def camel(rng: random.Random) -> str:
    return rng.choice(WORDS).capitalize() + rng.choice(["Service", "Controller", "Repository", "Client",
                                                        "Mapper", "Factory", "Validator"])


def colour(rng: random.Random, text: str, code: str | None = None) -> str:
    if rng.random() < 0.5:
        return text
    return f"{ESC}[{code or rng.choice(['31', '32', '33', '36', '1', '0;33'])}m{text}{ESC}[0m"


def progress_bar(rng: random.Random) -> list[str]:
    style = rng.randrange(4)
    pkg = rng.choice(PACKAGES_PY)
    size = rng.uniform(0.2, 40)
    if style == 0:
        return [f"  Downloading {pkg}-{version(rng)}-py3-none-any.whl ({size:.1f} MB)",
                f"     {'━' * 40} {size:.1f}/{size:.1f} MB {rng.uniform(5, 90):.1f} MB/s eta 0:00:00"]
    if style == 1:
        layer = sha(rng, 12)
        return [f"{layer}: Pulling fs layer", f"{layer}: Downloading [====>        ]  {rng.randint(1, 90)}MB",
                f"{layer}: Verifying Checksum", f"{layer}: Download complete", f"{layer}: Pull complete"]
    if style == 2:
        return [f"Progress (1): {rng.randint(1, 900)}/{rng.randint(900, 2000)} kB",
                f"Downloaded from central: https://repo.maven.apache.org/maven2/org/{rng.choice(WORDS)}/"
                f"{rng.choice(WORDS)}/{version(rng)}/{rng.choice(WORDS)}-{version(rng)}.jar "
                f"({rng.randint(5, 900)} kB at {rng.uniform(0.5, 9):.1f} MB/s)"]
    return [f"[{'#' * rng.randint(1, 20):<20}] {rng.randint(1, 100)}% fetchMetadata: sill resolveWithNewModule",
            f"added {rng.randint(50, 1800)} packages, and audited {rng.randint(50, 1900)} packages in {rng.randint(2, 90)}s"]


def _setup_python(rng: random.Random) -> list[str]:
    lines = [f"Successfully set up CPython ({rng.choice(['3.10', '3.11', '3.12'])}.{rng.randint(0, 9)})",
             "$ python -m pip install -r requirements.txt",
             f"Collecting {rng.choice(PACKAGES_PY)}=={version(rng)}"]
    lines += progress_bar(rng)
    if rng.random() < 0.15:
        lines.append("  WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) "
                     "after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org', "
                     "port=443): Read timed out. (read timeout=15)\")': /simple/" + rng.choice(PACKAGES_PY) + "/")
    lines.append("Successfully installed " + " ".join(f"{p}-{version(rng)}" for p in rng.sample(PACKAGES_PY, 4)))
    return lines


def _setup_node(rng: random.Random) -> list[str]:
    tool = rng.choice(["npm ci", "yarn install --frozen-lockfile", "pnpm install --frozen-lockfile"])
    lines = [f"Found in cache @ /opt/hostedtoolcache/node/{rng.choice(['18', '20', '22'])}.{rng.randint(0, 19)}.0/x64",
             f"$ {tool}"]
    if rng.random() < 0.5:
        lines.append(f"npm WARN deprecated {rng.choice(PACKAGES_JS)}@{version(rng)}: This version is no longer supported")
    lines += progress_bar(rng)
    return lines


def _cache_restore(rng: random.Random) -> list[str]:
    key = f"{rng.choice(['Linux', 'linux'])}-{rng.choice(['pip', 'npm', 'gradle', 'cargo', 'go'])}-{sha(rng, 16)}"
    if rng.random() < 0.5:
        return [f"Cache not found for input keys: {key}"]
    return [f"Received {rng.randint(1, 400000000)} of {rng.randint(400000000, 500000000)} (100.0%), "
            f"{rng.uniform(5, 120):.1f} MBs/sec", "Cache restored successfully", f"Cache restored from key: {key}"]


def _docker_pull(rng: random.Random) -> list[str]:
    image = rng.choice(["python:3.11-slim", "node:20-alpine", "golang:1.22", "rust:1.77", "maven:3.9-eclipse-temurin-17",
                        "gradle:8.7-jdk17", "hashicorp/terraform:1.7", "alpine/helm:3.14.2"])
    return [f"Pulling docker image {image} ...", *progress_bar(rng),
            f"Using docker image sha256:{sha(rng, 64)} for {image} with digest {image.split(':')[0]}@sha256:{sha(rng, 64)} ..."]


def _passing_tests(rng: random.Random) -> list[str]:
    names = [f"test_{rng.choice(WORDS)}_{rng.choice(['is_created', 'round_trips', 'timeout_handling', 'rejects_bad_input', 'retries_on_error', 'error_path'])}"
             for _ in range(rng.randint(2, 6))]
    return [f"tests/test_{rng.choice(WORDS)}.py::{n} PASSED [{rng.randint(1, 99):>3}%]" for n in names]


def _misc(rng: random.Random) -> list[str]:
    return rng.choice([
        ["$ git submodule update --init --recursive", f"HEAD is now at {sha(rng, 7)} {rng.choice(['Fix', 'Add', 'Bump', 'Refactor'])} {rng.choice(WORDS)} {rng.choice(WORDS)}"],
        ["Run echo \"version=$(git describe --tags)\" >> $GITHUB_OUTPUT", f"v{version(rng)}"],
        [f"Environment: ENV={rng.choice(['ci', 'staging'])} LOG_LEVEL=info MAX_RETRIES=3 TIMEOUT=30s"],
        [f"warning: {rng.choice(['unused variable', 'deprecated API', 'implicit conversion'])} in {rng.choice(WORDS)}.c:{rng.randint(1, 400)}"],
        [f"Summary: 0 errors, {rng.randint(0, 5)} warnings"],
        [f"> Task :{rng.choice(SERVICES)}:processResources UP-TO-DATE", f"> Task :{rng.choice(SERVICES)}:classes"],
    ])


SETUP_STEPS: list[Callable[[random.Random], list[str]]] = [
    _setup_python, _setup_node, _cache_restore, _docker_pull, _passing_tests, _misc]


def setup_noise(rng: random.Random, n_steps: int) -> list[list[str]]:
    return [rng.choice(SETUP_STEPS)(rng) for _ in range(n_steps)]


def background_line(rng: random.Random) -> str:
    """A line from a service container that interleaves with the job's own output."""
    return rng.choice([
        f"postgres_1  | {rng.randint(2023, 2025)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 10:{rng.randint(10, 59)}:{rng.randint(10, 59)}.123 UTC [1] LOG:  checkpoint complete",
        f"redis_1     | 1:M {rng.randint(10, 28)} Mar 2024 10:{rng.randint(10, 59)}:00.{rng.randint(100, 999)} * Background saving terminated with success",
        f"[{rng.choice(SERVICES)}] INFO request completed status=200 duration_ms={rng.randint(1, 900)}",
        f"localstack_1 | {rng.choice(['INFO', 'DEBUG'])} --- [  asgi_gw_0] localstack.request.aws : AWS s3.PutObject => 200",
    ])
