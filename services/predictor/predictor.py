"""The predictor's use cases over its store: what the gRPC servicer calls.

Each method validates its arguments (InvalidArgument naming the field), reads the
history it needs from the store and hands it to a domain module. Nothing here knows
about protobuf; nothing in the domain modules knows about the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.common.errors import InvalidArgument
from services.predictor import anomalies as anomaly_detection
from services.predictor import recommend as recommendations
from services.predictor.features import OUTAGE_WINDOW_S
from services.predictor.forecast import (
    RetrainReport,
    RiskForecast,
    RiskModel,
    forecast_risk,
    retrain,
    validate_horizon,
)
from services.predictor.history import RunRecord, Scope
from services.predictor.schedule import tenants_due
from services.predictor.store import SECONDS_PER_DAY, RecordOutcome, RunStore

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_DAYS = 60.0
ANOMALY_BASELINE_DAYS = 28.0
MAX_ANOMALY_WINDOW_DAYS = 31.0


def _require(value: str, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(name, f"{name} must not be empty")


class Predictor:
    """Run history in, forecasts, anomalies and recommendations out; one per process.

    Forecasts use the tenant's active model when it has one, else the statistical prior
    (no model is trained at start: the prior answers immediately and is what a trained
    model must beat before it is activated). `retrain(tenant)` trains on demand.
    """

    def __init__(self, store: RunStore, clock: Callable[[], float] = time.time,
                 lookback_days: float = DEFAULT_LOOKBACK_DAYS) -> None:
        self.store = store
        self.clock = clock
        self.lookback_days = lookback_days
        self._models: dict[str, RiskModel | None] = {}
        self._lock = threading.Lock()
        # When each tenant's retrain was last attempted (by the schedule or on demand);
        # seeded from the newest stored model so a restart does not retrain everyone.
        self._last_retrain: dict[str, float] | None = None

    def record_run(self, run: RunRecord) -> RecordOutcome:
        return self.store.record_run(run)

    def import_runs(self, runs: list[RunRecord]) -> int:
        """History backfill: all validated first, nothing stored if one is refused;
        returns how many were new (the rest were already recorded exactly so)."""
        return self.store.record_runs(runs)

    def active_model(self, tenant: str) -> RiskModel | None:
        with self._lock:
            if tenant not in self._models:
                stored = self.store.active_model(tenant)
                model = None if stored is None else RiskModel.from_bytes(stored.blob, stored.version)
                if model is not None and not model.matches_features:
                    # Features changed since it was trained: the prior answers until a retrain.
                    log.warning("tenant %s: model v%d predates the current features; using the prior",
                                tenant, model.version)
                    model = None
                self._models[tenant] = model
            return self._models[tenant]

    def forecast(self, tenant: str, repository: str, pipeline: str, job: str = "", horizon: int = 10,
                 now: float | None = None) -> RiskForecast:
        """Risk that the next run of the pipeline (job "" = any of its jobs) fails, and the
        expected failure rate over the next `horizon` runs (1..MAX_HORIZON)."""
        for value, name in ((tenant, "tenant"), (repository, "repository"), (pipeline, "pipeline")):
            _require(value, name)
        validate_horizon(horizon)
        now = self.clock() if now is None else now
        since = now - self.lookback_days * SECONDS_PER_DAY
        own = self.store.runs(tenant, repository, pipeline, job or None, since=since)
        tenant_recent = self.store.runs(tenant, since=now - OUTAGE_WINDOW_S - 24 * 3600.0)
        seen = {r.key for r in own}
        history = own + [r for r in tenant_recent if r.key not in seen]
        return forecast_risk(Scope(tenant, repository, pipeline, job), history, now, horizon,
                             self.active_model(tenant))

    def retrain(self, tenant: str, now: float | None = None, seed: int = 0) -> RetrainReport:
        """Train a candidate from stored history; activate it only if it scores at least
        as well as the active model (or the prior) on the newest, held-out runs."""
        _require(tenant, "tenant")
        now = self.clock() if now is None else now
        runs = self.store.runs(tenant, since=now - self.lookback_days * SECONDS_PER_DAY)
        incumbent = self.active_model(tenant)
        report = retrain(runs, incumbent, seed=seed)
        if report.candidate is not None and report.candidate_brier is not None:
            version = self.store.save_model(
                tenant, report.candidate.to_bytes(), created_at=now, trained_runs=report.train_runs,
                heldout_brier=report.candidate_brier, activate=report.replaced,
            )
            report.candidate.version = version
            if report.replaced:
                with self._lock:
                    self._models[tenant] = report.candidate
        log.info("tenant %s retrain: %s", tenant, report.reason)
        self._retrain_attempts()[tenant] = now
        return report

    def _retrain_attempts(self) -> dict[str, float]:
        with self._lock:
            if self._last_retrain is None:
                self._last_retrain = {}
                for tenant in self.store.tenants():
                    versions = self.store.model_versions(tenant)
                    if versions:
                        self._last_retrain[tenant] = max(v.created_at for v in versions)
            return self._last_retrain

    def retrain_due(self, interval_s: float, now: float | None = None) -> dict[str, RetrainReport]:
        """Retrain every tenant whose last attempt is at least `interval_s` old (0 = none):
        what the scheduled task calls. One tenant's failure is logged and does not stop
        the others; it is tried again after a full interval."""
        now = self.clock() if now is None else now
        attempts = self._retrain_attempts()
        reports: dict[str, RetrainReport] = {}
        for tenant in tenants_due(self.store.tenants(), dict(attempts), now, interval_s):
            try:
                reports[tenant] = self.retrain(tenant, now)
            except Exception:  # the schedule must go on for the other tenants
                log.exception("scheduled retrain of tenant %s failed", tenant)
                attempts[tenant] = now
        return reports

    def retrain_all(self, now: float | None = None) -> dict[str, RetrainReport]:
        """Retrain every tenant with history (for a periodic job, e.g. nightly)."""
        return {tenant: self.retrain(tenant, now) for tenant in self.store.tenants()}

    def detect_anomalies(self, tenant: str, since: float, until: float, repository: str | None = None,
                         pipeline: str | None = None) -> list[anomaly_detection.Anomaly]:
        """Unusual runs that started in [since, until), judged against the runs of the
        preceding ANOMALY_BASELINE_DAYS."""
        _require(tenant, "tenant")
        if until <= since:
            raise InvalidArgument("until", f"until must be after since ({since:g}), got {until:g}")
        if until - since > MAX_ANOMALY_WINDOW_DAYS * SECONDS_PER_DAY:
            raise InvalidArgument("since", f"window must be at most {MAX_ANOMALY_WINDOW_DAYS:g} days, "
                                           f"got {(until - since) / SECONDS_PER_DAY:.1f}")
        baseline_from = since - ANOMALY_BASELINE_DAYS * SECONDS_PER_DAY
        baseline = self.store.runs(tenant, repository, pipeline, since=baseline_from, until=since)
        window = self.store.runs(tenant, repository, pipeline, since=since, until=until)
        return anomaly_detection.detect_anomalies(baseline, window)

    def recommend(self, tenant: str, now: float | None = None, limit: int = 10
                  ) -> list[recommendations.Recommendation]:
        """Proactive interventions for the tenant, best expected benefit first."""
        _require(tenant, "tenant")
        if limit < 1:
            raise InvalidArgument("limit", f"limit must be >= 1, got {limit}")
        now = self.clock() if now is None else now
        runs = self.store.runs(tenant, since=now - recommendations.LOOKBACK_DAYS * SECONDS_PER_DAY)
        return recommendations.recommend(runs, now)[:limit]

    def prune(self, now: float | None = None) -> int:
        return self.store.prune(self.clock() if now is None else now)
