"""Who is calling, and may they: the principal of the current RPC.

The server interceptor (services.common.server) verifies the bearer token on
every call (zero trust: the gateway checked it too, we check again), checks the
service's access table, and leaves the principal in a context variable that the
servicer reads through `current_principal()` / `tenant_for()`. The tenant always
comes from the verified token, never from the request body.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.common.tokens import Principal
from services.common.vocabulary import Role

# Principals of this tenant with the admin role administer the whole platform
# (create tenants, act for any tenant), like services do.
PLATFORM_TENANT = "platform"

AccessTable = Mapping[str, frozenset[Role]]

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("hg_principal", default=None)


def roles(*names: Role) -> frozenset[Role]:
    return frozenset(names)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    raise Unauthenticated("missing bearer token: send metadata 'authorization: Bearer <token>'")


def authorize(principal: Principal, method: str, access: AccessTable) -> None:
    """Raise PermissionDenied unless one of the principal's roles may call `method`."""
    allowed = access.get(method)
    if allowed is None:
        # Fail closed: an RPC missing from the table is callable by nobody.
        raise PermissionDenied(f"{method} is not open to any role")
    if not principal.has_any(role.value for role in allowed):
        needed = " or ".join(sorted(role.value for role in allowed))
        held = ", ".join(sorted(principal.roles)) or "none"
        raise PermissionDenied(f"{method} needs role {needed}; your token has {held}")


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated principal for this call")
    return principal


def acts_for_any_tenant(principal: Principal) -> bool:
    return Role.SERVICE.value in principal.roles or (
        principal.tenant == PLATFORM_TENANT and Role.ADMIN.value in principal.roles
    )


def tenant_for(body_tenant: str, field: str = "tenant_id") -> str:
    """The tenant this call acts for.

    End users act for the tenant in their token; a tenant named in the body must
    agree with it. Services (and platform admins) act on behalf of a tenant and
    must name it.
    """
    principal = current_principal()
    if acts_for_any_tenant(principal):
        if not body_tenant:
            raise InvalidArgument(field, "is required when calling with a service or platform token")
        return body_tenant
    if body_tenant and body_tenant != principal.tenant:
        raise PermissionDenied(
            f"{field} {body_tenant!r} does not match your token's tenant {principal.tenant!r}"
        )
    return principal.tenant
