"""A labelled corpus of synthetic CI logs, written by this project.

`generate_corpus(seed)` returns `LogSample`s: the full job log as a GitHub Actions
or GitLab runner would show it (timestamps, groups, sections, ANSI colours,
progress bars, service containers interleaving), the failure class it shows, and
the *family* (the generator that wrote the failing step). Families are the unit of
an honest split: `family_folds` holds out whole families, so a score measures
whether a classifier generalises to a way of failing it has not seen.

Deterministic: the same seed gives byte-identical logs.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bench.corpus.families import FAMILIES, Family, StepOutput
from bench.corpus.noise import ESC, background_line, colour, setup_noise, sha
from services.common.vocabulary import FailureClass

__all__ = ["FAMILIES", "Family", "LogSample", "family_folds", "generate_corpus", "render_log"]

PROVIDERS = ("github_actions", "gitlab")


@dataclass(frozen=True)
class LogSample:
    text: str
    failure_class: FailureClass
    family: str
    toolchain: str
    provider: str


def _github(rng: random.Random, steps: list[list[str]], failing: StepOutput) -> list[str]:
    clock = datetime(2024, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), tzinfo=UTC)
    out: list[str] = []

    def emit(line: str) -> None:
        nonlocal clock
        clock += timedelta(milliseconds=rng.randint(0, 4000))
        out.append(f"{clock.strftime('%Y-%m-%dT%H:%M:%S')}.{rng.randint(0, 9999999):07d}Z {line}")

    emit(f"Current runner version: '2.{rng.randint(300, 320)}.{rng.randint(0, 3)}'")
    emit(f"Runner name: '{rng.choice(['GitHub Actions', 'ci-runner', 'build-box'])} {rng.randint(1, 99)}'")
    for n, step in enumerate(steps):
        emit(f"##[group]Run {rng.choice(['actions/checkout@v4', 'actions/setup-python@v5', 'actions/cache@v4', 'actions/setup-node@v4'])}" if n == 0
             else f"##[group]Run step {n}")
        for line in step:
            emit(line)
        emit("##[endgroup]")
    if failing.command:
        emit(f"##[group]Run {failing.command}")
        emit(f"{colour(rng, failing.command, '36;1')}")
        emit("shell: /usr/bin/bash -e {0}")
        emit("##[endgroup]")
    for line in failing.lines:
        emit(line)
    if failing.github_terminal:
        emit(failing.github_terminal)
    else:
        emit(f"##[error]Process completed with exit code {failing.exit_code}.")
    if rng.random() < 0.5:
        emit("Post job cleanup.")
        emit("[command]/usr/bin/git config --local --unset-all http.https://github.com/.extraheader")
    return out


def _gitlab(rng: random.Random, steps: list[list[str]], failing: StepOutput) -> list[str]:
    stamp = 1_700_000_000 + rng.randint(0, 30_000_000)
    out = [f"{ESC}[0KRunning with gitlab-runner 16.{rng.randint(0, 11)}.{rng.randint(0, 3)} ({sha(rng, 8)}){ESC}[0;m",
           f"{ESC}[0K  on {rng.choice(['shared', 'docker', 'k8s'])}-runner-{rng.randint(1, 40)} {sha(rng, 8)}, system ID: s_{sha(rng, 12)}{ESC}[0;m",
           f"section_start:{stamp}:prepare_executor\r{ESC}[0K{ESC}[0K{ESC}[36;1mPreparing the \"docker\" executor{ESC}[0;m"]
    for n, step in enumerate(steps):
        stamp += rng.randint(1, 60)
        out.append(f"section_start:{stamp}:step_{n}\r{ESC}[0K{ESC}[32;1m$ {rng.choice(['./ci/setup.sh', 'make deps', 'echo setup'])}{ESC}[0;m")
        out.extend(step)
        out.append(f"section_end:{stamp + rng.randint(1, 30)}:step_{n}\r{ESC}[0K")
    stamp += rng.randint(60, 600)
    out.append(f"section_start:{stamp}:step_script\r{ESC}[0K{ESC}[0K{ESC}[36;1mExecuting \"step_script\" stage of the job script{ESC}[0;m")
    if failing.command:
        out.append(f"{ESC}[32;1m$ {failing.command}{ESC}[0;m")
    out.extend(failing.lines)
    out.append(f"section_end:{stamp + rng.randint(1, 600)}:step_script\r{ESC}[0K")
    if rng.random() < 0.4:
        out.append(f"section_start:{stamp + 700}:upload_artifacts_on_failure\r{ESC}[0K{ESC}[0K{ESC}[36;1mUploading artifacts for failed job{ESC}[0;m")
        out.append(f"Uploading artifacts... {ESC}[0;33mWARNING: junit.xml: no matching files{ESC}[0;m")
    out.append(f"{ESC}[31;1m{failing.gitlab_terminal or f'ERROR: Job failed: exit code {failing.exit_code}'}{ESC}[0;m")
    return out


def render_log(rng: random.Random, fam: Family, provider: str) -> str:
    """One full job log: setup noise, the failing step (with interleaved noise), the runner's ending."""
    failing = fam.build(rng)
    if rng.random() < 0.3:
        # A service container keeps logging while the failing step runs.
        lines = list(failing.lines)
        for _ in range(rng.randint(1, 3)):
            lines.insert(rng.randint(0, max(0, len(lines) - 1)), background_line(rng))
        failing = StepOutput(failing.command, lines, failing.exit_code, failing.gitlab_terminal, failing.github_terminal)
    steps = setup_noise(rng, rng.randint(1, 6))
    framed = _github(rng, steps, failing) if provider == "github_actions" else _gitlab(rng, steps, failing)
    return "\n".join(framed) + "\n"


def generate_corpus(seed: int = 0, samples_per_family: int = 30,
                    families: list[Family] | None = None) -> list[LogSample]:
    """`samples_per_family` logs from every family, half per provider, deterministically from `seed`."""
    if samples_per_family < 1:
        raise ValueError(f"samples_per_family must be >= 1, got {samples_per_family}")
    samples: list[LogSample] = []
    for fam in families if families is not None else FAMILIES:
        rng = random.Random(f"{seed}:{fam.name}")
        for i in range(samples_per_family):
            provider = PROVIDERS[i % 2]
            samples.append(LogSample(render_log(rng, fam, provider), fam.failure_class, fam.name, fam.toolchain, provider))
    return samples


def family_folds(samples: list[LogSample], n_folds: int) -> list[tuple[list[int], list[int]]]:
    """Splits that hold out whole families: in fold k, the k-th family of every class is tested.

    Every class has families on both sides of every fold (each class has at least two
    families), so a fold asks: can a model that never saw this way of failing still
    name its class?
    """
    by_class: dict[FailureClass, list[str]] = defaultdict(list)
    for s in samples:
        if s.family not in by_class[s.failure_class]:
            by_class[s.failure_class].append(s.family)
    folds = []
    for k in range(n_folds):
        held_out = {fams[k % len(fams)] for fams in by_class.values()}
        train = [i for i, s in enumerate(samples) if s.family not in held_out]
        test = [i for i, s in enumerate(samples) if s.family in held_out]
        folds.append((train, test))
    return folds
