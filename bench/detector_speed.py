"""Detector speed: diagnosis latency by log size, and the pattern scan against grep.

Run: python -m bench.detector_speed [--quick]

* Latency: Diagnoser.diagnose_stream (decode, redact, strip colour, scan, evidence,
  decide, fingerprint) on 10 KiB, 1 MiB and 50 MiB logs fed in 64 KiB chunks.
  Target: 1 MiB fully diagnosed in < 20 ms.
* Scan throughput per core: KnowledgeBase.scan_bytes over a 50 MiB log versus
  `LC_ALL=C grep -E -c -f PATTERNS FILE` with the same default pattern set
  (translated to POSIX ERE) on the same file, in the same run. Target ratio >= 1.0.

The logs are the sample logs in examples/ repeated (numbers varied) up to size,
ending with an out-of-memory failure: dense with tool output, colour and
timestamps, and with far more matching lines than a typical log (a harsh case).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from services.detector.diagnose import Diagnoser
from services.detector.patterns import KnowledgeBase, default_patterns

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "detector_speed.json"
CHUNK = 64 << 10


def build_log(size: int) -> bytes:
    samples = sorted((ROOT / "examples").glob("*.log"))
    bodies = [p.read_bytes() for p in samples if p.name != "oom_killed.log"]
    ending = (ROOT / "examples" / "oom_killed.log").read_bytes()
    parts: list[bytes] = []
    total, index = 0, 0
    while total < size - len(ending):
        body = bodies[index % len(bodies)].replace(b"2025-03", b"2025-%02d" % (1 + index % 12))
        parts.append(body)
        total += len(body)
        index += 1
    log = b"".join(parts)[: max(0, size - len(ending))]
    log = log[: log.rfind(b"\n") + 1] + ending
    return log


def to_ere(expression: str) -> str:
    """An RE2 pattern of the default set as POSIX ERE for GNU grep (same matches)."""
    out: list[str] = []
    ci = False
    i = 0
    while i < len(expression):
        if expression.startswith("(?i)", i):
            ci, i = True, i + 4
            continue
        if expression.startswith("(?:", i):
            out.append("(")
            i += 3
            continue
        char = expression[i]
        if char == "\\" and i + 1 < len(expression):
            nxt = expression[i + 1]
            out.append(
                {"d": "[0-9]", "s": "[[:space:]]", "S": "[^[:space:]]", "w": "[[:alnum:]_]"}.get(nxt, "\\" + nxt)
            )
            i += 2
            continue
        if char == "[":
            end = expression.index("]", i + 2 if expression[i + 1] in "^]" else i + 1)
            content = expression[i + 1 : end]
            negated = content.startswith("^")
            body = content[1:] if negated else content
            body = body.replace("\\s", "[:space:]").replace("\\.", ".").replace("\\-", "-")
            if ci:
                body = body + body.swapcase()
            if "-" in body and not body.endswith("-"):
                body = body.replace("-]", "]")
                if body.startswith("-"):
                    body = body[1:] + "-"
            out.append("[" + ("^" if negated else "") + body + "]")
            i = end + 1
            continue
        if ci and char.isalpha():
            out.append(f"[{char.lower()}{char.upper()}]")
        else:
            out.append(char)
        i += 1
    return "".join(out)


def time_it(function, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args()
    knowledge_base = KnowledgeBase(default_patterns())
    diagnoser = Diagnoser(knowledge_base)
    diagnoser.diagnose(b"warm up: No space left on device\n")

    big = 8 << 20 if args.quick else 50 << 20
    sizes = {"10KiB": 10 << 10, "1MiB": 1 << 20, ("8MiB" if args.quick else "50MiB"): big}
    latency = {}
    for name, size in sizes.items():
        log = build_log(size)
        chunks = [log[i : i + CHUNK] for i in range(0, len(log), CHUNK)]
        repeat = 100 if size <= 64 << 10 else (15 if size <= 2 << 20 else 2)
        result = diagnoser.diagnose_stream(iter(chunks))
        timings = time_it(lambda chunks=chunks: diagnoser.diagnose_stream(iter(chunks)), repeat)
        median = statistics.median(timings)
        latency[name] = {
            "bytes": len(log), "median_ms": round(median * 1000, 2), "min_ms": round(min(timings) * 1000, 2),
            "mb_per_s": round(len(log) / median / 1e6, 1), "class": result.failure_class.name, "repeats": repeat,
        }

    log = build_log(big)
    with tempfile.TemporaryDirectory() as scratch:
        log_path = Path(scratch) / "job.log"
        log_path.write_bytes(log)
        pattern_path = Path(scratch) / "patterns.ere"
        pattern_path.write_text("\n".join(to_ere(p.expression) for p in knowledge_base.patterns if p.enabled) + "\n")
        command = ["grep", "-E", "-c", "-f", str(pattern_path), str(log_path)]
        grep_count = int(
            subprocess.run(command, capture_output=True, text=True, env={"LC_ALL": "C"}, check=False).stdout or 0
        )
        grep_timings = time_it(
            lambda: subprocess.run(command, capture_output=True, env={"LC_ALL": "C"}, check=False), 3
        )
    matched_lines: set[int] = set()
    scan_timings = time_it(lambda: matched_lines.update(m.line_no for m in knowledge_base.scan_bytes(log)), 3)
    scan_s, grep_s = min(scan_timings), min(grep_timings)
    throughput = {
        "bytes": len(log), "patterns": len(knowledge_base),
        "scan_mb_per_s": round(len(log) / scan_s / 1e6, 1), "grep_mb_per_s": round(len(log) / grep_s / 1e6, 1),
        "ratio_scan_over_grep": round(grep_s / scan_s, 2),
        "scan_matching_lines": len(matched_lines), "grep_matching_lines": grep_count,
    }
    report = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "latency": latency, "scan_vs_grep": throughput,
        "targets": {"1MiB_ms": 20, "ratio_scan_over_grep": 1.0},
        "command": "python -m bench.detector_speed" + (" --quick" if args.quick else ""),
    }
    print(f"{'log':>8} {'bytes':>10} {'median ms':>10} {'MB/s':>8}  class")
    for name, row in latency.items():
        print(f"{name:>8} {row['bytes']:>10} {row['median_ms']:>10} {row['mb_per_s']:>8}  {row['class']}")
    print(f"\npattern scan ({throughput['patterns']} patterns, {len(log) >> 20} MiB): "
          f"{throughput['scan_mb_per_s']} MB/s   grep -E -f: {throughput['grep_mb_per_s']} MB/s   "
          f"ratio {throughput['ratio_scan_over_grep']} (target >= 1.0)")
    print(f"matching lines: scan {len(matched_lines)}, grep {grep_count}")
    print(f"1 MiB diagnosed in {latency['1MiB']['median_ms']} ms (target < 20 ms)")
    if not args.quick:
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
