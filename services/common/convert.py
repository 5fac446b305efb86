"""Small conversions servicers share: times and enums between protobuf and domain."""

from __future__ import annotations

import enum
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument

E = TypeVar("E", bound=enum.IntEnum)


def timestamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def seconds(value: Timestamp) -> float:
    return value.seconds + value.nanos / 1e9


def enum_field(kind: type[E], value: int, field: str, *, allow_unspecified: bool = False) -> E:
    """Domain enum from a proto enum number, refusing unknown and (by default) UNSPECIFIED."""
    try:
        member = kind(value)
    except ValueError:
        names = ", ".join(m.name for m in kind if m.value != 0)
        raise InvalidArgument(field, f"unknown value {value}; expected one of {names}") from None
    if member.value == 0 and not allow_unspecified:
        names = ", ".join(m.name for m in kind if m.value != 0)
        raise InvalidArgument(field, f"is required; expected one of {names}")
    return member
