"""DetectorCore over the real store (SQLite in tmp_path, evidence sealed): what a caller of
the detector's use cases sees, including across a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.corpus import generate_corpus
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.detector.anomaly import COLD_START_SCORE
from services.detector.intake import FailureMetadata
from services.detector.model import FailureModel, ModelConfig
from services.detector.patterns import Pattern
from services.detector.retrain import LabelledLog
from services.detector.sealing import Sealer
from services.detector.service import DetectorCore, page_bounds
from services.detector.store import DetectorStore

KEY = os.urandom(32)
OOM = b"step 1\nnpm run build\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n"
DISK = b"Pulling image\nwrite /var/lib/docker/tmp/x: no space left on device\n"


def _small_model() -> FailureModel:
    samples = generate_corpus(seed=0, samples_per_family=4)
    return FailureModel(ModelConfig()).fit(
        [s.text for s in samples], [s.failure_class for s in samples], groups=[s.family for s in samples]
    )


def _seed() -> list[LabelledLog]:
    return [
        LabelledLog(s.text, s.failure_class, f"seed:{s.family}")
        for s in generate_corpus(seed=1, samples_per_family=4)
    ]


def open_core(path: Path, **kwargs: object) -> DetectorCore:
    store = DetectorStore.open(str(path / "detector.sqlite3"), Sealer(KEY))
    options: dict = {"default_model_loader": _small_model, "seed_corpus": _seed, **kwargs}
    return DetectorCore(store, path / "models", 0.6, **options)


@pytest.fixture()
def core(tmp_path: Path) -> DetectorCore:
    core = open_core(tmp_path)
    yield core
    core.close()


def meta(
    tenant: str = "acme",
    run_id: str = "100",
    attempt: int = 1,
    commit: str = "c" * 40,
    repository: str = "acme/web",
    pipeline: str = "ci",
) -> FailureMetadata:
    return FailureMetadata(
        tenant=tenant,
        provider=Provider.PROVIDER_GITHUB_ACTIONS,
        repository=repository,
        pipeline=pipeline,
        job="build",
        run_id=run_id,
        attempt=attempt,
        commit_sha=commit,
        branch="main",
        runner="r-1",
        job_id="",
        exit_code=1,
        duration_seconds=12.0,
        memory_limit_mb=0,
        last_good_revision="",
        diagnose_only=True,
    )


def junit(failed: list[str], passed: list[str] = ()) -> bytes:  # type: ignore[assignment]
    cases = [
        f'<testcase classname="tests.test_api" name="{n}"><failure message="assert 1 == 2">boom</failure>'
        f"</testcase>"
        for n in failed
    ]
    cases += [f'<testcase classname="tests.test_api" name="{n}"/>' for n in passed]
    return f'<testsuite name="s" tests="{len(cases)}">{"".join(cases)}</testsuite>'.encode()


def test_a_diagnosis_is_stored_sealed_and_survives_a_restart(tmp_path: Path) -> None:
    core = open_core(tmp_path)
    first = core.diagnose(meta(), OOM + b"token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked\n", None)
    assert first.failure_class is FailureClass.OUT_OF_MEMORY and first.cluster_id
    core.close()
    raw = (tmp_path / "detector.sqlite3").read_bytes()
    assert b"heap out of memory" not in raw and b"ghp_abcdefghijklmnopqrstuvwxyz" not in raw
    again = open_core(tmp_path)
    stored = again.get("acme", first.metadata.failure_id)
    assert (stored.failure_class, stored.cluster_id, stored.evidence) == (
        FailureClass.OUT_OF_MEMORY,
        first.cluster_id,
        first.evidence,
    )
    assert (
        stored.metadata.repository == "acme/web"
        and stored.metadata.provider is Provider.PROVIDER_GITHUB_ACTIONS
    )
    # The restored cluster index keeps counting where it left off.
    second = again.diagnose(meta(run_id="101"), OOM, None)
    assert second.cluster_id == first.cluster_id
    [cluster] = again.list_clusters("acme").items
    assert cluster.count == 2 and cluster.repositories == ("acme/web",)
    again.close()


def test_the_failed_step_and_decisive_line_are_kept_across_a_restart(tmp_path: Path) -> None:
    log = (
        b"##[group]Run npm run build\nnpm run build\n##[endgroup]\n"
        + OOM
        + b"##[error]Process completed with exit code 134.\n"
    )
    core = open_core(tmp_path)
    first = core.diagnose(meta(), log, None)
    core.close()
    assert first.failed_step is not None and first.failed_step.command == "npm run build"
    assert first.decisive_line is not None and "heap out of memory" in first.decisive_line.text
    again = open_core(tmp_path)
    stored = again.get("acme", first.metadata.failure_id)
    again.close()
    assert (stored.failed_step, stored.decisive_line) == (first.failed_step, first.decisive_line)


def test_reporting_the_same_attempt_twice_counts_once(core: DetectorCore) -> None:
    a = core.diagnose(meta(), OOM, None)
    b = core.diagnose(meta(), OOM, None)
    assert a.metadata.failure_id == b.metadata.failure_id and a.cluster_id == b.cluster_id
    assert [c.count for c in core.list_clusters("acme").items] == [1]


def test_clusters_group_alike_failures_and_page(core: DetectorCore) -> None:
    for n in range(3):
        core.diagnose(meta(run_id=f"oom-{n}", repository=f"acme/svc-{n}"), OOM, None)
    core.diagnose(meta(run_id="disk"), DISK, None)
    clusters = core.list_clusters("acme").items
    assert sorted(c.count for c in clusters) == [1, 3]
    oom = next(c for c in clusters if c.count == 3)
    assert oom.failure_class is FailureClass.OUT_OF_MEMORY
    assert set(oom.repositories) == {"acme/svc-0", "acme/svc-1", "acme/svc-2"}
    assert any("heap out of memory" in line for line in oom.representative_evidence)
    first = core.list_clusters("acme", page_size=1)
    assert len(first.items) == 1 and first.next_page_token
    second = core.list_clusters("acme", page_size=1, page_token=first.next_page_token)
    assert len(second.items) == 1 and second.next_page_token == ""
    assert {first.items[0].cluster_id, second.items[0].cluster_id} == {c.cluster_id for c in clusters}
    with pytest.raises(InvalidArgument, match="page.page_token"):
        core.list_clusters("acme", page_token="not-a-token")
    with pytest.raises(InvalidArgument, match="page.page_size"):
        page_bounds(501, "")


def test_tenants_never_see_each_other(core: DetectorCore) -> None:
    found = core.diagnose(meta(), OOM, junit(["test_a"]))
    core.create_pattern(
        Pattern("vault", "acme", FailureClass.INFRASTRUCTURE, r"Vault is sealed", priority=90)
    )
    with pytest.raises(NotFound):
        core.get("globex", found.metadata.failure_id)
    assert core.list_clusters("globex").items == []
    assert core.test_history("globex", "tests.test_api::test_a").runs == []
    assert core.test_history("acme", "tests.test_api::test_a").runs
    with pytest.raises(NotFound):
        core.get_pattern("globex", "vault")
    with pytest.raises(NotFound):
        core.delete_pattern("globex", "vault")
    assert "vault" not in {p.pattern_id for p in core.list_patterns("globex", True).items}


def test_a_tenant_pattern_decides_for_that_tenant_only_and_edits_apply_at_once(core: DetectorCore) -> None:
    log = b"deploy\nerror: Vault is sealed\n"
    assert core.diagnose(meta(run_id="1"), log, None).failure_class is FailureClass.UNKNOWN
    core.create_pattern(
        Pattern("vault", "acme", FailureClass.INFRASTRUCTURE, r"Vault is sealed", priority=90)
    )
    mine = core.diagnose(meta(run_id="2"), log, None)
    assert (mine.failure_class, mine.decided_by) == (FailureClass.INFRASTRUCTURE, "pattern:vault")
    assert core.diagnose(meta("globex", run_id="2"), log, None).failure_class is FailureClass.UNKNOWN
    core.update_pattern(Pattern("vault", "acme", FailureClass.CONFIGURATION, r"Vault is sealed", priority=90))
    assert core.diagnose(meta(run_id="3"), log, None).failure_class is FailureClass.CONFIGURATION
    core.delete_pattern("acme", "vault")
    assert core.diagnose(meta(run_id="4"), log, None).failure_class is FailureClass.UNKNOWN


def test_pattern_refusals_name_the_problem_and_store_nothing(core: DetectorCore) -> None:
    with pytest.raises(InvalidArgument, match="pattern.expression"):
        core.create_pattern(Pattern("backref", "acme", FailureClass.NETWORK, r"^(a+)+\1$"))
    with pytest.raises(InvalidArgument, match="pattern.expression"):
        core.create_pattern(Pattern("look", "acme", FailureClass.NETWORK, r"foo(?=bar)"))
    with pytest.raises(InvalidArgument, match="pattern.expression"):
        core.create_pattern(Pattern("huge", "acme", FailureClass.NETWORK, r"((a{100}){100}){100}"))
    with pytest.raises(PermissionDenied, match="read-only"):
        core.update_pattern(Pattern("disk.no-space", "acme", FailureClass.DISK_FULL, "full"))
    assert core.list_patterns("acme", include_builtin=False).items == []
    # A backtracking nightmare for other engines is linear in RE2: accepted, and a hostile line is fast.
    core.create_pattern(Pattern("nested", "acme", FailureClass.NETWORK, r"(x+x+)+y", priority=90))
    result = core.diagnose(meta(), b"x" * 200_000 + b"\n", None)
    assert result.failure_class is FailureClass.UNKNOWN


def test_bad_input_is_refused_before_anything_is_stored(core: DetectorCore) -> None:
    with pytest.raises(InvalidArgument, match="log"):
        core.diagnose(meta(), b"", None)
    with pytest.raises(InvalidArgument, match="log"):
        core.diagnose_stream(meta(), iter([b"", b""]), None)
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<testsuite>&lol2;</testsuite>"
    )
    for hostile in (bomb, b"<testsuite><testcase", b"not xml at all"):
        with pytest.raises(InvalidArgument, match="junit_xml"):
            core.diagnose(meta(), OOM, hostile)
    with pytest.raises(NotFound):
        core.get("acme", meta().failure_id)
    assert core.list_clusters("acme").items == []


def test_invalid_utf8_is_replaced_never_fatal(core: DetectorCore) -> None:
    result = core.diagnose(meta(), b"\xff\xfe broken \xc3\x28 bytes\n" + OOM + b"\xed\xa0\x80\n", None)
    assert result.failure_class is FailureClass.OUT_OF_MEMORY
    assert core.get("acme", result.metadata.failure_id).failure_class is FailureClass.OUT_OF_MEMORY


def test_a_test_that_failed_and_passed_on_one_commit_is_flaky_with_the_runs_as_evidence(
    core: DetectorCore,
) -> None:
    log = b"=== FAILURES ===\nFAILED tests/test_api.py::test_login - AssertionError\n"
    first = core.diagnose(meta(run_id="200"), log, junit(["test_login"], ["test_home"]))
    assert first.failure_class is FailureClass.TEST_FAILURE and first.flaky_tests == ()
    # The re-run attempt passes test_login and fails test_home, which passed in run 200: flaky.
    second = core.diagnose(meta(run_id="200", attempt=2), log, junit(["test_home"], ["test_login"]))
    assert (
        second.flaky_tests == ("tests.test_api::test_home",)
        and second.failure_class is FailureClass.FLAKY_TEST
    )
    third = core.diagnose(meta(run_id="201"), log, junit(["test_login"]))
    assert third.failure_class is FailureClass.FLAKY_TEST and third.decided_by == "history:flaky-on-commit"
    assert "tests.test_api::test_login" in third.flaky_tests
    assert {"200", "200/attempts/2", "201"} <= set(third.flaky_evidence_run_ids)
    history = core.test_history("acme", "tests.test_api::test_login", "acme/web")
    assert history.flaky and {"200", "200/attempts/2"} <= set(history.evidence_run_ids)
    assert [r.passed for r in history.runs].count(True) == 1 and 0 < history.flakiness_rate < 1
    # Another commit: failing there is not flaky evidence.
    other = core.diagnose(meta(run_id="300", commit="d" * 40), log, junit(["test_login"]))
    assert other.failure_class is FailureClass.TEST_FAILURE
    assert core.get("acme", third.metadata.failure_id).flaky_evidence_run_ids == third.flaky_evidence_run_ids


def test_a_successful_rerun_outcome_is_flaky_evidence_and_a_confirmed_label(core: DetectorCore) -> None:
    log = b"FAILED tests/test_api.py::test_pay - AssertionError\n"
    failed = core.diagnose(meta(run_id="400"), log, junit(["test_pay"]))
    fid = failed.metadata.failure_id
    assert core.record_outcome("acme", "o-1", fid, True, FailureClass.TEST_FAILURE, ActionKind.RETRY, "a-1")
    assert not core.record_outcome(
        "acme", "o-1", fid, True, FailureClass.TEST_FAILURE, ActionKind.RETRY, "a-1"
    )
    history = core.test_history("acme", "tests.test_api::test_pay")
    assert history.flaky and set(history.evidence_run_ids) == {"400", "400/rerun/a-1"}
    assert [label.failure_class for label in core.store.confirmed_labels("acme")] == [
        FailureClass.TEST_FAILURE
    ]
    # An escalation, or a failed action, confirms nothing.
    core.record_outcome("acme", "o-2", fid, True, FailureClass.OUT_OF_MEMORY, ActionKind.ESCALATE, "a-2")
    core.record_outcome("acme", "o-3", fid, False, FailureClass.OUT_OF_MEMORY, ActionKind.RETRY, "a-3")
    assert [label.failure_class for label in core.store.confirmed_labels("acme")] == [
        FailureClass.TEST_FAILURE
    ]
    # An outcome for a failure this tenant does not have is recorded, and teaches nothing.
    assert core.record_outcome(
        "globex", "o-1", fid, True, FailureClass.OUT_OF_MEMORY, ActionKind.RETRY, "a-1"
    )
    assert core.store.confirmed_labels("globex") == []


def test_in_log_reruns_are_flaky_evidence_of_this_run(core: DetectorCore) -> None:
    log = (
        b"tests/test_api.py::test_sync RERUN\n"
        b"tests/test_api.py::test_sync PASSED\n"
        b"tests/test_api.py::test_other FAILED\n"
    )
    result = core.diagnose(meta(run_id="500"), log, None)
    assert "tests/test_api.py::test_sync" in result.flaky_tests and result.flaky_evidence_run_ids == ("500",)


def test_anomaly_is_neutral_when_cold_and_flags_an_unusual_log(core: DetectorCore) -> None:
    assert core.diagnose(meta(run_id="a0"), OOM, None).anomaly_score == COLD_START_SCORE
    ordinary = b"".join(b"step %d ok\n" % i for i in range(30)) + OOM
    for n in range(1, 26):
        core.diagnose(meta(run_id=f"a{n}"), ordinary, None)
    usual = core.diagnose(meta(run_id="usual"), ordinary, None).anomaly_score
    strange = b"".join(b"panic: goroutine %d deadlock at 0x%x zzz qqq\n" % (i, i * 977) for i in range(3000))
    unusual = core.diagnose(meta(run_id="strange"), strange, None).anomaly_score
    assert unusual > usual and unusual > COLD_START_SCORE


def test_the_model_version_in_force_is_on_the_diagnosis(tmp_path: Path) -> None:
    core = open_core(tmp_path)
    assert core.diagnose(meta(run_id="1"), OOM, None).model_version == ""  # patterns only while training
    model = core.load_default_model()
    assert core.diagnose(meta(run_id="2"), OOM, None).model_version == model.version
    core.close()
    again = open_core(tmp_path)  # the default model is the shipped artefact, the same at every start
    assert again.load_default_model().version == model.version
    assert again.get("acme", meta(run_id="2").failure_id).model_version == model.version
    again.close()


def test_retrain_needs_confirmed_labels_then_keeps_the_better_model(tmp_path: Path) -> None:
    core = open_core(tmp_path, min_confirmed_labels=8)
    core.load_default_model()
    with pytest.raises(FailedPrecondition, match="at least 8 outcome-confirmed labels.*has 0"):
        core.retrain("acme")
    logs = {FailureClass.OUT_OF_MEMORY: OOM, FailureClass.DISK_FULL: DISK}
    for n in range(10):
        failure_class = FailureClass.OUT_OF_MEMORY if n % 2 else FailureClass.DISK_FULL
        found = core.diagnose(
            meta(run_id=f"r{n}", repository=f"acme/repo-{n % 5}"), logs[failure_class], None
        )
        core.record_outcome(
            "acme",
            f"o{n}",
            found.metadata.failure_id,
            True,
            FailureClass.FAILURE_CLASS_UNSPECIFIED,
            ActionKind.RAISE_RESOURCE_LIMIT if n % 2 else ActionKind.CLEAR_CACHE,
            f"a{n}",
        )
    report = core.retrain("acme")
    assert report.held_out_examples > 0 and report.training_examples > 10
    assert report.previous_version and report.candidate_version
    assert report.model_version == (report.candidate_version if report.accepted else report.previous_version)
    assert report.new_score >= report.old_score if report.accepted else report.new_score < report.old_score
    core.close()
    again = open_core(tmp_path)
    again.load_default_model()
    assert again.model_for("acme").version == report.model_version  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition):
        again.retrain("globex")  # another tenant's labels are not yours
    again.close()
