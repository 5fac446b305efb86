import pytest

from bench.history_sim import SimConfig, generate
from services.common.errors import AlreadyExists, InvalidArgument
from services.predictor.predictor import Predictor
from services.predictor.store import RecordOutcome, RunStore
from tests.unit.predictor.builders import DAY, MONDAY, failed_run, series


@pytest.fixture
def predictor(tmp_path) -> Predictor:
    return Predictor(RunStore.open(tmp_path / "predictor.db"), clock=lambda: MONDAY + 30 * DAY)


def test_record_then_forecast(predictor: Predictor) -> None:
    for run in series("....F....F..F"):
        assert predictor.record_run(run) is RecordOutcome.RECORDED
    forecast = predictor.forecast("acme", "acme/shop", "ci", "test", horizon=5)
    assert forecast.has_history and forecast.runs_considered == 13
    assert forecast.model_version == 0


def test_duplicate_and_conflicting_reports(predictor: Predictor) -> None:
    run = series(".")[0]
    predictor.record_run(run)
    assert predictor.record_run(run) is RecordOutcome.ALREADY_RECORDED
    with pytest.raises(AlreadyExists):
        predictor.record_run(failed_run(run_id=run.run_id, started_at=run.started_at))


def test_unknown_pipeline_is_an_answer_not_an_error(predictor: Predictor) -> None:
    forecast = predictor.forecast("acme", "acme/shop", "never-ran")
    assert not forecast.has_history and "no history" in forecast.explanation


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"repository": ""}, "repository"), ({"pipeline": " "}, "pipeline"), ({"tenant": ""}, "tenant"),
    ({"horizon": 0}, "horizon"), ({"horizon": 101}, "horizon"),
])
def test_forecast_arguments_are_checked(predictor: Predictor, kwargs: dict, field: str) -> None:
    args = {"tenant": "acme", "repository": "acme/shop", "pipeline": "ci", **kwargs}
    with pytest.raises(InvalidArgument) as caught:
        predictor.forecast(**args)
    assert caught.value.field == field


def test_anomaly_window_is_checked(predictor: Predictor) -> None:
    with pytest.raises(InvalidArgument, match="until must be after since"):
        predictor.detect_anomalies("acme", since=10.0, until=5.0)
    with pytest.raises(InvalidArgument, match="at most 31 days"):
        predictor.detect_anomalies("acme", since=0.0, until=40 * DAY)


def test_retrain_activates_a_better_model_and_it_survives_restart(tmp_path) -> None:
    history = generate(SimConfig(seed=3, tenants=1, pipelines_per_tenant=12, days=28))
    store = RunStore.open(tmp_path / "p.db")
    store.record_runs(history.runs)
    predictor = Predictor(store, clock=lambda: history.end)
    report = predictor.retrain("tenant-1")
    assert report.replaced, report.reason
    assert report.candidate is not None and report.candidate.version == 1
    scope = history.runs[-1].scope
    restarted = Predictor(RunStore(store.db), clock=lambda: history.end)
    forecast = restarted.forecast(scope.tenant, scope.repository, scope.pipeline, scope.job)
    assert forecast.model_version == 1 and "risk model v1" in forecast.method
    # Another tenant still has only the prior.
    assert restarted.active_model("tenant-2") is None


def test_recommend_limit(predictor: Predictor) -> None:
    with pytest.raises(InvalidArgument, match="limit must be >= 1"):
        predictor.recommend("acme", limit=0)
    assert predictor.recommend("acme") == []


def test_anomalies_are_found_from_stored_history(predictor: Predictor) -> None:
    baseline = series("." * 60, start=MONDAY - 5 * DAY, every=2 * 3600.0)
    for run in baseline:
        predictor.record_run(run)
    slow = series(".", start=MONDAY + 10 * 3600.0, duration_s=3000.0)[0]
    slow = type(slow)(**{**slow.__dict__, "run_id": "slow"})
    predictor.record_run(slow)
    [anomaly] = predictor.detect_anomalies("acme", since=MONDAY, until=MONDAY + DAY)
    assert anomaly.run == slow and anomaly.metric == "duration"
    assert anomaly.reason.startswith("duration 50m is ")


def test_retrain_all_covers_every_tenant_with_history(predictor: Predictor) -> None:
    for run in series("..F.."):
        predictor.record_run(run)
    reports = predictor.retrain_all()
    assert list(reports) == ["acme"]
    assert not reports["acme"].replaced and "not enough history" in reports["acme"].reason


def test_a_stored_model_from_other_features_falls_back_to_the_prior(tmp_path) -> None:
    history = generate(SimConfig(seed=3, tenants=1, pipelines_per_tenant=12, days=28))
    store = RunStore.open(tmp_path / "p.db")
    store.record_runs(history.runs)
    report = Predictor(store, clock=lambda: history.end).retrain("tenant-1")
    assert report.replaced and report.candidate is not None
    stale = report.candidate
    stale.feature_names = ("an", "older", "feature", "set")
    store.save_model("tenant-1", stale.to_bytes(), created_at=history.end, trained_runs=1, heldout_brier=0.0,
                     activate=True)
    restarted = Predictor(RunStore(store.db), clock=lambda: history.end)
    assert restarted.active_model("tenant-1") is None
    scope = history.runs[-1].scope
    assert restarted.forecast(scope.tenant, scope.repository, scope.pipeline, scope.job).model_version == 0
