"""The servicer's translation: proto field names on every refusal (no gRPC server needed)."""

import pytest

from healing_guard.common.v1 import common_pb2
from healing_guard.predictor.v1 import predictor_pb2
from services.common.errors import AlreadyExists, InvalidArgument
from services.predictor.predictor import Predictor
from services.predictor.server import _conflict, run_record
from services.predictor.store import RunStore


def good_run() -> predictor_pb2.Run:
    return predictor_pb2.Run(
        job=common_pb2.JobRef(repository="acme/app", pipeline="ci", job="build", run_id="1", attempt=1),
        result=predictor_pb2.RUN_RESULT_SUCCESS,
        duration_seconds=60.0,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "duration_seconds", -1.0), "run.duration_seconds"),
        (lambda r: setattr(r, "queue_seconds", float("nan")), "run.queue_seconds"),
        (lambda r: setattr(r, "result", 9), "run.result"),
        (lambda r: setattr(r, "result", 0), "run.result"),
        (lambda r: setattr(r.job, "repository", ""), "run.job.repository"),
        (lambda r: setattr(r.job, "attempt", 0), "run.job.attempt"),
        (lambda r: setattr(r, "tests_failed", 3), "run.tests_failed"),
        (lambda r: r.ClearField("job"), "run.job"),
        (lambda r: setattr(r.started_at, "seconds", 2**62), "run.started_at"),  # stored, then unreadable as a date
    ],
)
def test_refusals_name_the_proto_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    run = good_run()
    change(run)
    with pytest.raises(InvalidArgument) as caught:
        run_record("acme", run)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_import_prefix_names_the_run() -> None:
    run = good_run()
    run.duration_seconds = -2
    with pytest.raises(InvalidArgument) as caught:
        run_record("acme", run, "runs[3]")
    assert caught.value.field == "runs[3].duration_seconds"
    assert "runs[3].duration_seconds must be >= 0, got -2" in str(caught.value)


def test_a_conflict_names_the_differing_proto_fields(tmp_path) -> None:
    predictor = Predictor(RunStore.open(tmp_path / "p.db"))
    first = good_run()
    predictor.record_run(run_record("acme", first))
    second = good_run()
    second.started_at.CopyFrom(first.started_at)
    second.duration_seconds = 90.0
    record = run_record("acme", second)
    stored = predictor.store.runs("acme")[0]
    record = type(record)(**{**record.__dict__, "started_at": stored.started_at})
    with pytest.raises(AlreadyExists) as caught:
        predictor.record_run(record)
    renamed = _conflict(caught.value)
    assert "different run.duration_seconds;" in str(renamed)
    assert "run 1 attempt 1 of acme/app/ci" in str(renamed)
