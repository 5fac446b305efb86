"""Failed step detection from each CI provider's own framing, on short realistic logs."""


from hypothesis import given, settings
from hypothesis import strategies as st

from services.detector.steps import MAX_COMMAND_CHARS, MAX_FAILED_STEPS, FailedStep, StepTracker, find_failed_step


def line_of(log: str, text: str) -> int:
    """1-based number of the only line of `log` containing `text`."""
    numbers = [n for n, line in enumerate(log.split("\n"), 1) if text in line]
    assert len(numbers) == 1, f"{text!r} is on lines {numbers}, expected exactly one"
    return numbers[0]


GITHUB_RAW = """\
2025-03-11T10:09:40.1000000Z ##[group]Operating System
2025-03-11T10:09:40.1000000Z Ubuntu 24.04.1 LTS
2025-03-11T10:09:40.1000000Z ##[endgroup]
##[group]Run actions/checkout@v4
with:
  repository: acme/web
  fetch-depth: 1
##[endgroup]
Syncing repository: acme/web
[command]/usr/bin/git version
git version 2.47.1
##[group]Run npm ci
npm ci
shell: /usr/bin/bash -e {0}
##[endgroup]
added 812 packages, and audited 813 packages in 14s
##[group]Run npm test -- --ci
npm test -- --ci
npm run lint
shell: /usr/bin/bash -e {0}
env:
  NODE_ENV: test
##[endgroup]

> web@2.3.0 test
> jest --ci

FAIL src/cart/total.test.ts
  \u25cf cart total \u203a applies the coupon once
##[error]src/cart/total.test.ts: expected 90, received 80
Tests:       1 failed, 41 passed, 42 total
npm ERR! code 1
##[error]Process completed with exit code 1.
Post job cleanup.
[command]/usr/bin/git version
"""


def test_github_actions_raw_log_names_the_run_step_and_its_exit_code() -> None:
    step = find_failed_step(GITHUB_RAW)
    assert step == FailedStep(
        name="Run npm test -- --ci",
        command="npm test -- --ci",
        exit_code=1,
        framing="github_actions",
        start_line=line_of(GITHUB_RAW, "##[group]Run npm test"),
        end_line=line_of(GITHUB_RAW, "Process completed with exit code 1"),
    )


def test_github_actions_error_without_exit_code_ends_the_step() -> None:
    log = (
        "##[group]Run ./scripts/e2e.sh\n./scripts/e2e.sh\nshell: /usr/bin/bash -e {0}\n##[endgroup]\n"
        "waiting for the browser pool...\n"
        "##[error]The job running on runner GitHub Actions 12 has exceeded the maximum execution time of 30 minutes.\n"
        "##[error]The operation was canceled.\n"
    )
    step = find_failed_step(log)
    assert step is not None
    assert (step.name, step.command, step.exit_code) == ("Run ./scripts/e2e.sh", "./scripts/e2e.sh", None)
    assert (step.start_line, step.end_line) == (1, 6)


def test_github_actions_action_step_is_a_step() -> None:
    log = (
        "##[group]Run actions/setup-python@v5\nwith:\n  python-version: 3.13\n##[endgroup]\n"
        "##[error]The version '3.13' with architecture 'x64' was not found for Ubuntu 20.04.\n"
    )
    step = find_failed_step(log)
    assert step == FailedStep("Run actions/setup-python@v5", "actions/setup-python@v5", None, "github_actions", 1, 5)


GITHUB_UI_COPY = """\
Run actions/checkout@v4
  with:
    repository: acme/api
Syncing repository: acme/api
Run pip install -r requirements.txt
  pip install -r requirements.txt
  shell: /usr/bin/bash -e {0}
Successfully installed fastapi-0.115.0 uvicorn-0.32.0
Run pytest -q tests/
  pytest -q tests/
  shell: /usr/bin/bash -e {0}
  env:
    PYTHONPATH: src
.....F..
FAILED tests/test_orders.py::test_refund_is_idempotent - AssertionError
1 failed, 7 passed in 2.31s
Error: Process completed with exit code 1.
"""


def test_github_ui_copy_without_markers() -> None:
    step = find_failed_step(GITHUB_UI_COPY)
    assert step == FailedStep(
        "Run pytest -q tests/", "pytest -q tests/", 1, "github_actions",
        line_of(GITHUB_UI_COPY, "Run pytest"), line_of(GITHUB_UI_COPY, "Process completed"),
    )


GITLAB = (
    "Running with gitlab-runner 17.5.1 (a1b2c3d4)\n"
    "  on docker-autoscaler x7Yz9, system ID: s_0123456789ab\n"
    "section_start:1731580000:prepare_executor\r"
    "Preparing the \"docker\" executor\n"
    "Using Docker executor with image python:3.12 ...\n"
    "section_end:1731580004:prepare_executor\r\n"
    "section_start:1731580004:get_sources\rGetting source from Git repository\n"
    "Fetching changes with git depth set to 20...\n"
    "section_end:1731580006:get_sources\r\n"
    "section_start:1731580006:step_script[collapsed=false]\r"
    "Executing \"step_script\" stage of the job script\n"
    "$ pip install -e .[test]\n"
    "Successfully installed billing-1.4.0\n"
    "$ pytest --maxfail=1 -q\n"
    "F\n"
    "E   sqlalchemy.exc.OperationalError: could not connect to server\n"
    "section_end:1731580052:step_script\r"
    "section_start:1731580052:after_script\rRunning after_script\n"
    "$ docker compose logs db | tail -n 20\n"
    "section_end:1731580053:after_script\r"
    "section_start:1731580053:cleanup_file_variables\rCleaning up project directory and file based variables\n"
    "section_end:1731580053:cleanup_file_variables\r\n"
    "ERROR: Job failed: exit code 1\n"
)


def test_gitlab_names_the_script_section_and_its_last_command() -> None:
    step = find_failed_step(GITLAB)
    assert step == FailedStep(
        "step_script", "pytest --maxfail=1 -q", 1, "gitlab",
        line_of(GITLAB, "$ pytest"), line_of(GITLAB, "ERROR: Job failed"),
    )


def test_gitlab_system_failure_before_the_script_names_the_section_that_was_running() -> None:
    log = (
        "section_start:1731580000:prepare_executor\rPreparing the \"docker\" executor\n"
        "ERROR: Failed to pull image \"registry.acme.io/ci/node:22\"\n"
        "section_end:1731580031:prepare_executor\r\n"
        "ERROR: Job failed (system failure): failed to pull image \"registry.acme.io/ci/node:22\"\n"
    )
    step = find_failed_step(log)
    assert step == FailedStep("prepare_executor", "", None, "gitlab", 1, 4)


def test_gitlab_timeout_has_no_exit_code() -> None:
    log = (
        "section_start:1731580006:step_script\rExecuting \"step_script\" stage of the job script\n"
        "$ ./gradlew integrationTest\n"
        "> Task :app:integrationTest\n"
        "ERROR: Job failed: execution took longer than 1h0m0s seconds\n"
    )
    assert find_failed_step(log) == FailedStep("step_script", "./gradlew integrationTest", None, "gitlab", 2, 4)


TRAVIS = (
    "travis_fold:start:worker_info\rWorker information\n"
    "hostname: 4f1c2a9e-travis-job\n"
    "travis_fold:end:worker_info\r\n"
    "travis_fold:start:install.1\rtravis_time:start:0b3c14d2\r$ bundle install --jobs=3 --retry=3\n"
    "Bundle complete! 24 Gemfile dependencies, 71 gems now installed.\n"
    "travis_time:end:0b3c14d2:start=1731580010,finish=1731580040,duration=30000000000\r\n"
    "travis_fold:end:install.1\r\n"
    "travis_time:start:1a2b3c4d\r$ bundle exec rubocop\n"
    "142 files inspected, 3 offenses detected\n"
    "travis_time:end:1a2b3c4d:start=1731580041,finish=1731580049,duration=8000000000\r\n"
    "The command \"bundle exec rubocop\" exited with 1.\n"
    "travis_time:start:2b3c4d5e\r$ bundle exec rspec\n"
    "Finished in 12.4 seconds\n"
    "87 examples, 2 failures\n"
    "travis_time:end:2b3c4d5e:start=1731580050,finish=1731580063,duration=13000000000\r\n"
    "The command \"bundle exec rspec\" exited with 1.\n"
    "travis_time:start:3c4d5e6f\r$ bundle exec rake build\n"
    "The command \"bundle exec rake build\" exited with 0.\n"
    "\n"
    "Done. Your build exited with 1.\n"
)


def test_travis_first_failed_command_is_primary_and_all_are_kept() -> None:
    tracker = StepTracker()
    tracker.observe(1, TRAVIS.encode())
    rubocop = FailedStep(
        "script", "bundle exec rubocop", 1, "travis",
        line_of(TRAVIS, "$ bundle exec rubocop"), line_of(TRAVIS, "\"bundle exec rubocop\" exited"),
    )
    rspec = FailedStep(
        "script", "bundle exec rspec", 1, "travis",
        line_of(TRAVIS, "$ bundle exec rspec"), line_of(TRAVIS, "\"bundle exec rspec\" exited"),
    )
    assert tracker.finish() == rubocop
    assert tracker.failed_steps == (rubocop, rspec)


def test_travis_failure_during_a_phase_names_the_phase() -> None:
    log = (
        "travis_fold:start:install\rtravis_time:start:00aa11bb\r$ npm ci\n"
        "npm ERR! code ERESOLVE\n"
        "npm ERR! ERESOLVE unable to resolve dependency tree\n"
        "travis_time:end:00aa11bb:start=1,finish=2,duration=1\r\n"
        "travis_fold:end:install\r\n"
        "The command \"npm ci\" failed and exited with 1 during install.\n"
        "Your build has been stopped.\n"
    )
    assert find_failed_step(log) == FailedStep("install", "npm ci", 1, "travis", 1, 6)


def test_travis_multi_line_command_reports_its_first_line() -> None:
    log = (
        "travis_time:start:0f0f0f0f\r$ if [ \"$TRAVIS_BRANCH\" = main ]; then\n"
        "  make release\nfi\n"
        "make: *** [release] Error 2\n"
        "The command \"if [ \"$TRAVIS_BRANCH\" = main ]; then\n"
        "  make release\n"
        "fi\" exited with 2.\n"
    )
    step = find_failed_step(log)
    assert step == FailedStep("script", "if [ \"$TRAVIS_BRANCH\" = main ]; then", 2, "travis", 1, 7)


JENKINS_PIPELINE = """\
Started by user Dana Ortiz
[Pipeline] Start of Pipeline
[Pipeline] node
Running on build-agent-3 in /var/lib/jenkins/workspace/payments
[Pipeline] {
[Pipeline] stage
[Pipeline] { (Declarative: Checkout SCM)
[Pipeline] checkout
 > git fetch --no-tags --force --progress -- https://git.acme.io/payments.git
[Pipeline] }
[Pipeline] // stage
[Pipeline] stage
[Pipeline] { (Build)
[Pipeline] sh
+ make build
go build -o bin/payments ./cmd/payments
[Pipeline] }
[Pipeline] // stage
[Pipeline] stage
[Pipeline] { (Unit tests)
[Pipeline] sh
+ go vet ./...
+ make test
go test ./...
--- FAIL: TestRefundTwice (0.01s)
FAIL
make: *** [Makefile:14: test] Error 1
[Pipeline] }
[Pipeline] // stage
[Pipeline] stage
[Pipeline] { (Deploy)
Stage "Deploy" skipped due to earlier failure(s)
[Pipeline] }
[Pipeline] // stage
[Pipeline] stage
[Pipeline] { (Declarative: Post Actions)
[Pipeline] sh
+ docker compose down
[Pipeline] }
[Pipeline] // stage
[Pipeline] }
[Pipeline] // node
[Pipeline] End of Pipeline
ERROR: script returned exit code 2
Finished: FAILURE
"""


def test_jenkins_pipeline_names_the_stage_and_its_last_shell_command() -> None:
    step = find_failed_step(JENKINS_PIPELINE)
    assert step == FailedStep(
        "Unit tests", "make test", 2, "jenkins",
        line_of(JENKINS_PIPELINE, "+ make test"), line_of(JENKINS_PIPELINE, "ERROR: script returned"),
    )


def test_jenkins_freestyle_names_the_build_step() -> None:
    log = (
        "Started by an SCM change\n"
        "Building in workspace /var/lib/jenkins/workspace/docs-site\n"
        "[docs-site] $ /bin/sh -xe /tmp/jenkins5127381920473.sh\n"
        "+ npm ci\n"
        "+ npm run build\n"
        "Error: Cannot find module './theme.config'\n"
        "Build step 'Execute shell' marked build as failure\n"
        "Finished: FAILURE\n"
    )
    assert find_failed_step(log) == FailedStep("Execute shell", "npm run build", None, "jenkins", 5, 7)


BUILDKITE = (
    "~~~ Preparing working directory\n"
    "$ cd /var/lib/buildkite-agent/builds/agent-1/acme/search\n"
    "~~~ Running commands\n"
    "$ ./.buildkite/steps/test.sh\n"
    "--- :go: Vet\n"
    "+ go vet ./...\n"
    "--- :test_tube: Tests\n"
    "+ go test -race ./internal/...\n"
    "--- FAIL: TestIndexMerge (0.42s)\n"
    "    merge_test.go:88: got 3 segments, want 2\n"
    "FAIL\tgithub.com/acme/search/internal/index\t1.204s\n"
    "^^^ +++\n"
    "\U0001F6A8 Error: The command exited with status 1\n"
    "~~~ Running global pre-exit hook\n"
)


def test_buildkite_names_the_last_section_not_a_go_test_result() -> None:
    step = find_failed_step(BUILDKITE)
    assert step == FailedStep(
        ":test_tube: Tests", "go test -race ./internal/...", 1, "buildkite",
        line_of(BUILDKITE, "+ go test -race"), line_of(BUILDKITE, "Error: The command exited"),
    )


AZURE = """\
##[section]Starting: Checkout acme/ledger@main to s
Syncing repository: acme/ledger (GitHub)
##[section]Finishing: Checkout acme/ledger@main to s
##[section]Starting: Restore
==============================================================================
Task         : Bash
==============================================================================
Generating script.
Script contents:
dotnet restore Ledger.sln
========================== Starting Command Output ===========================
/usr/bin/bash /home/vsts/work/_temp/1d2e3f.sh
  Restored /home/vsts/work/1/s/src/Ledger/Ledger.csproj (in 2.1 sec).
##[section]Finishing: Restore
##[section]Starting: Run unit tests
==============================================================================
Task         : Bash
==============================================================================
Generating script.
Script contents:
dotnet test Ledger.sln --no-restore --logger trx
========================== Starting Command Output ===========================
/usr/bin/bash /home/vsts/work/_temp/4a5b6c.sh
  Failed Ledger.Tests.PostingTests.RejectsUnbalancedEntry [12 ms]
Failed!  - Failed:     1, Passed:   214, Skipped:     0, Total:   215
##[error]Bash exited with code '1'.
##[section]Finishing: Run unit tests
"""


def test_azure_names_the_task_and_the_first_script_line() -> None:
    step = find_failed_step(AZURE)
    assert step == FailedStep(
        "Run unit tests", "dotnet test Ledger.sln --no-restore --logger trx", 1, "azure",
        line_of(AZURE, "Starting: Run unit tests"), line_of(AZURE, "Bash exited with code"),
    )


def test_azure_script_failed_form() -> None:
    log = "##[section]Starting: Lint\n[command]/usr/bin/npm run lint\n##[error]Script failed with exit code: 2\n"
    assert find_failed_step(log) == FailedStep("Lint", "/usr/bin/npm run lint", 2, "azure", 1, 3)


def test_shell_plus_trace_and_make_report() -> None:
    log = (
        "+ cd build\n"
        "+ cmake -G Ninja ..\n"
        "-- Configuring done\n"
        "+ make -j4 check\n"
        "[ 42%] Building CXX object src/CMakeFiles/core.dir/parser.cc.o\n"
        "src/parser.cc:118:5: error: use of undeclared identifier 'tokn'\n"
        "make[2]: *** [src/CMakeFiles/core.dir/build.make:76: src/parser.cc.o] Error 1\n"
        "make: *** [Makefile:146: all] Error 2\n"
    )
    assert find_failed_step(log) == FailedStep("", "make -j4 check", 1, "shell", 4, 7)


def test_shell_dollar_trace_and_npm_report_learns_the_exit_code_later() -> None:
    log = (
        "$ npm ci\n"
        "added 1203 packages in 31s\n"
        "$ npm run build\n"
        "> shop@1.0.0 build\n"
        "> tsc -p .\n"
        "src/index.ts(4,7): error TS2322: Type 'string' is not assignable to type 'number'.\n"
        "npm ERR! code ELIFECYCLE\n"
        "npm ERR! errno 2\n"
    )
    assert find_failed_step(log) == FailedStep("", "npm run build", 2, "shell", 3, 8)


def test_shell_python_subprocess_report_mid_line() -> None:
    log = (
        "+ python tools/release.py\n"
        "subprocess.CalledProcessError: Command '['twine', 'upload', 'dist/*']' returned non-zero exit status 1.\n"
    )
    assert find_failed_step(log) == FailedStep("", "python tools/release.py", 1, "shell", 1, 2)


def test_provider_framing_wins_over_shell_traces() -> None:
    # The GitLab log also holds a make report under a `$` line; the job's own verdict decides.
    step = find_failed_step(
        "section_start:1:step_script\r\n$ make lint\nmake: *** [lint] Error 3\nERROR: Job failed: exit code 3\n"
    )
    assert step == FailedStep("step_script", "make lint", 3, "gitlab", 2, 4)


def test_successful_step_then_failing_step_picks_the_failing_one() -> None:
    log = (
        "##[group]Run make deps\nmake deps\n##[endgroup]\nok\n"
        "##[group]Run make test\nmake test\n##[endgroup]\n"
        "##[error]Process completed with exit code 2.\n"
    )
    step = find_failed_step(log)
    assert step is not None
    assert (step.name, step.exit_code, step.start_line, step.end_line) == ("Run make test", 2, 5, 8)


def test_passing_logs_give_none() -> None:
    # Decided: only failures are reported. A framed log whose steps all passed gives None.
    passing = [
        "##[group]Run npm test\nnpm test\n##[endgroup]\nTests: 42 passed\n",
        "section_start:1:step_script\r\n$ pytest\n3 passed\nsection_end:2:step_script\r\nJob succeeded\n",
        "$ bundle exec rspec\nThe command \"bundle exec rspec\" exited with 0.\nDone. Your build exited with 0.\n",
        "[Pipeline] { (Build)\n[Pipeline] sh\n+ make\n[Pipeline] }\nFinished: SUCCESS\n",
        "+ go test ./...\nok  \tgithub.com/acme/x\t0.2s\nexit status 0\n",
        # A make failure under GitLab framing that the job tolerated (`|| true`) is not the job's failure.
        "section_start:1:step_script\r\n$ make lint || true\nmake: *** [lint] Error 1\nJob succeeded\n",
    ]
    for log in passing:
        tracker = StepTracker()
        tracker.observe(1, log.encode())
        assert tracker.finish() is None, log
        assert tracker.failed_steps == ()


def test_log_without_framing_gives_none() -> None:
    assert find_failed_step("compiling...\nerror: linker `cc` not found\nmake: *** [all] Error 1\n") is None
    assert find_failed_step("") is None
    assert find_failed_step(b"\r\r\n\n") is None


LOGS = [GITHUB_RAW, GITHUB_UI_COPY, GITLAB, TRAVIS, JENKINS_PIPELINE, BUILDKITE, AZURE]


def _feed(log: str, cuts: list[int]) -> StepTracker:
    """`log` fed in blocks cut before the given line indexes (line boundaries only)."""
    lines = log.encode().split(b"\n")
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(lines)}), len(lines)]
    tracker = StepTracker()
    for low, high in zip(bounds, bounds[1:], strict=False):
        piece = b"\n".join(lines[low:high]) + (b"\n" if high < len(lines) else b"")
        tracker.observe(low + 1, piece)
    return tracker


@settings(max_examples=60, deadline=None)
@given(log=st.sampled_from(LOGS), cuts=st.lists(st.integers(min_value=1, max_value=60), max_size=12))
def test_blocks_split_at_line_boundaries_give_the_same_answer(log: str, cuts: list[int]) -> None:
    whole = StepTracker()
    whole.observe(1, log.encode())
    split = _feed(log, cuts)
    assert split.finish() == whole.finish() is not None
    assert split.failed_steps == whole.failed_steps


def test_script_contents_split_from_its_script_line() -> None:
    cut = line_of(AZURE, "dotnet test Ledger.sln") - 1
    assert _feed(AZURE, [cut]).finish() == find_failed_step(AZURE)


def test_hostile_input_never_raises_and_stays_bounded() -> None:
    huge_command = "+ " + "x" * 200_000 + "\n"
    step = find_failed_step(huge_command + "exit status 7\n")
    assert step is not None and len(step.command) == MAX_COMMAND_CHARS and step.exit_code == 7
    many = "".join(f"$ job {i}\nThe command \"job {i}\" exited with 1.\n" for i in range(100))
    tracker = StepTracker()
    tracker.observe(1, many.encode())
    assert len(tracker.failed_steps) == MAX_FAILED_STEPS
    for hostile in ["\r" * 10_000, "section_start:\r" * 500, "##[error]\n" * 50, "\ufffd" * 1000,
                    "The command \"", "[Pipeline] { (", "--- \n+++ \n~~~ \n", "Finished: FAILURE" + "\r" * 9000]:
        StepTracker().observe(1, hostile.encode())
    one_long_line = ("progress 12%\r" * 20_000 + "$ make\rmake: *** [x] Error 2").encode()
    tracker = StepTracker()
    tracker.observe(1, one_long_line)
    assert tracker.finish() == FailedStep("", "make", 2, "shell", 1, 1)


def test_runner_timestamps_left_on_the_lines_are_tolerated() -> None:
    gitlab = (
        "2025-03-11T10:09:40.100000Z 00O section_start:1741687780:step_script\r\n"
        "2025-03-11T10:09:40.200000Z 00O $ cargo test --locked\n"
        "2025-03-11T10:09:52.300000Z 01E error[E0308]: mismatched types\n"
        "2025-03-11T10:09:53.400000Z 00O ERROR: Job failed: exit code 101\n"
    )
    assert find_failed_step(gitlab) == FailedStep("step_script", "cargo test --locked", 101, "gitlab", 2, 4)
    jenkins = (
        "[2025-03-11T10:09:40.100Z] [Pipeline] { (Lint)\n"
        "[2025-03-11T10:09:40.200Z] + ruff check .\n"
        "[2025-03-11T10:09:41.300Z] ERROR: script returned exit code 1\n"
    )
    assert find_failed_step(jenkins) == FailedStep("Lint", "ruff check .", 1, "jenkins", 2, 3)


def test_go_test_results_are_not_buildkite_sections() -> None:
    log = (
        "--- :go: Unit\n$ go test -v ./...\n=== RUN   TestParse\n--- PASS: TestParse (0.00s)\n"
        "--- FAIL: TestMerge (0.01s)\nFAIL\nError: The command exited with status 1\n"
    )
    assert find_failed_step(log) == FailedStep(":go: Unit", "go test -v ./...", 1, "buildkite", 2, 7)


def test_a_mebibyte_of_dense_traces_keeps_the_last_command() -> None:
    # Every line a shell trace or a Go test result, the densest common case (its speed is
    # measured in bench/detector_speed.py, not asserted here).
    body = "+ make -C src/module_17 all\n--- PASS: TestIndexMerge (0.42s)\n    ok merge_test.go:88\n"
    block = ("[Pipeline] { (Build)\n" + body * (1_048_576 // len(body))).encode()
    tracker = StepTracker()
    tracker.observe(1, block + b"ERROR: script returned exit code 2\n")
    step = tracker.finish()
    assert step is not None and (step.command, step.exit_code) == ("make -C src/module_17 all", 2)
