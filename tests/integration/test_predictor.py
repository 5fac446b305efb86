"""The predictor as its users meet it, through the gateway: run history recorded once
(duplicates and conflicts told apart, bad reports refused naming the proto field and
storing nothing), forecasts that say what they rest on, anomalies and recommendations
from a recorded history, tenants that never see each other's runs, retraining that is an
admin's and says why it did or did not replace the model, the healing re-run fed back
by the coordinator, and a recommendation accepted into a plan the coordinator runs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from deploy.client import MeshClient, MeshConnection
from deploy.heal_examples import EXAMPLES, heal
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.planner.v1 import planner_pb2
from healing_guard.predictor.v1 import predictor_pb2
from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.convert import timestamp
from services.planner.recommendations import plan_id_for_recommendation

pytestmark = pytest.mark.integration

TIMEOUT = 10
HOUR = 3600.0
DAY = 86_400.0
SUCCESS, FAILURE = predictor_pb2.RUN_RESULT_SUCCESS, predictor_pb2.RUN_RESULT_FAILURE


# --- helpers ---------------------------------------------------------------------------------


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [violation.field for violation in bad.field_violations]
    return fields


def make_run(
    index: int,
    *,
    result: int = SUCCESS,
    started_at: float | None = None,
    repository: str = "acme/app",
    pipeline: str = "ci",
    job: str = "build",
    duration: float = 600.0,
    memory: float = 1000.0,
    limit: float = 4000.0,
    flaky: tuple[str, ...] = (),
    failure_class: int = 0,
    attempt: int = 1,
) -> predictor_pb2.Run:
    started = time.time() - 3 * DAY + index * HOUR if started_at is None else started_at
    if result == FAILURE and not failure_class:
        failure_class = common_pb2.FLAKY_TEST if flaky else common_pb2.TEST_FAILURE
    return predictor_pb2.Run(
        job=common_pb2.JobRef(
            repository=repository,
            pipeline=pipeline,
            job=job,
            run_id=str(1000 + index),
            attempt=attempt,
            commit_sha="2f50bc72cc31",
            branch="main",
            runner="runner-1",
        ),
        result=result,
        started_at=timestamp(started),
        duration_seconds=duration,
        queue_seconds=20.0,
        peak_memory_mb=memory,
        memory_limit_mb=limit,
        cache_hit=True,
        tests_total=100,
        tests_failed=1 if result == FAILURE else 0,
        failure_class=failure_class,
        flaky_tests=list(flaky),
    )


def record(client: MeshClient, run: predictor_pb2.Run) -> predictor_pb2.RecordRunResponse:
    return client.predictor.RecordRun(
        predictor_pb2.RecordRunRequest(run=run), metadata=client.metadata, timeout=TIMEOUT
    )


def import_runs(
    client: MeshClient, runs: list[predictor_pb2.Run], tenant_id: str = ""
) -> predictor_pb2.ImportRunsResponse:
    return client.predictor.ImportRuns(
        predictor_pb2.ImportRunsRequest(tenant_id=tenant_id, runs=runs), metadata=client.metadata, timeout=60
    )


def forecast(
    client: MeshClient, pipeline: str = "ci", repository: str = "acme/app", horizon: int = 10, job: str = ""
) -> predictor_pb2.ForecastRiskResponse:
    return client.predictor.ForecastRisk(
        predictor_pb2.ForecastRiskRequest(
            repository=repository, pipeline=pipeline, job=job, horizon_runs=horizon
        ),
        metadata=client.metadata,
        timeout=TIMEOUT,
    )


def recommendations(client: MeshClient) -> list[predictor_pb2.Recommendation]:
    return list(
        client.predictor.Recommend(
            predictor_pb2.RecommendRequest(limit=20), metadata=client.metadata, timeout=TIMEOUT
        ).recommendations
    )


def anomalies(client: MeshClient, since: float) -> list[predictor_pb2.Anomaly]:
    return list(
        client.predictor.DetectAnomalies(
            predictor_pb2.DetectAnomaliesRequest(since=timestamp(since)),
            metadata=client.metadata,
            timeout=TIMEOUT,
        ).anomalies
    )


def memory_creep(pipeline: str = "ci") -> list[predictor_pb2.Run]:
    """Twenty runs of one job whose peak memory climbs from 60% to 92% of a 4000 MB limit."""
    start = time.time() - 2 * DAY
    return [
        make_run(i, pipeline=pipeline, started_at=start + i * HOUR, memory=2400.0 + i * 67.0)
        for i in range(20)
    ]


@pytest.fixture()
def client_for(connection: MeshConnection, signer) -> Iterator[Callable[..., MeshClient]]:  # type: ignore[no-untyped-def]
    """Clients of other tenants or roles, closed at the end of the test."""
    opened: list[MeshClient] = []

    def make(tenant: str, roles: list[str]) -> MeshClient:
        token = signer.mint(
            subject=f"user-{uuid.uuid4().hex[:6]}", tenant=tenant, roles=roles, ttl_seconds=600
        )
        client = MeshClient(connection, token=token)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


# --- 1. RecordRun ------------------------------------------------------------------------------


def test_a_run_is_stored_once_and_a_conflicting_report_names_what_differs(operator: MeshClient) -> None:
    run = make_run(1)
    assert record(operator, run).duplicate is False
    assert record(operator, run).duplicate is True
    assert forecast(operator).runs_observed == 1

    conflicting = predictor_pb2.Run()
    conflicting.CopyFrom(run)
    conflicting.duration_seconds = 999.0
    conflicting.result = FAILURE
    conflicting.failure_class = common_pb2.TEST_FAILURE
    error = refusal(lambda: record(operator, conflicting))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "run.duration_seconds" in error.details() and "run.result" in error.details()
    answer = forecast(operator)
    assert answer.runs_observed == 1 and "0 of last 1 failed" in answer.summary  # the stored report kept


def test_bad_runs_are_refused_naming_the_proto_field_and_nothing_is_stored(operator: MeshClient) -> None:
    def bad(field: str, change: Callable[[predictor_pb2.Run], None]) -> None:
        run = make_run(7)
        change(run)
        error = refusal(lambda: record(operator, run))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert bad_request_fields(error) == [field], error.details()
        assert field in error.details()

    bad("run.duration_seconds", lambda r: setattr(r, "duration_seconds", -5.0))
    bad("run.queue_seconds", lambda r: setattr(r, "queue_seconds", -1.0))
    bad("run.result", lambda r: setattr(r, "result", 7))
    bad("run.result", lambda r: setattr(r, "result", predictor_pb2.RUN_RESULT_UNSPECIFIED))
    bad("run.job.repository", lambda r: setattr(r.job, "repository", ""))
    bad("run.job.pipeline", lambda r: setattr(r.job, "pipeline", "  "))
    bad("run.job.run_id", lambda r: setattr(r.job, "run_id", ""))
    bad("run.job.attempt", lambda r: setattr(r.job, "attempt", 0))
    bad("run.job.attempt", lambda r: setattr(r.job, "attempt", -3))
    bad("run.tests_failed", lambda r: setattr(r, "tests_failed", 101))
    bad("run.failure_class", lambda r: setattr(r, "failure_class", 999))
    bad("run.job", lambda r: r.ClearField("job"))

    answer = forecast(operator)
    assert not answer.has_history and answer.runs_observed == 0  # none of them was stored

    # One bad run in an import refuses the whole import.
    error = refusal(lambda: import_runs(operator, [make_run(1), make_run(2, duration=-1.0)]))
    assert bad_request_fields(error) == ["runs[1].duration_seconds"]
    assert forecast(operator).runs_observed == 0


# --- 2. ForecastRisk ---------------------------------------------------------------------------


def test_forecasts_say_what_they_rest_on(operator: MeshClient) -> None:
    unknown = forecast(operator, pipeline="never-ran")
    assert not unknown.has_history and unknown.runs_observed == 0
    assert "no history for acme/app/never-ran" in unknown.summary and unknown.model_version == "prior"

    for horizon in (0, 101, -1):
        error = refusal(lambda h=horizon: forecast(operator, horizon=h))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(error) == ["horizon_runs"] and "horizon_runs" in error.details()
    error = refusal(lambda: forecast(operator, repository=""))
    assert bad_request_fields(error) == ["repository"]

    outcomes = "....................F.F.f.FF.f"
    runs = [
        make_run(i, result=FAILURE if c in "Ff" else SUCCESS, flaky=("test_upload",) if c == "f" else ())
        for i, c in enumerate(outcomes)
    ]
    assert import_runs(operator, runs).recorded == len(runs)
    answer = forecast(operator)
    assert answer.has_history and answer.runs_observed == len(outcomes)
    assert "failure rate rising" in answer.summary, answer.summary
    assert "flaky test test_upload present" in answer.summary, answer.summary
    assert f"risk {answer.next_run_failure_probability:.2f}" in answer.summary
    assert 0 <= answer.interval_low <= answer.expected_failure_rate <= answer.interval_high <= 1
    assert forecast(operator, job="build").runs_observed == len(outcomes)
    assert forecast(operator, job="deploy").has_history is False


# --- 3. DetectAnomalies, Recommend, tenant isolation --------------------------------------------


def test_anomalies_and_recommendations_from_history_and_only_for_their_tenant(
    operator: MeshClient, admin: MeshClient, client_for: Callable[..., MeshClient]
) -> None:
    now = time.time()
    baseline = [
        make_run(
            i, pipeline="nightly", started_at=now - 10 * DAY + i * 6 * HOUR, duration=600.0 + (i % 5) * 8
        )
        for i in range(30)
    ]
    slow = make_run(99, pipeline="nightly", started_at=now - 2 * HOUR, duration=3000.0)
    import_runs(operator, [*baseline, slow, *memory_creep()])

    found = anomalies(operator, since=now - DAY)
    slow_ones = [a for a in found if a.metric == "duration"]
    assert [a.job.run_id for a in slow_ones] == ["1099"], [(a.metric, a.job.run_id, a.reason) for a in found]
    assert "duration" in slow_ones[0].reason and "median" in slow_ones[0].reason, slow_ones[0].reason
    assert slow_ones[0].score > 0

    recs = recommendations(operator)
    memory = [r for r in recs if r.kind == common_pb2.RAISE_RESOURCE_LIMIT]
    assert len(memory) == 1, [r.title for r in recs]
    rec = memory[0]
    assert (rec.repository, rec.pipeline, rec.job) == ("acme/app", "ci", "build")
    assert int(rec.parameters["memory_limit_mb"]) > 4000 and rec.expected_benefit >= 0
    assert any("peak memory went from 60%" in e for e in rec.evidence), list(rec.evidence)

    filtered = operator.predictor.Recommend(
        predictor_pb2.RecommendRequest(repository="other/repo"), metadata=operator.metadata, timeout=TIMEOUT
    )
    assert list(filtered.recommendations) == []

    other_tenant = f"t-{uuid.uuid4().hex[:10]}"
    admin.tenancy.CreateTenant(
        tenancy_pb2.CreateTenantRequest(tenant_id=other_tenant, plan="team"),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    other = client_for(other_tenant, ["operator", "viewer"])
    assert forecast(other, pipeline="nightly").has_history is False
    assert forecast(other).runs_observed == 0
    assert anomalies(other, since=now - DAY) == []
    assert recommendations(other) == []
    # Naming the other tenant in the body does not help.
    error = refusal(
        lambda: operator.predictor.ForecastRisk(
            predictor_pb2.ForecastRiskRequest(
                tenant_id=other_tenant, repository="acme/app", pipeline="ci", horizon_runs=5
            ),
            metadata=operator.metadata,
            timeout=TIMEOUT,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


# --- 4. Retrain --------------------------------------------------------------------------------


def simulated_history() -> list[predictor_pb2.Run]:
    """Four weeks of twelve pipelines from the evaluation's simulator, ending a minute ago."""
    from bench.history_sim import SimConfig, generate

    history = generate(SimConfig(seed=3, tenants=1, pipelines_per_tenant=12, days=28))
    shift = time.time() - 60 - history.end
    return [
        predictor_pb2.Run(
            job=common_pb2.JobRef(
                repository=r.repository,
                pipeline=r.pipeline,
                job=r.job,
                run_id=r.run_id,
                attempt=r.attempt,
                commit_sha=r.commit,
                branch=r.branch,
                runner=r.runner,
            ),
            result=int(r.result),
            started_at=timestamp(r.started_at + shift),
            duration_seconds=r.duration_s,
            queue_seconds=r.queue_s,
            peak_memory_mb=r.peak_memory_mb,
            memory_limit_mb=r.memory_limit_mb,
            cache_hit=r.cache_hit,
            tests_total=r.tests_total,
            tests_failed=r.tests_failed,
            failure_class=int(r.failure_class),
            flaky_tests=list(r.flaky_tests),
            failed_dependencies=list(r.failed_dependencies),
        )
        for r in history.runs
    ]


def test_retraining_is_an_admins_and_says_whether_the_model_was_replaced(
    operator: MeshClient, admin: MeshClient, tenant: str
) -> None:
    error = refusal(
        lambda: operator.predictor.Retrain(
            predictor_pb2.RetrainRequest(), metadata=operator.metadata, timeout=TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = refusal(
        lambda: admin.predictor.Retrain(
            predictor_pb2.RetrainRequest(), metadata=admin.metadata, timeout=TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == ["tenant_id"]

    def retrain() -> predictor_pb2.RetrainResponse:
        return admin.predictor.Retrain(
            predictor_pb2.RetrainRequest(tenant_id=tenant), metadata=admin.metadata, timeout=120
        )

    import_runs(operator, [make_run(i) for i in range(12)])
    thin = retrain()
    assert not thin.accepted and thin.model_version == "prior"
    assert "not enough history" in thin.detail and thin.new_score == 0.0

    runs = simulated_history()
    answer = import_runs(operator, runs)
    assert answer.recorded == len(runs) and answer.duplicates == 0
    assert import_runs(operator, runs[:100]).duplicates == 100  # an import is idempotent too
    first = retrain()
    assert first.accepted, first.detail
    assert first.model_version not in ("", "prior") and first.heldout_runs >= 50 and first.train_runs > 0
    assert 0 < first.new_score <= first.old_score < 1, (first.new_score, first.old_score)
    assert f"{first.new_score:.4f}" in first.detail
    pipeline = runs[-1].job
    assert (
        forecast(operator, repository=pipeline.repository, pipeline=pipeline.pipeline).model_version
        == first.model_version
    )


# --- 5. Feedback -------------------------------------------------------------------------------


def test_a_healing_rerun_is_fed_back_into_the_history(operator: MeshClient) -> None:
    # A lost runner: the default policy re-runs it on a fresh runner, so a re-run always executes.
    examples = json.loads((EXAMPLES / "manifest.json").read_text())
    example = next(e for e in examples if e["expected_class"] == "INFRASTRUCTURE")
    scope = {"repository": example["repository"], "pipeline": example["pipeline"]}
    before = forecast(operator, **scope)
    assert before.runs_observed == 0
    report = heal(operator, example)
    executed = [a for a in report.actions if a["state"] in ("SUCCEEDED", "FAILED")]
    assert executed and executed[0]["kind"] == "RETRY_ON_FRESH_RUNNER", report
    deadline = time.monotonic() + 15
    after = before
    while time.monotonic() < deadline:
        after = forecast(operator, **scope)
        if after.runs_observed > before.runs_observed:
            break
        time.sleep(0.2)
    assert after.runs_observed > before.runs_observed, "the coordinator's re-run never reached the predictor"
    assert forecast(operator, job=example["job"], **scope).runs_observed == after.runs_observed


# --- 6. PlanRecommendation ---------------------------------------------------------------------


def test_a_recommendation_accepted_into_a_plan_quotes_its_evidence_and_runs(
    operator: MeshClient, tenant: str, client_for: Callable[..., MeshClient]
) -> None:
    import_runs(operator, memory_creep())
    rec = next(r for r in recommendations(operator) if r.kind == common_pb2.RAISE_RESOURCE_LIMIT)

    def accept(
        recommendation: predictor_pb2.Recommendation,
        submit: bool = False,
        provider: int = common_pb2.PROVIDER_GITHUB_ACTIONS,
    ) -> planner_pb2.PlanRecommendationResponse:
        return operator.planner.PlanRecommendation(
            planner_pb2.PlanRecommendationRequest(
                recommendation=recommendation, submit=submit, job=common_pb2.JobRef(provider=provider)
            ),
            metadata=operator.metadata,
            timeout=TIMEOUT,
        )

    stored = accept(rec)
    plan = stored.plan
    assert not stored.submitted and not stored.duplicate
    assert [a.kind for a in plan.actions] == [common_pb2.RAISE_RESOURCE_LIMIT, common_pb2.ESCALATE]
    assert plan.actions[0].parameters["memory_mb"] == rec.parameters["memory_limit_mb"]
    assert plan.failure_class == common_pb2.OUT_OF_MEMORY and plan.tenant_id == tenant
    assert rec.recommendation_id in plan.rationale
    for line in rec.evidence:
        assert line in plan.rationale, (line, plan.rationale)
    assert (plan.job.repository, plan.job.pipeline, plan.job.job) == ("acme/app", "ci", "build")
    explained = operator.planner.ExplainPlan(
        planner_pb2.ExplainPlanRequest(plan_id=plan.plan_id), metadata=operator.metadata, timeout=TIMEOUT
    )
    assert explained.explanation == plan.rationale

    # The planner queues nothing (it is a leaf): the caller hands the plan to the coordinator.
    error = refusal(lambda: accept(rec, submit=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "Coordinator.SubmitPlan" in error.details()
    again = accept(rec)
    assert again.duplicate and not again.submitted and again.plan.plan_id == plan.plan_id
    submitted = operator.coordinator.SubmitPlan(
        coordinator_pb2.SubmitPlanRequest(plan=again.plan), metadata=operator.metadata, timeout=TIMEOUT
    )
    assert len(submitted.action_ids) == 2
    listed = operator.coordinator.ListActions(
        coordinator_pb2.ListActionsRequest(plan_id=plan.plan_id), metadata=operator.metadata, timeout=TIMEOUT
    ).actions
    assert [a.action.kind for a in listed] == [common_pb2.RAISE_RESOURCE_LIMIT, common_pb2.ESCALATE]
    assert listed[0].action.parameters["memory_mb"] == rec.parameters["memory_limit_mb"]

    # Malformed recommendations are refused naming the field.
    broken = predictor_pb2.Recommendation()
    broken.CopyFrom(rec)
    del broken.parameters["memory_limit_mb"]
    error = refusal(lambda: accept(broken))
    assert bad_request_fields(error) == ["recommendation.parameters.memory_limit_mb"]
    broken.CopyFrom(rec)
    broken.kind = common_pb2.RETRY
    error = refusal(lambda: accept(broken))
    assert bad_request_fields(error) == ["recommendation.kind"]

    # The tenant's policy forbids the action: refused, naming the field, nothing planned.
    tenant_admin = client_for(tenant, ["admin"])
    tenant_admin.planner.SetPolicy(
        planner_pb2.SetPolicyRequest(
            policy=planner_pb2.Policy(
                classes=[
                    planner_pb2.ClassPolicy(
                        failure_class=common_pb2.OUT_OF_MEMORY,
                        allowed_actions=[common_pb2.RETRY_ON_FRESH_RUNNER],
                        max_attempts=1,
                    )
                ]
            )
        ),
        metadata=tenant_admin.metadata,
        timeout=TIMEOUT,
    )
    other = predictor_pb2.Recommendation()
    other.CopyFrom(rec)
    other.recommendation_id = "rec-forbidden"
    error = refusal(lambda: accept(other))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        error.details().startswith("recommendation.kind:")
        and "does not allow RAISE_RESOURCE_LIMIT" in error.details()
    ), error.details()
    never = plan_id_for_recommendation(tenant, "rec-forbidden")
    error = refusal(
        lambda: operator.planner.ExplainPlan(
            planner_pb2.ExplainPlanRequest(plan_id=never), metadata=operator.metadata, timeout=TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
