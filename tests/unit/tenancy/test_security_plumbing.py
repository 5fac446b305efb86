"""services.common.security: the revocation list, lockouts, published keys, refusal reports."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.security import (
    JTI_PREFIX,
    GuardedVerifier,
    RefusalReporter,
    RevocationList,
    lockout_key,
    refusal_of,
)
from services.common.tokens import TokenSigner, public_jwk


def _signer() -> TokenSigner:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TokenSigner(pem, public_jwk(key)["kid"])


def _verifier(signer: TokenSigner, revocations: RevocationList) -> GuardedVerifier:
    return GuardedVerifier({"keys": [signer.public_jwk()]}, revocations=revocations)


def test_a_revoked_jti_is_refused_even_when_the_token_is_cached() -> None:
    signer, revocations = _signer(), RevocationList()
    verifier = _verifier(signer, revocations)
    issued = signer.issue("ci-bot", "acme", ["operator"])
    assert verifier.verify(issued.token).tenant == "acme"  # now cached
    revocations.apply(JTI_PREFIX + issued.token_id, b'{"reason":"stolen"}')
    with pytest.raises(Unauthenticated, match="revoked"):
        verifier.verify(issued.token)
    revocations.apply(JTI_PREFIX + issued.token_id, None)  # the lease ended with the token
    assert verifier.verify(issued.token).subject == "ci-bot"


def test_a_locked_out_subject_is_refused_until_the_lockout_ends() -> None:
    now = [1000.0]
    signer, revocations = _signer(), RevocationList(clock=lambda: now[0])
    verifier = GuardedVerifier({"keys": [signer.public_jwk()]}, revocations=revocations)
    token = signer.mint("ci-bot", "acme", ["operator"], now=now[0])
    verifier._clock = lambda: now[0]  # type: ignore[method-assign]
    revocations.apply(lockout_key("acme", "ci-bot"), json.dumps({"until": 1060.0}).encode())
    with pytest.raises(PermissionDenied, match="locked out until"):
        verifier.verify(token)
    other = signer.mint("someone-else", "acme", ["operator"], now=now[0])
    assert verifier.verify(other).subject == "someone-else"
    now[0] = 1061.0
    assert verifier.verify(token).subject == "ci-bot"


def test_resync_replaces_the_list_but_keeps_local_revocations_not_yet_in_etcd() -> None:
    revocations = RevocationList(clock=lambda: 100.0)
    revocations.apply(JTI_PREFIX + "gone", b"{}")
    revocations.revoke("fresh", forget_after=500.0)
    revocations.replace([(JTI_PREFIX + "kept", b"{}")])
    assert revocations.is_revoked("kept")
    assert revocations.is_revoked("fresh")
    assert not revocations.is_revoked("gone")


def test_published_keys_are_trusted_alongside_the_file_keys() -> None:
    old, new = _signer(), _signer()
    verifier = _verifier(old, RevocationList())
    verifier._file_jwks = {"keys": [old.public_jwk()]}
    with pytest.raises(Unauthenticated, match="unknown key id"):
        verifier.verify(new.mint("a", "acme", ["viewer"]))
    verifier.trust_published({"keys": [new.public_jwk()]})
    assert verifier.verify(new.mint("a", "acme", ["viewer"])).subject == "a"
    assert verifier.verify(old.mint("b", "acme", ["viewer"])).subject == "b"


def test_a_refusal_attributes_unverified_claims_but_marks_them() -> None:
    signer = _signer()
    token = signer.mint("mallory", "acme", ["admin"])
    metadata = [("authorization", f"Bearer {token}"), ("x-forwarded-for", "10.0.0.7, 127.0.0.1")]
    refusal = refusal_of(
        "planner",
        "/healing_guard.planner.v1.Planner/SetPolicy",
        "ipv4:127.0.0.1:5000",
        Unauthenticated("token has been revoked"),
        metadata,
        None,
        now=5.0,
    )
    assert (refusal.method, refusal.status, refusal.source) == ("SetPolicy", "UNAUTHENTICATED", "10.0.0.7")
    assert (refusal.tenant, refusal.subject, refusal.verified) == ("acme", "mallory", False)
    garbage = refusal_of(
        "planner",
        "/x/Y",
        "ipv6:[::1]:5000",
        Unauthenticated("malformed"),
        [("authorization", "Bearer not.a.jwt")],
        None,
    )
    assert (garbage.tenant, garbage.source) == ("", "[::1]")


def test_the_reporter_bounds_its_buffer() -> None:
    reporter = RefusalReporter("planner", "planner-1")
    refusal = refusal_of("planner", "/x/Y", "ipv4:1.2.3.4:1", Unauthenticated("no"), [], None)
    for _ in range(600):
        reporter.report(refusal)
    batch, dropped = reporter.take()
    assert (len(batch), dropped) == (500, 100)
    assert reporter.take() == ([], 0)
