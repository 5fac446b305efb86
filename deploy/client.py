"""A client of the mesh through the gateway, as platform tooling would write one.

Reads the connection details that `make up` writes to `.run/mesh.env`
(HG_GATEWAY, HG_CACERT, HG_CERT, HG_KEY, HG_TOKEN) and offers the stubs with the
bearer token attached. Used by the demo, the integration tests and the benchmark.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from healing_guard.audit.v1 import audit_pb2_grpc
from healing_guard.coordinator.v1 import coordinator_pb2_grpc
from healing_guard.detector.v1 import detector_pb2_grpc
from healing_guard.planner.v1 import planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2_grpc

MAX_MESSAGE = 16 * 1024 * 1024


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assignment = line.removeprefix("export ").strip()
        key, _, value = assignment.partition("=")
        parsed = shlex.split(value)
        values[key] = parsed[0] if parsed else ""
    return values


@dataclass
class MeshConnection:
    gateway: str
    cacert: Path
    cert: Path
    key: Path
    token: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, env_file: Path | None = None) -> MeshConnection:
        values = dict(read_env_file(env_file)) if env_file and env_file.exists() else {}
        values.update({k: v for k, v in (env or os.environ).items() if k.startswith("HG_")})
        missing = [k for k in ("HG_GATEWAY", "HG_CACERT", "HG_CERT", "HG_KEY", "HG_TOKEN") if not values.get(k)]
        if missing:
            raise SystemExit(f"missing {', '.join(missing)}: run `make up` and `source .run/mesh.env`")
        return cls(values["HG_GATEWAY"], Path(values["HG_CACERT"]), Path(values["HG_CERT"]), Path(values["HG_KEY"]),
                   values["HG_TOKEN"])

    def channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(self.cacert.read_bytes(), self.key.read_bytes(),
                                                   self.cert.read_bytes())
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        return grpc.secure_channel(self.gateway, credentials, options=options)


class MeshClient:
    """Stubs for every service through one gateway channel, with the token on every call."""

    def __init__(self, connection: MeshConnection, token: str | None = None) -> None:
        self.connection = connection
        self.token = token or connection.token
        self.channel = connection.channel()
        self.detector = detector_pb2_grpc.DetectorStub(self.channel)
        self.planner = planner_pb2_grpc.PlannerStub(self.channel)
        self.predictor = predictor_pb2_grpc.PredictorStub(self.channel)
        self.coordinator = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.audit = audit_pb2_grpc.AuditStub(self.channel)
        self.tenancy = tenancy_pb2_grpc.TenancyStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
