"""The mesh as its users meet it: through the Envoy gateway, with grpcurl and with
gRPC clients, over mTLS with JWTs. Real etcd, real Envoy, six real service processes."""

from __future__ import annotations

import json
import subprocess
import time

import grpc
import pytest

from deploy.client import MeshClient, MeshConnection
from deploy.heal_examples import EXAMPLES, failure_report, heal
from deploy.mesh import SERVICES, Mesh
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from services.common.tokens import TokenSigner
from tests.integration.conftest import grpcurl, status_of

pytestmark = pytest.mark.integration

MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text())


def example(name_part: str) -> dict:
    return next(e for e in MANIFEST if name_part in e["file"])


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_serving_through_the_gateway(mesh: Mesh, service: str) -> None:
    result = subprocess.run(grpcurl(mesh, "grpc.health.v1.Health/Check", service=service),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "SERVING"


def test_reflection_through_the_gateway_lists_the_whole_mesh(mesh: Mesh) -> None:
    result = subprocess.run(grpcurl(mesh, "list"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    for name in ("Detector", "Predictor", "Planner", "Tenancy", "Audit", "Coordinator"):
        assert f"healing_guard.{name.lower()}.v1.{name}" in listed
    assert "grpc.health.v1.Health" in listed


def test_a_sample_failure_is_healed_end_to_end_with_verified_audit(operator: MeshClient) -> None:
    report = heal(operator, example("oom_killed"))
    assert report.error == ""
    assert report.failure_class == "OUT_OF_MEMORY"
    assert report.plan and report.plan[0] != "ESCALATE"
    assert any(a["state"] == "SUCCEEDED" for a in report.actions), report.actions
    kinds = {entry.split()[1] for entry in report.audit_entries}
    assert {"DIAGNOSIS", "PLAN", "ACTION", "OUTCOME"} <= kinds
    assert report.audit_verified


def test_a_genuine_compile_error_is_escalated_not_retried(operator: MeshClient) -> None:
    report = heal(operator, example("compile_error"))
    assert report.failure_class == "COMPILE_ERROR"
    assert report.plan == ["ESCALATE"]
    assert [a["kind"] for a in report.actions] == ["ESCALATE"]


def _report_call(client: MeshClient, log: bytes = b"error: something broke\n", **job_changes: object):
    report = failure_report(example("oom_killed"))
    for key, value in job_changes.items():
        setattr(report.job, key, value)
    request = coordinator_pb2.HealFailureRequest(report=report, log=log)
    return lambda: client.coordinator.HealFailure(request, metadata=client.metadata, timeout=30)


def _error(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_no_token_is_unauthenticated_at_the_gateway(connection: MeshConnection) -> None:
    with MeshClient(connection, token="unused") as client:
        request = coordinator_pb2.HealFailureRequest(report=failure_report(example("oom")), log=b"x")
        error = _error(lambda: client.coordinator.HealFailure(request, timeout=10))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


# Envoy's jwt_authn answers a token for another audience with 403 ("Audiences in Jwt
# are not allowed"), which gRPC maps to PERMISSION_DENIED; the others are 401.
@pytest.mark.parametrize(("problem", "refusal"), [
    ("expired", grpc.StatusCode.UNAUTHENTICATED),
    ("wrong audience", grpc.StatusCode.PERMISSION_DENIED),
    ("other key", grpc.StatusCode.UNAUTHENTICATED),
])
def test_bad_tokens_are_refused(  # type: ignore[no-untyped-def]
    connection: MeshConnection, mesh: Mesh, signer, tenant: str, problem: str, refusal: grpc.StatusCode
) -> None:
    if problem == "expired":
        token = signer.mint("ci-bot", tenant, ["operator"], ttl_seconds=60, now=time.time() - 3600)
    elif problem == "wrong audience":
        from deploy.pki.make_pki import load_pki

        key = load_pki(mesh.pki_dir).signing_key.read_bytes()
        token = TokenSigner(key, signer.kid, audience="someone-else").mint("ci-bot", tenant, ["operator"])
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        other = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        token = TokenSigner(other, signer.kid).mint("ci-bot", tenant, ["operator"])
    with MeshClient(connection, token=token) as client:
        assert status_of(_report_call(client)) is refusal


def test_a_client_without_certificate_fails_the_tls_handshake(mesh: Mesh) -> None:
    credentials = grpc.ssl_channel_credentials(mesh.pki.ca.read_bytes())  # no client key/cert
    with grpc.secure_channel(mesh.gateway_address, credentials) as channel:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=5)


@pytest.mark.parametrize(("change", "field"), [
    ({"repository": ""}, "report.job.repository"),
    ({"attempt": -3}, "report.job.attempt"),
    ({"provider": 42}, "report.job.provider"),
])
def test_malformed_reports_name_the_field(operator: MeshClient, mesh: Mesh, change: dict, field: str) -> None:
    error = _error(_report_call(operator, **change))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()
    mesh.wait_serving(mesh.gateway_address, "coordinator", via_gateway=True, timeout=10)


def _violations(error: grpc.RpcError) -> list[str]:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no rich status details"
    bad = error_details_pb2.BadRequest()
    (detail,) = status.details
    assert detail.Unpack(bad)
    return [violation.field for violation in bad.field_violations]


EMPTY_JOB_FIELDS = ["report.job.provider", "report.job.repository", "report.job.pipeline", "report.job.job",
                    "report.job.run_id", "report.job.attempt"]


def test_heal_failure_refuses_every_missing_field_at_once(operator: MeshClient) -> None:
    request = coordinator_pb2.HealFailureRequest(report=detector_pb2.FailureReport(exit_code=1))
    error = _error(lambda: operator.coordinator.HealFailure(request, metadata=operator.metadata, timeout=30))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == [*EMPTY_JOB_FIELDS, "log"]


def test_report_failure_refuses_every_missing_field_at_once(operator: MeshClient) -> None:
    request = detector_pb2.ReportFailureRequest(report=detector_pb2.FailureReport(exit_code=1))
    error = _error(lambda: operator.detector.ReportFailure(request, metadata=operator.metadata, timeout=30))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(error) == [*EMPTY_JOB_FIELDS, "log"]


def test_an_oversized_log_points_to_stream_heal_failure(operator: MeshClient, mesh: Mesh) -> None:
    error = _error(_report_call(operator, log=b"x" * (4 * 1024 * 1024 + 1)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "log" in error.details() and "StreamHealFailure" in error.details()
    mesh.wait_serving(mesh.gateway_address, "coordinator", via_gateway=True, timeout=10)


def test_a_large_log_streams_and_is_diagnosed(operator: MeshClient) -> None:
    sample = example("disk_full")
    log = (EXAMPLES / sample["file"]).read_bytes()
    big = b"progress: downloading layer 42% ...\n" * (6 * 1024 * 1024 // 36) + log
    report = failure_report(sample)
    report.diagnose_only = True

    def chunks():  # type: ignore[no-untyped-def]
        yield coordinator_pb2.StreamHealFailureRequest(report=report)
        for start in range(0, len(big), 512 * 1024):
            yield coordinator_pb2.StreamHealFailureRequest(log_chunk=big[start:start + 512 * 1024])

    answer = operator.coordinator.StreamHealFailure(chunks(), metadata=operator.metadata, timeout=120)
    assert answer.diagnosis.failure_class == common_pb2.DISK_FULL
    assert answer.plan.plan_id  # planned...
    assert not answer.action_ids  # ...but diagnose_only queues nothing


def test_healing_the_same_job_attempt_again_resumes_and_queues_nothing_new(operator: MeshClient) -> None:
    call = _report_call(operator, log=(EXAMPLES / example("oom_killed")["file"]).read_bytes(),
                        run_id=f"again-{time.time_ns()}")
    first, again = call(), call()
    assert first.action_ids and not first.resumed
    assert again.resumed and again.workflow_id == first.workflow_id
    assert list(again.action_ids) == list(first.action_ids)
    assert again.diagnosis.failure_id == first.diagnosis.failure_id
    assert again.plan.plan_id == first.plan.plan_id


def test_leader_is_one_of_the_two_replicas(operator: MeshClient) -> None:
    reply = operator.coordinator.Leader(coordinator_pb2.LeaderRequest(), metadata=operator.metadata, timeout=10)
    assert reply.leader_id in {"coordinator-1", "coordinator-2"}
    assert reply.term > 0
