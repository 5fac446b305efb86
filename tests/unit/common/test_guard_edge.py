"""The common server's edge against hostile bodies: a real grpc.aio server on loopback
(port 0, no TLS), the Guard interceptor, the detector's servicer over a fake core and
a coordinator servicer that streams nothing. What a caller sees, and what is logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2_grpc
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from services.common.config import ServiceConfig
from services.common.errors import NotFound
from services.common.server import Server, ServiceDefinition
from services.common.tokens import TokenSigner, TokenVerifier, public_jwk
from services.coordinator.access import ACCESS as COORDINATOR_ACCESS
from services.detector.access import ACCESS as DETECTOR_ACCESS
from services.detector.server import DetectorServicer

DETECTOR = "/healing_guard.detector.v1.Detector/"
COORDINATOR = "/healing_guard.coordinator.v1.Coordinator/"
UNDECODABLE = [b"\xff\xff", b"\x0a\x02\xff\xfe"]  # garbage; field 1 (a string) with invalid UTF-8
UNDECODABLE_IDS = ["garbage", "invalid-utf8-string"]


class _FakeCore:
    def get(self, tenant: str, failure_id: str) -> Any:
        raise NotFound("diagnosis", failure_id)

    def diagnose_stream(self, meta: Any, chunks: Iterator[bytes], junit: bytes | None) -> Any:
        for _ in chunks:
            pass
        raise AssertionError("a stream with an undecodable message must not be diagnosed")


class _Coordinator(coordinator_pb2_grpc.CoordinatorServicer):
    async def WatchActions(self, request, context):  # type: ignore[no-untyped-def]
        for _ in ():
            yield


def _signer() -> TokenSigner:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TokenSigner(pem, public_jwk(key)["kid"])


SIGNER = _signer()
TOKEN = SIGNER.mint("ci-bot", "acme", ["operator", "viewer"])
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _register(server: grpc.aio.Server) -> None:
    detector_pb2_grpc.add_DetectorServicer_to_server(DetectorServicer(_FakeCore(), None), server)  # type: ignore[arg-type]
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(_Coordinator(), server)


def _serve(test: Callable[[grpc.aio.Channel], Awaitable[None]]) -> None:
    async def main() -> None:
        definition = ServiceDefinition("detector", _register, {**DETECTOR_ACCESS, **COORDINATOR_ACCESS})
        server = Server(ServiceConfig("detector", grace_seconds=0), definition,
                        TokenVerifier({"keys": [SIGNER.public_jwk()]}))
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await test(channel)
        finally:
            await server.stop(0)

    asyncio.run(main())


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _raw_stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _no_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]


@pytest.mark.parametrize("body", UNDECODABLE, ids=UNDECODABLE_IDS)
def test_an_undecodable_unary_body_is_invalid_argument_after_authentication(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(DETECTOR + "GetDiagnosis")
        code, details = await _code(call(body, metadata=AUTH, timeout=5))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, details
        assert "GetDiagnosisRequest" in details
        # No token: refused as unauthenticated whatever the body, never UNKNOWN.
        code, _ = await _code(call(body, timeout=5))
        assert code is grpc.StatusCode.UNAUTHENTICATED

    _serve(test)
    _no_error_logs(caplog)


@pytest.mark.parametrize("body", UNDECODABLE, ids=UNDECODABLE_IDS)
def test_an_undecodable_first_stream_message_is_invalid_argument(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.stream_unary(DETECTOR + "StreamFailure")
        code, details = await _code(call(_raw_stream([body]), metadata=AUTH, timeout=5))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, details
        assert "StreamFailureRequest" in details
        code, _ = await _code(call(_raw_stream([body]), timeout=5))
        assert code is grpc.StatusCode.UNAUTHENTICATED

    _serve(test)
    _no_error_logs(caplog)


def test_an_undecodable_later_stream_message_is_invalid_argument_naming_its_position(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = common_pb2.JobRef(provider=common_pb2.PROVIDER_GITHUB_ACTIONS, repository="acme/web", pipeline="ci",
                            job="test", run_id="r-1", attempt=1)
    first = detector_pb2.StreamFailureRequest(report=detector_pb2.FailureReport(job=job)).SerializeToString()
    chunk = detector_pb2.StreamFailureRequest(log_chunk=b"ERROR boom\n").SerializeToString()

    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.stream_unary(DETECTOR + "StreamFailure")
        code, details = await _code(call(_raw_stream([first, chunk, b"\xff\xff"]), metadata=AUTH, timeout=5))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, details
        assert "message 3 of the stream" in details

    _serve(test)
    _no_error_logs(caplog)


@pytest.mark.parametrize("body", [b"\xff\xff", b"\x12\x02\xff\xfe"], ids=UNDECODABLE_IDS)  # plan_id is field 2
def test_an_undecodable_server_streaming_request_is_invalid_argument(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.unary_stream(COORDINATOR + "WatchActions")

        async def drain(metadata: Any) -> None:
            async for _ in call(body, metadata=metadata, timeout=5):
                pass

        code, details = await _code(drain(AUTH))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, details
        code, _ = await _code(drain(None))
        assert code is grpc.StatusCode.UNAUTHENTICATED

    _serve(test)
    _no_error_logs(caplog)


def test_a_decodable_body_still_reaches_the_servicer() -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(DETECTOR + "GetDiagnosis")
        code, details = await _code(call(b"\x0a\x03f-1", metadata=AUTH, timeout=5))
        assert code is grpc.StatusCode.NOT_FOUND and "'f-1'" in details

    _serve(test)


def test_an_oversized_identifier_is_invalid_argument_with_a_bounded_message() -> None:
    body = detector_pb2.GetDiagnosisRequest(failure_id="A" * 70_000).SerializeToString()

    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(DETECTOR + "GetDiagnosis")
        code, details = await _code(call(body, metadata=AUTH, timeout=5))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, details[:200]
        assert details == "failure_id: must be at most 512 characters, got 70000"
        code, _ = await _code(call(body, timeout=5))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        # At the limit it reaches the servicer; the NOT_FOUND that echoes it stays bounded.
        at_limit = detector_pb2.GetDiagnosisRequest(failure_id="A" * 512).SerializeToString()
        code, details = await _code(call(at_limit, metadata=AUTH, timeout=5))
        assert code is grpc.StatusCode.NOT_FOUND and len(details.encode()) <= 512 and details.endswith("\u2026")

    _serve(test)
