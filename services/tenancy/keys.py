"""Token signing keys: a ring with one current key and an overlap window on rotation.

Rotation makes a new Ed25519 key current at once, and keeps the previous key in the
published JWKS until `overlap_seconds` have passed, so tokens signed just before the
rotation keep verifying everywhere until they expire (set the overlap to at least
the longest token lifetime). After the overlap the old key leaves the JWKS and its
tokens stop verifying. No gRPC, no SQL: the ring is persisted by the store, with
private keys encrypted under the platform's envelope data key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.tokens import TokenSigner, public_jwk

MAX_OVERLAP_SECONDS = 30 * 86_400


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes
    created_at: float
    retire_at: float = 0.0  # 0: not retiring; else leaves the JWKS at this time

    def published(self, now: float) -> bool:
        return self.retire_at == 0.0 or now < self.retire_at

    def public_jwk(self) -> dict[str, str]:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        return {**public_jwk(key), "kid": self.kid}  # type: ignore[arg-type]


def new_signing_key(now: float) -> SigningKey:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(public_jwk(key)["kid"], pem, now)


def key_from_pem(pem: bytes, kid: str, now: float) -> SigningKey:
    serialization.load_pem_private_key(pem, password=None)  # fails loudly on a bad file
    return SigningKey(kid, pem, now)


class KeyRing:
    """The current signing key and those still published; newest last."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = sorted(keys, key=lambda k: k.created_at)

    @property
    def current(self) -> SigningKey:
        active = [k for k in self.keys if k.retire_at == 0.0]
        if not active:
            raise FailedPrecondition(
                "no current signing key; tenancy cannot issue tokens", reason="NO_SIGNING_KEY"
            )
        return active[-1]

    def signer(self, issuer: str, audience: str) -> TokenSigner:
        current = self.current
        return TokenSigner(current.private_pem, current.kid, issuer, audience)

    def rotate(self, now: float, overlap_seconds: float) -> tuple[SigningKey, list[SigningKey]]:
        """Make a new current key; earlier ones retire after the overlap. Returns (new, changed)."""
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise InvalidArgument(
                "overlap_seconds", f"must be between 0 and {MAX_OVERLAP_SECONDS}, got {overlap_seconds}"
            )
        fresh = new_signing_key(now)
        changed = [replace(k, retire_at=now + overlap_seconds) for k in self.keys if k.retire_at == 0.0]
        by_kid = {k.kid: k for k in self.keys}
        by_kid.update({k.kid: k for k in changed})
        by_kid[fresh.kid] = fresh
        self.keys = sorted(by_kid.values(), key=lambda k: k.created_at)
        return fresh, [*changed, fresh]

    def jwks(self, now: float) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.public_jwk() for k in self.keys if k.published(now)]}

    def due_for_rotation(self, now: float, max_age_seconds: float) -> bool:
        return max_age_seconds > 0 and now - self.current.created_at >= max_age_seconds
