"""Regenerate the sample CI job logs in examples/ (deterministic).

The logs were written for Healing Guard: each tells the story of one failure
class the way a real runner prints it (timestamps, ANSI colour, collapsible
groups, progress noise), so the detector, the demo and the tests have
something realistic to chew on. Run: python -m examples.generate
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ESC = "\x1b"
RED, GREEN, YELLOW, CYAN, BOLD, DIM, RESET = (
    f"{ESC}[31m", f"{ESC}[32m", f"{ESC}[33m", f"{ESC}[36m", f"{ESC}[1m", f"{ESC}[2m", f"{ESC}[0m",
)

# Fake secrets planted so the demo shows redaction; none of them is real.
FAKE_AWS_ACCESS_KEY_ID = "AKIA4HQZ7XK2M9PLWT3R"
FAKE_AWS_SECRET = "q8Zr3kP0vN5tW1yB7xC4mD9fG2hJ6lK0sA8eU3iO"
FAKE_DB_PASSWORD = "Xr7!pq-Lk2v9Zm#t"
FAKE_GITHUB_TOKEN = "ghp_" + "R8k2Lq9ZtW4xPm7Nc3Vb6Yh1Jd5Fs0Ga2Ek8"


class GithubLog:
    """Lines the way the GitHub Actions log viewer downloads them: ISO timestamp prefix."""

    def __init__(self, start: datetime, seed: int) -> None:
        self.now = start
        self.rng = random.Random(seed)
        self.lines: list[str] = []

    def add(self, *lines: str, gap_ms: tuple[int, int] = (1, 40)) -> None:
        for line in lines:
            self.now += timedelta(milliseconds=self.rng.randint(*gap_ms))
            stamp = self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond:06d}0Z"
            self.lines.append(f"{stamp} {line}")

    def group(self, title: str, body: Iterable[str]) -> None:
        self.add(f"##[group]{title}", *body, "##[endgroup]")

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def setup(self, repository: str, image: str = "ubuntu-22.04") -> None:
        self.add("Current runner version: '2.321.0'")
        self.group("Operating System", ["Ubuntu", "22.04.5", "LTS"])
        self.group("Runner Image", [f"Image: {image}", "Version: 20250105.1.0",
                                    "Included Software: https://github.com/actions/runner-images/blob/ubuntu22/20250105.1/images/ubuntu/Ubuntu2204-Readme.md"])
        self.group("GITHUB_TOKEN Permissions", ["Contents: read", "Metadata: read", "Packages: read"])
        self.add("Secret source: Actions", "Prepare workflow directory", "Prepare all required actions",
                 "Getting action download info",
                 "Download action repository 'actions/checkout@v4' (SHA:11bd71901bbe5b1630ceea73d27597364c9af683)",
                 "Download action repository 'actions/setup-node@v4' (SHA:39370e3970a6d050c480ffad4ff0ed4d3fdee5af)",
                 "Download action repository 'actions/cache@v4' (SHA:1bd1e32a3bdc45362d1e726936510720a7c30a57)",
                 "Complete job name: build")
        self.group("Run actions/checkout@v4", ["with:", f"  repository: {repository}", "  token: ***",
                                               "  ssh-strict: true", "  persist-credentials: true", "  clean: true",
                                               "  fetch-depth: 1", "  lfs: false"])
        self.add(f"Syncing repository: {repository}")
        self.group("Getting Git version info", [
            "Working directory is '/home/runner/work/web/web'",
            "[command]/usr/bin/git version", "git version 2.47.1"])
        self.add("Temporarily overriding HOME='/home/runner/work/_temp/6f0b6c4e-1d2a-4b8e-9c1f-2a7d3e5b9f10' before making global git config changes",
                 "Adding repository directory to the temporary git global config as a safe directory",
                 "[command]/usr/bin/git config --global --add safe.directory /home/runner/work/web/web",
                 "Deleting the contents of '/home/runner/work/web/web'")
        self.group("Initializing the repository", ["[command]/usr/bin/git init /home/runner/work/web/web",
                                                   "Initialized empty Git repository in /home/runner/work/web/web/.git/",
                                                   f"[command]/usr/bin/git remote add origin https://github.com/{repository}"])
        self.group("Fetching the repository", [
            "[command]/usr/bin/git -c protocol.version=2 fetch --no-tags --prune --no-recurse-submodules --depth=1 origin +9f2c1e7a4b3d8c6e5f1a0b9c8d7e6f5a4b3c2d1e:refs/remotes/origin/main",
            "remote: Enumerating objects: 1843, done.",
            "remote: Counting objects:   0% (1/1843)", "remote: Counting objects:  51% (940/1843)",
            "remote: Counting objects: 100% (1843/1843), done.",
            "remote: Compressing objects: 100% (1502/1502), done.",
            "remote: Total 1843 (delta 266), reused 1102 (delta 180), pack-reused 0 (from 0)",
            " * [new ref]         9f2c1e7a4b3d8c6e5f1a0b9c8d7e6f5a4b3c2d1e -> origin/main"])
        self.add("[command]/usr/bin/git log -1 --format=%H", "9f2c1e7a4b3d8c6e5f1a0b9c8d7e6f5a4b3c2d1e")

    def cleanup(self, exit_code: int) -> None:
        self.add(f"##[error]Process completed with exit code {exit_code}.")
        self.add("Post job cleanup.",
                 "[command]/usr/bin/git version", "git version 2.47.1",
                 "[command]/usr/bin/git config --local --name-only --get-regexp core\\.sshCommand",
                 "[command]/usr/bin/git submodule foreach --recursive sh -c \"git config --local --name-only --get-regexp 'core\\.sshCommand' && git config --local --unset-all 'core.sshCommand' || :\"",
                 "Cleaning up orphan processes")


class GitlabLog:
    """GitLab job trace: section markers with ESC[0K, no per-line timestamps."""

    def __init__(self, start: datetime, seed: int) -> None:
        self.now = start
        self.rng = random.Random(seed)
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def section(self, name: str, header: str, body: Iterable[str], seconds: int = 3) -> None:
        start = int(self.now.timestamp())
        self.now += timedelta(seconds=seconds)
        self.add(f"{ESC}[0Ksection_start:{start}:{name}\r{ESC}[0K{ESC}[0K{ESC}[36;1m{header}{ESC}[0;m")
        self.add(*body)
        self.add(f"{ESC}[0Ksection_end:{int(self.now.timestamp())}:{name}\r{ESC}[0K")

    def setup(self, image: str, commit: str) -> None:
        self.add(f"{ESC}[0KRunning with gitlab-runner 17.5.1 (affd9e7d){ESC}[0;m",
                 f"{ESC}[0K  on docker-autoscaler-3 t3_xQ7pLm2K, system ID: s_5b1e0d9c4a7f{ESC}[0;m")
        self.section("prepare_executor", 'Preparing the "docker+machine" executor', [
            f"{ESC}[0KUsing Docker executor with image {image} ...{ESC}[0;m",
            f"{ESC}[0KPulling docker image {image} ...{ESC}[0;m",
            f"{ESC}[0KUsing docker image sha256:4c2f0e1b7a9d3e5f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f for {image} with digest {image.split(':')[0]}@sha256:0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1a2f3e4d5c6b7a8f9e0d1c ...{ESC}[0;m"], 14)
        self.section("prepare_script", "Preparing environment", [
            "Running on runner-t3xq7plm-project-4411-concurrent-0 via runner-t3xq7plm-docker-autoscaler-3-1736170000-5f0e1c2d..."], 2)
        self.section("get_sources", "Getting source from Git repository", [
            f"{ESC}[32;1mFetching changes with git depth set to 20...{ESC}[0;m",
            "Initialized empty Git repository in /builds/acme/web/.git/",
            f"{ESC}[32;1mCreated fresh repository.{ESC}[0;m",
            f"{ESC}[32;1mChecking out {commit[:8]} as detached HEAD (ref is main)...{ESC}[0;m",
            "",
            f"{ESC}[32;1mSkipping Git submodules setup{ESC}[0;m"], 4)
        self.section("restore_cache", "Restoring cache", [
            f"{ESC}[32;1mChecking cache for main-protected...{ESC}[0;m",
            "Downloading cache from https://storage.googleapis.com/acme-runner-cache/project/4411/main-protected  ETag=\"5d8c1f0e2b3a4c5d6e7f8a9b0c1d2e3f\"",
            f"{ESC}[32;1mSuccessfully extracted cache{ESC}[0;m"], 6)

    def fail(self, exit_code: int, system: bool = False) -> None:
        self.section("cleanup_file_variables", "Cleaning up project directory and file based variables", [], 1)
        if not system:
            self.add(f"{ESC}[31;1mERROR: Job failed: exit code {exit_code}", f"{ESC}[0;m")


def progress_bar(label: str, steps: int, width: int = 30) -> list[str]:
    lines = []
    for step in range(steps + 1):
        done = width * step // steps
        lines.append(f"{label} [{'#' * done}{'.' * (width - done)}] {100 * step // steps}%")
    return lines


def npm_install_noise(rng: random.Random, packages: int) -> list[str]:
    names = ["react", "react-dom", "webpack", "typescript", "@babel/core", "eslint", "jest", "lodash",
             "axios", "zod", "vite", "postcss", "tailwindcss", "date-fns", "express", "pino"]
    lines = []
    for i in range(packages):
        name = names[i % len(names)]
        lines.append(f"npm http fetch GET 200 https://registry.npmjs.org/{name} {rng.randint(8, 240)}ms (cache revalidated)")
    return lines


def pytest_progress(rng: random.Random, files: list[str], width: int = 80) -> list[str]:
    lines = []
    total = sum(n for _, n in files)
    done = 0
    for name, count in files:
        done += count
        dots = "." * count
        pct = f"[{100 * done // total:3d}%]"
        lines.append(f"{name} {GREEN}{dots}{RESET}{' ' * max(1, width - len(name) - count)}{GREEN}{pct}{RESET}")
    return lines


def write(name: str, lines: list[str]) -> None:
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def start(day: int, hour: int) -> datetime:
    return datetime(2025, 3, day, hour, 7, 11, tzinfo=UTC)


# --- the samples -----------------------------------------------------------------


def flaky_pytest_rerun() -> list[str]:
    log = GithubLog(start(3, 9), 1)
    log.setup("acme/web")
    log.group("Run actions/setup-python@v5", ["with:", "  python-version: 3.11", "  cache: pip"])
    log.add("Successfully set up CPython (3.11.11)")
    log.group("Run pip install -r requirements-dev.txt", [
        "pip install -r requirements-dev.txt",
        "shell: /usr/bin/bash -e {0}",
        "env:", "  pythonLocation: /opt/hostedtoolcache/Python/3.11.11/x64"])
    log.add(*[f"Collecting {p}" for p in ["fastapi==0.115.6", "pydantic==2.10.4", "pytest==8.3.4",
                                         "pytest-rerunfailures==15.0", "pytest-xdist==3.6.1", "freezegun==1.5.1"]])
    log.add("Successfully installed fastapi-0.115.6 pydantic-2.10.4 pytest-8.3.4 pytest-rerunfailures-15.0 pytest-xdist-3.6.1 freezegun-1.5.1")
    log.group("Run pytest -p rerunfailures --reruns 2 --fail-on-flaky -q tests", [
        "pytest -p rerunfailures --reruns 2 --fail-on-flaky -q tests",
        "shell: /usr/bin/bash -e {0}"])
    log.add(f"{BOLD}============================= test session starts =============================={RESET}",
            "platform linux -- Python 3.11.11, pytest-8.3.4, pluggy-1.5.0",
            "rootdir: /home/runner/work/web/web", "configfile: pyproject.toml",
            "plugins: rerunfailures-15.0, xdist-3.6.1, anyio-4.7.0",
            "collected 412 items", "")
    files = [("tests/api/test_accounts.py", 38), ("tests/api/test_billing.py", 52), ("tests/api/test_search.py", 61),
             ("tests/core/test_cache.py", 27), ("tests/core/test_config.py", 19), ("tests/core/test_events.py", 44),
             ("tests/jobs/test_retry_policy.py", 33), ("tests/jobs/test_worker.py", 48)]
    log.add(*pytest_progress(log.rng, files[:6]))
    log.add("tests/jobs/test_scheduler.py::test_debounce_window_coalesces_bursts "
            f"{YELLOW}RERUN{RESET}                     [ 84%]",
            "tests/jobs/test_scheduler.py::test_debounce_window_coalesces_bursts "
            f"{GREEN}PASSED{RESET}                    [ 84%]")
    log.add(*pytest_progress(log.rng, files[6:]))
    log.add("", f"{YELLOW}=================================== RERUNS ======================================={RESET}",
            "_________________ test_debounce_window_coalesces_bursts _________________",
            "",
            "    @pytest.mark.flaky(reruns=2)",
            "    def test_debounce_window_coalesces_bursts(scheduler):",
            "        started = time.monotonic()",
            "        for _ in range(50):",
            "            scheduler.submit(Job(kind=\"reindex\"))",
            "        scheduler.flush()",
            "        elapsed = time.monotonic() - started",
            ">       assert elapsed < 0.25, f\"debounce took {elapsed:.3f}s\"",
            f"{RED}E       AssertionError: debounce took 0.412s{RESET}",
            f"{RED}E       assert 0.41187 < 0.25{RESET}",
            "",
            "tests/jobs/test_scheduler.py:88: AssertionError",
            f"{YELLOW}========================== short test summary info ============================={RESET}",
            "RERUN tests/jobs/test_scheduler.py::test_debounce_window_coalesces_bursts - AssertionError: debounce took 0.412s",
            f"{YELLOW}================== 412 passed, 1 rerun in 48.31s ==================={RESET}",
            f"{RED}ERROR: Flaky tests detected and --fail-on-flaky is set; failing the run.{RESET}")
    log.cleanup(7)
    return log.lines


def test_failure_jest() -> list[str]:
    log = GithubLog(start(4, 14), 2)
    log.setup("acme/web")
    log.group("Run actions/setup-node@v4", ["with:", "  node-version: 20", "  cache: npm"])
    log.add("Found in cache @ /opt/hostedtoolcache/node/20.18.1/x64", "Environment details",
            "  node: v20.18.1", "  npm: 10.8.2", "  yarn: 1.22.22")
    log.group("Run npm ci", ["npm ci", "shell: /usr/bin/bash -e {0}"])
    log.add(*npm_install_noise(log.rng, 24))
    log.add("added 1184 packages, and audited 1185 packages in 21s", "",
            "212 packages are looking for funding", "  run `npm fund` for details", "", "found 0 vulnerabilities")
    log.group("Run npx jest --ci --reporters=default --reporters=jest-junit", [
        "npx jest --ci --reporters=default --reporters=jest-junit", "shell: /usr/bin/bash -e {0}",
        "env:", "  JEST_JUNIT_OUTPUT_FILE: reports/junit.xml"])
    suites = ["src/cart/__tests__/totals.test.ts", "src/auth/__tests__/session.test.ts",
              "src/search/__tests__/query-parser.test.ts", "src/ui/__tests__/Button.test.tsx",
              "src/ui/__tests__/Modal.test.tsx", "src/api/__tests__/client.test.ts",
              "src/checkout/__tests__/discounts.test.ts", "src/inventory/__tests__/reservations.test.ts"]
    for suite in suites:
        if "discounts" in suite:
            log.add(f"{RED}{BOLD} FAIL {RESET} {suite} ({log.rng.uniform(0.8, 3.0):.3f} s)")
        else:
            log.add(f"{GREEN}{BOLD} PASS {RESET} {suite} ({log.rng.uniform(0.3, 2.0):.3f} s)")
    log.add(f"  {BOLD}{RED}● applyDiscounts › stacks a percentage code on top of a bundle price{RESET}", "",
            f"    {DIM}expect({RESET}{RED}received{RESET}{DIM}).{RESET}toBe{DIM}({RESET}{GREEN}expected{RESET}{DIM}) // Object.is equality{RESET}",
            "", f"    Expected: {GREEN}76.5{RESET}", f"    Received: {RED}85{RESET}", "",
            f"    {DIM}  40 |{RESET}     const cart = makeCart([{{ sku: \"BNDL-2\", qty: 1, price: 90 }}]);",
            f"    {DIM}  41 |{RESET}     const total = applyDiscounts(cart, [\"SPRING15\"]);",
            f"    {RED}{BOLD}>{RESET} 42 |     expect(total).toBe(76.5);",
            "       |                   ^",
            f"    {DIM}  43 |{RESET}   }});",
            "", f"      {DIM}at Object.toBe (src/checkout/__tests__/discounts.test.ts:42:19){RESET}", "",
            f"  {BOLD}{RED}● applyDiscounts › rejects an expired code{RESET}", "",
            "    expect(received).toThrow(expected)", "",
            "    Expected substring: \"code SPRING15 expired\"", "", "    Received function did not throw", "",
            f"      {DIM}at Object.toThrow (src/checkout/__tests__/discounts.test.ts:57:44){RESET}", "",
            f"{BOLD}Test Suites: {RESET}{RED}{BOLD}1 failed{RESET}, {GREEN}{BOLD}7 passed{RESET}, 8 total",
            f"{BOLD}Tests:       {RESET}{RED}{BOLD}2 failed{RESET}, {GREEN}{BOLD}141 passed{RESET}, 143 total",
            f"{BOLD}Snapshots:   {RESET}12 passed, 12 total", f"{BOLD}Time:{RESET}        14.832 s",
            f"{DIM}Ran all test suites.{RESET}")
    log.cleanup(1)
    return log.lines


def compile_error_cargo() -> list[str]:
    commit = "3c1d5e9a7b2f4e6d8c0a1b3d5f7e9a2c4b6d8f0e"
    log = GitlabLog(start(5, 11), 3)
    log.setup("rust:1.83-bookworm", commit)
    body = ["$ cargo --version", "cargo 1.83.0 (5ffbef321 2024-10-29)",
            "$ cargo build --locked --release --workspace"]
    crates = ["libc v0.2.169", "proc-macro2 v1.0.92", "unicode-ident v1.0.14", "quote v1.0.38", "syn v2.0.94",
              "serde v1.0.217", "serde_derive v1.0.217", "itoa v1.0.14", "memchr v2.7.4", "bytes v1.9.0",
              "tokio v1.42.0", "tracing v0.1.41", "hyper v1.5.2", "serde_json v1.0.134", "regex-syntax v0.8.5",
              "aho-corasick v1.1.3", "regex-automata v0.4.9", "regex v1.11.1", "clap v4.5.23", "anyhow v1.0.95"]
    body += [f"{GREEN}{BOLD}   Compiling{RESET} {c}" for c in crates]
    body += [f"{CYAN}{BOLD}    Building{RESET} [=====================>   ] 187/214: hyper, tokio, acme-ledger",
             f"{GREEN}{BOLD}   Compiling{RESET} acme-ledger v0.7.3 (/builds/acme/web/crates/ledger)",
             f"{RED}{BOLD}error[E0308]{RESET}{BOLD}: mismatched types{RESET}",
             f"  {CYAN}{BOLD}-->{RESET} crates/ledger/src/posting.rs:118:24",
             "    |",
             "115 |     pub fn settle(&mut self, amount: Decimal) -> Result<Receipt, LedgerError> {",
             "    |                                                  ------------------------- expected `Result<Receipt, LedgerError>` because of return type",
             "...",
             "118 |         return self.balance.checked_sub(amount);",
             f"    |                {RED}{BOLD}^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^{RESET} expected `Result<Receipt, LedgerError>`, found `Option<Decimal>`",
             "    |",
             "    = note: expected enum `Result<Receipt, LedgerError>`",
             "               found enum `Option<rust_decimal::Decimal>`",
             "",
             f"{RED}{BOLD}error[E0425]{RESET}{BOLD}: cannot find value `ledger_id` in this scope{RESET}",
             f"  {CYAN}{BOLD}-->{RESET} crates/ledger/src/posting.rs:131:37",
             "    |",
             "131 |         self.journal.append(Entry::new(ledger_id, amount));",
             f"    |                                     {RED}{BOLD}^^^^^^^^^{RESET} help: a field by this name exists in `Self`: `self.ledger_id`",
             "",
             f"{YELLOW}{BOLD}warning{RESET}{BOLD}: unused import: `std::collections::BTreeMap`{RESET}",
             f"  {CYAN}{BOLD}-->{RESET} crates/ledger/src/posting.rs:4:5",
             "",
             f"{BOLD}Some errors have detailed explanations: E0308, E0425.{RESET}",
             f"{BOLD}For more information about an error, try `rustc --explain E0308`.{RESET}",
             f"{YELLOW}{BOLD}warning{RESET}{BOLD}:{RESET} `acme-ledger` (lib) generated 1 warning",
             f"{RED}{BOLD}error{RESET}{BOLD}:{RESET} could not compile `acme-ledger` (lib) due to 2 previous errors; 1 warning emitted"]
    log.section("step_script", 'Executing "step_script" stage of the job script', body, 212)
    log.fail(101)
    return log.lines


def lint_ruff() -> list[str]:
    log = GithubLog(start(6, 8), 4)
    log.setup("acme/web")
    log.group("Run actions/setup-python@v5", ["with:", "  python-version: 3.11"])
    log.add("Successfully set up CPython (3.11.11)")
    log.group("Run pip install ruff==0.8.4 mypy==1.14.1", ["pip install ruff==0.8.4 mypy==1.14.1"])
    log.add("Collecting ruff==0.8.4", "  Downloading ruff-0.8.4-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl.metadata (25 kB)",
            "Collecting mypy==1.14.1", "Successfully installed mypy-1.14.1 mypy-extensions-1.0.0 ruff-0.8.4 typing-extensions-4.12.2")
    log.group("Run ruff format --check . && ruff check --output-format=full .", [
        "ruff format --check . && ruff check --output-format=full .", "shell: /usr/bin/bash -e {0}"])
    log.add("142 files already formatted")
    log.add(f"{BOLD}app/billing/invoices.py{RESET}{CYAN}:{RESET}14{CYAN}:{RESET}1{CYAN}:{RESET} {RED}{BOLD}F401{RESET} [*] `decimal.ROUND_HALF_EVEN` imported but unused",
            "   |", "12 | from datetime import date", "13 | from decimal import Decimal",
            "14 | from decimal import ROUND_HALF_EVEN", "   | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ F401",
            "   |", "   = help: Remove unused import: `decimal.ROUND_HALF_EVEN`", "",
            f"{BOLD}app/billing/invoices.py{RESET}{CYAN}:{RESET}77{CYAN}:{RESET}9{CYAN}:{RESET} {RED}{BOLD}E711{RESET} Comparison to `None` should be `cond is None`",
            "   |", "77 |     if customer.vat_id == None:", "   |                        ^^^^ E711", "",
            f"{BOLD}app/search/ranker.py{RESET}{CYAN}:{RESET}203{CYAN}:{RESET}5{CYAN}:{RESET} {RED}{BOLD}B006{RESET} Do not use mutable data structures for argument defaults",
            "    |", "203 |     boosts: dict[str, float] = {},", "    |                                ^^ B006", "",
            "Found 3 errors.", f"[{CYAN}*{RESET}] 1 fixable with the `--fix` option.")
    log.cleanup(1)
    return log.lines


def dependency_maven_transfer() -> list[str]:
    lines = ["Started by GitHub push by octo-dev", "Obtained Jenkinsfile from git https://github.com/acme/web.git",
             "[Pipeline] Start of Pipeline", "[Pipeline] node", "Running on build-agent-07 in /var/lib/jenkins/workspace/web_main",
             "[Pipeline] {", "[Pipeline] stage", "[Pipeline] { (Declarative: Checkout SCM)", "[Pipeline] checkout",
             "The recommended git tool is: NONE", "using credential github-app-acme",
             " > git rev-parse --resolve-git-dir /var/lib/jenkins/workspace/web_main/.git # timeout=10",
             "Fetching changes from the remote Git repository",
             " > git config remote.origin.url https://github.com/acme/web.git # timeout=10",
             "Fetching upstream changes from https://github.com/acme/web.git", " > git --version # timeout=10",
             " > git fetch --tags --force --progress -- https://github.com/acme/web.git +refs/heads/*:refs/remotes/origin/* # timeout=10",
             "Checking out Revision 7e4a2c9d1b0f3e5a6c8d2b4f6a8c0e1d3f5b7a9c (refs/remotes/origin/main)",
             "Commit message: \"orders: batch the reservation writes\"", "[Pipeline] }", "[Pipeline] // stage",
             "[Pipeline] withEnv", "[Pipeline] {", "[Pipeline] stage", "[Pipeline] { (Build)", "[Pipeline] sh",
             "+ ./mvnw -B -ntp -s .mvn/settings.xml verify",
             "[INFO] Scanning for projects...", "[INFO] ------------------------------------------------------------------------",
             "[INFO] Reactor Build Order:", "[INFO] ", "[INFO] acme-parent                                                        [pom]",
             "[INFO] acme-orders                                                        [jar]",
             "[INFO] acme-orders-api                                                    [jar]", "[INFO] ",
             "[INFO] ----------------------< com.acme:acme-orders >-----------------------",
             "[INFO] Building acme-orders 2.14.0-SNAPSHOT                               [2/3]",
             "[INFO]   from orders/pom.xml", "[INFO] --------------------------------[ jar ]---------------------------------"]
    rng = random.Random(5)
    for artifact in ["org/springframework/boot/spring-boot-starter-web/3.4.1/spring-boot-starter-web-3.4.1.pom",
                     "com/fasterxml/jackson/core/jackson-databind/2.18.2/jackson-databind-2.18.2.pom",
                     "io/micrometer/micrometer-core/1.14.2/micrometer-core-1.14.2.pom",
                     "org/postgresql/postgresql/42.7.4/postgresql-42.7.4.pom"]:
        lines.append(f"[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/{artifact} ({rng.randint(2, 30)} kB at {rng.randint(80, 900)} kB/s)")
    lines += ["[WARNING] Failed to transfer https://nexus.acme.internal/repository/maven-public/com/acme/acme-shared-kernel/4.2.0/acme-shared-kernel-4.2.0.jar, retrying (1/3)",
              "[WARNING] Failed to transfer https://nexus.acme.internal/repository/maven-public/com/acme/acme-shared-kernel/4.2.0/acme-shared-kernel-4.2.0.jar, retrying (2/3)",
              "[INFO] ------------------------------------------------------------------------",
              "[INFO] Reactor Summary for acme-parent 2.14.0-SNAPSHOT:", "[INFO] ",
              "[INFO] acme-parent ........................................ SUCCESS [  0.412 s]",
              "[INFO] acme-orders ........................................ FAILURE [ 63.118 s]",
              "[INFO] acme-orders-api .................................... SKIPPED",
              "[INFO] ------------------------------------------------------------------------",
              "[INFO] BUILD FAILURE", "[INFO] ------------------------------------------------------------------------",
              "[INFO] Total time:  01:04 min", "[INFO] Finished at: 2025-03-07T16:22:48Z",
              "[INFO] ------------------------------------------------------------------------",
              "[ERROR] Failed to execute goal on project acme-orders: Could not resolve dependencies for project com.acme:acme-orders:jar:2.14.0-SNAPSHOT: Failed to collect dependencies at com.acme:acme-shared-kernel:jar:4.2.0: Could not transfer artifact com.acme:acme-shared-kernel:jar:4.2.0 from/to acme-nexus (https://nexus.acme.internal/repository/maven-public/): Read timed out -> [Help 1]",
              "[ERROR] ", "[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.",
              "[ERROR] Re-run Maven using the -X switch to enable full debug logging.", "[ERROR] ",
              "[ERROR] For more information about the errors and possible solutions, please read the following articles:",
              "[ERROR] [Help 1] http://cwiki.apache.org/confluence/display/MAVEN/DependencyResolutionException",
              "[Pipeline] }", "[Pipeline] // stage", "[Pipeline] stage", "[Pipeline] { (Publish)",
              "Stage \"Publish\" skipped due to earlier failure(s)", "[Pipeline] }", "[Pipeline] // stage",
              "[Pipeline] }", "[Pipeline] // withEnv", "[Pipeline] }", "[Pipeline] // node", "[Pipeline] End of Pipeline",
              "ERROR: script returned exit code 1", "Finished: FAILURE"]
    return lines


def dependency_pip_fetch() -> list[str]:
    commit = "b5e8d2c7a1f3094e6d2c8b1a7f5e3d9c0b4a6e2f"
    log = GitlabLog(start(7, 13), 6)
    log.setup("python:3.11-slim", commit)
    body = ["$ python -m pip install --upgrade pip", "Requirement already satisfied: pip in /usr/local/lib/python3.11/site-packages (24.3.1)",
            "$ pip install --index-url https://ci-bot:Zq81mVvT4wPe@pypi.acme.internal/simple -r requirements.txt",
            "Looking in indexes: https://ci-bot:****@pypi.acme.internal/simple"]
    for pkg in ["numpy==2.2.1", "pandas==2.2.3", "sqlalchemy==2.0.36", "httpx==0.28.1"]:
        body += [f"Collecting {pkg}", f"  Using cached {pkg.replace('==', '-')}-py3-none-any.whl"]
    body += ["Collecting acme-geo==3.1.0",
             "  WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.acme.internal', port=443): Read timed out. (read timeout=15)\")': /simple/acme-geo/",
             "  WARNING: Retrying (Retry(total=3, connect=None, read=None, redirect=None, status=None)) after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.acme.internal', port=443): Read timed out. (read timeout=15)\")': /simple/acme-geo/",
             "  WARNING: Retrying (Retry(total=2, connect=None, read=None, redirect=None, status=None)) after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.acme.internal', port=443): Read timed out. (read timeout=15)\")': /simple/acme-geo/",
             "  Could not fetch URL https://pypi.acme.internal/simple/acme-geo/: There was a problem confirming the ssl certificate: HTTPSConnectionPool(host='pypi.acme.internal', port=443): Max retries exceeded with url: /simple/acme-geo/ - skipping",
             f"{RED}ERROR: Could not find a version that satisfies the requirement acme-geo==3.1.0 (from versions: none){RESET}",
             f"{RED}ERROR: No matching distribution found for acme-geo==3.1.0{RESET}"]
    log.section("step_script", 'Executing "step_script" stage of the job script', body, 96)
    log.fail(1)
    return log.lines


def network_dns() -> list[str]:
    commit = "e2a9c4f1b7d3058e6c2a9d1f4b8e7c3a5d0f2b6e"
    log = GitlabLog(start(10, 15), 7)
    log.setup("alpine/k8s:1.31.4", commit)
    body = ["$ export KUBECONFIG=$CI_PROJECT_DIR/.kube/config",
            "$ helm dependency build charts/web", "Saving 2 charts", "Deleting outdated charts",
            "$ ./scripts/smoke.sh https://api.staging.acme.internal/healthz",
            "[smoke] 15:31:02 probing https://api.staging.acme.internal/healthz (attempt 1/5)",
            "curl: (6) Could not resolve host: api.staging.acme.internal",
            "[smoke] 15:31:07 probing https://api.staging.acme.internal/healthz (attempt 2/5)",
            "curl: (6) Could not resolve host: api.staging.acme.internal",
            "[smoke] 15:31:17 probing https://api.staging.acme.internal/healthz (attempt 3/5)",
            "curl: (28) Failed to connect to api.staging.acme.internal port 443 after 10001 ms: Timeout was reached",
            "[smoke] 15:31:37 probing https://api.staging.acme.internal/healthz (attempt 4/5)",
            "curl: (6) Could not resolve host: api.staging.acme.internal",
            "[smoke] 15:32:17 probing https://api.staging.acme.internal/healthz (attempt 5/5)",
            "curl: (56) Recv failure: Connection reset by peer",
            "$ kubectl --context staging rollout status deploy/web --timeout=60s",
            "E0310 15:32:19.402113      41 memcache.go:265] couldn't get current server API group list: Get \"https://k8s-staging.acme.internal:6443/api?timeout=32s\": dial tcp: lookup k8s-staging.acme.internal on 10.96.0.10:53: no such host",
            "Unable to connect to the server: dial tcp: lookup k8s-staging.acme.internal on 10.96.0.10:53: no such host",
            f"{RED}[smoke] staging never answered; giving up{RESET}"]
    log.section("step_script", 'Executing "step_script" stage of the job script', body, 80)
    log.fail(1)
    return log.lines


def oom_killed() -> list[str]:
    commit = "0f7b3e9d2c5a18e4b6d0c3f9a2e7b5d1c8f4a6e0"
    log = GitlabLog(start(11, 10), 8)
    log.setup("python:3.11", commit)
    body = ["$ pip install -q -r requirements.txt", "$ python scripts/build_search_index.py --shards 16 --embed-batch 4096",
            "2025-03-11 10:09:44,118 INFO build_search_index: loading catalogue snapshot s3://acme-catalogue/2025-03-10/",
            "2025-03-11 10:09:58,402 INFO build_search_index: 1,842,113 products, 16 shards"]
    for shard in range(12):
        body.append(f"2025-03-11 10:{10 + shard:02d}:{(shard * 7) % 60:02d},{shard * 83 % 1000:03d} INFO build_search_index: shard {shard:02d}/16 embedded "
                    f"({115000 + shard * 311} docs, rss={2.1 + shard * 0.61:.2f} GiB)")
        body += progress_bar(f"shard {shard:02d}", 4)
    body += ["2025-03-11 10:22:31,877 WARNING build_search_index: rss above 9 GiB; consider --embed-batch 1024",
             "/usr/bin/bash: line 151:   214 Killed                  python scripts/build_search_index.py --shards 16 --embed-batch 4096"]
    log.section("step_script", 'Executing "step_script" stage of the job script', body, 790)
    log.fail(137)
    return log.lines


def oom_node_heap() -> list[str]:
    log = GithubLog(start(12, 17), 9)
    log.setup("acme/web")
    log.group("Run npm run build", ["npm run build", "shell: /usr/bin/bash -e {0}",
                                    "env:", "  NODE_OPTIONS: --max-old-space-size=2048"])
    log.add("", "> web@4.12.0 build", "> webpack --mode production --config webpack.prod.js", "")
    for pct in range(10, 70, 4):
        log.add(f"<s> [webpack.Progress] {pct}% building {pct * 37}/{pct * 41} entries {pct * 213}/{pct * 240} dependencies {pct * 9}/{pct * 10} modules")
    log.add("", "<--- Last few GCs --->", "",
            "[2214:0x6a1e2b0]    81234 ms: Mark-Compact 2043.1 (2081.6) -> 2040.9 (2082.1) MB, 1821.44 / 0.00 ms  (average mu = 0.112, current mu = 0.031) allocation failure; scavenge might not succeed",
            "", "<--- JS stacktrace --->", "",
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            "----- Native stack trace -----", "",
            " 1: 0xb8ced1 node::OOMErrorHandler(char const*, v8::OOMDetails const&) [node]",
            " 2: 0xf06460 v8::Utils::ReportOOMFailure(v8::internal::Isolate*, char const*, v8::OOMDetails const&) [node]",
            " 3: 0xf06747 v8::internal::V8::FatalProcessOutOfMemory(v8::internal::Isolate*, char const*, v8::OOMDetails const&) [node]",
            " 4: 0x11182e5  [node]", " 5: 0x1118874 v8::internal::Heap::RecomputeLimits(v8::internal::GarbageCollector) [node]",
            "Aborted (core dumped)")
    log.cleanup(134)
    return log.lines


def disk_full_docker() -> list[str]:
    log = GithubLog(start(13, 12), 10)
    log.setup("acme/web")
    log.group("Run docker/setup-buildx-action@v3", ["with:", "  install: false"])
    log.group("Run docker build --build-arg DB_PASSWORD -t ghcr.io/acme/web:9f2c1e7 .", [
        "docker build --build-arg DB_PASSWORD -t ghcr.io/acme/web:9f2c1e7 .",
        "shell: /usr/bin/bash -e {0}", "env:", f"  DB_PASSWORD={FAKE_DB_PASSWORD}",
        f"  AWS_ACCESS_KEY_ID={FAKE_AWS_ACCESS_KEY_ID}", f"  AWS_SECRET_ACCESS_KEY={FAKE_AWS_SECRET}"])
    log.add("#0 building with \"default\" instance using docker driver", "",
            "#1 [internal] load build definition from Dockerfile", "#1 transferring dockerfile: 1.92kB done", "#1 DONE 0.0s",
            "#2 [internal] load metadata for docker.io/library/node:20-bookworm", "#2 DONE 0.9s",
            "#3 [internal] load .dockerignore", "#3 transferring context: 212B done", "#3 DONE 0.0s",
            "#4 [build 1/7] FROM docker.io/library/node:20-bookworm@sha256:7a1c9e3f5b2d4c6e8a0f1b3d5c7e9a2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a3c")
    for mb in range(0, 420, 35):
        log.add(f"#4 sha256:5e2b1d9c4a7f0e3b6d8c1a5f9e2b7d4c0a3f6e8b1d5c9a2e7f4b0d3c6a8e1f5b {mb}.00MB / 398.41MB {mb // 40}.{mb % 10}s")
    log.add("#4 DONE 18.7s", "#5 [build 2/7] WORKDIR /app", "#5 DONE 0.1s",
            "#6 [build 3/7] COPY package.json package-lock.json ./", "#6 DONE 0.1s",
            "#7 [build 4/7] RUN npm ci --no-audit --no-fund",
            "#7 31.44 added 1184 packages in 30s", "#7 DONE 33.2s",
            "#8 [build 5/7] COPY . .", "#8 DONE 2.4s",
            "#9 [build 6/7] RUN npm run build && npm prune --omit=dev",
            "#9 1.021 > web@4.12.0 build", "#9 1.022 > webpack --mode production --config webpack.prod.js",
            "#9 88.310 webpack 5.97.1 compiled successfully in 86214 ms",
            "#9 90.004 npm ERR! code ENOSPC",
            "#9 90.004 npm ERR! syscall write",
            "#9 90.004 npm ERR! errno -28",
            "#9 90.005 npm ERR! nospc ENOSPC: no space left on device, write",
            "#9 90.005 npm ERR! nospc There appears to be insufficient space on your system to finish.",
            "#9 ERROR: process \"/bin/sh -c npm run build && npm prune --omit=dev\" did not complete successfully: exit code: 228",
            "------", " > [build 6/7] RUN npm run build && npm prune --omit=dev:",
            "------",
            "ERROR: failed to solve: failed to copy files: copy file range failed: write /var/lib/docker/overlay2/4b1f9e2c7d3a/diff/app/dist/main.js: no space left on device")
    log.add("##[group]Run df -h /", "Filesystem      Size  Used Avail Use% Mounted on",
            "/dev/root        73G   73G     0 100% /", "##[endgroup]")
    log.cleanup(1)
    return log.lines


def timeout_job() -> list[str]:
    log = GithubLog(start(14, 6), 11)
    log.setup("acme/web")
    log.group("Run npx playwright test --project=chromium", ["npx playwright test --project=chromium",
                                                            "shell: /usr/bin/bash -e {0}"])
    log.add("", "Running 286 tests using 2 workers", "")
    for i in range(1, 60):
        log.add(f"  {GREEN}✓{RESET}  {i} [chromium] › e2e/checkout.spec.ts:{10 + i * 3}:5 › checkout flow step {i} ({log.rng.randint(800, 9000)}ms)")
    log.add(f"  {YELLOW}-{RESET}  60 [chromium] › e2e/reports.spec.ts:41:5 › exports the yearly report as CSV")
    log.wait(3500)
    log.add("##[error]The job running on runner GitHub Actions 1063 has exceeded the maximum execution time of 60 minutes.",
            "##[error]The operation was canceled.")
    log.add("Post job cleanup.", "Cleaning up orphan processes",
            "Terminate orphan process: pid (2291) (node)", "Terminate orphan process: pid (2305) (chrome)")
    return log.lines


def infra_runner_shutdown() -> list[str]:
    log = GithubLog(start(17, 19), 12)
    log.setup("acme/web")
    log.group("Run ./gradlew --no-daemon test", ["./gradlew --no-daemon test", "shell: /usr/bin/bash -e {0}"])
    log.add("Downloading https://services.gradle.org/distributions/gradle-8.12-bin.zip",
            ".............10%.............20%.............30%.............40%.............50%.............60%.............70%.............80%.............90%.............100%",
            "Welcome to Gradle 8.12!", "Starting a Gradle Daemon (subsequent builds will be faster)",
            "> Task :buildSrc:compileKotlin", "> Task :core:compileJava", "> Task :core:processResources",
            "> Task :core:classes", "> Task :core:compileTestJava", "> Task :core:test")
    for i in range(30):
        log.add(f"<===========--> {40 + i}% EXECUTING [{i // 6}m {i * 7 % 60}s]", "> :core:test > 312 tests completed")
    log.add("##[error]The runner has received a shutdown signal. This can happen when the runner service is stopped, or a manually started runner is canceled.",
            "##[error]The operation was canceled.", "Cleaning up orphan processes",
            "Terminate orphan process: pid (3112) (java)")
    return log.lines


def infra_gitlab_system_failure() -> list[str]:
    log = GitlabLog(start(18, 2), 13)
    log.add(f"{ESC}[0KRunning with gitlab-runner 17.5.1 (affd9e7d){ESC}[0;m",
            f"{ESC}[0K  on k8s-runner-prod-2 Vn3K8qLw, system ID: r_8e2f0a1c5d7b{ESC}[0;m")
    log.section("prepare_executor", 'Preparing the "kubernetes" executor', [
        f"{ESC}[0KUsing Kubernetes namespace: gitlab-runners{ESC}[0;m",
        f"{ESC}[0KUsing Kubernetes executor with image node:20 ...{ESC}[0;m"], 2)
    log.section("prepare_script", "Preparing environment", [
        "Using FF_USE_POD_ACTIVE_DEADLINE_SECONDS, the Pod activeDeadlineSeconds will be set to the job timeout: 1h0m0s...",
        f"{YELLOW}WARNING: Event retrieved from the cluster: 0/12 nodes are available: 12 node(s) had untolerated taint {{node.kubernetes.io/unreachable: }}.{RESET}",
        "Waiting for pod gitlab-runners/runner-vn3k8qlw-project-4411-concurrent-3-9xk2d to be running, status is Pending",
        "Waiting for pod gitlab-runners/runner-vn3k8qlw-project-4411-concurrent-3-9xk2d to be running, status is Pending",
        "\tContainersNotReady: \"containers with unready status: [build helper]\"",
        "Waiting for pod gitlab-runners/runner-vn3k8qlw-project-4411-concurrent-3-9xk2d to be running, status is Pending"], 182)
    log.add(*["Waiting for pod gitlab-runners/runner-vn3k8qlw-project-4411-concurrent-3-9xk2d to be running, status is Pending" for _ in range(30)])
    log.add(f"{RED}ERROR: Job failed (system failure): prepare environment: waiting for pod running: timed out waiting for pod conditions. Check https://docs.gitlab.com/runner/shells/index.html#shell-profile-loading for more information{RESET}")
    return log.lines


def config_missing_variable() -> list[str]:
    commit = "6d2f8b4e0a9c1357e9b2d4f6a8c0e1b3d5f7a9c2"
    log = GitlabLog(start(19, 16), 14)
    log.setup("hashicorp/terraform:1.10", commit)
    body = ["$ export AWS_ACCESS_KEY_ID=" + FAKE_AWS_ACCESS_KEY_ID,
            "$ terraform -chdir=infra/envs/staging init -input=false",
            f"{BOLD}Initializing the backend...{RESET}",
            f"{GREEN}Successfully configured the backend \"s3\"!{RESET}",
            f"{BOLD}Initializing provider plugins...{RESET}",
            "- Reusing previous version of hashicorp/aws from the dependency lock file",
            "- Installing hashicorp/aws v5.82.2...", "- Installed hashicorp/aws v5.82.2 (signed by HashiCorp)",
            f"{GREEN}{BOLD}Terraform has been successfully initialized!{RESET}",
            "$ terraform -chdir=infra/envs/staging plan -input=false -out=plan.tfplan",
            f"{RED}╷{RESET}",
            f"{RED}│{RESET} {RED}{BOLD}Error: {RESET}{BOLD}No value for required variable{RESET}",
            f"{RED}│{RESET} ",
            f"{RED}│{RESET}   on variables.tf line 12:",
            f"{RED}│{RESET}   12: variable \"db_instance_class\" {{",
            f"{RED}│{RESET} ",
            f"{RED}│{RESET} The root module input variable \"db_instance_class\" is not set, and has no",
            f"{RED}│{RESET} default value. Use a -var or -var-file command line argument to provide a",
            f"{RED}│{RESET} value for this variable.",
            f"{RED}╵{RESET}"]
    log.section("step_script", 'Executing "step_script" stage of the job script', body, 41)
    log.fail(1)
    return log.lines


def permission_denied_push() -> list[str]:
    log = GithubLog(start(20, 10), 15)
    log.setup("acme/web")
    log.group("Run npm version patch -m \"release: %s\" && git push --follow-tags", [
        "npm version patch -m \"release: %s\" && git push --follow-tags", "shell: /usr/bin/bash -e {0}",
        "env:", f"  GH_TOKEN: {FAKE_GITHUB_TOKEN}"])
    log.add("v4.12.1", "remote: Permission to acme/web.git denied to github-actions[bot].",
            "fatal: unable to access 'https://github.com/acme/web/': The requested URL returned error: 403")
    log.group("Run actions/github-script@v7", ["with:", "  script: await github.rest.issues.createComment({...})",
                                               "  github-token: ***", "  debug: false", "  user-agent: actions/github-script",
                                               "  result-encoding: json", "  retries: 0"])
    log.add("RequestError [HttpError]: Resource not accessible by integration",
            "    at /home/runner/work/_actions/actions/github-script/v7/dist/index.js:9537:21",
            "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
            "    at async eval (eval at callAsyncFunction (/home/runner/work/_actions/actions/github-script/v7/dist/index.js:36187:16), <anonymous>:3:1)",
            "Error: Unhandled error: HttpError: Resource not accessible by integration",
            "  status: 403,",
            "  response: {", "    url: 'https://api.github.com/repos/acme/web/issues/812/comments',", "    status: 403,",
            "    headers: {", "      'x-accepted-github-permissions': 'issues=write; pull_requests=write',",
            "      'x-github-request-id': 'C2F1:3B7A0:9E1D4F2:A0C3E51:67D5B2E1'", "    },",
            "    data: {", "      message: 'Resource not accessible by integration',",
            "      documentation_url: 'https://docs.github.com/rest/issues/comments#create-an-issue-comment',",
            "      status: '403'", "    }", "  }")
    log.cleanup(1)
    return log.lines


JEST_JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="143" failures="2" errors="0" time="14.832">
  <testsuite name="applyDiscounts" errors="0" failures="2" skipped="0" timestamp="2025-03-04T14:09:41" time="1.912" tests="6">
    <testcase classname="applyDiscounts applies a single percentage code" name="applyDiscounts applies a single percentage code" time="0.004"/>
    <testcase classname="applyDiscounts stacks a percentage code on top of a bundle price" name="applyDiscounts stacks a percentage code on top of a bundle price" time="0.011">
      <failure message="expect(received).toBe(expected) // Object.is equality">Error: expect(received).toBe(expected) // Object.is equality

Expected: 76.5
Received: 85
    at Object.toBe (/home/runner/work/web/web/src/checkout/__tests__/discounts.test.ts:42:19)</failure>
    </testcase>
    <testcase classname="applyDiscounts rejects an expired code" name="applyDiscounts rejects an expired code" time="0.006">
      <failure message="expect(received).toThrow(expected)">Error: expect(received).toThrow(expected)

Expected substring: "code SPRING15 expired"

Received function did not throw
    at Object.toThrow (/home/runner/work/web/web/src/checkout/__tests__/discounts.test.ts:57:44)</failure>
    </testcase>
    <testcase classname="applyDiscounts ignores unknown codes" name="applyDiscounts ignores unknown codes" time="0.002"/>
    <testcase classname="applyDiscounts caps the discount at the item price" name="applyDiscounts caps the discount at the item price" time="0.003"/>
    <testcase classname="applyDiscounts rounds half to even" name="applyDiscounts rounds half to even" time="0.002"/>
  </testsuite>
  <testsuite name="session" errors="0" failures="0" skipped="0" timestamp="2025-03-04T14:09:40" time="0.871" tests="2">
    <testcase classname="session refreshes before expiry" name="session refreshes before expiry" time="0.021"/>
    <testcase classname="session signs out on 401" name="session signs out on 401" time="0.013"/>
  </testsuite>
</testsuites>
"""

SAMPLES = [
    # (generator, file, provider, pipeline, job, exit code, duration, runner, expected class, junit)
    (flaky_pytest_rerun, "flaky_pytest_rerun.log", "github_actions", "ci", "unit-tests", 7, 141, "GitHub Actions 1021", "FLAKY_TEST", None),
    (test_failure_jest, "test_failure_jest.log", "github_actions", "ci", "jest", 1, 96, "GitHub Actions 1044", "TEST_FAILURE", "test_failure_jest.junit.xml"),
    (compile_error_cargo, "compile_error_cargo.log", "gitlab", "build", "cargo-build", 101, 244, "docker-autoscaler-3", "COMPILE_ERROR", None),
    (lint_ruff, "lint_ruff.log", "github_actions", "ci", "lint", 1, 38, "GitHub Actions 1002", "LINT", None),
    (dependency_maven_transfer, "dependency_maven_transfer.log", "jenkins", "web_main", "Build", 1, 71, "build-agent-07", "DEPENDENCY_FETCH", None),
    (dependency_pip_fetch, "dependency_pip_fetch.log", "gitlab", "build", "install", 1, 118, "docker-autoscaler-3", "DEPENDENCY_FETCH", None),
    (network_dns, "network_dns.log", "gitlab", "deploy", "smoke-staging", 1, 97, "docker-autoscaler-3", "NETWORK", None),
    (oom_killed, "oom_killed.log", "gitlab", "nightly", "build-search-index", 137, 812, "docker-autoscaler-3", "OUT_OF_MEMORY", None),
    (oom_node_heap, "oom_node_heap.log", "github_actions", "ci", "build", 134, 102, "GitHub Actions 1077", "OUT_OF_MEMORY", None),
    (disk_full_docker, "disk_full_docker.log", "github_actions", "release", "docker-image", 1, 188, "GitHub Actions 1090", "DISK_FULL", None),
    (timeout_job, "timeout_job.log", "github_actions", "e2e", "playwright", 1, 3600, "GitHub Actions 1063", "TIMEOUT", None),
    (infra_runner_shutdown, "infra_runner_shutdown.log", "github_actions", "ci", "gradle-test", 1, 410, "GitHub Actions 1012", "INFRASTRUCTURE", None),
    (infra_gitlab_system_failure, "infra_gitlab_system_failure.log", "gitlab", "ci", "unit", 1, 1803, "k8s-runner-prod-2", "INFRASTRUCTURE", None),
    (config_missing_variable, "config_missing_variable.log", "gitlab", "deploy", "terraform-plan", 1, 52, "docker-autoscaler-3", "CONFIGURATION", None),
    (permission_denied_push, "permission_denied_push.log", "github_actions", "release", "tag-and-comment", 1, 23, "GitHub Actions 1031", "PERMISSION", None),
]


def main() -> None:
    manifest = []
    rng = random.Random(2025)
    for index, (build, name, provider, pipeline, job, exit_code, duration, runner, expected, junit) in enumerate(SAMPLES):
        write(name, build())
        entry = {"file": name, "provider": provider, "repository": "acme/web", "pipeline": pipeline, "job": job,
                 "run_id": str(9_400_000_000 + index * 7919), "attempt": 1,
                 "commit": "".join(rng.choice("0123456789abcdef") for _ in range(40)), "branch": "main",
                 "exit_code": exit_code, "duration_seconds": duration, "runner": runner, "expected_class": expected}
        if junit:
            (HERE / junit).write_text(JEST_JUNIT, encoding="utf-8")
            entry["junit"] = junit
        manifest.append(entry)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
