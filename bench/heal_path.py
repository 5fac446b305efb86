"""The heal path through the gateway, against a no-op service hop through the same gateway.

    .venv/bin/python -m bench.heal_path [--seconds 15] [--concurrency 4]

Starts its own mesh in a temp folder (real etcd, the six services with two
coordinator replicas, Envoy) plus `bench.echo_service` behind the SAME Envoy (an
extra cluster and route `/healing_guard.echo.v1.` added to the rendered gateway
config). Every call goes client → Envoy (mTLS, jwt_authn, per-tenant limiter) →
service (mTLS, JWT re-verified by the Guard, tracing interceptor). Then, in one run:

1. traces one heal of every sample in examples/ (a sampled traceparent forced at
   the gateway with x-client-trace-id; everything else is unsampled) and counts the
   client spans each service makes for it, including the asynchronous dispatch and
   outcome delivery, with etcd's own request counters for the calls tracing does
   not see;
2. drives the echo service for `--seconds` with `--concurrency` calls in flight;
3. measures the services' idle CPU for a few seconds;
4. drives Coordinator/HealFailure (diagnose_only=False: the coordinator's workflow of
   quota, diagnosis, forecast, plan and queue, each step recorded in etcd) for
   `--seconds`, each call a new run id, rotating over the samples, then waits until
   the coordinator has dispatched what was queued and delivered the outcomes, and
   reads every process's CPU (/proc/<pid>/stat).

Prints the table with the ratio and writes bench/results/heal_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import os
import platform
import re
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from bench import echo_service
from deploy.heal_examples import EXAMPLES, failure_report
from deploy.mesh import Mesh, _otlp_endpoint, free_port
from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "heal_path.json"
TENANT = "bench-heal"
HIGH_QUOTA = 100_000_000
CALL_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 120.0
SPAN_SETTLE_TIMEOUT_S = 30.0
IDLE_SECONDS = 4.0
DELIVERY_SETTLE_S = 1.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = {
    common_pb2.ACTION_STATE_SUCCEEDED,
    common_pb2.ACTION_STATE_FAILED,
    common_pb2.ACTION_STATE_SKIPPED,
    common_pb2.ACTION_STATE_CANCELLED,
}
GATEWAY_SERVICE = "healing-guard-gateway"


# --- the mesh, with the echo service behind the same Envoy --------------------------------


def make_echo_certificate(pki_dir: Path) -> None:
    """A server certificate for echo.healing-guard.local from the mesh's dev CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from deploy.pki.make_pki import _new_leaf, _write_cert, _write_key, identity

    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca-key.pem").read_bytes(), password=None)
    cert, key = _new_leaf(
        ca_cert,
        ca_key,
        identity(echo_service.NAME),  # type: ignore[arg-type]
        dns_names=["localhost", identity(echo_service.NAME)],
        ip_addresses=["127.0.0.1"],
        server=True,
    )
    _write_key(pki_dir / f"{echo_service.NAME}-key.pem", key)
    _write_cert(pki_dir / f"{echo_service.NAME}.pem", cert)


def add_echo_upstream(config: dict[str, Any], echo_port: int) -> dict[str, Any]:
    """The rendered gateway config plus a cluster and a route for the echo service.

    The cluster is the detector's cluster (same upstream mTLS, HTTP/2 options, health
    checks) with the echo service's name, address and identity; the route sits with
    the services' routes, so jwt_authn and the tenant limiter apply to it unchanged.
    """
    config = copy.deepcopy(config)
    resources = config["static_resources"]
    template = next(c for c in resources["clusters"] if c["name"] == "detector")
    echo = copy.deepcopy(template)
    identity = f"{echo_service.NAME}.healing-guard.local"
    echo["name"] = echo_service.NAME
    echo["load_assignment"] = {
        "cluster_name": echo_service.NAME,
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {"socket_address": {"address": "127.0.0.1", "port_value": echo_port}}
                        }
                    }
                ]
            }
        ],
    }
    tls = echo["transport_socket"]["typed_config"]
    tls["sni"] = identity
    tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "DNS", "matcher": {"exact": identity}}
    ]
    resources["clusters"].append(echo)
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    detector_route = next(r for r in routes if r["match"].get("prefix") == "/healing_guard.detector.v1.")
    echo_route = copy.deepcopy(detector_route)
    echo_route["match"]["prefix"] = "/healing_guard.echo.v1."
    echo_route["route"]["cluster"] = echo_service.NAME
    routes.append(echo_route)
    if "tracing" in manager:
        # Trace only what a client asks for (x-client-trace-id); the measured calls are not sampled.
        manager["tracing"]["random_sampling"] = {"value": 0}
        manager["tracing"]["client_sampling"] = {"value": 100}
    return config


@dataclass
class BenchMesh(Mesh):
    """The standard mesh; Envoy's config gains the echo upstream, and the echo service runs too."""

    tenant_bucket: int = 1_000_000

    def _start_envoy(self) -> None:
        from deploy.envoy.gateway import GatewaySpec, TokenBucket, render_gateway_config

        self.ports["echo"] = free_port()
        make_echo_certificate(self.pki_dir)
        env = self.service_env("detector")
        env.update(
            {
                "HG_LISTEN": self.service_address("echo"),
                "HG_DATA_DIR": str(self.run_dir / "data" / "echo"),
                "HG_REPLICA_ID": "echo",
            }
        )
        self._spawn("echo", [sys.executable, "-m", "bench.echo_service"], env)
        self.wait_serving(self.service_address("echo"), "echo", via_gateway=False)

        upstreams: dict[str, Any] = {
            name: [("127.0.0.1", self.ports[name])]
            for name in ("detector", "predictor", "planner", "tenancy", "audit")
        }
        upstreams["coordinator"] = [("127.0.0.1", self.ports[c]) for c in self.coordinator_names()]
        spec = GatewaySpec(
            listen_port=self.ports["gateway"],
            admin_port=self.ports["envoy-admin"],
            upstreams=upstreams,
            ca=self.pki.ca,
            cert=self.pki.cert("gateway"),
            key=self.pki.key("gateway"),
            jwks_path=self.pki.jwks,
            otlp_endpoint=_otlp_endpoint({**os.environ, **self.extra_env}),
            # Measure capacity, not the limiter (it still runs on every call). Both buckets: Envoy
            # consumes the default ("open") bucket for every request, tenant requests included.
            tenant_rate_limit=TokenBucket(self.tenant_bucket, self.tenant_bucket, 1.0),
            open_rate_limit=TokenBucket(self.tenant_bucket, self.tenant_bucket, 1.0),
        )
        config = add_echo_upstream(render_gateway_config(spec), self.ports["echo"])
        config_path = self.run_dir / "envoy.json"
        config_path.write_text(json.dumps(config, indent=1))
        base_id = self.envoy_base_id or (os.getpid() % 60000) + 1000
        self._spawn(
            "envoy",
            [
                str(Path(sys.executable).parent / "envoy"),
                "-c",
                str(config_path),
                "--base-id",
                str(base_id),
                "--log-level",
                "warn",
                "--concurrency",
                "1",
            ],
            {},
            detach=True,
        )


# --- a span receiver that keeps the span kind ----------------------------------------------


@dataclass
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int


class SpanReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP trace service on loopback (as tests/otlp_receiver.py), recording span kinds."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                received += [
                    Span(
                        service,
                        s.name,
                        s.kind,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        s.start_time_unix_nano,
                    )
                    for s in scope_spans.spans
                ]
        with self._lock:
            self._spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def start(self) -> SpanReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1)


# --- process CPU and etcd counters ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(mesh: Mesh) -> dict[str, float]:
    return {name: cpu_seconds(process.pid) for name, process in mesh.processes.items()}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_METRIC = re.compile(r"^(\w+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$")


def etcd_counters(mesh: Mesh) -> dict[str, float]:
    """etcd's own request counters: gRPC calls handled per method, mvcc ops, WAL fsyncs."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.ports['etcd']}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counters: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        if name == "grpc_server_handled_total":
            method = re.search(r'grpc_method="(\w+)"', labels or "")
            service = re.search(r'grpc_service="([\w.]+)"', labels or "")
            if method and service:
                counters[f"grpc {service.group(1).rsplit('.', 1)[-1]}/{method.group(1)}"] += float(value)
        elif name in (
            "etcd_mvcc_put_total",
            "etcd_mvcc_txn_total",
            "etcd_mvcc_range_total",
            "etcd_mvcc_delete_total",
            "etcd_disk_wal_fsync_duration_seconds_count",
        ):
            counters[name] += float(value)
    return dict(counters)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


# --- load ------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

        return {
            "calls": self.ok,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "calls_per_second": round(self.ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(pct(0.50), 2),
            "p90_ms": round(pct(0.90), 2),
            "p99_ms": round(pct(0.99), 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2) if ordered else float("nan"),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else float("nan"),
        }


async def drive(
    name: str,
    call: Callable[[int], Awaitable[str | None]],
    concurrency: int,
    seconds: float,
    counter: itertools.count,
) -> Run:
    """`concurrency` closed-loop callers for `seconds`; `call` returns None or a reason it was not OK."""
    run = Run(name)
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                problem = await call(next(counter))
            except grpc.aio.AioRpcError as error:
                problem = f"{error.code().name}: {(error.details() or '')[:120]}"
            if problem is None:
                run.latencies.append(time.perf_counter() - start)
            else:
                run.errors[problem] += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - start
    return run


class Bench:
    def __init__(self, mesh: BenchMesh, receiver: SpanReceiver, args: argparse.Namespace) -> None:
        self.mesh = mesh
        self.receiver = receiver
        self.args = args
        self.examples = json.loads((EXAMPLES / "manifest.json").read_text())
        self.templates = [self._template(e) for e in self.examples]
        self.run_prefix = f"bench-{secrets.token_hex(4)}"
        self.plans: list[str] = []
        self.failures: list[str] = []
        self.warnings: Counter[str] = Counter()

    @staticmethod
    def _template(example: dict[str, Any]) -> coordinator_pb2.HealFailureRequest:
        report = failure_report(example)
        report.diagnose_only = False  # the full path: plan and queue the actions
        return coordinator_pb2.HealFailureRequest(report=report, log=(EXAMPLES / example["file"]).read_bytes())

    def request(self, index: int, sample: int | None = None) -> coordinator_pb2.HealFailureRequest:
        request = coordinator_pb2.HealFailureRequest()
        request.CopyFrom(self.templates[index % len(self.templates) if sample is None else sample])
        request.report.job.run_id = f"{self.run_prefix}-{index}"
        return request

    async def setup(self) -> None:
        from services.common.tokens import load_signer

        pki = self.mesh.pki
        credentials = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.key("operator").read_bytes(), pki.cert("operator").read_bytes()
        )
        self.channel = grpc.aio.secure_channel(
            self.mesh.gateway_address,
            credentials,
            options=[
                ("grpc.max_send_message_length", 16 << 20),
                ("grpc.max_receive_message_length", 16 << 20),
            ],
        )
        self.coordinator = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.audit = audit_pb2_grpc.AuditStub(self.channel)
        self.echo = self.channel.unary_unary(echo_service.METHOD)
        admin = (("authorization", f"Bearer {self.mesh.admin_token}"),)
        tenancy = tenancy_pb2_grpc.TenancyStub(self.channel)
        await tenancy.CreateTenant(
            tenancy_pb2.CreateTenantRequest(
                tenant_id=TENANT, display_name="heal-path bench", plan="enterprise"
            ),
            metadata=admin,
            timeout=10,
        )
        for resource_kind in (tenancy_pb2.RESOURCE_FAILURES_PER_MINUTE, tenancy_pb2.RESOURCE_ACTIONS_PER_DAY):
            await tenancy.SetQuota(
                tenancy_pb2.SetQuotaRequest(tenant_id=TENANT, resource=resource_kind, limit=HIGH_QUOTA),
                metadata=admin,
                timeout=10,
            )
        signer = load_signer(pki.signing_key, pki.jwks)
        token = signer.mint(
            subject="bench", tenant=TENANT, roles=["operator", "viewer"], ttl_seconds=4 * 3600
        )
        self.metadata = (("authorization", f"Bearer {token}"),)

    # -- the two calls ---------------------------------------------------------------------
    async def heal(
        self, index: int, extra: tuple[tuple[str, str], ...] = (), sample: int | None = None
    ) -> str | None:
        answer = await self.coordinator.HealFailure(
            self.request(index, sample), metadata=self.metadata + extra, timeout=CALL_TIMEOUT_S
        )
        self.failures.append(answer.diagnosis.failure_id)
        if answer.plan.plan_id:
            self.plans.append(answer.plan.plan_id)
        for warning in answer.warnings:
            self.warnings[warning[:160]] += 1
        if answer.warnings:
            return "degraded (warnings): " + answer.warnings[0][:100]
        if not answer.plan.plan_id or not answer.action_ids:
            return "no plan or no accepted actions"
        return None

    async def echo_call(self, index: int) -> str | None:
        payload = self.templates[index % len(self.templates)].SerializeToString()
        answer = await self.echo(payload, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        return None if answer == payload else "echo answered different bytes"

    async def actions_of(self, plan_id: str) -> list[Any]:
        answer = await self.coordinator.ListActions(
            coordinator_pb2.ListActionsRequest(plan_id=plan_id), metadata=self.metadata, timeout=10
        )
        return list(answer.actions)

    async def wait_finished(self, plan_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            actions = await self.actions_of(plan_id)
            if actions and all(a.state in TERMINAL for a in actions):
                return True
            await asyncio.sleep(0.25)
        return False

    # -- 1. internal calls of one heal, from its trace --------------------------------------
    async def trace_heals(self) -> dict[str, Any]:
        """Heal each sample once, one at a time, traced; count the client spans of the services.

        The gateway forces a trace for a request with x-client-trace-id; the services follow
        a sampled parent. Work the coordinator starts without the heal's context (outcomes of
        actions it skips because an earlier one healed the job) starts its own trace: the
        services' sampler records such roots too, and they are attributed to the heal during
        whose window (report → actions finished + DELIVERY_SETTLE_S) they started.
        """
        traced = []
        for index, example in enumerate(self.examples):
            trace_id = secrets.token_hex(16)
            extra = (
                ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),
                ("x-client-trace-id", trace_id),
            )
            plans_before = len(self.plans)
            window_start = time.time_ns()
            problem = await self.heal(10_000_000 + index, extra, sample=index)
            plan = self.plans[-1] if len(self.plans) > plans_before else ""
            actions: list[Any] = []
            if problem is None and not await self.wait_finished(plan, 60):
                problem = "actions not finished within 60 s"
            if plan:
                actions = await self.actions_of(plan)
            await asyncio.sleep(
                DELIVERY_SETTLE_S
            )  # outcomes are delivered after the action is stored finished
            traced.append(
                {
                    "example": example["file"],
                    "trace_id": trace_id,
                    "plan": plan,
                    "problem": problem,
                    "failure_id": self.failures[-1],
                    "window": (window_start, time.time_ns()),
                    "actions": [
                        f"{common_pb2.ActionKind.Name(a.action.kind)}="
                        f"{common_pb2.ActionState.Name(a.state).removeprefix('ACTION_STATE_')}"
                        for a in actions
                    ],
                }
            )
        await self.settle_spans()
        spans = self.receiver.spans()
        trace_ids = {t["trace_id"] for t in traced}
        per_heal = []
        for heal in traced:
            first, last = heal["window"]
            in_trace = [s for s in spans if s.trace_id == heal["trace_id"]]
            beside = [s for s in spans if s.trace_id not in trace_ids and first <= s.start_ns <= last]
            per_heal.append(
                {
                    "example": heal["example"],
                    "plan": heal["plan"],
                    "problem": heal["problem"],
                    "actions": heal["actions"],
                    "trace_id": heal["trace_id"],
                    "internal_calls": _clients(in_trace + beside).total(),
                    "internal_calls_in_heal_trace": _clients(in_trace).total(),
                    "client_spans": dict(sorted(_clients(in_trace).items())),
                    "client_spans_outside_heal_trace": dict(sorted(_clients(beside).items())),
                    "server_spans_per_service": dict(
                        sorted(
                            Counter(
                                s.service.removeprefix("healing-guard-")
                                for s in in_trace + beside
                                if s.kind == trace_pb2.Span.SPAN_KIND_SERVER and s.service != GATEWAY_SERVICE
                            ).items()
                        )
                    ),
                    "gateway_spans": sum(1 for s in in_trace if s.service == GATEWAY_SERVICE),
                    "audit_entries": await self.audit_kinds(heal["failure_id"]),
                }
            )
        counts = [h["internal_calls"] for h in per_heal]
        return {
            "per_heal": per_heal,
            "internal_calls_min": min(counts),
            "internal_calls_max": max(counts),
            "internal_calls_mean": round(statistics.fmean(counts), 2),
            "internal_calls_in_heal_trace_mean": round(
                statistics.fmean(h["internal_calls_in_heal_trace"] for h in per_heal), 2
            ),
        }

    async def settle_spans(self) -> None:
        """Spans come in batches (services every 0.5 s, Envoy every few s): wait until none arrive."""
        deadline, last, stable_since = time.monotonic() + SPAN_SETTLE_TIMEOUT_S, -1, time.monotonic()
        while time.monotonic() < deadline:
            count = len(self.receiver.spans())
            if count != last:
                last, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since > 4.0:
                return
            await asyncio.sleep(0.5)

    async def audit_kinds(self, failure_id: str) -> dict[str, int]:
        """The audit entries a heal left, by kind (OUTCOME per action id, to see duplicates)."""
        answer = await self.audit.ListEntries(
            audit_pb2.ListEntriesRequest(subject=failure_id, limit=100), metadata=self.metadata, timeout=10
        )
        kinds: Counter[str] = Counter()
        for entry in answer.entries:
            key = entry.kind
            try:
                payload = json.loads(entry.payload)
                if entry.kind in ("OUTCOME", "ACTION") and isinstance(payload, dict):
                    action = str(payload.get("action_id", "?"))[-2:]
                    key = f"{entry.kind} {action} {payload.get('kind', '')}".rstrip()
            except ValueError:
                pass
            kinds[key] += 1
        return dict(sorted(kinds.items()))

    # -- 4. the measured heal window, drained ------------------------------------------------
    async def drain(self) -> dict[str, Any]:
        """Wait until the last submitted plan is finished and the leader has gone quiet."""
        start = time.monotonic()
        finished = await self.wait_finished(self.plans[-1], DRAIN_TIMEOUT_S) if self.plans else True
        coordinators = [self.mesh.processes[n].pid for n in self.mesh.coordinator_names()]
        previous = sum(cpu_seconds(pid) for pid in coordinators)
        quiet_deadline = time.monotonic() + 30
        while time.monotonic() < quiet_deadline:
            await asyncio.sleep(0.5)
            now = sum(cpu_seconds(pid) for pid in coordinators)
            if now - previous <= 0.05:  # under 10 % of a core: only leases and health checks left
                break
            previous = now
        return {"last_plan_finished": finished, "drain_seconds": round(time.monotonic() - start, 2)}

    async def duplicate_outcomes(self, failures: list[str]) -> dict[str, int]:
        """Audit OUTCOME entries per action over the measured heals (one recorded twice: a duplicate)."""
        outcomes: Counter[str] = Counter()
        for failure_id in failures:
            answer = await self.audit.ListEntries(
                audit_pb2.ListEntriesRequest(subject=failure_id, limit=100),
                metadata=self.metadata,
                timeout=10,
            )
            for entry in answer.entries:
                if entry.kind == "OUTCOME":
                    try:
                        outcomes[str(json.loads(entry.payload).get("action_id"))] += 1
                    except (ValueError, AttributeError):
                        outcomes[f"unreadable #{entry.index}"] += 1
        return {
            "actions_with_outcome": len(outcomes),
            "actions_with_more_than_one_outcome_entry": sum(1 for n in outcomes.values() if n > 1),
            "outcome_entries": sum(outcomes.values()),
        }

    async def unfinished_plans(self, plans: list[str]) -> int:
        unfinished = 0
        for plan in plans:
            actions = await self.actions_of(plan)
            if not actions or any(a.state not in TERMINAL for a in actions):
                unfinished += 1
        return unfinished


def _clients(spans: list[Span]) -> Counter[str]:
    """Client spans of the services (not the gateway's), as 'caller -> Service/Method'."""
    return Counter(
        f"{s.service.removeprefix('healing-guard-')} -> {s.name.lstrip('/').removeprefix('healing_guard.')}"
        for s in spans
        if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT and s.service != GATEWAY_SERVICE
    )


def idle_rates(mesh: Mesh, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    cpu0, etcd0, t0 = cpu_snapshot(mesh), etcd_counters(mesh), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = {k: v / elapsed for k, v in delta(cpu_snapshot(mesh), cpu0).items()}
    etcd = {k: v / elapsed for k, v in delta(etcd_counters(mesh), etcd0).items()}
    return cpu, etcd


async def measure(mesh: BenchMesh, receiver: SpanReceiver, args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(mesh, receiver, args)
    await bench.setup()
    counter = itertools.count()
    try:
        print("tracing one heal of each sample ...", flush=True)
        calls = await bench.trace_heals()
        bench.plans.clear()

        print(
            f"echo: warm-up {args.warmup:.0f} s, then {args.seconds:.0f} s "
            f"at concurrency {args.concurrency} ...",
            flush=True,
        )
        await drive("echo", bench.echo_call, args.concurrency, args.warmup, counter)
        cpu0, own0, spans0 = cpu_snapshot(mesh), own_cpu(), len(receiver.spans())
        echo = await drive("echo", bench.echo_call, args.concurrency, args.seconds, counter)
        echo_cpu = delta(cpu_snapshot(mesh), cpu0)
        echo_own = own_cpu() - own0
        await bench.settle_spans()
        echo_spans = len(receiver.spans()) - spans0

        print(f"heal: warm-up {args.warmup:.0f} s ...", flush=True)
        await drive("heal", bench.heal, args.concurrency, args.warmup, counter)
        await bench.drain()
        idle_cpu, idle_etcd = await asyncio.to_thread(idle_rates, mesh, IDLE_SECONDS)

        print(f"heal: {args.seconds:.0f} s at concurrency {args.concurrency} ...", flush=True)
        bench.plans.clear()
        bench.failures.clear()
        bench.warnings.clear()
        spans0 = len(receiver.spans())
        cpu0, etcd0, own0, t0 = cpu_snapshot(mesh), etcd_counters(mesh), own_cpu(), time.monotonic()
        heal = await drive("heal", bench.heal, args.concurrency, args.seconds, counter)
        drained = await bench.drain()
        elapsed = time.monotonic() - t0
        heal_cpu, heal_etcd, heal_own = (
            delta(cpu_snapshot(mesh), cpu0),
            delta(etcd_counters(mesh), etcd0),
            own_cpu() - own0,
        )
        plans, failures = list(bench.plans), list(bench.failures)
        drained["unfinished_plans_after"] = await bench.unfinished_plans(plans)
        drained["audit_outcomes"] = await bench.duplicate_outcomes(failures)
        drained["plans_submitted"] = len(plans)
        await bench.settle_spans()
        heal_spans = Counter(_clients([s for s in receiver.spans()[spans0:]]))
    finally:
        await bench.channel.close()

    heals = max(1, heal.ok + sum(heal.errors.values()))  # every call that reached the coordinator did work
    calls_echo = max(1, echo.ok)
    cpu_table = {}
    for name in sorted(heal_cpu):
        raw = heal_cpu[name] / heals
        cpu_table[name] = {
            "ms_per_heal": round(raw * 1000, 3),
            "ms_per_heal_minus_idle": round(
                (heal_cpu[name] - idle_cpu.get(name, 0.0) * elapsed) / heals * 1000, 3
            ),
            "idle_ms_per_second": round(idle_cpu.get(name, 0.0) * 1000, 2),
            "ms_per_echo_call": round(echo_cpu.get(name, 0.0) / calls_echo * 1000, 3),
        }
    etcd_per_heal = {
        key: round((heal_etcd[key] - idle_etcd.get(key, 0.0) * elapsed) / heals, 2)
        for key in sorted(heal_etcd)
        if heal_etcd[key]
    }
    return {
        "echo": echo.summary(),
        "heal": heal.summary(),
        "heal_warnings": dict(bench.warnings.most_common(10)),
        "internal_calls": calls,
        "cpu_per_process": cpu_table,
        "cpu_services_total_ms_per_heal": round(
            sum(
                v["ms_per_heal_minus_idle"]
                for k, v in cpu_table.items()
                if k not in ("envoy", "etcd", "echo")
            ),
            2,
        ),
        "cpu_bench_client_ms_per_heal": round(heal_own / heals * 1000, 3),
        "cpu_bench_client_ms_per_echo_call": round(echo_own / calls_echo * 1000, 3),
        "etcd_per_heal_minus_idle": etcd_per_heal,
        "measured_window_seconds_incl_drain": round(elapsed, 2),
        "drain": drained,
        "spans_exported_during_echo_window": echo_spans,
        "client_spans_exported_during_heal_window_per_heal": {
            k: round(v / heals, 2) for k, v in heal_spans.most_common()
        },
        "heals_counted_for_cpu": heals,
    }


# --- reporting ---------------------------------------------------------------------------------


def log_sizes(log_dir: Path) -> dict[str, int]:
    return {path.stem: path.stat().st_size for path in log_dir.glob("*.log")}


def scan_logs(log_dir: Path, until: dict[str, int] | None = None) -> dict[str, Any]:
    """Errors and warnings each process logged: before `until` (byte offsets), or after it."""
    found: dict[str, Any] = {}
    pattern = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback|\[error\]|\[critical\]|\[warning\])", re.I)
    for path in sorted(log_dir.glob("*.log")):
        data = path.read_bytes()
        if until is not None:
            cut = until.get(path.stem, 0)
            data = data[:cut] if not path.name.startswith("~") else data[cut:]
        lines = [line for line in data.decode(errors="replace").splitlines() if pattern.search(line)]
        if lines:
            # Digits and hex ids folded, so the same message counts once.
            distinct = Counter(
                re.sub(r"[0-9a-f]{8,}|\d+", "#", line.split(" ", 2)[-1])[:220] for line in lines
            )
            found[path.stem] = {
                "lines": len(lines),
                "distinct": [f"{n}x {text}" for text, n in distinct.most_common(8)],
            }
    return found


def repeated_outcome_warnings(log_dir: Path) -> dict[str, int]:
    """(action, receiver) pairs the coordinators warned about more than once: the outcome went there again."""
    pairs: Counter[tuple[str, str, str]] = Counter()
    for path in log_dir.glob("coordinator-*.log"):
        for match in re.finditer(r"outcome of (\S+) to (\w+): (\w+)", path.read_text(errors="replace")):
            pairs[match.groups()] += 1
    repeated: Counter[str] = Counter()
    for (_, receiver, code), count in pairs.items():
        if count > 1:
            repeated[f"{receiver} {code}"] += 1
    return dict(repeated)


def scan_teardown(log_dir: Path, until: dict[str, int]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(log_dir.glob("*.log")):
        tail = path.read_bytes()[until.get(path.stem, 0) :].decode(errors="replace").splitlines()
        hits = [line for line in tail if re.search(r"ERROR|CRITICAL|WARNING|Traceback|\[error\]", line)]
        if hits:
            found[path.stem] = len(hits)
    return found


def source_state() -> dict[str, Any]:
    """The commit measured, and which service/deploy files differed from it (others work in this tree)."""
    import subprocess

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout

    status = git("status", "--porcelain", "--", "services", "deploy", "protos")
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    return {"git_head": git("rev-parse", "HEAD").strip(), "uncommitted_service_or_deploy_files": dirty}


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def print_table(result: dict[str, Any]) -> None:
    echo, heal = result["echo"], result["heal"]
    rows = [("echo (1 hop, no-op)", echo), ("heal (HealFailure)", heal)]
    print(f"\n{'through Envoy, mTLS + JWT':26} {'calls/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for label, row in rows:
        print(
            f"{label:26} {row['calls_per_second']:9.1f} {row['p50_ms']:9.2f} {row['p99_ms']:9.2f} "
            f"{sum(row['errors'].values()):7d}"
        )
    ratio = result["ratio_heal_to_echo"]
    print(
        f"{'ratio heal / echo':26} {ratio['calls_per_second']:9.3f} "
        f"{ratio['p50_ms']:9.1f} {ratio['p99_ms']:9.1f}"
    )
    calls = result["internal_calls"]
    print(
        f"\ninternal calls per heal (client spans of the services, one traced heal per sample): "
        f"{calls['internal_calls_min']}..{calls['internal_calls_max']}, mean {calls['internal_calls_mean']} "
        f"({calls['internal_calls_in_heal_trace_mean']} in the heal's own trace)"
    )
    example = max(calls["per_heal"], key=lambda h: h["internal_calls"])
    print(f"  e.g. {example['example']} ({', '.join(example['actions'])}):")
    for name, count in example["client_spans"].items():
        print(f"    {name} x{count}")
    for name, count in example["client_spans_outside_heal_trace"].items():
        print(f"    {name} x{count}  (own trace)")
    print(f"\n{'process':16} {'CPU ms/heal':>12} {'minus idle':>11} {'ms/echo call':>13}")
    for name, row in result["cpu_per_process"].items():
        print(
            f"{name:16} {row['ms_per_heal']:12.2f} {row['ms_per_heal_minus_idle']:11.2f} "
            f"{row['ms_per_echo_call']:13.3f}"
        )
    print(f"{'services total':16} {'':12} {result['cpu_services_total_ms_per_heal']:11.2f}")
    print(
        f"{'bench client':16} {result['cpu_bench_client_ms_per_heal']:12.2f} {'':11} "
        f"{result['cpu_bench_client_ms_per_echo_call']:13.3f}"
    )
    etcd = result["etcd_per_heal_minus_idle"]
    grpc_calls = {k.removeprefix("grpc "): v for k, v in etcd.items() if k.startswith("grpc ")}
    print(
        "\netcd requests per heal (etcd's counters, minus idle): "
        + ", ".join(f"{k} {v}" for k, v in grpc_calls.items() if abs(v) >= 0.05)
    )
    audit = result["drain"]["audit_outcomes"]
    print(
        f"\naudit OUTCOME entries over the measured heals: {audit['outcome_entries']} for "
        f"{audit['actions_with_outcome']} actions ({audit['actions_with_more_than_one_outcome_entry']} "
        "actions recorded more than once)"
    )
    if result["log_findings"]:
        print("\nlogged during the run:")
        for name, found in result["log_findings"].items():
            print(f"  {name}: {found['lines']} line(s); {found['distinct'][0][:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.heal_path", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measurement (default 15)")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight (default 4)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="warm-up before each measurement (default 3)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs) after the run")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--seconds must be > 0, --concurrency >= 1, --warmup >= 0")

    facts = {**machine(), **source_state()}
    started = time.time()
    temp = Path(tempfile.mkdtemp(prefix="hg-heal-path-"))
    receiver = SpanReceiver().start()
    mesh = BenchMesh(
        run_dir=temp / "run",
        pki_dir=temp / "pki",
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            # The gateway samples only the traced heals (x-client-trace-id), and services follow their
            # parent: measured calls arrive unsampled and are not exported. Roots a service starts
            # itself (outcomes of skipped actions) are sampled, so the traced heals miss no call.
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        },
    )
    sizes: dict[str, int] = {}
    try:
        print(f"starting a mesh in {temp} ...", flush=True)
        mesh.up()
        result = asyncio.run(measure(mesh, receiver, args))
        sizes = log_sizes(mesh.log_dir)
    finally:
        mesh.down()
        receiver.stop()
        findings = scan_logs(mesh.log_dir, sizes or None) if mesh.log_dir.exists() else {}
        teardown = scan_teardown(mesh.log_dir, sizes) if sizes else {}
        repeated = repeated_outcome_warnings(mesh.log_dir)
        if not args.keep:
            import shutil

            shutil.rmtree(temp, ignore_errors=True)
    echo, heal = result["echo"], result["heal"]
    result = {
        "benchmark": "heal_path",
        "command": "cd /work/main && .venv/bin/python -m bench.heal_path"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "settings": {
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "warmup_seconds": args.warmup,
            "tenant": TENANT,
            "requests": "each call a new run id, rotating over examples/manifest.json "
            f"({len(json.loads((EXAMPLES / 'manifest.json').read_text()))} "
            "logs, 3-12 KiB)",
            "echo_payload": "the serialized HealFailureRequest of the same sample, echoed back",
            "gateway": "mesh's rendered config + echo cluster/route; tenant bucket raised to 1e6/s so "
            "the limiter runs but does not refuse; Envoy --concurrency 1",
            "tracing": "OTLP exporter on in every service (parentbased_always_on); Envoy traces only "
            "requests with x-client-trace-id (random_sampling 0), so measured calls reach the "
            "services unsampled (spans created, not exported); roots a service starts itself "
            "(outcome delivery of skipped actions) are exported",
        },
        "machine": {**facts, "loadavg_at_end": list(os.getloadavg())},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **result,
        "ratio_heal_to_echo": {
            "calls_per_second": round(heal["calls_per_second"] / echo["calls_per_second"], 4),
            "p50_ms": round(heal["p50_ms"] / echo["p50_ms"], 2),
            "p99_ms": round(heal["p99_ms"] / echo["p99_ms"], 2),
        },
        "log_findings": findings,
        "outcome_warnings_repeated_for_the_same_action": repeated,
        "log_lines_flagged_during_teardown": teardown,
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
