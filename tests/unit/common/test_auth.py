import pytest

from services.common import auth
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.common.tokens import Principal
from services.common.vocabulary import Role


def principal(tenant: str, *roles: str, subject: str = "alice") -> Principal:
    return Principal(subject=subject, tenant=tenant, roles=frozenset(roles), token_id="j1", expires_at=0.0)


@pytest.fixture(autouse=True)
def _clear():  # type: ignore[no-untyped-def]
    token = auth.set_principal(None)
    yield
    auth._current.reset(token)


def test_bearer_token_is_read_from_metadata():
    assert auth.bearer_token([("x", "y"), ("authorization", "Bearer abc.def")]) == "abc.def"


@pytest.mark.parametrize("metadata", [[], [("authorization", "Basic abc")], [("authorization", "Bearer ")]])
def test_missing_or_malformed_bearer_is_unauthenticated(metadata):  # type: ignore[no-untyped-def]
    with pytest.raises(Unauthenticated):
        auth.bearer_token(metadata)


def test_authorize_names_the_rpc_and_the_role_needed():
    access = {"SetPolicy": auth.roles(Role.ADMIN)}
    with pytest.raises(PermissionDenied, match="SetPolicy needs role admin; your token has viewer"):
        auth.authorize(principal("acme", "viewer"), "SetPolicy", access)
    auth.authorize(principal("acme", "admin"), "SetPolicy", access)


def test_an_rpc_missing_from_the_table_is_closed():
    with pytest.raises(PermissionDenied, match="not open to any role"):
        auth.authorize(principal("acme", "admin"), "Forgotten", {})


def test_tenant_comes_from_the_token_and_a_disagreeing_body_is_refused():
    auth.set_principal(principal("acme", "operator"))
    assert auth.tenant_for("") == "acme"
    assert auth.tenant_for("acme") == "acme"
    with pytest.raises(PermissionDenied, match="'globex' does not match your token's tenant 'acme'"):
        auth.tenant_for("globex")


def test_services_and_platform_admins_must_name_the_tenant():
    auth.set_principal(principal("*", "service", subject="detector"))
    assert auth.tenant_for("globex") == "globex"
    with pytest.raises(InvalidArgument, match="tenant_id"):
        auth.tenant_for("")
    auth.set_principal(principal(auth.PLATFORM_TENANT, "admin"))
    assert auth.tenant_for("globex") == "globex"
    auth.set_principal(principal(auth.PLATFORM_TENANT, "viewer"))  # not an admin: acts for itself only
    with pytest.raises(PermissionDenied):
        auth.tenant_for("globex")
