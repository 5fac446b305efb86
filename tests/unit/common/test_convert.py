"""Request timestamps are refused outside google.protobuf.Timestamp's range, naming the field."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.convert import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS, timestamp_field
from services.common.errors import InvalidArgument


@pytest.mark.parametrize("value", [Timestamp(seconds=2**62), Timestamp(seconds=-(2**62)),
                                   Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1), Timestamp(seconds=1, nanos=-1)])
def test_out_of_range_timestamps_are_refused_naming_the_field_and_range(value: Timestamp) -> None:
    with pytest.raises(InvalidArgument, match="must be between") as raised:
        timestamp_field(value, "period_start")
    assert raised.value.field == "period_start"


def test_the_whole_documented_range_converts() -> None:
    assert timestamp_field(Timestamp(seconds=MIN_TIMESTAMP_SECONDS), "at") == MIN_TIMESTAMP_SECONDS
    assert timestamp_field(Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999), "at") > MAX_TIMESTAMP_SECONDS
    assert timestamp_field(Timestamp(seconds=1_700_000_000, nanos=500_000_000), "at") == 1_700_000_000.5
