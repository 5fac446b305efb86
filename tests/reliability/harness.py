"""What every reliability case shares: a supervised mesh on loopback, channels to the
gateway and straight to each service, the three kinds of caller, the one heal helper,
store digests, the audit log's offline verification, process RSS, and the results file.

The mesh is the one `make up` runs (deploy.mesh.start_supervisor: the supervisor brings
the mesh up and restarts whatever dies), on free loopback ports under a temp folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.client import MAX_MESSAGE, MeshClient, MeshConnection, read_env_file
from deploy.mesh import SERVICES, Mesh, start_supervisor, stop_supervised
from deploy.pki.make_pki import PkiPaths
from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from healing_guard.planner.v1 import planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2_grpc
from services.audit.server import PUBLIC_KEYS_FILE
from services.common.tokens import load_signer

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "reliability.json"
TIMEOUT = 10.0
# Rows a refused call may add on purpose: the defence recording the attack (security
# events, tokens revoked for probing, the outbox rows carrying them to the audit log, and
# the audit log's SECURITY_EVENT entries with the tree nodes and heads above them; the
# log's integrity is checked on its own, by verify_audit).
DEFENCE_TABLES = {"security_events", "revoked_tokens", "outbox", "outbox_secret", "tree_nodes", "tree_heads"}
DEFENCE_KINDS = ("SECURITY_EVENT",)
_KEPT_KINDS = f"kind NOT IN ({', '.join(repr(k) for k in DEFENCE_KINDS)})"
# Tables that only point at audit entries: keep the rows pointing at entries we keep.
_ROW_FILTERS = {"idempotency_keys": f" WHERE idx IN (SELECT idx FROM entries WHERE {_KEPT_KINDS})"}

_results_lock = threading.Lock()


def record_result(section: str, value: Any) -> None:
    """Merge one section into bench/results/reliability.json (each case writes its own)."""
    with _results_lock:
        try:
            document = json.loads(RESULTS.read_text())
        except (OSError, ValueError):
            document = {}
        document[section] = value
        document["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


@dataclass
class Harness:
    mesh: Mesh
    tokens: dict[str, str] = field(default_factory=dict)
    ledger: Path = Path("/dev/null")  # where the local executor records each action it carries out
    _channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)

    # -- starting and stopping -------------------------------------------------------------
    @classmethod
    def start(cls, base: Path, extra_env: dict[str, str] | None = None) -> Harness:
        mesh = Mesh(run_dir=base / "run", pki_dir=base / "pki", extra_env=extra_env or {})
        error = start_supervisor(mesh)
        if error:
            stop_supervised(mesh)
            raise RuntimeError(f"the supervised mesh did not come up: {error}")
        mesh.pki = PkiPaths(mesh.pki_dir)
        env = read_env_file(mesh.run_dir / "mesh.env")
        harness = cls(mesh=mesh)
        harness.tokens = {"operator": env["HG_TOKEN"], "admin": env["HG_ADMIN_TOKEN"]}
        return harness

    def stop(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        stop_supervised(self.mesh)

    @property
    def signer(self):  # type: ignore[no-untyped-def]
        if not hasattr(self, "_signer"):
            self._signer = load_signer(self.mesh.pki.signing_key, self.mesh.pki.jwks)
        return self._signer

    def service_token(self, service: str) -> str:
        return (self.mesh.run_dir / "tokens" / f"{service}.jwt").read_text().strip()

    def mint(self, subject: str, tenant: str, roles: list[str]) -> str:
        return str(self.signer.mint(subject=subject, tenant=tenant, roles=roles, ttl_seconds=6 * 3600))

    # -- connections -------------------------------------------------------------------------
    def channel(self, where: str, cert: str = "operator") -> grpc.Channel:
        """A channel to the gateway (where="gateway") or to a service's own port, cached."""
        key = (where, cert)
        if key not in self._channels:
            pki = self.mesh.pki
            credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.key(cert).read_bytes(),
                                                       pki.cert(cert).read_bytes())
            # Reconnect within a fraction of a second of a process's return (gRPC's default
            # backoff would add up to seconds to every time measured back to SERVING).
            options: list[tuple[str, Any]] = [("grpc.max_send_message_length", MAX_MESSAGE),
                                              ("grpc.max_receive_message_length", MAX_MESSAGE),
                                              ("grpc.initial_reconnect_backoff_ms", 100),
                                              ("grpc.min_reconnect_backoff_ms", 100),
                                              ("grpc.max_reconnect_backoff_ms", 500)]
            if where == "gateway":
                address = self.mesh.gateway_address
            else:  # a service ("coordinator" is its first replica) or one replica ("coordinator-2")
                address = self.mesh.service_address("coordinator-1" if where == "coordinator" else where)
                options.append(("grpc.ssl_target_name_override", f"{where.split('-')[0]}.healing-guard.local"))
            self._channels[key] = grpc.secure_channel(address, credentials, options=options)
        return self._channels[key]

    def stubs(self, token: str, where: str = "gateway") -> Stubs:
        """Every service's stub over one (cached, quickly reconnecting) channel, with this token."""
        return Stubs(self.channel(where), token)

    def client(self, token: str) -> MeshClient:
        connection = MeshConnection(gateway=self.mesh.gateway_address, cacert=self.mesh.pki.ca,
                                    cert=self.mesh.pki.cert("operator"), key=self.mesh.pki.key("operator"),
                                    token=token)
        return MeshClient(connection, token=token)

    # -- processes ---------------------------------------------------------------------------
    def pid(self, name: str) -> int:
        return int((self.mesh.pid_dir / f"{name}.pid").read_text().strip())

    def process_names(self) -> list[str]:
        return sorted(p.stem for p in self.mesh.pid_dir.glob("*.pid"))

    def alive(self) -> dict[str, bool]:
        return {name: _exists(self.pid(name)) for name in self.process_names()}

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of every mesh process (etcd and Envoy included), in MiB."""
        sizes: dict[str, float] = {}
        for name in self.process_names():
            try:
                status = Path(f"/proc/{self.pid(name)}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[name] = round(int(line.split()[1]) / 1024, 1)
        return sizes

    def health(self, name: str) -> str:
        """A direct health probe of one service replica (SERVING, NOT_SERVING, or why there is none)."""
        if name.split("-")[0] not in SERVICES:  # etcd, envoy
            return self.mesh.health(name, timeout=1.0)
        channel = self.channel(name)
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as error:
            return f"{error.code().name}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # -- stores ------------------------------------------------------------------------------
    def store_paths(self) -> dict[str, Path]:
        """Every SQLite file of the mesh: <service>/<file>.sqlite3 -> path."""
        data = self.mesh.run_dir / "data"
        return {f"{p.parent.name}/{p.name}": p for p in sorted(data.glob("*/*.sqlite3"))}

    def digests(self, exclude: set[str] = DEFENCE_TABLES) -> dict[str, str]:
        """A digest of the rows (not the pages, not the WAL) of each table of every store:
        "<service>/<file>:<table>" -> SHA-256."""
        found: dict[str, str] = {}
        for name, path in self.store_paths().items():
            found.update({f"{name}:{table}": value for table, value in table_digests(path, exclude).items()})
        return found

    # -- the audit log -----------------------------------------------------------------------
    def verify_audit(self, workdir: Path) -> dict[str, Any]:
        """Export the whole audit log (paged) as the platform admin and verify every page
        offline with `python -m services.audit.verify --keys` (the published keys)."""
        admin = self.client(self.tokens["admin"])
        try:
            head = admin.audit.GetSignedTreeHead(audit_pb2.GetSignedTreeHeadRequest(), metadata=admin.metadata,
                                                 timeout=TIMEOUT)
            keys = workdir / "audit-keys.json"
            keys.write_text((self.mesh.run_dir / "data" / "audit" / PUBLIC_KEYS_FILE).read_text())
            start, verified, pages = 0, 0, 0
            while start < head.tree_size:
                end = min(head.tree_size, start + 10_000)
                reply = admin.audit.ExportRange(audit_pb2.ExportRangeRequest(start_index=start, end_index=end),
                                                metadata=admin.metadata, timeout=60)
                page = workdir / f"audit-export-{pages}.json"
                page.write_text(reply.export_json)
                result = subprocess.run([sys.executable, "-m", "services.audit.verify", str(page), "--keys",
                                         str(keys), "--json"], capture_output=True, text=True, timeout=120,
                                        cwd=ROOT)
                if result.returncode != 0:
                    raise AssertionError(f"audit export [{start}, {end}) does not verify: "
                                         f"{result.stdout[-500:]} {result.stderr[-500:]}")
                verified += int(json.loads(result.stdout).get("entries_verified", 0))
                pages += 1
                start = reply.next_start_index or end
            return {"tree_size": head.tree_size, "entries_verified": verified, "pages": pages}
        finally:
            admin.close()


class Stubs:
    """What MeshClient offers (the stubs and `metadata`), over a channel of the harness."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self.token = token
        self.detector = detector_pb2_grpc.DetectorStub(channel)
        self.planner = planner_pb2_grpc.PlannerStub(channel)
        self.predictor = predictor_pb2_grpc.PredictorStub(channel)
        self.coordinator = coordinator_pb2_grpc.CoordinatorStub(channel)
        self.audit = audit_pb2_grpc.AuditStub(channel)
        self.tenancy = tenancy_pb2_grpc.TenancyStub(channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def table_digests(path: Path, exclude: set[str] = DEFENCE_TABLES) -> dict[str, str]:
    """SHA-256 over every row of each table but `exclude`, in key order, read through
    SQLite (so committed rows still in the WAL count, and page layout does not)."""
    found: dict[str, str] = {}
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for table in tables:
            if table in exclude:
                continue
            digest = hashlib.sha256()
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]
            where = f" WHERE {_KEPT_KINDS}" if "kind" in columns else _ROW_FILTERS.get(table, "")
            order = ", ".join(str(i + 1) for i in range(min(len(columns), 3)))
            for row in connection.execute(f'SELECT * FROM "{table}"{where} ORDER BY {order}'):
                digest.update(repr(row).encode())
            found[table] = digest.hexdigest()
    finally:
        connection.close()
    return found


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


# -- heals ---------------------------------------------------------------------------------
# The one place a heal is started: the coordinator's workflow (quota, diagnose, forecast,
# plan, queue). `detector.ReportFailure` only diagnoses now.
HEAL_VIA = "coordinator.HealFailure"


def start_heal(client: MeshClient | Stubs, report: detector_pb2.FailureReport, log: bytes,
               timeout: float = 30.0) -> coordinator_pb2.HealFailureResponse:
    """Start one heal and return what was acknowledged: the diagnosis, the plan, the actions."""
    if HEAL_VIA == "coordinator.HealFailure":
        return client.coordinator.HealFailure(coordinator_pb2.HealFailureRequest(report=report, log=log),
                                              metadata=client.metadata, timeout=timeout)
    raise NotImplementedError(HEAL_VIA)
