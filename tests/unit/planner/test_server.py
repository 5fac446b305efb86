"""PlannerServicer: what a caller of PlanHealing sees for bad input (field names as in the proto)."""

from __future__ import annotations

import asyncio

import pytest

from healing_guard.common.v1 import common_pb2
from healing_guard.planner.v1 import planner_pb2
from services.common import auth
from services.common.errors import InvalidArgument
from services.common.live_config import LiveConfig
from services.common.tokens import Principal
from services.planner.server import LIVE_DEFAULTS, PlannerServicer
from services.planner.store import PlannerStore


@pytest.fixture
def servicer() -> PlannerServicer:
    auth.set_principal(Principal("op", "acme", frozenset({"operator"}), "jti-op", 2e9))
    return PlannerServicer(PlannerStore(":memory:"), None, LiveConfig("planner", LIVE_DEFAULTS))


def _plan(servicer: PlannerServicer, **diagnosis: object) -> None:
    fields = {"failure_id": "f-1", "failure_class": common_pb2.NETWORK, "confidence": 0.9, **diagnosis}
    request = planner_pb2.PlanHealingRequest(diagnosis=common_pb2.Diagnosis(**fields))  # type: ignore[arg-type]
    asyncio.run(servicer.PlanHealing(request, None))


@pytest.mark.parametrize(
    ("diagnosis", "field"),
    [
        ({"confidence": 1.5}, "diagnosis.confidence"),
        ({"confidence": float("nan")}, "diagnosis.confidence"),
        ({"duration_seconds": -3.0}, "diagnosis.duration_seconds"),
    ],
)
def test_bad_diagnosis_fields_are_named_as_the_caller_sent_them(
    servicer: PlannerServicer, diagnosis: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _plan(servicer, **diagnosis)
    assert raised.value.field == field, raised.value.message


def test_a_good_diagnosis_is_planned(servicer: PlannerServicer) -> None:
    _plan(servicer)
    assert servicer.store.plans_for_failure("acme", "f-1")


def _rationale(servicer: PlannerServicer, **diagnosis: object) -> str:
    fields = {"failure_id": "f-2", "failure_class": common_pb2.NETWORK, "confidence": 0.9, **diagnosis}
    request = planner_pb2.PlanHealingRequest(diagnosis=common_pb2.Diagnosis(**fields))  # type: ignore[arg-type]
    return asyncio.run(servicer.PlanHealing(request, None)).rationale


def test_the_rationale_quotes_the_diagnosis_failed_step_and_decisive_line(servicer: PlannerServicer) -> None:
    rationale = _rationale(
        servicer,
        failed_step=common_pb2.FailedStep(name="Run npm ci", command="npm ci", exit_code=1, framing="github_actions"),
        decisive_line=common_pb2.EvidenceLine(line=52, text="npm ERR! network socket hang up"),
    )
    assert 'Failed step: `npm ci` (exit 1); decisive line 52: "npm ERR! network socket hang up".' in rationale
    # A step with no command is named; an exit code the log did not give is not invented.
    unnamed = _rationale(servicer, failure_id="f-3", failed_step=common_pb2.FailedStep(name="step_script"))
    assert "Failed step: `step_script`." in unnamed
    assert "Failed step" not in _rationale(servicer, failure_id="f-4")
