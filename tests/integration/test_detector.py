"""The detector through the gateway: stored diagnoses, clusters, the per-tenant knowledge
base, test history and retraining, each invisible to other tenants; bad input refused
with the field named, nothing stored, and the shared mesh still serving afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from deploy.client import MeshClient, MeshConnection
from deploy.mesh import Mesh
from healing_guard.common.v1 import common_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.tenancy.v1 import tenancy_pb2
from services.detector.intake import FailureMetadata

pytestmark = pytest.mark.integration

OOM = b"npm run build\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n"
COMMIT = "b" * 40


def report(run_id: str, junit: bytes = b"", repository: str = "acme/web") -> detector_pb2.FailureReport:
    return detector_pb2.FailureReport(
        job=common_pb2.JobRef(
            provider=common_pb2.PROVIDER_GITHUB_ACTIONS,
            repository=repository,
            pipeline="ci",
            job="test",
            run_id=run_id,
            attempt=1,
            commit_sha=COMMIT,
            branch="main",
        ),
        exit_code=1,
        duration_seconds=30,
        junit_xml=junit,
        diagnose_only=True,
    )


def junit(failed: list[str], passed: list[str] = ()) -> bytes:  # type: ignore[assignment]
    cases = [
        f'<testcase classname="tests.test_api" name="{n}"><failure message="boom"/></testcase>'
        for n in failed
    ]
    cases += [f'<testcase classname="tests.test_api" name="{n}"/>' for n in passed]
    return f'<testsuite name="s">{"".join(cases)}</testsuite>'.encode()


def failure_id(tenant: str, run_id: str, repository: str = "acme/web") -> str:
    from services.common.vocabulary import Provider

    return FailureMetadata(
        tenant,
        Provider.PROVIDER_GITHUB_ACTIONS,
        repository,
        "ci",
        "test",
        run_id,
        1,
        COMMIT,
        "main",
        "",
        "",
        1,
        30,
        0,
        "",
        True,
    ).failure_id


def rpc_error(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


@pytest.fixture()
def tenant_admin(connection: MeshConnection, signer, tenant: str) -> Iterator[MeshClient]:  # type: ignore[no-untyped-def]
    token = signer.mint(subject="kb-admin", tenant=tenant, roles=["admin", "viewer"], ttl_seconds=3600)
    with MeshClient(connection, token=token) as client:
        yield client


@pytest.fixture()
def other(connection: MeshConnection, signer, admin: MeshClient) -> Iterator[MeshClient]:  # type: ignore[no-untyped-def]
    """An admin of a second, fresh tenant: the would-be prober."""
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    admin.tenancy.CreateTenant(
        tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, plan="team"), metadata=admin.metadata, timeout=10
    )
    token = signer.mint(
        subject="prober", tenant=tenant_id, roles=["admin", "operator", "viewer"], ttl_seconds=3600
    )
    with MeshClient(connection, token=token) as client:
        yield client


def test_a_tenant_sees_only_its_own_diagnoses_clusters_patterns_and_history(
    operator: MeshClient, tenant_admin: MeshClient, other: MeshClient, tenant: str
) -> None:
    created = tenant_admin.detector.CreatePattern(
        detector_pb2.CreatePatternRequest(
            pattern=detector_pb2.Pattern(
                pattern_id="vault-sealed",
                failure_class=common_pb2.INFRASTRUCTURE,
                expression=r"Vault is sealed",
                priority=90,
                description="secrets backend down",
            )
        ),
        metadata=tenant_admin.metadata,
        timeout=10,
    )
    assert created.tenant_id == tenant and created.enabled and not created.built_in
    answer = operator.detector.ReportFailure(
        detector_pb2.ReportFailureRequest(
            report=report("9001", junit(["test_login"])), log=b"deploy\nerror: Vault is sealed\n"
        ),
        metadata=operator.metadata,
        timeout=30,
    )
    diagnosis = answer.diagnosis
    assert diagnosis.decided_by == "pattern:vault-sealed" and diagnosis.cluster_id
    stored = operator.detector.GetDiagnosis(
        detector_pb2.GetDiagnosisRequest(failure_id=diagnosis.failure_id),
        metadata=operator.metadata,
        timeout=10,
    )
    assert (stored.failure_class, stored.cluster_id, list(stored.evidence)) == (
        common_pb2.INFRASTRUCTURE,
        diagnosis.cluster_id,
        list(diagnosis.evidence),
    )
    clusters = operator.detector.ListClusters(
        detector_pb2.ListClustersRequest(), metadata=operator.metadata, timeout=10
    ).clusters
    assert [c.cluster_id for c in clusters] == [diagnosis.cluster_id] and clusters[0].repositories == [
        "acme/web"
    ]
    history = operator.detector.GetTestHistory(
        detector_pb2.GetTestHistoryRequest(test_name="tests.test_api::test_login"),
        metadata=operator.metadata,
        timeout=10,
    )
    assert [r.run_id for r in history.runs] == ["9001"]

    md = other.metadata
    for call in (
        lambda: other.detector.GetDiagnosis(
            detector_pb2.GetDiagnosisRequest(failure_id=diagnosis.failure_id), metadata=md, timeout=10
        ),
        lambda: other.detector.GetPattern(
            detector_pb2.GetPatternRequest(pattern_id="vault-sealed"), metadata=md, timeout=10
        ),
        lambda: other.detector.DeletePattern(
            detector_pb2.DeletePatternRequest(pattern_id="vault-sealed"), metadata=md, timeout=10
        ),
        lambda: other.detector.UpdatePattern(
            detector_pb2.UpdatePatternRequest(
                pattern=detector_pb2.Pattern(
                    pattern_id="vault-sealed", failure_class=common_pb2.NETWORK, expression="x", enabled=True
                )
            ),
            metadata=md,
            timeout=10,
        ),
    ):
        assert rpc_error(call).code() is grpc.StatusCode.NOT_FOUND
    # Naming the tenant in the body does not help.
    error = rpc_error(
        lambda: other.detector.GetDiagnosis(
            detector_pb2.GetDiagnosisRequest(failure_id=diagnosis.failure_id, tenant_id=tenant),
            metadata=md,
            timeout=10,
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (
        other.detector.ListClusters(detector_pb2.ListClustersRequest(), metadata=md, timeout=10).clusters
        == []
    )
    assert (
        other.detector.ListPatterns(detector_pb2.ListPatternsRequest(), metadata=md, timeout=10).patterns
        == []
    )
    assert (
        other.detector.GetTestHistory(
            detector_pb2.GetTestHistoryRequest(test_name="tests.test_api::test_login"),
            metadata=md,
            timeout=10,
        ).runs
        == []
    )
    # The prober's probes changed nothing of the owner's.
    mine = tenant_admin.detector.GetPattern(
        detector_pb2.GetPatternRequest(pattern_id="vault-sealed"), metadata=tenant_admin.metadata, timeout=10
    )
    assert mine.failure_class == common_pb2.INFRASTRUCTURE


def test_pattern_crud_rules(operator: MeshClient, tenant_admin: MeshClient) -> None:
    md = tenant_admin.metadata
    pattern = detector_pb2.Pattern(
        pattern_id="legacy-proxy",
        failure_class=common_pb2.NETWORK,
        expression=r"proxy [0-9.]+ refused",
        priority=80,
    )
    error = rpc_error(
        lambda: operator.detector.CreatePattern(
            detector_pb2.CreatePatternRequest(pattern=pattern), metadata=operator.metadata, timeout=10
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED  # operators may not edit the knowledge base
    for expression in (r"(a+)+\1", r"(?<=x)y", "[unclosed"):
        bad = detector_pb2.Pattern(pattern_id="bad", failure_class=common_pb2.NETWORK, expression=expression)
        error = rpc_error(
            lambda b=bad: tenant_admin.detector.CreatePattern(
                detector_pb2.CreatePatternRequest(pattern=b), metadata=md, timeout=10
            )
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "pattern.expression" in error.details()
    error = rpc_error(
        lambda: tenant_admin.detector.UpdatePattern(
            detector_pb2.UpdatePatternRequest(
                pattern=detector_pb2.Pattern(
                    pattern_id="disk.no-space",
                    failure_class=common_pb2.DISK_FULL,
                    expression="full",
                    enabled=True,
                )
            ),
            metadata=md,
            timeout=10,
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED and "read-only" in error.details()
    error = rpc_error(
        lambda: tenant_admin.detector.DeletePattern(
            detector_pb2.DeletePatternRequest(pattern_id="disk.no-space"), metadata=md, timeout=10
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    tenant_admin.detector.CreatePattern(
        detector_pb2.CreatePatternRequest(pattern=pattern), metadata=md, timeout=10
    )
    error = rpc_error(
        lambda: tenant_admin.detector.CreatePattern(
            detector_pb2.CreatePatternRequest(pattern=pattern), metadata=md, timeout=10
        )
    )
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    listed = tenant_admin.detector.ListPatterns(
        detector_pb2.ListPatternsRequest(include_built_in=True, page=common_pb2.PageRequest(page_size=500)),
        metadata=md,
        timeout=10,
    )
    assert "legacy-proxy" in {p.pattern_id for p in listed.patterns}
    assert any(p.built_in for p in listed.patterns)
    tenant_admin.detector.DeletePattern(
        detector_pb2.DeletePatternRequest(pattern_id="legacy-proxy"), metadata=md, timeout=10
    )
    assert (
        rpc_error(
            lambda: tenant_admin.detector.GetPattern(
                detector_pb2.GetPatternRequest(pattern_id="legacy-proxy"), metadata=md, timeout=10
            )
        ).code()
        is grpc.StatusCode.NOT_FOUND
    )


def _stream(
    first: detector_pb2.FailureReport | None, chunks: list[bytes]
) -> Iterator[detector_pb2.StreamFailureRequest]:
    if first is not None:
        yield detector_pb2.StreamFailureRequest(report=first)
    for chunk in chunks:
        yield detector_pb2.StreamFailureRequest(log_chunk=chunk)


def test_bad_input_is_refused_naming_the_problem_and_stores_nothing(
    operator: MeshClient, tenant: str, mesh: Mesh
) -> None:
    md = operator.metadata
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE z [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b"<testsuite>&b;</testsuite>"
    )
    cases = [
        (
            "empty log",
            lambda: operator.detector.ReportFailure(
                detector_pb2.ReportFailureRequest(report=report("bad-1"), log=b""), metadata=md, timeout=30
            ),
            "log",
        ),
        (
            "XML bomb",
            lambda: operator.detector.ReportFailure(
                detector_pb2.ReportFailureRequest(report=report("bad-2", bomb), log=OOM),
                metadata=md,
                timeout=30,
            ),
            "report.junit_xml",
        ),
        (
            "broken JUnit",
            lambda: operator.detector.ReportFailure(
                detector_pb2.ReportFailureRequest(
                    report=report("bad-3", b"<testsuite><testcase name="), log=OOM
                ),
                metadata=md,
                timeout=30,
            ),
            "report.junit_xml",
        ),
        (
            "no messages",
            lambda: operator.detector.StreamFailure(_stream(None, []), metadata=md, timeout=30),
            "report",
        ),
        (
            "chunk before metadata",
            lambda: operator.detector.StreamFailure(_stream(None, [OOM]), metadata=md, timeout=30),
            "report",
        ),
        (
            "metadata only",
            lambda: operator.detector.StreamFailure(_stream(report("bad-4"), []), metadata=md, timeout=30),
            "log_chunk",
        ),
        (
            "zero-byte chunks only",
            lambda: operator.detector.StreamFailure(
                _stream(report("bad-5"), [b"", b"", b""]), metadata=md, timeout=30
            ),
            "log_chunk",
        ),
        (
            "a second report mid-stream",
            lambda: operator.detector.StreamFailure(
                iter([detector_pb2.StreamFailureRequest(report=report("bad-6")),
                      detector_pb2.StreamFailureRequest(log_chunk=OOM),
                      detector_pb2.StreamFailureRequest(report=report("bad-6"))]),
                metadata=md, timeout=30),
            "report",
        ),
    ]
    for name, call, field in cases:
        error = rpc_error(call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (name, error.code(), error.details())
        assert field in error.details(), (name, error.details())
    for run_id in ("bad-1", "bad-2", "bad-3", "bad-4", "bad-5", "bad-6"):
        error = rpc_error(
            lambda r=run_id: operator.detector.GetDiagnosis(
                detector_pb2.GetDiagnosisRequest(failure_id=failure_id(tenant, r)), metadata=md, timeout=10
            )
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND, run_id
    assert (
        operator.detector.ListClusters(detector_pb2.ListClustersRequest(), metadata=md, timeout=10).clusters
        == []
    )
    # Zero-byte chunks among real ones, and bytes that are not UTF-8, are simply a log.
    answer = operator.detector.StreamFailure(
        _stream(report("ok-1"), [b"", b"\xff\xfe\xc3(\n", b"", OOM, b""]), metadata=md, timeout=30
    )
    assert answer.diagnosis.failure_class == common_pb2.OUT_OF_MEMORY
    answer = operator.detector.ReportFailure(
        detector_pb2.ReportFailureRequest(report=report("ok-2"), log=b"\x80\x81\xfe\xff\n" * 100 + OOM),
        metadata=md,
        timeout=30,
    )
    assert answer.diagnosis.failure_class == common_pb2.OUT_OF_MEMORY
    mesh.wait_serving(mesh.gateway_address, "detector", via_gateway=True, timeout=10)


def test_flaky_evidence_from_history_through_the_gateway(operator: MeshClient) -> None:
    md = operator.metadata
    log = b"FAILED tests/test_api.py::test_pay - AssertionError\n"
    operator.detector.ReportFailure(
        detector_pb2.ReportFailureRequest(report=report("7001", junit(["test_pay"], ["test_cart"])), log=log),
        metadata=md,
        timeout=30,
    )
    answer = operator.detector.ReportFailure(
        detector_pb2.ReportFailureRequest(report=report("7002", junit(["test_cart"], ["test_pay"])), log=log),
        metadata=md,
        timeout=30,
    )
    assert list(answer.diagnosis.flaky_tests) == ["tests.test_api::test_cart"]
    assert set(answer.diagnosis.flaky_evidence_run_ids) == {"7001", "7002"}
    assert answer.diagnosis.failure_class == common_pb2.FLAKY_TEST
    history = operator.detector.GetTestHistory(
        detector_pb2.GetTestHistoryRequest(test_name="tests.test_api::test_pay", repository="acme/web"),
        metadata=md,
        timeout=10,
    )
    assert history.flaky and set(history.evidence_run_ids) == {"7001", "7002"}
    assert sorted(r.passed for r in history.runs) == [False, True]


GITHUB_DISK_FULL = b"""\
2025-03-11T10:09:40.1000000Z ##[group]Run actions/checkout@v4
2025-03-11T10:09:41.1000000Z Syncing repository: acme/web
2025-03-11T10:09:42.1000000Z ##[endgroup]
2025-03-11T10:09:43.1000000Z ##[group]Run docker build -t acme/web:4711 .
2025-03-11T10:09:43.1000000Z docker build -t acme/web:4711 .
2025-03-11T10:09:43.1000000Z ##[endgroup]
2025-03-11T10:09:44.1000000Z #7 [3/5] RUN npm ci
2025-03-11T10:09:45.1000000Z write /var/lib/docker/tmp/buildkit-mount8812/blob-4711: no space left on device
2025-03-11T10:09:46.1000000Z ##[error]Process completed with exit code 1.
"""


def test_a_github_actions_log_comes_back_with_its_failed_step_and_decisive_line(operator: MeshClient) -> None:
    answer = operator.detector.ReportFailure(
        detector_pb2.ReportFailureRequest(report=report("7101"), log=GITHUB_DISK_FULL),
        metadata=operator.metadata,
        timeout=30,
    )
    stored = operator.detector.GetDiagnosis(
        detector_pb2.GetDiagnosisRequest(failure_id=answer.diagnosis.failure_id),
        metadata=operator.metadata,
        timeout=10,
    )
    log_lines = GITHUB_DISK_FULL.decode().splitlines()
    for diagnosis in (answer.diagnosis, stored):
        step, decisive = diagnosis.failed_step, diagnosis.decisive_line
        assert diagnosis.HasField("failed_step") and diagnosis.HasField("decisive_line"), diagnosis
        assert (step.command, step.exit_code, step.framing, step.end_line) == (
            "docker build -t acme/web:4711 .", 1, "github_actions", 9
        )
        # The real line (the template reads "write <path>: ..."), at its own line number.
        assert decisive.text and decisive.text in log_lines[decisive.line - 1], (decisive, diagnosis.template)
        assert "<" not in decisive.text and decisive.text != diagnosis.template


def test_retrain_without_enough_confirmed_labels_says_so(
    tenant_admin: MeshClient, operator: MeshClient
) -> None:
    error = rpc_error(
        lambda: tenant_admin.detector.Retrain(
            detector_pb2.RetrainRequest(), metadata=tenant_admin.metadata, timeout=60
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "outcome-confirmed labels" in error.details() and "has 0" in error.details()
    error = rpc_error(
        lambda: operator.detector.Retrain(
            detector_pb2.RetrainRequest(), metadata=operator.metadata, timeout=60
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_the_trained_model_comes_up_in_the_background(operator: MeshClient) -> None:
    """Health answered at once; the model is trained beside it and then named on diagnoses."""
    deadline = time.monotonic() + 90
    n = 0
    while True:
        n += 1
        answer = operator.detector.ReportFailure(
            detector_pb2.ReportFailureRequest(report=report(f"m-{n}"), log=OOM),
            metadata=operator.metadata,
            timeout=30,
        )
        if answer.diagnosis.model_version:
            break
        assert time.monotonic() < deadline, "no model_version on diagnoses within 90 s of the mesh starting"
        time.sleep(2)
    stored = operator.detector.GetDiagnosis(
        detector_pb2.GetDiagnosisRequest(failure_id=answer.diagnosis.failure_id),
        metadata=operator.metadata,
        timeout=10,
    )
    assert stored.model_version == answer.diagnosis.model_version
