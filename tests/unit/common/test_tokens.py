from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.common.errors import InvalidArgument, Unauthenticated
from services.common.tokens import Principal, TokenSigner, TokenVerifier, load_signer, public_jwk
from services.common.vocabulary import Role

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture()
def jwk(key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    return public_jwk(key)


@pytest.fixture()
def signer(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str]) -> TokenSigner:
    return TokenSigner(_pem(key), jwk["kid"])


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def verifier(jwk: dict[str, str], clock: Clock) -> TokenVerifier:
    return TokenVerifier({"keys": [jwk]}, clock=clock)


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": "healing-guard", "aud": "healing-guard", "sub": "alice", "tenant": "acme",
                              "roles": ["operator"], "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 600,
                              "jti": "a" * 32}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(key: ed25519.Ed25519PrivateKey, kid: str, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def test_round_trip(signer: TokenSigner, verifier: TokenVerifier) -> None:
    issued = signer.issue("alice", "acme", [Role.OPERATOR, "viewer"], ttl_seconds=600, now=NOW)
    principal = verifier.verify(issued.token)
    assert principal == Principal("alice", "acme", frozenset({"operator", "viewer"}), issued.token_id, NOW + 600)
    assert principal.has_any([Role.VIEWER]) and principal.has_any(["admin", "operator"])
    assert not principal.has_any([Role.ADMIN, Role.SERVICE])
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "EdDSA" and header["kid"] == signer.kid
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "sub", "tenant", "roles", "iat", "nbf", "exp", "jti"}
    assert len(claims["jti"]) == 32 and claims["jti"] == issued.token_id


def test_each_token_has_its_own_id(signer: TokenSigner) -> None:
    assert signer.issue("a", "t", ["viewer"]).token_id != signer.issue("a", "t", ["viewer"]).token_id


def test_es256_keys_verify_too(clock: Clock) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(ec_key)
    token = TokenSigner(_pem(ec_key), jwk["kid"]).mint("bot", "acme", ["service"], now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert TokenVerifier({"keys": [jwk]}, clock=clock).verify(token).roles == {"service"}


def test_expired(signer: TokenSigner, verifier: TokenVerifier, clock: Clock) -> None:
    token = signer.mint("alice", "acme", ["viewer"], ttl_seconds=60, now=NOW)
    clock.now = NOW + 60 + 4  # inside the 5 s leeway
    verifier.verify(token)
    clock.now = NOW + 60 + 6
    with pytest.raises(Unauthenticated, match=r"token expired at 2027-01-15T08:01:00Z"):
        verifier.verify(token)


def test_expiry_applies_to_cached_tokens(signer: TokenSigner, verifier: TokenVerifier, clock: Clock) -> None:
    token = signer.mint("alice", "acme", ["viewer"], ttl_seconds=60, now=NOW)
    verifier.verify(token)  # now cached
    clock.now = NOW + 3600
    with pytest.raises(Unauthenticated, match="token expired at"):
        verifier.verify(token)


def test_not_yet_valid(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str], verifier: TokenVerifier) -> None:
    token = _signed(key, jwk["kid"], _claims(nbf=int(NOW) + 120, exp=int(NOW) + 600))
    with pytest.raises(Unauthenticated, match=r"token is not valid before 2027-01-15T08:02:00Z"):
        verifier.verify(token)


def test_issued_in_the_future(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str], verifier: TokenVerifier) -> None:
    token = _signed(key, jwk["kid"], _claims(iat=int(NOW) + 120))
    with pytest.raises(Unauthenticated, match="token was issued in the future"):
        verifier.verify(token)


def test_wrong_issuer(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str], verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match="token issuer is not healing-guard"):
        verifier.verify(_signed(key, jwk["kid"], _claims(iss="evil")))


def test_wrong_audience(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str], verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match="token audience is not healing-guard"):
        verifier.verify(_signed(key, jwk["kid"], _claims(aud="someone-else")))


def test_signer_audience_parameter_is_checked(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str],
                                              verifier: TokenVerifier) -> None:
    other = TokenSigner(_pem(key), jwk["kid"], audience="staging")
    with pytest.raises(Unauthenticated, match="token audience is not healing-guard"):
        verifier.verify(other.mint("alice", "acme", ["viewer"], now=NOW))


def test_another_key_with_the_same_kid(jwk: dict[str, str], verifier: TokenVerifier) -> None:
    impostor = TokenSigner(_pem(ed25519.Ed25519PrivateKey.generate()), jwk["kid"])
    with pytest.raises(Unauthenticated, match="token signature does not verify"):
        verifier.verify(impostor.mint("alice", "acme", ["admin"], now=NOW))


def test_unknown_kid(key: ed25519.Ed25519PrivateKey, verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match="token signed with unknown key id 'x'"):
        verifier.verify(_signed(key, "x", _claims()))


def test_missing_kid(key: ed25519.Ed25519PrivateKey, verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match=r"token has no key id \(kid\)"):
        verifier.verify(jwt.encode(_claims(), key, algorithm="EdDSA"))


def test_alg_none(jwk: dict[str, str], verifier: TokenVerifier) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": jwk["kid"]}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    with pytest.raises(Unauthenticated, match="token algorithm none is not allowed"):
        verifier.verify(f"{header}.{payload}.")


def test_hs256_with_public_key_as_secret(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str],
                                         verifier: TokenVerifier) -> None:
    # Algorithm confusion: a verifier that lets the header choose the algorithm would
    # accept an HMAC made with the (public) key bytes.
    secret_candidates = [
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(jwk).encode(),
    ]
    for secret in secret_candidates:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}).encode())
        payload = _b64(json.dumps(_claims(roles=["admin"])).encode())
        signature = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        with pytest.raises(Unauthenticated, match="token algorithm HS256 is not allowed"):
            verifier.verify(f"{header}.{payload}.{signature}")


def test_es256_header_on_an_ed25519_key_is_refused(jwk: dict[str, str], clock: Clock) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = public_jwk(ec_key)
    verifier = TokenVerifier({"keys": [jwk, ec_jwk]}, clock=clock)
    token = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": jwk["kid"]})
    with pytest.raises(Unauthenticated, match="token algorithm ES256 does not match key"):
        verifier.verify(token)


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9", "Bearer x.y.z",
                                     "\u00e9\u00e9.\u00e9.\u00e9"])
def test_malformed_strings(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(Unauthenticated, match="token is (malformed|missing)"):
        verifier.verify(garbage)


def test_payload_that_is_not_json(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str],
                                  verifier: TokenVerifier) -> None:
    token = jwt.api_jws.encode(b"not json", key, algorithm="EdDSA", headers={"kid": jwk["kid"]})
    with pytest.raises(Unauthenticated, match="token is malformed"):
        verifier.verify(token)


def test_oversized_token(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match="token is too large"):
        verifier.verify("a" * 10_000)


@pytest.mark.parametrize(("claim", "message"), [
    ("tenant", "token is missing the 'tenant' claim"),
    ("roles", "token is missing the 'roles' claim"),
    ("exp", "token is missing the 'exp' claim"),
    ("jti", "token is missing the 'jti' claim"),
    ("sub", "token is missing the 'sub' claim"),
])
def test_missing_claims(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str], verifier: TokenVerifier,
                        claim: str, message: str) -> None:
    claims = _claims()
    del claims[claim]
    with pytest.raises(Unauthenticated, match=message):
        verifier.verify(_signed(key, jwk["kid"], claims))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"roles": []}, "token claim 'roles' must be a non-empty list"),
    ({"roles": "admin"}, "token claim 'roles' must be a non-empty list"),
    ({"roles": ["root"]}, "token role 'root' is unknown"),
    ({"tenant": ""}, "token claim 'tenant' must be a non-empty string"),
    ({"tenant": 7}, "token claim 'tenant' must be a non-empty string"),
])
def test_bad_custom_claims(key: ed25519.Ed25519PrivateKey, jwk: dict[str, str], verifier: TokenVerifier,
                           overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        verifier.verify(_signed(key, jwk["kid"], _claims(**overrides)))


def test_revoked_even_after_a_cached_success(signer: TokenSigner, jwk: dict[str, str], clock: Clock) -> None:
    revoked: set[str] = set()
    calls: list[str] = []

    def is_revoked(jti: str) -> bool:
        calls.append(jti)
        return jti in revoked

    verifier = TokenVerifier({"keys": [jwk]}, clock=clock, is_revoked=is_revoked)
    issued = signer.issue("alice", "acme", ["operator"], now=NOW)
    verifier.verify(issued.token)
    verifier.verify(issued.token)
    assert calls == [issued.token_id, issued.token_id]
    revoked.add(issued.token_id)
    with pytest.raises(Unauthenticated, match="token has been revoked"):
        verifier.verify(issued.token)


def test_cache_skips_signature_work_and_is_bounded(signer: TokenSigner, jwk: dict[str, str], clock: Clock,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier({"keys": [jwk]}, clock=clock, cache_size=2)
    tokens = [signer.mint(f"user{i}", "acme", ["viewer"], now=NOW) for i in range(3)]
    for token in tokens:
        verifier.verify(token)
    decodes: list[str] = []
    real_decode: Callable[..., Any] = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda token, *a, **k: decodes.append(token) or real_decode(token, *a, **k))
    verifier.verify(tokens[2])
    verifier.verify(tokens[1])
    assert decodes == []  # both still cached
    verifier.verify(tokens[0])  # evicted (least recently used): verified again
    assert decodes == [tokens[0]]


def test_key_rotation_forgets_cached_tokens(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = signer.mint("alice", "acme", ["viewer"], now=NOW)
    verifier.verify(token)
    verifier.update_jwks({"keys": [public_jwk(ed25519.Ed25519PrivateKey.generate())]})
    with pytest.raises(Unauthenticated, match="unknown key id"):
        verifier.verify(token)


def test_jwks_without_usable_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="no usable"):
        TokenVerifier({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]})


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"subject": ""}, "subject"), ({"tenant": ""}, "tenant"), ({"roles": []}, "roles"),
    ({"roles": ["root"]}, "roles"), ({"ttl_seconds": 0}, "ttl_seconds"),
])
def test_mint_validates_its_input(signer: TokenSigner, kwargs: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"subject": "alice", "tenant": "acme", "roles": ["viewer"], **kwargs}
    with pytest.raises(InvalidArgument) as caught:
        signer.mint(**arguments)
    assert caught.value.field == field


def test_load_signer_and_from_jwks_file(tmp_path: Any, key: ed25519.Ed25519PrivateKey,
                                        jwk: dict[str, str]) -> None:
    (tmp_path / "signing-key.pem").write_bytes(_pem(key))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    signer = load_signer(tmp_path / "signing-key.pem", tmp_path / "jwks.json")
    assert signer.kid == jwk["kid"]
    verifier = TokenVerifier.from_jwks_file(tmp_path / "jwks.json")
    assert verifier.verify(signer.mint("alice", "acme", ["admin"])).roles == {"admin"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [public_jwk(ed25519.Ed25519PrivateKey.generate())]}))
    with pytest.raises(ValueError, match="is not published in"):
        load_signer(tmp_path / "signing-key.pem", tmp_path / "jwks.json")


def test_real_clock_default(signer: TokenSigner, jwk: dict[str, str]) -> None:
    principal = TokenVerifier({"keys": [jwk]}).verify(signer.mint("alice", "acme", ["viewer"], ttl_seconds=30))
    assert time.time() < principal.expires_at <= time.time() + 31
