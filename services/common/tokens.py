"""JWT bearer tokens: minting (tenancy, the dev CLI) and verification (every service).

Zero trust: the gateway checks the token, and every service checks it again with
this module. The verifier pins the algorithm to what the key in the JWKS is for
(EdDSA for Ed25519 keys, ES256 for P-256 keys), so "none", HS* and algorithm
confusion are refused before any signature is looked at.

Every failure is `Unauthenticated` with a message meant for the caller: it says what
is wrong with the token, never a stack trace or a library's internals.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.common.errors import InvalidArgument, Unauthenticated
from services.common.vocabulary import Role

logger = logging.getLogger(__name__)

DEFAULT_ISSUER = "healing-guard"
DEFAULT_AUDIENCE = "healing-guard"
ROLE_NAMES: frozenset[str] = frozenset(role.value for role in Role)
REQUIRED_CLAIMS = ("exp", "nbf", "iat", "iss", "aud", "sub", "jti")
# A JWT larger than this is not one of ours; refuse before parsing it.
MAX_TOKEN_BYTES = 8192

RevocationCheck = Callable[[str], bool]


# --- JWK helpers (shared with deploy/pki and tenancy's key rotation) -----------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int, length: int) -> str:
    return _b64url(value.to_bytes(length, "big"))


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public OKP or EC JWK."""
    kty = jwk.get("kty")
    if kty == "OKP":
        members = {"crv": jwk["crv"], "kty": kty, "x": jwk["x"]}
    elif kty == "EC":
        members = {"crv": jwk["crv"], "kty": kty, "x": jwk["x"], "y": jwk["y"]}
    else:
        raise ValueError(f"jwk kty must be OKP or EC, got {kty!r}")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _b64url(hashlib.sha256(canonical).digest())


def public_jwk(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey
               | ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK for a signing key, with kid = its RFC 7638 thumbprint."""
    public = (
        cast("ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey", key).public_key()
        if hasattr(key, "private_bytes") else key
    )
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk: dict[str, str] = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
        alg = "EdDSA"
    elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        numbers = public.public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64url_uint(numbers.x, 32),
               "y": _b64url_uint(numbers.y, 32)}
        alg = "ES256"
    else:
        raise ValueError("signing key must be Ed25519 or EC P-256")
    return {**jwk, "alg": alg, "use": "sig", "kid": jwk_thumbprint(jwk)}


def _algorithm_for_private_key(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("signing key must be Ed25519 or EC P-256")


def _algorithm_for_jwk(jwk: Mapping[str, Any]) -> str | None:
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return "EdDSA"
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256"
    return None


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- minting --------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    """A freshly minted token and what tenancy needs to record about it."""

    token: str
    token_id: str
    subject: str
    tenant: str
    roles: tuple[str, ...]
    issued_at: int
    expires_at: int


def _role_names(roles: Iterable[str | Role]) -> tuple[str, ...]:
    names = sorted({role.value if isinstance(role, Role) else str(role) for role in roles})
    if not names:
        raise InvalidArgument("roles", f"at least one role is required, one of {sorted(ROLE_NAMES)}")
    unknown = [name for name in names if name not in ROLE_NAMES]
    if unknown:
        raise InvalidArgument("roles", f"unknown role {unknown[0]!r}; allowed: {sorted(ROLE_NAMES)}")
    return tuple(names)


class TokenSigner:
    """Mints tokens with one private key (Ed25519 → EdDSA, P-256 → ES256)."""

    def __init__(self, private_key_pem: bytes, kid: str, issuer: str = DEFAULT_ISSUER,
                 audience: str = DEFAULT_AUDIENCE) -> None:
        if not kid:
            raise InvalidArgument("kid", "a key id is required")
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self.algorithm = _algorithm_for_private_key(self._key)
        self.kid = kid
        self.issuer = issuer
        self.audience = audience

    def public_jwk(self) -> dict[str, str]:
        """The JWK a verifier needs for this signer (kid as given to the signer)."""
        return {**public_jwk(self._key), "kid": self.kid}  # type: ignore[arg-type]

    def issue(self, subject: str, tenant: str, roles: Sequence[str | Role], ttl_seconds: int = 3600,
              now: float | None = None) -> IssuedToken:
        if not subject:
            raise InvalidArgument("subject", "must not be empty")
        if not tenant:
            raise InvalidArgument("tenant", "must not be empty")
        if ttl_seconds <= 0:
            raise InvalidArgument("ttl_seconds", f"must be > 0, got {ttl_seconds}")
        role_names = _role_names(roles)
        issued_at = int(time.time() if now is None else now)
        expires_at = issued_at + int(ttl_seconds)
        token_id = uuid.uuid4().hex
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": subject, "tenant": tenant,
            "roles": list(role_names), "iat": issued_at, "nbf": issued_at, "exp": expires_at,
            "jti": token_id,
        }
        token = jwt.encode(claims, self._key, algorithm=self.algorithm,  # type: ignore[arg-type]
                           headers={"kid": self.kid, "typ": "JWT"})
        return IssuedToken(token, token_id, subject, tenant, role_names, issued_at, expires_at)

    def mint(self, subject: str, tenant: str, roles: Sequence[str | Role], ttl_seconds: int = 3600,
             now: float | None = None) -> str:
        return self.issue(subject, tenant, roles, ttl_seconds, now).token


def load_signer(signing_key_path: Path | str, jwks_path: Path | str, issuer: str = DEFAULT_ISSUER,
                audience: str = DEFAULT_AUDIENCE) -> TokenSigner:
    """A signer for the key in `signing_key_path`, with the kid it has in `jwks_path`."""
    pem = Path(signing_key_path).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    mine = public_jwk(key)  # type: ignore[arg-type]
    jwks = json.loads(Path(jwks_path).read_text())
    for candidate in jwks.get("keys", []):
        if all(candidate.get(member) == mine.get(member) for member in ("kty", "crv", "x", "y")):
            return TokenSigner(pem, candidate.get("kid") or mine["kid"], issuer, audience)
    raise ValueError(f"the key in {signing_key_path} is not published in {jwks_path}")


# --- verification ---------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by a verified token."""

    subject: str
    tenant: str
    roles: frozenset[str]
    token_id: str
    expires_at: float

    def has_any(self, roles: Iterable[str | Role]) -> bool:
        wanted = {role.value if isinstance(role, Role) else role for role in roles}
        return not self.roles.isdisjoint(wanted)


@dataclass(frozen=True)
class _VerificationKey:
    algorithm: str
    key: Any


class TokenVerifier:
    """Verifies bearer tokens against a JWKS; safe to share between threads."""

    def __init__(self, jwks: Mapping[str, Any], issuer: str = DEFAULT_ISSUER,
                 audience: str = DEFAULT_AUDIENCE, leeway_seconds: float = 5,
                 is_revoked: RevocationCheck | None = None, cache_size: int = 4096,
                 clock: Callable[[], float] = time.time) -> None:
        if cache_size < 0:
            raise InvalidArgument("cache_size", f"must be >= 0, got {cache_size}")
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self._is_revoked = is_revoked
        self._cache_size = cache_size
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._keys: dict[str, _VerificationKey] = {}
        self.update_jwks(jwks)

    @classmethod
    def from_jwks_file(cls, path: Path | str, **kwargs: Any) -> TokenVerifier:
        return cls(json.loads(Path(path).read_text()), **kwargs)

    def update_jwks(self, jwks: Mapping[str, Any]) -> None:
        """Replace the trusted keys (key rotation); forgets every cached verification."""
        keys: dict[str, _VerificationKey] = {}
        for jwk in jwks.get("keys", []):
            kid, algorithm = jwk.get("kid"), _algorithm_for_jwk(jwk)
            if not kid or algorithm is None or jwk.get("use", "sig") != "sig":
                logger.warning("ignoring JWK %r: need a kid and an Ed25519 or P-256 signing key", kid)
                continue
            if jwk.get("alg", algorithm) != algorithm:
                logger.warning("ignoring JWK %r: alg %r does not fit its key type", kid, jwk.get("alg"))
                continue
            if kid in keys:
                raise ValueError(f"JWKS has two keys with kid {kid!r}")
            keys[kid] = _VerificationKey(algorithm, jwt.PyJWK(dict(jwk), algorithm).key)
        if not keys:
            raise ValueError("JWKS has no usable Ed25519 or P-256 signing key")
        with self._lock:
            self._keys = keys
            self._cache.clear()

    def set_revocation_check(self, is_revoked: RevocationCheck | None) -> None:
        self._is_revoked = is_revoked

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, token: str) -> Principal:
        if not isinstance(token, str) or not token:
            raise Unauthenticated("token is missing")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"token is too large ({len(token)} bytes, at most {MAX_TOKEN_BYTES})")
        now = self._clock()
        principal = self._cached(token, now)
        if principal is None:
            principal = self._verify_uncached(token, now)
            self._remember(token, principal)
        # Revocation is checked on every call, cached or not: revoking must bite at once.
        if self._is_revoked is not None and self._is_revoked(principal.token_id):
            raise Unauthenticated("token has been revoked")
        return principal

    def _cached(self, token: str, now: float) -> Principal | None:
        if self._cache_size == 0:
            return None
        with self._lock:
            principal = self._cache.get(token)
            if principal is None:
                return None
            if now > principal.expires_at + self.leeway_seconds:
                del self._cache[token]
                return None
            self._cache.move_to_end(token)
            return principal

    def _remember(self, token: str, principal: Principal) -> None:
        if self._cache_size == 0:
            return
        with self._lock:
            self._cache[token] = principal
            self._cache.move_to_end(token)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _verify_uncached(self, token: str, now: float) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("token is malformed: expected a signed JWT (header.payload.signature)") from None
        algorithm = header.get("alg")
        allowed = sorted({key.algorithm for key in self._keys.values()})
        if not isinstance(algorithm, str) or algorithm not in allowed:
            raise Unauthenticated(
                f"token algorithm {algorithm} is not allowed; expected {', '.join(allowed)}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id (kid) in its header")
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(f"token signed with unknown key id {kid[:64]!r}")
        if key.algorithm != algorithm:
            raise Unauthenticated(f"token algorithm {algorithm} does not match key {kid!r} ({key.algorithm})")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[key.algorithm], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"token is missing the {error.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"token audience is not {self.audience}") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"token issuer is not {self.issuer}") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(f"token signature does not verify with key {kid!r}") from None
        except jwt.DecodeError:
            raise Unauthenticated("token is malformed: its payload is not a JSON object") from None
        except jwt.InvalidTokenError as error:
            # Remaining PyJWT checks (types of sub/jti/iat...): say which, without internals.
            raise Unauthenticated(f"token is invalid: {type(error).__name__}") from None
        return self._principal(claims, now)

    def _principal(self, claims: Mapping[str, Any], now: float) -> Principal:
        # Time checks done here (not by PyJWT) so the message can say when.
        expires, not_before, issued = (_seconds_claim(claims, name) for name in ("exp", "nbf", "iat"))
        leeway = self.leeway_seconds
        if now > expires + leeway:
            raise Unauthenticated(f"token expired at {_utc(expires)}")
        if now + leeway < not_before:
            raise Unauthenticated(f"token is not valid before {_utc(not_before)}")
        if now + leeway < issued:
            raise Unauthenticated(f"token was issued in the future ({_utc(issued)})")
        subject, tenant, jti = claims.get("sub"), claims.get("tenant"), claims.get("jti")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token claim 'sub' must be a non-empty string")
        if "tenant" not in claims:
            raise Unauthenticated("token is missing the 'tenant' claim")
        if not isinstance(tenant, str) or not tenant:
            raise Unauthenticated("token claim 'tenant' must be a non-empty string")
        if not isinstance(jti, str) or not jti:
            raise Unauthenticated("token claim 'jti' must be a non-empty string")
        if "roles" not in claims:
            raise Unauthenticated("token is missing the 'roles' claim")
        roles = claims["roles"]
        if not isinstance(roles, list) or not roles or not all(isinstance(role, str) for role in roles):
            raise Unauthenticated(f"token claim 'roles' must be a non-empty list of {sorted(ROLE_NAMES)}")
        unknown = sorted(set(roles) - ROLE_NAMES)
        if unknown:
            raise Unauthenticated(f"token role {unknown[0][:32]!r} is unknown; allowed: {sorted(ROLE_NAMES)}")
        return Principal(subject, tenant, frozenset(roles), jti, expires)


def _seconds_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"token claim {name!r} must be a number (seconds since the epoch)")
    return float(value)
