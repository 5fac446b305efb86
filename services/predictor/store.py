"""The predictor's tables: run history per tenant, and versioned risk models.

The only module of the predictor that speaks SQL. Every query is scoped by tenant.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import AlreadyExists, InvalidArgument
from services.common.sqlite import Database
from services.predictor.history import RunRecord, run_from_dict, run_to_dict, validate_run

MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        tenant      TEXT NOT NULL,
        repository  TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        job         TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        content     TEXT NOT NULL,
        PRIMARY KEY (tenant, repository, pipeline, job, run_id, attempt)
    );
    CREATE INDEX runs_by_pipeline ON runs (tenant, repository, pipeline, job, started_at);
    CREATE INDEX runs_by_time ON runs (tenant, started_at);
    CREATE TABLE models (
        tenant          TEXT NOT NULL,
        version         INTEGER NOT NULL,
        created_at      REAL NOT NULL,
        trained_runs    INTEGER NOT NULL,
        heldout_brier   REAL NOT NULL,
        active          INTEGER NOT NULL,
        blob            BLOB NOT NULL,
        PRIMARY KEY (tenant, version)
    );
    """,
]

SECONDS_PER_DAY = 86_400.0
KEEP_INACTIVE_MODELS = 5  # rejected candidates and replaced models kept for inspection


class RecordOutcome(enum.Enum):
    RECORDED = "recorded"
    ALREADY_RECORDED = "already recorded"


@dataclass(frozen=True)
class StoredModel:
    tenant: str
    version: int
    created_at: float
    trained_runs: int
    heldout_brier: float
    active: bool
    blob: bytes


def _canonical(run: RunRecord) -> str:
    return json.dumps(run_to_dict(run), sort_keys=True, separators=(",", ":"))


class RunStore:
    """Run history and model versions of every tenant, in one SQLite file."""

    def __init__(self, db: Database, retention_days: float = 90.0) -> None:
        if retention_days <= 0:
            raise InvalidArgument("retention_days", f"retention_days must be > 0, got {retention_days:g}")
        self.db = db
        self.retention_days = retention_days

    @classmethod
    def open(cls, path: str | Path, retention_days: float = 90.0) -> RunStore:
        return cls(Database(path, MIGRATIONS), retention_days=retention_days)

    def close(self) -> None:
        self.db.close()

    def tenants(self) -> list[str]:
        """Every tenant with stored runs (for periodic retraining)."""
        with self.db.read() as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT tenant FROM runs ORDER BY tenant")]

    # -- runs ---------------------------------------------------------------------------

    def record_run(self, run: RunRecord) -> RecordOutcome:
        """Store one report. The same report twice stores once; a different report under
        the same key is refused with AlreadyExists and the stored one is kept."""
        validate_run(run)
        content = _canonical(run)
        key = run.key
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT content FROM runs WHERE tenant=? AND repository=? AND pipeline=? AND job=?"
                " AND run_id=? AND attempt=?",
                (key.tenant, key.repository, key.pipeline, key.job, key.run_id, key.attempt),
            ).fetchone()
            if row is not None:
                if row["content"] == content:
                    return RecordOutcome.ALREADY_RECORDED
                stored = run_from_dict(json.loads(row["content"]))
                differing = [
                    name for name, value in run_to_dict(run).items() if run_to_dict(stored)[name] != value
                ]
                error = AlreadyExists(
                    "run",
                    f"{key.repository}/{key.pipeline}:{key.job} run {key.run_id} attempt {key.attempt}",
                    message=(
                        f"run {key.run_id} attempt {key.attempt} of {key.repository}/{key.pipeline}"
                        f" job {key.job!r} is already recorded with different "
                        f"{', '.join(differing)}; the stored report is kept"
                    ),
                )
                error.differing = tuple(differing)  # type: ignore[attr-defined]  # for callers that rename
                raise error
            conn.execute(
                "INSERT INTO runs (tenant, repository, pipeline, job, run_id, attempt, started_at, content)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key.tenant, key.repository, key.pipeline, key.job, key.run_id, key.attempt,
                 run.started_at, content),
            )
        return RecordOutcome.RECORDED

    def record_runs(self, runs: Sequence[RunRecord]) -> int:
        """Bulk import (history backfill): validates all first, inserts new ones, returns
        how many were new. Conflicts raise as in `record_run`, before anything is written."""
        for run in runs:
            validate_run(run)
        new = 0
        with self.db.transaction() as conn:
            for run in runs:
                key = run.key
                content = _canonical(run)
                row = conn.execute(
                    "SELECT content FROM runs WHERE tenant=? AND repository=? AND pipeline=? AND job=?"
                    " AND run_id=? AND attempt=?",
                    (key.tenant, key.repository, key.pipeline, key.job, key.run_id, key.attempt),
                ).fetchone()
                if row is not None:
                    if row["content"] != content:
                        raise AlreadyExists("run", f"{key.run_id} attempt {key.attempt}")
                    continue
                conn.execute(
                    "INSERT INTO runs (tenant, repository, pipeline, job, run_id, attempt, started_at,"
                    " content) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key.tenant, key.repository, key.pipeline, key.job, key.run_id, key.attempt,
                     run.started_at, content),
                )
                new += 1
        return new

    def runs(
        self,
        tenant: str,
        repository: str | None = None,
        pipeline: str | None = None,
        job: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[RunRecord]:
        """Runs of a tenant, oldest first, optionally narrowed to a pipeline or job and a
        time window [since, until)."""
        clauses = ["tenant = ?"]
        params: list[object] = [tenant]
        for column, value in (("repository", repository), ("pipeline", pipeline), ("job", job)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("started_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("started_at < ?")
            params.append(until)
        sql = f"SELECT content FROM runs WHERE {' AND '.join(clauses)} ORDER BY started_at, run_id, attempt"
        with self.db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [run_from_dict(json.loads(row["content"])) for row in rows]

    def count_runs(self, tenant: str) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM runs WHERE tenant=?", (tenant,)).fetchone()[0])

    def prune(self, now: float, older_than_days: float | None = None) -> int:
        """Delete runs (of every tenant) that started more than N days before `now`;
        N defaults to the store's retention. Returns how many were deleted."""
        days = self.retention_days if older_than_days is None else older_than_days
        if days <= 0:
            raise InvalidArgument("older_than_days", f"older_than_days must be > 0, got {days:g}")
        cutoff = now - days * SECONDS_PER_DAY
        with self.db.transaction() as conn:
            cursor = conn.execute("DELETE FROM runs WHERE started_at < ?", (cutoff,))
            return int(cursor.rowcount)

    # -- models -------------------------------------------------------------------------

    def save_model(
        self, tenant: str, blob: bytes, created_at: float, trained_runs: int, heldout_brier: float,
        activate: bool, keep_inactive: int = KEEP_INACTIVE_MODELS,
    ) -> int:
        """Store a new model version (the next integer for this tenant); when `activate`,
        it becomes the one forecasts use. Only the newest `keep_inactive` inactive versions
        keep their blobs' rows; older ones are deleted. Returns the new version."""
        with self.db.transaction() as conn:
            version = int(
                conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE tenant=?", (tenant,))
                .fetchone()[0]
            )
            if activate:
                conn.execute("UPDATE models SET active = 0 WHERE tenant = ?", (tenant,))
            conn.execute(
                "INSERT INTO models (tenant, version, created_at, trained_runs, heldout_brier, active, blob)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, version, created_at, trained_runs, heldout_brier, int(activate),
                 sqlite3.Binary(blob)),
            )
            conn.execute(
                "DELETE FROM models WHERE tenant = ? AND active = 0 AND version NOT IN"
                " (SELECT version FROM models WHERE tenant = ? AND active = 0 ORDER BY version DESC LIMIT ?)",
                (tenant, tenant, keep_inactive),
            )
        return version

    def active_model(self, tenant: str) -> StoredModel | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM models WHERE tenant=? AND active=1 ORDER BY version DESC LIMIT 1", (tenant,)
            ).fetchone()
        return None if row is None else _stored_model(row)

    def model_versions(self, tenant: str) -> list[StoredModel]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM models WHERE tenant=? ORDER BY version", (tenant,)).fetchall()
        return [_stored_model(row) for row in rows]


def _stored_model(row: sqlite3.Row) -> StoredModel:
    return StoredModel(
        tenant=row["tenant"],
        version=int(row["version"]),
        created_at=float(row["created_at"]),
        trained_runs=int(row["trained_runs"]),
        heldout_brier=float(row["heldout_brier"]),
        active=bool(row["active"]),
        blob=bytes(row["blob"]),
    )
