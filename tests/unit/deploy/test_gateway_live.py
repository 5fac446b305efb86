"""One real Envoy with the rendered config and no backends: what a client notices at the edge.

No service runs, so a request that gets past TLS, jwt_authn and the rate limiter ends in
UNAVAILABLE ("no healthy upstream"); the status code tells which stage answered.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy.envoy.gateway import SERVICE_NAMES, Endpoint, GatewaySpec, TokenBucket, render_gateway_config
from deploy.pki.make_pki import PkiPaths, make_foreign_client
from services.common.tokens import load_signer
from tests.unit.deploy.test_gateway import ENVOY, base_id

pytestmark = pytest.mark.integration

API = "/healing_guard.planner.v1.Planner/GetPolicy"
HEALTH = "/grpc.health.v1.Health/Check"
TENANT_BURST = 3


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def gateway(pki: PkiPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    work = tmp_path_factory.mktemp("gateway")
    listen, admin, *upstream_ports = _free_ports(2 + len(SERVICE_NAMES))
    spec = GatewaySpec(
        upstreams={name: Endpoint("127.0.0.1", port) for name, port in zip(SERVICE_NAMES, upstream_ports, strict=True)},
        ca=pki.ca, cert=pki.cert("gateway"), key=pki.key("gateway"), jwks_path=pki.jwks,
        listen_port=listen, admin_port=admin,
        tenant_rate_limit=TokenBucket(TENANT_BURST, 1, 60.0))
    (work / "envoy.json").write_text(json.dumps(render_gateway_config(spec)))
    log = (work / "envoy.log").open("w")
    process = subprocess.Popen(
        [str(ENVOY), "-c", str(work / "envoy.json"), "--base-id", str(base_id()), "-l", "warning",
         "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Envoy not ready on admin port {admin} within 20 s; log: "
                            f"{(work / 'envoy.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield listen
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _call(port: int, pki: PkiPaths, path: str, token: str | None = None,
          extra: tuple[tuple[str, str], ...] = (), cert: Path | None = None, key: Path | None = None,
          ) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=(key or pki.key("operator")).read_bytes(),
        certificate_chain=(cert or pki.cert("operator")).read_bytes())
    metadata = list(extra) + ([("authorization", f"Bearer {token}")] if token else [])
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            call(b"", metadata=metadata, timeout=5)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_api_without_token_is_unauthenticated(gateway: int, pki: PkiPaths) -> None:
    assert _call(gateway, pki, API) == grpc.StatusCode.UNAUTHENTICATED
    assert _call(gateway, pki, API, token="not.a.jwt") == grpc.StatusCode.UNAUTHENTICATED


def test_valid_token_passes_the_edge(gateway: int, pki: PkiPaths) -> None:
    token = load_signer(pki.signing_key, pki.jwks).mint("alice", "tenant-pass", ["operator"])
    assert _call(gateway, pki, API, token) == grpc.StatusCode.UNAVAILABLE


def test_health_is_open(gateway: int, pki: PkiPaths) -> None:
    assert _call(gateway, pki, HEALTH) == grpc.StatusCode.UNAVAILABLE
    assert _call(gateway, pki, HEALTH, extra=(("x-hg-service", "audit"),)) == grpc.StatusCode.UNAVAILABLE


def test_client_certificate_from_another_ca_is_refused(gateway: int, pki: PkiPaths, tmp_path: Path) -> None:
    foreign = make_foreign_client(tmp_path)
    # With a trusted certificate this call is UNAUTHENTICATED (no token); with the foreign
    # one the TLS handshake fails first, so no filter ever answers.
    assert _call(gateway, pki, API) == grpc.StatusCode.UNAUTHENTICATED
    assert _call(gateway, pki, API, cert=foreign.cert, key=foreign.key) == grpc.StatusCode.UNAVAILABLE
    assert _call(gateway, pki, HEALTH, cert=foreign.cert, key=foreign.key) == grpc.StatusCode.UNAVAILABLE


def test_rate_limit_is_per_tenant_and_keyed_on_the_verified_claim(gateway: int, pki: PkiPaths) -> None:
    signer = load_signer(pki.signing_key, pki.jwks)
    greedy = signer.mint("alice", "tenant-greedy", ["operator"])
    codes = [_call(gateway, pki, API, greedy) for _ in range(TENANT_BURST + 1)]
    assert codes == [grpc.StatusCode.UNAVAILABLE] * TENANT_BURST + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    # Another tenant has its own bucket.
    other = signer.mint("bob", "tenant-other", ["operator"])
    assert _call(gateway, pki, API, other) == grpc.StatusCode.UNAVAILABLE
    # A client-sent x-hg-tenant neither drains nor borrows the greedy tenant's bucket.
    spoof = (("x-hg-tenant", "tenant-greedy"),)
    assert _call(gateway, pki, HEALTH, extra=spoof) == grpc.StatusCode.UNAVAILABLE
    assert _call(gateway, pki, API, other, extra=spoof) == grpc.StatusCode.UNAVAILABLE
