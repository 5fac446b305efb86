"""The detector's use cases, free of gRPC: diagnose (unary or streamed), look up,
cluster, keep test history, manage the tenant's knowledge base, learn from outcomes
and retrain.

Everything that must survive a restart is in the `DetectorStore` (SQLite, evidence
sealed under per-tenant keys) or in the `ModelRegistry` under the data folder. The
per-tenant state kept in memory (compiled knowledge base, cluster index, template
miner, anomaly forest, the tenant's own model) is a cache rebuilt from those on
first use after a start.

What one diagnosis does, after the log is redacted and scanned:
1. the failure is recorded (a second report of the same job attempt refreshes it
   instead of counting twice);
2. the tests the log or JUnit report shows failing and passing are added to the
   tenant's test history; a test that both failed and passed on one commit is flaky,
   with the runs as evidence; a TEST_FAILURE whose failed tests are all flaky becomes
   FLAKY_TEST, decided by "history:flaky-on-commit";
3. the failure joins a cluster of the tenant (`ClusterIndex`, persisted);
4. the log's shape is scored against the tenant's history (`AnomalyScorer`; 0.5
   until there is enough history), then added to that history;
5. the diagnosis is stored, evidence sealed.

`model_version` on a diagnosis is the trained model that was in force for the tenant
(empty while the default model is still training: patterns only); `decided_by` says
whether a pattern, the model or the history decided.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.config import ServiceConfig
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.detector.anomaly import AnomalyScorer, LogFeatures, extract_features
from services.detector.clusters import ClusterIndex, ClusterRow
from services.detector.diagnose import Diagnoser, DiagnosisResult
from services.detector.evidence import EvidenceLine
from services.detector.flaky import FlakyTracker
from services.detector.flaky import TestRun as TrackedRun
from services.detector.intake import FailureMetadata
from services.detector.junit import JUnitReport, parse_junit
from services.detector.model import FailureModel
from services.detector.patterns import KnowledgeBase, Pattern
from services.detector.retrain import LabelledLog, ModelRegistry, retrain
from services.detector.sealing import KEY_BYTES, Sealer
from services.detector.steps import FailedStep
from services.detector.store import DetectorStore, FailureRecord
from services.detector.templates import TemplateMiner

log = logging.getLogger(__name__)

MAX_TENANT_PATTERNS = 500
MAX_RECORDED_TESTS = 5000  # test verdicts recorded per report (JUnit may list 100k cases)
MAX_FLAKY_CHECKS = 200  # failed tests checked against history per report
ANOMALY_HISTORY = 1000  # feature vectors the tenant's forest is fitted on
ANOMALY_MIN_HISTORY = 20
FLAKY_WINDOW_SECONDS = 30 * 24 * 3600
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT = 200, 2000
HISTORY_DECIDED = "history:flaky-on-commit"
# A successful healing action confirms the diagnosed class; an escalation only says a
# human was told, so it confirms nothing.
CONFIRMING_ACTIONS = frozenset(ActionKind) - {ActionKind.ESCALATE, ActionKind.ACTION_KIND_UNSPECIFIED}
RERUN_ACTIONS = frozenset({ActionKind.RETRY, ActionKind.RETRY_ON_FRESH_RUNNER})
UNLABELLED = frozenset({FailureClass.FAILURE_CLASS_UNSPECIFIED, FailureClass.UNKNOWN})


@dataclass(frozen=True)
class DiagnosisRecord:
    """A stored diagnosis, as GetDiagnosis and ReportFailure show it."""

    metadata: FailureMetadata
    failure_class: FailureClass
    confidence: float
    evidence: list[EvidenceLine]
    signature: str
    template: str
    decided_by: str
    model_version: str
    remediation_hint: str
    redactions: int
    failed_tests: tuple[str, ...]
    flaky_tests: tuple[str, ...]
    flaky_evidence_run_ids: tuple[str, ...]
    cluster_id: str
    anomaly_score: float
    diagnosed_at: float
    # The step that failed (None: the log shows no framing) and the real log line the
    # decision rests on (None: no pattern decided).
    failed_step: FailedStep | None = None
    decisive_line: EvidenceLine | None = None


@dataclass(frozen=True)
class Page:
    items: list
    next_page_token: str


@dataclass(frozen=True)
class TestHistory:
    __test__ = False  # not a pytest class

    runs: list
    flakiness_rate: float
    flaky: bool
    evidence_run_ids: list[str]


@dataclass(frozen=True)
class RetrainReport:
    accepted: bool
    previous_version: str
    model_version: str  # in force after the call
    candidate_version: str
    old_score: float
    new_score: float
    training_examples: int
    held_out_examples: int
    detail: str


def run_key(run_id: str, attempt: int) -> str:
    """How a run is named in test history and flaky evidence."""
    return run_id if attempt <= 1 else f"{run_id}/attempts/{attempt}"


def read_master_key(path: Path) -> bytes:
    """The first non-comment line of the master key file, hex-encoded 32 bytes."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise FailedPrecondition(f"master key file {path}: line {number} is not hex") from None
        if len(key) != KEY_BYTES:
            raise FailedPrecondition(
                f"master key file {path}: the key must be {KEY_BYTES} bytes, got {len(key)}"
            )
        return key
    raise FailedPrecondition(f"master key file {path} holds no key")


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def page_bounds(page_size: int, page_token: str, field: str = "page") -> tuple[int, int]:
    """(offset, size) from a PageRequest's fields; the token is opaque to callers."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"{field}.page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {page_size}")
    offset = 0
    if page_token:
        try:
            padded = page_token + "=" * (-len(page_token) % 4)
            offset = int(json.loads(base64.urlsafe_b64decode(padded))["o"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument(
                f"{field}.page_token",
                "is not a token this service gave out; send the next_page_token of the previous page",
            ) from None
        if offset < 0:
            raise InvalidArgument(f"{field}.page_token", "is not a token this service gave out")
    return offset, page_size or DEFAULT_PAGE_SIZE


def paginate(items: Sequence, page_size: int, page_token: str, field: str = "page") -> Page:
    offset, size = page_bounds(page_size, page_token, field)
    chosen = list(items[offset : offset + size])
    more = offset + size < len(items)
    return Page(chosen, _encode_token(offset + size) if more else "")


class _TenantState:
    """One tenant's caches; every field rebuilds from the store or the registry."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.knowledge_base: KnowledgeBase | None = None
        self.clusters: ClusterIndex | None = None
        self.miner: TemplateMiner | None = None
        self.scorer: AnomalyScorer | None = None
        self.history = 0
        self.fitted_on = 0
        self.model: FailureModel | None = None
        self.model_loaded = False


def _seed_corpus() -> list[LabelledLog]:
    """What the built model artefact was trained on; every tenant's retraining starts from it."""
    from services.detector.model import load_training_set  # noqa: PLC0415

    return [LabelledLog("", item.failure_class, f"seed:{item.group}", item.document) for item in load_training_set()]


def _built_default() -> FailureModel:
    """The model artefact built by `make model` and shipped with the code (never trained here)."""
    from services.detector.model import load_default_model  # noqa: PLC0415

    return load_default_model()


class DetectorCore:
    def __init__(
        self,
        store: DetectorStore,
        models_dir: Path,
        confidence_threshold: float = 0.6,
        *,
        min_confirmed_labels: int = 20,
        default_model_loader: Callable[[], FailureModel] = _built_default,
        seed_corpus: Callable[[], list[LabelledLog]] = _seed_corpus,
    ) -> None:
        Diagnoser(confidence_threshold=confidence_threshold)  # validates the threshold
        self.store = store
        self.models_dir = Path(models_dir)
        self.confidence_threshold = confidence_threshold
        self.min_confirmed_labels = min_confirmed_labels
        self._default_model_loader = default_model_loader
        self._seed_corpus = seed_corpus
        self._seed: list[LabelledLog] | None = None
        self._default_model: FailureModel | None = None
        self._model_ready = threading.Event()
        self._tenants: dict[str, _TenantState] = {}
        self._tenants_lock = threading.Lock()
        self._retrain_lock = threading.Lock()

    @classmethod
    def open(cls, config: ServiceConfig, confidence_threshold: float) -> DetectorCore:
        if config.master_key_path is not None:
            if not config.master_key_path.exists():
                raise FailedPrecondition(f"HG_MASTER_KEY_FILE {config.master_key_path} does not exist")
            key = read_master_key(config.master_key_path)
        else:
            # Development only: a key beside the data, so evidence is still sealed at rest.
            path = config.data_dir / "detector-master.key"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                import os  # noqa: PLC0415

                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(os.urandom(KEY_BYTES).hex() + "\n")
                log.warning("no HG_MASTER_KEY_FILE: made a development master key at %s", path)
            key = read_master_key(path)
        store = DetectorStore.open(str(config.database_path), Sealer(key))
        minimum = int(config.settings.get("retrain_min_labels", "20"))
        return cls(store, config.data_dir / "models", confidence_threshold, min_confirmed_labels=minimum)

    # --- models ------------------------------------------------------------------
    def _registry(self, tenant: str | None) -> ModelRegistry:
        if tenant is None:
            return ModelRegistry(self.models_dir / "default")
        return ModelRegistry(self.models_dir / "tenants" / hashlib.sha256(tenant.encode()).hexdigest()[:24])

    def load_default_model(self) -> FailureModel:
        """The model artefact shipped with the code (`make model` builds it); never trained here."""
        started = time.perf_counter()
        model = self._default_model_loader()
        log.info("loaded default failure model %s in %.2fs", model.version, time.perf_counter() - started)
        self._default_model = model
        self._model_ready.set()
        return model

    def start_loading_model(self) -> threading.Thread:
        """Load the default model in the background; patterns alone decide meanwhile."""

        def work() -> None:
            try:
                self.load_default_model()
            except Exception:  # noqa: BLE001
                log.exception("the default failure model could not be loaded; patterns only")

        thread = threading.Thread(target=work, name="detector-model", daemon=True)
        thread.start()
        return thread

    def wait_model_ready(self, timeout: float) -> bool:
        return self._model_ready.wait(timeout)

    def model_for(self, tenant: str) -> FailureModel | None:
        state = self._state(tenant)
        with state.lock:
            if not state.model_loaded:
                registry = self._registry(tenant)
                if registry.current_version() is not None:
                    try:
                        state.model = registry.load()
                    except Exception:  # noqa: BLE001
                        log.warning("tenant model unusable; using the default model", exc_info=True)
                state.model_loaded = True
            return state.model or self._default_model

    def set_threshold(self, value: float) -> None:
        Diagnoser(confidence_threshold=value)  # validates
        self.confidence_threshold = value

    # --- per-tenant state -----------------------------------------------------------
    def _state(self, tenant: str) -> _TenantState:
        with self._tenants_lock:
            state = self._tenants.get(tenant)
            if state is None:
                state = self._tenants[tenant] = _TenantState()
            return state

    def _knowledge_base(self, tenant: str) -> KnowledgeBase:
        state = self._state(tenant)
        with state.lock:
            if state.knowledge_base is None:
                state.knowledge_base = self.store.knowledge_base(tenant)
            return state.knowledge_base

    def _load_history(self, tenant: str, state: _TenantState) -> None:
        """Clusters, template vocabulary and anomaly history from the store (once per start)."""
        if state.clusters is not None:
            return
        clusters = ClusterIndex.restore(self.store.cluster_rows(tenant))
        miner = TemplateMiner()
        for template in self.store.templates(tenant):
            miner.add(template)
        history = [LogFeatures(*v) for v in self.store.log_features(tenant, ANOMALY_HISTORY)]
        scorer = AnomalyScorer(min_history=ANOMALY_MIN_HISTORY).fit(history)
        state.clusters, state.miner, state.scorer = clusters, miner, scorer
        state.history = state.fitted_on = len(history)

    def diagnoser_for(self, tenant: str) -> Diagnoser:
        return Diagnoser(
            self._knowledge_base(tenant),
            model=self.model_for(tenant),
            confidence_threshold=self.confidence_threshold,
        )

    # --- diagnose ----------------------------------------------------------------------
    def diagnose(self, meta: FailureMetadata, log_bytes: bytes, junit: bytes | None) -> DiagnosisRecord:
        report = parse_junit(junit) if junit else None
        diagnoser = self.diagnoser_for(meta.tenant)
        return self._record(meta, diagnoser.diagnose(log_bytes, junit), report, diagnoser.model)

    def diagnose_stream(
        self, meta: FailureMetadata, chunks: Iterable[bytes], junit: bytes | None
    ) -> DiagnosisRecord:
        report = parse_junit(junit) if junit else None
        diagnoser = self.diagnoser_for(meta.tenant)
        return self._record(meta, diagnoser.diagnose_stream(chunks, junit), report, diagnoser.model)

    def _record(
        self, meta: FailureMetadata, result: DiagnosisResult, report: JUnitReport | None, model: object | None
    ) -> DiagnosisRecord:
        tenant = meta.tenant
        state = self._state(tenant)
        model_version = getattr(model, "version", "") if model is not None else ""
        now = time.time()
        with state.lock:
            self._load_history(tenant, state)
            assert state.clusters is not None and state.miner is not None and state.scorer is not None
            new = self.store.upsert_failure(
                FailureRecord(
                    tenant=tenant,
                    failure_id=meta.failure_id,
                    provider=meta.provider.name,
                    repository=meta.repository,
                    pipeline=meta.pipeline,
                    job=meta.job,
                    run_id=meta.run_id,
                    attempt=meta.attempt,
                    commit=meta.commit_sha,
                    branch=meta.branch,
                    exit_code=meta.exit_code,
                    duration_seconds=meta.duration_seconds,
                    runner=meta.runner,
                    job_id=meta.job_id,
                )
            )
            previous_cluster = "" if new else self._stored_cluster(tenant, meta.failure_id)
            self._record_tests(meta, result, report, now)
            result, evidence_runs = self._flaky(meta, result)
            if previous_cluster:
                cluster_id = previous_cluster
            else:
                cluster_id = state.clusters.assign(
                    [e.text for e in result.evidence],
                    failure_class=result.failure_class,
                    repository=meta.repository,
                    pipeline=meta.pipeline,
                    seen_at=now,
                )
                self.store.save_cluster(tenant, state.clusters.get(cluster_id))
            anomaly = self._anomaly(tenant, state, meta.failure_id, result, learn=new)
            self.store.save_diagnosis(
                tenant,
                meta.failure_id,
                result,
                cluster_id=cluster_id,
                anomaly_score=anomaly,
                model_version=model_version,
                flaky_evidence_run_ids=evidence_runs,
            )
        return DiagnosisRecord(
            metadata=meta,
            failure_class=result.failure_class,
            confidence=result.confidence,
            evidence=list(result.evidence),
            signature=result.signature,
            template=result.template,
            decided_by=result.decided_by,
            model_version=model_version,
            remediation_hint=result.remediation_hint,
            redactions=result.redaction_count,
            failed_tests=tuple(result.failed_tests),
            flaky_tests=tuple(result.flaky_tests),
            flaky_evidence_run_ids=evidence_runs,
            cluster_id=cluster_id,
            anomaly_score=anomaly,
            diagnosed_at=now,
            failed_step=result.failed_step,
            decisive_line=result.decisive_line,
        )

    def _stored_cluster(self, tenant: str, failure_id: str) -> str:
        try:
            return self.store.get_diagnosis(tenant, failure_id).cluster_id
        except (NotFound, FailedPrecondition):
            return ""

    def _record_tests(
        self, meta: FailureMetadata, result: DiagnosisResult, report: JUnitReport | None, now: float
    ) -> None:
        key = run_key(meta.run_id, meta.attempt)
        verdicts: list[tuple[str, bool]] = [(t, False) for t in result.failed_tests]
        # A test the log shows failing, then passing on re-run, did both in this run.
        verdicts += [(t, False) for t in result.flaky_tests] + [(t, True) for t in result.flaky_tests]
        if report is not None:
            verdicts += [(t, True) for t in report.passed]
        for test, passed in verdicts[:MAX_RECORDED_TESTS]:
            self.store.record_test_result(
                meta.tenant, test, meta.commit_sha, key, passed, repository=meta.repository, at=now
            )

    def _flaky(
        self, meta: FailureMetadata, result: DiagnosisResult
    ) -> tuple[DiagnosisResult, tuple[str, ...]]:
        """Flaky tests of this failure and the runs that prove it; FLAKY_TEST when every failed test is flaky."""
        flaky: dict[str, None] = dict.fromkeys(result.flaky_tests)
        evidence: dict[str, None] = {}
        if result.flaky_tests:
            evidence[run_key(meta.run_id, meta.attempt)] = None
        flaky_failed = 0
        if meta.commit_sha:  # without a commit, "the same code" cannot be established
            for test in result.failed_tests[:MAX_FLAKY_CHECKS]:
                runs = self.store.runs_on_commit(meta.tenant, meta.repository, test, meta.commit_sha)
                if any(r.passed for r in runs) and any(not r.passed for r in runs):
                    flaky_failed += 1
                    flaky.setdefault(test, None)
                    evidence.update(dict.fromkeys(r.run_id for r in runs))
        changes: dict[str, object] = {"flaky_tests": list(flaky)}
        if (
            result.failure_class in (FailureClass.TEST_FAILURE, FailureClass.UNKNOWN)
            and result.failed_tests
            and flaky_failed == len(result.failed_tests)
        ):
            from services.detector.knowledge_base.defaults import HINT  # noqa: PLC0415

            changes.update(
                failure_class=FailureClass.FLAKY_TEST,
                decided_by=HISTORY_DECIDED,
                pattern_id="",
                confidence=max(result.confidence, 0.9),
                remediation_hint=HINT.get(FailureClass.FLAKY_TEST, ""),
            )
        return dataclasses.replace(result, **changes), tuple(evidence)  # type: ignore[arg-type]

    def _anomaly(
        self, tenant: str, state: _TenantState, failure_id: str, result: DiagnosisResult, learn: bool
    ) -> float:
        assert state.miner is not None and state.scorer is not None
        features = extract_features("\n".join(result.tail_lines), state.miner)
        features = dataclasses.replace(
            features, line_count=result.lines_scanned, byte_count=result.bytes_scanned
        )
        score = round(state.scorer.score(features), 4)
        if not learn:
            return score
        templates = {state.miner.add(line)[1] for line in result.tail_lines}
        self.store.add_templates(tenant, templates)
        self.store.save_log_features(tenant, failure_id, list(dataclasses.astuple(features)))
        state.history += 1
        grown = state.history - state.fitted_on
        if state.history >= ANOMALY_MIN_HISTORY and (
            state.scorer.is_cold or grown >= max(5, state.fitted_on // 10)
        ):
            history = [LogFeatures(*v) for v in self.store.log_features(tenant, ANOMALY_HISTORY)]
            state.scorer = AnomalyScorer(min_history=ANOMALY_MIN_HISTORY).fit(history)
            state.fitted_on = state.history
        return score

    # --- read back ---------------------------------------------------------------------
    def get(self, tenant: str, failure_id: str) -> DiagnosisRecord:
        failure = self.store.get_failure(tenant, failure_id)
        stored = self.store.get_diagnosis(tenant, failure_id)
        meta = FailureMetadata(
            tenant=tenant,
            provider=Provider[failure.provider],
            repository=failure.repository,
            pipeline=failure.pipeline,
            job=failure.job,
            run_id=failure.run_id,
            attempt=failure.attempt,
            commit_sha=failure.commit,
            branch=failure.branch,
            runner=failure.runner,
            job_id=failure.job_id,
            exit_code=failure.exit_code,
            duration_seconds=failure.duration_seconds,
            memory_limit_mb=0,
            last_good_revision="",
            diagnose_only=False,
        )
        return DiagnosisRecord(
            metadata=meta,
            failure_class=stored.failure_class,
            confidence=stored.confidence,
            evidence=list(stored.evidence),
            signature=stored.signature,
            template=stored.template,
            decided_by=stored.decided_by,
            model_version=stored.model_version,
            remediation_hint=stored.remediation_hint,
            redactions=stored.redactions,
            failed_tests=stored.failed_tests,
            flaky_tests=stored.flaky_tests,
            flaky_evidence_run_ids=stored.flaky_evidence_run_ids,
            cluster_id=stored.cluster_id,
            anomaly_score=stored.anomaly_score,
            diagnosed_at=stored.created_at,
            failed_step=stored.failed_step,
            decisive_line=stored.decisive_line,
        )

    def list_clusters(self, tenant: str, page_size: int = 0, page_token: str = "") -> Page:
        state = self._state(tenant)
        with state.lock:
            self._load_history(tenant, state)
            assert state.clusters is not None
            rows: list[ClusterRow] = sorted(state.clusters.rows(), key=lambda r: (-r.last_seen, r.cluster_id))
        return paginate(rows, page_size, page_token)

    def test_history(
        self, tenant: str, test_name: str, repository: str = "", limit: int = 0, now: float | None = None
    ) -> TestHistory:
        if not test_name:
            raise InvalidArgument("test_name", "is required (as in Diagnosis.failed_tests)")
        if limit < 0 or limit > MAX_HISTORY_LIMIT:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_HISTORY_LIMIT}, got {limit}")
        runs = self.store.test_history(tenant, test_name, limit or DEFAULT_HISTORY_LIMIT, repository or None)
        tracker = FlakyTracker()
        for run in runs:
            if not run.commit or not run.run_id:
                continue  # without a commit a run cannot show that the same code passed and failed
            # One tracker key per (repository, test): the same name in two repositories is two tests.
            tracker.record(
                TrackedRun(
                    f"{run.repository}\x1f{test_name}",
                    run.commit,
                    f"{run.run_id}\x1f{int(run.passed)}",
                    run.passed,
                    run.recorded_at,
                )
            )
        now = time.time() if now is None else now
        evidence: dict[str, None] = {}
        runs_in_window = failures = 0
        for repo in dict.fromkeys(r.repository for r in runs):
            key = f"{repo}\x1f{test_name}"
            rate = tracker.rate(key, FLAKY_WINDOW_SECONDS, now)
            runs_in_window += rate.runs
            failures += rate.flaky_failures
            for found in tracker.flaky_evidence(key):
                for run_id in (*found.failed_run_ids, *found.passed_run_ids):
                    evidence.setdefault(run_id.split("\x1f")[0], None)
        rate_value = failures / runs_in_window if runs_in_window else 0.0
        return TestHistory(runs, round(rate_value, 4), bool(evidence), list(evidence))

    # --- knowledge base ------------------------------------------------------------------
    def _invalidate_patterns(self, tenant: str) -> None:
        state = self._state(tenant)
        with state.lock:
            state.knowledge_base = None

    def create_pattern(self, pattern: Pattern) -> Pattern:
        if len(self.store.list_patterns(pattern.tenant, include_builtin=False)) >= MAX_TENANT_PATTERNS:
            raise FailedPrecondition(
                f"tenant {pattern.tenant!r} already has {MAX_TENANT_PATTERNS} patterns, the most "
                "allowed; delete or update one",
                reason="TOO_MANY_PATTERNS",
            )
        created = self.store.create_pattern(pattern)
        self._invalidate_patterns(pattern.tenant)
        return created

    def update_pattern(self, pattern: Pattern) -> Pattern:
        updated = self.store.update_pattern(pattern)
        self._invalidate_patterns(pattern.tenant)
        return updated

    def delete_pattern(self, tenant: str, pattern_id: str) -> None:
        self.store.delete_pattern(tenant, pattern_id)
        self._invalidate_patterns(tenant)

    def get_pattern(self, tenant: str, pattern_id: str) -> Pattern:
        return self.store.get_pattern(tenant, pattern_id)

    def list_patterns(
        self, tenant: str, include_builtin: bool, page_size: int = 0, page_token: str = ""
    ) -> Page:
        return paginate(self.store.list_patterns(tenant, include_builtin), page_size, page_token)

    # --- learning ------------------------------------------------------------------------
    def record_outcome(
        self,
        tenant: str,
        outcome_id: str,
        failure_id: str,
        success: bool,
        failure_class: FailureClass,
        kind: ActionKind = ActionKind.ACTION_KIND_UNSPECIFIED,
        action_id: str = "",
        detail: str = "",
    ) -> bool:
        """Remember an outcome once (False for a repeat). A success confirms the failure's class
        (a label for Retrain); a successful re-run shows its failed tests passing on the same commit."""
        if not self.store.record_outcome(tenant, failure_id, kind.name, success, detail, outcome_id):
            return False
        if not success or not failure_id:
            return True
        try:
            failure = self.store.get_failure(tenant, failure_id)
            stored = self.store.get_diagnosis(tenant, failure_id)
        except (NotFound, FailedPrecondition):
            log.info(
                "outcome %s names failure %s unknown to tenant %s; nothing learned",
                outcome_id,
                failure_id,
                tenant,
            )
            return True
        if kind in CONFIRMING_ACTIONS:
            label = (
                stored.failure_class
                if failure_class in (FailureClass.FAILURE_CLASS_UNSPECIFIED,)
                else failure_class
            )
            if label not in UNLABELLED:
                self.store.confirm_label(tenant, failure_id, label, f"outcome:{outcome_id}")
        if kind in RERUN_ACTIONS and stored.failed_tests:
            rerun = f"{failure.run_id}/rerun/{action_id or outcome_id}"
            for test in stored.failed_tests[:MAX_RECORDED_TESTS]:
                self.store.record_test_result(
                    tenant, test, failure.commit, rerun, True, repository=failure.repository
                )
        return True

    def retrain(self, tenant: str) -> RetrainReport:
        """Train a candidate on the tenant's confirmed labels (plus the seed corpus); it serves the
        tenant only if it scores at least as well as the current model on held-out confirmed labels."""
        confirmed = [
            LabelledLog(item.text, item.failure_class, item.repository)
            for item in self.store.confirmed_labels(tenant)
        ]
        if len(confirmed) < self.min_confirmed_labels:
            raise FailedPrecondition(
                f"retraining needs at least {self.min_confirmed_labels} outcome-confirmed labels, tenant {tenant!r} "
                f"has {len(confirmed)}; labels come from successful healing outcomes (RecordOutcome)",
                reason="NOT_ENOUGH_LABELS",
            )
        counts: dict[FailureClass, int] = {}
        for item in confirmed:
            counts[item.failure_class] = counts.get(item.failure_class, 0) + 1
        if len(counts) < 2 or min(counts.values()) < 2:
            rare = ", ".join(f"{c.name}: {n}" for c, n in sorted(counts.items()) if n < 2) or "only one class"
            raise FailedPrecondition(
                f"retraining needs at least 2 confirmed labels of each class and at least 2 classes to hold some out "
                f"({rare})",
                reason="NOT_ENOUGH_LABELS",
            )
        with self._retrain_lock:
            if self._seed is None:
                self._seed = self._seed_corpus()
            current = self.model_for(tenant)
            try:
                result, in_force = retrain(
                    current,
                    confirmed,
                    base=self._seed,
                    min_confirmed=self.min_confirmed_labels,
                    confidence_threshold=self.confidence_threshold,
                )
            except ValueError as error:  # a split the labels cannot support
                raise FailedPrecondition(
                    f"retraining could not split the confirmed labels: {error}", reason="NOT_ENOUGH_LABELS"
                ) from None
            previous = current.version if current is not None else ""
            if result.accepted and in_force is not current:
                self._registry(tenant).publish(in_force)
                state = self._state(tenant)
                with state.lock:
                    state.model, state.model_loaded = in_force, True
        verdict = (
            f"accepted: macro-F1 {result.new_score:.3f} >= {result.old_score:.3f}"
            if result.accepted
            else f"rejected: macro-F1 {result.new_score:.3f} < {result.old_score:.3f} of the current model"
        )
        return RetrainReport(
            accepted=result.accepted,
            previous_version=previous,
            model_version=result.version,
            candidate_version=result.candidate_version,
            old_score=round(result.old_score, 4),
            new_score=round(result.new_score, 4),
            training_examples=result.trained_on,
            held_out_examples=result.held_out,
            detail=f"{verdict} on {result.held_out} held-out confirmed labels of this tenant",
        )

    def close(self) -> None:
        self.store.close()
