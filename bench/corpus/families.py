"""Failure families: one generator per way a CI job really fails.

Each family writes the output of one failing step, with its parameters (names,
versions, paths, numbers) and its wording drawn at random, so two samples of one
family share a shape but rarely a line. Several families per class, from different
toolchains, so an evaluation can train on some families and test on others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.corpus.noise import (
    CRATES,
    JAVA_ARTIFACTS,
    PACKAGES_JS,
    PACKAGES_PY,
    SERVICES,
    WORDS,
    camel,
    ident,
    sha,
    version,
)
from services.common.vocabulary import FailureClass as FC


@dataclass
class StepOutput:
    command: str
    lines: list[str]
    exit_code: int = 1
    # Some failures end the job with the runner's own words instead of "exit code N".
    gitlab_terminal: str | None = None
    github_terminal: str | None = None


@dataclass(frozen=True)
class Family:
    name: str
    failure_class: FC
    toolchain: str
    build: Callable[[random.Random], StepOutput] = field(compare=False)


FAMILIES: list[Family] = []


def family(name: str, failure_class: FC, toolchain: str):
    def register(build: Callable[[random.Random], StepOutput]) -> Callable[[random.Random], StepOutput]:
        FAMILIES.append(Family(name, failure_class, toolchain, build))
        return build
    return register


def _py_test(rng: random.Random) -> str:
    return f"test_{rng.choice(WORDS)}_{rng.choice(['total', 'refund', 'expiry', 'lookup', 'merge', 'export', 'sync'])}"


def _path(rng: random.Random, ext: str) -> str:
    return f"{rng.choice(['src', 'lib', 'pkg', 'app', 'internal'])}/{rng.choice(WORDS)}/{ident(rng)}.{ext}"


# --------------------------------------------------------------------------- FLAKY_TEST

@family("pytest-rerunfailures", FC.FLAKY_TEST, "pytest")
def _pytest_rerun(rng: random.Random) -> StepOutput:
    tests = [f"tests/integration/test_{rng.choice(WORDS)}.py::{_py_test(rng)}" for _ in range(rng.randint(1, 3))]
    lines = [f"{t} RERUN [{rng.randint(10, 90)}%]" for t in tests]
    lines += [f"{tests[0]} FAILED [{rng.randint(90, 99)}%]", "=" * 20 + " FAILURES " + "=" * 20,
              f"E       {rng.choice(['ConnectionResetError: [Errno 104] Connection reset by peer', 'AssertionError: expected event within 2.0s', 'TimeoutError: condition not met after 5 polls'])}",
              f"{rng.randint(1, 3)} failed, {rng.randint(20, 400)} passed, {rng.randint(1, 6)} rerun in {rng.uniform(10, 300):.2f}s"]
    return StepOutput("pytest -p rerunfailures --reruns 2 tests/", lines)


@family("surefire-flakes", FC.FLAKY_TEST, "maven")
def _surefire_flakes(rng: random.Random) -> StepOutput:
    cls = f"com.example.{rng.choice(WORDS)}.{camel(rng)}IT"
    method = f"should{rng.choice(WORDS).capitalize()}{rng.choice(['Eventually', 'Concurrently', 'AfterRestart'])}"
    lines = [f"[INFO] Running {cls}",
             f"[WARNING] Tests run: {rng.randint(3, 40)}, Failures: 0, Errors: 0, Skipped: 0, Flakes: 1, Time elapsed: {rng.uniform(1, 60):.3f} s - in {cls}",
             "[INFO] Results:", "[WARNING] Flakes: ",
             f"[WARNING] {cls}.{method}",
             f"[ERROR]   Run 1: {camel(rng)}IT.{method}:{rng.randint(20, 300)} expected:<{rng.randint(1, 9)}> but was:<{rng.randint(10, 99)}>",
             "[INFO]   Run 2: PASS",
             f"[ERROR] Tests run: {rng.randint(100, 900)}, Failures: 0, Errors: 0, Skipped: {rng.randint(0, 9)}, Flakes: 1",
             "[ERROR] There are test failures: flaky tests are not allowed (failOnFlakeCount=1)"]
    return StepOutput("mvn -B verify -Dsurefire.rerunFailingTestsCount=2", lines)


@family("playwright-flaky", FC.FLAKY_TEST, "jest")
def _playwright_flaky(rng: random.Random) -> StepOutput:
    spec = f"tests/e2e/{rng.choice(WORDS)}.spec.ts"
    lines = [f"Running {rng.randint(20, 200)} tests using {rng.randint(1, 4)} workers",
             f"  ✘  {rng.randint(1, 50)} [chromium] › {spec}:{rng.randint(5, 200)}:{rng.randint(1, 9)} › {rng.choice(WORDS)} page › shows {rng.choice(WORDS)} ({rng.uniform(1, 30):.1f}s)",
             f"  ✓  {rng.randint(51, 99)} [chromium] › {spec}:{rng.randint(5, 200)}:{rng.randint(1, 9)} › {rng.choice(WORDS)} page › shows {rng.choice(WORDS)} (retry #1) ({rng.uniform(1, 30):.1f}s)",
             f"    Error: Timed out {rng.choice([5000, 10000])}ms waiting for expect(locator).toBeVisible()",
             f"  {rng.randint(1, 3)} flaky",
             f"    [chromium] › {spec}:{rng.randint(5, 200)}:{rng.randint(1, 9)} › {rng.choice(WORDS)} page",
             f"  {rng.randint(20, 200)} passed ({rng.uniform(0.5, 9):.1f}m)",
             "Error: flaky tests detected and --fail-on-flaky-tests is set"]
    return StepOutput("npx playwright test --retries=2 --fail-on-flaky-tests", lines)


@family("gradle-test-retry", FC.FLAKY_TEST, "gradle")
def _gradle_retry(rng: random.Random) -> StepOutput:
    cls = f"com.acme.{rng.choice(WORDS)}.{camel(rng)}Test"
    m = f"{rng.choice(WORDS)}{rng.choice(['Times', 'Syncs', 'Publishes'])}Out"
    lines = [f"> Task :{rng.choice(SERVICES)}:test",
             f"{cls} > {m}() FAILED",
             f"    org.opentest4j.AssertionFailedError at {camel(rng)}Test.java:{rng.randint(10, 400)}",
             f"{cls} > {m}() PASSED",
             f"Test retry: {cls}.{m} failed on attempt 1 and passed on attempt 2 (flaky)",
             f"{rng.randint(50, 500)} tests completed, 1 flaky, 0 failed",
             "FAILURE: Build failed with an exception.",
             f"* What went wrong: Execution failed for task ':{rng.choice(SERVICES)}:test'.",
             "> Flaky tests were found and failOnPassedAfterRetry is enabled"]
    return StepOutput("./gradlew test --no-daemon", lines)


@family("go-test-count-flaky", FC.FLAKY_TEST, "go test")
def _go_flaky(rng: random.Random) -> StepOutput:
    name = f"Test{rng.choice(WORDS).capitalize()}{rng.choice(['Watcher', 'Lease', 'Election', 'Ticker'])}"
    pkg = f"github.com/acme/{rng.choice(SERVICES)}/internal/{rng.choice(WORDS)}"
    lines = [f"=== RUN   {name}",
             f"    {name.lower()}_test.go:{rng.randint(10, 300)}: event not observed within {rng.choice(['100ms', '250ms', '1s'])}",
             f"--- FAIL: {name} ({rng.uniform(0.1, 3):.2f}s)",
             f"=== RUN   {name}", f"--- PASS: {name} ({rng.uniform(0.1, 3):.2f}s)",
             f"gotestsum: {name} failed then passed on rerun {rng.randint(1, 2)} of 2: marking as flaky",
             f"FAIL\t{pkg}\t{rng.uniform(1, 30):.3f}s",
             f"DONE {rng.randint(100, 900)} tests, 1 flaky failure, {rng.randint(0, 3)} skipped"]
    return StepOutput("gotestsum --rerun-fails=2 --packages=./... -- -race", lines)


# --------------------------------------------------------------------------- TEST_FAILURE

@family("pytest-assert", FC.TEST_FAILURE, "pytest")
def _pytest_assert(rng: random.Random) -> StepOutput:
    f = f"tests/test_{rng.choice(WORDS)}.py"
    t = _py_test(rng)
    a, b = rng.randint(1, 500), rng.randint(501, 999)
    lines = [f"{f}::{t} FAILED [{rng.randint(10, 99)}%]", "=" * 25 + " FAILURES " + "=" * 25, f"_____ {t} _____",
             f"    def {t}():", f">       assert compute_{rng.choice(WORDS)}(fixture) == {a}",
             f"E       assert {b} == {a}", f"E        +  where {b} = compute_{rng.choice(WORDS)}(<Fixture {rng.choice(WORDS)}>)",
             f"{f}:{rng.randint(10, 300)}: AssertionError", "=" * 10 + " short test summary info " + "=" * 10,
             f"FAILED {f}::{t} - assert {b} == {a}",
             f"{rng.randint(1, 4)} failed, {rng.randint(10, 800)} passed in {rng.uniform(1, 200):.2f}s"]
    return StepOutput("pytest -q", lines)


@family("unittest-fail", FC.TEST_FAILURE, "unittest")
def _unittest(rng: random.Random) -> StepOutput:
    cls = f"{rng.choice(WORDS).capitalize()}Tests"
    m = _py_test(rng)
    lines = [f"{m} ({rng.choice(WORDS)}.tests.{cls}.{m}) ... FAIL",
             "=" * 70, f"FAIL: {m} ({rng.choice(WORDS)}.tests.{cls}.{m})", "-" * 70,
             "Traceback (most recent call last):",
             f'  File "/builds/acme/{rng.choice(SERVICES)}/{rng.choice(WORDS)}/tests.py", line {rng.randint(10, 500)}, in {m}',
             f"    self.assertEqual(response.status_code, {rng.choice([200, 201, 204])})",
             f"AssertionError: {rng.choice([400, 404, 500, 409])} != {rng.choice([200, 201, 204])}", "-" * 70,
             f"Ran {rng.randint(10, 900)} tests in {rng.uniform(1, 90):.3f}s", "",
             f"FAILED (failures={rng.randint(1, 5)}{rng.choice(['', ', errors=1'])})"]
    return StepOutput(rng.choice(["python -m unittest discover", "python manage.py test"]), lines)


@family("jest-expect", FC.TEST_FAILURE, "jest")
def _jest(rng: random.Random) -> StepOutput:
    f = f"src/{rng.choice(WORDS)}/__tests__/{rng.choice(WORDS)}.test.{rng.choice(['ts', 'js', 'tsx'])}"
    lines = [f"FAIL {f}", f"  ● {rng.choice(WORDS)} › {rng.choice(['renders', 'computes', 'validates'])} {rng.choice(WORDS)}",
             "    expect(received).toEqual(expected) // deep equality",
             f"    Expected: {rng.randint(1, 99)}", f"    Received: {rng.randint(100, 999)}",
             f"      at Object.<anonymous> ({f}:{rng.randint(5, 200)}:{rng.randint(5, 40)})",
             f"Test Suites: 1 failed, {rng.randint(5, 90)} passed, {rng.randint(6, 91)} total",
             f"Tests:       {rng.randint(1, 3)} failed, {rng.randint(50, 900)} passed, {rng.randint(60, 910)} total",
             "Ran all test suites."]
    return StepOutput(rng.choice(["npm test -- --ci", "yarn jest --ci", "pnpm test"]), lines)


@family("go-test-fail", FC.TEST_FAILURE, "go test")
def _go_test(rng: random.Random) -> StepOutput:
    name = f"Test{rng.choice(WORDS).capitalize()}{rng.choice(['Parse', 'Total', 'Encode', 'Merge'])}"
    pkg = f"github.com/acme/{rng.choice(SERVICES)}/pkg/{rng.choice(WORDS)}"
    lines = [f"=== RUN   {name}", f"=== RUN   {name}/{rng.choice(WORDS)}_case",
             f"    {rng.choice(WORDS)}_test.go:{rng.randint(10, 300)}: got {rng.randint(1, 99)}, want {rng.randint(100, 200)}",
             f"    --- FAIL: {name}/{rng.choice(WORDS)}_case (0.00s)", f"--- FAIL: {name} (0.0{rng.randint(0, 9)}s)",
             "FAIL", f"FAIL\t{pkg}\t{rng.uniform(0.01, 5):.3f}s", f"ok  \tgithub.com/acme/{rng.choice(SERVICES)}/pkg/{rng.choice(WORDS)}\t0.{rng.randint(10, 99)}s",
             "FAIL"]
    return StepOutput("go test ./...", lines)


@family("cargo-test-panic", FC.TEST_FAILURE, "cargo")
def _cargo_test(rng: random.Random) -> StepOutput:
    t = f"tests::{rng.choice(WORDS)}_{rng.choice(['roundtrip', 'parses', 'sums'])}"
    lines = [f"running {rng.randint(5, 200)} tests", f"test {t} ... FAILED",
             f"test tests::{rng.choice(WORDS)}_ok ... ok", "", "failures:", "", f"---- {t} stdout ----",
             f"thread '{t}' panicked at src/{rng.choice(WORDS)}.rs:{rng.randint(10, 400)}:{rng.randint(5, 30)}:",
             "assertion `left == right` failed", f"  left: {rng.randint(1, 50)}", f" right: {rng.randint(51, 99)}",
             "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
             f"test result: FAILED. {rng.randint(5, 200)} passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
             "error: test failed, to rerun pass `--lib`"]
    return StepOutput("cargo test --all-features", lines, exit_code=101)


@family("mocha-assert", FC.TEST_FAILURE, "mocha")
def _mocha(rng: random.Random) -> StepOutput:
    lines = [f"  {rng.choice(WORDS)} api", f"    ✓ lists {rng.choice(WORDS)}s ({rng.randint(5, 90)}ms)",
             f"    1) updates {rng.choice(WORDS)}", "", f"  {rng.randint(20, 300)} passing ({rng.randint(1, 30)}s)",
             f"  {rng.randint(1, 3)} failing", "", f"  1) {rng.choice(WORDS)} api", f"       updates {rng.choice(WORDS)}:",
             "", "      AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:",
             "      + actual - expected", f"      + '{rng.choice(WORDS)}'", f"      - '{rng.choice(WORDS)}'",
             f"      at Context.<anonymous> (test/{rng.choice(WORDS)}.spec.js:{rng.randint(5, 200)}:{rng.randint(5, 30)})"]
    return StepOutput("npx mocha --recursive", lines)


@family("surefire-failures", FC.TEST_FAILURE, "maven")
def _surefire(rng: random.Random) -> StepOutput:
    cls = f"com.example.{rng.choice(WORDS)}.{camel(rng)}Test"
    lines = [f"[INFO] Running {cls}",
             f"[ERROR] Tests run: {rng.randint(3, 40)}, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: {rng.uniform(0.1, 9):.3f} s <<< FAILURE! - in {cls}",
             f"[ERROR] {rng.choice(WORDS)}Total(com.example.{camel(rng)}Test)  Time elapsed: 0.0{rng.randint(1, 9)} s  <<< FAILURE!",
             f"org.opentest4j.AssertionFailedError: expected: <{rng.randint(1, 99)}> but was: <{rng.randint(100, 999)}>",
             "[INFO] Results:", "[ERROR] Failures: ",
             f"[ERROR]   {camel(rng)}Test.{rng.choice(WORDS)}Total:{rng.randint(10, 300)} expected: <{rng.randint(1, 99)}> but was: <{rng.randint(100, 999)}>",
             f"[ERROR] Tests run: {rng.randint(100, 900)}, Failures: 1, Errors: 0, Skipped: {rng.randint(0, 5)}",
             "[ERROR] Failed to execute goal org.apache.maven.plugins:maven-surefire-plugin:3.2.5:test (default-test) on project "
             f"{rng.choice(SERVICES)}: There are test failures."]
    return StepOutput("mvn -B verify", lines)


# --------------------------------------------------------------------------- COMPILE_ERROR

@family("gcc-error", FC.COMPILE_ERROR, "make")
def _gcc(rng: random.Random) -> StepOutput:
    f = _path(rng, rng.choice(["c", "cpp", "cc"]))
    sym = ident(rng)
    msg = rng.choice([f"'{sym}' was not declared in this scope", "expected ';' before '}' token",
                      f"no matching function for call to '{camel(rng)}::{sym}(int)'",
                      "invalid conversion from 'const char*' to 'int' [-fpermissive]"])
    lines = [f"g++ -O2 -Wall -std=c++17 -c {f} -o build/{rng.choice(WORDS)}.o",
             f"{f}: In function 'int {sym}(int)':", f"{f}:{rng.randint(5, 900)}:{rng.randint(1, 60)}: error: {msg}",
             f"  {rng.randint(5, 900)} |     return {sym}(x) + 1", "      |            ^~~~~~~~",
             f"make[{rng.randint(1, 3)}]: *** [Makefile:{rng.randint(10, 90)}: build/{rng.choice(WORDS)}.o] Error 1",
             "make: *** [all] Error 2"]
    return StepOutput("make -j4", lines, exit_code=2)


@family("javac-maven", FC.COMPILE_ERROR, "maven")
def _javac(rng: random.Random) -> StepOutput:
    f = f"/builds/acme/{rng.choice(SERVICES)}/src/main/java/com/acme/{rng.choice(WORDS)}/{camel(rng)}.java"
    lines = ["[INFO] --- maven-compiler-plugin:3.11.0:compile (default-compile) @ " + rng.choice(SERVICES) + " ---",
             "[INFO] Compiling " + str(rng.randint(10, 400)) + " source files with javac [debug release 17] to target/classes",
             "[ERROR] COMPILATION ERROR : ",
             f"[ERROR] {f}:[{rng.randint(5, 400)},{rng.randint(1, 60)}] cannot find symbol",
             f"  symbol:   {rng.choice(['method', 'variable', 'class'])} {rng.choice(WORDS)}{rng.choice(['Id', 'Count', 'Mapper'])}",
             f"  location: class com.acme.{rng.choice(WORDS)}.{camel(rng)}",
             f"[ERROR] {f}:[{rng.randint(5, 400)},{rng.randint(1, 60)}] incompatible types: java.lang.String cannot be converted to int",
             "[ERROR] Failed to execute goal org.apache.maven.plugins:maven-compiler-plugin:3.11.0:compile "
             f"(default-compile) on project {rng.choice(SERVICES)}: Compilation failure: Compilation failure:"]
    return StepOutput("mvn -B package -DskipTests", lines)


@family("tsc", FC.COMPILE_ERROR, "npm")
def _tsc(rng: random.Random) -> StepOutput:
    f = _path(rng, rng.choice(["ts", "tsx"]))
    code, msg = rng.choice([
        ("TS2322", "Type 'string' is not assignable to type 'number'."),
        ("TS2339", f"Property '{rng.choice(WORDS)}Id' does not exist on type '{camel(rng)}'."),
        ("TS2304", f"Cannot find name '{camel(rng)}'."),
        ("TS2345", "Argument of type 'undefined' is not assignable to parameter of type 'string'.")])
    lines = [f"> {rng.choice(SERVICES)}@{version(rng)} build", "> tsc -p tsconfig.build.json", "",
             f"{f}({rng.randint(1, 400)},{rng.randint(1, 60)}): error {code}: {msg}",
             f"{f}:{rng.randint(1, 400)}:{rng.randint(1, 60)} - error {code}: {msg}",
             "", f"Found {rng.randint(1, 9)} error{rng.choice(['', 's'])} in {rng.randint(1, 3)} file{rng.choice(['', 's'])}.",
             "npm ERR! Lifecycle script `build` failed with error:", "npm ERR! code 2"]
    return StepOutput("npm run build", lines, exit_code=2)


@family("rustc", FC.COMPILE_ERROR, "cargo")
def _rustc(rng: random.Random) -> StepOutput:
    f = f"src/{rng.choice(WORDS)}.rs"
    code, msg = rng.choice([("E0308", "mismatched types"), ("E0425", f"cannot find value `{rng.choice(WORDS)}` in this scope"),
                            ("E0599", f"no method named `{rng.choice(WORDS)}` found for struct `{camel(rng)}`"),
                            ("E0382", "borrow of moved value: `config`")])
    lines = [f"   Compiling {rng.choice(CRATES)} v{version(rng)}", f"   Compiling {rng.choice(SERVICES)} v{version(rng)} (/work)",
             f"error[{code}]: {msg}", f"  --> {f}:{rng.randint(1, 400)}:{rng.randint(1, 60)}", "   |",
             f"{rng.randint(1, 400)} |     let total: u64 = {rng.choice(WORDS)}.len();", "   |                      ^^^^^^^^^^^ expected `u64`, found `usize`",
             f"For more information about this error, try `rustc --explain {code}`.",
             f"error: could not compile `{rng.choice(SERVICES)}` (lib) due to {rng.randint(1, 5)} previous error{rng.choice(['', 's'])}"]
    return StepOutput("cargo build --release", lines, exit_code=101)


@family("go-build", FC.COMPILE_ERROR, "go test")
def _go_build(rng: random.Random) -> StepOutput:
    pkg = f"github.com/acme/{rng.choice(SERVICES)}/internal/{rng.choice(WORDS)}"
    f = f"internal/{rng.choice(WORDS)}/{rng.choice(WORDS)}.go"
    msg = rng.choice([f"undefined: {camel(rng)}", f"cannot use x (variable of type string) as int value in argument to {rng.choice(WORDS)}",
                      f"too many arguments in call to {rng.choice(WORDS)}.New", f"\"{rng.choice(['fmt', 'os', 'strings'])}\" imported and not used"])
    lines = [f"# {pkg}", f"{f}:{rng.randint(1, 400)}:{rng.randint(1, 60)}: {msg}",
             f"{f}:{rng.randint(1, 400)}:{rng.randint(1, 60)}: {rng.choice(['undefined: ' + camel(rng), 'missing return'])}",
             f"FAIL\t{pkg} [build failed]", "FAIL"]
    return StepOutput(rng.choice(["go build ./...", "go vet ./... && go test ./..."]), lines, exit_code=2)


@family("kotlin-gradle", FC.COMPILE_ERROR, "gradle")
def _kotlinc(rng: random.Random) -> StepOutput:
    f = f"file:///home/runner/work/{rng.choice(SERVICES)}/src/main/kotlin/com/acme/{camel(rng)}.kt"
    lines = [f"> Task :{rng.choice(SERVICES)}:compileKotlin FAILED",
             f"e: {f}:{rng.randint(1, 400)}:{rng.randint(1, 60)} Unresolved reference: {rng.choice(WORDS)}Repository",
             f"e: {f}:{rng.randint(1, 400)}:{rng.randint(1, 60)} Type mismatch: inferred type is String? but String was expected",
             "FAILURE: Build failed with an exception.", "* What went wrong:",
             f"Execution failed for task ':{rng.choice(SERVICES)}:compileKotlin'.",
             "> A failure occurred while executing org.jetbrains.kotlin.compilerRunner.GradleCompilerRunnerWithWorkers$GradleKotlinCompilerWorkAction",
             "   > Compilation error. See log for more details", f"BUILD FAILED in {rng.randint(10, 300)}s"]
    return StepOutput("./gradlew assemble", lines)


# --------------------------------------------------------------------------- LINT

@family("ruff-flake8", FC.LINT, "pip")
def _ruff(rng: random.Random) -> StepOutput:
    tool = rng.choice(["ruff check .", "flake8 src tests"])
    codes = [("F401", f"'{rng.choice(PACKAGES_PY)}' imported but unused"), ("E501", f"line too long ({rng.randint(111, 180)} > 110 characters)"),
             ("F841", f"local variable '{rng.choice(WORDS)}' is assigned to but never used"), ("E711", "comparison to None should be 'if cond is None:'"),
             ("B006", "Do not use mutable data structures for argument defaults")]
    lines = [f"{_path(rng, 'py')}:{rng.randint(1, 400)}:{rng.randint(1, 80)}: {c} {m}" for c, m in rng.sample(codes, rng.randint(1, 4))]
    lines.append(rng.choice([f"Found {len(lines)} error{'s' if len(lines) > 1 else ''}.", f"{len(lines)}"]))
    if tool.startswith("ruff"):
        lines.append("[*] 1 fixable with the `--fix` option.")
    return StepOutput(tool, lines)


@family("eslint", FC.LINT, "npm")
def _eslint(rng: random.Random) -> StepOutput:
    f = f"/home/runner/work/{rng.choice(SERVICES)}/{_path(rng, rng.choice(['js', 'ts', 'tsx']))}"
    rules = [("no-unused-vars", f"'{rng.choice(WORDS)}' is defined but never used"), ("eqeqeq", "Expected '===' and instead saw '=='"),
             ("react-hooks/exhaustive-deps", f"React Hook useEffect has a missing dependency: '{rng.choice(WORDS)}'"),
             ("@typescript-eslint/no-explicit-any", "Unexpected any. Specify a different type"), ("prefer-const", f"'{rng.choice(WORDS)}' is never reassigned. Use 'const' instead")]
    chosen = rng.sample(rules, rng.randint(1, 4))
    lines = ["", f.replace("\\", "/")] + [f"  {rng.randint(1, 300)}:{rng.randint(1, 60)}  error  {m}  {r}" for r, m in chosen]
    lines += ["", f"✖ {len(chosen)} problem{'s' if len(chosen) > 1 else ''} ({len(chosen)} error{'s' if len(chosen) > 1 else ''}, 0 warnings)"]
    return StepOutput(rng.choice(["npx eslint . --max-warnings=0", "yarn lint", "pnpm run lint"]), lines)


@family("golangci-lint", FC.LINT, "go test")
def _golangci(rng: random.Random) -> StepOutput:
    f = f"internal/{rng.choice(WORDS)}/{rng.choice(WORDS)}.go"
    issues = [("errcheck", f"Error return value of `{rng.choice(WORDS)}.Close` is not checked"), ("ineffassign", "ineffectual assignment to err"),
              ("govet", "printf: fmt.Sprintf format %d has arg name of wrong type string"), ("staticcheck", "SA1019: ioutil.ReadAll has been deprecated"),
              ("gofmt", "File is not `gofmt`-ed with `-s`")]
    chosen = rng.sample(issues, rng.randint(1, 3))
    lines = [f"level=info msg=\"[runner] linters took {rng.uniform(1, 40):.3f}s with stages: goanalysis_metalinter: {rng.uniform(1, 40):.2f}s\""]
    for linter, msg in chosen:
        lines += [f"{f}:{rng.randint(1, 300)}:{rng.randint(1, 40)}: {msg} ({linter})", f"\tdefer {rng.choice(WORDS)}.Close()", "\t^"]
    lines.append(f"{len(chosen)} issues:")
    lines += [f"* {linter}: 1" for linter, _ in chosen]
    return StepOutput("golangci-lint run --timeout 5m", lines)


@family("clippy", FC.LINT, "cargo")
def _clippy(rng: random.Random) -> StepOutput:
    lint = rng.choice(["needless_return", "redundant_clone", "unwrap_used", "len_zero", "single_match"])
    lines = [f"    Checking {rng.choice(SERVICES)} v{version(rng)} (/work)",
             f"error: {rng.choice(['unneeded `return` statement', 'redundant clone', 'used `unwrap()` on a `Result` value', 'length comparison to zero'])}",
             f"  --> src/{rng.choice(WORDS)}.rs:{rng.randint(1, 400)}:{rng.randint(1, 40)}",
             f"   = help: for further information visit https://rust-lang.github.io/rust-clippy/master/index.html#{lint}",
             f"   = note: `-D clippy::{lint}` implied by `-D warnings`",
             f"error: could not compile `{rng.choice(SERVICES)}` (lib) due to {rng.randint(1, 6)} previous errors"]
    return StepOutput("cargo clippy --all-targets -- -D warnings", lines, exit_code=101)


@family("formatter-check", FC.LINT, "pip")
def _formatter(rng: random.Random) -> StepOutput:
    if rng.random() < 0.5:
        files = [_path(rng, "py") for _ in range(rng.randint(1, 4))]
        lines = [f"would reformat {f}" for f in files] + ["", "Oh no! 💥 💔 💥",
                 f"{len(files)} file{'s' if len(files) > 1 else ''} would be reformatted, {rng.randint(10, 300)} files would be left unchanged."]
        return StepOutput("black --check .", lines, exit_code=1)
    files = [_path(rng, rng.choice(["ts", "js", "css", "json"])) for _ in range(rng.randint(1, 4))]
    lines = ["Checking formatting..."] + [f"[warn] {f}" for f in files] + [
        f"[warn] Code style issues found in {len(files)} file{'s' if len(files) > 1 else ''}. Run Prettier with --write to fix."]
    return StepOutput("npx prettier --check .", lines)


@family("checkstyle", FC.LINT, "maven")
def _checkstyle(rng: random.Random) -> StepOutput:
    f = f"src/main/java/com/acme/{rng.choice(WORDS)}/{camel(rng)}.java"
    lines = ["[INFO] --- maven-checkstyle-plugin:3.3.1:check (validate) @ " + rng.choice(SERVICES) + " ---",
             "[INFO] There are " + str(rng.randint(1, 9)) + " errors reported by Checkstyle 10.12.5 with google_checks.xml ruleset.",
             f"[ERROR] {f}:[{rng.randint(1, 300)},{rng.randint(1, 60)}] (imports) UnusedImports: Unused import - java.util.{rng.choice(['List', 'Map', 'Optional'])}.",
             f"[ERROR] {f}:[{rng.randint(1, 300)}] (sizes) LineLength: Line is longer than 100 characters (found {rng.randint(101, 160)}).",
             "[ERROR] Failed to execute goal org.apache.maven.plugins:maven-checkstyle-plugin:3.3.1:check (validate) on project "
             f"{rng.choice(SERVICES)}: You have {rng.randint(1, 9)} Checkstyle violations."]
    return StepOutput("mvn -B checkstyle:check", lines)


# --------------------------------------------------------------------------- DEPENDENCY_FETCH

@family("pip-no-version", FC.DEPENDENCY_FETCH, "pip")
def _pip_missing(rng: random.Random) -> StepOutput:
    pkg = rng.choice(PACKAGES_PY) + rng.choice(["", "-internal", "-client"])
    v = version(rng)
    lines = [f"Collecting {pkg}=={v}",
             f"ERROR: Could not find a version that satisfies the requirement {pkg}=={v} (from versions: {version(rng)}, {version(rng)})",
             f"ERROR: No matching distribution found for {pkg}=={v}"]
    if rng.random() < 0.4:
        lines.insert(1, "  Looking in indexes: https://pypi.org/simple, https://nexus.acme.internal/repository/pypi/simple")
    return StepOutput("pip install -r requirements.txt", lines)


@family("npm-404-etarget", FC.DEPENDENCY_FETCH, "npm")
def _npm_404(rng: random.Random) -> StepOutput:
    pkg = rng.choice(PACKAGES_JS)
    v = version(rng)
    if rng.random() < 0.5:
        lines = ["npm ERR! code E404", f"npm ERR! 404 Not Found - GET https://registry.npmjs.org/{pkg}-{rng.choice(WORDS)} - Not found",
                 f"npm ERR! 404  '{pkg}-{rng.choice(WORDS)}@^{v}' is not in this registry."]
    else:
        lines = ["npm ERR! code ETARGET", f"npm ERR! notarget No matching version found for {pkg}@^{v}.",
                 "npm ERR! notarget In most cases you or one of your dependencies are requesting", "npm ERR! notarget a package version that doesn't exist."]
    lines.append(f"npm ERR! A complete log of this run can be found in: /home/runner/.npm/_logs/{rng.randint(2023, 2025)}-01-0{rng.randint(1, 9)}T10_00_00_000Z-debug-0.log")
    if rng.random() < 0.4:
        lines = [line.replace("npm ERR!", "error").replace("npm", "yarn") for line in lines]
        lines.insert(0, f"error Couldn't find any versions for \"{pkg}\" that matches \"^{v}\"")
    return StepOutput(rng.choice(["npm ci", "yarn install --frozen-lockfile"]), lines)


@family("maven-resolve", FC.DEPENDENCY_FETCH, "maven")
def _maven_resolve(rng: random.Random) -> StepOutput:
    art = rng.choice(JAVA_ARTIFACTS)
    v = version(rng)
    lines = [f"[ERROR] Failed to execute goal on project {rng.choice(SERVICES)}: Could not resolve dependencies for project com.acme:{rng.choice(SERVICES)}:jar:{version(rng)}-SNAPSHOT: "
             f"Could not find artifact {art}:jar:{v} in central (https://repo.maven.apache.org/maven2)",
             "[ERROR] -> [Help 1]", "[ERROR] Re-run Maven using the -X switch to enable full debug logging.",
             "[ERROR] [Help 1] http://cwiki.apache.org/confluence/display/MAVEN/DependencyResolutionException"]
    return StepOutput("mvn -B -U dependency:go-offline", lines)


@family("gradle-resolve", FC.DEPENDENCY_FETCH, "gradle")
def _gradle_resolve(rng: random.Random) -> StepOutput:
    art = rng.choice(JAVA_ARTIFACTS)
    lines = ["FAILURE: Build failed with an exception.", "* What went wrong:",
             f"Execution failed for task ':{rng.choice(SERVICES)}:compileJava'.",
             "> Could not resolve all files for configuration ':" + rng.choice(SERVICES) + ":compileClasspath'.",
             f"   > Could not find {art}:{version(rng)}.", "     Searched in the following locations:",
             f"       - https://repo.maven.apache.org/maven2/{art.replace('.', '/').replace(':', '/')}/{version(rng)}/{art.split(':')[1]}-{version(rng)}.pom",
             "     Required by:", f"         project :{rng.choice(SERVICES)}", f"BUILD FAILED in {rng.randint(5, 200)}s"]
    return StepOutput("./gradlew build", lines)


@family("cargo-go-resolve", FC.DEPENDENCY_FETCH, "cargo")
def _cargo_go_resolve(rng: random.Random) -> StepOutput:
    if rng.random() < 0.5:
        crate = rng.choice(CRATES)
        lines = ["    Updating crates.io index", f"error: failed to select a version for the requirement `{crate} = \"^{version(rng)}\"`",
                 f"candidate versions found which didn't match: {version(rng)}, {version(rng)}",
                 "location searched: crates.io index", f"required by package `{rng.choice(SERVICES)} v{version(rng)} (/work)`"]
        return StepOutput("cargo fetch --locked", lines, exit_code=101)
    mod = f"github.com/{rng.choice(['acme', 'corp', 'team'])}/{rng.choice(WORDS)}-{rng.choice(['sdk', 'lib', 'kit'])}"
    lines = [f"go: downloading {mod} v{version(rng)}",
             f"go: {mod}@v{version(rng)}: reading {mod}/go.mod at revision v{version(rng)}: unknown revision v{version(rng)}",
             f"go: github.com/acme/{rng.choice(SERVICES)} imports", f"\t{mod}: module {mod}@latest found, but does not contain package {mod}/{rng.choice(WORDS)}"]
    return StepOutput("go mod download", lines)


@family("poetry-solver", FC.DEPENDENCY_FETCH, "pip")
def _poetry(rng: random.Random) -> StepOutput:
    a, b = rng.sample(PACKAGES_PY, 2)
    lines = ["Updating dependencies", "Resolving dependencies...",
             f"Because {rng.choice(SERVICES)} depends on {a} (^{version(rng)}) which doesn't match any versions, version solving failed.",
             "", "  SolverProblemError", "", f"  Because {rng.choice(SERVICES)} depends on {b} (>={version(rng)},<{version(rng)}) which doesn't match any versions, version solving failed.",
             "  at ~/.local/share/pypoetry/venv/lib/python3.11/site-packages/poetry/puzzle/solver.py:159 in _solve"]
    return StepOutput("poetry install --no-interaction", lines)


# --------------------------------------------------------------------------- NETWORK

@family("curl-dns", FC.NETWORK, "shell")
def _curl(rng: random.Random) -> StepOutput:
    host = f"{rng.choice(['artifacts', 'api', 'downloads', 'releases'])}.{rng.choice(['acme.internal', 'example.com', 'corp.net'])}"
    msg = rng.choice([f"curl: (6) Could not resolve host: {host}", f"curl: (7) Failed to connect to {host} port 443 after {rng.randint(100, 130000)} ms: Connection refused",
                      f"curl: (28) Connection timed out after {rng.randint(10000, 60000)} milliseconds", "curl: (56) Recv failure: Connection reset by peer",
                      f"curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to {host}:443"])
    lines = ["  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current",
             "                                 Dload  Upload   Total   Spent    Left  Speed",
             f"  0     0    0     0    0     0      0      0 --:--:--  0:00:0{rng.randint(1, 9)} --:--:--     0", msg]
    return StepOutput(f"curl -fsSL https://{host}/{rng.choice(WORDS)}.tar.gz -o /tmp/pkg.tgz", lines, exit_code=rng.choice([6, 7, 28, 56, 35]))


@family("git-clone-network", FC.NETWORK, "shell")
def _git_net(rng: random.Random) -> StepOutput:
    host = rng.choice(["github.com", "gitlab.acme.internal", "bitbucket.org"])
    msg = rng.choice([f"fatal: unable to access 'https://{host}/acme/{rng.choice(SERVICES)}.git/': Could not resolve host: {host}",
                      f"fatal: unable to access 'https://{host}/acme/{rng.choice(SERVICES)}.git/': Failed to connect to {host} port 443: Connection timed out",
                      "error: RPC failed; curl 56 GnuTLS recv error (-54): Error in the pull function.",
                      f"fatal: unable to access 'https://{host}/acme/{rng.choice(SERVICES)}.git/': gnutls_handshake() failed: The TLS connection was non-properly terminated."])
    lines = [f"Fetching changes with git depth set to {rng.choice([20, 50])}...", f"Initialized empty Git repository in /builds/acme/{rng.choice(SERVICES)}/.git/",
             "Created fresh repository.", msg, "fatal: early EOF" if "RPC" in msg else "fatal: the remote end hung up unexpectedly"]
    return StepOutput("git fetch origin", lines, exit_code=128)


@family("docker-pull-network", FC.NETWORK, "docker build")
def _docker_net(rng: random.Random) -> StepOutput:
    reg = rng.choice(["registry-1.docker.io", "ghcr.io", "quay.io", "registry.acme.internal:5000"])
    msg = rng.choice([f"Error response from daemon: Get \"https://{reg}/v2/\": dial tcp: lookup {reg} on 127.0.0.53:53: server misbehaving",
                      f"Error response from daemon: Get \"https://{reg}/v2/\": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
                      f"Error response from daemon: Get \"https://{reg}/v2/\": net/http: TLS handshake timeout",
                      f"ERROR: failed to solve: failed to do request: Head \"https://{reg}/v2/library/{rng.choice(['python', 'node', 'golang'])}/manifests/latest\": dial tcp {rng.randint(1, 254)}.{rng.randint(0, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}:443: i/o timeout"])
    lines = ["Using default tag: latest", msg]
    return StepOutput(rng.choice([f"docker pull {reg}/acme/base:latest", "docker build -t app ."]), lines)


@family("apt-dns", FC.NETWORK, "shell")
def _apt(rng: random.Random) -> StepOutput:
    mirror = rng.choice(["deb.debian.org", "archive.ubuntu.com", "security.ubuntu.com"])
    lines = [f"Err:{rng.randint(1, 9)} http://{mirror}/debian bookworm InRelease", f"  Temporary failure resolving '{mirror}'",
             f"Err:{rng.randint(1, 9)} http://{mirror}/debian bookworm-updates InRelease", f"  Could not connect to {mirror}:80 ({rng.randint(1, 254)}.{rng.randint(0, 254)}.0.{rng.randint(1, 254)}), connection timed out",
             "Reading package lists...", f"W: Failed to fetch http://{mirror}/debian/dists/bookworm/InRelease  Temporary failure resolving '{mirror}'",
             "W: Some index files failed to download. They have been ignored, or old ones used instead.",
             f"E: Unable to locate package {rng.choice(['libpq-dev', 'build-essential', 'jq', 'unzip'])}"]
    return StepOutput("apt-get update && apt-get install -y --no-install-recommends jq", lines, exit_code=100)


@family("kubectl-helm-unreachable", FC.NETWORK, "kubectl/helm")
def _kube_net(rng: random.Random) -> StepOutput:
    ip = f"10.{rng.randint(0, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}"
    msg = rng.choice([f"Unable to connect to the server: dial tcp {ip}:6443: i/o timeout",
                      f"The connection to the server {ip}:6443 was refused - did you specify the right host or port?",
                      f"Error: Kubernetes cluster unreachable: Get \"https://{ip}:6443/version\": dial tcp {ip}:6443: connect: no route to host",
                      "Unable to connect to the server: net/http: TLS handshake timeout"])
    return StepOutput(rng.choice(["kubectl apply -f k8s/", f"helm upgrade --install {rng.choice(SERVICES)} ./chart"]), [msg])


@family("python-requests-conn", FC.NETWORK, "pip")
def _requests(rng: random.Random) -> StepOutput:
    host = f"{rng.choice(['api', 'hooks', 'status'])}.{rng.choice(['acme.internal', 'example.org'])}"
    lines = ["Traceback (most recent call last):",
             f'  File "/usr/lib/python3/dist-packages/urllib3/connection.py", line {rng.randint(100, 300)}, in _new_conn',
             "socket.gaierror: [Errno -3] Temporary failure in name resolution",
             "During handling of the above exception, another exception occurred:",
             f"urllib3.exceptions.MaxRetryError: HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded with url: /v1/{rng.choice(WORDS)} "
             f"(Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f{sha(rng, 10)}>: Failed to establish a new connection: [Errno {rng.choice([-3, 111, 110])}] {rng.choice(['Temporary failure in name resolution', 'Connection refused', 'Connection timed out'])}'))",
             f"requests.exceptions.ConnectionError: HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded"]
    return StepOutput(f"python scripts/notify_{rng.choice(WORDS)}.py", lines)


# --------------------------------------------------------------------------- OUT_OF_MEMORY

@family("node-heap", FC.OUT_OF_MEMORY, "npm")
def _node_heap(rng: random.Random) -> StepOutput:
    lines = ["<--- Last few GCs --->", f"[{rng.randint(1000, 9999)}:0x{sha(rng, 12)}]    {rng.randint(10000, 99999)} ms: Mark-Compact {rng.randint(2000, 4000)}.{rng.randint(1, 9)} ({rng.randint(2000, 4100)}.{rng.randint(1, 9)}) -> {rng.randint(2000, 4000)}.{rng.randint(1, 9)} MB, {rng.randint(100, 3000)}.{rng.randint(1, 9)} / 0.0 ms  (average mu = 0.{rng.randint(100, 300)}) allocation failure; scavenge might not succeed",
             "<--- JS stacktrace --->", "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
             f" 1: 0x{sha(rng, 7)} node::Abort() [node]", f" 2: 0x{sha(rng, 7)} node::OOMErrorHandler(char const*, v8::OOMDetails const&) [node]",
             "Aborted (core dumped)"]
    return StepOutput(rng.choice(["npm run build", "yarn webpack --mode production", "npx jest --ci"]), lines, exit_code=134)


@family("java-oom", FC.OUT_OF_MEMORY, "gradle")
def _java_oom(rng: random.Random) -> StepOutput:
    kind = rng.choice(["Java heap space", "GC overhead limit exceeded", "Metaspace"])
    lines = [f"Exception in thread \"{rng.choice(['main', 'Daemon worker', 'pool-1-thread-3'])}\" java.lang.OutOfMemoryError: {kind}",
             f"\tat java.base/java.util.Arrays.copyOf(Arrays.java:{rng.randint(3000, 4000)})",
             f"\tat com.acme.{rng.choice(WORDS)}.{camel(rng)}.load({camel(rng)}.java:{rng.randint(10, 400)})"]
    if rng.random() < 0.5:
        lines += ["FAILURE: Build failed with an exception.", "* What went wrong:", f"{kind}", "> Expiring Daemon because JVM heap space is exhausted"]
    else:
        lines += ["[ERROR] Java heap space -> [Help 1]", "[ERROR] java.lang.OutOfMemoryError: " + kind]
    return StepOutput(rng.choice(["./gradlew build", "mvn -B verify"]), lines)


@family("oom-killer-137", FC.OUT_OF_MEMORY, "docker build")
def _killed_137(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        ["c++: fatal error: Killed signal terminated program cc1plus", "compilation terminated.",
         f"make[2]: *** [CMakeFiles/{rng.choice(WORDS)}.dir/build.make:{rng.randint(70, 300)}: CMakeFiles/{rng.choice(WORDS)}.dir/src/{rng.choice(WORDS)}.cpp.o] Error 1"],
        [f"#{rng.randint(5, 20)} {rng.uniform(20, 300):.1f} Killed", f"ERROR: failed to solve: process \"/bin/sh -c {rng.choice(['npm run build', 'cargo build --release', 'pip wheel .'])}\" did not complete successfully: exit code: 137"],
        [f"/usr/bin/bash: line {rng.randint(100, 200)}: {rng.randint(100, 999)} Killed                  python train.py --epochs {rng.randint(1, 9)}",
         "Out of memory: Killed process (python) total-vm:" + str(rng.randint(8000000, 16000000)) + "kB"],
    ])
    return StepOutput(rng.choice(["docker build -t app .", "make -j8", "python train.py"]), lines, exit_code=137)


@family("k8s-oomkilled", FC.OUT_OF_MEMORY, "kubectl/helm")
def _oomkilled(rng: random.Random) -> StepOutput:
    pod = f"runner-{sha(rng, 8)}-project-{rng.randint(100, 9999)}-concurrent-0-{sha(rng, 5)}"
    lines = [f"WARNING: Event retrieved from the cluster: Container \"build\" in pod {pod} was OOMKilled (memory limit {rng.choice(['2Gi', '4Gi', '8Gi'])})",
             "    State:          Terminated", "      Reason:       OOMKilled", "      Exit Code:    137",
             "ERROR: Job failed: command terminated with exit code 137"]
    return StepOutput("make test", lines, exit_code=137, gitlab_terminal=lines[-1])


@family("go-python-alloc", FC.OUT_OF_MEMORY, "go test")
def _go_py_oom(rng: random.Random) -> StepOutput:
    if rng.random() < 0.5:
        lines = ["fatal error: runtime: out of memory", "", "runtime stack:", f"runtime.throw({{0x{sha(rng, 6)}, 0x16}})",
                 f"\t/usr/local/go/src/runtime/panic.go:{rng.randint(1000, 1100)} +0x5d fp=0x7ffd{sha(rng, 8)}", f"FAIL\tgithub.com/acme/{rng.choice(SERVICES)}/pkg/{rng.choice(WORDS)}\t{rng.uniform(1, 60):.3f}s"]
        return StepOutput("go test ./...", lines, exit_code=2)
    lines = ["Traceback (most recent call last):", f'  File "{_path(rng, "py")}", line {rng.randint(10, 400)}, in load_{rng.choice(WORDS)}',
             f"    data = np.zeros(({rng.randint(10**5, 10**6)}, {rng.randint(10**3, 10**4)}))",
             f"numpy.core._exceptions._ArrayMemoryError: Unable to allocate {rng.randint(10, 900)}. GiB for an array with shape ({rng.randint(10**5, 10**6)}, {rng.randint(10**3, 10**4)}) and data type float64",
             "MemoryError"]
    return StepOutput("python -m pytest tests/perf", lines)


# --------------------------------------------------------------------------- DISK_FULL

@family("errno28-python", FC.DISK_FULL, "pip")
def _errno28(rng: random.Random) -> StepOutput:
    lines = [f"Collecting {rng.choice(PACKAGES_PY)}=={version(rng)}", *[f"  Downloading {rng.choice(PACKAGES_PY)}-{version(rng)}.tar.gz ({rng.randint(1, 900)} MB)"],
             f"ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device: '/tmp/pip-unpack-{sha(rng, 8)}/{rng.choice(PACKAGES_PY)}.whl'"]
    if rng.random() < 0.5:
        lines[-1] = f"OSError: [Errno 28] No space left on device: '/home/runner/work/_temp/{rng.choice(WORDS)}.parquet'"
    return StepOutput(rng.choice(["pip install -r requirements.txt", "python scripts/export.py"]), lines)


@family("docker-no-space", FC.DISK_FULL, "docker build")
def _docker_space(rng: random.Random) -> StepOutput:
    lines = [f"#{rng.randint(3, 15)} [{rng.randint(2, 9)}/{rng.randint(9, 12)}] RUN {rng.choice(['npm ci', 'apt-get install -y build-essential', 'pip install -r requirements.txt'])}",
             rng.choice(["ERROR: failed to solve: failed to copy files: copy file range failed: no space left on device",
                         f"failed to register layer: write /var/lib/docker/overlay2/{sha(rng, 64)}/diff/usr/lib/{rng.choice(WORDS)}.so: no space left on device",
                         f"Error response from daemon: mkdir /var/lib/docker/tmp/docker-builder{rng.randint(10**8, 10**9)}: no space left on device"])]
    return StepOutput("docker build -t app .", lines)


@family("enospc-node", FC.DISK_FULL, "npm")
def _enospc(rng: random.Random) -> StepOutput:
    lines = ["npm ERR! code ENOSPC", "npm ERR! syscall write", "npm ERR! errno -28",
             "npm ERR! nospc ENOSPC: no space left on device, write", "npm ERR! nospc There appears to be insufficient space on your system to finish.",
             "npm ERR! nospc Clear up some disk space and try again."]
    if rng.random() < 0.4:
        lines = [f"Error: ENOSPC: no space left on device, write '/home/runner/work/{rng.choice(SERVICES)}/dist/{rng.choice(WORDS)}.js.map'",
                 f"    at Object.writeSync (node:fs:{rng.randint(900, 950)}:3)"]
    return StepOutput("npm ci && npm run build", lines)


@family("runner-disk-warning", FC.DISK_FULL, "github actions")
def _runner_disk(rng: random.Random) -> StepOutput:
    lines = [f"You are running out of disk space. The runner will stop working when the machine runs out of disk space. Free space left: {rng.randint(0, 90)} MB",
             f"System.IO.IOException: No space left on device : '/home/runner/runners/{version(rng)}/_diag/Worker_{rng.randint(2023, 2025)}0101-{rng.randint(100000, 999999)}-utc.log'",
             "   at System.IO.RandomAccess.WriteAtOffset(SafeFileHandle handle, ReadOnlySpan`1 buffer, Int64 fileOffset)"]
    return StepOutput("./gradlew build", lines, github_terminal="##[error]No space left on device")


@family("java-gradle-io-space", FC.DISK_FULL, "gradle")
def _java_space(rng: random.Random) -> StepOutput:
    lines = ["FAILURE: Build failed with an exception.", "* What went wrong:",
             f"Execution failed for task ':{rng.choice(SERVICES)}:{rng.choice(['jar', 'test', 'bootJar', 'shadowJar'])}'.",
             "> java.io.IOException: No space left on device",
             "[ERROR] Failed to execute goal org.apache.maven.plugins:maven-jar-plugin:3.3.0:jar: Error assembling JAR: No space left on device" if rng.random() < 0.3 else
             f"  tar: ./{rng.choice(WORDS)}: Wrote only {rng.randint(1, 9)}{rng.randint(0, 9)}00 of 10240 bytes",
             f"BUILD FAILED in {rng.randint(10, 300)}s"]
    return StepOutput("./gradlew build", lines)


# --------------------------------------------------------------------------- TIMEOUT

@family("gitlab-job-timeout", FC.TIMEOUT, "gitlab")
def _gitlab_timeout(rng: random.Random) -> StepOutput:
    limit = rng.choice(["1h0m0s", "30m0s", "2h0m0s", "10m0s"])
    lines = [f"{rng.choice(WORDS)} {rng.randint(1, 99)}/{rng.randint(100, 200)}" for _ in range(rng.randint(1, 3))]
    term = f"ERROR: Job failed: execution took longer than {limit} seconds"
    return StepOutput(rng.choice(["./scripts/e2e.sh", "make integration"]), lines, gitlab_terminal=term,
                      github_terminal=f"##[error]The job running on runner GitHub Actions {rng.randint(2, 99)} has exceeded the maximum execution time of {rng.choice([60, 120, 360])} minutes.")


@family("go-test-timeout", FC.TIMEOUT, "go test")
def _go_timeout(rng: random.Random) -> StepOutput:
    name = f"Test{rng.choice(WORDS).capitalize()}{rng.choice(['Migrate', 'Replay', 'Backfill'])}"
    lines = [f"=== RUN   {name}", f"panic: test timed out after {rng.choice(['10m0s', '5m0s', '30m0s'])}",
             "\trunning tests:", f"\t\t{name} ({rng.randint(5, 30)}m0s)", "", "goroutine 42 [running]:",
             "testing.(*M).startAlarm.func1()", f"\t/usr/local/go/src/testing/testing.go:{rng.randint(2200, 2400)} +0x3b9",
             f"FAIL\tgithub.com/acme/{rng.choice(SERVICES)}/{rng.choice(WORDS)}\t{rng.randint(300, 1800)}.0{rng.randint(1, 9)}s"]
    return StepOutput("go test -timeout 10m ./...", lines)


@family("pytest-timeout", FC.TIMEOUT, "pytest")
def _pytest_timeout(rng: random.Random) -> StepOutput:
    t = f"tests/test_{rng.choice(WORDS)}.py::{_py_test(rng)}"
    lines = [f"{t} ", "+" * 30 + " Timeout " + "+" * 30, f"~~~~~~~~~~~~ Stack of MainThread ({rng.randint(100000, 999999)}) ~~~~~~~~~~~~",
             f'  File "/usr/lib/python3.11/threading.py", line {rng.randint(300, 330)}, in wait', "    waiter.acquire()",
             "+" * 30 + " Timeout " + "+" * 30, f"Failed: Timeout >{rng.choice([60, 120, 300, 600])}.0s",
             f"FAILED {t} - Failed: Timeout >{rng.choice([60, 120, 300, 600])}.0s"]
    return StepOutput("pytest --timeout=300", lines)


@family("helm-kubectl-wait", FC.TIMEOUT, "kubectl/helm")
def _helm_timeout(rng: random.Random) -> StepOutput:
    svc = rng.choice(SERVICES)
    lines = rng.choice([
        [f"Release \"{svc}\" does not exist. Installing it now.", "Error: INSTALLATION FAILED: context deadline exceeded",
         "Error: UPGRADE FAILED: timed out waiting for the condition"],
        [f"Waiting for deployment \"{svc}\" rollout to finish: {rng.randint(0, 2)} of {rng.randint(3, 6)} updated replicas are available...",
         f"error: timed out waiting for the condition on deployments/{svc}"],
        [f"Waiting for deployment \"{svc}\" rollout to finish: 1 old replicas are pending termination...",
         f"error: deployment \"{svc}\" exceeded its progress deadline"]])
    return StepOutput(rng.choice([f"helm upgrade --install {svc} ./chart --wait --timeout 5m", f"kubectl rollout status deploy/{svc} --timeout=300s"]), lines)


@family("terraform-timeout", FC.TIMEOUT, "terraform")
def _tf_timeout(rng: random.Random) -> StepOutput:
    res = rng.choice(["aws_db_instance.main", "google_container_cluster.primary", "azurerm_kubernetes_cluster.aks", "aws_eks_node_group.workers"])
    lines = [f"{res}: Still creating... [{rng.randint(10, 59)}m{rng.randint(0, 59)}s elapsed]", "╷",
             f"│ Error: waiting for {rng.choice(['RDS DB Instance', 'GKE cluster', 'EKS Node Group'])} ({rng.choice(WORDS)}-{rng.choice(['prod', 'staging'])}) create: timeout while waiting for state to become '{rng.choice(['available', 'RUNNING', 'ACTIVE'])}' (last state: 'creating', timeout: {rng.choice(['40m0s', '30m0s', '1h0m0s'])})",
             "│", f"│   with {res},", f"│   on main.tf line {rng.randint(1, 300)}, in resource \"{res.split('.')[0]}\" \"{res.split('.')[1]}\":", "╵"]
    return StepOutput("terraform apply -auto-approve", lines)


# --------------------------------------------------------------------------- INFRASTRUCTURE

@family("gitlab-system-failure", FC.INFRASTRUCTURE, "gitlab")
def _gitlab_system(rng: random.Random) -> StepOutput:
    term = rng.choice([
        f"ERROR: Job failed (system failure): prepare environment: Error response from daemon: container create: runtime error: {rng.choice(['OCI runtime create failed', 'containerd: failed to create shim task'])}",
        "ERROR: Job failed (system failure): Error response from daemon: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        f"ERROR: Job failed (system failure): pod \"runner-{sha(rng, 8)}\" status is \"Failed\"",
        "ERROR: Job failed (system failure): unable to upgrade connection: container not found (\"build\")"])
    lines = [f"WARNING: Failed to pull image with policy \"if-not-present\": {rng.choice(['error during connect', 'context canceled'])}",
             f"ERROR: Preparation failed: {term.split(': ', 2)[-1]}", "Will be retried in 3s ..."]
    return StepOutput("", lines, gitlab_terminal=term,
                      github_terminal="##[error]The hosted runner encountered an error while running your job. (Error Type: Failure).")


@family("github-runner-lost", FC.INFRASTRUCTURE, "github actions")
def _gh_runner_lost(rng: random.Random) -> StepOutput:
    term = rng.choice(["##[error]The runner has received a shutdown signal. This can happen when the runner service is stopped, or a manually started runner is canceled.",
                       f"##[error]The self-hosted runner: {rng.choice(['build', 'ci', 'gpu'])}-runner-{rng.randint(1, 40)} lost communication with the server. Verify the machine is running and has a healthy network connection.",
                       "##[error]The hosted runner encountered an error while running your job. (Error Type: Disconnect)."])
    lines = [f"{rng.choice(WORDS)} step {rng.randint(1, 40)}/{rng.randint(41, 90)}", "##[error]The operation was canceled."]
    return StepOutput(rng.choice(["make test", "npm test"]), lines, github_terminal=term,
                      gitlab_terminal="ERROR: Job failed (system failure): aborted: terminated")


@family("k8s-executor-pending", FC.INFRASTRUCTURE, "kubectl/helm")
def _k8s_pending(rng: random.Random) -> StepOutput:
    pod = f"runner-{sha(rng, 8)}-project-{rng.randint(100, 9999)}-concurrent-0"
    lines = [f"Using Kubernetes namespace: {rng.choice(['gitlab-runner', 'ci'])}",
             f"Waiting for pod {rng.choice(['ci', 'gitlab-runner'])}/{pod} to be running, status is Pending",
             f"\tUnschedulable: \"0/{rng.randint(3, 30)} nodes are available: {rng.randint(1, 9)} Insufficient cpu, {rng.randint(1, 9)} node(s) had untolerated taint {{node.kubernetes.io/unreachable: }}.\"",
             "\tContainersNotReady: \"containers with unready status: [build helper]\""]
    term = "ERROR: Job failed (system failure): prepare environment: waiting for pod running: timed out waiting for pod to start."
    return StepOutput("", lines, gitlab_terminal=term, github_terminal="##[error]Failed to start the job container: node pool has no capacity")


@family("docker-daemon-broken", FC.INFRASTRUCTURE, "docker build")
def _daemon(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        ["Cannot connect to the Docker daemon at tcp://docker:2375. Is the docker daemon running?",
         "error during connect: Post \"http://docker:2375/v1.24/build\": dial tcp: lookup docker on 169.254.169.254:53: no such host" if rng.random() < 0.2 else
         "time=\"2024-01-01T10:00:00Z\" level=error msg=\"failed to dial gRPC: cannot connect to the Docker daemon\""],
        [f"ERROR: failed to solve: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: {rng.choice(['cgroup', 'mount'])}: device or resource busy"],
        [f"Error response from daemon: driver failed programming external connectivity on endpoint {rng.choice(WORDS)}_{rng.randint(1, 9)}: iptables failed"],
    ])
    return StepOutput("docker build -t app .", lines)


@family("runner-segv-kernel", FC.INFRASTRUCTURE, "gitlab")
def _runner_storage(rng: random.Random) -> StepOutput:
    lines = [f"error: unable to write sha1 filename .git/objects/{sha(rng, 2)}/{sha(rng, 38)}: Read-only file system",
             f"Input/output error: EXT4-fs error (device {rng.choice(['nvme0n1p1', 'sda1'])}): ext4_find_entry:{rng.randint(1000, 1700)}: reading directory lblock 0",
             "fatal: cannot create directory at 'src': Read-only file system"]
    return StepOutput("git checkout -f " + sha(rng, 8), lines, exit_code=128,
                      gitlab_terminal="ERROR: Job failed (system failure): Error response from daemon: error while creating mount source path: read-only file system")


# --------------------------------------------------------------------------- CONFIGURATION

@family("ci-yaml-invalid", FC.CONFIGURATION, "github actions")
def _ci_yaml(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        [f"Error: Input required and not supplied: {rng.choice(['token', 'path', 'aws-region', 'node-version'])}"],
        [f"Invalid workflow file: .github/workflows/{rng.choice(['ci', 'release', 'deploy'])}.yml#L{rng.randint(5, 90)}",
         f"The workflow is not valid. .github/workflows/ci.yml (Line: {rng.randint(5, 90)}, Col: {rng.randint(1, 20)}): Unexpected value '{rng.choice(['runs_on', 'step', 'with'])}'"],
        [f"ERROR: Job failed: yaml invalid: jobs:{rng.choice(WORDS)} config contains unknown keys: {rng.choice(['script_', 'dependancies', 'stages'])}",
         f"jobs:{rng.choice(WORDS)}:rules:if invalid expression syntax"],
        [f"Unable to resolve action `actions/{rng.choice(['setup-nod', 'checkout@v9', 'cache@v0'])}`, unable to find version `{rng.choice(['v9', 'v0', 'main2'])}`"],
    ])
    return StepOutput("", lines)


@family("missing-env-setting", FC.CONFIGURATION, "shell")
def _missing_env(rng: random.Random) -> StepOutput:
    var = rng.choice(["DATABASE_URL", "AWS_REGION", "SENTRY_DSN", "API_BASE_URL", "KAFKA_BROKERS", "REDIS_URL"])
    lines = rng.choice([
        ["Traceback (most recent call last):", f'  File "/app/{rng.choice(WORDS)}/settings.py", line {rng.randint(5, 90)}, in <module>',
         f"    {var.lower()} = os.environ[\"{var}\"]", f"KeyError: '{var}'"],
        [f"Error: environment variable {var} is required but not set"],
        [f"{rng.choice(['./deploy.sh', 'scripts/release.sh'])}: line {rng.randint(3, 90)}: {var}: parameter null or not set"],
        ["pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings", f"{var.lower()}", "  Field required [type=missing, input_value={...}, input_type=dict]"],
    ])
    return StepOutput(rng.choice(["./deploy.sh", "python -m app.migrate", "make release"]), lines)


@family("terraform-config", FC.CONFIGURATION, "terraform")
def _tf_config(rng: random.Random) -> StepOutput:
    res = f"{rng.choice(['aws_s3_bucket', 'aws_instance', 'google_storage_bucket'])}.{rng.choice(WORDS)}"
    msg = rng.choice([("Unsupported argument", f"An argument named \"{rng.choice(['acl_policy', 'instance_typ', 'versioning_enabled'])}\" is not expected here."),
                      ("Reference to undeclared input variable", f"An input variable with the name \"{rng.choice(WORDS)}_id\" has not been declared."),
                      ("Missing required argument", f"The argument \"{rng.choice(['region', 'bucket', 'ami'])}\" is required, but no definition was found."),
                      ("Invalid value for input variable", f"The given value is not suitable for var.{rng.choice(WORDS)}: a number is required.")])
    lines = ["╷", f"│ Error: {msg[0]}", "│", f"│   on {rng.choice(['main.tf', 'variables.tf', 'network.tf'])} line {rng.randint(1, 300)}, in resource \"{res.split('.')[0]}\" \"{res.split('.')[1]}\":",
             f"│ {rng.randint(1, 300)}:   {rng.choice(WORDS)} = var.{rng.choice(WORDS)}", "│", f"│ {msg[1]}", "╵"]
    return StepOutput(rng.choice(["terraform validate", "terraform plan -out plan.tfplan"]), lines)


@family("helm-docker-config", FC.CONFIGURATION, "docker build")
def _build_config(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        [f"ERROR: failed to solve: failed to read dockerfile: open {rng.choice(['Dockerfile', 'docker/Dockerfile.prod'])}: no such file or directory"],
        ["Error: INSTALLATION FAILED: values don't meet the specifications of the schema(s) in the following chart(s):",
         f"{rng.choice(SERVICES)}:", "- replicaCount: Invalid type. Expected: integer, given: string"],
        [f"error: error validating \"k8s/{rng.choice(WORDS)}.yaml\": error validating data: ValidationError(Deployment.spec.template.spec.containers[0]): unknown field \"{rng.choice(['imagePullPolice', 'resource', 'envFrom2'])}\" in io.k8s.api.core.v1.Container; if you choose to ignore these errors, turn validation off with --validate=false"],
        [f"Error: YAML parse error on {rng.choice(SERVICES)}/templates/deployment.yaml: error converting YAML to JSON: yaml: line {rng.randint(5, 80)}: did not find expected key"],
    ])
    return StepOutput(rng.choice(["docker build -f Dockerfile .", "helm upgrade --install app ./chart", "kubectl apply -f k8s/"]), lines)


@family("npm-maven-script-config", FC.CONFIGURATION, "npm")
def _script_config(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        [f"npm ERR! Missing script: \"{rng.choice(['tset', 'build:prod', 'lint:ci', 'e2e'])}\"", "npm ERR!", "npm ERR! To see a list of scripts, run:", "npm ERR!   npm run"],
        [f"[ERROR] Unknown lifecycle phase \"{rng.choice(['biuld', 'deploy-prod', 'tests'])}\". You must specify a valid lifecycle phase or a goal in the format <plugin-prefix>:<goal>",
         "[ERROR] -> [Help 1]", "[ERROR] [Help 1] http://cwiki.apache.org/confluence/display/MAVEN/LifecyclePhaseNotFoundException"],
        [f"Task '{rng.choice(['integTest', 'publishRelease', 'jibDockerBuld'])}' not found in root project '{rng.choice(SERVICES)}'.", "* Try:", "> Run gradle tasks to get a list of available tasks."],
        [f"error: unexpected argument '--{rng.choice(['releas', 'feature', 'all-feature'])}' found", "Usage: cargo build [OPTIONS]"],
    ])
    return StepOutput(rng.choice(["npm run build", "mvn -B verify", "./gradlew check", "cargo build"]), lines)


# --------------------------------------------------------------------------- PERMISSION

@family("git-push-denied", FC.PERMISSION, "github actions")
def _git_denied(rng: random.Random) -> StepOutput:
    repo = f"acme/{rng.choice(SERVICES)}"
    lines = rng.choice([
        [f"remote: Permission to {repo}.git denied to github-actions[bot].", f"fatal: unable to access 'https://github.com/{repo}/': The requested URL returned error: 403"],
        ["git@github.com: Permission denied (publickey).", "fatal: Could not read from remote repository.", "", "Please make sure you have the correct access rights", "and the repository exists."],
        ["remote: You are not allowed to push code to this project.", f"fatal: unable to access 'https://gitlab.acme.internal/{repo}.git/': The requested URL returned error: 403"],
        ["Error: Resource not accessible by integration", "RequestError [HttpError]: Resource not accessible by integration", "  status: 403,"],
    ])
    return StepOutput(rng.choice(["git push origin HEAD:main --follow-tags", "gh release create v" + version(rng)]), lines, exit_code=128)


@family("registry-denied", FC.PERMISSION, "docker build")
def _registry_denied(rng: random.Random) -> StepOutput:
    reg = rng.choice(["ghcr.io", "registry.gitlab.com", f"{rng.randint(10**11, 10**12 - 1)}.dkr.ecr.eu-west-1.amazonaws.com"])
    lines = rng.choice([
        [f"The push refers to repository [{reg}/acme/{rng.choice(SERVICES)}]", f"{sha(rng, 12)}: Preparing", "denied: requested access to the resource is denied"],
        [f"Error response from daemon: pull access denied for {reg}/acme/{rng.choice(SERVICES)}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"],
        ["unauthorized: authentication required", f"ERROR: failed to solve: failed to push {reg}/acme/{rng.choice(SERVICES)}:latest: unexpected status: 401 Unauthorized"],
        [f"Error response from daemon: Head \"https://{reg}/v2/acme/{rng.choice(SERVICES)}/manifests/latest\": denied: permission_denied: write_package"],
    ])
    return StepOutput(f"docker push {reg}/acme/app:latest", lines)


@family("kubectl-forbidden", FC.PERMISSION, "kubectl/helm")
def _k8s_forbidden(rng: random.Random) -> StepOutput:
    sa = f"system:serviceaccount:{rng.choice(['ci', 'deploy', 'gitlab'])}:{rng.choice(['deployer', 'runner', 'default'])}"
    res = rng.choice(["deployments.apps", "secrets", "configmaps", "pods", "ingresses.networking.k8s.io"])
    verb = rng.choice(["list", "patch", "create", "get", "delete"])
    group = "apps" if "apps" in res else ""
    lines = [f"Error from server (Forbidden): {res} is forbidden: User \"{sa}\" cannot {verb} resource \"{res.split('.')[0]}\" in API group \"{group}\" in the namespace \"{rng.choice(['prod', 'staging', 'default'])}\""]
    if rng.random() < 0.5:
        lines = [f"Error: UPGRADE FAILED: query: failed to query with labels: {res} is forbidden: User \"{sa}\" cannot {verb} resource \"{res.split('.')[0]}\" in API group \"\" in the namespace \"{rng.choice(['prod', 'staging'])}\""]
    return StepOutput(rng.choice(["kubectl apply -f k8s/", "helm upgrade --install app ./chart"]), lines)


@family("fs-eacces", FC.PERMISSION, "npm")
def _eacces(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        ["npm ERR! code EACCES", "npm ERR! syscall mkdir", f"npm ERR! path /usr/local/lib/node_modules/{rng.choice(PACKAGES_JS)}",
         "npm ERR! errno -13", f"npm ERR! Error: EACCES: permission denied, mkdir '/usr/local/lib/node_modules/{rng.choice(PACKAGES_JS)}'",
         "npm ERR! The operation was rejected by your operating system."],
        [f"ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/usr/lib/python3/dist-packages/{rng.choice(PACKAGES_PY)}'",
         "Consider using the `--user` option or check the permissions."],
        [f"/bin/sh: 1: ./scripts/{rng.choice(['build', 'deploy', 'release'])}.sh: Permission denied"],
        [f"mkdir: cannot create directory '/opt/{rng.choice(WORDS)}': Permission denied"],
    ])
    return StepOutput(rng.choice(["npm install -g", "pip install .", "./scripts/build.sh"]), lines, exit_code=rng.choice([1, 126, 243]))


@family("cloud-access-denied", FC.PERMISSION, "terraform")
def _cloud_denied(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        ["╷", f"│ Error: creating S3 Bucket ({rng.choice(WORDS)}-{rng.choice(['logs', 'assets'])}): AccessDenied: Access Denied", f"│ \tstatus code: 403, request id: {sha(rng, 16).upper()}", "╵"],
        [f"An error occurred (AccessDeniedException) when calling the {rng.choice(['UpdateFunctionCode', 'PutParameter', 'DescribeClusters'])} operation: User: arn:aws:sts::{rng.randint(10**11, 10**12 - 1)}:assumed-role/ci-deployer/{rng.randint(10**5, 10**6)} is not authorized to perform: {rng.choice(['lambda:UpdateFunctionCode', 'ssm:PutParameter', 'eks:DescribeCluster'])}"],
        [f"ERROR: (gcloud.run.deploy) PERMISSION_DENIED: Permission 'run.services.update' denied on resource 'projects/{rng.choice(WORDS)}-prod/locations/europe-west1/services/{rng.choice(SERVICES)}' (or resource may not exist)."],
        ["│ Error: Error acquiring the state lock", f"│ Error message: AccessDenied: User is not authorized to perform: dynamodb:PutItem on resource: arn:aws:dynamodb:eu-west-1:{rng.randint(10**11, 10**12 - 1)}:table/tf-locks"],
    ])
    return StepOutput(rng.choice(["terraform apply -auto-approve", "aws lambda update-function-code", "gcloud run deploy"]), lines)


# --------------------------------------------------------------------------- UNKNOWN

@family("bare-exit", FC.UNKNOWN, "shell")
def _bare_exit(rng: random.Random) -> StepOutput:
    lines = [f"{rng.choice(['Generating', 'Packaging', 'Uploading', 'Rendering'])} {rng.choice(WORDS)} {rng.choice(WORDS)}..." for _ in range(rng.randint(1, 4))]
    return StepOutput(f"./scripts/{rng.choice(['package', 'publish', 'render'])}.sh", lines, exit_code=rng.choice([1, 2, 3, 42]))


@family("custom-check", FC.UNKNOWN, "shell")
def _custom_check(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        [f"Checking changelog entry for {rng.choice(SERVICES)}...", f"CHANGELOG.md has no entry for v{version(rng)}"],
        [f"Comparing bundle size: {rng.randint(200, 900)} kB (limit {rng.randint(100, 199)} kB)", "Bundle size budget exceeded"],
        ["Verifying generated files are up to date", f"diff --git a/gen/{rng.choice(WORDS)}.pb.go b/gen/{rng.choice(WORDS)}.pb.go", "Generated code is out of date; run make generate"],
        [f"coverage: {rng.uniform(40, 79):.1f}% of statements", f"Coverage {rng.uniform(40, 79):.1f}% is below the required 80%"],
    ])
    return StepOutput(rng.choice(["make check", "./ci/verify.sh", "npm run size"]), lines)


@family("app-crash", FC.UNKNOWN, "shell")
def _app_crash(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        [f"Starting {rng.choice(SERVICES)} smoke run", "Segmentation fault (core dumped)"],
        ["Traceback (most recent call last):", f'  File "/app/{rng.choice(WORDS)}/report.py", line {rng.randint(5, 300)}, in render',
         f"    row[\"{rng.choice(WORDS)}\"] / total", "ZeroDivisionError: division by zero"],
        [f"thread 'main' panicked at src/main.rs:{rng.randint(1, 300)}:{rng.randint(1, 40)}:", "called `Option::unwrap()` on a `None` value"],
        [f"Exception in thread \"main\" java.lang.IllegalStateException: {rng.choice(WORDS)} not initialised", f"\tat com.acme.{camel(rng)}.run({camel(rng)}.java:{rng.randint(5, 300)})"],
    ])
    return StepOutput(rng.choice(["./bin/smoke", "python -m app.report", "java -jar app.jar"]), lines, exit_code=rng.choice([1, 134, 139]))


@family("make-error-only", FC.UNKNOWN, "make")
def _make_only(rng: random.Random) -> StepOutput:
    target = rng.choice(["release", "publish", "docs", "bundle", "dist"])
    lines = [f"make[1]: Entering directory '/builds/acme/{rng.choice(SERVICES)}'", f"./tools/{rng.choice(WORDS)}-{target} --out dist/",
             f"make[1]: *** [Makefile:{rng.randint(5, 200)}: {target}] Error {rng.randint(1, 3)}", f"make: *** [Makefile:{rng.randint(5, 200)}: all] Error 2"]
    return StepOutput(f"make {target}", lines, exit_code=2)


@family("script-assert", FC.UNKNOWN, "shell")
def _script_assert(rng: random.Random) -> StepOutput:
    lines = rng.choice([
        [f"Release {version(rng)} already published; refusing to overwrite"],
        [f"Expected 3 artifacts in dist/, found {rng.randint(0, 2)}"],
        [f"ERROR: {rng.choice(WORDS)} manifest mismatch between staging and production"],
        ["Aborting: working tree has uncommitted changes after build", f" M {_path(rng, 'lock')}"],
    ])
    return StepOutput(rng.choice(["./ci/publish.sh", "python tools/release.py"]), lines)
