"""A no-op gRPC echo service: the baseline hop for bench/heal_path.py.

    python -m bench.echo_service        (started by bench.heal_path, configured by HG_* variables)

It is assembled exactly like the six services (services.common.runtime.serve: the
common grpc.aio server, mTLS with a CA-signed certificate, the Guard re-verifying
the JWT with the revocation list from etcd, the access table, the OpenTelemetry
server interceptor, health, reflection), so a call to it pays every cost a service
hop pays except the service's own work. Its one method, `/healing_guard.echo.v1.Echo/Echo`,
answers the request bytes unchanged: a generic handler over raw bytes, so there is
no protobuf to parse on either side (the heal path's request decoding is part of
what the comparison shows).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common import auth
from services.common.config import ServiceConfig, TlsFiles
from services.common.runtime import Assembly, Runtime, serve
from services.common.server import ServiceDefinition
from services.common.vocabulary import Role

NAME = "echo"
SERVICE = "healing_guard.echo.v1.Echo"
METHOD = f"/{SERVICE}/Echo"
ACCESS = {"Echo": auth.roles(Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.SERVICE)}


@dataclass(frozen=True)
class EchoDefinition(ServiceDefinition):
    """The echo service is not one of the mesh's contracts: it names itself."""

    @property
    def full_name(self) -> str:
        return SERVICE


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def register(server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    return Assembly(definition=EchoDefinition(name=NAME, register=register, access=ACCESS))


def config_from_environment(env: dict[str, str]) -> ServiceConfig:
    """The same HG_* variables the services read; the certificate is echo.pem in HG_PKI_DIR."""
    host, _, port = env["HG_LISTEN"].rpartition(":")
    pki = Path(env["HG_PKI_DIR"])
    return ServiceConfig(
        service=NAME,
        listen_host=host or "127.0.0.1",
        listen_port=int(port),
        data_dir=Path(env["HG_DATA_DIR"]),
        tls=TlsFiles(ca=pki / "ca.pem", cert=pki / f"{NAME}.pem", key=pki / f"{NAME}-key.pem"),
        jwks_path=pki / "jwks.json",
        etcd_endpoint=env.get("HG_ETCD_ENDPOINT") or None,
        replica_id=env.get("HG_REPLICA_ID", NAME),
    )


def main() -> None:
    import asyncio

    logging.basicConfig(
        level=os.environ.get("HG_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format=f"%(asctime)s {NAME} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config_from_environment(dict(os.environ)), build, {}))


if __name__ == "__main__":
    main()
