"""Tenancy's tables: tenants, quota limits, usage events, revoked tokens, security events.

Quota consumption is one IMMEDIATE transaction (check the window's usage, then
record the event), so parallel callers can never overspend; the request id is a
unique key, so a retried request consumes once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import AlreadyExists, NotFound, QuotaExceeded
from services.common.sqlite import Database
from services.tenancy.quotas import DEFAULT_LIMITS, Resource, window_of
from services.tenancy.tenants import Tenant, TenantState

MIGRATIONS = [
    """
    CREATE TABLE tenants (
        tenant_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        plan TEXT NOT NULL,
        state INTEGER NOT NULL,
        created_at REAL NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',
        suspended_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE quota_limits (
        tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id),
        resource INTEGER NOT NULL,
        quota_limit INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, resource)
    );
    CREATE TABLE usage_events (
        request_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id),
        resource INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (tenant_id, request_id)
    );
    CREATE INDEX usage_by_window ON usage_events (tenant_id, resource, at);
    CREATE TABLE revoked_tokens (
        token_id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        revoked_at REAL NOT NULL
    );
    CREATE TABLE security_events (
        event_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        detail TEXT NOT NULL,
        response TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX security_by_tenant ON security_events (tenant_id, at);
    """,
]


@dataclass(frozen=True)
class QuotaState:
    tenant_id: str
    resource: Resource
    limit: int
    used: int
    window_start: float
    window_end: float


class TenancyStore:
    def __init__(self, path: Path | str) -> None:
        self.db = Database(path, MIGRATIONS)

    # -- tenants --------------------------------------------------------------------------
    def create_tenant(self, tenant: Tenant) -> Tenant:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant.tenant_id,)).fetchone():
                raise AlreadyExists("tenant", tenant.tenant_id)
            conn.execute(
                "INSERT INTO tenants VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant.tenant_id, tenant.display_name, tenant.plan, int(tenant.state), tenant.created_at,
                 json.dumps(tenant.config, sort_keys=True), tenant.suspended_reason),
            )
        return tenant

    def get_tenant(self, tenant_id: str) -> Tenant:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise NotFound("tenant", tenant_id, f"tenant {tenant_id!r} not found; create it with CreateTenant")
        return _tenant(row)

    def list_tenants(self, after: str, limit: int) -> list[Tenant]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM tenants WHERE tenant_id > ? ORDER BY tenant_id LIMIT ?", (after, limit)
            ).fetchall()
        return [_tenant(row) for row in rows]

    def update_tenant(self, tenant: Tenant) -> Tenant:
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE tenants SET display_name = ?, plan = ?, state = ?, config = ?, suspended_reason = ? "
                "WHERE tenant_id = ?",
                (tenant.display_name, tenant.plan, int(tenant.state), json.dumps(tenant.config, sort_keys=True),
                 tenant.suspended_reason, tenant.tenant_id),
            )
            if cursor.rowcount == 0:
                raise NotFound("tenant", tenant.tenant_id)
        return tenant

    # -- quotas ---------------------------------------------------------------------------
    def set_quota(self, tenant_id: str, resource: Resource, limit: int, now: float) -> QuotaState:
        with self.db.transaction() as conn:
            self._require_tenant(conn, tenant_id)
            conn.execute(
                "INSERT INTO quota_limits VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id, resource) DO UPDATE SET quota_limit = excluded.quota_limit",
                (tenant_id, int(resource), limit),
            )
            return self._state(conn, tenant_id, resource, now)

    def consume(self, tenant_id: str, resource: Resource, amount: int, request_id: str, now: float) -> tuple[QuotaState, bool]:
        """Spend `amount`, or raise QuotaExceeded; a repeated request id spends nothing."""
        with self.db.transaction() as conn:
            tenant = self._require_tenant(conn, tenant_id)
            if tenant.state is TenantState.TENANT_STATE_SUSPENDED:
                raise QuotaExceeded(
                    f"tenant:{tenant_id}", f"tenant {tenant_id!r} is suspended: {tenant.suspended_reason}", 3600
                )
            seen = conn.execute(
                "SELECT 1 FROM usage_events WHERE tenant_id = ? AND request_id = ?", (tenant_id, request_id)
            ).fetchone()
            if seen:
                return self._state(conn, tenant_id, resource, now), True
            state = self._state(conn, tenant_id, resource, now)
            if state.used + amount > state.limit:
                raise QuotaExceeded(
                    f"{tenant_id}/{resource.name}",
                    f"quota {resource.name} of tenant {tenant_id!r} is spent: {state.used} of {state.limit} used, "
                    f"{amount} more asked; the window resets in {state.window_end - now:.0f} s",
                    retry_after_seconds=max(0.0, state.window_end - now),
                )
            conn.execute(
                "INSERT INTO usage_events VALUES (?, ?, ?, ?, ?)", (request_id, tenant_id, int(resource), amount, now)
            )
            return QuotaState(tenant_id, resource, state.limit, state.used + amount, state.window_start,
                              state.window_end), False

    def quota(self, tenant_id: str, resource: Resource, now: float) -> QuotaState:
        with self.db.read() as conn:
            self._require_tenant(conn, tenant_id)
            return self._state(conn, tenant_id, resource, now)

    def usage(self, tenant_id: str, start: float, end: float) -> dict[Resource, int]:
        with self.db.read() as conn:
            self._require_tenant(conn, tenant_id)
            rows = conn.execute(
                "SELECT resource, SUM(amount) FROM usage_events WHERE tenant_id = ? AND at >= ? AND at < ? "
                "GROUP BY resource ORDER BY resource",
                (tenant_id, start, end),
            ).fetchall()
        return {Resource(row[0]): int(row[1]) for row in rows}

    def _require_tenant(self, conn, tenant_id: str) -> Tenant:  # type: ignore[no-untyped-def]
        row = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise NotFound("tenant", tenant_id, f"tenant {tenant_id!r} not found; create it with CreateTenant")
        return _tenant(row)

    def _state(self, conn, tenant_id: str, resource: Resource, now: float) -> QuotaState:  # type: ignore[no-untyped-def]
        window = window_of(resource, now)
        row = conn.execute(
            "SELECT quota_limit FROM quota_limits WHERE tenant_id = ? AND resource = ?", (tenant_id, int(resource))
        ).fetchone()
        if row is not None:
            limit = int(row[0])
        else:
            plan = conn.execute("SELECT plan FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()[0]
            limit = DEFAULT_LIMITS.get(plan, DEFAULT_LIMITS["free"])[resource]
        used = conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM usage_events WHERE tenant_id = ? AND resource = ? AND at >= ? AND at < ?",
            (tenant_id, int(resource), window.start, window.end),
        ).fetchone()[0]
        return QuotaState(tenant_id, resource, limit, int(used), window.start, window.end)

    # -- tokens and security --------------------------------------------------------------
    def revoke(self, token_id: str, reason: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO revoked_tokens VALUES (?, ?, ?)", (token_id, reason, now))

    def is_revoked(self, token_id: str) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM revoked_tokens WHERE token_id = ?", (token_id,)).fetchone() is not None

    def add_security_event(self, event_id: str, tenant_id: str, kind: str, source: str, detail: str,
                           response: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO security_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (event_id, tenant_id, kind, source, detail, response, now))

    def security_events(self, tenant_id: str, since: float, limit: int) -> list[dict[str, object]]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM security_events WHERE (? = '' OR tenant_id = ?) AND at >= ? ORDER BY at DESC LIMIT ?",
                (tenant_id, tenant_id, since, limit),
            ).fetchall()
        return [dict(row) for row in rows]


def _tenant(row) -> Tenant:  # type: ignore[no-untyped-def]
    return Tenant(
        tenant_id=row["tenant_id"], display_name=row["display_name"], plan=row["plan"],
        state=TenantState(row["state"]), created_at=row["created_at"], config=json.loads(row["config"]),
        suspended_reason=row["suspended_reason"],
    )
