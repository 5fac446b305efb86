"""The planner as its users meet it, through the gateway: plans that quote the
predictor's forecast and explain themselves to their own tenant only, policies that
round-trip and refuse a forbidden action with nothing stored, batch planning with a
measured gap, outcomes counted once, and bad input refused naming the field."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from deploy.client import MeshClient, MeshConnection
from deploy.mesh import Mesh
from healing_guard.audit.v1 import audit_pb2
from healing_guard.common.v1 import common_pb2
from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2
from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.convert import timestamp

pytestmark = pytest.mark.integration

TIMEOUT = 10


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


def diagnosis(
    failure_class: int = common_pb2.OUT_OF_MEMORY, pipeline: str = "ci", repository: str = "acme/app"
) -> common_pb2.Diagnosis:
    job = common_pb2.JobRef(
        provider=common_pb2.PROVIDER_GITHUB_ACTIONS,
        repository=repository,
        pipeline=pipeline,
        job="build",
        run_id=uuid.uuid4().hex[:12],
        attempt=1,
        commit_sha="2f50bc72cc3136c3d1026607ceb036637134b2e8",
        runner="runner-7",
    )
    return common_pb2.Diagnosis(
        failure_id=f"f-{uuid.uuid4().hex[:12]}",
        job=job,
        failure_class=failure_class,
        confidence=0.93,
        evidence=[common_pb2.EvidenceLine(line=812, text="Killed: process exceeded memory limit 4096 MB")],
        duration_seconds=300,
    )


def plan(client: MeshClient, diag: common_pb2.Diagnosis,
         forecast: predictor_pb2.ForecastRiskResponse | None = None) -> common_pb2.HealingPlan:
    request = planner_pb2.PlanHealingRequest(diagnosis=diag, memory_limit_mb=4096)
    if forecast is not None:
        request.forecast.CopyFrom(forecast)  # as the coordinator's workflow passes it
    return client.planner.PlanHealing(
        request,
        metadata=client.metadata,
        timeout=TIMEOUT,
    )


def record_runs(client: MeshClient, repository: str, pipeline: str, results: list[int]) -> None:
    start = time.time() - 3600 * len(results)
    for i, result in enumerate(results):
        job = common_pb2.JobRef(
            provider=common_pb2.PROVIDER_GITHUB_ACTIONS,
            repository=repository,
            pipeline=pipeline,
            job="build",
            run_id=f"run-{i}",
            attempt=1,
            commit_sha=f"{i:040x}",
            runner="runner-7",
        )
        run = predictor_pb2.Run(
            job=job, result=result, started_at=timestamp(start + 3600 * i), duration_seconds=290
        )
        client.predictor.RecordRun(
            predictor_pb2.RecordRunRequest(run=run), metadata=client.metadata, timeout=TIMEOUT
        )


@pytest.fixture()
def tenant_admin(connection: MeshConnection, signer, tenant: str) -> Iterator[MeshClient]:  # type: ignore[no-untyped-def]
    token = signer.mint(subject="tenant-admin", tenant=tenant, roles=["admin", "viewer"], ttl_seconds=3600)
    with MeshClient(connection, token=token) as client:
        yield client


@pytest.fixture()
def coordinator_planner(mesh: Mesh, signer) -> Iterator[tuple[planner_pb2_grpc.PlannerStub, tuple]]:  # type: ignore[no-untyped-def]
    """The planner's own port, called as the coordinator calls it: its cert, a coordinator service token."""
    credentials = grpc.ssl_channel_credentials(
        mesh.pki.ca.read_bytes(),
        mesh.pki.key("coordinator").read_bytes(),
        mesh.pki.cert("coordinator").read_bytes(),
    )
    token = signer.mint(subject="coordinator", tenant="*", roles=["service"], ttl_seconds=600)
    with grpc.secure_channel(
        f"127.0.0.1:{mesh.ports['planner']}",
        credentials,
        options=[("grpc.ssl_target_name_override", "planner.healing-guard.local")],
    ) as channel:
        yield planner_pb2_grpc.PlannerStub(channel), (("authorization", f"Bearer {token}"),)


# --- plans quote the forecast and explain themselves ------------------------------------------


def test_a_plan_quotes_the_predictors_forecast_when_the_pipeline_has_history(operator: MeshClient) -> None:
    F, S = predictor_pb2.RUN_RESULT_FAILURE, predictor_pb2.RUN_RESULT_SUCCESS
    record_runs(operator, "acme/app", "nightly", [S, F, S, S, F, F, S, F])
    forecast = operator.predictor.ForecastRisk(
        predictor_pb2.ForecastRiskRequest(repository="acme/app", pipeline="nightly", horizon_runs=10),
        metadata=operator.metadata,
        timeout=TIMEOUT,
    )
    assert forecast.has_history and forecast.summary
    made = plan(operator, diagnosis(pipeline="nightly"), forecast)
    assert made.risk == pytest.approx(forecast.next_run_failure_probability, abs=1e-9)
    assert made.risk_summary == forecast.summary
    assert f"Predictor: {forecast.summary}" in made.rationale


def test_a_plan_says_so_when_the_pipeline_has_no_history(operator: MeshClient) -> None:
    pipeline = f"never-run-{uuid.uuid4().hex[:6]}"
    forecast = operator.predictor.ForecastRisk(
        predictor_pb2.ForecastRiskRequest(repository="acme/app", pipeline=pipeline, horizon_runs=10),
        metadata=operator.metadata,
        timeout=TIMEOUT,
    )
    made = plan(operator, diagnosis(pipeline=pipeline), forecast)
    assert made.risk == -1.0
    assert "no history" in made.risk_summary
    assert f"Predictor: {made.risk_summary}" in made.rationale


def test_a_plan_without_a_forecast_says_none_was_available(operator: MeshClient) -> None:
    # The planner is a leaf: it never calls the predictor itself.
    made = plan(operator, diagnosis(pipeline="nightly"))
    assert made.risk == -1.0
    assert "Predictor: no risk forecast was available." in made.rationale


def test_explain_plan_returns_the_stored_reasoning_to_its_tenant_only(
    operator: MeshClient,
    connection: MeshConnection,
    signer,
    admin: MeshClient,  # type: ignore[no-untyped-def]
) -> None:
    made = plan(operator, diagnosis())
    explained = operator.planner.ExplainPlan(
        planner_pb2.ExplainPlanRequest(plan_id=made.plan_id), metadata=operator.metadata, timeout=TIMEOUT
    )
    assert explained.explanation == made.rationale and "Policy rule applied" in explained.explanation
    assert explained.plan.plan_id == made.plan_id
    assert [a.kind for a in explained.plan.actions] == [a.kind for a in made.actions]

    error = refusal(
        lambda: operator.planner.ExplainPlan(
            planner_pb2.ExplainPlanRequest(plan_id=f"plan-{uuid.uuid4().hex}"),
            metadata=operator.metadata,
            timeout=TIMEOUT,
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND

    other = f"t-{uuid.uuid4().hex[:10]}"
    admin.tenancy.CreateTenant(
        tenancy_pb2.CreateTenantRequest(tenant_id=other, plan="team"),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    with MeshClient(connection, token=signer.mint("ci-bot", other, ["operator", "viewer"])) as stranger:
        error = refusal(
            lambda: stranger.planner.ExplainPlan(
                planner_pb2.ExplainPlanRequest(plan_id=made.plan_id),
                metadata=stranger.metadata,
                timeout=TIMEOUT,
            )
        )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert made.rationale not in (error.details() or "")


# --- policies --------------------------------------------------------------------------------


def _policy(
    tenant: str, failure_class: int, actions: list[int], max_attempts: int = 2
) -> planner_pb2.ClassPolicy:
    return planner_pb2.ClassPolicy(
        failure_class=failure_class,
        allowed_actions=actions,
        max_attempts=max_attempts,
        budget_runner_minutes=60,
        budget_usd=5,
        requires_approval=False,
    )


def test_a_policy_round_trips_and_a_forbidden_retry_is_refused_with_nothing_stored(
    tenant_admin: MeshClient, operator: MeshClient, tenant: str
) -> None:
    md = tenant_admin.metadata
    default = tenant_admin.planner.GetPolicy(planner_pb2.GetPolicyRequest(), metadata=md, timeout=TIMEOUT)
    assert default.source == "default" and default.tenant_id == tenant

    flaky = _policy(
        tenant, common_pb2.FLAKY_TEST, [common_pb2.QUARANTINE_TEST, common_pb2.RETRY], max_attempts=1
    )
    stored = tenant_admin.planner.SetPolicy(
        planner_pb2.SetPolicyRequest(policy=planner_pb2.Policy(classes=[flaky], exploration=False)),
        metadata=md,
        timeout=TIMEOUT,
    )
    assert stored.source == "tenant"
    read = operator.planner.GetPolicy(
        planner_pb2.GetPolicyRequest(), metadata=operator.metadata, timeout=TIMEOUT
    )
    got = next(c for c in read.classes if c.failure_class == common_pb2.FLAKY_TEST)
    assert list(got.allowed_actions) == [common_pb2.QUARANTINE_TEST, common_pb2.RETRY]
    assert got.max_attempts == 1 and got.budget_runner_minutes == 60 and got.budget_usd == 5
    assert read.source == "tenant" and read.exploration is False

    # a valid class and a forbidden one in one request: refused whole, nothing stored
    oom = _policy(tenant, common_pb2.OUT_OF_MEMORY, [common_pb2.RAISE_RESOURCE_LIMIT], max_attempts=3)
    bad = _policy(tenant, common_pb2.COMPILE_ERROR, [common_pb2.RETRY, common_pb2.ESCALATE])
    error = refusal(
        lambda: tenant_admin.planner.SetPolicy(
            planner_pb2.SetPolicyRequest(policy=planner_pb2.Policy(classes=[oom, bad])),
            metadata=md,
            timeout=TIMEOUT,
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.classes[1].allowed_actions" in (error.details() or ""), error.details()
    assert "RETRY" in (error.details() or "") and "COMPILE_ERROR" in (error.details() or "")
    assert any(f.startswith("policy.classes[1].allowed_actions") for f in bad_request_fields(error))
    assert (
        tenant_admin.planner.GetPolicy(planner_pb2.GetPolicyRequest(), metadata=md, timeout=TIMEOUT) == read
    )

    # an operator may read but not change policy
    error = refusal(
        lambda: operator.planner.SetPolicy(
            planner_pb2.SetPolicyRequest(policy=planner_pb2.Policy(classes=[oom])),
            metadata=operator.metadata,
            timeout=TIMEOUT,
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


# --- batch planning --------------------------------------------------------------------------


def _candidate(
    kind: int, benefit: float, minutes: float, usd: float, pool: str = "linux"
) -> planner_pb2.BatchCandidate:
    return planner_pb2.BatchCandidate(
        kind=kind, benefit=benefit, runner_minutes=minutes, cost_usd=usd, pool=pool
    )


def test_a_small_batch_gets_a_feasible_choice_with_its_gap_to_the_optimum(operator: MeshClient) -> None:
    R, FR, CC = common_pb2.RETRY, common_pb2.RETRY_ON_FRESH_RUNNER, common_pb2.CLEAR_CACHE
    items = [
        planner_pb2.BatchItem(
            failure_id=f"f-{i}",
            candidates=[
                _candidate(R, 5 + i, 10, 0.5),
                _candidate(FR, 8 + i, 20, 1.0),
                _candidate(CC, 3, 5, 0.2),
            ],
        )
        for i in range(8)
    ]
    capacity, budget = 90.0, 5.0
    reply = operator.planner.PlanBatch(
        planner_pb2.PlanBatchRequest(
            items=items, capacity_runner_minutes=capacity, budget_usd=budget, seed=7
        ),
        metadata=operator.metadata,
        timeout=30,
    )
    assert reply.feasible and reply.solver
    assert {c.failure_id for c in reply.choices} == {item.failure_id for item in items}
    chosen = [
        items[int(c.failure_id[2:])].candidates[c.candidate_index]
        for c in reply.choices
        if c.candidate_index >= 0
    ]
    assert chosen, "nothing chosen although capacity allows some actions"
    assert sum(c.runner_minutes for c in chosen) <= capacity + 1e-9
    assert sum(c.cost_usd for c in chosen) <= budget + 1e-9
    assert reply.objective > 0 and reply.objective >= reply.greedy_objective - 1e-9
    assert 0 <= reply.gap <= 0.01, f"gap {reply.gap} from solver {reply.solver}"
    assert reply.elapsed_seconds > 0  # reported; keeping to the time budget is measured in bench/batch.py


def test_an_empty_batch_gets_a_clear_answer(operator: MeshClient) -> None:
    reply = operator.planner.PlanBatch(
        planner_pb2.PlanBatchRequest(items=[], capacity_runner_minutes=10, budget_usd=1),
        metadata=operator.metadata,
        timeout=TIMEOUT,
    )
    assert list(reply.choices) == [] and reply.objective == 0


# --- outcomes --------------------------------------------------------------------------------


def _outcome(made: common_pb2.HealingPlan, outcome_id: str, key: str | None = None) -> common_pb2.Outcome:
    action = made.actions[0]
    return common_pb2.Outcome(
        outcome_id=outcome_id,
        tenant_id=made.tenant_id,
        plan_id=made.plan_id,
        action_id=action.action_id,
        failure_id=made.failure_id,
        kind=action.kind,
        failure_class=made.failure_class,
        success=True,
        idempotency_key=action.idempotency_key if key is None else key,
        finished_at=timestamp(time.time()),
    )


def test_an_outcome_reported_twice_counts_once(operator: MeshClient, coordinator_planner) -> None:  # type: ignore[no-untyped-def]
    stub, md = coordinator_planner
    made = plan(operator, diagnosis())
    assert made.actions and made.actions[0].kind != common_pb2.ESCALATE, made.rationale
    outcome = _outcome(made, f"o-{uuid.uuid4().hex}")
    first = stub.RecordOutcome(
        planner_pb2.RecordOutcomeRequest(outcome=outcome), metadata=md, timeout=TIMEOUT
    )
    second = stub.RecordOutcome(
        planner_pb2.RecordOutcomeRequest(outcome=outcome), metadata=md, timeout=TIMEOUT
    )
    assert first.duplicate is False and second.duplicate is True
    assert first.evidence == pytest.approx(1.0, abs=0.01)
    assert second.evidence == pytest.approx(first.evidence) and second.posterior_mean == pytest.approx(
        first.posterior_mean
    )
    # the next plan for this class rests on exactly one outcome
    kind = common_pb2.ActionKind.Name(made.actions[0].kind)
    again = plan(operator, diagnosis())
    assert "over 1 outcome(s) for OUT_OF_MEMORY" in again.rationale, again.rationale
    assert kind in again.rationale


def test_an_outcome_for_an_action_never_planned_is_not_found(
    operator: MeshClient, coordinator_planner
) -> None:  # type: ignore[no-untyped-def]
    stub, md = coordinator_planner
    made = plan(operator, diagnosis())
    for outcome in (
        _outcome(made, f"o-{uuid.uuid4().hex}", key="never-planned"),
        common_pb2.Outcome(
            outcome_id=f"o-{uuid.uuid4().hex}",
            tenant_id=made.tenant_id,
            plan_id=f"plan-{uuid.uuid4().hex}",
            idempotency_key="k",
            success=True,
        ),
    ):
        error = refusal(
            lambda o=outcome: stub.RecordOutcome(
                planner_pb2.RecordOutcomeRequest(outcome=o), metadata=md, timeout=TIMEOUT
            )
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND, error.details()
    # nothing was learned from them
    again = plan(operator, diagnosis())
    assert "outcome(s) for OUT_OF_MEMORY" not in again.rationale


# --- bad input -------------------------------------------------------------------------------


def test_a_batch_over_the_limit_is_refused_naming_items(operator: MeshClient) -> None:
    item = planner_pb2.BatchItem(failure_id="f", candidates=[_candidate(common_pb2.RETRY, 1, 1, 0.1)])
    request = planner_pb2.PlanBatchRequest(capacity_runner_minutes=10, budget_usd=1)
    request.items.extend([item] * 10_001)  # copies of one message: built in milliseconds
    started = time.monotonic()
    error = refusal(lambda: operator.planner.PlanBatch(request, metadata=operator.metadata, timeout=30))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "items" in bad_request_fields(error) and "10001" in (error.details() or "")
    assert "10000" in (error.details() or "")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": 42}, "items[0].candidates[0].kind"),
        ({"kind": common_pb2.ACTION_KIND_UNSPECIFIED}, "items[0].candidates[0].kind"),
    ],
)
def test_an_action_outside_the_closed_set_is_refused(operator: MeshClient, change: dict, field: str) -> None:
    candidate = _candidate(common_pb2.RETRY, 1, 1, 0.1)
    for key, value in change.items():
        setattr(candidate, key, value)
    request = planner_pb2.PlanBatchRequest(
        items=[planner_pb2.BatchItem(failure_id="f-1", candidates=[candidate])],
        capacity_runner_minutes=10,
        budget_usd=1,
    )
    error = refusal(lambda: operator.planner.PlanBatch(request, metadata=operator.metadata, timeout=TIMEOUT))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_request_fields(error), error.details()


def test_an_unknown_failure_class_is_refused_and_nothing_is_planned(operator: MeshClient) -> None:
    diag = diagnosis(failure_class=99)
    error = refusal(lambda: plan(operator, diag))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "diagnosis.failure_class" in bad_request_fields(error), error.details()
    trail = operator.audit.ListEntries(
        audit_pb2.ListEntriesRequest(subject=diag.failure_id), metadata=operator.metadata, timeout=TIMEOUT
    )
    assert list(trail.entries) == []
