"""Hostile bodies through the gateway (issue 15): oversized identifiers, bodies that do
not decode, integers beyond what the stores take. Each is refused with INVALID_ARGUMENT
naming the field and a bounded message, and nobody else's calls suffer for it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from deploy.client import MeshClient, MeshConnection
from healing_guard.audit.v1 import audit_pb2
from healing_guard.detector.v1 import detector_pb2

pytestmark = pytest.mark.integration

TIMEOUT = 10
HUGE_ID = "A" * 70_000


def _code(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture()
def bystander(connection: MeshConnection, operator: MeshClient) -> Iterator[MeshClient]:
    """Another client, on its own connection to the gateway, with the same rights."""
    with MeshClient(connection, token=operator.token) as client:
        yield client


def test_an_oversized_id_is_invalid_argument_and_other_clients_are_unaffected(
    operator: MeshClient, bystander: MeshClient
) -> None:
    hostile = detector_pb2.GetDiagnosisRequest(failure_id=HUGE_ID)
    ordinary = detector_pb2.ListClustersRequest()

    def attack(_: int) -> tuple[grpc.StatusCode, str]:
        return _code(lambda: operator.detector.GetDiagnosis(hostile, metadata=operator.metadata, timeout=TIMEOUT))

    def ordinary_call(_: int) -> tuple[grpc.StatusCode, str]:
        return _code(lambda: bystander.detector.ListClusters(ordinary, metadata=bystander.metadata, timeout=TIMEOUT))

    with ThreadPoolExecutor(max_workers=8) as pool:
        attacks = pool.map(attack, range(60))
        ordinary_results = pool.map(ordinary_call, range(120))
        refused, served = list(attacks), list(ordinary_results)
    failed = [(code, details[:120]) for code, details in served if code is not grpc.StatusCode.OK]
    assert not failed, f"{len(failed)} of {len(served)} ordinary calls failed: {failed[:3]}"
    assert {code for code, _ in refused} == {grpc.StatusCode.INVALID_ARGUMENT}, refused[:3]
    assert {details for _, details in refused} == {"failure_id: must be at most 512 characters, got 70000"}


@pytest.mark.parametrize("body", [b"\xff\xff", b"\x0a\x02\xff\xfe"], ids=["garbage", "invalid-utf8"])
def test_an_undecodable_body_is_invalid_argument_and_needs_a_token_first(
    operator: MeshClient, connection: MeshConnection, body: bytes
) -> None:
    raw = operator.channel.unary_unary("/healing_guard.detector.v1.Detector/GetDiagnosis")
    code, details = _code(lambda: raw(body, metadata=operator.metadata, timeout=TIMEOUT))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "GetDiagnosisRequest" in details, details
    code, _ = _code(lambda: raw(body, timeout=TIMEOUT))
    assert code is grpc.StatusCode.UNAUTHENTICATED

    stream = operator.channel.stream_unary("/healing_guard.detector.v1.Detector/StreamFailure")
    code, details = _code(lambda: stream(iter([body]), metadata=operator.metadata, timeout=TIMEOUT))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "StreamFailureRequest" in details, details


@pytest.mark.parametrize("start_index", [2**63, 2**64 - 1])
def test_list_entries_beyond_what_the_log_can_hold_is_invalid_argument(operator: MeshClient, start_index: int) -> None:
    request = audit_pb2.ListEntriesRequest(start_index=start_index)
    code, details = _code(lambda: operator.audit.ListEntries(request, metadata=operator.metadata, timeout=TIMEOUT))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, details
    assert details == f"start_index: must be between 0 and {2**63 - 1}, got {start_index}"
