"""Do the detector's failure signatures group real CI failures by cause?

    python -m bench.ci_signatures        (also run by python -m bench.loghub_grouping)

Every log of the real corpus (data/real_ci, `bench.real_ci.load_corpus`) is diagnosed
with `Diagnoser().diagnose(log).signature`. Two figures:

- **same cause, same signature.** The corpus holds no two runs of one failure (each log
  is a different job; the six pairs of logs from one repository with one class all
  fail different tests, see `repository_pairs`). So the second run of each failure is
  made from the real log by `rerun`, which changes only what differs between two runs
  of one job on GitHub Actions-style runners, with rules of its own (not the
  detector's masking): every timestamp shifted, durations scaled, runner and host
  names, temporary directories, the checkout root, hex ids (commit, container, object
  ids), UUIDs and process ids redrawn. A pair is (log, its rerun). This measures
  stability against run noise on real text; it cannot show what a real rerun changes
  that these rules do not know about.
- **different cause, different signature.** Pairs of two different logs of the corpus,
  except pairs from one repository with one class whose labelled decisive lines read
  the same once digits are ignored (a proxy for "might be the same cause"; there are
  none such in the corpus at the time of writing). Reported over all such pairs and
  over the pairs of one failure class (the hard case: same kind of failure, other cause).
"""

from __future__ import annotations

import json
import random
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import combinations

from bench.real_ci import RealLog, load_corpus, read_labels, read_log
from services.detector.diagnose import Diagnoser

_ISO = re.compile(r"\b(\d{4}-\d\d-\d\d)([T ])(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?")
_CLOCK = re.compile(r"(?<![\d:.])(\d\d):(\d\d):(\d\d)(\.\d+)?(?![\d:])")
_DURATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)( ?)(ms|s|sec|secs|seconds|min|m)\b")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX_ID = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,64}\b")
_TMP = re.compile(r"(/tmp/|/var/folders/[\w/]+?/T/|\\Temp\\)([\w.-]*?)(\d+|[A-Za-z0-9_]{6,})(?=[/\\\s'\"]|$)")
_RUNNER = re.compile(r"\b(GitHub Actions |runner-|fv-az|ip-|worker-|agent-)([\w-]*\d[\w-]*)")
_PID = re.compile(r"\b(pid[ =:]?|process )(\d{2,7})\b", re.I)
_CHECKOUT = ("/home/runner/work/", "/Users/runner/work/", "/builds/", "/home/travis/build/")


def rerun(text: str, seed: int) -> str:
    """The log as a second run of the same job would print it: same cause, other noise."""
    rng = random.Random(seed)
    shift = timedelta(days=rng.randint(1, 9), seconds=rng.randint(60, 80_000), microseconds=rng.randint(1, 999_999))

    def iso(m: re.Match[str]) -> str:
        try:
            when = datetime.fromisoformat(f"{m.group(1)}T{m.group(3)}") + shift
        except ValueError:
            return m.group(0)
        frac = m.group(4)
        frac = "." + "".join(rng.choice("0123456789") for _ in frac[1:]) if frac else ""
        return when.strftime("%Y-%m-%d") + m.group(2) + when.strftime("%H:%M:%S") + frac + (m.group(5) or "")

    def clock(m: re.Match[str]) -> str:
        frac = m.group(4)
        frac = "." + "".join(rng.choice("0123456789") for _ in frac[1:]) if frac else ""
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{frac}"

    def duration(m: re.Match[str]) -> str:
        value = float(m.group(1)) * rng.uniform(0.5, 3.0)
        number = f"{value:.{len(m.group(1).partition('.')[2])}f}" if "." in m.group(1) else str(max(1, round(value)))
        return number + m.group(2) + m.group(3)

    def hexid(m: re.Match[str]) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in m.group(0)) if len(m.group(0)) != 8 or \
            not m.group(0).isdigit() else m.group(0)

    text = _ISO.sub(iso, text)
    text = _CLOCK.sub(clock, text)
    text = _DURATION.sub(duration, text)
    text = _UUID.sub(lambda m: str(uuid.UUID(int=rng.getrandbits(128), version=4)), text)
    text = _HEX_ID.sub(hexid, text)
    text = _TMP.sub(lambda m: m.group(1) + m.group(2) + "".join(rng.choice("abcdefghijkmnpqrstuvwxyz0123456789")
                                                                  for _ in m.group(3)), text)
    text = _RUNNER.sub(lambda m: m.group(1) + str(rng.randint(2, 999)) + "-" + f"{rng.getrandbits(20):x}", text)
    text = _PID.sub(lambda m: m.group(1) + str(rng.randint(100, 99_999)), text)
    for root in _CHECKOUT:
        text = text.replace(root, "/home/ci-agent-7/_work/")
    return text


def _same_text_ignoring_digits(a: str, b: str) -> bool:
    return re.sub(r"\d+", "0", a).strip() == re.sub(r"\d+", "0", b).strip()


def repository_pairs(logs: Sequence[RealLog], texts: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
    """Pairs from one repository (BugSwarm's 'job of owner/repo') with one class, split by
    whether their labelled decisive lines read the same ignoring digits."""
    notes = {e["id"]: e.get("notes", "") for e in read_labels()}
    repo = {}
    for log_ in logs:
        m = re.search(r"job of ([\w.-]+/[\w.-]+)", notes.get(log_.id, ""))
        if m:
            repo[log_.id] = m.group(1)
    out: dict[str, list[tuple[str, str]]] = {"same_decisive_text": [], "other_decisive_text": []}
    for a, b in combinations(logs, 2):
        if a.id in repo and repo.get(b.id) == repo[a.id] and a.failure_class == b.failure_class:
            lines_a = [texts[a.id][n - 1] for n in a.decisive_lines if 0 < n <= len(texts[a.id])]
            lines_b = [texts[b.id][n - 1] for n in b.decisive_lines if 0 < n <= len(texts[b.id])]
            same = bool(lines_a) and len(lines_a) == len(lines_b) and all(
                _same_text_ignoring_digits(_no_stamp(x), _no_stamp(y)) for x, y in zip(lines_a, lines_b, strict=True))
            out["same_decisive_text" if same else "other_decisive_text"].append((a.id, b.id))
    return out


def _no_stamp(line: str) -> str:
    return re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ", "", line)


def evaluate(logs: Sequence[RealLog] | None = None,
             diagnose: Callable[[bytes], tuple[str, list[str]]] | None = None) -> dict[str, object]:
    """`diagnose(log)` gives (signature, evidence texts); by default the detector's Diagnoser."""
    logs = list(load_corpus() if logs is None else logs)
    if diagnose is None:
        diagnoser = Diagnoser()

        def diagnose(data: bytes) -> tuple[str, list[str]]:
            result = diagnoser.diagnose(data)
            return result.signature, [e.text for e in result.evidence]
    signatures: dict[str, str] = {}
    texts: dict[str, list[str]] = {}
    stable, unstable, noisy_evidence = 0, [], 0
    for n, log_ in enumerate(logs):
        data = read_log(log_)
        text = data.decode("utf-8", errors="replace")
        texts[log_.id] = text.splitlines()
        signatures[log_.id], evidence = diagnose(data)
        again, evidence_again = diagnose(rerun(text, seed=n).encode("utf-8"))
        noisy_evidence += evidence != evidence_again
        if again == signatures[log_.id]:
            stable += 1
        else:
            unstable.append(log_.id)
    by_repo = repository_pairs(logs, texts)
    maybe_same = set(by_repo["same_decisive_text"])
    different = [(a, b) for a, b in combinations(logs, 2) if (a.id, b.id) not in maybe_same]
    apart = [signatures[a.id] != signatures[b.id] for a, b in different]
    same_class = [signatures[a.id] != signatures[b.id] for a, b in different if a.failure_class == b.failure_class]
    collisions: dict[str, list[str]] = {}
    for log_ in logs:
        collisions.setdefault(signatures[log_.id], []).append(log_.id)
    return {
        "logs": len(logs),
        "same_cause_pairs": len(logs),
        "same_cause_same_signature": round(stable / len(logs), 4) if logs else 0.0,
        "same_cause_proxy": "each real log and its rerun (bench/ci_signatures.py rerun: timestamps, durations, "
                            "runner/host names, temp dirs, checkout root, hex ids, UUIDs, pids redrawn)",
        "same_cause_unstable": unstable,
        "same_cause_pairs_whose_evidence_text_differs": noisy_evidence,
        "repository_pairs_same_decisive_text": [list(p) for p in by_repo["same_decisive_text"]],
        "repository_pairs_other_decisive_text": len(by_repo["other_decisive_text"]),
        "different_cause_pairs": len(different),
        "different_cause_different_signature": round(sum(apart) / len(apart), 4) if apart else 0.0,
        "different_cause_pairs_same_class": len(same_class),
        "different_cause_same_class_different_signature":
            round(sum(same_class) / len(same_class), 4) if same_class else 0.0,
        "different_cause_proxy": "two different logs (jobs) of the corpus, minus same-repository same-class pairs "
                                 "whose labelled decisive lines read the same ignoring digits",
        "shared_signatures": [ids for ids in collisions.values() if len(ids) > 1],
    }


def main() -> int:
    result = evaluate()
    print(json.dumps({k: v for k, v in result.items() if k != "shared_signatures"}, indent=1))
    print(f"{len(result['shared_signatures'])} signatures shared by more than one log")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
