"""Signed notes and checkpoints: the Go known-answer vector, rotation, and tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.audit import merkle
from services.audit.checkpoint import (
    Checkpoint,
    KeyRing,
    SigningKey,
    VerificationError,
    VerifierKey,
    open_note,
    parse_checkpoint_body,
    sign_checkpoint,
    sign_note,
    verify_signed_tree_head,
)
from services.common.errors import InvalidArgument

GO = json.loads((Path(__file__).parent / "vectors" / "signed_note_go.json").read_text())


def _go_signer() -> SigningKey:
    _, _, name, _, encoded = GO["signer_key"].split("+", 4)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1
    return SigningKey.from_seed(name, raw[1:])


def test_go_vector_signs_byte_for_byte() -> None:
    key = _go_signer()
    assert key.verifier.encode() == GO["verifier_key"]
    assert sign_note(GO["text"], key) == GO["note"]


def test_go_vector_opens_and_rejects_tampering() -> None:
    verifier = VerifierKey.parse(GO["verifier_key"])
    assert open_note(GO["note"], [verifier]).text == GO["text"]
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(GO["note"].replace("cryptography", "cryptographY"), [verifier])
    with pytest.raises(VerificationError, match="trusted key"):
        open_note(GO["note"], [VerifierKey.parse(GO["other_verifier_key"])])


def test_verifier_key_with_wrong_id_is_rejected() -> None:
    name, _, material = GO["verifier_key"].split("+", 2)
    with pytest.raises(InvalidArgument, match="key id"):
        VerifierKey.parse(f"{name}+00000000+{material}")


def test_checkpoint_round_trip_and_format() -> None:
    key = SigningKey.from_seed("log.example/a", bytes(32))
    root = merkle.root_hash([b"a", b"b", b"c"])
    head = sign_checkpoint(Checkpoint("log.example/a", 3, root, 1_700_000_000_123), key)
    text, _, signature_line = head.note.partition("\n\n")
    assert text.split("\n") == ["log.example/a", "3", base64.b64encode(root).decode(), "timestamp 1700000000123"]
    assert signature_line.startswith("\u2014 log.example/a ")
    parsed = verify_signed_tree_head(head.note, [key.verifier], origin="log.example/a")
    assert parsed.checkpoint == head.checkpoint
    with pytest.raises(VerificationError, match="origin"):
        verify_signed_tree_head(head.note, [key.verifier], origin="other.example/log")


def test_rotation_old_heads_verify_with_old_key() -> None:
    ring = KeyRing([SigningKey.from_seed("log.example/a", b"\x01" * 32)])
    old_head = sign_checkpoint(Checkpoint("log.example/a", 1, merkle.leaf_hash(b"x"), 1), ring.current)
    ring.rotate(SigningKey.from_seed("log.example/a", b"\x02" * 32))
    new_head = sign_checkpoint(Checkpoint("log.example/a", 2, merkle.root_hash([b"x", b"y"]), 2), ring.current)
    assert old_head.key_id != new_head.key_id
    for head in (old_head, new_head):
        verify_signed_tree_head(head.note, ring.verifiers())
    with pytest.raises(VerificationError):
        verify_signed_tree_head(old_head.note, [ring.current.verifier])


@pytest.mark.parametrize(
    "body",
    [
        "o\n3\n",  # too few lines
        "o\n03\n" + base64.b64encode(bytes(32)).decode() + "\n",  # leading zero
        "o\n3\n" + base64.b64encode(bytes(31)).decode() + "\n",  # short root
        "o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_malformed_bodies_are_rejected(body: str) -> None:
    with pytest.raises(VerificationError):
        parse_checkpoint_body(body)
