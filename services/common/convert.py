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


# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def timestamp_field(value: Timestamp, field: str) -> float:
    """Seconds since the epoch from a request's Timestamp, refusing what the type does not allow.

    The wire carries any int64 of seconds; beyond year 9999 Python's datetime (and any
    stored time a later read turns into a date) fails, which would answer INTERNAL.
    """
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            field, f"seconds must be between {MIN_TIMESTAMP_SECONDS} (year 1) and {MAX_TIMESTAMP_SECONDS} "
                   f"(year 9999), got {value.seconds}")
    if not 0 <= value.nanos <= 999_999_999:
        raise InvalidArgument(field, f"nanos must be between 0 and 999999999, got {value.nanos}")
    return seconds(value)


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
