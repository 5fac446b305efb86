"""Fault tests: real etcd, real coordinator processes, real provider executors.

The coordinators run as two processes (their own, not the shared mesh's) against
their own etcd, with a loopback FakeGitHub and FakeGitLab in this process
(GITHUB_API_URL / GITLAB_URL in their environment), so every action goes through
the real GitHub or GitLab executor and the fakes count each re-run. Planner,
detector, predictor and audit are loopback stand-ins that count deliveries.

HG_FAILOVER_ROUNDS sets how many times the leader is killed (default 20).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
from services.coordinator.actions import ActionState
from tests.fakes.providers import FakeGitHub, FakeGitLab
from tests.integration.coordinator_support import ROOT, EtcdServer, OutcomeReceivers, free_port, terminate

pytestmark = pytest.mark.integration
S = ActionState
TTL = 2
ROUNDS = int(os.environ.get("HG_FAILOVER_ROUNDS", "20"))
REPO = "acme/web"


class Cluster:
    """etcd + N coordinator processes + provider fakes + outcome receivers, in one folder."""

    def __init__(self, folder: Path, replicas: int = 2) -> None:
        from deploy.pki.make_pki import make_pki
        from services.common.tokens import load_signer

        self.folder = folder
        self.pki = make_pki(folder / "pki")
        signer = load_signer(self.pki.signing_key, self.pki.jwks)
        self.token_file = folder / "coordinator.jwt"
        self.token_file.write_text(signer.mint(subject="coordinator", tenant="*", roles=["service"],
                                               ttl_seconds=3600))
        self.client_token = signer.mint(subject="planner", tenant="*", roles=["service"], ttl_seconds=3600)
        self.etcd = EtcdServer(folder / "etcd").start()
        self.receivers = OutcomeReceivers(self.pki.out_dir).start()
        self.github = FakeGitHub().start()
        self.gitlab = FakeGitLab().start()
        self.names = [f"coordinator-{i}" for i in range(1, replicas + 1)]
        self.ports = {name: free_port() for name in self.names}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.channels: dict[str, grpc.Channel] = {}
        self.run_ids = itertools.count(1000)
        for name in self.names:
            self.start(name)
        for name in self.names:
            self.wait_serving(name)

    def env(self, name: str) -> dict[str, str]:
        return {
            **os.environ, "PYTHONPATH": str(ROOT), "HG_LISTEN": f"127.0.0.1:{self.ports[name]}",
            "HG_PKI_DIR": str(self.pki.out_dir), "HG_DATA_DIR": str(self.folder / name),
            "HG_SERVICE_TOKEN_FILE": str(self.token_file), "HG_ETCD_ENDPOINT": self.etcd.endpoint,
            "HG_REPLICA_ID": name, "HG_SETTING_LEASE_TTL_SECONDS": str(TTL), "HG_LOG_LEVEL": "INFO",
            "GITHUB_API_URL": self.github.base_url, "GITHUB_TOKEN": self.github.token,
            "GITLAB_URL": self.gitlab.base_url, "GITLAB_TOKEN": self.gitlab.token,
            "PROVIDER_HTTP_TIMEOUT_SECONDS": "10", **self.receivers.env(),
        }

    def start(self, name: str) -> None:
        with open(self.folder / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "services.coordinator"], cwd=ROOT, env=self.env(name),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        terminate(self.processes[name], sig)

    def stub(self, name: str) -> coordinator_pb2_grpc.CoordinatorStub:
        if name not in self.channels:
            credentials = grpc.ssl_channel_credentials(self.pki.ca.read_bytes(), self.pki.key("planner").read_bytes(),
                                                       self.pki.cert("planner").read_bytes())
            self.channels[name] = grpc.secure_channel(
                f"127.0.0.1:{self.ports[name]}", credentials,
                options=[("grpc.ssl_target_name_override", "coordinator.healing-guard.local")])
        return coordinator_pb2_grpc.CoordinatorStub(self.channels[name])

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.client_token}"),)

    def alive(self) -> list[str]:
        return [n for n in self.names if self.processes[n].poll() is None]

    def wait_serving(self, name: str, timeout: float = 30) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.folder / f'{name}.log'}")
            try:
                self.stub(name)  # opens the channel
                reply = health_pb2_grpc.HealthStub(self.channels[name]).Check(health_pb2.HealthCheckRequest(),
                                                                               timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as error:
                last = error.code().name
            time.sleep(0.1)
        raise TimeoutError(f"{name} not SERVING within {timeout} s ({last})")

    def leader(self, timeout: float = 15, exclude: str = "") -> tuple[str, int]:
        """(name, term) of the elected leader, as the replicas report it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in self.alive():
                try:
                    reply = self.stub(name).Leader(coordinator_pb2.LeaderRequest(), metadata=self.metadata, timeout=2)
                except grpc.RpcError:
                    continue
                if reply.leader_id and reply.leader_id != exclude and reply.leader_id in self.alive():
                    return reply.leader_id, reply.term
            time.sleep(0.05)
        raise TimeoutError(f"no leader (other than {exclude!r}) within {timeout} s")

    def call(self, method: str, request: object, timeout: float = 30) -> object:
        """Call any live replica, moving on from one that is down (bounded)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name in self.alive():
                try:
                    return getattr(self.stub(name), method)(request, metadata=self.metadata, timeout=5)
                except grpc.RpcError as error:
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    last = error
            time.sleep(0.1)
        raise TimeoutError(f"{method} not answered within {timeout} s: {last}")

    def github_plan(self, tenant: str = "acme") -> tuple[str, int]:
        run_id = next(self.run_ids)
        self.github.add_run(REPO, run_id, run_attempt=1, conclusion="failure")
        return self._plan(tenant, common_pb2.PROVIDER_GITHUB_ACTIONS, {"repository": REPO, "run_id": str(run_id),
                                                                        "run_attempt": "1"}, f"gh-{run_id}"), run_id

    def gitlab_plan(self, tenant: str = "acme") -> tuple[str, int]:
        job_id = next(self.run_ids)
        self.gitlab.add_pipeline(7, job_id, jobs=[{"id": job_id, "name": "test", "status": "failed"}])
        return self._plan(tenant, common_pb2.PROVIDER_GITLAB, {"project_id": "7", "job_id": str(job_id)},
                          f"gl-{job_id}"), job_id

    def _plan(self, tenant: str, provider: int, parameters: dict[str, str], plan_id: str) -> str:
        action = common_pb2.Action(kind=common_pb2.RETRY, idempotency_key=f"{plan_id}/retry", parameters=parameters)
        request = coordinator_pb2.SubmitPlanRequest(tenant_id=tenant, plan=common_pb2.HealingPlan(
            plan_id=plan_id, tenant_id=tenant, failure_id=f"f-{plan_id}", actions=[action],
            job=common_pb2.JobRef(provider=provider, repository=REPO, run_id=plan_id, attempt=1)))
        reply = self.call("SubmitPlan", request)
        return reply.action_ids[0]  # type: ignore[attr-defined]

    def action(self, action_id: str) -> coordinator_pb2.ActionRecord:
        return self.call("GetAction", coordinator_pb2.GetActionRequest(action_id=action_id))  # type: ignore[return-value]

    def wait_done(self, action_ids: list[str], timeout: float) -> dict[str, coordinator_pb2.ActionRecord]:
        deadline = time.monotonic() + timeout
        pending = list(action_ids)
        done: dict[str, coordinator_pb2.ActionRecord] = {}
        while pending and time.monotonic() < deadline:
            record = self.action(pending[0])
            if record.state in (S.ACTION_STATE_SUCCEEDED, S.ACTION_STATE_FAILED) and \
                    self.receivers.count("audit:OUTCOME", record.action_id):
                done[pending.pop(0)] = record
            else:
                time.sleep(0.1)
        if pending:
            last = self.action(pending[0])
            raise AssertionError(f"{len(pending)} of {len(action_ids)} actions not done within {timeout} s; "
                                 f"first: {pending[0]} {S(last.state).name} {last.detail!r}")
        return done

    def stop(self) -> None:
        for channel in self.channels.values():
            channel.close()
        for name in self.names:
            self.kill(name, signal.SIGTERM)
        self.github.stop()
        self.gitlab.stop()
        self.receivers.stop()
        self.etcd.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("coordinator-faults"))
    try:
        yield cluster
    finally:
        cluster.stop()
        if os.environ.get("HG_KEEP_LOGS"):
            import shutil
            shutil.copytree(cluster.folder, Path(os.environ["HG_KEEP_LOGS"]) / "coordinator-faults",
                            dirs_exist_ok=True, ignore=shutil.ignore_patterns("etcd", "pki"))


@pytest.fixture(autouse=True)
def calm_providers(cluster: Cluster) -> Iterator[None]:
    yield
    cluster.github.set_delay(0.0)
    cluster.gitlab.set_delay(0.0)
    for name in cluster.names:  # every test leaves both replicas running
        if cluster.processes[name].poll() is not None:
            cluster.start(name)
    for name in cluster.names:
        cluster.wait_serving(name)


def reruns(cluster: Cluster, run_id: int) -> int:
    return cluster.github.count("POST", f"/repos/{REPO}/actions/runs/{run_id}/rerun-failed-jobs")


class Stream:
    """Submits a GitHub plan every `interval` seconds in the background until stopped."""

    def __init__(self, cluster: Cluster, interval: float) -> None:
        self.cluster, self.interval = cluster, interval
        self.submitted: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tenants = itertools.cycle(["acme", "globex", "initech"])
        while not self._stop.is_set():
            try:
                self.submitted.append(self.cluster.github_plan(next(tenants)))
            except Exception as error:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(error))
            self._stop.wait(self.interval)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_leader_killed_repeatedly_mid_dispatch_loses_and_repeats_nothing(cluster: Cluster) -> None:
    cluster.github.set_delay(0.15)   # every provider call takes a while: kills land mid-action
    rng = random.Random(6)
    terms: list[int] = []
    with Stream(cluster, interval=0.1) as stream:
        for _ in range(ROUNDS):
            leader, term = cluster.leader()
            terms.append(term)
            calls = len(cluster.github.calls)
            wait_until(lambda calls=calls: len(cluster.github.calls) > calls, 15, f"{leader} (term {term}) to dispatch")
            time.sleep(rng.uniform(0.0, 0.4))
            cluster.kill(leader, signal.SIGKILL)
            cluster.start(leader)
            cluster.leader(exclude=leader)      # the other replica takes over...
            cluster.wait_serving(leader)        # ...while the killed one comes back as a follower
    assert not stream.errors, stream.errors[:3]
    assert len(set(terms)) == ROUNDS, "every round had a new leader term"
    assert len(stream.submitted) > ROUNDS
    done = cluster.wait_done([action_id for action_id, _ in stream.submitted], timeout=90)
    assert {S(r.state).name for r in done.values()} == {"ACTION_STATE_SUCCEEDED"}
    rerun_counts = {run_id: reruns(cluster, run_id) for _, run_id in stream.submitted}
    assert set(rerun_counts.values()) == {1}, {k: v for k, v in rerun_counts.items() if v != 1}
    assert all(cluster.github.run(run_id)["run_attempt"] == 2 for _, run_id in stream.submitted)
    # Every outcome reached planner and audit; a kill between a delivery and its record
    # can repeat one to the (idempotent) receivers, never lose one.
    for action_id, _ in stream.submitted:
        assert cluster.receivers.count("planner", action_id) >= 1
        assert cluster.receivers.count("audit:OUTCOME", action_id) >= 1
    repeated = sum(cluster.receivers.count("audit:OUTCOME", a) - 1 for a, _ in stream.submitted)
    print(f"\n{ROUNDS} leader kills, {len(stream.submitted)} actions, each re-run once; "
          f"{repeated} audit OUTCOME entries repeated by a kill between delivery and its record")


def test_a_coordinator_killed_mid_action_is_reclaimed_and_completes_once(cluster: Cluster) -> None:
    cluster.github.set_delay(1.0)   # the re-run request is in flight for a second
    action_id, run_id = cluster.github_plan()
    leader, _ = cluster.leader()
    wait_until(lambda: cluster.action(action_id).state == S.ACTION_STATE_CLAIMED, 10, "the action to be claimed")
    assert cluster.action(action_id).executor_id == leader
    time.sleep(0.5)
    cluster.kill(leader, signal.SIGKILL)
    record = cluster.wait_done([action_id], timeout=TTL + 20)[action_id]
    assert record.state == S.ACTION_STATE_SUCCEEDED
    assert record.attempts == 2 and record.dispatched_by != leader
    assert reruns(cluster, run_id) == 1
    assert cluster.receivers.count("audit:OUTCOME", action_id) == 1


def test_etcd_restart_loses_nothing_acknowledged_and_needs_no_operator(cluster: Cluster) -> None:
    cluster.github.set_delay(0.3)
    before = [cluster.github_plan() for _ in range(6)]
    cluster.etcd.stop(signal.SIGKILL)
    time.sleep(TTL + 1)  # long enough for the leader to step down
    cluster.etcd.start()
    after = [cluster.github_plan() for _ in range(3)]  # retried by `call` until etcd answers
    done = cluster.wait_done([a for a, _ in before + after], timeout=60)
    assert {S(r.state).name for r in done.values()} == {"ACTION_STATE_SUCCEEDED"}
    assert {reruns(cluster, run_id) for _, run_id in before + after} == {1}
    assert sorted(cluster.alive()) == sorted(cluster.names)
    cluster.leader()


def test_a_slow_provider_does_not_hold_up_another(cluster: Cluster) -> None:
    cluster.github.set_delay(4.0)        # every GitHub answer takes 4 s
    slow = [cluster.github_plan() for _ in range(8)]   # more than the leader's GitHub workers
    time.sleep(0.5)
    quick = [cluster.gitlab_plan() for _ in range(3)]
    cluster.wait_done([a for a, _ in quick], timeout=15)
    unfinished = [a for a, _ in slow if cluster.action(a).state != S.ACTION_STATE_SUCCEEDED]
    assert unfinished, "GitLab's actions finished only after every GitHub action"
    assert all(cluster.gitlab.count("POST", f"/api/v4/projects/7/jobs/{job_id}/retry") == 1 for _, job_id in quick)
    cluster.github.set_delay(0.0)
    cluster.wait_done([a for a, _ in slow], timeout=60)
    assert {reruns(cluster, run_id) for _, run_id in slow} == {1}
