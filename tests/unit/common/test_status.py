from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status  # noqa: F401  (the library the mapping relies on)

from services.common import errors
from services.common.status import to_grpc_status


def _details(status):  # type: ignore[no-untyped-def]
    (key, value), = [m for m in status.trailing_metadata if m[0] == "grpc-status-details-bin"]
    decoded = status_pb2.Status.FromString(value)
    return decoded


def test_invalid_argument_names_the_field_in_bad_request():
    status = to_grpc_status(errors.InvalidArgument("report.job.attempt", "must be >= 1, got -3"))
    decoded = _details(status)
    assert decoded.code == code_pb2.INVALID_ARGUMENT
    assert "report.job.attempt: must be >= 1, got -3" == decoded.message
    bad = error_details_pb2.BadRequest()
    decoded.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "report.job.attempt"


def test_quota_exceeded_carries_retry_info():
    status = to_grpc_status(errors.QuotaExceeded("acme/failures", "spent", retry_after_seconds=12.5))
    decoded = _details(status)
    assert decoded.code == code_pb2.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert decoded.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 12 and retry.retry_delay.nanos == 500_000_000


def test_not_leader_says_where_the_leader_is():
    decoded = _details(to_grpc_status(errors.NotLeader("coordinator-2", "127.0.0.1:7001")))
    assert decoded.code == code_pb2.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    decoded.details[0].Unpack(info)
    assert info.reason == "NOT_LEADER" and info.metadata["leader_address"] == "127.0.0.1:7001"


def test_each_error_kind_has_its_own_code():
    cases = {
        errors.NotFound("plan", "p1"): code_pb2.NOT_FOUND,
        errors.AlreadyExists("tenant", "acme"): code_pb2.ALREADY_EXISTS,
        errors.Unauthenticated("no token"): code_pb2.UNAUTHENTICATED,
        errors.PermissionDenied("viewer"): code_pb2.PERMISSION_DENIED,
        errors.Unavailable("etcd down"): code_pb2.UNAVAILABLE,
    }
    for error, code in cases.items():
        assert _details(to_grpc_status(error)).code == code, error
