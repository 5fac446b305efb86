"""Helpers for the coordinator's integration and fault tests (and benchmarks):
a real etcd on free loopback ports in a folder of its own, that can be killed and
restarted on the same data, and loopback outcome receivers that count deliveries."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AddressInUse(RuntimeError):
    pass


class EtcdServer:
    """One etcd member on loopback; `stop`/`start` keep the data (a restart)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0, attempts: int = 4) -> EtcdServer:
        """Start etcd; on its first start, a port taken since free_port() chose it means
        new ports and another try (a restart keeps its ports: clients know them)."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                self.started_once = True
                return self
            except AddressInUse:
                if self.started_once or attempt == attempts:
                    raise
                self.client_port, self.peer_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / "etcd.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        url, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        with open(self.folder / "etcd.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "etcd"), "--name", "n1", "--data-dir", str(self.folder / "data"),
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"n1={peer}", "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(log_path, "rb") as log_file:
                    log_file.seek(offset)
                    if b"address already in use" in log_file.read():
                        raise AddressInUse(f"etcd could not bind {self.endpoint} or its peer port")
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.folder / 'etcd.log'}")
            result = subprocess.run([str(VENV_BIN / "etcdctl"), f"--endpoints={self.endpoint}",
                                     "--command-timeout=2s", "endpoint", "health"], capture_output=True)
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"etcd not healthy within {timeout:.0f} s; see {self.folder / 'etcd.log'}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OutcomeReceivers:
    """Planner, detector, predictor and audit stand-ins on loopback, with the services'
    own certificates (the coordinator checks who it talks to), counting every call."""

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        self.calls: Counter[tuple[str, str]] = Counter()   # (receiver, action id) -> calls
        self.lock = threading.Lock()
        self.servers: list[object] = []
        self.ports: dict[str, int] = {}

    def _count(self, receiver: str, action_id: str) -> None:
        with self.lock:
            self.calls[(receiver, action_id)] += 1

    def start(self) -> OutcomeReceivers:
        import grpc

        from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
        from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
        from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
        from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc

        receivers = self
        audit_index = [0]

        class Planner(planner_pb2_grpc.PlannerServicer):
            def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
                receivers._count("planner", request.outcome.action_id)
                return planner_pb2.RecordOutcomeResponse()

        class Detector(detector_pb2_grpc.DetectorServicer):
            def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
                receivers._count("detector", request.outcome.action_id)
                return detector_pb2.RecordOutcomeResponse()

        class Predictor(predictor_pb2_grpc.PredictorServicer):
            def RecordRun(self, request, context):  # type: ignore[no-untyped-def]
                receivers._count("predictor", request.run.job.run_id or "?")
                return predictor_pb2.RecordRunResponse()

        class Audit(audit_pb2_grpc.AuditServicer):
            def Append(self, request, context):  # type: ignore[no-untyped-def]
                import json
                with receivers.lock:
                    indexes = []
                    for entry in request.entries:
                        payload = json.loads(entry.payload)
                        receivers.calls[(f"audit:{entry.kind}", payload.get("action_id", ""))] += 1
                        audit_index[0] += 1
                        indexes.append(audit_index[0])
                return audit_pb2.AppendResponse(indexes=indexes, leaf_hashes=[b"\0" * 32] * len(indexes),
                                                tree_size=audit_index[0])

        for name, servicer, add in (
            ("planner", Planner(), planner_pb2_grpc.add_PlannerServicer_to_server),
            ("detector", Detector(), detector_pb2_grpc.add_DetectorServicer_to_server),
            ("predictor", Predictor(), predictor_pb2_grpc.add_PredictorServicer_to_server),
            ("audit", Audit(), audit_pb2_grpc.add_AuditServicer_to_server),
        ):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            add(servicer, server)
            credentials = grpc.ssl_server_credentials(
                [((self.pki_dir / f"{name}-key.pem").read_bytes(), (self.pki_dir / f"{name}.pem").read_bytes())])
            self.ports[name] = server.add_secure_port("127.0.0.1:0", credentials)
            server.start()
            self.servers.append(server)
        return self

    def env(self) -> dict[str, str]:
        return {f"HG_{name.upper()}_ADDRESS": f"127.0.0.1:{port}" for name, port in self.ports.items()}

    def count(self, receiver: str, action_id: str) -> int:
        with self.lock:
            return self.calls[(receiver, action_id)]

    def stop(self) -> None:
        for server in self.servers:
            server.stop(grace=None)  # type: ignore[attr-defined]


def terminate(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class HealLeaves:
    """Tenancy, detector, predictor, planner and audit stand-ins for the heal workflow, with
    the services' own certificates. Each counts the calls it *acted on* per heal step and
    can hold one step's calls at a gate, so a test can kill the coordinator while that
    step is in flight: a held call whose caller is gone by the time the gate opens does
    nothing (as a real leaf whose caller vanished before it committed)."""

    STEPS = ("quota", "diagnose", "forecast", "plan")

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        self.acted: Counter[tuple[str, str]] = Counter()   # (step or receiver, run id or action id)
        self.arrived: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.gates: dict[str, threading.Event] = {}
        self.diagnoses: dict[str, object] = {}
        self.servers: list[object] = []
        self.ports: dict[str, int] = {}

    def hold(self, step: str) -> threading.Event:
        gate = threading.Event()
        self.gates[step] = gate
        return gate

    def release(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self.gates.clear()

    def _enter(self, step: str, key: str, context: object) -> bool:
        """Count the arrival; wait at the gate; True when the caller is still there to act for."""
        with self.lock:
            self.arrived[(step, key)] += 1
        gate = self.gates.get(step)
        if gate is not None:
            gate.wait(timeout=60)
            if not context.is_active():  # type: ignore[attr-defined]
                return False
        with self.lock:
            self.acted[(step, key)] += 1
        return True

    def start(self) -> HealLeaves:
        import json

        import grpc

        from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
        from healing_guard.common.v1 import common_pb2
        from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
        from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
        from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
        from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc

        leaves = self
        audit_index = [0]

        def gone(context: object) -> object:
            context.abort(grpc.StatusCode.CANCELLED, "the caller went away")  # type: ignore[attr-defined]
            return None

        class Tenancy(tenancy_pb2_grpc.TenancyServicer):
            def ConsumeQuota(self, request, context):  # type: ignore[no-untyped-def]
                if not leaves._enter("quota", request.request_id, context):
                    return gone(context)
                return tenancy_pb2.ConsumeQuotaResponse()

        class Detector(detector_pb2_grpc.DetectorServicer):
            def ReportFailure(self, request, context):  # type: ignore[no-untyped-def]
                job = request.report.job
                if not leaves._enter("diagnose", job.run_id, context):
                    return gone(context)
                diagnosis = common_pb2.Diagnosis(failure_id=f"f-{job.run_id}", tenant_id=request.report.tenant_id,
                                                 job=job, failure_class=common_pb2.NETWORK, confidence=0.9)
                leaves.diagnoses[diagnosis.failure_id] = diagnosis
                return detector_pb2.ReportFailureResponse(diagnosis=diagnosis)

            def GetDiagnosis(self, request, context):  # type: ignore[no-untyped-def]
                with leaves.lock:
                    leaves.acted[("get_diagnosis", request.failure_id)] += 1
                return leaves.diagnoses[request.failure_id]

            def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
                with leaves.lock:
                    leaves.acted[("detector", request.outcome.action_id)] += 1
                return detector_pb2.RecordOutcomeResponse()

        class Predictor(predictor_pb2_grpc.PredictorServicer):
            def ForecastRisk(self, request, context):  # type: ignore[no-untyped-def]
                if not leaves._enter("forecast", request.pipeline, context):
                    return gone(context)
                return predictor_pb2.ForecastRiskResponse(has_history=True, next_run_failure_probability=0.3,
                                                          summary="3 in 10")

            def RecordRun(self, request, context):  # type: ignore[no-untyped-def]
                with leaves.lock:
                    leaves.acted[("predictor", request.run.job.run_id)] += 1
                return predictor_pb2.RecordRunResponse()

        class Planner(planner_pb2_grpc.PlannerServicer):
            def PlanHealing(self, request, context):  # type: ignore[no-untyped-def]
                diagnosis = request.diagnosis
                if not leaves._enter("plan", diagnosis.job.run_id, context):
                    return gone(context)
                assert request.forecast.next_run_failure_probability == 0.3, "the coordinator passes the forecast"
                plan_id = f"p-{diagnosis.job.run_id}"
                return common_pb2.HealingPlan(
                    plan_id=plan_id, tenant_id=diagnosis.tenant_id, failure_id=diagnosis.failure_id,
                    job=diagnosis.job, failure_class=diagnosis.failure_class, risk=0.3,
                    actions=[common_pb2.Action(kind=common_pb2.RETRY, idempotency_key=f"{plan_id}/retry")])

            def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
                with leaves.lock:
                    leaves.acted[("planner", request.outcome.action_id)] += 1
                return planner_pb2.RecordOutcomeResponse()

        class Audit(audit_pb2_grpc.AuditServicer):
            def Append(self, request, context):  # type: ignore[no-untyped-def]
                with leaves.lock:
                    indexes = []
                    for entry in request.entries:
                        payload = json.loads(entry.payload)
                        leaves.acted[(f"audit:{entry.kind}", payload.get("action_id", ""))] += 1
                        audit_index[0] += 1
                        indexes.append(audit_index[0])
                return audit_pb2.AppendResponse(indexes=indexes, leaf_hashes=[b"\0" * 32] * len(indexes),
                                                tree_size=audit_index[0])

        for name, servicer, add in (
            ("tenancy", Tenancy(), tenancy_pb2_grpc.add_TenancyServicer_to_server),
            ("detector", Detector(), detector_pb2_grpc.add_DetectorServicer_to_server),
            ("predictor", Predictor(), predictor_pb2_grpc.add_PredictorServicer_to_server),
            ("planner", Planner(), planner_pb2_grpc.add_PlannerServicer_to_server),
            ("audit", Audit(), audit_pb2_grpc.add_AuditServicer_to_server),
        ):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
            add(servicer, server)
            credentials = grpc.ssl_server_credentials(
                [((self.pki_dir / f"{name}-key.pem").read_bytes(), (self.pki_dir / f"{name}.pem").read_bytes())])
            self.ports[name] = server.add_secure_port("127.0.0.1:0", credentials)
            server.start()
            self.servers.append(server)
        return self

    def env(self) -> dict[str, str]:
        return {f"HG_{name.upper()}_ADDRESS": f"127.0.0.1:{port}" for name, port in self.ports.items()}

    def count(self, step: str, key: str, *, arrived: bool = False) -> int:
        with self.lock:
            return (self.arrived if arrived else self.acted)[(step, key)]

    def stop(self) -> None:
        self.release()
        for server in self.servers:
            server.stop(grace=None)  # type: ignore[attr-defined]
