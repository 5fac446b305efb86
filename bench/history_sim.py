"""A seeded synthetic CI run history with its ground truth, for evaluating the predictor.

Many pipelines of a few tenants over several weeks, with what makes real CI history
hard: load that follows the working day and week (queue times, a little slowness),
flaky tests that appear, get worse and go away, memory leaks that creep toward the
job's limit and end in out-of-memory failures until someone fixes them, tenant-wide
dependency outages (a registry down for a few hours), genuine bug bursts (a bad commit
that fails until reverted), slow duration drift, and rare point anomalies (a slow
runner, a stuck queue, a memory spike). The ground truth says which runs were injected
anomalies and which episodes were active when.

Run `python -m bench.history_sim` for a summary of one generated history.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from services.common.vocabulary import FailureClass
from services.predictor.history import RunKey, RunRecord, RunResult

DAY = 86_400.0
HOUR = 3_600.0
# Monday 2026-01-05 00:00 UTC: weeks start on Mondays, which makes weekday maths readable.
EPOCH = 1_767_571_200.0
DEPENDENCIES = ("pypi.org", "registry.npmjs.org", "repo.maven.apache.org", "ghcr.io", "proxy.golang.org")
LEAK_ANOMALY_EXCESS = 0.25  # a leaked job is an anomaly once it uses 25 points of its limit above normal
LEAK_AMBIGUOUS_EXCESS = 0.08  # between 8 and 25 points it is neither clearly normal nor anomalous


@dataclass
class SimConfig:
    seed: int = 7
    tenants: int = 2
    pipelines_per_tenant: int = 25
    days: int = 56
    start: float = EPOCH
    point_anomaly_rate: float = 0.006
    outages_per_week: float = 1.4
    bug_bursts_per_week: float = 0.6
    flaky_episodes_per_week: float = 0.45
    leaks_per_week: float = 0.08


@dataclass
class Episode:
    kind: str  # "flaky", "leak", "outage", "bug", "drift"
    tenant: str
    repository: str
    pipeline: str
    job: str
    start: float
    end: float
    detail: str  # test name, dependency, ...


@dataclass
class SimHistory:
    runs: list[RunRecord]
    anomalies: dict[RunKey, str]  # injected anomaly kind per run
    ambiguous: set[RunKey]  # early leak runs: neither counted as hit nor as false alarm
    episodes: list[Episode]
    config: SimConfig
    end: float = 0.0


def load_factor(t: float) -> float:
    """How busy CI is at time t: 1 in working hours on weekdays, low at night and weekends."""
    hour = (t % DAY) / HOUR
    weekday = int((t - EPOCH) // DAY) % 7
    daytime = math.exp(-((hour - 13.0) ** 2) / (2 * 3.0**2))  # peaks early afternoon UTC
    base = 0.08 + 0.92 * daytime
    return base * (0.2 if weekday >= 5 else 1.0)


@dataclass
class _Job:
    name: str
    duration_s: float
    queue_s: float
    memory_limit_mb: float
    memory_fraction: float
    tests_total: int
    tests: list[str]
    dependencies: list[str]
    fail_rate: float
    drift_per_day: float
    leak: float = 0.0  # memory fraction currently added by a leak
    leak_step: float = 0.0
    leak_ooms: int = 0
    leak_episode: Episode | None = None
    flaky: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # test -> (start, end, peak p)


@dataclass
class _Pipeline:
    tenant: str
    repository: str
    name: str
    runs_per_peak_hour: float
    jobs: list[_Job]
    bug_until: float = 0.0


def generate(config: SimConfig | None = None) -> SimHistory:
    config = config or SimConfig()
    rng = random.Random(config.seed)
    end = config.start + config.days * DAY
    weeks = config.days / 7.0
    runs: list[RunRecord] = []
    anomalies: dict[RunKey, str] = {}
    ambiguous: set[RunKey] = set()
    episodes: list[Episode] = []
    run_counter = 0

    for t_index in range(config.tenants):
        tenant = f"tenant-{t_index + 1}"
        outages: list[tuple[float, float, str]] = []
        for _ in range(_poisson(rng, config.outages_per_week * weeks)):
            begin = rng.uniform(config.start, end)
            length = rng.uniform(1.0, 4.0) * HOUR
            dep = rng.choice(DEPENDENCIES)
            outages.append((begin, begin + length, dep))
            episodes.append(Episode("outage", tenant, "", "", "", begin, begin + length, dep))
        pipelines = [_make_pipeline(rng, tenant, i) for i in range(config.pipelines_per_tenant)]
        for pipeline in pipelines:
            bug_starts = sorted(rng.uniform(config.start, end)
                                for _ in range(_poisson(rng, config.bug_bursts_per_week * weeks)))
            leak_starts = {job.name: sorted(rng.uniform(config.start, end)
                                            for _ in range(_poisson(rng, config.leaks_per_week * weeks)))
                           for job in pipeline.jobs}
            for job in pipeline.jobs:
                for _ in range(_poisson(rng, config.flaky_episodes_per_week * weeks)) if job.tests else ():
                    test = rng.choice(job.tests)
                    begin = rng.uniform(config.start, end)
                    length = rng.uniform(2.0, 12.0) * DAY
                    job.flaky[test] = (begin, begin + length, rng.uniform(0.08, 0.35))
                    episodes.append(Episode("flaky", tenant, pipeline.repository, pipeline.name, job.name,
                                            begin, begin + length, test))
                if job.drift_per_day > 0:
                    episodes.append(Episode("drift", tenant, pipeline.repository, pipeline.name, job.name,
                                            config.start, end, f"{job.drift_per_day:.3f}/day"))
            t = config.start
            peak_rate = pipeline.runs_per_peak_hour / HOUR
            while True:
                # Poisson arrivals with the load curve as intensity, by thinning.
                t += rng.expovariate(peak_rate)
                if t >= end:
                    break
                if rng.random() > load_factor(t):
                    continue
                while bug_starts and bug_starts[0] <= t:
                    begin = bug_starts.pop(0)
                    pipeline.bug_until = begin + rng.uniform(2.0, 30.0) * HOUR
                    episodes.append(Episode("bug", tenant, pipeline.repository, pipeline.name, "",
                                            begin, pipeline.bug_until, "bad commit"))
                run_counter += 1
                run_id = str(100_000 + run_counter)
                commit = f"{rng.getrandbits(40):010x}"
                cancelled = rng.random() < 0.02
                for job in pipeline.jobs:
                    starts = leak_starts[job.name]
                    if job.leak_step == 0.0 and starts and starts[0] <= t:
                        starts.pop(0)
                        job.leak_step = rng.uniform(0.012, 0.035)
                        job.leak_ooms = 0
                        job.leak_episode = Episode("leak", tenant, pipeline.repository, pipeline.name,
                                                   job.name, t, end, f"{job.leak_step:.3f}/run")
                        episodes.append(job.leak_episode)
                    record, kind, unclear = _run_job(rng, config, tenant, pipeline, job, run_id, commit, t,
                                                     outages, cancelled)
                    runs.append(record)
                    if kind:
                        anomalies[record.key] = kind
                    elif unclear:
                        ambiguous.add(record.key)
    runs.sort(key=lambda r: (r.started_at, r.run_id, r.job))
    return SimHistory(runs, anomalies, ambiguous, episodes, config, end)


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; means here are small.
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _make_pipeline(rng: random.Random, tenant: str, index: int) -> _Pipeline:
    repository = f"{tenant}/repo-{index // 3 + 1}"
    name = f"pipeline-{index + 1}"
    jobs: list[_Job] = []
    for job_name in (["build", "test"] if rng.random() < 0.5 else ["test"]):
        is_test = job_name == "test"
        tests_total = rng.randint(80, 900) if is_test else 0
        tests = [f"test_{rng.choice(['upload', 'login', 'cache', 'sync', 'parser', 'retry', 'export'])}_{i}"
                 for i in range(6)] if is_test else []
        jobs.append(_Job(
            name=job_name,
            duration_s=rng.uniform(4, 35) * 60,
            queue_s=rng.uniform(10, 60),
            memory_limit_mb=rng.choice([2048.0, 4096.0, 8192.0]),
            memory_fraction=rng.uniform(0.3, 0.6),
            tests_total=tests_total,
            tests=tests,
            dependencies=rng.sample(DEPENDENCIES, rng.randint(1, 3)),
            fail_rate=rng.uniform(0.005, 0.04),
            drift_per_day=rng.uniform(0.01, 0.02) if rng.random() < 0.15 else 0.0,
        ))
    return _Pipeline(tenant, repository, name, runs_per_peak_hour=rng.uniform(0.4, 1.6), jobs=jobs)


def _run_job(
    rng: random.Random, config: SimConfig, tenant: str, pipeline: _Pipeline, job: _Job, run_id: str,
    commit: str, t: float, outages: list[tuple[float, float, str]], cancelled: bool,
) -> tuple[RunRecord, str, bool]:
    load = load_factor(t)
    days_in = (t - config.start) / DAY
    drift = 1 + job.drift_per_day * days_in
    duration = job.duration_s * (1 + 0.15 * load) * drift * rng.lognormvariate(0, 0.07)
    queue = job.queue_s * (1 + 6 * load) * rng.lognormvariate(0, 0.25)
    memory = job.memory_fraction * rng.lognormvariate(0, 0.04)
    anomaly = ""
    if rng.random() < config.point_anomaly_rate:
        anomaly = rng.choice(["slow_runner", "stuck_queue", "memory_spike"])
        if anomaly == "slow_runner":
            duration *= rng.uniform(1.3, 4.0)
        elif anomaly == "stuck_queue":
            queue += rng.uniform(3, 90) * 60
        else:
            memory += rng.uniform(0.06, 0.5)
    leaked = job.leak
    memory += leaked
    unclear = False
    if job.leak_step > 0:
        job.leak += job.leak_step
        if leaked >= LEAK_ANOMALY_EXCESS and not anomaly:
            anomaly = "memory_leak"
        elif leaked >= LEAK_AMBIGUOUS_EXCESS:
            unclear = True
    failure = FailureClass.FAILURE_CLASS_UNSPECIFIED
    flaky: list[str] = []
    deps: list[str] = []
    tests_failed = 0
    if memory >= 1.0:
        failure = FailureClass.OUT_OF_MEMORY
        memory = 1.0
        duration *= rng.uniform(0.3, 0.9)
        if job.leak_step > 0 and leaked > 0:
            job.leak_ooms += 1
            if job.leak_ooms >= rng.randint(2, 4):  # someone notices and fixes the leak
                job.leak, job.leak_step = 0.0, 0.0
                if job.leak_episode is not None:
                    job.leak_episode.end = t
                    job.leak_episode = None
    else:
        for begin, finish, dep in outages:
            if begin <= t < finish and dep in job.dependencies and rng.random() < 0.65:
                failure, deps = FailureClass.DEPENDENCY_FETCH, [dep]
                duration = rng.uniform(30, 240)
                break
    if not failure and pipeline.bug_until > t and rng.random() < 0.75:
        failure = rng.choice([FailureClass.TEST_FAILURE, FailureClass.COMPILE_ERROR]) if job.tests \
            else FailureClass.COMPILE_ERROR
        tests_failed = rng.randint(1, 5) if failure == FailureClass.TEST_FAILURE else 0
    if not failure:
        for test, (begin, finish, peak) in job.flaky.items():
            if begin <= t < finish:
                # Flakiness worsens over the episode, as a test's hidden race gets hit more.
                p = peak * (0.3 + 0.7 * (t - begin) / (finish - begin))
                if rng.random() < p:
                    failure, flaky, tests_failed = FailureClass.FLAKY_TEST, [test], 1
                    break
    if not failure and rng.random() < job.fail_rate * (0.6 + 0.8 * load):
        failure = rng.choice([FailureClass.TEST_FAILURE, FailureClass.INFRASTRUCTURE, FailureClass.TIMEOUT])
        tests_failed = rng.randint(1, 3) if failure == FailureClass.TEST_FAILURE and job.tests else 0
    if cancelled:
        result = RunResult.RUN_RESULT_CANCELLED
        failure, flaky, deps, tests_failed = FailureClass.FAILURE_CLASS_UNSPECIFIED, [], [], 0
    else:
        result = RunResult.RUN_RESULT_FAILURE if failure else RunResult.RUN_RESULT_SUCCESS
    record = RunRecord(
        tenant=tenant, repository=pipeline.repository, pipeline=pipeline.name, job=job.name, run_id=run_id,
        attempt=1, commit=commit, branch="main", result=result, started_at=round(t + queue, 3),
        duration_s=round(duration, 3), queue_s=round(queue, 3),
        runner=f"runner-{rng.randint(1, 40)}", peak_memory_mb=round(memory * job.memory_limit_mb, 1),
        memory_limit_mb=job.memory_limit_mb, cache_hit=rng.random() < 0.8, tests_total=job.tests_total,
        tests_failed=min(tests_failed, job.tests_total), failure_class=failure, flaky_tests=flaky,
        failed_dependencies=deps,
    )
    return record, anomaly, unclear


def main() -> None:
    history = generate()
    failed = sum(r.failed for r in history.runs)
    kinds: dict[str, int] = {}
    for kind in history.anomalies.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    episodes: dict[str, int] = {}
    for episode in history.episodes:
        episodes[episode.kind] = episodes.get(episode.kind, 0) + 1
    print(f"runs {len(history.runs)}  failed {failed} ({failed / len(history.runs):.1%})")
    print(f"anomalies {len(history.anomalies)} {kinds}  ambiguous {len(history.ambiguous)}")
    print(f"episodes {episodes}")


if __name__ == "__main__":
    main()
