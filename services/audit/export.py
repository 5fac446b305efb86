"""The export format, and the checks an offline verifier runs on it.

An export is one JSON object (UTF-8):

    {
      "format": "healing-guard/audit-export/v1",
      "checkpoint": "<C2SP signed note: the signed tree head the proofs lead to>",
      "public_keys": ["<name>+<key id hex>+<base64(0x01 || Ed25519 public key)>", ...],
      "entries": [
        {
          "index": 5,                     leaf index in the log
          "kind": "ACTION", "tenant_id": "acme", "subject": "failure/42",
          "time_us": 1718000000000000,    microseconds since the epoch, UTC
          "payload_encoding": "plain",    or "aes-256-gcm" (payload is nonce||ciphertext||tag)
          "payload": "<base64 of the stored payload bytes>",
          "payload_digest": "<hex SHA-256 of the stored payload bytes>",
          "erased": false,                true once the subject's data key was destroyed
          "leaf_hash": "<hex>",
          "inclusion_proof": ["<hex>", ...]   RFC 9162 PATH(index, tree size of the checkpoint)
        }, ...
      ],
      "consistency": {"old_size": 10, "proof": ["<hex>", ...]}    optional, for monitors
    }

Verifying an export means: the checkpoint is signed by a trusted key; each entry's
canonical bytes (see `services.audit.entry`) hash to its leaf hash; its payload digest
matches its payload; and its inclusion proof leads from the leaf hash to the
checkpoint's root. The embedded public keys are a convenience: only keys the verifier
got some other way (`--keys`) make the check mean more than self-consistency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from services.audit import merkle
from services.audit.checkpoint import SignedTreeHead, VerificationError, VerifierKey, verify_signed_tree_head
from services.audit.entry import PAYLOAD_ENCODINGS, Entry, EntryKind
from services.common.errors import InvalidArgument

EXPORT_FORMAT = "healing-guard/audit-export/v1"
MONITOR_STATE_FORMAT = "healing-guard/audit-monitor-state/v1"


@dataclass(frozen=True)
class ExportedEntry:
    index: int
    entry: Entry
    erased: bool
    leaf_hash: bytes
    inclusion_proof: list[bytes]


def build_export(
    head: SignedTreeHead,
    entries: Sequence[ExportedEntry],
    public_keys: Sequence[VerifierKey],
    consistency: tuple[int, list[bytes]] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "checkpoint": head.note,
        "public_keys": [key.encode() for key in public_keys],
        "entries": [
            {
                "index": item.index,
                "kind": item.entry.kind.value,
                "tenant_id": item.entry.tenant_id,
                "subject": item.entry.subject,
                "time_us": item.entry.time_us,
                "payload_encoding": item.entry.payload_encoding,
                "payload": base64.b64encode(item.entry.payload).decode(),
                "payload_digest": item.entry.payload_digest.hex(),
                "erased": item.erased,
                "leaf_hash": item.leaf_hash.hex(),
                "inclusion_proof": [h.hex() for h in item.inclusion_proof],
            }
            for item in entries
        ],
    }
    if consistency is not None:
        doc["consistency"] = {"old_size": consistency[0], "proof": [h.hex() for h in consistency[1]]}
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False)


def dumps_within(doc: dict[str, Any], max_bytes: int) -> tuple[str, int]:
    """`doc` as JSON of at most `max_bytes` UTF-8 bytes, keeping the longest prefix of its entries.

    Returns the text and how many entries it kept. Every entry carries its own inclusion
    proof to the same checkpoint, so a prefix verifies on its own.
    """
    text = dumps(doc)
    entries = doc["entries"]
    if len(text.encode()) <= max_bytes or not entries:
        return text, len(entries)
    base = len(dumps({**doc, "entries": []}).encode())
    used, kept = base, 0
    for item in entries:
        one = dumps(item)
        # Nested two levels deep, each of its lines is indented by two more spaces; ",\n" between items.
        used += len(one.encode()) + 2 * (one.count("\n") + 1) + 2
        if used > max_bytes:
            break
        kept += 1
    kept = max(kept, 1)  # one entry (payload <= 64 KiB) always goes: every export makes progress
    while True:
        text = dumps({**doc, "entries": entries[:kept]})
        if len(text.encode()) <= max_bytes or kept == 1:
            return text, kept
        kept -= 1


_EXPORT_FIELDS = {"format", "checkpoint", "public_keys", "entries", "consistency"}
_ENTRY_FIELDS = {
    "index", "kind", "tenant_id", "subject", "time_us", "payload_encoding", "payload",
    "payload_digest", "erased", "leaf_hash", "inclusion_proof",
}


@dataclass(frozen=True)
class ExportVerification:
    head: SignedTreeHead
    entries_verified: int


def _hex(value: Any, what: str, size: int | None = merkle.HASH_SIZE) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise VerificationError(f"{what} is not valid hex") from None
    if raw.hex() != value:
        raise VerificationError(f"{what} is not lowercase hex")  # one spelling per value
    if size is not None and len(raw) != size:
        raise VerificationError(f"{what} is {len(raw)} bytes, expected {size}")
    return raw


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VerificationError(f"{what} is not a non-negative integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is not a string")
    return value


def parse_keys(texts: Any) -> list[VerifierKey]:
    if not isinstance(texts, list):
        raise VerificationError("public keys must be a list of '<name>+<id>+<key>' strings")
    keys = []
    for text in texts:
        try:
            keys.append(VerifierKey.parse(_str(text, "public key")))
        except InvalidArgument as err:
            raise VerificationError(err.description) from None
    return keys


def entry_from_json(item: Any, position: int) -> tuple[int, Entry, bytes, list[bytes]]:
    where = f"entries[{position}]"
    if not isinstance(item, dict):
        raise VerificationError(f"{where} is not an object")
    if set(item) != _ENTRY_FIELDS:
        raise VerificationError(f"{where} must have exactly the fields {sorted(_ENTRY_FIELDS)}")
    try:
        kind = EntryKind(cast(str, item.get("kind")))  # any other value: ValueError below
    except ValueError:
        raise VerificationError(f"{where}.kind {item.get('kind')!r} is not a known kind") from None
    encoding = _str(item.get("payload_encoding"), f"{where}.payload_encoding")
    if encoding not in PAYLOAD_ENCODINGS:
        raise VerificationError(f"{where}.payload_encoding {encoding!r} is not one of {PAYLOAD_ENCODINGS}")
    payload_text = _str(item.get("payload"), f"{where}.payload")
    try:
        payload = base64.b64decode(payload_text, validate=True)
    except binascii.Error:
        raise VerificationError(f"{where}.payload is not valid base64") from None
    if base64.b64encode(payload).decode() != payload_text:
        raise VerificationError(f"{where}.payload is not canonical base64")
    entry = Entry(
        kind=kind,
        tenant_id=_str(item.get("tenant_id"), f"{where}.tenant_id"),
        subject=_str(item.get("subject"), f"{where}.subject"),
        time_us=_int(item.get("time_us"), f"{where}.time_us"),
        payload_encoding=encoding,
        payload=payload,
    )
    if hashlib.sha256(payload).digest() != _hex(item.get("payload_digest"), f"{where}.payload_digest"):
        raise VerificationError(f"{where} (index {item.get('index')}): payload digest does not match its payload")
    proof_items = item.get("inclusion_proof")
    if not isinstance(proof_items, list):
        raise VerificationError(f"{where}.inclusion_proof is not a list")
    proof = [_hex(h, f"{where}.inclusion_proof[{i}]") for i, h in enumerate(proof_items)]
    return _int(item.get("index"), f"{where}.index"), entry, _hex(item.get("leaf_hash"), f"{where}.leaf_hash"), proof


def verify_export(doc: Any, trusted_keys: Sequence[VerifierKey] | None = None) -> ExportVerification:
    """Check everything an export claims; raises VerificationError naming what failed."""
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise VerificationError(f"not an audit export (format must be {EXPORT_FORMAT!r})")
    unknown = set(doc) - _EXPORT_FIELDS
    if unknown:
        raise VerificationError(f"export has unknown fields {sorted(unknown)}")
    keys = list(trusted_keys) if trusted_keys is not None else parse_keys(doc.get("public_keys"))
    head = verify_signed_tree_head(_str(doc.get("checkpoint"), "checkpoint"), keys)
    size, root = head.checkpoint.tree_size, head.checkpoint.root_hash
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise VerificationError("entries is not a list")
    for position, item in enumerate(entries):
        index, entry, claimed_leaf, proof = entry_from_json(item, position)
        leaf = entry.leaf_hash()
        if leaf != claimed_leaf:
            raise VerificationError(f"entry {index}: its fields do not hash to its leaf hash")
        if index >= size:
            raise VerificationError(f"entry {index} is beyond the signed tree head (size {size})")
        if not merkle.verify_inclusion(leaf, index, size, proof, root):
            raise VerificationError(f"entry {index}: inclusion proof does not lead to the signed root (size {size})")
    return ExportVerification(head, len(entries))


def monitor_state(head: SignedTreeHead) -> dict[str, Any]:
    return {
        "format": MONITOR_STATE_FORMAT,
        "origin": head.checkpoint.origin,
        "tree_size": head.checkpoint.tree_size,
        "root_hash": base64.b64encode(head.checkpoint.root_hash).decode(),
        "checkpoint": head.note,
    }


def advance_monitor(
    state: dict[str, Any] | None, doc: Any, trusted_keys: Sequence[VerifierKey]
) -> tuple[dict[str, Any], str]:
    """Prove the export's new head consistent with the last head the monitor saw.

    Returns the new state and one line describing what was proved; raises
    VerificationError when the log forked, rolled back or the proof is wrong.
    The first head a monitor sees is trusted on its signature alone.
    """
    if not isinstance(doc, dict):
        raise VerificationError("not an audit export")
    head = verify_signed_tree_head(_str(doc.get("checkpoint"), "checkpoint"), trusted_keys)
    new_size, new_root = head.checkpoint.tree_size, head.checkpoint.root_hash
    if state is None:
        return monitor_state(head), f"first tree head seen: size {new_size}, trusted on its signature"
    if state.get("format") != MONITOR_STATE_FORMAT:
        raise VerificationError(f"monitor state is not {MONITOR_STATE_FORMAT!r}")
    if state.get("origin") != head.checkpoint.origin:
        raise VerificationError(
            f"new head is for origin {head.checkpoint.origin!r}, the state for {state.get('origin')!r}"
        )
    old_size = _int(state.get("tree_size"), "state tree_size")
    try:
        old_root = base64.b64decode(_str(state.get("root_hash"), "state root_hash"), validate=True)
    except binascii.Error:
        raise VerificationError("monitor state root_hash is not valid base64") from None
    if new_size < old_size:
        raise VerificationError(f"log rolled back: new head has size {new_size}, already saw size {old_size}")
    if new_size == old_size:
        if new_root != old_root:
            raise VerificationError(f"log forked: two different roots for size {new_size}")
        return monitor_state(head), f"tree head unchanged at size {new_size}"
    if old_size == 0:
        # Nothing can be proved from the empty tree (RFC 9162): like a first head.
        return monitor_state(head), f"first non-empty tree head: size {new_size}, trusted on its signature"
    consistency = doc.get("consistency")
    if not isinstance(consistency, dict):
        raise VerificationError(f"export carries no consistency proof from size {old_size}")
    if _int(consistency.get("old_size"), "consistency.old_size") != old_size:
        raise VerificationError(
            f"consistency proof starts at size {consistency.get('old_size')}, the monitor last saw size {old_size}"
        )
    items = consistency.get("proof")
    if not isinstance(items, list):
        raise VerificationError("consistency.proof is not a list")
    proof = [_hex(h, f"consistency.proof[{i}]") for i, h in enumerate(items)]
    if not merkle.verify_consistency(old_size, new_size, old_root, new_root, proof):
        raise VerificationError(f"consistency proof from size {old_size} to {new_size} does not verify")
    return monitor_state(head), f"size {old_size} -> {new_size} proved consistent"
