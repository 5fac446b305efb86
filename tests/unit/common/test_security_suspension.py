"""services.common.security: a suspended tenant's tokens are refused by every verifier."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.errors import PermissionDenied
from services.common.security import (
    GuardedVerifier,
    RevocationList,
    is_suspension_refusal,
    refusal_of,
    suspension_key,
)
from services.common.tokens import TokenSigner, public_jwk

SUSPENDED = json.dumps({"reason": "unpaid invoice", "suspended_at": 1.0}).encode()


def _signer() -> TokenSigner:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TokenSigner(pem, public_jwk(key)["kid"])


@pytest.fixture()
def signer() -> TokenSigner:
    return _signer()


@pytest.fixture()
def revocations() -> RevocationList:
    return RevocationList()


@pytest.fixture()
def verifier(signer: TokenSigner, revocations: RevocationList) -> GuardedVerifier:
    return GuardedVerifier({"keys": [signer.public_jwk()]}, revocations=revocations)


def test_a_suspended_tenants_cached_token_is_refused_naming_tenant_and_reason(
    signer: TokenSigner, revocations: RevocationList, verifier: GuardedVerifier
) -> None:
    token = signer.mint("ci-bot", "acme", ["operator"])
    assert verifier.verify(token).tenant == "acme"  # now cached
    revocations.apply(suspension_key("acme"), SUSPENDED)
    with pytest.raises(PermissionDenied, match="tenant 'acme' is suspended: unpaid invoice"):
        verifier.verify(token)
    with pytest.raises(PermissionDenied, match="tenant 'acme' is suspended"):
        verifier.verify(signer.mint("another-bot", "acme", ["viewer"]))  # every subject, not one


def test_other_tenants_are_unaffected(
    signer: TokenSigner, revocations: RevocationList, verifier: GuardedVerifier
) -> None:
    revocations.apply(suspension_key("acme"), SUSPENDED)
    assert verifier.verify(signer.mint("ci-bot", "globex", ["operator"])).tenant == "globex"
    assert verifier.verify(signer.mint("ci-bot", "acme-2", ["operator"])).tenant == "acme-2"


def test_resuming_admits_the_tenant_again(
    signer: TokenSigner, revocations: RevocationList, verifier: GuardedVerifier
) -> None:
    token = signer.mint("ci-bot", "acme", ["operator"])
    revocations.apply(suspension_key("acme"), SUSPENDED)
    with pytest.raises(PermissionDenied):
        verifier.verify(token)
    revocations.apply(suspension_key("acme"), None)  # tenancy deleted the key on resume
    assert verifier.verify(token).subject == "ci-bot"


@pytest.mark.parametrize(("tenant", "roles"), [("platform", ["admin"]), ("*", ["service"])])
def test_platform_admins_and_services_are_never_suspended(
    signer: TokenSigner, revocations: RevocationList, verifier: GuardedVerifier, tenant: str, roles: list[str]
) -> None:
    revocations.apply(suspension_key(tenant), SUSPENDED)  # a stray or hostile key in etcd
    revocations.suspend(tenant, "by mistake")
    assert revocations.suspension(tenant) is None
    assert verifier.verify(signer.mint("root", tenant, roles)).tenant == tenant


def test_an_unreadable_suspension_still_suspends() -> None:
    revocations = RevocationList()
    revocations.apply(suspension_key("acme"), b"not json")
    assert revocations.suspension("acme") == "no reason recorded"


def test_resync_adds_and_drops_suspensions_as_etcd_has_them() -> None:
    revocations = RevocationList(clock=lambda: 100.0)
    revocations.apply(suspension_key("resumed-meanwhile"), SUSPENDED)
    revocations.replace([(suspension_key("acme"), SUSPENDED)])  # e.g. a watch event was missed
    assert revocations.suspension("acme") == "unpaid invoice"
    assert revocations.suspension("resumed-meanwhile") is None


def test_the_refusal_is_recognisable_as_a_suspension(
    signer: TokenSigner, revocations: RevocationList, verifier: GuardedVerifier
) -> None:
    token = signer.mint("ci-bot", "acme", ["operator"])
    revocations.apply(suspension_key("acme"), SUSPENDED)
    with pytest.raises(PermissionDenied) as caught:
        verifier.verify(token)
    metadata = [("authorization", f"Bearer {token}")]
    refusal = refusal_of("planner", "/p.Planner/GetPolicy", "ipv4:127.0.0.1:1", caught.value, metadata, None)
    assert (refusal.status, refusal.tenant, refusal.subject) == ("PERMISSION_DENIED", "acme", "ci-bot")
    assert is_suspension_refusal(refusal)
    # Another tenant's name in the message (or a lockout) is not a suspension of this token's tenant.
    spoof = refusal_of(
        "planner", "/p.Planner/GetPolicy", "ipv4:127.0.0.1:1",
        PermissionDenied("tenant 'globex' is suspended: x"), metadata, None,
    )
    assert not is_suspension_refusal(spoof)
