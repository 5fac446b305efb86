import pytest

from services.common.errors import AlreadyExists, InvalidArgument
from services.predictor.store import RecordOutcome, RunStore
from tests.unit.predictor.builders import DAY, MONDAY, failed_run, make_run


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore.open(tmp_path / "predictor.db", retention_days=30)


def test_a_run_reported_twice_is_stored_once(store: RunStore) -> None:
    run = make_run()
    assert store.record_run(run) is RecordOutcome.RECORDED
    assert store.record_run(run) is RecordOutcome.ALREADY_RECORDED
    assert store.record_run(run).value == "already recorded"
    assert store.runs("acme") == [run]


def test_a_conflicting_report_is_refused_and_nothing_is_overwritten(store: RunStore) -> None:
    original = make_run()
    store.record_run(original)
    with pytest.raises(AlreadyExists, match="different result, tests_failed, failure_class"):
        store.record_run(failed_run())
    assert store.runs("acme") == [original]


def test_invalid_runs_are_refused_before_touching_storage(store: RunStore) -> None:
    with pytest.raises(InvalidArgument, match="duration_s"):
        store.record_run(make_run(duration_s=-1.0))
    assert store.runs("acme") == []


def test_other_attempts_and_jobs_of_the_same_run_are_separate_records(store: RunStore) -> None:
    store.record_run(make_run())
    assert store.record_run(make_run(attempt=2)) is RecordOutcome.RECORDED
    assert store.record_run(make_run(job="build")) is RecordOutcome.RECORDED
    assert len(store.runs("acme")) == 3
    assert len(store.runs("acme", job="build")) == 1


def test_tenants_do_not_see_each_other(store: RunStore) -> None:
    store.record_run(make_run())
    store.record_run(make_run(tenant="globex"))
    assert [r.tenant for r in store.runs("globex")] == ["globex"]
    assert store.count_runs("acme") == 1


def test_history_survives_reopening(tmp_path) -> None:
    path = tmp_path / "p.db"
    RunStore.open(path).record_run(make_run())
    assert RunStore.open(path).runs("acme") == [make_run()]


def test_prune_removes_only_runs_older_than_retention(store: RunStore) -> None:
    old = make_run(run_id="old", started_at=MONDAY)
    recent = make_run(run_id="new", started_at=MONDAY + 25 * DAY)
    store.record_run(old)
    store.record_run(recent)
    assert store.prune(now=MONDAY + 35 * DAY) == 1
    assert store.runs("acme") == [recent]
    assert store.prune(now=MONDAY + 35 * DAY, older_than_days=5) == 1
    with pytest.raises(InvalidArgument, match="older_than_days must be > 0"):
        store.prune(now=MONDAY, older_than_days=0)


def test_time_window_and_order(store: RunStore) -> None:
    for i in (3, 1, 2):
        store.record_run(make_run(run_id=str(i), started_at=MONDAY + i * DAY))
    assert [r.run_id for r in store.runs("acme")] == ["1", "2", "3"]
    assert [r.run_id for r in store.runs("acme", since=MONDAY + 2 * DAY)] == ["2", "3"]
    assert [r.run_id for r in store.runs("acme", until=MONDAY + 2 * DAY)] == ["1"]


def test_model_versions_and_activation(store: RunStore) -> None:
    assert store.active_model("acme") is None
    v1 = store.save_model("acme", b"one", created_at=1.0, trained_runs=10, heldout_brier=0.1, activate=True)
    v2 = store.save_model("acme", b"two", created_at=2.0, trained_runs=20, heldout_brier=0.2, activate=False)
    assert (v1, v2) == (1, 2)
    active = store.active_model("acme")
    assert active is not None and active.version == 1 and active.blob == b"one"
    store.save_model("acme", b"three", created_at=3.0, trained_runs=30, heldout_brier=0.05, activate=True)
    assert store.active_model("acme").version == 3  # type: ignore[union-attr]
    assert [m.active for m in store.model_versions("acme")] == [False, False, True]
    assert store.active_model("globex") is None


def test_tenants_lists_who_has_history(store: RunStore) -> None:
    assert store.tenants() == []
    store.record_run(make_run(tenant="globex"))
    store.record_run(make_run())
    assert store.tenants() == ["acme", "globex"]
    store.close()


def test_old_inactive_models_are_dropped_but_the_active_one_is_kept(store: RunStore) -> None:
    store.save_model("acme", b"active", created_at=0.0, trained_runs=1, heldout_brier=0.1, activate=True)
    for i in range(4):
        store.save_model("acme", b"rejected", created_at=float(i), trained_runs=1, heldout_brier=0.2,
                         activate=False, keep_inactive=2)
    versions = store.model_versions("acme")
    assert [(m.version, m.active) for m in versions] == [(1, True), (4, False), (5, False)]
