"""The closed sets of the domain, as plain Python enums.

Names and numbers mirror `healing_guard.common.v1` exactly (a unit test checks it),
so domain code can speak of failure classes and actions without importing
generated protobuf code, and servicers convert with `FailureClass(proto_value)`.
"""

from __future__ import annotations

import enum


class FailureClass(enum.IntEnum):
    FAILURE_CLASS_UNSPECIFIED = 0
    FLAKY_TEST = 1
    TEST_FAILURE = 2
    COMPILE_ERROR = 3
    LINT = 4
    DEPENDENCY_FETCH = 5
    NETWORK = 6
    OUT_OF_MEMORY = 7
    DISK_FULL = 8
    TIMEOUT = 9
    INFRASTRUCTURE = 10
    CONFIGURATION = 11
    PERMISSION = 12
    UNKNOWN = 13


# Classes that are a genuine break in the code: retrying them wastes runners and
# hides the break, so they are escalated, never retried.
GENUINE_BREAKS: frozenset[FailureClass] = frozenset(
    {FailureClass.TEST_FAILURE, FailureClass.COMPILE_ERROR, FailureClass.LINT}
)


class ActionKind(enum.IntEnum):
    ACTION_KIND_UNSPECIFIED = 0
    RETRY = 1
    RETRY_ON_FRESH_RUNNER = 2
    CLEAR_CACHE = 3
    RAISE_RESOURCE_LIMIT = 4
    QUARANTINE_TEST = 5
    ROLLBACK = 6
    ESCALATE = 7


class Provider(enum.IntEnum):
    PROVIDER_UNSPECIFIED = 0
    PROVIDER_GITHUB_ACTIONS = 1
    PROVIDER_GITLAB = 2
    PROVIDER_JENKINS = 3
    PROVIDER_GENERIC = 4
    PROVIDER_LOCAL = 5


class Role(enum.Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    SERVICE = "service"
