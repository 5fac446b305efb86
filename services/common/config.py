"""Service configuration: defaults in code, overridden by environment variables.

Parsed once in `__main__` into a typed `ServiceConfig` and handed to the
service's bootstrap; nothing reads the environment anywhere else. Live settings
that may change without a restart (thresholds, policies, flags) are layered on
top by `services.common.live_config` from etcd.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICES: tuple[str, ...] = ("detector", "predictor", "planner", "tenancy", "audit", "coordinator")

# The DNS SAN that names a service's identity in its certificate.
IDENTITY_SUFFIX = "healing-guard.local"


def identity_of(service: str) -> str:
    return f"{service}.{IDENTITY_SUFFIX}"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class ServiceConfig:
    service: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    data_dir: Path = Path(".run/data")
    tls: TlsFiles | None = None          # None only for in-process tests
    jwks_path: Path | None = None        # None only for in-process tests
    service_token_path: Path | None = None
    peers: Mapping[str, str] = field(default_factory=dict)  # service name -> host:port
    etcd_endpoint: str | None = None
    replica_id: str = ""
    master_key_path: Path | None = None
    grace_seconds: float = 5.0
    issuer: str = "healing-guard"
    audience: str = "healing-guard"
    settings: Mapping[str, str] = field(default_factory=dict)  # HG_SETTING_<NAME>=value

    @property
    def database_path(self) -> Path:
        return self.data_dir / f"{self.service}.sqlite3"

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    def peer(self, service: str) -> str:
        try:
            return self.peers[service]
        except KeyError:
            raise LookupError(
                f"{self.service} has no address for {service}: set HG_{service.upper()}_ADDRESS"
            ) from None


def from_environment(service: str, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read `HG_*` variables. Unknown services and malformed values fail loudly."""
    env = os.environ if env is None else env
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    host, port = _split_address(env.get("HG_LISTEN", "127.0.0.1:0"), "HG_LISTEN")
    pki = env.get("HG_PKI_DIR")
    tls = None
    if pki:
        pki_dir = Path(pki)
        tls = TlsFiles(ca=pki_dir / "ca.pem", cert=pki_dir / f"{service}.pem", key=pki_dir / f"{service}-key.pem")
    peers = {
        name: env[f"HG_{name.upper()}_ADDRESS"]
        for name in SERVICES
        if name != service and env.get(f"HG_{name.upper()}_ADDRESS")
    }
    settings = {
        key.removeprefix("HG_SETTING_").lower(): value
        for key, value in env.items()
        if key.startswith("HG_SETTING_")
    }
    return ServiceConfig(
        service=service,
        listen_host=host,
        listen_port=port,
        data_dir=Path(env.get("HG_DATA_DIR", f".run/data/{service}")),
        tls=tls,
        jwks_path=_optional_path(env.get("HG_JWKS") or (f"{pki}/jwks.json" if pki else None)),
        service_token_path=_optional_path(env.get("HG_SERVICE_TOKEN_FILE")),
        peers=peers,
        etcd_endpoint=env.get("HG_ETCD_ENDPOINT") or None,
        replica_id=env.get("HG_REPLICA_ID", f"{service}-{os.getpid()}"),
        master_key_path=_optional_path(env.get("HG_MASTER_KEY_FILE")),
        grace_seconds=float(env.get("HG_GRACE_SECONDS", "5")),
        settings=settings,
    )


def _split_address(value: str, variable: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{variable} must be host:port, got {value!r}")
    return host or "127.0.0.1", int(port)


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None
