"""Length limits on the identifiers a request names: ids, keys, tokens and names.

Checked once for every RPC of every service at the edge (the Guard calls
`check_identifier_lengths` on each decoded request, after authentication), so an
id of 70,000 characters is refused before it reaches a store, a log line or an
error message. Free text (logs, payloads, expressions, descriptions) keeps the
limits its own service documents.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.errors import InvalidArgument

# Characters. The detector's job fields (repository, pipeline, job, run_id) have
# allowed 512 since the start; no identifier the mesh mints comes near it.
MAX_IDENTIFIER = 512

_SUFFIXES = ("_id", "_ids", "_key", "_token", "_name", "_sha", "_revision")
_NAMES = frozenset({
    "key", "subject", "repository", "pipeline", "job", "branch", "runner", "kind", "plan", "standard", "roles",
    "pool", "service",
})


def is_identifier(field_name: str) -> bool:
    return field_name in _NAMES or field_name.endswith(_SUFFIXES)


def check_identifier_lengths(message: Message, prefix: str = "") -> None:
    """Raise InvalidArgument naming the first identifier field longer than MAX_IDENTIFIER."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                _check_map(field, value, path)
            elif field.is_repeated:
                for i, item in enumerate(value):
                    check_identifier_lengths(item, f"{path}[{i}].")
            else:
                check_identifier_lengths(value, f"{path}.")
        elif field.type == FieldDescriptor.TYPE_STRING and is_identifier(field.name):
            if field.is_repeated:
                for i, item in enumerate(value):
                    _check(f"{path}[{i}]", item)
            else:
                _check(path, value)


def _check_map(field: FieldDescriptor, entries: object, path: str) -> None:
    value_field = field.message_type.fields_by_name["value"]
    for key, value in entries.items():  # type: ignore[attr-defined]
        if isinstance(key, str):
            _check(f"{path} key", key)
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            check_identifier_lengths(value, f"{path}[{key!r:.40}].")


def _check(path: str, value: str) -> None:
    if len(value) > MAX_IDENTIFIER:
        raise InvalidArgument(path, f"must be at most {MAX_IDENTIFIER} characters, got {len(value)}")
