"""Assembling and running one service process.

`__main__` of every service is `run("<name>", build)`: configuration is parsed
once, tracing and the token verifier are set up once, and `build(config,
runtime)` wires the service's store, domain and servicer. Nothing happens at
import, so tests build exactly what they need.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from services.common.clients import PeerClients
from services.common.config import ServiceConfig, from_environment
from services.common.live_config import LiveConfig
from services.common.security import GuardedVerifier, RefusalReporter, RevocationList, SecurityPlumbing
from services.common.server import Server, ServiceDefinition, run_until_signalled
from services.common.tokens import TokenVerifier
from services.common.tracing import setup_tracing

log = logging.getLogger(__name__)

ETCD_CONNECT_TIMEOUT_S = 10.0


class Worker(Protocol):
    """Background work that lives as long as the service (e.g. the audit outbox flusher)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


W = TypeVar("W", bound=Worker)


@dataclass
class Runtime:
    """What a service gets from the platform: peers, live config, etcd."""

    config: ServiceConfig
    peers: PeerClients
    live: LiveConfig
    etcd: Any | None = None  # etcd3aio.Etcd3Client when HG_ETCD_ENDPOINT is set
    security: SecurityPlumbing | None = None  # revocation list, lockouts, refusal reports
    workers: list[Worker] = field(default_factory=list)

    def keep(self, worker: W) -> W:
        """Run `worker` with the service: started once built, stopped (before peers close) at stop."""
        self.workers.append(worker)
        return worker

    async def close(self) -> None:
        for worker in reversed(self.workers):
            try:
                await worker.stop()
            except Exception:
                log.exception("stopping %r failed", worker)
        if self.security is not None:
            await self.security.stop(self.etcd)
        await self.live.stop()
        await self.peers.close()
        if self.etcd is not None:
            await self.etcd.close()


@dataclass
class Assembly:
    """A built service: its gRPC definition and its lifecycle hooks."""

    definition: ServiceDefinition
    on_started: Callable[[Server], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    live_defaults: Mapping[str, Any] = field(default_factory=dict)


Builder = Callable[[ServiceConfig, Runtime], Awaitable[Assembly]]


async def open_runtime(config: ServiceConfig, live_defaults: Mapping[str, Any]) -> Runtime:
    live = LiveConfig(config.service, live_defaults, config.settings)
    etcd = None
    if config.etcd_endpoint:
        from etcd3aio import Etcd3Client

        etcd = Etcd3Client([config.etcd_endpoint])
        await etcd.connect()
        await asyncio.wait_for(etcd.ping(write_check=False), ETCD_CONNECT_TIMEOUT_S)
        await live.start_watching(etcd)
    security = SecurityPlumbing(config.service, RevocationList(), RefusalReporter(config.service, config.replica_id))
    return Runtime(config=config, peers=PeerClients(config), live=live, etcd=etcd, security=security)


def make_verifier(config: ServiceConfig, security: SecurityPlumbing | None = None) -> TokenVerifier:
    if config.jwks_path is None:
        raise SystemExit(f"{config.service}: no JWKS configured; set HG_PKI_DIR or HG_JWKS")
    if security is not None:
        security.verifier = GuardedVerifier.from_file(config.jwks_path, security.revocations,
                                                      issuer=config.issuer, audience=config.audience)
        return security.verifier
    return TokenVerifier.from_jwks_file(config.jwks_path, issuer=config.issuer, audience=config.audience)


async def serve(config: ServiceConfig, build: Builder, live_defaults: Mapping[str, Any]) -> None:
    provider = setup_tracing(config.service)
    runtime = await open_runtime(config, live_defaults)
    assembly = await build(config, runtime)
    for worker in runtime.workers:
        await worker.start()
    security = runtime.security
    server = Server(config, assembly.definition, make_verifier(config, security),
                    on_auth_failure=security.on_auth_failure if security is not None else None)
    if security is not None:
        await security.start(runtime.etcd)

    async def stop() -> None:
        if assembly.on_stop is not None:
            await assembly.on_stop()
        await runtime.close()
        if provider is not None:
            provider.shutdown()  # flushes spans still in the batch

    await run_until_signalled(server, assembly.on_started, stop)


def run(service: str, build: Builder, live_defaults: Mapping[str, Any] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("HG_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = from_environment(service)
    asyncio.run(serve(config, build, live_defaults or {}))
