"""Channels from one service to its peers: mTLS with the caller's own certificate,
the peer's identity checked by name, a service token on every call, and the
OpenTelemetry client interceptors so traces continue across hops."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc

from services.common import tracing
from services.common.config import ServiceConfig, identity_of

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


class _ServiceToken(grpc.AuthMetadataPlugin):
    """Reads the service token file, re-reading it when it changes (rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._token = ""

    def token(self) -> str:
        with self._lock:
            mtime = self._path.stat().st_mtime
            if mtime != self._mtime:
                self._token = self._path.read_text().strip()
                self._mtime = mtime
            return self._token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        try:
            callback((("authorization", f"Bearer {self.token()}"),), None)
        except OSError as error:
            callback((), error)


class PeerClients:
    """Lazily opened channels to the other services, closed together at stop."""

    def __init__(self, config: ServiceConfig) -> None:
        self._config = config
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = self._open(service)
        return self._channels[service]

    def stub(self, service: str, stub_class: type) -> Any:
        return stub_class(self.channel(service))

    def _open(self, service: str) -> grpc.aio.Channel:
        address = self._config.peer(service)
        interceptors = tracing.client_interceptors()
        tls = self._config.tls
        if tls is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca.read_bytes(),
            private_key=tls.key.read_bytes(),
            certificate_chain=tls.cert.read_bytes(),
        )
        if self._config.service_token_path is not None:
            call_credentials = grpc.metadata_call_credentials(_ServiceToken(self._config.service_token_path))
            channel_credentials = grpc.composite_channel_credentials(channel_credentials, call_credentials)
        # Verify the peer is the service we meant, not merely someone with a CA-signed cert.
        options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", identity_of(service))]
        return grpc.aio.secure_channel(address, channel_credentials, options=options, interceptors=interceptors)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
