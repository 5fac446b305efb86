"""Tenants: who they are, their plan, whether they may act. Plain domain, no gRPC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import re2

from services.common.errors import InvalidArgument

TENANT_ID = re2.compile(r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")
PLANS = ("free", "team", "enterprise")
# Reserved: "platform" holds the platform admins, "*" marks service tokens.
RESERVED_IDS = frozenset({"platform", "*"})


class TenantState(enum.IntEnum):
    TENANT_STATE_UNSPECIFIED = 0
    TENANT_STATE_ACTIVE = 1
    TENANT_STATE_SUSPENDED = 2


@dataclass
class Tenant:
    tenant_id: str
    display_name: str
    plan: str
    state: TenantState = TenantState.TENANT_STATE_ACTIVE
    created_at: float = 0.0
    config: dict[str, str] = field(default_factory=dict)
    suspended_reason: str = ""


def validate_tenant_id(tenant_id: str, field_name: str = "tenant_id") -> str:
    if not tenant_id:
        raise InvalidArgument(field_name, "is required")
    if not TENANT_ID.match(tenant_id):
        raise InvalidArgument(
            field_name,
            "must be 2..63 lowercase letters, digits or '-', not starting or ending with '-'; "
            f"got {tenant_id!r}",
        )
    return tenant_id


def resumes(current: Tenant, requested_state: int, field_name: str = "tenant.state") -> bool:
    """Does an UpdateTenant asking for `requested_state` resume `current`?

    UpdateTenant only ever resumes: suspending needs SuspendTenant (and its reason).
    Unspecified, or the state the tenant is already in, changes nothing (so a
    read-modify-write of the tenant message is harmless).
    """
    try:
        state = TenantState(requested_state)
    except ValueError:
        raise InvalidArgument(
            field_name, f"must be TENANT_STATE_ACTIVE or left unspecified, got {requested_state}"
        ) from None
    if state is TenantState.TENANT_STATE_UNSPECIFIED or state is current.state:
        return False
    if state is TenantState.TENANT_STATE_SUSPENDED:
        raise InvalidArgument(
            field_name, "UpdateTenant can only resume a tenant (TENANT_STATE_ACTIVE); suspend with SuspendTenant"
        )
    return True


def new_tenant(tenant_id: str, display_name: str, plan: str, now: float) -> Tenant:
    validate_tenant_id(tenant_id)
    if tenant_id in RESERVED_IDS:
        raise InvalidArgument("tenant_id", f"{tenant_id!r} is reserved")
    plan = plan or "free"
    if plan not in PLANS:
        raise InvalidArgument("plan", f"must be one of {', '.join(PLANS)}; got {plan!r}")
    if len(display_name) > 200:
        raise InvalidArgument("display_name", f"must be at most 200 characters, got {len(display_name)}")
    return Tenant(tenant_id=tenant_id, display_name=display_name or tenant_id, plan=plan, created_at=now)


CONFIG_KEY = re2.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
SECRET_PREFIX = "secret."
MAX_CONFIG_KEYS = 64
MAX_CONFIG_VALUE = 4096
SECRET_PLACEHOLDER = "(encrypted)"


def split_config(
    config: dict[str, str], field_name: str = "tenant.config"
) -> tuple[dict[str, str], dict[str, str]]:
    """Validate a config change; return (plain settings, secrets). An empty value deletes the key.

    Keys starting with "secret." are tenant secrets: stored encrypted under the
    tenant's data key, never returned (GetTenant shows them as "(encrypted)").
    """
    if len(config) > MAX_CONFIG_KEYS:
        raise InvalidArgument(field_name, f"at most {MAX_CONFIG_KEYS} keys per change, got {len(config)}")
    plain: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in sorted(config.items()):
        if not CONFIG_KEY.match(key):
            raise InvalidArgument(
                f"{field_name}[{key[:40]!r}]",
                "keys are 1..64 of a-z, 0-9, '_', '.', '-', starting with a letter",
            )
        if len(value) > MAX_CONFIG_VALUE:
            raise InvalidArgument(
                f"{field_name}[{key!r}]",
                f"values are at most {MAX_CONFIG_VALUE} characters, got {len(value)}",
            )
        if key.startswith(SECRET_PREFIX):
            if value == SECRET_PLACEHOLDER:
                continue  # a read-modify-write echoing the placeholder changes nothing
            secrets[key] = value
        else:
            plain[key] = value
    return plain, secrets


def merge_config(current: dict[str, str], change: dict[str, str]) -> dict[str, str]:
    merged = {**current, **change}
    merged = {key: value for key, value in merged.items() if value != ""}
    if len(merged) > MAX_CONFIG_KEYS:
        raise InvalidArgument(
            "tenant.config",
            f"a tenant has at most {MAX_CONFIG_KEYS} settings, this change makes {len(merged)}",
        )
    return merged
