"""Hypothesis strategies built from the protobuf descriptors, field by field.

`requests(descriptor)` draws a message of that type: strings (short, edge values, huge),
integers at the edges of their type, floats incl. NaN and infinities, enums incl. numbers
no enum names, bytes, repeated and map fields, nested messages (bounded depth).
`raw_bodies(descriptor)` draws bytes that do not decode as that type: garbage, truncated
encodings, and a string field carrying invalid UTF-8.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

F = FieldDescriptor
MAX_DEPTH = 3
HUGE = "A" * 70_000  # the GetDiagnosis(failure_id="A"*70000)

_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_SINT32: (-(2**31), 2**31 - 1), F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1), F.TYPE_SINT64: (-(2**63), 2**63 - 1), F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(field_type: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[field_type]
    edges = sorted({v for v in (low, high, 0, 1, -1, 2, 50, 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1,
                                2**63, 10_000, 10_001, 1_000_000) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(-3, 200).filter(
        lambda v: low <= v <= high))


def strings(known: list[str]) -> st.SearchStrategy[str]:
    """Short text, values the services know (tenants, ids), edge values and huge ones."""
    edges = ["", " ", "\x00", "a" * 64, "a" * 65, "a" * 129, "a" * 257, "a" * 513, "a" * 4097, HUGE,
             "../../etc/passwd", "*", "%", "'; DROP TABLE tenants; --", "\u202e\u0000\uffff", "名前",
             "t-" + "x" * 200, "\n\r\t", "acme/app", "main", "ci", "SOX", "GDPR"]
    return st.one_of(st.text(max_size=40), st.sampled_from(edges), st.sampled_from(known or [""]),
                     st.text(alphabet="abcdefghij-_./0123456789", min_size=1, max_size=30))


_BYTES_EDGES = [b"", b"\x00", b"\xff" * 16, b"Killed: out of memory\n", b"x" * 70_000,
                b"ERROR: npm ERR! code ELIFECYCLE\n" * 100, b"<testsuite><testcase name='a'><failure/></testcase>",
                b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY b SYSTEM 'file:///etc/passwd'>]><a>&b;</a>"]


def _scalar(field: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t == F.TYPE_STRING and field.name == "tenant_id" and known:
        # mostly the caller's own tenant, so the call gets past the tenant check and deeper
        return st.one_of(st.just(known[0]), st.just(known[0]), strings(known))
    if t == F.TYPE_STRING:
        return strings(known)
    if t == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from(_BYTES_EDGES))
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e300, -1e300, float("nan"), float("inf"),
                                          float("-inf"), 5e-324]),
                         st.floats(allow_nan=True, allow_infinity=True, width=32 if t == F.TYPE_FLOAT else 64))
    if t == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]))
    return _ints(t)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, known: list[str], depth: int) -> Any:
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):  # each field set or left unset
            continue
        if field.type == F.TYPE_MESSAGE and depth >= MAX_DEPTH:
            continue
        if _is_map(field):
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalar(key_field, known))
                target = getattr(message, field.name)
                if value_field.type == F.TYPE_MESSAGE:
                    target[key].CopyFrom(draw(_message(value_field.message_type, known, depth + 1)))
                else:
                    target[key] = draw(_scalar(value_field, known))
            continue
        if _is_repeated(field):
            count = draw(st.one_of(st.integers(0, 3), st.sampled_from([0, 200])))
            target = getattr(message, field.name)
            for _ in range(count if field.type != F.TYPE_MESSAGE else min(count, 3 if depth else 40)):
                if field.type == F.TYPE_MESSAGE:
                    target.add().CopyFrom(draw(_message(field.message_type, known, depth + 1)))
                else:
                    target.append(draw(_scalar(field, known)))
            continue
        if field.type == F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_message(field.message_type, known, depth + 1)))
        else:
            setattr(message, field.name, draw(_scalar(field, known)))
    return message


def requests(descriptor: Descriptor, known: list[str]) -> st.SearchStrategy[Any]:
    return _message(descriptor, known, 0)


# -- bodies that do not decode -----------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string_fields(descriptor: Descriptor) -> list[int]:
    return [f.number for f in descriptor.fields if f.type == F.TYPE_STRING]


def raw_bodies(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bodies that are not valid encodings of `descriptor`'s message."""
    fixed = [b"\xff\xff", b"\xff" * 64, b"\x0a\xff", b"\x08", b"\x0a\x05ab", b"\x80" * 11,
             b"\x0f\x00", b"\x07", b"\x0b\x0c" * 3]
    choices: list[st.SearchStrategy[bytes]] = [st.sampled_from(fixed),
                                               st.binary(min_size=1, max_size=64).map(lambda b: b"\xff" + b)]
    numbers = _string_fields(descriptor)
    if numbers:
        bad = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80", b"\xf8\x88\x80\x80\x80"]

        def invalid_utf8(pair: tuple[int, bytes]) -> bytes:
            number, payload = pair
            return _varint(number << 3 | 2) + _varint(len(payload)) + payload

        choices.append(st.tuples(st.sampled_from(numbers), st.sampled_from(bad)).map(invalid_utf8))
    return st.one_of(*choices)


def oversized(descriptor: Descriptor, string_size: int = 1 << 20, bytes_size: int = 9 << 19) -> Any:
    """One message of this type with every top-level string at 1 MiB and bytes at 4.5 MiB."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if field.type not in (F.TYPE_STRING, F.TYPE_BYTES) or field.containing_oneof is not None and \
                message.WhichOneof(field.containing_oneof.name):
            continue
        value: Any = "A" * string_size if field.type == F.TYPE_STRING else b"A" * bytes_size
        if _is_repeated(field):
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message
