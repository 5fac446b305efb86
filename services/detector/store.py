"""The detector's tables (the only module here that speaks SQL).

Everything is keyed by tenant; a query never crosses tenants. Evidence and
redacted excerpts are sealed (AES-256-GCM, per-tenant key) before they are
written. Built-in patterns live in code (tenant ""), are visible to every
tenant and read-only; tenant patterns are rows here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.common.sqlite import Database
from services.common.vocabulary import FailureClass
from services.detector.clusters import ClusterRow
from services.detector.diagnose import DiagnosisResult
from services.detector.evidence import EvidenceLine
from services.detector.patterns import (
    BUILTIN_TENANT,
    KnowledgeBase,
    Pattern,
    default_patterns,
    validate_pattern,
)
from services.detector.sealing import Sealer, WrappedKey
from services.detector.steps import FailedStep

MIGRATIONS = [
    """
    CREATE TABLE tenant_keys (tenant TEXT PRIMARY KEY, wrapped BLOB NOT NULL);
    CREATE TABLE failures (
        tenant TEXT NOT NULL, failure_id TEXT NOT NULL, provider TEXT NOT NULL, repository TEXT NOT NULL,
        pipeline TEXT NOT NULL, job TEXT NOT NULL, run_id TEXT NOT NULL, attempt INTEGER NOT NULL,
        commit_sha TEXT NOT NULL, branch TEXT NOT NULL, exit_code INTEGER NOT NULL,
        duration_seconds REAL NOT NULL, runner TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (tenant, failure_id)
    );
    CREATE TABLE diagnoses (
        tenant TEXT NOT NULL, failure_id TEXT NOT NULL, failure_class INTEGER NOT NULL, confidence REAL NOT NULL,
        signature TEXT NOT NULL, template TEXT NOT NULL, decided_by TEXT NOT NULL, pattern_id TEXT NOT NULL,
        sealed_evidence BLOB NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (tenant, failure_id),
        FOREIGN KEY (tenant, failure_id) REFERENCES failures (tenant, failure_id)
    );
    CREATE INDEX diagnoses_by_signature ON diagnoses (tenant, signature);
    CREATE TABLE patterns (
        tenant TEXT NOT NULL, pattern_id TEXT NOT NULL, failure_class INTEGER NOT NULL, expression TEXT NOT NULL,
        description TEXT NOT NULL, remediation_hint TEXT NOT NULL, priority INTEGER NOT NULL, enabled INTEGER NOT NULL,
        updated_at REAL NOT NULL, PRIMARY KEY (tenant, pattern_id)
    );
    CREATE TABLE test_runs (
        tenant TEXT NOT NULL, test_name TEXT NOT NULL, commit_sha TEXT NOT NULL, run_id TEXT NOT NULL,
        passed INTEGER NOT NULL, recorded_at REAL NOT NULL
    );
    CREATE INDEX test_runs_by_test ON test_runs (tenant, test_name, commit_sha);
    CREATE TABLE outcomes (
        tenant TEXT NOT NULL, failure_id TEXT NOT NULL, action TEXT NOT NULL, succeeded INTEGER NOT NULL,
        detail TEXT NOT NULL, recorded_at REAL NOT NULL
    );
    CREATE INDEX outcomes_by_failure ON outcomes (tenant, failure_id);
    """,
    # 2: what the service layer keeps across restarts: clusters, anomaly history, template
    # vocabulary, confirmed labels; test runs per repository, recorded once; idempotent outcomes.
    """
    ALTER TABLE failures ADD COLUMN job_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE diagnoses ADD COLUMN cluster_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE diagnoses ADD COLUMN anomaly_score REAL NOT NULL DEFAULT 0;
    ALTER TABLE diagnoses ADD COLUMN model_version TEXT NOT NULL DEFAULT '';
    ALTER TABLE diagnoses ADD COLUMN remediation_hint TEXT NOT NULL DEFAULT '';
    ALTER TABLE diagnoses ADD COLUMN redactions INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE test_runs ADD COLUMN repository TEXT NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX test_runs_once ON test_runs (tenant, repository, test_name, run_id, passed);
    CREATE INDEX test_runs_by_repository ON test_runs (tenant, repository, test_name, commit_sha);
    ALTER TABLE outcomes ADD COLUMN outcome_id TEXT NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX outcomes_once ON outcomes (tenant, outcome_id) WHERE outcome_id != '';
    CREATE TABLE labels (
        tenant TEXT NOT NULL, failure_id TEXT NOT NULL, failure_class INTEGER NOT NULL, source TEXT NOT NULL,
        confirmed_at REAL NOT NULL, PRIMARY KEY (tenant, failure_id),
        FOREIGN KEY (tenant, failure_id) REFERENCES failures (tenant, failure_id)
    );
    CREATE TABLE clusters (
        tenant TEXT NOT NULL, cluster_id TEXT NOT NULL, failure_class INTEGER NOT NULL, count INTEGER NOT NULL,
        first_seen REAL NOT NULL, last_seen REAL NOT NULL, repositories TEXT NOT NULL, pipelines TEXT NOT NULL,
        sealed BLOB NOT NULL, PRIMARY KEY (tenant, cluster_id)
    );
    CREATE INDEX clusters_by_last_seen ON clusters (tenant, last_seen);
    CREATE TABLE log_features (
        tenant TEXT NOT NULL, failure_id TEXT NOT NULL, vector TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (tenant, failure_id)
    );
    CREATE TABLE templates (
        tenant TEXT NOT NULL, template_key TEXT NOT NULL, sealed BLOB NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (tenant, template_key)
    );
    """,
]


@dataclass(frozen=True)
class FailureRecord:
    tenant: str
    failure_id: str
    provider: str
    repository: str
    pipeline: str
    job: str
    run_id: str
    attempt: int
    commit: str
    branch: str
    exit_code: int
    duration_seconds: float
    runner: str
    job_id: str = ""


@dataclass(frozen=True)
class StoredDiagnosis:
    tenant: str
    failure_id: str
    failure_class: FailureClass
    confidence: float
    signature: str
    template: str
    decided_by: str
    pattern_id: str
    evidence: list[EvidenceLine]
    redacted_excerpt: str
    created_at: float
    cluster_id: str = ""
    anomaly_score: float = 0.0
    model_version: str = ""
    remediation_hint: str = ""
    redactions: int = 0
    failed_tests: tuple[str, ...] = ()
    flaky_tests: tuple[str, ...] = ()
    flaky_evidence_run_ids: tuple[str, ...] = ()
    # None for a diagnosis stored before these were kept, as for a log without them.
    failed_step: FailedStep | None = None
    decisive_line: EvidenceLine | None = None


def _sealed_step(step: FailedStep | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {
        "name": step.name, "command": step.command, "exit_code": step.exit_code, "framing": step.framing,
        "start_line": step.start_line, "end_line": step.end_line, "end_text": step.end_text,
    }


def _opened_step(data: dict[str, Any] | None) -> FailedStep | None:
    if data is None:
        return None
    return FailedStep(
        name=data.get("name", ""),
        command=data.get("command", ""),
        exit_code=data.get("exit_code"),
        framing=data.get("framing", ""),
        start_line=data.get("start_line", 0),
        end_line=data.get("end_line", 0),
        end_text=data.get("end_text", ""),
    )


@dataclass(frozen=True)
class LabelledFailure:
    """An outcome-confirmed class for a stored failure, with the redacted excerpt the model reads."""

    failure_id: str
    failure_class: FailureClass
    repository: str
    text: str


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class

    test_name: str
    commit: str
    run_id: str
    passed: bool
    recorded_at: float
    repository: str = ""


def _require_tenant(tenant: str) -> None:
    if not tenant:
        raise InvalidArgument("tenant", "must be set (it comes from the caller's token)")


class DetectorStore:
    def __init__(self, database: Database, sealer: Sealer) -> None:
        self._db = database
        self._sealer = sealer
        self._builtin = {p.pattern_id: p for p in default_patterns()}

    @classmethod
    def open(cls, path: str, sealer: Sealer) -> DetectorStore:
        return cls(Database(path, MIGRATIONS), sealer)

    # --- keys ------------------------------------------------------------------
    def _tenant_key(self, tenant: str) -> WrappedKey:
        with self._db.read() as conn:
            row = conn.execute("SELECT wrapped FROM tenant_keys WHERE tenant = ?", (tenant,)).fetchone()
        if row is not None:
            return WrappedKey(tenant, bytes(row["wrapped"]))
        wrapped = self._sealer.new_tenant_key(tenant)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO tenant_keys (tenant, wrapped) VALUES (?, ?)", (tenant, wrapped.blob)
            )
            row = conn.execute("SELECT wrapped FROM tenant_keys WHERE tenant = ?", (tenant,)).fetchone()
        return WrappedKey(tenant, bytes(row["wrapped"]))

    def shred_tenant(self, tenant: str) -> None:
        """Crypto-shredding: without the wrapped key the tenant's sealed evidence never opens again."""
        _require_tenant(tenant)
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM tenant_keys WHERE tenant = ?", (tenant,))

    # --- failures and diagnoses ------------------------------------------------
    def upsert_failure(self, failure: FailureRecord) -> bool:
        """Record a failure, or refresh it when the same job attempt is reported again; True if new."""
        _require_tenant(failure.tenant)
        if failure.attempt < 1:
            raise InvalidArgument("attempt", f"must be >= 1, got {failure.attempt}")
        values = (
            failure.provider,
            failure.repository,
            failure.pipeline,
            failure.job,
            failure.run_id,
            failure.attempt,
            failure.commit,
            failure.branch,
            failure.exit_code,
            failure.duration_seconds,
            failure.runner,
            failure.job_id,
        )
        with self._db.transaction() as conn:
            updated = conn.execute(
                "UPDATE failures SET provider = ?, repository = ?, pipeline = ?, job = ?, run_id = ?, attempt = ?, "
                "commit_sha = ?, branch = ?, exit_code = ?, duration_seconds = ?, runner = ?, job_id = ? "
                "WHERE tenant = ? AND failure_id = ?",
                (*values, failure.tenant, failure.failure_id),
            ).rowcount
            if updated:
                return False
            conn.execute(
                "INSERT INTO failures (provider, repository, pipeline, job, run_id, attempt, commit_sha, branch, "
                "exit_code, duration_seconds, runner, job_id, tenant, failure_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, failure.tenant, failure.failure_id, time.time()),
            )
        return True

    def get_failure(self, tenant: str, failure_id: str) -> FailureRecord:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM failures WHERE tenant = ? AND failure_id = ?", (tenant, failure_id)
            ).fetchone()
        if row is None:
            raise NotFound("failure", failure_id)
        return FailureRecord(
            tenant=row["tenant"],
            failure_id=row["failure_id"],
            provider=row["provider"],
            repository=row["repository"],
            pipeline=row["pipeline"],
            job=row["job"],
            run_id=row["run_id"],
            attempt=row["attempt"],
            commit=row["commit_sha"],
            branch=row["branch"],
            exit_code=row["exit_code"],
            duration_seconds=row["duration_seconds"],
            runner=row["runner"],
            job_id=row["job_id"],
        )

    def save_diagnosis(
        self,
        tenant: str,
        failure_id: str,
        result: DiagnosisResult,
        *,
        cluster_id: str = "",
        anomaly_score: float = 0.0,
        model_version: str = "",
        flaky_evidence_run_ids: tuple[str, ...] = (),
    ) -> None:
        _require_tenant(tenant)
        secret = json.dumps(
            {
                "evidence": [[e.line, e.text] for e in result.evidence],
                "excerpt": result.redacted_excerpt,
                "template": result.template,  # derived from a log line, so sealed too
                "failed_tests": list(result.failed_tests),
                "flaky_tests": list(result.flaky_tests),
                "flaky_evidence": list(flaky_evidence_run_ids),
                # Log text (command, failure line, decisive line): sealed like the evidence.
                "failed_step": _sealed_step(result.failed_step),
                "decisive_line": None if result.decisive_line is None
                else [result.decisive_line.line, result.decisive_line.text],
            }
        ).encode("utf-8")
        sealed = self._sealer.seal(self._tenant_key(tenant), failure_id, secret)
        with self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM failures WHERE tenant = ? AND failure_id = ?", (tenant, failure_id)
            ).fetchone():
                raise NotFound("failure", failure_id)
            conn.execute(
                "INSERT OR REPLACE INTO diagnoses (tenant, failure_id, failure_class, confidence, signature, template, "
                "decided_by, pattern_id, sealed_evidence, created_at, cluster_id, anomaly_score, model_version, "
                "remediation_hint, redactions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    failure_id,
                    int(result.failure_class),
                    result.confidence,
                    result.signature,
                    "",
                    result.decided_by,
                    result.pattern_id,
                    sealed,
                    time.time(),
                    cluster_id,
                    anomaly_score,
                    model_version,
                    result.remediation_hint,
                    result.redaction_count,
                ),
            )

    def get_diagnosis(self, tenant: str, failure_id: str) -> StoredDiagnosis:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM diagnoses WHERE tenant = ? AND failure_id = ?", (tenant, failure_id)
            ).fetchone()
        if row is None:
            raise NotFound("diagnosis", failure_id)
        opened = json.loads(
            self._sealer.open(self._tenant_key(tenant), failure_id, bytes(row["sealed_evidence"]))
        )
        return StoredDiagnosis(
            tenant=tenant,
            failure_id=failure_id,
            failure_class=FailureClass(row["failure_class"]),
            confidence=row["confidence"],
            signature=row["signature"],
            template=opened.get("template", ""),
            decided_by=row["decided_by"],
            pattern_id=row["pattern_id"],
            evidence=[EvidenceLine(line, text) for line, text in opened["evidence"]],
            redacted_excerpt=opened["excerpt"],
            created_at=row["created_at"],
            cluster_id=row["cluster_id"],
            anomaly_score=row["anomaly_score"],
            model_version=row["model_version"],
            remediation_hint=row["remediation_hint"],
            redactions=row["redactions"],
            failed_tests=tuple(opened.get("failed_tests", ())),
            flaky_tests=tuple(opened.get("flaky_tests", ())),
            flaky_evidence_run_ids=tuple(opened.get("flaky_evidence", ())),
            failed_step=_opened_step(opened.get("failed_step")),
            decisive_line=EvidenceLine(*decisive) if (decisive := opened.get("decisive_line")) else None,
        )

    def failures_with_signature(self, tenant: str, signature: str, limit: int = 100) -> list[str]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT failure_id FROM diagnoses WHERE tenant = ? AND signature = ? ORDER BY created_at DESC LIMIT ?",
                (tenant, signature, limit),
            ).fetchall()
        return [r["failure_id"] for r in rows]

    # --- patterns --------------------------------------------------------------
    def _check_editable(self, tenant: str, pattern_id: str) -> None:
        _require_tenant(tenant)
        if pattern_id in self._builtin:
            raise PermissionDenied(
                f"pattern {pattern_id!r} is built in and read-only; create a tenant pattern with another pattern_id"
            )

    def create_pattern(self, pattern: Pattern) -> Pattern:
        if pattern.tenant == BUILTIN_TENANT:
            raise PermissionDenied('built-in patterns (tenant "") are read-only')
        self._check_editable(pattern.tenant, pattern.pattern_id)
        pattern = validate_pattern(pattern)
        with self._db.transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM patterns WHERE tenant = ? AND pattern_id = ?",
                (pattern.tenant, pattern.pattern_id),
            ).fetchone():
                raise AlreadyExists("pattern", pattern.pattern_id)
            self._write_pattern(conn, pattern)
        return pattern

    def update_pattern(self, pattern: Pattern) -> Pattern:
        self._check_editable(pattern.tenant, pattern.pattern_id)
        pattern = validate_pattern(pattern)
        with self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM patterns WHERE tenant = ? AND pattern_id = ?",
                (pattern.tenant, pattern.pattern_id),
            ).fetchone():
                raise NotFound("pattern", pattern.pattern_id)
            self._write_pattern(conn, pattern)
        return pattern

    def delete_pattern(self, tenant: str, pattern_id: str) -> None:
        self._check_editable(tenant, pattern_id)
        with self._db.transaction() as conn:
            if (
                conn.execute(
                    "DELETE FROM patterns WHERE tenant = ? AND pattern_id = ?", (tenant, pattern_id)
                ).rowcount
                == 0
            ):
                raise NotFound("pattern", pattern_id)

    @staticmethod
    def _write_pattern(conn, pattern: Pattern) -> None:  # type: ignore[no-untyped-def]
        conn.execute(
            "INSERT OR REPLACE INTO patterns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pattern.tenant,
                pattern.pattern_id,
                int(pattern.failure_class),
                pattern.expression,
                pattern.description,
                pattern.remediation_hint,
                pattern.priority,
                int(pattern.enabled),
                time.time(),
            ),
        )

    def get_pattern(self, tenant: str, pattern_id: str) -> Pattern:
        if pattern_id in self._builtin:
            return self._builtin[pattern_id]
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM patterns WHERE tenant = ? AND pattern_id = ?", (tenant, pattern_id)
            ).fetchone()
        if row is None:
            raise NotFound("pattern", pattern_id)
        return self._pattern(row)

    def list_patterns(self, tenant: str, include_builtin: bool = True) -> list[Pattern]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM patterns WHERE tenant = ? ORDER BY pattern_id", (tenant,)
            ).fetchall()
        own = [self._pattern(r) for r in rows]
        return (list(self._builtin.values()) if include_builtin else []) + own

    def knowledge_base(self, tenant: str) -> KnowledgeBase:
        """The built-in patterns plus this tenant's own (build once per change and reuse)."""
        return KnowledgeBase(self.list_patterns(tenant))

    @staticmethod
    def _pattern(row) -> Pattern:  # type: ignore[no-untyped-def]
        return Pattern(
            pattern_id=row["pattern_id"],
            tenant=row["tenant"],
            failure_class=FailureClass(row["failure_class"]),
            expression=row["expression"],
            description=row["description"],
            remediation_hint=row["remediation_hint"],
            priority=row["priority"],
            enabled=bool(row["enabled"]),
        )

    # --- test history and outcomes ---------------------------------------------
    def record_test_result(
        self,
        tenant: str,
        test_name: str,
        commit: str,
        run_id: str,
        passed: bool,
        *,
        repository: str = "",
        at: float | None = None,
    ) -> bool:
        """One verdict of a test in one run; recorded once per (repository, test, run, verdict). True if new."""
        _require_tenant(tenant)
        if not test_name:
            raise InvalidArgument("test_name", "must be non-empty")
        with self._db.transaction() as conn:
            return (
                conn.execute(
                    "INSERT OR IGNORE INTO test_runs "
                    "(tenant, test_name, commit_sha, run_id, passed, recorded_at, repository) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant,
                        test_name,
                        commit,
                        run_id,
                        int(passed),
                        time.time() if at is None else at,
                        repository,
                    ),
                ).rowcount
                == 1
            )

    def test_history(
        self, tenant: str, test_name: str, limit: int = 200, repository: str | None = None
    ) -> list[TestRun]:
        """The test's runs, newest first; every repository unless one is named."""
        query = "SELECT * FROM test_runs WHERE tenant = ? AND test_name = ?"
        params: list[object] = [tenant, test_name]
        if repository is not None:
            query += " AND repository = ?"
            params.append(repository)
        with self._db.read() as conn:
            rows = conn.execute(
                query + " ORDER BY recorded_at DESC, rowid DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [self._test_run(r) for r in rows]

    def runs_on_commit(self, tenant: str, repository: str, test_name: str, commit: str) -> list[TestRun]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM test_runs WHERE tenant = ? AND repository = ? AND test_name = ? AND commit_sha = ? "
                "ORDER BY recorded_at, rowid LIMIT 1000",
                (tenant, repository, test_name, commit),
            ).fetchall()
        return [self._test_run(r) for r in rows]

    @staticmethod
    def _test_run(row) -> TestRun:  # type: ignore[no-untyped-def]
        return TestRun(
            row["test_name"],
            row["commit_sha"],
            row["run_id"],
            bool(row["passed"]),
            row["recorded_at"],
            row["repository"],
        )

    def flaky_on_commit(self, tenant: str, test_name: str, commit: str) -> bool:
        """The same test both failed and passed on the same commit: flaky by definition."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT MIN(passed) AS lo, MAX(passed) AS hi FROM test_runs "
                "WHERE tenant = ? AND test_name = ? AND commit_sha = ?",
                (tenant, test_name, commit),
            ).fetchone()
        return row["lo"] == 0 and row["hi"] == 1

    def record_outcome(
        self,
        tenant: str,
        failure_id: str,
        action: str,
        succeeded: bool,
        detail: str = "",
        outcome_id: str = "",
    ) -> bool:
        """False when an outcome with this outcome_id was already recorded (idempotent delivery)."""
        _require_tenant(tenant)
        with self._db.transaction() as conn:
            return (
                conn.execute(
                    "INSERT OR IGNORE INTO outcomes "
                    "(tenant, failure_id, action, succeeded, detail, recorded_at, outcome_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (tenant, failure_id, action, int(succeeded), detail, time.time(), outcome_id),
                ).rowcount
                == 1
            )

    def outcomes(self, tenant: str, failure_id: str) -> list[tuple[str, bool, str]]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT action, succeeded, detail FROM outcomes WHERE tenant = ? AND failure_id = ? ORDER BY rowid",
                (tenant, failure_id),
            ).fetchall()
        return [(r["action"], bool(r["succeeded"]), r["detail"]) for r in rows]

    # --- confirmed labels (what Retrain learns from) ----------------------------
    def confirm_label(self, tenant: str, failure_id: str, failure_class: FailureClass, source: str) -> None:
        _require_tenant(tenant)
        with self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM failures WHERE tenant = ? AND failure_id = ?", (tenant, failure_id)
            ).fetchone():
                raise NotFound("failure", failure_id)
            conn.execute(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)",
                (tenant, failure_id, int(failure_class), source, time.time()),
            )

    def confirmed_labels(self, tenant: str, limit: int = 20_000) -> list[LabelledFailure]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT l.failure_id, l.failure_class, f.repository, d.sealed_evidence FROM labels l "
                "JOIN failures f ON f.tenant = l.tenant AND f.failure_id = l.failure_id "
                "JOIN diagnoses d ON d.tenant = l.tenant AND d.failure_id = l.failure_id "
                "WHERE l.tenant = ? ORDER BY l.confirmed_at DESC LIMIT ?",
                (tenant, limit),
            ).fetchall()
        if not rows:
            return []
        key = self._tenant_key(tenant)
        labelled = []
        for row in rows:
            opened = json.loads(self._sealer.open(key, row["failure_id"], bytes(row["sealed_evidence"])))
            labelled.append(
                LabelledFailure(
                    row["failure_id"],
                    FailureClass(row["failure_class"]),
                    row["repository"],
                    opened["excerpt"],
                )
            )
        return labelled

    # --- clusters -----------------------------------------------------------------
    def save_cluster(self, tenant: str, row: ClusterRow) -> None:
        """Insert or update one cluster; its signature and evidence are sealed (they come from logs)."""
        _require_tenant(tenant)
        secret = json.dumps({"signature": list(row.signature), "evidence": list(row.representative_evidence)})
        sealed = self._sealer.seal(
            self._tenant_key(tenant), "cluster:" + row.cluster_id, secret.encode("utf-8")
        )
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO clusters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    row.cluster_id,
                    int(row.failure_class),
                    row.count,
                    row.first_seen,
                    row.last_seen,
                    json.dumps(list(row.repositories)),
                    json.dumps(list(row.pipelines)),
                    sealed,
                ),
            )

    def cluster_rows(self, tenant: str) -> list[ClusterRow]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM clusters WHERE tenant = ? ORDER BY cluster_id", (tenant,)
            ).fetchall()
        if not rows:
            return []
        key = self._tenant_key(tenant)
        clusters = []
        for row in rows:
            opened = json.loads(self._sealer.open(key, "cluster:" + row["cluster_id"], bytes(row["sealed"])))
            clusters.append(
                ClusterRow(
                    cluster_id=row["cluster_id"],
                    failure_class=FailureClass(row["failure_class"]),
                    signature=tuple(opened["signature"]),
                    count=row["count"],
                    first_seen=row["first_seen"],
                    last_seen=row["last_seen"],
                    repositories=tuple(json.loads(row["repositories"])),
                    pipelines=tuple(json.loads(row["pipelines"])),
                    representative_evidence=tuple(opened["evidence"]),
                )
            )
        return clusters

    # --- anomaly history and template vocabulary ---------------------------------
    def save_log_features(self, tenant: str, failure_id: str, vector: list[float]) -> None:
        _require_tenant(tenant)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO log_features VALUES (?, ?, ?, ?)",
                (tenant, failure_id, json.dumps(vector), time.time()),
            )

    def log_features(self, tenant: str, limit: int = 1000) -> list[list[Any]]:
        """The most recent feature vectors (LogFeatures' fields in order: ints and floats), oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT vector FROM log_features WHERE tenant = ? ORDER BY created_at DESC, rowid DESC "
                "LIMIT ?",
                (tenant, limit),
            ).fetchall()
        return [json.loads(r["vector"]) for r in reversed(rows)]

    def add_templates(self, tenant: str, templates: Iterable[str]) -> int:
        """Remember templates this tenant's logs have shown (sealed); returns how many were new."""
        _require_tenant(tenant)
        fresh = {hashlib.sha256(t.encode("utf-8")).hexdigest()[:32]: t for t in templates}
        if not fresh:
            return 0
        with self._db.read() as conn:
            known = {
                r["template_key"]
                for r in conn.execute(
                    "SELECT template_key FROM templates "
                    f"WHERE tenant = ? AND template_key IN ({','.join('?' * len(fresh))})",
                    (tenant, *fresh),
                ).fetchall()
            }
        new = {k: t for k, t in fresh.items() if k not in known}
        if not new:
            return 0
        key = self._tenant_key(tenant)
        now = time.time()
        rows = [
            (tenant, k, self._sealer.seal(key, "template:" + k, t.encode("utf-8")), now)
            for k, t in new.items()
        ]
        with self._db.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO templates VALUES (?, ?, ?, ?)", rows)
        return len(new)

    def templates(self, tenant: str, limit: int = 20_000) -> list[str]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT template_key, sealed FROM templates WHERE tenant = ? ORDER BY created_at, rowid "
                "LIMIT ?",
                (tenant, limit),
            ).fetchall()
        if not rows:
            return []
        key = self._tenant_key(tenant)
        return [
            self._sealer.open(key, "template:" + r["template_key"], bytes(r["sealed"])).decode("utf-8")
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()
