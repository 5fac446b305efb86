"""The one table that turns domain errors into gRPC status codes with rich details.

Details follow google.rpc (error_details.proto) so any gRPC client can read them:
BadRequest names the field, RetryInfo says when to retry, ErrorInfo carries the
leader's address for a follower's FAILED_PRECONDITION.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors

DOMAIN = "healing-guard.dev"

# Messages and every text in the details echo request values; they travel as HTTP/2
# trailers (grpc-message, grpc-status-details-bin), where an unbounded value overruns
# the peer's header limits and breaks the connection for other callers too. Each is
# clipped here, the one place every refusal passes through.
MAX_TEXT_BYTES = 512
ELLIPSIS = "\u2026"


def clip(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else its longest prefix that fits with an ellipsis."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    room = limit - len(ELLIPSIS.encode())
    return raw[:room].decode("utf-8", "ignore") + ELLIPSIS


def to_grpc_status(error: errors.HealingGuardError) -> grpc.Status:
    code, details = _code_and_details(error)
    status = status_pb2.Status(code=code, message=clip(error.message))
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return rpc_status.to_status(status)


def _code_and_details(error: errors.HealingGuardError) -> tuple[int, list]:
    match error:
        case errors.InvalidArgument():
            violations = [error_details_pb2.BadRequest.FieldViolation(field=clip(field), description=clip(text))
                          for field, text in error.violations]
            return code_pb2.INVALID_ARGUMENT, [error_details_pb2.BadRequest(field_violations=violations)]
        case errors.NotFound():
            info = error_details_pb2.ResourceInfo(resource_type=clip(error.resource_type),
                                                  resource_name=clip(error.name))
            return code_pb2.NOT_FOUND, [info]
        case errors.AlreadyExists():
            info = error_details_pb2.ResourceInfo(resource_type=clip(error.resource_type),
                                                  resource_name=clip(error.name))
            return code_pb2.ALREADY_EXISTS, [info]
        case errors.NotLeader():
            info = error_details_pb2.ErrorInfo(
                reason="NOT_LEADER",
                domain=DOMAIN,
                metadata={"leader_id": clip(error.leader_id), "leader_address": clip(error.leader_address)},
            )
            return code_pb2.FAILED_PRECONDITION, [info]
        case errors.FailedPrecondition():
            return code_pb2.FAILED_PRECONDITION, [error_details_pb2.ErrorInfo(reason=clip(error.reason), domain=DOMAIN)]
        case errors.Unauthenticated():
            return code_pb2.UNAUTHENTICATED, []
        case errors.PermissionDenied():
            return code_pb2.PERMISSION_DENIED, []
        case errors.QuotaExceeded():
            retry = error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(
                    seconds=int(error.retry_after_seconds),
                    nanos=int((error.retry_after_seconds % 1) * 1e9),
                )
            )
            failure = error_details_pb2.QuotaFailure(
                violations=[error_details_pb2.QuotaFailure.Violation(subject=clip(error.subject),
                                                                     description=clip(error.message))]
            )
            return code_pb2.RESOURCE_EXHAUSTED, [retry, failure]
        case errors.StorageFull():
            info = error_details_pb2.ErrorInfo(reason="DISK_FULL", domain=DOMAIN, metadata={"path": clip(error.path)})
            return code_pb2.RESOURCE_EXHAUSTED, [info]
        case errors.Unavailable():
            return code_pb2.UNAVAILABLE, []
    return code_pb2.INTERNAL, []
