"""Tenancy's tables: tenants, quota limits, usage events, revoked tokens, security events.

Quota consumption is one IMMEDIATE transaction (check the window's usage, then
record the event), so parallel callers can never overspend; the request id is a
unique key, so a retried request consumes once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.common.envelope import WrappedKey
from services.common.errors import AlreadyExists, NotFound, QuotaExceeded
from services.common.sqlite import Database
from services.tenancy.billing import UsageEvent
from services.tenancy.keys import SigningKey
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
    """
    CREATE TABLE issued_tokens (
        token_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        roles TEXT NOT NULL,
        issued_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        issued_by TEXT NOT NULL
    );
    ALTER TABLE revoked_tokens ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE revoked_tokens ADD COLUMN expires_at REAL NOT NULL DEFAULT 0;
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        private_blob BLOB NOT NULL,
        created_at REAL NOT NULL,
        retire_at REAL NOT NULL
    );
    CREATE TABLE data_keys (
        tenant_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        master_key_id TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, version)
    );
    CREATE TABLE tenant_secrets (
        tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id),
        name TEXT NOT NULL,
        sealed BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, name)
    );
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
                (
                    tenant.tenant_id,
                    tenant.display_name,
                    tenant.plan,
                    int(tenant.state),
                    tenant.created_at,
                    json.dumps(tenant.config, sort_keys=True),
                    tenant.suspended_reason,
                ),
            )
        return tenant

    def get_tenant(self, tenant_id: str) -> Tenant:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise NotFound(
                "tenant", tenant_id, f"tenant {tenant_id!r} not found; create it with CreateTenant"
            )
        return _tenant(row)

    def list_tenants(self, after: str, limit: int) -> list[Tenant]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM tenants WHERE tenant_id > ? ORDER BY tenant_id LIMIT ?", (after, limit)
            ).fetchall()
        return [_tenant(row) for row in rows]

    def suspended_tenants(self) -> dict[str, str]:
        """Every suspended tenant and why (what tenancy republishes to etcd at start)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT tenant_id, suspended_reason FROM tenants WHERE state = ? ORDER BY tenant_id",
                (int(TenantState.TENANT_STATE_SUSPENDED),),
            ).fetchall()
        return {row["tenant_id"]: row["suspended_reason"] for row in rows}

    def update_tenant(self, tenant: Tenant) -> Tenant:
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE tenants SET display_name = ?, plan = ?, state = ?, config = ?, suspended_reason = ? "
                "WHERE tenant_id = ?",
                (
                    tenant.display_name,
                    tenant.plan,
                    int(tenant.state),
                    json.dumps(tenant.config, sort_keys=True),
                    tenant.suspended_reason,
                    tenant.tenant_id,
                ),
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

    def consume(
        self, tenant_id: str, resource: Resource, amount: int, request_id: str, now: float
    ) -> tuple[QuotaState, bool]:
        """Spend `amount`, or raise QuotaExceeded; a repeated request id spends nothing."""
        with self.db.transaction() as conn:
            tenant = self._require_tenant(conn, tenant_id)
            if tenant.state is TenantState.TENANT_STATE_SUSPENDED:
                raise QuotaExceeded(
                    f"tenant:{tenant_id}",
                    f"tenant {tenant_id!r} is suspended: {tenant.suspended_reason}",
                    3600,
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
                    f"quota {resource.name} of tenant {tenant_id!r} is spent: "
                    f"{state.used} of {state.limit} used, "
                    f"{amount} more asked; the window resets in {state.window_end - now:.0f} s",
                    retry_after_seconds=max(0.0, state.window_end - now),
                )
            conn.execute(
                "INSERT INTO usage_events VALUES (?, ?, ?, ?, ?)",
                (request_id, tenant_id, int(resource), amount, now),
            )
            return QuotaState(
                tenant_id, resource, state.limit, state.used + amount, state.window_start, state.window_end
            ), False

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

    def usage_events(self, tenant_id: str, start: float, end: float) -> list[UsageEvent]:
        """The stored events of a period, in (time, request id) order: what a bill is computed from."""
        with self.db.read() as conn:
            self._require_tenant(conn, tenant_id)
            rows = conn.execute(
                "SELECT request_id, resource, amount, at FROM usage_events "
                "WHERE tenant_id = ? AND at >= ? AND at < ? ORDER BY at, request_id",
                (tenant_id, start, end),
            ).fetchall()
        return [UsageEvent(row[0], Resource(row[1]), int(row[2]), float(row[3])) for row in rows]

    def limits(self, tenant_id: str) -> dict[Resource, int]:
        """The effective limit of every resource (set, else the plan's default)."""
        with self.db.read() as conn:
            self._require_tenant(conn, tenant_id)
            return {r: self._state(conn, tenant_id, r, 0.0).limit for r in Resource if r.value}

    def _require_tenant(self, conn, tenant_id: str) -> Tenant:  # type: ignore[no-untyped-def]
        row = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise NotFound(
                "tenant", tenant_id, f"tenant {tenant_id!r} not found; create it with CreateTenant"
            )
        return _tenant(row)

    def _state(self, conn, tenant_id: str, resource: Resource, now: float) -> QuotaState:  # type: ignore[no-untyped-def]
        window = window_of(resource, now)
        row = conn.execute(
            "SELECT quota_limit FROM quota_limits WHERE tenant_id = ? AND resource = ?",
            (tenant_id, int(resource)),
        ).fetchone()
        if row is not None:
            limit = int(row[0])
        else:
            plan = conn.execute("SELECT plan FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()[0]
            limit = DEFAULT_LIMITS.get(plan, DEFAULT_LIMITS["free"])[resource]
        used = conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM usage_events "
            "WHERE tenant_id = ? AND resource = ? AND at >= ? AND at < ?",
            (tenant_id, int(resource), window.start, window.end),
        ).fetchone()[0]
        return QuotaState(tenant_id, resource, limit, int(used), window.start, window.end)

    # -- tokens and security --------------------------------------------------------------
    def record_issued(
        self,
        token_id: str,
        tenant_id: str,
        subject: str,
        roles: list[str],
        issued_at: float,
        expires_at: float,
        issued_by: str,
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO issued_tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_id, tenant_id, subject, json.dumps(sorted(roles)), issued_at, expires_at, issued_by),
            )

    def issued(self, token_id: str) -> dict[str, object] | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM issued_tokens WHERE token_id = ?", (token_id,)).fetchone()
        return dict(row) if row is not None else None

    def revoke(
        self, token_id: str, reason: str, now: float, tenant_id: str = "", expires_at: float = 0.0
    ) -> bool:
        """Record a revocation; False if the token was already revoked."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO revoked_tokens (token_id, reason, revoked_at, tenant_id, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_id, reason, now, tenant_id, expires_at),
            )
            return cursor.rowcount == 1

    def revoked_since(self, now: float) -> list[dict[str, object]]:
        """Revocations of tokens that may still be live (to republish to etcd at start)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM revoked_tokens WHERE expires_at = 0 OR expires_at > ?", (now,)
            ).fetchall()
        return [dict(row) for row in rows]

    # -- signing keys (private parts sealed by the caller) -------------------------------
    def signing_keys(self) -> list[tuple[str, bytes, float, float]]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT kid, private_blob, created_at, retire_at FROM signing_keys ORDER BY created_at"
            ).fetchall()
        return [(row[0], bytes(row[1]), float(row[2]), float(row[3])) for row in rows]

    def save_signing_keys(self, keys: list[tuple[SigningKey, bytes]]) -> None:
        """Insert or update keys; each comes with its sealed private part."""
        with self.db.transaction() as conn:
            for key, sealed in keys:
                conn.execute(
                    "INSERT INTO signing_keys VALUES (?, ?, ?, ?) ON CONFLICT (kid) DO UPDATE SET "
                    "retire_at = excluded.retire_at",
                    (key.kid, sealed, key.created_at, key.retire_at),
                )

    # -- envelope data keys (services.common.envelope.KeyStore) ---------------------------
    def wrapped_keys(self, tenant_id: str) -> list[WrappedKey]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM data_keys WHERE tenant_id = ? ORDER BY version", (tenant_id,)
            ).fetchall()
        return [_wrapped(row) for row in rows]

    def all_wrapped_keys(self) -> list[WrappedKey]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM data_keys ORDER BY tenant_id, version").fetchall()
        return [_wrapped(row) for row in rows]

    def put_wrapped_key(self, key: WrappedKey) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO data_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, version) DO UPDATE "
                "SET master_key_id = excluded.master_key_id, wrapped = excluded.wrapped",
                (key.tenant_id, key.version, key.master_key_id, key.wrapped, key.created_at),
            )

    def delete_wrapped_keys(self, tenant_id: str) -> int:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM data_keys WHERE tenant_id = ?", (tenant_id,)).rowcount

    # -- tenant secrets (sealed by the caller) --------------------------------------------
    def put_secrets(self, tenant_id: str, sealed: dict[str, bytes | None], now: float) -> None:
        """Set (bytes) or delete (None) sealed secrets, all in one transaction."""
        with self.db.transaction() as conn:
            self._require_tenant(conn, tenant_id)
            for name, blob in sealed.items():
                if blob is None:
                    conn.execute(
                        "DELETE FROM tenant_secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name)
                    )
                else:
                    conn.execute(
                        "INSERT INTO tenant_secrets VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, name) "
                        "DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                        (tenant_id, name, blob, now),
                    )

    def secrets(self, tenant_id: str) -> dict[str, bytes]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT name, sealed FROM tenant_secrets WHERE tenant_id = ? ORDER BY name", (tenant_id,)
            ).fetchall()
        return {row[0]: bytes(row[1]) for row in rows}

    def is_revoked(self, token_id: str) -> bool:
        with self.db.read() as conn:
            return (
                conn.execute("SELECT 1 FROM revoked_tokens WHERE token_id = ?", (token_id,)).fetchone()
                is not None
            )

    def add_security_event(
        self, event_id: str, tenant_id: str, kind: str, source: str, detail: str, response: str, now: float
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO security_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, tenant_id, kind, source, detail, response, now),
            )

    def security_events(self, tenant_id: str, since: float, limit: int) -> list[dict[str, object]]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM security_events WHERE (? = '' OR tenant_id = ?) AND at >= ? "
                "ORDER BY at DESC LIMIT ?",
                (tenant_id, tenant_id, since, limit),
            ).fetchall()
        return [dict(row) for row in rows]


def _wrapped(row) -> WrappedKey:  # type: ignore[no-untyped-def]
    return WrappedKey(
        row["tenant_id"],
        int(row["version"]),
        row["master_key_id"],
        bytes(row["wrapped"]),
        float(row["created_at"]),
    )


def _tenant(row) -> Tenant:  # type: ignore[no-untyped-def]
    return Tenant(
        tenant_id=row["tenant_id"],
        display_name=row["display_name"],
        plan=row["plan"],
        state=TenantState(row["state"]),
        created_at=row["created_at"],
        config=json.loads(row["config"]),
        suspended_reason=row["suspended_reason"],
    )
