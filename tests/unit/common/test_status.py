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


def _texts(decoded: status_pb2.Status) -> list[str]:
    texts = [decoded.message]
    for packed in decoded.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ResourceInfo, error_details_pb2.QuotaFailure,
                     error_details_pb2.ErrorInfo):
            detail = kind()
            if packed.Unpack(detail):
                texts += [v for _, v in detail.ListFields() if isinstance(v, str)]
                for violation in getattr(detail, "field_violations", []) or getattr(detail, "violations", []):
                    texts += [v for _, v in violation.ListFields() if isinstance(v, str)]
    return texts


def test_echoed_request_values_are_clipped_in_the_message_and_every_detail():
    huge = "A" * 70_000
    for error in (
        errors.InvalidArgument("failure_id", f"{huge!r} is not a failure id"),
        errors.NotFound("diagnosis", huge),
        errors.AlreadyExists("tenant", huge),
        errors.QuotaExceeded(huge, f"quota of {huge} spent", retry_after_seconds=1),
        errors.FailedPrecondition(huge, reason=huge),
        errors.PermissionDenied(f"tenant_id {huge!r} does not match your token's tenant 'acme'"),
    ):
        status = to_grpc_status(error)
        decoded = _details(status)
        assert len(status.details.encode()) <= 512
        for text in _texts(decoded):
            assert len(text.encode()) <= 512, (type(error).__name__, len(text))
        assert decoded.message.endswith("\u2026")
        assert len(status.trailing_metadata[0][1]) < 4096  # far below any peer's header limit


def test_clipping_keeps_short_messages_and_never_splits_a_character():
    from services.common.status import clip

    assert clip("tree_size 90 is beyond the log (size 64)") == "tree_size 90 is beyond the log (size 64)"
    clipped = clip("é" * 600)
    assert len(clipped.encode()) <= 512 and clipped.endswith("\u2026") and set(clipped[:-1]) == {"é"}


def test_several_refused_fields_are_one_bad_request_with_one_violation_each():
    error = errors.InvalidArgument.of([("report.job.repository", "must not be empty"),
                                       ("report.job.run_id", "must not be empty"), ("log", "is empty")])
    decoded = _details(to_grpc_status(error))
    assert decoded.code == code_pb2.INVALID_ARGUMENT
    assert decoded.message == "report.job.repository: must not be empty; report.job.run_id: must not be empty; " \
                              "log: is empty"
    bad = error_details_pb2.BadRequest()
    decoded.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == error.violations


def test_violations_collect_every_refusal_then_raise_once():
    problems = errors.Violations()
    assert problems.check(lambda: 3) == 3
    problems.check(lambda: (_ for _ in ()).throw(errors.InvalidArgument("a", "bad")))
    problems.add("b", "worse")
    try:
        problems.raise_if_any()
    except errors.InvalidArgument as error:
        assert error.violations == [("a", "bad"), ("b", "worse")] and error.field == "a"
    else:
        raise AssertionError("nothing raised")
    errors.Violations().raise_if_any()  # nothing found: nothing raised


def test_violations_keep_the_first_refusal_of_each_field():
    problems = errors.Violations()
    problems.add("report.job.provider", "unknown value 42")
    problems.check(lambda: (_ for _ in ()).throw(errors.InvalidArgument("report.job.provider", "is required")))
    assert problems.found == [("report.job.provider", "unknown value 42")]
