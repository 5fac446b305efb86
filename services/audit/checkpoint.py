"""Signed tree heads as C2SP checkpoints in C2SP signed notes, signed with Ed25519.

Checkpoint body (c2sp.org/tlog-checkpoint), each line ending in a newline:

    <origin>                      e.g. "healing-guard.example/audit"
    <tree size>                   ASCII decimal, no leading zeros
    <root hash>                   standard base64 of the 32-byte RFC 9162 root
    timestamp <unix ms>           our one extension line: when the head was signed

Signed note (c2sp.org/signed-note): the body, a blank line, then one line per
signature: "— <key name> <base64(key id (4 bytes, big-endian) || Ed25519 signature)>",
where key id = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4] and the
signature is over the body bytes. Verifier keys are written the way
golang.org/x/mod/sumdb/note writes them: "<name>+<key id hex>+<base64(0x01 || public key)>",
so the Go and Rust note tooling can check our heads too.

Rotation: a `KeyRing` signs with its newest key and verifies with all of them, so a
head signed before a rotation still verifies with the old public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit.merkle import HASH_SIZE
from services.common.errors import InvalidArgument

ED25519_SIGNATURE_TYPE = 0x01
EM_DASH = "\u2014"
TIMESTAMP_EXTENSION = "timestamp "
MAX_SIGNATURES = 16


class VerificationError(Exception):
    """A checkpoint, proof or export did not verify; the message says what failed."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp_ms: int

    def body(self) -> str:
        return (
            f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"
            f"{TIMESTAMP_EXTENSION}{self.timestamp_ms}\n"
        )


@dataclass(frozen=True)
class SignedTreeHead:
    checkpoint: Checkpoint
    key_name: str
    key_id: bytes  # 4 bytes
    signature: bytes  # the raw 64-byte Ed25519 signature
    note: str  # the whole signed note, as published

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key).digest()[:4]


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise InvalidArgument("key_name", f"key name {name!r} must be non-empty without spaces or '+'")


@dataclass(frozen=True)
class VerifierKey:
    name: str
    public_key: bytes  # 32 raw bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def encode(self) -> str:
        encoded_key = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded_key}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3:
            raise InvalidArgument("verifier_key", f"verifier key {text!r} is not '<name>+<hex id>+<base64 key>'")
        name, hex_id, encoded = parts
        _check_key_name(name)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise InvalidArgument("verifier_key", f"verifier key {name!r} has invalid base64") from None
        if len(raw) != 33 or raw[0] != ED25519_SIGNATURE_TYPE:
            raise InvalidArgument("verifier_key", f"verifier key {name!r} is not an Ed25519 key (type 0x01, 32 bytes)")
        key = cls(name, raw[1:])
        if key.key_id.hex() != hex_id.lower():
            raise InvalidArgument(
                "verifier_key", f"verifier key {name!r} has key id {hex_id}, expected {key.key_id.hex()}"
            )
        return key


@dataclass(frozen=True)
class SigningKey:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        _check_key_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> SigningKey:
        _check_key_name(name)
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def verifier(self) -> VerifierKey:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return VerifierKey(self.name, raw)


def sign_note(text: str, key: SigningKey) -> str:
    """A C2SP signed note: the text (ending in a newline), a blank line, one signature line."""
    if not text.endswith("\n"):
        raise InvalidArgument("text", "note text must end with a newline")
    signature = key.private_key.sign(text.encode("utf-8"))
    line = f"{EM_DASH} {key.name} {base64.b64encode(key.verifier.key_id + signature).decode()}\n"
    return text + "\n" + line


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey) -> SignedTreeHead:
    _check_checkpoint(checkpoint)
    note = sign_note(checkpoint.body(), key)
    raw = base64.b64decode(note.rsplit(" ", 1)[1])
    return SignedTreeHead(checkpoint, key.name, raw[:4], raw[4:], note)


def _check_checkpoint(checkpoint: Checkpoint) -> None:
    if not checkpoint.origin or any(c.isspace() for c in checkpoint.origin):
        raise InvalidArgument("origin", f"origin {checkpoint.origin!r} must be one non-empty word")
    if checkpoint.tree_size < 0:
        raise InvalidArgument("tree_size", f"tree_size {checkpoint.tree_size} must be >= 0")
    if len(checkpoint.root_hash) != HASH_SIZE:
        raise InvalidArgument("root_hash", f"root_hash must be {HASH_SIZE} bytes, got {len(checkpoint.root_hash)}")


_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


def parse_checkpoint_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(line == "" for line in lines[:-1]):
        raise VerificationError("checkpoint body must be at least three non-empty lines, each ending in a newline")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not _SIZE.fullmatch(size_text):
        raise VerificationError(f"checkpoint tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise VerificationError("checkpoint root hash is not valid base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_text:
        raise VerificationError(f"checkpoint root hash must be {HASH_SIZE} bytes in canonical base64")
    timestamps = [line for line in lines[3:-1] if line.startswith(TIMESTAMP_EXTENSION)]
    timestamp_ms = 0
    if timestamps:
        value = timestamps[0][len(TIMESTAMP_EXTENSION) :]
        if not _SIZE.fullmatch(value):
            raise VerificationError(f"checkpoint timestamp {value!r} is not a decimal number")
        timestamp_ms = int(value)
    return Checkpoint(origin, int(size_text), root, timestamp_ms)


@dataclass(frozen=True)
class OpenedNote:
    text: str
    key_name: str
    key_id: bytes
    signature: bytes


def open_note(note: str, keys: Iterable[VerifierKey]) -> OpenedNote:
    """Check a signed note: at least one signature by a known key, and none by a known key bad.

    Signatures by unknown keys are ignored, as signed-note requires. Raises
    VerificationError saying what failed.
    """
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise VerificationError("signed note contains control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("signed note has no blank line between text and signatures")
    text, signature_block = note[: split + 1], note[split + 2 :]
    if not signature_block.endswith("\n"):
        raise VerificationError("signed note must end with a newline")
    sig_lines = signature_block[:-1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise VerificationError(f"signed note has {len(sig_lines)} signatures; at most {MAX_SIGNATURES} are read")
    known = {(k.name, k.key_id): k for k in keys}
    opened: OpenedNote | None = None
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise VerificationError(f"malformed signature line {line[:60]!r}")
        _, name, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise VerificationError(f"signature by {name!r} is not valid base64") from None
        if len(raw) < 5:
            raise VerificationError(f"signature by {name!r} is too short")
        kid, signature = raw[:4], raw[4:]
        key = known.get((name, kid))
        if key is None:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, text.encode("utf-8"))
        except InvalidSignature:
            raise VerificationError(f"signature by {name} (key id {kid.hex()}) does not verify") from None
        if opened is None:
            opened = OpenedNote(text, name, kid, signature)
    if opened is None:
        raise VerificationError("no signature on the note is by a trusted key")
    return opened


def verify_signed_tree_head(
    note: str, keys: Iterable[VerifierKey], origin: str | None = None
) -> SignedTreeHead:
    """Open a signed checkpoint and parse its body; raises VerificationError saying what failed."""
    opened = open_note(note, keys)
    checkpoint = parse_checkpoint_body(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    return SignedTreeHead(checkpoint, opened.key_name, opened.key_id, opened.signature, note)


class KeyRing:
    """Signing keys in rotation order: the last one signs, all of them verify."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise InvalidArgument("keys", "a key ring needs at least one signing key")
        self.keys = list(keys)

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self, key: SigningKey) -> None:
        self.keys.append(key)

    def verifiers(self) -> list[VerifierKey]:
        return [k.verifier for k in self.keys]


def signature_of(head: SignedTreeHead) -> bytes:
    """The note signature bytes as they appear on the line: key id || signature."""
    return head.key_id + head.signature
