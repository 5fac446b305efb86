"""Fuzz every RPC of every service, through the gateway and directly (issue 15).

The RPCs are enumerated from the generated descriptors; each gets FUZZ calls (default
200) drawn by hypothesis from its request type's descriptor, field by field, plus bodies
that do not decode (garbage, truncated encodings, invalid UTF-8 in a string field), as an
operator, a platform admin and a service, each call with a freshly minted token (so the
threat detector's lockouts and revocations of one probe do not blind the next).

Invariants, per RPC:
- no INTERNAL and no UNKNOWN;
- every INVALID_ARGUMENT carries a google.rpc.BadRequest naming a field, and every
  message is bounded;
- no mesh process died or was restarted;
- when every call was refused, no store changed (a digest of every SQLite store's rows,
  the defence's own records aside), and the audit log verifies offline afterwards;
- a bystander's ordinary calls on its own connection, in parallel, all succeed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from deploy.heal_examples import EXAMPLES, failure_report
from deploy.mesh import SERVICES
from healing_guard.audit.v1 import audit_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.planner.v1 import planner_pb2
from healing_guard.predictor.v1 import predictor_pb2
from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.contracts import SERVICE_NAMES
from tests.reliability.conftest import FUZZ
from tests.reliability.harness import Harness, record_result, start_heal
from tests.reliability.strategies import oversized, raw_bodies, requests

pytestmark = pytest.mark.integration

MODULES = (tenancy_pb2, audit_pb2, predictor_pb2, planner_pb2, detector_pb2, coordinator_pb2)
CALL_TIMEOUT = 15.0
STREAM_WAIT_S = 0.15  # a server stream still open after this was accepted; cancel it
MAX_DETAILS_BYTES = 4096
IN_FLIGHT = 3  # calls of one RPC's round in flight at once
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _methods() -> list[tuple[str, MethodDescriptor]]:
    found = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            short = service.full_name.split(".")[1]
            assert SERVICE_NAMES[short] == service.full_name
            found.extend((short, method) for method in service.methods)
    return found


METHODS = _methods()
STATS: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "codes": Counter(), "routes": Counter()})


@dataclass
class Bystander:
    """Another client, on its own connection, making ordinary calls throughout."""

    harness: Harness
    token: str
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with self.harness.client(self.token) as client:
            ordinary = [
                lambda: client.detector.ListClusters(detector_pb2.ListClustersRequest(), metadata=client.metadata,
                                                     timeout=10),
                lambda: client.audit.GetSignedTreeHead(audit_pb2.GetSignedTreeHeadRequest(), metadata=client.metadata,
                                                       timeout=10),
                lambda: client.coordinator.Leader(coordinator_pb2.LeaderRequest(), metadata=client.metadata,
                                                  timeout=10),
                lambda: client.planner.GetPolicy(planner_pb2.GetPolicyRequest(), metadata=client.metadata,
                                                 timeout=10),
            ]
            while not self._stop.wait(0.05):
                call = ordinary[self.calls % len(ordinary)]
                self.calls += 1
                try:
                    call()
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code().name}: {(error.details() or '')[:160]}")

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture(scope="module")
def bystander(harness: Harness, heal_tenant: str) -> Iterator[Bystander]:
    watcher = Bystander(harness, harness.mint("bystander", heal_tenant, ["operator", "viewer"]))
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    yield watcher
    watcher.stop()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def known(harness: Harness, fuzz_tenant: str) -> list[str]:
    """Values the services know, so fuzzed requests also get past the first checks: the
    fuzz tenant, and one heal of it (failure, plan, actions)."""
    manifest = json.loads((EXAMPLES / "manifest.json").read_text())
    example = next(e for e in manifest if "oom" in e["file"])
    report = failure_report(example)
    report.tenant_id = fuzz_tenant
    with harness.client(harness.mint("fuzz-seed", fuzz_tenant, ["operator", "viewer"])) as client:
        answer = start_heal(client, report, (EXAMPLES / example["file"]).read_bytes())
        values = [fuzz_tenant, "platform", answer.diagnosis.failure_id, answer.plan.plan_id, *answer.action_ids,
                  example["repository"], example["pipeline"], report.job.run_id]
        _wait_settled(client, answer.plan.plan_id)
    return [v for v in values if v]


def _wait_settled(client, plan_id: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    from deploy.heal_examples import wait_for_actions

    if plan_id:
        wait_for_actions(client, plan_id, timeout)


@pytest.fixture(scope="module", autouse=True)
def report_fuzz_results() -> Iterator[None]:
    yield
    if STATS:
        total = Counter()
        for stats in STATS.values():
            total.update(stats["codes"])
        record_result("fuzz", {
            "calls_per_rpc_requested": FUZZ,
            "rpcs": len(STATS),
            "total_calls": sum(s["calls"] for s in STATS.values()),
            "codes_total": dict(total.most_common()),
            "per_rpc": {name: {"calls": s["calls"], "codes": dict(s["codes"].most_common()),
                               "routes": dict(s["routes"])} for name, s in sorted(STATS.items())},
        })


# -- one call -----------------------------------------------------------------------------------
@dataclass
class Answer:
    code: str  # a grpc.StatusCode name, or "OPEN" for a server stream still streaming
    details: str = ""
    violations: list[str] = field(default_factory=list)  # what the answer itself breaks


def _check_status(error: grpc.RpcError) -> list[str]:
    problems = []
    details = error.details() or ""
    if len(details.encode()) > MAX_DETAILS_BYTES:
        problems.append(f"message of {len(details.encode())} bytes (over {MAX_DETAILS_BYTES})")
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
        status = rpc_status.from_call(error)
        fields = []
        for detail in status.details if status is not None else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields.extend(v.field for v in bad.field_violations if v.field)
        if not fields:
            problems.append("INVALID_ARGUMENT without a BadRequest naming the field")
    return problems


def call(channel: grpc.Channel, path: str, method: MethodDescriptor, bodies: list[bytes],
         metadata: tuple[tuple[str, str], ...]) -> Answer:
    try:
        if method.server_streaming:
            stream = (channel.stream_stream(path)(iter(bodies), metadata=metadata, timeout=CALL_TIMEOUT)
                      if method.client_streaming else
                      channel.unary_stream(path)(bodies[0], metadata=metadata, timeout=CALL_TIMEOUT))
            done = threading.Event()
            stream.add_done_callback(lambda *_: done.set())
            if not done.wait(STREAM_WAIT_S):
                stream.cancel()
                return Answer("OPEN")
            code = stream.code()
            if code is grpc.StatusCode.OK:
                return Answer("OK")
            raise stream  # type: ignore[misc]  # a finished stream is its own RpcError
        if method.client_streaming:
            channel.stream_unary(path)(iter(bodies), metadata=metadata, timeout=CALL_TIMEOUT)
        else:
            channel.unary_unary(path)(bodies[0], metadata=metadata, timeout=CALL_TIMEOUT)
        return Answer("OK")
    except grpc.RpcError as error:
        answer = Answer(error.code().name, error.details() or "", _check_status(error))
        if error.code() in FORBIDDEN:
            answer.violations.append(f"{error.code().name}: {answer.details[:200]}")
        return answer


def _clip(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# -- the fuzz round of one RPC ---------------------------------------------------------------------
IDENTITIES = ("operator", "admin", "service")
ROUTES = ("gateway", "direct")


@pytest.mark.timeout(max(300, FUZZ // 5))
@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
def test_fuzz_rpc(harness: Harness, bystander: Bystander, known: list[str], fuzz_tenant: str, tmp_path: Path,
                  service: str, method: MethodDescriptor) -> None:
    name = f"{service}.{method.name}"
    path = f"/{method.containing_service.full_name}/{method.name}"
    stats = STATS[name]
    _keep_active(harness, fuzz_tenant)
    problems: list[str] = []
    accepted = 0
    before = harness.digests()
    restarts_before = _restarts(harness)
    bystander_failures = len(bystander.failures)

    def token_for(identity: str, caller: str) -> str:
        if identity == "operator":
            return harness.mint(f"fuzz-op-{uuid.uuid4().hex[:8]}", fuzz_tenant, ["operator", "viewer"])
        if identity == "admin":
            return harness.mint(f"fuzz-admin-{uuid.uuid4().hex[:8]}", "platform", ["admin", "viewer"])
        return harness.mint(caller, "*", ["service"])

    message = requests(method.input_type, known)
    bodies = st.one_of(
        st.lists(message, min_size=1, max_size=3).map(lambda ms: [m.SerializeToString() for m in ms]),
        st.lists(message, min_size=1, max_size=3).map(lambda ms: [m.SerializeToString() for m in ms]),
        st.lists(message, min_size=1, max_size=3).map(lambda ms: [m.SerializeToString() for m in ms]),
        st.lists(raw_bodies(method.input_type), min_size=1, max_size=2),
        st.tuples(message, raw_bodies(method.input_type)).map(lambda p: [p[0].SerializeToString(), p[1]]),
    )

    @settings(max_examples=FUZZ, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(bodies=bodies, route=st.sampled_from(ROUTES), identity=st.sampled_from(IDENTITIES),
           caller=st.sampled_from(SERVICES))
    def one(bodies: list[bytes], route: str, identity: str, caller: str) -> None:
        if not method.client_streaming:
            bodies = bodies[:1]
        where = "gateway" if route == "gateway" else service
        cert = caller if identity == "service" and route == "direct" else "operator"
        metadata = (("authorization", f"Bearer {token_for(identity, caller)}"),)
        channel = harness.channel(where, cert)
        in_flight.acquire()  # the next body is drawn while up to IN_FLIGHT calls are answered

        def send() -> None:
            try:
                record(call(channel, path, method, bodies, metadata), route, identity, bodies)
            finally:
                in_flight.release()

        pending.append(pool.submit(send))

    lock = threading.Lock()
    in_flight = threading.BoundedSemaphore(IN_FLIGHT)
    pending: list[Future[None]] = []

    def record(answer: Answer, route: str, identity: str, what: str | list[bytes]) -> None:
        with lock:
            _record(answer, route, identity, what)

    def _record(answer: Answer, route: str, identity: str, what: str | list[bytes]) -> None:
        nonlocal accepted
        stats["calls"] += 1
        stats["codes"][answer.code] += 1
        stats["routes"][f"{route}/{identity}"] += 1
        if answer.code in ("OK", "OPEN"):
            accepted += 1
        if answer.violations and len(problems) < 50:
            shown = what if isinstance(what, str) else _clip([body[:400] for body in what])
            problems.extend(f"{route}/{identity}: {v} <- {shown}" for v in answer.violations)

    huge = oversized(method.input_type).SerializeToString()
    for route in ROUTES:
        for identity in ("operator", "admin"):
            metadata = (("authorization", f"Bearer {token_for(identity, 'detector')}"),)
            where = "gateway" if route == "gateway" else service
            record(call(harness.channel(where), path, method, [huge], metadata), route, identity,
                   f"every string field 1 MiB, every bytes field 4.5 MiB ({len(huge)} bytes)")
    with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="fuzz") as pool:
        one()
        for future in pending:
            future.result()
    alive = harness.alive()
    assert all(alive.values()), f"processes died while fuzzing {name}: {[n for n, up in alive.items() if not up]}"
    assert _restarts(harness) == restarts_before, f"the supervisor restarted a process while fuzzing {name}"
    assert not problems, f"{len(problems)} bad answers from {name}:\n" + "\n".join(problems[:12])
    new_failures = bystander.failures[bystander_failures:]
    assert not new_failures, f"{len(new_failures)} ordinary calls failed while fuzzing {name}: {new_failures[:5]}"
    if accepted == 0:
        time.sleep(0.2)
        after = harness.digests()
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"every call to {name} was refused, yet these stores changed: {changed}"


def test_the_audit_log_verifies_after_fuzzing(harness: Harness, tmp_path: Path) -> None:
    result = harness.verify_audit(tmp_path)
    record_result("fuzz_audit_verify", result)
    assert result["entries_verified"] == result["tree_size"]


def _keep_active(harness: Harness, tenant: str) -> None:
    """A fuzzed platform admin may well have suspended the fuzz tenant (SuspendTenant
    accepted): resume it, or every later round would only meet the suspension."""
    admin = harness.stubs(harness.tokens["admin"])
    current = admin.tenancy.GetTenant(tenancy_pb2.GetTenantRequest(tenant_id=tenant), metadata=admin.metadata,
                                      timeout=10)
    if current.state != tenancy_pb2.TENANT_STATE_ACTIVE:
        admin.tenancy.UpdateTenant(tenancy_pb2.UpdateTenantRequest(tenant=tenancy_pb2.Tenant(
            tenant_id=tenant, state=tenancy_pb2.TENANT_STATE_ACTIVE)), metadata=admin.metadata, timeout=10)


def _restarts(harness: Harness) -> dict[str, int]:
    state = json.loads((harness.mesh.run_dir / "supervisor.json").read_text())
    return {name: int(row["restarts"]) for name, row in state["processes"].items()}
