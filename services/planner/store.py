"""The planner's tables, and the only planner module that speaks SQL.

Everything is per tenant: every key starts with the tenant, and a lookup for another
tenant's plan answers NotFound exactly as for a plan that does not exist.

Outcomes: `record_outcome` takes the plan id and the action's idempotency key, derives
class, cluster and action from the stored plan (never from the caller), and counts the
outcome once per outcome id (primary key). Our call on bad outcomes, so callers can rely
on it:
  - unknown plan id                                  -> NotFound("plan", id)
  - the plan has no action with that idempotency key -> NotFound("action", key)
  - the action is the ESCALATE step                  -> FailedPrecondition
  - the same outcome id again (same plan and action) -> counted once, returns False
  - the same outcome id for a different action, or a second outcome id for an action
    that already has one (actions run exactly once)  -> FailedPrecondition
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, NotFound
from services.common.sqlite import Database
from services.common.vocabulary import ActionKind, FailureClass
from services.planner.learning import (
    CLASS_WIDE,
    DEFAULT_HALF_LIFE_S,
    ClassEvidence,
    Evidence,
    keys_for,
)
from services.planner.planning import Plan, outcome_for, plan_from_dict, plan_to_dict
from services.planner.policy import (
    Policy,
    default_policies,
    merge_policies,
    policy_to_dict,
    validate_policy,
)

MIGRATIONS: list[str] = [
    """
    CREATE TABLE policies (
        tenant        TEXT NOT NULL,
        failure_class TEXT NOT NULL,
        document      TEXT NOT NULL,
        updated_at    REAL NOT NULL,
        PRIMARY KEY (tenant, failure_class)
    );
    CREATE TABLE plans (
        tenant     TEXT NOT NULL,
        plan_id    TEXT NOT NULL,
        failure_id TEXT NOT NULL,
        document   TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant, plan_id)
    );
    CREATE INDEX plans_by_failure ON plans (tenant, failure_id);
    CREATE TABLE outcomes (
        tenant          TEXT NOT NULL,
        outcome_id      TEXT NOT NULL,
        plan_id         TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        action          TEXT NOT NULL,
        success         INTEGER NOT NULL,
        at              REAL NOT NULL,
        PRIMARY KEY (tenant, outcome_id),
        UNIQUE (tenant, idempotency_key)
    );
    CREATE TABLE action_stats (
        tenant        TEXT NOT NULL,
        failure_class TEXT NOT NULL,
        cluster_id    TEXT NOT NULL,
        action        TEXT NOT NULL,
        successes     REAL NOT NULL,
        failures      REAL NOT NULL,
        outcomes      INTEGER NOT NULL,
        updated_at    REAL NOT NULL,
        PRIMARY KEY (tenant, failure_class, cluster_id, action)
    );
    """,
]


class PlannerStore:
    """Policies, plans, outcomes and learned statistics in one SQLite file."""

    def __init__(self, path: str | Path, half_life_s: float = DEFAULT_HALF_LIFE_S) -> None:
        self.db = Database(path, MIGRATIONS)
        self.half_life_s = half_life_s

    def close(self) -> None:
        self.db.close()

    # --- policies -------------------------------------------------------------------

    def set_policy(self, tenant: str, policy: Policy, now: float) -> Policy:
        """Store the tenant's policy for one class (validated first; a bad one stores nothing)."""
        validate_policy(policy)
        document = json.dumps(policy_to_dict(policy), sort_keys=True)
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO policies (tenant, failure_class, document, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant, failure_class) DO UPDATE SET document = excluded.document, "
                "updated_at = excluded.updated_at",
                (tenant, policy.failure_class.name, document, now),
            )
        return policy

    def stored_policies(self, tenant: str) -> dict[str, dict[str, Any]]:
        """The tenant's stored layer: class name -> policy fields."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT failure_class, document FROM policies WHERE tenant = ?", (tenant,)
            ).fetchall()
        return {row["failure_class"]: json.loads(row["document"]) for row in rows}

    def effective_policies(
        self, tenant: str, live_overrides: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[FailureClass, Policy]:
        """Defaults in code < the tenant's stored policies < live overrides."""
        layers: list[tuple[str, Mapping[str, Any]]] = [("stored_policy", self.stored_policies(tenant))]
        if live_overrides:
            layers.append(("live_config", live_overrides))
        return merge_policies(default_policies(), *layers)

    def effective_policy(
        self, tenant: str, failure_class: FailureClass,
        live_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Policy:
        return self.effective_policies(tenant, live_overrides)[failure_class]

    # --- plans ----------------------------------------------------------------------

    def save_plan(self, plan: Plan) -> Plan:
        """Store a plan; if one with this id exists (the same failure attempt planned
        again, e.g. a retried RPC) the stored plan wins and is returned."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO plans (tenant, plan_id, failure_id, document, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (plan.tenant, plan.plan_id, plan.failure_id, json.dumps(plan_to_dict(plan)), plan.created_at),
            )
            return self._plan(conn, plan.tenant, plan.plan_id)

    def get_plan(self, tenant: str, plan_id: str) -> Plan:
        with self.db.read() as conn:
            return self._plan(conn, tenant, plan_id)

    def plans_for_failure(self, tenant: str, failure_id: str) -> list[Plan]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT document FROM plans WHERE tenant = ? AND failure_id = ? ORDER BY created_at",
                (tenant, failure_id),
            ).fetchall()
        return [plan_from_dict(json.loads(row["document"])) for row in rows]

    @staticmethod
    def _plan(conn: sqlite3.Connection, tenant: str, plan_id: str) -> Plan:
        row = conn.execute(
            "SELECT document FROM plans WHERE tenant = ? AND plan_id = ?", (tenant, plan_id)
        ).fetchone()
        if row is None:
            raise NotFound("plan", plan_id)
        return plan_from_dict(json.loads(row["document"]))

    # --- outcomes and learning ------------------------------------------------------

    def record_outcome(
        self, tenant: str, plan_id: str, idempotency_key: str, outcome_id: str, success: bool, at: float
    ) -> bool:
        """Learn from one executed action. True if counted, False if already counted."""
        with self.db.transaction() as conn:
            plan = self._plan(conn, tenant, plan_id)
            outcome = outcome_for(plan, idempotency_key, success, outcome_id, at)
            earlier = conn.execute(
                "SELECT outcome_id, plan_id, idempotency_key FROM outcomes "
                "WHERE tenant = ? AND (outcome_id = ? OR idempotency_key = ?)",
                (tenant, outcome_id, idempotency_key),
            ).fetchall()
            for row in earlier:
                if row["outcome_id"] == outcome_id and row["idempotency_key"] == idempotency_key \
                        and row["plan_id"] == plan_id:
                    return False
                if row["outcome_id"] == outcome_id:
                    raise FailedPrecondition(
                        f"outcome {outcome_id!r} was already reported for action "
                        f"{row['idempotency_key']!r} of plan {row['plan_id']!r}"
                    )
                raise FailedPrecondition(
                    f"action {idempotency_key!r} already has outcome {row['outcome_id']!r}; "
                    "an action runs once and has one outcome"
                )
            conn.execute(
                "INSERT INTO outcomes (tenant, outcome_id, plan_id, idempotency_key, action, success, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, outcome_id, plan_id, idempotency_key, outcome.action.name, int(success), at),
            )
            for key_tenant, cls, cluster, action in keys_for(outcome):
                row = conn.execute(
                    "SELECT successes, failures, outcomes, updated_at FROM action_stats "
                    "WHERE tenant = ? AND failure_class = ? AND cluster_id = ? AND action = ?",
                    (key_tenant, cls.name, cluster, action.name),
                ).fetchone()
                current = _evidence(row) if row else Evidence(updated_at=at)
                updated = current.observe(success, at, self.half_life_s)
                conn.execute(
                    "INSERT INTO action_stats (tenant, failure_class, cluster_id, action, successes, "
                    "failures, outcomes, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant, failure_class, cluster_id, action) DO UPDATE SET "
                    "successes = excluded.successes, failures = excluded.failures, "
                    "outcomes = excluded.outcomes, updated_at = excluded.updated_at",
                    (key_tenant, cls.name, cluster, action.name, updated.successes, updated.failures,
                     updated.outcomes, updated.updated_at),
                )
        return True

    def evidence_for(
        self, tenant: str, failure_class: FailureClass, cluster_id: str, now: float
    ) -> ClassEvidence:
        """Learned evidence for one class, decayed to `now` (a `StatsSource` for planning)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT cluster_id, action, successes, failures, outcomes, updated_at FROM action_stats "
                "WHERE tenant = ? AND failure_class = ? AND cluster_id IN (?, ?)",
                (tenant, failure_class.name, CLASS_WIDE, cluster_id),
            ).fetchall()
        by_action: dict[ActionKind, Evidence] = {}
        by_cluster: dict[ActionKind, Evidence] = {}
        for row in rows:
            action = ActionKind[row["action"]]
            evidence = _evidence(row).decayed_to(now, self.half_life_s)
            if row["cluster_id"] == CLASS_WIDE:
                by_action[action] = evidence
            else:
                by_cluster[action] = evidence
        return ClassEvidence(by_action, by_cluster)


def _evidence(row: sqlite3.Row) -> Evidence:
    return Evidence(
        successes=float(row["successes"]),
        failures=float(row["failures"]),
        outcomes=int(row["outcomes"]),
        updated_at=float(row["updated_at"]),
    )
