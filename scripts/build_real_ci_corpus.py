# ruff: noqa: E501  (label tables: one label per line, kept whole to stay readable)
"""Build data/real_ci/ (the real-world CI log corpus) from local git mirrors.

This is how the committed files were produced; it is kept so that the corpus can be
re-derived and audited. It needs the bare mirrors under /work/.mirror (see
data/real_ci/PROVENANCE.md for the exact repositories and commits). The labels are
written here by hand (tables below); see data/real_ci/LABELLING.md for the procedure.

Usage: python scripts/build_real_ci_corpus.py [--only SOURCE ...]
Rewrites data/real_ci/logs/<source>/ for the sources it builds and the whole of
data/real_ci/labels.jsonl (entries of sources not rebuilt are kept as they are).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "data" / "real_ci"
MIRROR = Path("/work/.mirror")


def git_show(mirror: str, path: str, rev: str = "HEAD") -> bytes:
    return subprocess.run(
        ["git", "-C", str(MIRROR / mirror / "repo"), "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
    ).stdout


def git_ls(mirror: str, path: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(MIRROR / mirror / "repo"), "ls-tree", "-r", "--name-only", "HEAD", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [p for p in out.splitlines() if p]


def head_commit(mirror: str) -> str:
    return subprocess.run(
        ["git", "-C", str(MIRROR / mirror / "repo"), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def line_count(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def entry(
    *,
    source: str,
    name: str,
    data: bytes | None,
    rel_path: str,
    provider: str,
    failure_class: str,
    confidence: str,
    basis: str,
    decisive: list[int],
    decisive_by: str,
    committed: bool = True,
    notes: str | None = None,
) -> dict:
    e = {
        "id": f"{source}/{name}",
        "source": source,
        "path": rel_path,
        "committed": committed,
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "provider": provider,
        "failure_class": failure_class,
        "label_confidence": confidence,
        "label_basis": basis,
        "decisive_lines": sorted(set(decisive)),
        "decisive_lines_by": decisive_by,
    }
    if notes:
        e["notes"] = notes
    return e


def write_log(source: str, fname: str, data: bytes) -> str:
    d = OUT / "logs" / source
    d.mkdir(parents=True, exist_ok=True)
    (d / fname).write_bytes(data)
    return f"logs/{source}/{fname}"


# --------------------------------------------------------------------------------------
# pytorch/test-infra: aws/lambda/log-classifier/fixtures/classify/*.txt
# label = (class, confidence, why). The source's rule name is found in ruleset.toml by the
# fixture's matched line; FIXTURES.md says the #=MATCH=# line is the line the classifier
# lands on and that a fixture is only checked in when that line "is the real failure".
PYTORCH_LABELS: dict[str, tuple[str, str, str]] = {
    "action_archive_download_failure": ("NETWORK", "medium", "runner could not download the action archive from codeload.github.com: HTTP timeout after 3 attempts"),
    "artifact_not_found": ("INFRASTRUCTURE", "medium", "'Unable to download artifact(s): Artifact not found' (artifact service error)"),
    "aws_credentials_load_failure": ("CONFIGURATION", "medium", "aws-actions credentials 'could not load credentials from any providers' (missing credentials/role setup)"),
    "checkout_ciflow_tag_missing": ("CONFIGURATION", "high", "git fetch: couldn't find remote ref refs/tags/ciflow/... (missing tag)"),
    "collection_assertionerror": ("TEST_FAILURE", "medium", "AssertionError raised by the test module (untested __torch_function__ overrides)"),
    "collection_syntaxerror": ("COMPILE_ERROR", "high", "Python 'SyntaxError: invalid decimal literal' in the project's code"),
    "compile_error": ("COMPILE_ERROR", "high", "rule 'Compile error': g++ 'error: no matching function for call'"),
    "cuda_oom_class": ("OUT_OF_MEMORY", "high", "torch.OutOfMemoryError: CUDA out of memory"),
    "dirty_checkout": ("CONFIGURATION", "low", "'Build left local git repository checkout dirty' (untracked cmake/bolt_profiles/ after the build); repo-hygiene check, judgement call"),
    "distributed_test_wrapper": ("TEST_FAILURE", "medium", "rule 'Test class does not extend TestCase': the test runner rejects a test class"),
    "docker_manifest_unknown": ("DEPENDENCY_FETCH", "medium", "docker pull: 'manifest for python:3.14t not found: manifest unknown' (image cannot be resolved)"),
    "gh_api_rate_limit": ("INFRASTRUCTURE", "low", "GitHub API 'API rate limit exceeded' (service limit, not a code problem); judgement call"),
    "gha_cancellation_shutdown": ("INFRASTRUCTURE", "high", "'The runner has received a shutdown signal'"),
    "gha_catchall_sigint": ("INFRASTRUCTURE", "medium", "'##[error]received SIGINT' (signal from outside the job)"),
    "gha_operation_canceled": ("INFRASTRUCTURE", "low", "'The operation was canceled.' with no reason given; taken as a cancellation from outside the job"),
    "gha_timeout": ("TIMEOUT", "high", "rule 'GHA timeout': 'The action 'Test' has timed out after 360 minutes'"),
    "ghstack_cherry_pick": ("CONFIGURATION", "low", "ghstack git cherry-pick failed (PR stack does not apply); judgement call"),
    "ghstack_old_version_pr_count": ("CONFIGURATION", "medium", "'you are using an old version of ghstack. Please update ghstack and resubmit'"),
    "ghstack_out_of_sync": ("CONFIGURATION", "medium", "'PR ... is out of sync with the corresponding revision ... non ghstack change in the PR'"),
    "ghstack_too_deep": ("CONFIGURATION", "low", "CI policy refusal: 'sits on top of >=10 ghstack entries; refusing to run CI'; judgement call"),
    "inductor_graph_breaks": ("TEST_FAILURE", "medium", "rule 'inductor model failure': 'FAIL: graph_breaks=4, expected=2'"),
    "infra_osdc_pod_failure": ("INFRASTRUCTURE", "high", "'pod failed to come online ... Pending: backoff timeout'"),
    "lint_lintrunner": ("LINT", "high", "rule 'Lintrunner failure': '>>> Lint for <file>'"),
    "lintrunner_general_failure": ("LINT", "medium", "rule 'Lintrunner general linter failure': 'Error (CLANGTIDY_EXECUTORCH_COMPATIBILITY) Linter failed'"),
    "msvc_compiler_error": ("COMPILE_ERROR", "high", "rule 'MSVC compiler error': 'error C2143: syntax error'"),
    "ninja_build_failed": ("CONFIGURATION", "medium", "ninja FAILED [code=127]: 'CMAKE_CXX_COMPILER_CLANG_SCAN_DEPS-NOTFOUND: not found' (toolchain not set up, not a code error)"),
    "pip_wheel_build_failure": ("CONFIGURATION", "medium", "'Failed building wheel for torchcomms' after cmake 'No GPU arch specified for ROCm build. Please use PYTORCH_ROCM_ARCH environment variable'"),
    "pr_sanity_exit_code_only": ("LINT", "low", "PR sanity check: 'Your PR is 3174 LOC which is more than the 2000 maximum' (static check of the change); judgement call"),
    "pr_time_benchmarks_regression": ("TEST_FAILURE", "low", "benchmark check 'MISSING REGRESSION TEST'; judgement call"),
    "pytest_failure": ("TIMEOUT", "medium", "source rule 'pytest failure', but the failure is 'Process 0 terminated or timed out after 310 seconds' / 'Timing out after 300 seconds and killing subprocesses' (test time limit)"),
    "pytest_failures_section": ("TEST_FAILURE", "high", "rule 'pytest failure': per-test header under ==== FAILURES ===="),
    "python_importerror_missing_so": ("COMPILE_ERROR", "low", "'import torch' smoke test of the built wheel: ImportError librocm_smi64.so.1 missing (packaging/build fault); judgement call"),
    "python_importerror_name": ("COMPILE_ERROR", "medium", "ImportError: cannot import name ... from torch._dynamo (the project's code)"),
    "python_runtimeerror": ("LINT", "low", "a lint adapter (stable_shim_version_linter) crashed: 'git diff ... timed out after 5 seconds'; judgement call"),
    "python_test_keyboardinterrupt": ("TIMEOUT", "medium", "rule 'Python Test timeout (KeyboardInterrupt)'"),
    "s3_access_denied": ("PERMISSION", "high", "'is not authorized to perform: s3:PutObject'"),
    "test_file_failed_wrapper": ("TEST_FAILURE", "medium", "run_test.py 'test_cuda 1/1 failed!'"),
    "test_file_signal_crash": ("TEST_FAILURE", "low", "'nn/test_pruning 1/1 failed! Received signal: SIGBUS' (test process crashed); judgement call"),
    "test_file_timeout": ("TIMEOUT", "high", "rule 'Test file timeout': 'Command took >30min, returning 124'"),
    "unittest_failed_consistently": ("TEST_FAILURE", "high", "'FAILED CONSISTENTLY: <test>' (failed on every rerun, so not flaky)"),
    "uv_python_download_failed": ("DEPENDENCY_FETCH", "medium", "uv: 'Error while fetching remote python downloads json'"),
}


def build_pytorch() -> list[dict]:
    mirror, src = "pytorch+test-infra", "pytorch-test-infra"
    base = "aws/lambda/log-classifier/fixtures/classify/"
    out = []
    for path in git_ls(mirror, base):
        if not path.endswith(".txt"):
            continue
        name = Path(path).stem
        raw = git_show(mirror, path)
        lines = raw.split(b"\n")
        notes = []
        if lines and lines[0].startswith(b"#=SOURCE=#"):
            notes.append("originating job: " + lines[0][len(b"#=SOURCE=# ") :].decode().strip())
            lines = lines[1:]
        decisive = []
        for i, ln in enumerate(lines):
            if ln.startswith(b"#=MATCH=# "):
                ln = ln[len(b"#=MATCH=# ") :]
                ln = ln.replace("‹".encode(), b"").replace("›".encode(), b"")
                lines[i] = ln
                decisive.append(i + 1)
        data = b"\n".join(lines)
        cls, conf, why = PYTORCH_LABELS[name]
        rel = write_log(src, name + ".log", data)
        notes.append("fixture markers removed: '#=SOURCE=#' line, '#=MATCH=# ' prefix and the span marks")
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=rel,
                provider="github_actions",
                failure_class=cls,
                confidence=conf,
                basis=f"fixture {name}.txt, #=MATCH=# line: {why}",
                decisive=decisive,
                decisive_by="source",
                notes="; ".join(notes),
            )
        )
    # One whole job log used by the crate's unit tests (fixtures/error_log_multiple_matches.txt).
    path = "aws/lambda/log-classifier/fixtures/error_log_multiple_matches.txt"
    data = git_show(mirror, path)
    lines = data.split(b"\n")
    want = [b"FAILED [0.0103s] inductor/test_triton_kernels.py::KernelTests::test_triton_kernel_tracing_dynamic_True"]
    decisive = [i + 1 for i, ln in enumerate(lines) if any(w in ln for w in want)]
    rel = write_log(src, "error_log_multiple_matches.log", data)
    out.append(
        entry(
            source=src,
            name="error_log_multiple_matches",
            data=data,
            rel_path=rel,
            provider="github_actions",
            failure_class="TEST_FAILURE",
            confidence="medium",
            basis="read by hand: '1 failed, 182 deselected, 2 rerun' and 'The following tests failed consistently' (not flaky: failed on every rerun)",
            decisive=decisive,
            decisive_by="labeller",
            notes="whole job log from the crate's engine unit test (no in-band marker)",
        )
    )
    return out


# --------------------------------------------------------------------------------------
# mozilla/treeherder: tests/sample_data/logs/<name>.log.gz + <name>.logview.json
TREEHERDER_LABELS: dict[str, tuple[str, str, str]] = {
    "asan_too_large": ("TEST_FAILURE", "medium", "'AddressSanitizer: heap-use-after-free' during the test run (a genuine bug found by the tests)"),
    "build-fail": ("COMPILE_ERROR", "high", "'error: linking with cargo-linker failed' / 'lld-link: error: undefined symbol' / 'mach build did not run successfully'"),
    "crashtest-timeout": ("TIMEOUT", "medium", "'REFTEST TEST-UNEXPECTED-FAIL | ... | load failed: timed out after 300000 ms' (the earlier image download errors were retried)"),
    "leak": ("TEST_FAILURE", "medium", "'TEST-UNEXPECTED-FAIL | leakcheck large nsGlobalWindowInner' (leak check of the tests)"),
    "mochitest-crash": ("TEST_FAILURE", "low", "'MOZ_CRASH(Shutdown hanging at step XPCOMShutdownThreads)' / PROCESS-CRASH of the application under test; judgement call (a hang, but not a job time limit)"),
    "mochitest-end": ("TIMEOUT", "medium", "'Test timed out', '4 test timeouts, giving up', 'application timed out after 370 seconds with no output'"),
    "mochitest-fail": ("TEST_FAILURE", "high", "'TEST-UNEXPECTED-FAIL | ...browser_console_enable_network_monitoring.js | A promise chain failed'"),
    "reftest-fail": ("TEST_FAILURE", "high", "'REFTEST TEST-UNEXPECTED-FAIL | ... | image comparison'"),
    "reftest-timeout": ("TIMEOUT", "medium", "'TEST-UNEXPECTED-TIMEOUT | /css/css-inline/initial-letter/...'"),
    "taskcluster-only": ("TIMEOUT", "high", "'[taskcluster:error] Task aborted - max run time exceeded'"),
    "taskcluster-timeout": ("TIMEOUT", "high", "'application timed out after 370 seconds with no output' and '[taskcluster:error] Task aborted - max run time exceeded'"),
    "timeout-crash": ("TIMEOUT", "medium", "'TEST-UNEXPECTED-TIMEOUT | automation.py | application timed out after 370 seconds with no output', then PROCESS-CRASH of the hung app"),
    "too_many_failures": ("TEST_FAILURE", "high", "40 'TEST-UNEXPECTED-FAIL' webgl conformance lines"),
    "windows-stuff": ("TEST_FAILURE", "medium", "'Assertion failure: !isStackAddress' (MOZ_ASSERT in the code under test), TEST-UNEXPECTED-FAIL, PROCESS-CRASH"),
    "wpt-multiple": ("TEST_FAILURE", "medium", "'TEST-UNEXPECTED-FAIL' / 'TEST-UNEXPECTED-PASS' web-platform-tests results"),
    "xpcshell-crash": ("TEST_FAILURE", "medium", "'PROCESS-CRASH | application crashed' in an xpcshell test"),
}
TREEHERDER_CAP = 700_000  # bytes per committed log window
TREEHERDER_TAIL = 300  # lines kept from the end of the job
TASK_PREFIX = re.compile(rb"^\[(task|taskcluster|setup|fetches)[^\]]*\] ")


def _norm(line: bytes) -> bytes:
    return TASK_PREFIX.sub(b"", line.rstrip(b"\r\n")).strip()


def choose_segments(
    lines: list[bytes], found: list[int], cap: int = TREEHERDER_CAP, tail: int = TREEHERDER_TAIL, head: int = 0
) -> list[tuple[int, int]]:
    """Half-open [lo, hi) segments of `lines` to keep, within `cap` bytes (TREEHERDER_CAP).

    The whole log if it fits. Otherwise the end of the job (last `tail` lines, and the first
    `head` lines if head > 0) plus
    a window of context around every expected error line, merged; the context shrinks
    (200/50, 100/30, 40/10, 10/3 lines before/after) until it fits, and if even the
    smallest does not fit, expected lines are taken in log order while they fit."""
    sizes = [len(ln) + 1 for ln in lines]
    n = len(lines)
    if sum(sizes) <= cap:
        return [(0, n)]
    tail_lo = n
    tail_bytes = 0
    while tail_lo > 0 and n - tail_lo < tail and tail_bytes + sizes[tail_lo - 1] <= cap // 4:
        tail_lo -= 1
        tail_bytes += sizes[tail_lo]

    def merged(fs: list[int], before: int, after: int) -> list[tuple[int, int]]:
        segs: list[tuple[int, int]] = []
        fixed = [(tail_lo, n)] + ([(0, min(head, tail_lo))] if head else [])
        for lo, hi in sorted([(max(0, f - before), min(n, f + after + 1)) for f in fs] + fixed):
            if segs and lo <= segs[-1][1]:
                segs[-1] = (segs[-1][0], max(segs[-1][1], hi))
            else:
                segs.append((lo, hi))
        return segs

    def cost(segs: list[tuple[int, int]]) -> int:
        return sum(sum(sizes[lo:hi]) for lo, hi in segs)

    for before, after in ((200, 50), (100, 30), (40, 10), (10, 3)):
        segs = merged(found, before, after)
        if cost(segs) <= cap:
            return segs
    taken: list[int] = []
    for f in found:
        if cost(merged(taken + [f], 10, 3)) > cap:
            break
        taken.append(f)
    return merged(taken, 10, 3)


def build_treeherder() -> list[dict]:
    mirror, src = "mozilla+treeherder", "treeherder"
    base = "tests/sample_data/logs/"
    out = []
    for name, (cls, conf, why) in TREEHERDER_LABELS.items():
        raw = gzip.decompress(git_show(mirror, f"{base}{name}.log.gz"))
        view = json.loads(git_show(mirror, f"{base}{name}.logview.json"))
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines = lines[:-1]
            trailing_nl = True
        else:
            trailing_nl = False
        norm = [_norm(ln) for ln in lines]
        # Locate every expected error line by its text, nearest to the (0-based) linenumber given.
        found: list[int] = []  # 0-based indices into `lines`
        missing = 0
        for err in view["errors"]:
            want = err["line"].encode().strip()
            n = err["linenumber"]
            near = range(max(0, n - 50), min(len(lines), n + 50))
            cands = [i for i in near if want in norm[i] or want in lines[i]]
            if not cands:
                cands = [i for i in range(len(lines)) if want in norm[i] or want in lines[i]]
            if not cands:
                missing += 1
                continue
            found.append(min(cands, key=lambda i: abs(i - n)))
        found = sorted(set(found))
        segs = choose_segments(lines, found)
        kept: list[bytes] = []
        decisive: list[int] = []
        for lo, hi in segs:
            for i in range(lo, hi):
                if i in found:
                    decisive.append(len(kept) + 1)
                kept.append(lines[i])
        data = b"\n".join(kept) + (b"\n" if trailing_nl else b"")
        inside = {i for lo, hi in segs for i in range(lo, hi)}
        dropped = [f + 1 for f in found if f not in inside]
        notes = []
        if segs != [(0, len(lines))]:
            desc = " + ".join(f"{lo + 1}-{hi}" for lo, hi in segs)
            notes.append(
                f"truncated: original lines {desc} of {len(lines)} kept, in that order"
                + (" (the gap between the segments is not marked in the file)" if len(segs) > 1 else "")
                + f"; {len(dropped)} expected error line(s) outside the window"
                + (f" (original lines {dropped[:5]}{'...' if len(dropped) > 5 else ''})" if dropped else "")
            )
        if missing:
            notes.append(f"{missing} logview line(s) could not be found by text")
        rel = write_log(src, name + ".log", data)
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=rel,
                provider="taskcluster",
                failure_class=cls,
                confidence=conf,
                basis=f"treeherder logview expected error lines: {why}",
                decisive=decisive,
                decisive_by="source",
                notes="; ".join(notes) or None,
            )
        )
    return out


# --------------------------------------------------------------------------------------
# fedora-copr/logdetective-sample: data/<uuid>/ + sample_metadata.yaml 'issue'
# (uuid, log file, class, confidence, basis, needles to find the cause lines by text)
LOGDETECTIVE_LABELS: list[tuple[str, str, str, str, str, list[str]]] = [
    ("03588217-1fe3-4b5c-bbae-895d383251da", "builder-live.log", "DEPENDENCY_FETCH", "high",
     "logdetective issue: 'RPM build failed due to missing dependency pkgconfig(mjpegtools) >= 2.0.0'", ["pkgconfig(mjpegtools) >= 2.0.0"]),
    ("0bcfc3d6-3b97-4dde-a2b4-1ae8dd378180", "builder-live.log", "DEPENDENCY_FETCH", "high",
     "logdetective issue: 'Build failed due to unavailable dependency clang = 13.0.0'", ["clang = 13.0.0"]),
    ("21ad14e5-f01f-4f88-ae60-eea095478e45", "build.log", "COMPILE_ERROR", "high",
     "logdetective issue: 'Compilation failed due to undefined reference to gf_estimate_kernel and estimate_kernel'", ["undefined reference to `gf_estimate_kernel", "undefined reference to `estimate_kernel"]),
    ("3b668dda-5516-498f-a0c4-fa13903e7ca7", "root.log", "DEPENDENCY_FETCH", "high",
     "logdetective issue: 'Build failed due to unavailable dependency. Package python3dist(botocore) was not available in specified version range'", ["python3dist(botocore)"]),
    ("449ca0a3-a264-4f86-a3ec-b0a7b0af9b4d", "build.log", "COMPILE_ERROR", "high",
     "logdetective issue: 'Multiple compilation errors in MsgHandler.h'", ["MsgHandler.h:"]),
    ("89460881-ab96-4597-905c-d0f8f48b9ef8", "builder-live.log", "DEPENDENCY_FETCH", "medium",
     "logdetective issue: 'Build failed, due to error 404 encountered during download of https://ftp.mozilla.org/.../thunderbird-92.0a1...tar.bz2' (a source download; could be read as a CONFIGURATION error: stale URL)", ["404"]),
    ("b638a5ca-9315-41ad-9db9-0484ce29743a", "build.log", "COMPILE_ERROR", "high",
     "logdetective issue: 'Symbol TIFFErrorExtR was not defined, causing failure during linking'", ["undefined reference to `TIFFErrorExtR'"]),
    ("bd0afcc7-1395-4275-a906-84df79a84452", "builder-live.log", "TEST_FAILURE", "high",
     "logdetective issue: 'Error was encountered while running tests in the %check phase. Method to_model of ActiveStorage::VariantWithRecord was undefined'", ["undefined method 'to_model'"]),
    ("f91ba960-67ea-4eb1-97b1-a897111dd030", "builder-live.log", "CONFIGURATION", "medium",
     "logdetective issue: 'Build failed due to missing patch file gnome-shell-notify-gnome-session.patch' (spec/SOURCES set up wrong)", ["gnome-shell-notify-gnome-session.patch"]),
]


def build_logdetective() -> list[dict]:
    mirror, src = "fedora-copr+logdetective-sample", "logdetective"
    out = []
    for uuid, fname, cls, conf, basis, needles in LOGDETECTIVE_LABELS:
        data = git_show(mirror, f"data/{uuid}/{fname}")
        meta = git_show(mirror, f"data/{uuid}/sample_metadata.yaml").decode()
        project = re.search(r"^source_project_name:\s*(\S+)", meta, re.M).group(1)
        lines = data.split(b"\n")
        decisive = []
        for i, ln in enumerate(lines):
            low = ln.decode("utf-8", "replace")
            if any(n in low for n in needles) and (
                "error" in low.lower() or "No match" in low or "nothing provides" in low or "404" in low
                or "Bad source" in low or "not found" in low.lower() or "NoMethodError" in low
                or "undefined" in low.lower() or "Problem" in low or "conflict" in low.lower()
                or "No matching" in low or "cannot" in low.lower()
            ):
                decisive.append(i + 1)
        name = f"{project}-{uuid[:8]}"
        rel = write_log(src, f"{name}.log", data)
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=rel,
                provider="copr",
                failure_class=cls,
                confidence=conf,
                basis=basis,
                decisive=decisive,
                decisive_by="labeller",
                notes=f"sample data/{uuid}/{fname}; the source states the cause in prose only, the labeller found the lines naming it by text",
            )
        )
    return out


# --------------------------------------------------------------------------------------
# TestRoots/travistorrent-tools: dev_logs/ (NO licence: labelled here, never committed).
# (path under dev_logs/, class, confidence, basis, needles that find the decisive lines)
TRAVIS_LABELS: list[tuple[str, str, str, str, list[str]]] = [
    ("BBC-News@wraith/475_46523222_24c436b8a4583087f715a20b2bcdddb0fda93a7b_46523223.log", "TEST_FAILURE", "high",
     "expected.json: tests failed (1 of 11, rspec); log: '11 examples, 1 failure' before 'The command \"bundle exec rspec\" exited with 1.'", ["11 examples, 1 failure", "rspec ./spec/wraith_spec.rb:40"]),
    ("DSpace@DSpace/1193_37232251_829ebed4909e7f5acac73885c650ea3309ee4fdf_37232252.log", "TEST_FAILURE", "medium",
     "expected.json: 34 tests failed; log: first mvn run 'Tests run: 75, Failures: 34' -> BUILD FAILURE; the final 'Could not find artifact dspace-api:5.0-SNAPSHOT' follows from it (the module was never installed)", ["Tests run: 75, Failures: 34"]),
    ("TestRoots@watchdog/476_a49d782ea2e7f8c22ae5650c6374d151d8165c04_67596271.log", "TEST_FAILURE", "high",
     "expected.json: status broken; log: tycho-surefire 'There are test failures.'", ["There are test failures."]),
    ("TestRoots@watchdog/510_5004d140afc87adcc8ee122f7945ad5da4597f56_74267343.log", "INFRASTRUCTURE", "low",
     "expected.json: status 'cancelled'; log ends 'Done: Job Cancelled' mid-download with no reason given; judgement call", ["Done: Job Cancelled"]),
    ("connectbot@connectbot/16_f0ca96308b23643df1208acfe72015b46ae70067_55511597.log", "LINT", "high",
     "log: '[ant:checkstyle] ... Line has leading space characters', ':app:checkstyle FAILED'", ["[ant:checkstyle]", ":app:checkstyle FAILED", "Checkstyle rule violations were found"]),
    ("connectbot@connectbot/1_34cd9778e0da1d45723ef76f00840c648f743239_38381075.log", "CONFIGURATION", "high",
     "log: default ruby build on a Java project: 'rake aborted! No Rakefile found' (no build configured)", ["No Rakefile found"]),
    ("connectbot@connectbot/2_a9a0da1e71a5d3ec5c75e500683c746f6d81ed44_38381119.log", "CONFIGURATION", "high",
     "log: default ruby build on a Java project: 'rake aborted! No Rakefile found' (no build configured)", ["No Rakefile found"]),
    ("connectbot@connectbot/3_6f3c306c9fbd6397ca529cc99154388c841e45b1_38381359.log", "CONFIGURATION", "high",
     "log: ':app:compileDebugNdk FAILED ... NDK not configured.'", ["NDK not configured."]),
    ("connectbot@connectbot/4_f86f65512225c8d3d47305616647e1495ade5337_38381963.log", "DEPENDENCY_FETCH", "medium",
     "log: install step 'wget https://dl.google.com/android/ndk/...tar.bz2' -> 'ERROR 404: Not Found' (toolchain download)", ["ERROR 404: Not Found"]),
    ("connectbot@connectbot/5_3995f36cd5af8707a18a741f9018feb23f5ee710_38382864.log", "CONFIGURATION", "low",
     "log: ':app:connectedAndroidTest FAILED ... No connected devices!' (no emulator started by the build config); judgement call (could be INFRASTRUCTURE)", ["No connected devices!"]),
    ("connectbot@connectbot/6_fe4100e09325162a434d25b9b0ac1d872ad24bb2_38383353.log", "CONFIGURATION", "low",
     "log: ':app:connectedAndroidTest FAILED ... No connected devices!' (no emulator started by the build config); judgement call (could be INFRASTRUCTURE)", ["No connected devices!"]),
    ("cucumber@cucumber/2_build_commit_job.log", "TEST_FAILURE", "high",
     "expected.json: 1 test failed; log: '206 scenarios (1 failed, 205 passed)'", ["206 scenarios (1 failed", "Failing Scenarios:"]),
    ("cucumber@cucumber/3_build_commit_job.log", "TEST_FAILURE", "high",
     "expected.json: 2 tests failed; log: '2 scenarios (2 failed)'", ["2 scenarios (2 failed)", "Failing Scenarios:"]),
    ("facebookgo@rocks-strata/148104998.log", "TEST_FAILURE", "high",
     "expected.json: 1 test failed; log: 'FAIL github.com/facebookgo/rocks-strata/strata'", ["FAIL\tgithub.com/facebookgo/rocks-strata/strata"]),
    ("facebookgo@rocks-strata/dghubble_171872906.log", "TEST_FAILURE", "high",
     "expected.json: 3 tests failed; log: 'FAIL github.com/dghubble/gologin/oauth1'", ["FAIL\tgithub.com/dghubble/gologin/oauth1"]),
    ("facebookgo@rocks-strata/go_convey_92397437.log", "TEST_FAILURE", "medium",
     "expected.json: 2 tests failed (TestInfiniteLoopWithTrailingFail...); log: '--- FAIL' lines before 'go test' exited with 1", ["--- FAIL: "]),
    ("kennethreitz@requests/kennethreitz_requests_11745231.log", "TEST_FAILURE", "high",
     "expected.json: 41 tests failed; log: 'TypeError: Timeout does not take keyword arguments', '41 failed, 43 passed'", ["41 failed, 43 passed"]),
    ("kennethreitz@requests/kennethreitz_requests_12393986.log", "TEST_FAILURE", "high",
     "expected.json: 2 tests failed; log: KeyError in requests/cookies.py, '2 failed, 84 passed'", ["2 failed, 84 passed"]),
    ("kennethreitz@requests/kennethreitz_requests_12639258.log", "NETWORK", "medium",
     "expected.json: 1 test failed; log: the failing test's 'ConnectionError: HTTPConnectionPool(host='httpbin.org') Max retries exceeded ... BadStatusLine' (a live service the test calls)", ["E           ConnectionError: HTTPConnectionPool(host='httpbin.org'"]),
    ("mockito@mockito/1_123456_asdffs45_12.log", "TEST_FAILURE", "high",
     "expected.json: 1 test failed; log: 'Execution failed for task ':test'. There were failing tests.'", ["There were failing tests."]),
    ("python@pythontests/unsupported_pallets@flask_192922050.log", "TEST_FAILURE", "high",
     "expected.json: 12 tests failed; log: '12 failed, 1464 passed' before tox failed", ["12 failed, 1464 passed"]),
    ("rails@rails/r1_buildid_ghcommit_75652687.log", "TEST_FAILURE", "high",
     "expected.json: 1 test failed (ApplicationTests::TestTest); log: 'Rails build FAILED / Failed components: railties'", ["Failed components: railties"]),
    ("regression-tests/220_38343826_baea0d5e9ff59215082bbec693b945d1bcbc677f_38343827.log", "TEST_FAILURE", "low",
     "expected.json: 1 test failed (Casks::omnioutliner3); log: 'Cask audit must be error free.' (a compliance test that is an audit of a cask file: could be read as LINT); judgement call", ["Cask audit must be error free.", "1 failures, 0 errors"]),
    ("regression-tests/4682_151662008_34e112e88dc56df9390358a890ba0c0d52609570_151662019.log", "TEST_FAILURE", "medium",
     "expected.json: 1 test failed; log: '19 examples, 1 failure' (a real-world resolver spec run with retries, failed every retry)", ["19 examples, 1 failure"]),
    ("waylan@Python-Markdown/162348481_test_failed.log", "TEST_FAILURE", "high",
     "expected.json: tests failed; log: 'FAILED (MarkdownSyntaxError=1, SKIP=25)'", ["FAILED (MarkdownSyntaxError=1"]),
    ("waylan@Python-Markdown/very_failing_67570973.log", "TEST_FAILURE", "high",
     "expected.json: 68 tests failed; log: 'FAILED (MarkdownSyntaxError=35, SKIP=26, errors=51, failures=17)'", ["FAILED (MarkdownSyntaxError=35"]),
    ("generics/maximum_time_aborted_192852537.log", "TIMEOUT", "high",
     "expected.json: status 'timeout'; log: 'The job exceeded the maximum time limit for jobs, and has been terminated.'", ["The job exceeded the maximum time limit"]),
    ("generics/terminated_after_10_min.log", "TIMEOUT", "high",
     "expected.json: status 'terminated'; log: 'No output has been received in the last 10m0s ... The build has been terminated'", ["No output has been received in the last 10m"]),
]


def build_travistorrent() -> list[dict]:
    mirror, src = "TestRoots+travistorrent-tools", "travistorrent"
    out = []
    for rel, cls, conf, basis, needles in TRAVIS_LABELS:
        path = f"dev_logs/{rel}"
        data = git_show(mirror, path)
        lines = data.split(b"\n")
        want = [n.encode() for n in needles]
        decisive = [i + 1 for i, ln in enumerate(lines) if any(w in ln for w in want)]
        assert decisive, rel
        name = rel.replace("@", "_").replace("/", "__").removesuffix(".log")
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=f"mirror:{mirror}/{path}",
                provider="travis",
                failure_class=cls,
                confidence=conf,
                basis=basis,
                decisive=decisive,
                decisive_by="labeller",
                committed=False,
                notes="repository has no licence: not committed; run data/real_ci/materialise_local.py to copy it into local/",
            )
        )
    return out


# --------------------------------------------------------------------------------------
# BugSwarm/bugswarm: tests/analyzer/github_data/**.log (GitHub Actions job logs the BugSwarm
# analyzer is tested on) with the expected status / failed-test counts in
# tests/analyzer/test_github.py. The cause is read in the log at the last error before
# '##[error]Process completed with exit code N.' (or the step's own ##[error] line).
# (path under github_data/, class, confidence, basis, needles that find the decisive lines)
BUGSWARM_LABELS: list[tuple[str, str, str, str, list[str]]] = [
    ("ant/2114165124-orig.log", "TEST_FAILURE", "high", "junit: '14 tests failed', ant 'BUILD FAILED'", ["14 tests failed"]),
    ("ant/2420748513-orig.log", "TEST_FAILURE", "high", "junit: 'Tests run: 1, Failures: 0, Errors: 1' (IndexOutOfBoundsException), 'Test abstraction.FiliereParDefaultTest failed'", ["Test abstraction.FiliereParDefaultTest failed", "Errors: 1,"]),
    ("ant/2464642509-orig.log", "TEST_FAILURE", "high", "ant junit: 'One or more tests failed'", ["One or more tests failed"]),
    ("ant/2496555797-orig.log", "TEST_FAILURE", "high", "junit: '38 tests failed' (AssertionFailedError)", ["38 tests failed"]),
    ("build_system_testing/2029314256.log", "TEST_FAILURE", "high", "go test '--- FAIL: Test_prepareStep', gradle ':playground:backend:test' failed", ["--- FAIL: Test_prepareStep", "Execution failed for task ':playground:backend:test'"]),
    ("build_system_testing/2040687460.log", "TEST_FAILURE", "high", "gradle: 'Execution failed for task ':sdk:metrics:test'. There were failing tests.'", ["Execution failed for task ':sdk:metrics:test'."]),
    ("build_system_testing/2372881152.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 1687, Failures: 0, Errors: 1', 'There are test failures.'", ["Tests run: 1687, Failures: 0, Errors: 1", "There are test failures."]),
    ("build_system_testing/2487500667.log", "TEST_FAILURE", "high", "maven failsafe verify: 'There are test failures.' (integration tests of test-fusion-csrf-context)", ["[ERROR] Failed to execute goal org.apache.maven.plugins:maven-failsafe-plugin"]),
    ("build_system_testing/2503163025.log", "NETWORK", "medium", "ant junitlauncher 'test-unit' failed; the failing test is 'testFetchHelpTopicContentNominal() ... FAILED: java.net.SocketTimeoutException: connect timed out' (a test that fetches from a live server)", ["SocketTimeoutException: connect timed out", "'test-unit' failed"]),
    ("build_system_testing/6642948886.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 6, Failures: 6', 'There are test failures.'", ["Tests run: 6, Failures: 6", "There are test failures."]),
    ("build_system_testing/6999501459.log", "TEST_FAILURE", "high", "gradle: '10 tests completed, 4 failed' (XMLLexerTest), ':lexers:testDebugUnitTest' failed", ["10 tests completed, 4 failed"]),
    ("gradle/14294971046-orig.log", "TEST_FAILURE", "high", "gradle: '5343 tests completed, 1 failed', ':barclayTest' failed", ["5343 tests completed, 1 failed"]),
    ("gradle/16166237459-orig.log", "TEST_FAILURE", "high", "gradle: 'Execution failed for task ':test'. There were failing tests.'", ["Execution failed for task ':test'."]),
    ("gradle/2063953546-orig.log", "TEST_FAILURE", "high", "gradle: 4 test tasks failed with 'There were failing tests'", ["There were failing tests."]),
    ("gradle/2085562467-orig.log", "LINT", "high", "gradle: 'Task :spotlessMiscCheck FAILED' (formatter check)", ["spotlessMiscCheck FAILED", "Execution failed for task ':spotlessMiscCheck'"]),
    ("gradle/2160401079-orig.log", "TEST_FAILURE", "high", "gradle: 'Build completed with 3 failures', three functionalTest tasks 'There were failing tests'", ["There were failing tests."]),
    ("gradle/2307899709-orig.log", "TEST_FAILURE", "high", "gradle: 'RetryInterceptorTest > connectTimeout() FAILED' (mockito TooFewActualInvocations), '40 tests completed, 1 failed'", ["connectTimeout() FAILED", "40 tests completed, 1 failed"]),
    ("gradle/2371715232-orig.log", "TEST_FAILURE", "high", "gradle: '6870 tests completed, 4 failed', ':poi:test' failed (SpotBugs also reported, but the failed task is the test task)", ["6870 tests completed, 4 failed"]),
    ("gradle/2398880548-orig.log", "TEST_FAILURE", "high", "gradle: 'NettyFlowControlTest > largeBdp FAILED' (AssertionError), '375 tests completed, 1 failed'", ["largeBdp FAILED", "375 tests completed, 1 failed"]),
    ("gradle/2464471085-orig.log", "TEST_FAILURE", "high", "gradle: '3867 tests completed, 1 failed', ':servicetalk-http-netty:test' failed", ["3867 tests completed, 1 failed"]),
    ("gradle/2489325318-orig.log", "TEST_FAILURE", "high", "gradle: ComparisonFailure in TestCopyOnWriteUpdate, '873 tests completed, 2 failed'", ["873 tests completed, 2 failed"]),
    ("gradle/2544985503-orig.log", "TEST_FAILURE", "high", "gradle: 'ThemeManagerTest > installThemeOnScene() FAILED', '8048 tests completed, 1 failed'", ["installThemeOnScene() FAILED", "8048 tests completed, 1 failed"]),
    ("gradle/7801445827-orig.log", "COMPILE_ERROR", "high", "javac 'error: cannot find symbol', ':compileJava' 'Compilation failed'", ["error: cannot find symbol", "Compilation failed; see the compiler error output"]),
    ("gradle/9657915347-orig.log", "TEST_FAILURE", "high", "gradle: 'shouldResponseErrorIfUserNotFound() FAILED', '556 tests completed, 1 failed'", ["shouldResponseErrorIfUserNotFound() FAILED", "556 tests completed, 1 failed"]),
    ("javascript/jest/2320994299.log", "TEST_FAILURE", "high", "jest: 'Tests: 1 failed, 3 skipped, 431 passed'", ["Tests:       \x1b[22m\x1b[1m\x1b[31m1 failed"]),
    ("javascript/jest/2518112250.log", "TEST_FAILURE", "high", "jest: 'Tests: 5 failed, 2 skipped, 124 passed'", ["Tests:       5 failed"]),
    ("javascript/jest/2537485009.log", "TEST_FAILURE", "high", "jest e2e: '5 snapshots failed', 'Tests: 5 failed, 55 passed'", ["5 snapshots failed"]),
    ("javascript/jest/2541668703.log", "LINT", "medium", "'npm run test-typings' (tsd type-definition checks) failed with type errors ('Parameter type ... is declared too wide'); the jest tests passed; a type check of the change", ["Failed at the commander@9.3.0 test-typings script."]),
    ("javascript/jest/2544418976.log", "TEST_FAILURE", "medium", "jest: '1 snapshot failed', 'Tests: 1 failed' ends the job (the earlier TS2307 typecheck errors did not stop it)", ["Tests:       1 failed", "1 snapshot failed."]),
    ("javascript/jest/2545414624.log", "TEST_FAILURE", "high", "jest: 'Tests: 14 failed, 14 total' (ReferenceError: Constants is not defined)", ["Tests:       14 failed"]),
    ("javascript/jest/2547772887.log", "COMPILE_ERROR", "low", "jest 'Test suite failed to run: Cannot find module 'fs.extra' from 'generator.js'' (the code requires a module that is not installed); judgement call (could be read as a dependency problem)", ["Cannot find module 'fs.extra'"]),
    ("javascript/jest/2549045719.log", "TEST_FAILURE", "high", "jest: 'Test Suites: 8 failed', 'Tests: 50 failed'", ["Tests:       50 failed"]),
    ("javascript/jest/357124468.log", "TEST_FAILURE", "high", "jest: 'Summary of all failing tests', 'Test Suites: 4 failed, 149 passed'", ["Summary of all failing tests"]),
    ("javascript/mocha/2284801118.log", "TEST_FAILURE", "high", "mocha: '2 failing' (Uncaught AssertionError)", ["  2 failing"]),
    ("javascript/mocha/2358392288.log", "TIMEOUT", "medium", "mocha: '1 failing': 'Error: Timeout of 2000ms exceeded' (a per-test time limit)", ["Error: Timeout of 2000ms exceeded"]),
    ("javascript/mocha/2404484958.log", "TEST_FAILURE", "high", "mocha: '2 failing' (done() invoked with non-Error; TypeError)", ["  2 failing"]),
    ("javascript/mocha/2446999494.log", "TEST_FAILURE", "medium", "mocha: 31 tests failed 'Error: Failed to generate def for node.lib', 'npm ERR! Test failed.'", ["npm ERR! Test failed."]),
    ("javascript/mocha/2464267101.log", "TEST_FAILURE", "high", "mocha: '273 failing' (AssertionError)", ["  273 failing"]),
    ("javascript/mocha/2530886594.log", "COMPILE_ERROR", "low", "lab: 'Error requiring file: test/act.test.js', 'Cannot find module '@hapi/wreck'' (the code requires a module the package does not install); judgement call (could be read as a dependency problem)", ["Cannot find module '@hapi/wreck'"]),
    ("javascript/mocha/2536167204.log", "TEST_FAILURE", "high", "mocha: '1 failing' (TypeError in shared.ops.scoreTask test)", ["1 failing"]),
    ("javascript/mocha/2536680158.log", "TEST_FAILURE", "high", "mocha: '1 failing' (Primary Key or Unique key should be passed to upsert query)", ["  1 failing"]),
    ("javascript/mocha/2536837535.log", "TEST_FAILURE", "low", "mocha: '2 failing': a 10000ms test timeout and an assertion on the DNS error text ('Query error: NXDOMAIN'); judgement call (TIMEOUT or NETWORK also fit one of the two)", ["  2 failing", "Error: Timeout of 10000ms exceeded"]),
    ("logs/2bc1838f764bbcee383326ab76c82fa3dbf7c441.log", "TEST_FAILURE", "high", "gradle: 'ModuleProjectTest > test FAILED', '3 tests completed, 1 failed'", ["ModuleProjectTest > test FAILED", "3 tests completed, 1 failed"]),
    ("logs/ac73df56a593752d8d5741b3a1fc0e0bc4836d9d.log", "DEPENDENCY_FETCH", "medium", "docker build of 'mvn clean package': 'Could not resolve dependencies for project com.dianping.cat:cat-core' (DependencyResolutionException)", ["Could not resolve dependencies for project"]),
    ("logs/d1e03606f3d7514e165e12d398a63167f67b5e2e.log", "DEPENDENCY_FETCH", "medium", "maven: 'Extension org.apache.maven.extensions:maven-build-cache-extension:1.0.0-SNAPSHOT or one of its dependencies could not be resolved', 'Could not find artifact'", ["ExtensionResolutionException", "ArtifactNotFoundException: Could not find artifact"]),
    ("logs/e15bdd7e3d09047d5fed70117b7c3dfd26f3a36e.log", "TEST_FAILURE", "high", "maven failsafe: 'Tests run: 152, Failures: 0, Errors: 1', 'nifi-system-test-suite ... There are test failures.'", ["Tests run: 152, Failures: 0, Errors: 1", "There are test failures."]),
    ("logs/f0ef4543509d239d4a576d2ce0aea16a1cbc80e5.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 2731, Failures: 1', 'There are test failures.'", ["Tests run: 2731, Failures: 1", "There are test failures."]),
    ("maven/12624254643-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 124, Failures: 0, Errors: 30'", ["Tests run: 124, Failures: 0, Errors: 30", "There are test failures."]),
    ("maven/16621473969-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 1943, Failures: 2'", ["Tests run: 1943, Failures: 2", "There are test failures."]),
    ("maven/1749803252-orig.log", "LINT", "high", "maven-checkstyle-plugin: 'There is 1 error reported by Checkstyle 6.11.2 with checkstyle.xml ruleset.'", ["Failed during checkstyle execution"]),
    ("maven/1932650872-orig.log", "CONFIGURATION", "high", "maven-compiler-plugin: 'Fatal error compiling: invalid target release: 17' (the job's JDK is older than the build needs)", ["invalid target release: 17"]),
    ("maven/2003301608-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 33, Failures: 0, Errors: 1', 'There are test failures.'", ["Tests run: 33, Failures: 0, Errors: 1", "There are test failures."]),
    ("maven/2172769214-orig.log", "CONFIGURATION", "low", "nexus-staging-maven-plugin deploy: 'Remote staging failed: Staging rules failure!' (the release repository rejected the deployment; the tests had passed); judgement call", ["Remote staging failed: Staging rules failure!"]),
    ("maven/2320033275-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 764, Failures: 0, Errors: 1' in fastjson1-compatible, then 'Failed to execute goal ...maven-surefire-plugin'", ["Tests run: 764, Failures: 0, Errors: 1", "Failed to execute goal org.apache.maven.plugins:maven-surefire-plugin"]),
    ("maven/2346499639-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 402, Failures: 7', 'There are test failures.'", ["Tests run: 402, Failures: 7", "There are test failures."]),
    ("maven/2397394521-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 25, Failures: 0, Errors: 1', 'There are test failures.'", ["Tests run: 25, Failures: 0, Errors: 1", "There are test failures."]),
    ("maven/7885474901-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 768, Failures: 0, Errors: 2', 'There are test failures.'", ["Tests run: 768, Failures: 0, Errors: 2", "There are test failures."]),
    ("python/2024423709-orig.log", "TEST_FAILURE", "high", "pytest: '26 failed, 1062 passed, ..., 10 errors'", ["26 failed"]),
    ("python/2062223369-orig.log", "COMPILE_ERROR", "medium", "pytest collection: 13 errors 'ModuleNotFoundError: No module named 'importlib.metadata'' (the code imports a module this Python version lacks)", ["No module named 'importlib.metadata'"]),
    ("python/2163834915-orig.log", "TEST_FAILURE", "high", "pytest: 'FAILED tests/test_core.py::test_sys_entities_normalized_token_span'", ["FAILED tests/test_core.py::"]),
    ("python/2267219366-orig.log", "TEST_FAILURE", "high", "pytest: '1 failed, 1933 passed'", ["1 failed, 1933 passed"]),
    ("python/2283578153-orig.log", "TEST_FAILURE", "high", "pytest: 'FAILED ...test_psf_king_containment_radius', '1 failed, 1956 passed'", ["FAILED gammapy/irf/psf/tests/test_parametric.py"]),
    ("python/2350842179-orig.log", "COMPILE_ERROR", "low", "pytest collection: '11 errors' from 'ModuleNotFoundError: No module named transformers/opencc/kenlm' and ImportError ('pycorrector dependencies are not fully installed'); judgement call (could be read as DEPENDENCY_FETCH: the optional packages were never installed)", ["ModuleNotFoundError: No module named 'kenlm'", "11 errors in"]),
    ("python/2360239904-orig.log", "TEST_FAILURE", "high", "pytest: '10 failed, 383 passed'", ["10 failed, 383 passed"]),
    ("python/2422710472-orig.log", "TEST_FAILURE", "medium", "nose: 'FAIL: test.rosdistro_verify_test.test_verify_files_identical', 'FAILED (SKIP=1, failures=1)' (a test that the distribution files are normalised)", ["FAIL: test.rosdistro_verify_test.test_verify_files_identical", "FAILED (SKIP=1, failures=1)"]),
    ("python/2424147467-orig.log", "TEST_FAILURE", "high", "pytest: '1 failed, 43260 passed'", ["1 failed, 43260 passed"]),
    ("python/2446151667-orig.log", "TEST_FAILURE", "high", "pytest: 'FAILED tests/bench.py::test_text_extraction', '1 failed, 2 passed'", ["FAILED tests/bench.py::test_text_extraction"]),
    ("python/2468864400-orig.log", "COMPILE_ERROR", "medium", "test run aborted at import: '@lru_cache' without parentheses on Python 3.7 -> 'TypeError: Expected maxsize to be an integer or None' (the code does not run on this Python)", ["TypeError: Expected maxsize to be an integer or None"]),
    ("python/2477898638-orig.log", "TEST_FAILURE", "high", "unittest: 'FAILED (SKIP=1, failures=4)' (AssertionError: Duplicate package name)", ["FAILED (SKIP=1, failures=4)"]),
    ("python/2496945256-orig.log", "TEST_FAILURE", "high", "unittest: 'FAILED (errors=1, skipped=914, expected failures=20)' (TypeError in ChangeStream)", ["FAILED (errors=1, skipped=914"]),
    ("python/2505733928-orig.log", "TEST_FAILURE", "medium", "pytest: '3 failed, 40 passed' (integration tests: 'expected status code 200, got 504')", ["3 failed, 40 passed"]),
    ("python/2506527647-orig.log", "TEST_FAILURE", "low", "unittest: 'FAILED (errors=1)' with 'Connection refused' to a local test server and an HTTP 405 from it; judgement call (a test-environment service problem rather than a code one is possible)", ["FAILED (errors=1)"]),
    ("python/2511268285-orig.log", "COMPILE_ERROR", "medium", "unittest: 'FAILED (errors=18)', every error 'ImportError: cannot import name 'is_torch_available' from 'sahi.utils.import_utils'' (the project's code)", ["ImportError: cannot import name 'is_torch_available'"]),
    ("python/2511451902-orig.log", "TEST_FAILURE", "high", "unittest: 'FAILED (failures=1, skipped=22)' (AssertionError)", ["FAILED (failures=1, skipped=22)"]),
    ("python/2512030835-orig.log", "COMPILE_ERROR", "high", "pytest collection: 'SyntaxError: invalid syntax' in kubernetes/config/exec_provider.py, '5 errors'", ["SyntaxError: invalid syntax"]),
    ("python/2512083654-orig.log", "TEST_FAILURE", "low", "pytest run crashed: 'Fatal Python error: Segmentation fault' in test_mainwindow.py, exit code 139 (a crash of the tested application); judgement call", ["Fatal Python error: Segmentation fault"]),
    ("python/2516607438-orig.log", "TEST_FAILURE", "high", "pytest: '1 failed, 18020 passed' (ValueError: Invalid kind: auto)", ["1 failed, 18020 passed"]),
    ("python/2516961170-orig.log", "TEST_FAILURE", "high", "unittest: 'AssertionError: False is not true : Duplicate FW versions found', 'FAILED (failures=1, skipped=176)'", ["FAILED (failures=1, skipped=176)"]),
    ("python/25839918303-orig.log", "TEST_FAILURE", "medium", "pytest: 12 tests fail with 'TypeError: unsupported operand type(s) for /: 'str' and 'str''", ["TypeError: unsupported operand type(s) for /: 'str' and 'str'"]),
    ("python/27530380915-orig.log", "COMPILE_ERROR", "medium", "pytest collection: '3 errors': 'ModuleNotFoundError: No module named 'vizro_ai.dashboard.build'' (a module of the project itself)", ["No module named 'vizro_ai.dashboard.build'"]),
    ("python/27666867032-orig.log", "TEST_FAILURE", "high", "pytest: array comparison 'Mismatched elements: 2 / 9', 1 test failed", ["Mismatched elements: 2 / 9"]),
    ("terminated/2026328035.log", "INFRASTRUCTURE", "low", "source status 'cancelled'; log ends '##[error]The operation was canceled.' with no reason given; judgement call", ["##[error]The operation was canceled."]),
]
BUGSWARM_CAP = 100_000  # bytes per committed log window
BUGSWARM_TAIL = 150  # lines kept from the end of the job
BUGSWARM_HEAD = 40  # lines kept from the start (runner, image and job set-up)


def _bugswarm_expected(mirror: str) -> dict[str, dict[str, str]]:
    """log file name -> the expected values test_github.py asserts for it (status, failed tests, repo)."""
    text = git_show(mirror, "tests/analyzer/test_github.py").decode()
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n    def ", text):
        m = re.search(r"log = '([^']+)'", block)
        if not m or m.group(1) in out:
            continue
        d = {}
        for k, pat in (("repo", r"repo = '([^']+)'"), ("status", r"compare_status\(\w+, '(\w+)'\)"), ("failed", r"compare_num_t_failed\(\w+, (\d+)\)")):
            mm = re.search(pat, block)
            if mm:
                d[k] = mm.group(1)
        out[m.group(1)] = d
    return out


def build_bugswarm() -> list[dict]:
    mirror, src = "BugSwarm+bugswarm", "bugswarm"
    base = "tests/analyzer/github_data/"
    expected = _bugswarm_expected(mirror)
    out = []
    for rel, cls, conf, basis, needles in BUGSWARM_LABELS:
        raw = git_show(mirror, base + rel)
        lines = raw.split(b"\n")
        trailing_nl = bool(lines) and lines[-1] == b""
        if trailing_nl:
            lines = lines[:-1]
        want = [n.encode() for n in needles]
        found = [i for i, ln in enumerate(lines) if any(w in ln for w in want)]
        assert found, rel
        segs = choose_segments(lines, found, cap=BUGSWARM_CAP, tail=BUGSWARM_TAIL, head=BUGSWARM_HEAD)
        kept: list[bytes] = []
        decisive: list[int] = []
        fset = set(found)
        for lo, hi in segs:
            for i in range(lo, hi):
                if i in fset:
                    decisive.append(len(kept) + 1)
                kept.append(lines[i])
        assert decisive, rel
        data = b"\n".join(kept) + (b"\n" if trailing_nl else b"")
        exp = expected.get(Path(rel).name, {})
        said = ", ".join(f"{k} {v}" for k, v in exp.items() if k != "repo")
        notes = [f"{base}{rel}" + (f" (job of {exp['repo']})" if "repo" in exp else "")]
        if segs != [(0, len(lines))]:
            inside = {i for lo, hi in segs for i in range(lo, hi)}
            dropped = len([f for f in found if f not in inside])
            notes.append(
                "truncated: original lines " + " + ".join(f"{lo + 1}-{hi}" for lo, hi in segs) + f" of {len(lines)} kept, in that order"
                + (" (the gap between the segments is not marked in the file)" if len(segs) > 1 else "")
                + (f"; {dropped} decisive line(s) outside the window" if dropped else "")
            )
        name = rel.removesuffix(".log").replace("/", "__")
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=write_log(src, name.replace("__", "-") + ".log", data),
                provider="github_actions",
                failure_class=cls,
                confidence=conf,
                basis=(f"bugswarm expected: {said}; " if said else "") + "log: " + basis,
                decisive=decisive,
                decisive_by="labeller",
                notes="; ".join(notes),
            )
        )
    return out


# --------------------------------------------------------------------------------------
# BugSwarm/bugswarm: tests/analyzer/travis_data/**.log (Travis CI job logs the BugSwarm
# analyzer is tested on) with the expected results in tests/analyzer/test_travis.py. Same
# curator as `bugswarm` above (its GitHub Actions logs), kept as a separate source.
# The cause is read at the last error before 'The command "..." exited with N.' (or
# '... failed and exited with N during .', or Travis' own termination message).
BUGSWARM_TRAVIS_BASE = "tests/analyzer/travis_data/"
BUGSWARM_TRAVIS_CAP = 100_000  # bytes per committed log (as bugswarm: 300 kB would exceed the 20 MB corpus budget)
BUGSWARM_TRAVIS_TAIL = 150
BUGSWARM_TRAVIS_HEAD = 40
BUGSWARM_TRAVIS_FOLDER_CAP = {"logs": 8, "build_language_not_java": 8}  # first N per folder (sorted path order); others:
BUGSWARM_TRAVIS_DEFAULT_CAP = 12
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]|\r")
_FAILED_CMD = re.compile(rb'The command "(.*?)" (?:failed and )?exited with ([1-9]\d*)')
_TRAVIS_END = re.compile(rb"Done\. Your build exited with (\d+)\.")
_TRAVIS_TERM = (b"No output has been received in the last", b"The job exceeded the maximum time limit")


def _bt_folder(rel: str) -> str:
    parts = rel.split("/")
    return "/".join(parts[:2]) if parts[0] == "javascript" else parts[0]


def _bt_status(data: bytes) -> str | None:
    """'failed' (exit N != 0), 'errored' (a set-up command failed, build stopped),
    'terminated' (Travis stopped it), or None (passed, or the log has no end)."""
    tail = data[-4000:]
    m = _TRAVIS_END.findall(tail)
    if m and m[-1] != b"0":
        return "failed"
    if m:
        return None
    if b"failed and exited with" in data and b"Your build has been stopped." in tail:
        return "errored"
    if any(t in tail for t in _TRAVIS_TERM):
        return "terminated"
    return None


def _bt_failure_key(data: bytes) -> tuple[bytes, bytes]:
    """(failing command, the last 20 non-blank lines before it, digits blanked): two logs
    with the same key are copies of one failure (e.g. the same set-up step failing the same way)."""
    lines = [_ANSI.sub(b"", ln) for ln in data.split(b"\n")]
    idx = [i for i, ln in enumerate(lines) if _FAILED_CMD.search(ln)]
    if not idx:
        return (b"", b"")
    i = idx[0]
    cmd = _FAILED_CMD.search(lines[i]).group(1)
    prev = [ln.strip() for ln in lines[max(0, i - 200) : i] if ln.strip() and not ln.startswith(b"travis_")][-20:]
    return (cmd, re.sub(rb"\d+", b"N", b"\n".join(prev)))


def _travistorrent_index() -> dict[str, set]:
    """sha256, first 2 KB, job/build ids and (commit, build number) of every TravisTorrent dev_logs log."""
    mirror = "TestRoots+travistorrent-tools"
    idx: dict[str, set] = {"sha": set(), "head": set(), "ids": set(), "builds": set()}
    for p in git_ls(mirror, "dev_logs"):
        if not p.endswith(".log"):
            continue
        d = git_show(mirror, p)
        name = Path(p).name
        idx["sha"].add(hashlib.sha256(d).hexdigest())
        if d:
            idx["head"].add(d[:2048])
        idx["ids"] |= set(re.findall(r"(?<![0-9a-f])(\d{6,})(?![0-9a-f])", name))
        idx["ids"] |= {x.decode() for x in re.findall(rb"(?:Job|Build) id: (\d+)", d)}
        m = re.match(r"(\d+)_([0-9a-f]{40})_", name)
        if m:
            idx["builds"].add((m.group(2), m.group(1)))
    return idx


def _bt_overlap(rel: str, data: bytes, tt: dict[str, set]) -> str | None:
    name = Path(rel).name
    if hashlib.sha256(data).hexdigest() in tt["sha"]:
        return "same bytes"
    ids = set(re.findall(r"^(\d{6,})", name)) | {x.decode() for x in re.findall(rb"(?:Job|Build) id: (\d+)", data[:5000])}
    if ids & tt["ids"]:
        return "same job id"
    if data[:2048] in tt["head"]:
        return "first 2 KB identical"
    m = re.match(r"([0-9a-f]{40})-(\d+)\.\d+\.log$", name)
    if m and (m.group(1), m.group(2)) in tt["builds"]:
        return "same commit and build number"
    return None


def bugswarm_travis_selection() -> tuple[list[str], dict[str, int]]:
    """The fixed selection rule (see PROVENANCE.md): paths under travis_data/, and why the others were left out."""
    mirror = "BugSwarm+bugswarm"
    tt = _travistorrent_index()
    why: dict[str, int] = {}
    seen_sha: set[str] = set()
    seen_ids: set[str] = set()
    seen_builds: set[tuple[str, str]] = set()
    seen_keys: set[tuple[bytes, bytes]] = set()
    per_folder: dict[str, int] = {}
    chosen: list[str] = []

    def skip(reason: str) -> None:
        why[reason] = why.get(reason, 0) + 1

    for path in sorted(git_ls(mirror, BUGSWARM_TRAVIS_BASE)):
        if not path.endswith(".log"):
            continue
        rel = path.removeprefix(BUGSWARM_TRAVIS_BASE)
        folder, name = _bt_folder(rel), Path(rel).name
        try:
            data = git_show(mirror, path)
        except subprocess.CalledProcessError:
            skip("absent from the mirror snapshot")
            continue
        if not data:
            skip("empty")
            continue
        if folder == "unknowns":
            skip("unknowns/ (a docker error, not a job log)")
            continue
        if re.search(r"-(repr|modified)", name) or name.startswith("nose-"):
            skip("reproduced/modified/fragment (result_comparer -repr, -modified, nose-*)")
            continue
        ov = _bt_overlap(rel, data, tt)
        if ov:
            skip(f"travistorrent near-copy ({ov})")
            continue
        if _bt_status(data) is None:
            skip("passed, or no end of job in the log")
            continue
        sha = hashlib.sha256(data).hexdigest()
        ids = set(re.findall(r"^(\d{6,})", name)) | {x.decode() for x in re.findall(rb"Job id: (\d+)", data[:5000])}
        m = re.match(r"([0-9a-f]{40})-(\d+)\.\d+\.log$", name)
        build = (m.group(1), m.group(2)) if m else None
        key = _bt_failure_key(data)
        if sha in seen_sha:
            skip("byte copy of an earlier log")
            continue
        if ids & seen_ids:
            skip("same job id as an earlier log")
            continue
        if build and build in seen_builds:
            skip("another job of a build already taken")
            continue
        if key != (b"", b"") and key in seen_keys:
            skip("same failing command and last 20 lines as an earlier log")
            continue
        seen_sha.add(sha)
        seen_ids |= ids
        if build:
            seen_builds.add(build)
        seen_keys.add(key)
        if per_folder.get(folder, 0) >= BUGSWARM_TRAVIS_FOLDER_CAP.get(folder, BUGSWARM_TRAVIS_DEFAULT_CAP):
            skip("over the folder cap")
            continue
        per_folder[folder] = per_folder.get(folder, 0) + 1
        chosen.append(rel)
    return chosen, why


def _bugswarm_travis_expected(mirror: str) -> dict[str, dict[str, str]]:
    """'<folder attr>/<log>' -> the values test_travis.py asserts for it (job id, repo, status, failed tests)."""
    text = git_show(mirror, "tests/analyzer/test_travis.py").decode()
    attr_dir = dict(re.findall(r"^    (\w+) = data_dir \+ '([^']+)'", text, re.M))
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n    def ", text):
        logs = re.findall(r"log\w* = '([^']+\.log)'", block)
        folders = re.findall(r"join\(self\.(\w+), ", block)
        vals = {k: re.findall(pat, block) for k, pat in (
            ("job", r"job_id\w* = (\d+)"), ("repo", r"repo\w* = '([^']+)'"),
            ("status", r"compare_status\(\w+, '(\w+)'\)"), ("failed", r"compare_num_t_failed\(\w+, (\d+)\)"))}
        for i, log_ in enumerate(logs):
            if i >= len(folders) or folders[i] not in attr_dir:
                continue
            rel = attr_dir[folders[i]] + log_
            d = {k: v[i] for k, v in vals.items() if i < len(v)}
            out.setdefault(rel, d)
    return out


# (path under travis_data/, class, confidence, basis, needles that find the decisive lines)
BUGSWARM_TRAVIS_LABELS: list[tuple[str, str, str, str, list[str]]] = [
    ("ant/233645906-orig.log", "TEST_FAILURE", "high", "ant junit: 'Test wyc.testing.AllValidVerificationTest failed' (RuntimeException: unknown bytecode encountered), 'BUILD FAILED' before 'ant test' exited with 1", ["Test wyc.testing.AllValidVerificationTest failed"]),
    ("ant/264241708-orig.log", "TEST_FAILURE", "high", "ant junit: 'AssertionFailedError: Output does not match reference', 'Test wyc.testing.AllInvalidTest failed'", ["junit.framework.AssertionFailedError: Output does not match reference", "Test wyc.testing.AllInvalidTest failed"]),
    ("build_language_not_java/052629fc54996048ea70826a7442e4be0349743a-3.1.log", "CONFIGURATION", "medium", "android set-up step 'android create avd ... -t $ANDROID_TARGET' failed: 'Error: Target id is not valid' (the SDK components the job asks for were not installed: 'Failed to create directory /usr/local/android-sdk/extras/android/support')", ["Error: Target id is not valid.", "Failed to create directory /usr/local/android-sdk/extras/android/support"]),
    ("build_language_not_java/0576ea4403808a58bbbfb86a81e1c933fbeeec77-3.1.log", "COMPILE_ERROR", "low", "set-up step 'python2 build/create_tests.py' failed: 'ImportError: No module named airspeed', then 'NameError: name 'test_path' is not defined' (the script needs a module the build never installs); judgement call (could be read as DEPENDENCY_FETCH)", ["ImportError: No module named airspeed", "NameError: name 'test_path' is not defined"]),
    ("build_language_not_java/0c3d3df09ed4e813ab06a3f84eb12d081aa5d080-31.1.log", "CONFIGURATION", "medium", "the ant build and java tests passed ('BUILD SUCCESSFUL'); then 'nosetests: command not found' and the command exited with 127 (the test tool is not installed in the job)", ["nosetests: command not found"]),
    ("build_language_not_java/0cc69d8f93b19465d041c6561a2b3a7272b57dac-6.1.log", "OUT_OF_MEMORY", "high", "sbt JVM start: 'os::commit_memory(...) failed; error='Cannot allocate memory' (errno=12)', 'Native memory allocation (malloc) failed to allocate 1431699456 bytes'", ["error='Cannot allocate memory' (errno=12)", "Native memory allocation (malloc) failed"]),
    ("build_language_not_java/0f4508cc677abe2a93d1529ecda19b657c3afd3b-10.1.log", "OUT_OF_MEMORY", "high", "sbt JVM start: 'os::commit_memory(...) failed; error='Cannot allocate memory' (errno=12)', 'Native memory allocation (malloc) failed to allocate 715784192 bytes'", ["error='Cannot allocate memory' (errno=12)", "Native memory allocation (malloc) failed"]),
    ("build_language_not_java/12c20daefc8c74426cdf1b0c4b91381e75298289-395.1.log", "DEPENDENCY_FETCH", "medium", "pants bootstrap: 'DistributionNotFound: elementtree', 'Unable to build pants!  Cannot continue!' (a Python requirement could not be resolved)", ["DistributionNotFound: elementtree", "Unable to build pants!"]),
    ("build_language_not_java/14c09c5f5abdf2c0c48c1d67054292675fa90633-84.1.log", "DEPENDENCY_FETCH", "medium", "gradle: 'Could not resolve all dependencies for configuration ':onebusaway-android:_debugCompile'', 'Could not find com.google.android.gms:play-services:5.0.77.' (the earlier 'error: device offline' lines are the emulator wait)", ["Could not find com.google.android.gms:play-services:5.0.77.", "Could not resolve all dependencies for configuration"]),
    ("build_language_not_java/17f87d0c2a48c118a2287e3fa2e905105e586629-2.1.log", "CONFIGURATION", "low", "'mvn install' crashed: 'java.lang.NoClassDefFoundError: org/eclipse/aether/spi/connector/Transfer$State' inside maven 3.2.5 (a build plugin/extension incompatible with the job's maven); judgement call", ["Exception in thread \"main\" java.lang.NoClassDefFoundError: org/eclipse/aether/spi/connector/Transfer$State"]),
    ("logs/0017f43a0ce278de9d32bb1e33b49b88cb1fb3e1-3.1.log", "DEPENDENCY_FETCH", "medium", "gradle init script line 21: downloading 'https://bndtools.ci.cloudbees.com/.../biz.aQute.bnd-latest.jar' failed ('A problem occurred evaluating script. > https://bndtools.ci.cloudbees.com/...'): a build-tool jar download", ["A problem occurred evaluating script.", "> https://bndtools.ci.cloudbees.com/job/bnd.master"]),
    ("logs/007ba44565cdaa16d661d7541cf668850214a097-105.1.log", "DEPENDENCY_FETCH", "medium", "install step 'mvn install -DskipTests': 'Unresolveable build extension: Plugin org.apache.maven.wagon:wagon-ssh:2.2 or one of its dependencies could not be resolved' (failed 3 times)", ["Unresolveable build extension: Plugin org.apache.maven.wagon:wagon-ssh:2.2"]),
    ("logs/007ba98e17a3e2d8b1b867e27aedbf330ccb45b1-1926.1.log", "LINT", "medium", "maven 'apache-rat-plugin:0.8:check ... Too many unapproved licenses: 3' (a licence-header static check of the change)", ["Too many unapproved licenses: 3"]),
    ("logs/00a8b527a593fe148a7519fb44eb90b98065e860-6.1.log", "COMPILE_ERROR", "high", "maven-compiler: 'COMPILATION ERROR', 'CaseBuilder.java:[95,33] incompatible types', 'Compilation failure'", ["[ERROR] COMPILATION ERROR", "CaseBuilder.java:[95,33] incompatible types"]),
    ("logs/014383e2e8d4158b794ddab34a7ef8466e309736-24.1.log", "DEPENDENCY_FETCH", "medium", "install step 'mvn install': 'Non-resolvable parent POM: Could not transfer artifact com.github.javaparser:javaparser-parent:pom:2.0.1-SNAPSHOT from/to codehaus-snapshots (https://nexus.codehaus.org/snapshots/)'", ["Non-resolvable parent POM: Could not transfer artifact"]),
    ("logs/0149b9d043a91080705916988d1cf5ef603520b5-3.1.log", "CONFIGURATION", "low", "install step 'mvn install -DskipTests': maven-antrun 'ant-osgi-test' 'Directory does not exist: .../logback-examples/lib' (the build's OSGi test step expects a directory another module makes); judgement call", ["Directory does not exist: /home/travis/build/qos-ch/logback/logback-examples/lib"]),
    ("logs/017f57ac91c0258032fc9b4169c200cb5f02b6e1-4.1.log", "CONFIGURATION", "low", "set-up step 'sudo apt-get install -qq --force-yes libgd2-xpm ia32-libs ia32-libs-multiarch' exited 100: 'dpkg: error processing ia32-libs', 'E: Sub-process /usr/bin/dpkg returned an error code (1)' (the packages cannot be configured on this image); judgement call (DEPENDENCY_FETCH or INFRASTRUCTURE would also fit)", ["E: Sub-process /usr/bin/dpkg returned an error code (1)", "dpkg: error processing ia32-libs (--configure)"]),
    ("logs/01d6823aef682f90160888eb888ff277b4b532bf-2.1.log", "DEPENDENCY_FETCH", "low", "install step 'mvn install': \"'dependencies.dependency.version' for ... is missing\" after 'Could not transfer metadata com.goodow.realtime:realtime-parent:0.5.5-SNAPSHOT ... from/to codehaus-snapshots' (the SNAPSHOT parent that manages the versions could not be fetched); judgement call (CONFIGURATION fits the POM error as such)", ["Could not transfer metadata com.goodow.realtime:realtime-parent", "'dependencies.dependency.version' for com.google.guava:guava:jar is missing"]),
    ("build_system_testing/144826559.log", "TEST_FAILURE", "high", "gradle: ':test FAILED', 'There were failing tests' before './gradlew check' exited with 1", [":test FAILED", "> There were failing tests."]),
    ("build_system_testing/156977713.log", "COMPILE_ERROR", "high", "javac: 'CassandraDatastore.java:624: error: illegal start of expression' ... '98 errors', 'Error 1 while running javac'", ["98 errors", "Exception tablesaw.TablesawException: Error 1 while running javac"]),
    ("build_system_testing/156977714.log", "COMPILE_ERROR", "high", "javac: 'CassandraDatastore.java:624: error: illegal start of expression' ... '95 errors', 'Error 1 while running javac'", ["95 errors", "Exception tablesaw.TablesawException: Error 1 while running javac"]),
    ("build_system_testing/160772310.log", "COMPILE_ERROR", "high", "javac (test sources): 'error: incompatible types: Datastore cannot be converted to KairosDatastore', '4 errors'", ["error: incompatible types: Datastore cannot be converted to KairosDatastore", "Exception tablesaw.TablesawException: Error 1 while running javac"]),
    ("build_system_testing/161141427.log", "DEPENDENCY_FETCH", "medium", "install step 'ant deps': '[get] Error getting https://fpdownload.macromedia.com/.../playerglobal23_0.swc', then 'FileNotFoundException ... playerglobal23_0.swc' (a build dependency download failed)", ["[get] Error getting https://fpdownload.macromedia.com", "java.io.FileNotFoundException"]),
    ("build_system_testing/165108370.log", "COMPILE_ERROR", "high", "install step 'mvn install -DskipTests': maven-compiler 'cannot find symbol ... variable DOOR_OPEN, location: class org.bukkit.Sound' (COMPILATION ERROR; failed 3 times)", ["[ERROR] symbol:   variable DOOR_OPEN", "COMPILATION ERROR"]),
    ("build_system_testing/250416678.log", "TEST_FAILURE", "low", "maven surefire: 'Tests run: 1358, Failures: 0, Errors: 871', nearly all 'Unknown database 'nullable_0'' (the test databases were not created); judgement call (a test-environment set-up problem: CONFIGURATION would also fit)", ["Tests run: 1358, Failures: 0, Errors: 871", "There are test failures."]),
    ("build_system_testing/251797108.log", "TEST_FAILURE", "high", "maven surefire: 'testDatasetGroupFiles(loci.plugins.in.ImporterTest) <<< FAILURE!' (NullPointerException), 'Tests run: 30, Failures: 1'", ["Tests run: 30, Failures: 1, Errors: 0, Skipped: 0\r", "There are test failures."]),
    ("build_system_testing/81961806.log", "COMPILE_ERROR", "high", "sbt/activator: 'schema_org.scala.html:37: ')' expected but string literal found', '(compile:compileIncremental) Compilation failed'", ["')' expected but string literal found", "Compilation failed"]),
    ("build_system_testing/88551597.log", "TEST_FAILURE", "high", "gradle: '1160 tests completed, 42 failed' (TestNG AssertionErrors), ':test FAILED'", ["1160 tests completed, 42 failed"]),
    ("build_system_testing/92030727.log", "COMPILE_ERROR", "high", "sbt/activator: 'index.scala.html:38: illegal start of simple expression', '(compile:compileIncremental) Compilation failed'", ["illegal start of simple expression", "Compilation failed"]),
    ("gradle/111273215-orig.log", "TEST_FAILURE", "high", "gradle: '646 tests completed, 6 failed, 86 skipped', ':quasar-core:jdk7Test FAILED'", ["646 tests completed, 6 failed"]),
    ("gradle/114088869-orig.log", "TEST_FAILURE", "high", "gradle: 'RemoteEjbMonitorInstrumenterTest > testMonitorRemoteCalls FAILED' (IndexOutOfBoundsException), '46 tests completed, 1 failed'", ["testMonitorRemoteCalls FAILED", "46 tests completed, 1 failed"]),
    ("gradle/153491211-orig.log", "TEST_FAILURE", "high", "gradle (3 junit versions): 'spring_can_inject_beans_into_stages FAILED' (NoUniqueBeanDefinitionException), ':jgiven-spring:test FAILED' in each run", ["spring_can_inject_beans_into_stages FAILED", ":jgiven-spring:test FAILED"]),
    ("gradle/22697605-orig.log", "CONFIGURATION", "medium", "install step './gradlew assemble': ':library:processDebugResources FAILED', 'Cannot run program \".../android-sdk-linux/build-tools/19.0.3/aapt\": error=2, No such file or directory' (the Android build tools the build expects are not installed)", ["Cannot run program", ":library:processDebugResources FAILED"]),
    ("gradle/254312312-orig.log", "TEST_FAILURE", "high", "gradle: IncidentRepositoryTest ... FAILED (NullPointerException), '47 tests completed, 7 failed'", ["47 tests completed, 7 failed"]),
    ("gradle/269855203-orig.log", "TEST_FAILURE", "high", "gradle: '1544 tests completed, 1 failed', ':test FAILED'", ["1544 tests completed, 1 failed"]),
    ("gradle/49327415-orig.log", "TEST_FAILURE", "high", "gradle: '42 tests completed, 3 failed, 1 skipped', ':capsule:test FAILED'", ["42 tests completed, 3 failed", ":capsule:test FAILED"]),
    ("gradle/581212464-orig.log", "TEST_FAILURE", "high", "gradle: 'ComparisonFailure: expected:<null> but was:<NoopSpan>', '100 tests completed, 1 failed', ':stagemonitor-tracing:test FAILED'", ["100 tests completed, 1 failed"]),
    ("gradle/68605615-orig.log", "TEST_FAILURE", "high", "gradle: 'testMultipleInterceptorsWithPreserveOrder FAILED' (IndexOutOfBoundsException), '1143 tests completed, 1 failed'", ["testMultipleInterceptorsWithPreserveOrder FAILED", "1143 tests completed, 1 failed"]),
    ("gradle/732494428-orig.log", "TEST_FAILURE", "high", "gradle: '> Task :test FAILED', 'There were failing tests'", ["> Task :test FAILED", "> There were failing tests."]),
    ("gradle/88551599-orig.log", "TEST_FAILURE", "high", "gradle: '1160 tests completed, 42 failed' (TestNG AssertionErrors), ':test FAILED'", ["1160 tests completed, 42 failed"]),
    ("maven/106770373-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests in error: BatchFailureTest.run:202 » PSQL ERROR: division by zero', 'Tests run: 799, Failures: 0, Errors: 2'", ["Tests run: 799, Failures: 0, Errors: 2", "There are test failures."]),
    ("maven/109895373-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 271, Failures: 0, Errors: 2, Skipped: 2', 'There are test failures.'", ["Tests run: 271, Failures: 0, Errors: 2", "There are test failures."]),
    ("maven/148851383-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 1665, Failures: 14', 'There are test failures.'", ["Tests run: 1665, Failures: 14, Errors: 0, Skipped: 0", "There are test failures."]),
    ("maven/475275870-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 898, Failures: 0, Errors: 2, Skipped: 2' (RDF4JClassicABoxTest: RDFParse 'DOCTYPE is disallowed'), 'There are test failures.'", ["Tests run: 898, Failures: 0, Errors: 2", "There are test failures."]),
    ("maven/547866282-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 13222, Failures: 12, Errors: 12' (NullPointer in Paths_assert* tests), 'There are test failures.'", ["Tests run: 13222, Failures: 12, Errors: 12", "There are test failures."]),
    ("maven/610576045-orig.log", "TEST_FAILURE", "high", "maven surefire: 'JsonClassCodegenProcessorTest ... <<< FAILURE!' (ComparisonFailure), 'Tests run: 21, Failures: 1'", ["Tests run: 21, Failures: 1, Errors: 0, Skipped: 1", "There are test failures."]),
    ("maven/692484614-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 2440, Failures: 1, Errors: 6' (NullPointer No parent for filter), 'There are test failures.'", ["Tests run: 2440, Failures: 1, Errors: 6", "There are test failures."]),
    ("maven/99251245-orig.log", "TEST_FAILURE", "high", "maven surefire: 'Tests run: 4728, Failures: 2, Errors: 1', 'There are test failures.'", ["Tests run: 4728, Failures: 2, Errors: 1", "There are test failures."]),
    ("build_system_testing/97793256.log", "DEPENDENCY_FETCH", "medium", "install step 'mvn install -DskipTests': 'Could not transfer metadata ... from/to codehaus-snapshots (https://nexus.codehaus.org/snapshots/)', then 'Could not resolve dependencies for project com.google.javascript:closure-compiler-gwt' (failed 3 times)", ["Could not resolve dependencies for project com.google.javascript:closure-compiler-gwt"]),
    ("javascript/jest/200893563.log", "TEST_FAILURE", "low", "two failing commands: 'npm run lint' (eslint '2 problems (2 errors, 0 warnings)': no-unused-vars, max-len) and 'npm run test' (jest 'Tests: 3 failed, 62 passed'); the source counts 3 failed tests; judgement call (LINT fits the first failure equally)", ["2 problems (2 errors, 0 warnings)", "Failed at the normalizr@3.2.1 test script"]),
    ("javascript/jest/357124468.log", "COMPILE_ERROR", "medium", "jest 'Test suite failed to run: Cannot find module './Draggable' from 'Chartify.test.js'' (a module of the project itself is missing)", ["Cannot find module './Draggable'"]),
    ("javascript/jest/495236809.log", "CONFIGURATION", "medium", "the tests passed ('Tests: 1 skipped, 96 passed'); the coverage upload failed: coveralls 'Bad response: 422 {\"message\":\"Couldn't find a repository matching this job.\"}' (the coverage service is not set up for the repository)", ["Couldn't find a repository matching this job."]),
    ("javascript/jest/499269596.log", "COMPILE_ERROR", "medium", "jest 'Test suite failed to run: Cannot find module './Draggable' from 'Chartify.test.js'' (a module of the project itself is missing)", ["Cannot find module './Draggable'"]),
    ("javascript/jest/503877270.log", "TEST_FAILURE", "low", "jest: all 14 suites 'failed to run' with 'TypeError: Cannot assign to read only property 'Symbol(Symbol.toStringTag)' of object '#<process>'' (the test runner does not work on this Node version); judgement call (CONFIGURATION also fits)", ["Cannot assign to read only property 'Symbol(Symbol.toStringTag)'"]),
    ("javascript/jest/564797426.log", "TEST_FAILURE", "high", "jest: 'FAIL test/async.test.js', 'Tests: 1 failed, 43 passed'", ["\x1b[31m1 failed\x1b[39m"]),
    ("javascript/jest/571351164.log", "TEST_FAILURE", "high", "jest: 'Summary of all failing tests', 'Tests: 3 failed, 116 skipped, 9621 passed', 'make: *** [test-only] Error 1'", ["Summary of all failing tests", "make: *** [test-only] Error 1"]),
    ("javascript/jest/584307061.log", "TEST_FAILURE", "high", "jest: 'Summary of all failing tests', 'FAIL packages/babel-generator/test/index.js', 'Tests: 1 failed'", ["Summary of all failing tests", "make: *** [test-only] Error 1"]),
    ("javascript/jest/677867560.log", "DEPENDENCY_FETCH", "low", "jest 'Test suite failed to run: Cannot find module '@babel/compat-data/corejs3-shipped-proposals'' from the installed babel packages (mismatched versions of third-party dependencies); judgement call (could be read as a build set-up/COMPILE_ERROR problem)", ["Cannot find module '@babel/compat-data/corejs3-shipped-proposals'"]),
    ("javascript/mocha/425225977.log", "TEST_FAILURE", "medium", "mocha tests fail with 'TypeError: Object function page(path, fn) ...' and 'Cannot call method 'stop' of undefined': '0 passing', '11 failing', 'npm ERR! Test failed.'", ["11 failing", "Test failed.  See above for more details."]),
    ("javascript/mocha/454920816.log", "TEST_FAILURE", "high", "mocha: '1 failing' (Uncaught AssertionError [ERR_ASSERTION]), 'npm ERR! Test failed.'", ["1 failing", "Test failed.  See above for more details."]),
    ("javascript/mocha/600889160.log", "TEST_FAILURE", "high", "mocha: '3 failing' (TypeError: element.append is not a function)", ["3 failing"]),
    ("javascript/mocha/627024009.log", "TEST_FAILURE", "high", "mocha-style runner (torch): '4 failing' (TypeError, AssertionError in interval-spec), '\"test\" exited with 4'", ["4 failing"]),
    ("javascript/mocha/635927212.log", "TEST_FAILURE", "medium", "karma/gulp: expect.js failures ('expected layer to be painted ... but actual color is [0,0,0]'), \"'test' errored after 44 s\"", ["errored after"]),
    ("javascript/mocha/637986979.log", "TEST_FAILURE", "high", "mocha (electron): '652 passing', '2 failing' (WebGL TypeError, AssertionError), coverage:ci script failed", ["2 failing"]),
    ("javascript/mocha/643564899.log", "TEST_FAILURE", "high", "mocha: '1 failing' (NotFoundError: Integration not found.), 'Command failed with exit code 3'", ["1 failing", "NotFoundError: Integration not found."]),
    ("python/109227526-orig.log", "TEST_FAILURE", "high", "unittest via setup.py test: 'FAIL: test_base_request' (AssertionError bytes vs str), 'FAILED (failures=2, errors=3)'", ["FAILED (failures=2, errors=3)"]),
    ("python/109787645-orig.log", "TEST_FAILURE", "medium", "pytest: '39 failed, 2 passed', each 'NameError: name 'os' is not defined' in tests/__init__.py (a bug in the test package itself), 'make: *** [test] Error 1'", ["39 failed, 2 passed", "make: *** [test] Error 1"]),
    ("python/113007194-orig.log", "TEST_FAILURE", "medium", "unittest: 'FAIL: test_repository_package_names' (AssertionError: Lists differ: package names not sorted), 'FAILED (failures=1)' (a test that checks the channel's JSON data)", ["FAIL: test_repository_package_names", "FAILED (failures=1)"]),
    ("python/149257173-orig.log", "TEST_FAILURE", "low", "vistrails tests: 'FAILED (failures=2, errors=8, skipped=2)'; one failure is 'Network error: URLError: <urlopen error [Errno -2] Name or service not known>'; judgement call (some failures may be NETWORK)", ["FAILED (failures=2, errors=8, skipped=2)"]),
    ("python/159557987-orig.log", "TEST_FAILURE", "medium", "unittest: 'ERROR: test_multiline_index' FileNotFoundError 'multiline_index.nml' (a test data file missing), 'FAILED (errors=1)'", ["FileNotFoundError: [Errno 2] No such file or directory: 'multiline_index.nml'", "FAILED (errors=1)"]),
    ("python/210833092-orig.log", "TEST_FAILURE", "high", "pytest: 'FAIL tests/unit/test_readkey.py::ReadKeyTest::test_page_down', '2 failed, 9 passed'", ["2 failed, 9 passed"]),
    ("python/212206923-orig.log", "TEST_FAILURE", "high", "tox py35: 'Test failed: <unittest.runner.TextTestResult run=591 errors=0 failures=1>', 'py35: commands failed'", ["error: Test failed: <unittest.runner.TextTestResult run=591 errors=0 failures=1>", "py35: commands failed"]),
    ("python/256802843-orig.log", "TEST_FAILURE", "high", "tox/pytest: '9 failed, 2546 passed' (AssertionError in jwt_grant_token_test), 'py27: commands failed'", ["9 failed, 2546 passed", "py27: commands failed"]),
    ("python/299944105-orig.log", "TEST_FAILURE", "medium", "pytest: '8 failed, 195 passed, 14 skipped' with 'SSHException: Error reading SSH protocol banner' from the library's own test transport", ["8 failed, 195 passed, 14 skipped"]),
    ("python/309853010-orig.log", "TEST_FAILURE", "high", "numpy tests: 'FAIL: numpy.core.tests.test_multiarray.TestSummarization.test_2d', 'FAILED (KNOWNFAIL=12, SKIP=17, failures=1)'", ["FAIL: numpy.core.tests.test_multiarray.TestSummarization.test_2d", "FAILED (KNOWNFAIL=12, SKIP=17, failures=1)"]),
    ("python/446719552-orig.log", "CONFIGURATION", "low", "pytest: 'Interrupted: 9 errors during collection', each 'import file mismatch' (test modules with the same basename, no package __init__: the test layout/collection set-up); judgement call (TEST_FAILURE would also fit)", ["Interrupted: 9 errors during collection"]),
    ("python/73309390-orig.log", "TEST_FAILURE", "high", "tornado tests: 'FAIL: test_non_current (tornado.test.ioloop_test.TestIOLoopCurrent)', 'FAILED (failures=1, skipped=71)'", ["FAIL: test_non_current", "FAILED (failures=1, skipped=71)"]),
    ("ruby/00f555ba0a60166a1cb3f063f56f44c75f59bf75-2.1.log", "CONFIGURATION", "low", "set-up step 'rvm use jruby-d19 --install --binary --fuzzy' failed during the build set-up after '/usr/local/rvm/scripts/rvm: No such file or directory' (the build environment has no rvm); judgement call (INFRASTRUCTURE would also fit: a broken build image)", ["/usr/local/rvm/scripts/rvm: No such file or directory", "failed and exited with 1 during"]),
    ("ruby/79f992074a0b57f0d7694549a34a5aba0d5a716f-42.1.log", "CONFIGURATION", "low", "no .travis.yml ('Could not find .travis.yml, using standard configuration'); 'rvm use default' failed after '/usr/local/rvm/scripts/rvm: No such file or directory'; judgement call (INFRASTRUCTURE would also fit)", ["Could not find .travis.yml", "/usr/local/rvm/scripts/rvm: No such file or directory", "failed and exited with 1 during"]),
    ("result_comparer/102015358-orig.log", "TEST_FAILURE", "high", "numpy test run: 'ERROR: test_mem_insert' (TypeError: argument 1 must be numpy.ndarray, not int), 'FAILED (KNOWNFAIL=6, SKIP=14, errors=1)'", ["ERROR: test_mem_insert", "FAILED (KNOWNFAIL=6, SKIP=14, errors=1)"]),
    ("result_comparer/319848591-orig.log", "TEST_FAILURE", "medium", "unittest: 'FAIL: test_release(...)' AssertionError ''url' unexpectedly found', 'FAILED (failures=1)' (a test that checks the package channel's JSON entries)", ["AssertionError: 'url' unexpectedly found", "FAILED (failures=1)"]),
    ("terminated/33664717.log", "TIMEOUT", "high", "Travis: 'No output has been received in the last 10 minutes ... The build has been terminated' (during the disconf-web module of mvn)", ["No output has been received in the last 10 minutes", "The build has been terminated"]),
    ("javascript/multiple_frameworks/392465785.log", "TEST_FAILURE", "medium", "npm 'Failed at the wildcat@ test:browser script 'env BABEL_ENV=test jest test/browser.test.js ...'', 'make: *** [test-jest-browser] Error 1' (the jest browser tests failed)", ["Failed at the wildcat@ test:browser script", "make: *** [test-jest-browser] Error 1"]),
]


def build_bugswarm_travis() -> list[dict]:
    mirror, src = "BugSwarm+bugswarm", "bugswarm-travis"
    chosen, _why = bugswarm_travis_selection()
    labelled = [rel for rel, *_ in BUGSWARM_TRAVIS_LABELS]
    assert len(set(labelled)) == len(labelled), "duplicate bugswarm-travis label"
    stray = sorted(set(labelled) - set(chosen))
    assert not stray, f"labelled but not selected by the rule: {stray}"
    missing = sorted(set(chosen) - set(labelled))
    assert not missing, f"selected by the rule but not labelled: {missing}"
    expected = _bugswarm_travis_expected(mirror)
    out = []
    for rel, cls, conf, basis, needles in BUGSWARM_TRAVIS_LABELS:
        raw = git_show(mirror, BUGSWARM_TRAVIS_BASE + rel)
        lines = raw.split(b"\n")
        trailing_nl = bool(lines) and lines[-1] == b""
        if trailing_nl:
            lines = lines[:-1]
        want = [n.encode() for n in needles]
        found = [i for i, ln in enumerate(lines) if any(w in ln for w in want)]
        assert found, rel
        segs = choose_segments(lines, found, cap=BUGSWARM_TRAVIS_CAP, tail=BUGSWARM_TRAVIS_TAIL, head=BUGSWARM_TRAVIS_HEAD)
        kept: list[bytes] = []
        decisive: list[int] = []
        fset = set(found)
        for lo, hi in segs:
            for i in range(lo, hi):
                if i in fset:
                    decisive.append(len(kept) + 1)
                kept.append(lines[i])
        assert decisive, rel
        data = b"\n".join(kept) + (b"\n" if trailing_nl else b"")
        exp = expected.get(rel, {})
        said = ", ".join(f"{k} {exp[k]}" for k in ("status", "failed") if k in exp)
        job = f"job {exp['job']}" if "job" in exp else ""
        of = f"of {exp['repo']}" if "repo" in exp else ""
        notes = [f"{BUGSWARM_TRAVIS_BASE}{rel}" + (f" ({' '.join(x for x in (job, of) if x)})" if job or of else "")]
        if b"Job id: ''" in raw[:3000]:
            notes.append("the log's 'Build id' and 'Job id' fields are empty")
        if segs != [(0, len(lines))]:
            inside = {i for lo, hi in segs for i in range(lo, hi)}
            dropped = len([f for f in found if f not in inside])
            notes.append(
                "truncated: original lines " + " + ".join(f"{lo + 1}-{hi}" for lo, hi in segs) + f" of {len(lines)} kept, in that order"
                + (" (the gap between the segments is not marked in the file)" if len(segs) > 1 else "")
                + (f"; {dropped} decisive line(s) outside the window" if dropped else "")
            )
        name = rel.removesuffix(".log").replace("/", "__")
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=write_log(src, name.replace("__", "-") + ".log", data),
                provider="travis",
                failure_class=cls,
                confidence=conf,
                basis=(f"bugswarm expected (test_travis.py): {said}; " if said else "") + "log: " + basis,
                decisive=decisive,
                decisive_by="labeller",
                notes="; ".join(notes),
            )
        )
    return out


# --------------------------------------------------------------------------------------
# buildkite/terminal-to-html: fixtures/*.sh.raw (raw Buildkite job output the renderer is
# tested on). Only one of them is a failed job; the others succeeded or are not job logs.
BUILDKITE_T2H_LABELS: list[tuple[str, str, str, str, list[str]]] = [
    ("buildah-build.sh.raw", "CONFIGURATION", "low",
     "log: buildah 'Error: creating build container: ... potentially insufficient UIDs or GIDs available in user namespace ... Check /etc/subuid and /etc/subgid' then '🚨 Error: The command exited with status 1' (the agent host's rootless container set-up); judgement call (could be INFRASTRUCTURE)",
     ["Error: creating build container", "Error: The command exited with status 1"]),
]


def build_terminal_to_html() -> list[dict]:
    mirror, src = "buildkite+terminal-to-html", "terminal-to-html"
    out = []
    for fname, cls, conf, basis, needles in BUILDKITE_T2H_LABELS:
        data = git_show(mirror, f"fixtures/{fname}")
        lines = data.split(b"\n")
        want = [n.encode() for n in needles]
        decisive = [i + 1 for i, ln in enumerate(lines) if any(w in ln for w in want)]
        assert decisive, fname
        name = fname.removesuffix(".sh.raw")
        out.append(
            entry(
                source=src,
                name=name,
                data=data,
                rel_path=write_log(src, name + ".log", data),
                provider="buildkite",
                failure_class=cls,
                confidence=conf,
                basis=basis,
                decisive=decisive,
                decisive_by="labeller",
                notes=f"fixtures/{fname}, committed unchanged (Buildkite '_bk;t=' timestamps kept)",
            )
        )
    return out


# --------------------------------------------------------------------------------------
# Bare tool output (knowledge/augmentation only, never evaluation job logs): tools.jsonl
ERRORFORMAT_COMPILERS = {"cargo-check", "dotnet", "msbuild", "sbt", "scalac", "tsc"}
AM = "src/test/resources/edu/hm/hafner/analysis/parser/"
ANALYSIS_MODEL_TOOLS: list[tuple[str, str, str]] = [  # (file, tool, class a job failing with it would get)
    ("gcc.txt", "gcc", "COMPILE_ERROR"),
    ("gcc4.txt", "gcc4", "COMPILE_ERROR"),
    ("gcc4ld.txt", "gcc4+ld", "COMPILE_ERROR"),
    ("gnuMakeGcc.txt", "gnu-make+gcc", "COMPILE_ERROR"),
    ("llvm-clang.txt", "clang", "COMPILE_ERROR"),
    ("apple-llvm-clang.txt", "apple-clang", "COMPILE_ERROR"),
    ("mixed-clang-lld-errors.log", "clang+lld", "COMPILE_ERROR"),
    ("llvm-linker.log", "lld", "COMPILE_ERROR"),
    ("javac.txt", "javac", "COMPILE_ERROR"),
    ("javac-errors.txt", "javac", "COMPILE_ERROR"),
    ("ant-javac.txt", "ant+javac", "COMPILE_ERROR"),
    ("maven-console.txt", "maven", "COMPILE_ERROR"),
    ("gradle.java.log", "gradle+javac", "COMPILE_ERROR"),
    ("kotlin-gradle-error.txt", "kotlin+gradle", "COMPILE_ERROR"),
    ("msbuild.txt", "msbuild", "COMPILE_ERROR"),
    ("MSBuildANSIColor.txt", "msbuild", "COMPILE_ERROR"),
    ("sbtScalac.txt", "sbt+scalac", "COMPILE_ERROR"),
    ("nix.txt", "nix", "COMPILE_ERROR"),
    ("cmake.txt", "cmake", "CONFIGURATION"),
    ("maven-enforcer.log", "maven-enforcer", "CONFIGURATION"),
    ("npm-audit.json", "npm-audit", "LINT"),
    ("cargo-clippy-2018.txt", "clippy", "LINT"),
    ("ClangTidy.txt", "clang-tidy", "LINT"),
    ("cpplint.txt", "cpplint", "LINT"),
    ("flake8.txt", "flake8", "LINT"),
    ("pep8Test.txt", "pep8", "LINT"),
    ("pyLint.txt", "pylint", "LINT"),
    ("pylint_parseable.txt", "pylint", "LINT"),
    ("ruff.json", "ruff", "LINT"),
    ("mypy.txt", "mypy", "LINT"),
    ("rubocop.log", "rubocop", "LINT"),
    ("golint.txt", "golint", "LINT"),
    ("govet.txt", "go-vet", "LINT"),
    ("shellcheck.json", "shellcheck", "LINT"),
    ("hadolint.json", "hadolint", "LINT"),
    ("checkstyle.xml", "checkstyle", "LINT"),
    ("eslint/eslint.json", "eslint", "LINT"),
    ("violations/yamllint.txt", "yamllint", "LINT"),
    ("sphinxbuild.txt", "sphinx-build", "LINT"),
    ("junit.xml", "junit-xml", "TEST_FAILURE"),
    ("violations/report.junit", "junit-xml", "TEST_FAILURE"),
]


def build_tools() -> list[dict]:
    out: list[dict] = []
    troot = OUT / "tools"
    for sub in ("errorformat", "analysis-model"):
        d = troot / sub
        if d.exists():
            for f in sorted(d.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
    # reviewdog/errorformat fmts/testdata/<tool>.in (raw tool output the format is tested on)
    for path in git_ls("reviewdog+errorformat", "fmts/testdata"):
        if not path.endswith(".in"):
            continue
        tool = Path(path).stem
        dest = troot / "errorformat" / Path(path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(git_show("reviewdog+errorformat", path))
        cls = "COMPILE_ERROR" if tool in ERRORFORMAT_COMPILERS else "LINT"
        out.append({"path": str(dest.relative_to(OUT)), "source": "errorformat", "tool": tool, "failure_class": cls, "license": "MIT"})
    for fname, tool, cls in ANALYSIS_MODEL_TOOLS:
        dest = troot / "analysis-model" / fname
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(git_show("jenkinsci+analysis-model", AM + fname))
        out.append({"path": str(dest.relative_to(OUT)), "source": "analysis-model", "tool": tool, "failure_class": cls, "license": "MIT"})
    out.sort(key=lambda e: e["path"])
    (OUT / "tools.jsonl").write_text("".join(json.dumps(e) + "\n" for e in out))
    return out


BUILDERS = {
    "pytorch-test-infra": build_pytorch,
    "treeherder": build_treeherder,
    "logdetective": build_logdetective,
    "travistorrent": build_travistorrent,
    "bugswarm": build_bugswarm,
    "bugswarm-travis": build_bugswarm_travis,
    "terminal-to-html": build_terminal_to_html,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--tools", action="store_true", help="(re)build tools/ and tools.jsonl only")
    args = ap.parse_args(argv)
    if args.tools:
        print(f"tools: {len(build_tools())} samples", file=sys.stderr)
        return 0
    labels_path = OUT / "labels.jsonl"
    existing = []
    if labels_path.exists():
        existing = [json.loads(x) for x in labels_path.read_text().splitlines() if x.strip()]
    todo = args.only or list(BUILDERS)
    kept = [e for e in existing if e["source"] not in todo]
    new = []
    for src in todo:
        d = OUT / "logs" / src
        if src != "travistorrent" and d.exists():
            for f in d.iterdir():
                f.unlink()
        got = BUILDERS[src]()
        print(f"{src}: {len(got)} logs", file=sys.stderr)
        new.extend(got)
    allk = sorted(kept + new, key=lambda e: e["id"])
    ids = [e["id"] for e in allk]
    assert len(ids) == len(set(ids)), "duplicate ids"
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    labels_path.write_text("".join(json.dumps(e, ensure_ascii=False, sort_keys=False) + "\n" for e in allk))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
