"""The one error hierarchy of Healing Guard.

Domain code raises these; it never imports gRPC. One interceptor in
`services.common.server` turns each into a gRPC status with rich details
(see `services.common.status`). Messages say what was expected and what was got,
and name the field, so a caller can fix the request without reading our code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class HealingGuardError(Exception):
    """Base of every error the services answer with on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(HealingGuardError):
    """A request field is malformed or out of range (INVALID_ARGUMENT + BadRequest).

    `violations` lists every field refused, one BadRequest field violation each; `field`
    and `description` are the first. `InvalidArgument.of` refuses several at once."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message
        self.violations: list[tuple[str, str]] = [(field, message)]

    @classmethod
    def of(cls, violations: Sequence[tuple[str, str]]) -> InvalidArgument:
        """One refusal naming every (field, description), in order; at least one."""
        if not violations:
            raise ValueError("InvalidArgument.of needs at least one violation")
        error = cls(*violations[0])
        error.violations = list(violations)
        error.message = "; ".join(f"{field}: {description}" for field, description in violations)
        error.args = (error.message,)
        return error


class Violations:
    """Collects every field a request gets wrong, so that one refusal names them all
    rather than one per attempt."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        """One violation per field: the first found for a field stands."""
        if all(field != seen for seen, _ in self.found):
            self.found.append((field, description))

    def check(self, validate: Callable[[], T]) -> T | None:
        """Run one validation; keep what it refuses and go on. Its value, or None if refused."""
        try:
            return validate()
        except InvalidArgument as error:
            for field, description in error.violations:
                self.add(field, description)
            return None

    def raise_if_any(self) -> None:
        if self.found:
            raise InvalidArgument.of(self.found)


class NotFound(HealingGuardError):
    """The named resource does not exist (NOT_FOUND + ResourceInfo)."""

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name


class AlreadyExists(HealingGuardError):
    """Creating something that is already there (ALREADY_EXISTS)."""

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource_type} {name!r} already exists")
        self.resource_type = resource_type
        self.name = name


class FailedPrecondition(HealingGuardError):
    """The system is not in a state that allows this request (FAILED_PRECONDITION)."""

    def __init__(self, message: str, reason: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message)
        self.reason = reason


class NotLeader(FailedPrecondition):
    """Leader-only work asked of a follower; carries where the leader is."""

    def __init__(self, leader_id: str, leader_address: str) -> None:
        where = f"{leader_id} at {leader_address}" if leader_address else "not elected yet"
        super().__init__(f"this replica is not the leader; leader is {where}", reason="NOT_LEADER")
        self.leader_id = leader_id
        self.leader_address = leader_address


class Unauthenticated(HealingGuardError):
    """No credentials, or credentials that do not verify (UNAUTHENTICATED)."""


class PermissionDenied(HealingGuardError):
    """Authenticated, but this principal may not do this (PERMISSION_DENIED)."""


class QuotaExceeded(HealingGuardError):
    """A quota is spent (RESOURCE_EXHAUSTED + RetryInfo + QuotaFailure)."""

    def __init__(self, subject: str, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.subject = subject
        self.retry_after_seconds = retry_after_seconds


class StorageFull(HealingGuardError):
    """The disk under a store is full: the write was not stored (RESOURCE_EXHAUSTED + ErrorInfo DISK_FULL).

    Raised by `services.common.sqlite.Database`; the service answers NOT_SERVING to health
    checks until the disk has room again.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class Unavailable(HealingGuardError):
    """A dependency is down; the call may succeed if retried (UNAVAILABLE)."""
