"""The built-in local executor: commands (argv, no shell), simulation, escalation."""

from __future__ import annotations

import sys

import pytest

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus, ProviderUnavailable
from services.coordinator.executors.local import LocalExecutor
from tests.fakes.clock import FakeClock


def request(kind: ActionKind = ActionKind.RETRY, key: str = "k1", **parameters: str) -> ActionRequest:
    return ActionRequest("a1", key, "acme", kind, Provider.PROVIDER_LOCAL, {"job_name": "unit tests",
                                                                            **parameters})


def test_simulated_retry_succeeds_and_runs_once_per_idempotency_key() -> None:
    executor = LocalExecutor(clock=FakeClock())
    first = executor.execute(request())
    second = executor.execute(request())
    assert first.status is ActionStatus.SUCCEEDED
    assert "simulated RETRY of unit tests" in first.detail
    assert second.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert len(executor.records) == 1


def test_simulation_follows_the_parameters() -> None:
    executor = LocalExecutor(clock=FakeClock())
    assert executor.execute(request(key="f", simulate="fail")).status is ActionStatus.FAILED
    with pytest.raises(ProviderUnavailable, match="simulated outage"):
        executor.execute(request(key="u", simulate="unavailable"))
    # a failure is not remembered as done: the same key may be tried again
    assert executor.execute(request(key="f")).status is ActionStatus.SUCCEEDED


def test_escalate_records_a_notification_and_calls_nothing() -> None:
    calls: list[object] = []
    executor = LocalExecutor(commands={ActionKind.ESCALATE: ["/bin/false"]}, clock=FakeClock(),
                             run=lambda *a, **k: calls.append(a))  # type: ignore[arg-type,return-value]
    result = executor.execute(request(ActionKind.ESCALATE, summary="compile error in main"))
    assert result.status is ActionStatus.SUCCEEDED
    assert calls == []
    assert [n.summary for n in executor.notifications] == ["compile error in main"]


def test_configured_command_runs_as_argv_with_parameters() -> None:
    script = "import sys, os; print(sys.argv[1], os.environ['HG_PARAM_JOB_NAME'])"
    executor = LocalExecutor(commands={ActionKind.RETRY: [sys.executable, "-c", script,
                                                          "{job_name}; rm -rf /"]},
                             timeout_seconds=20)
    result = executor.execute(request())
    assert result.status is ActionStatus.SUCCEEDED, result.detail
    assert "unit tests; rm -rf / unit tests" in result.detail  # the ; stayed an argument, no shell
    assert executor.records[0].argv[-1] == "unit tests; rm -rf /"


def test_failing_command_reports_exit_code_and_stderr() -> None:
    script = "import sys; sys.stderr.write('runner busy'); sys.exit(3)"
    executor = LocalExecutor(commands={ActionKind.RETRY: [sys.executable, "-c", script]}, timeout_seconds=20)
    result = executor.execute(request())
    assert result.status is ActionStatus.FAILED
    assert "exited with 3: runner busy" in result.detail


def test_command_naming_a_missing_parameter_fails_clearly() -> None:
    executor = LocalExecutor(commands={ActionKind.CLEAR_CACHE: ["clear", "{cache_key}"]})
    result = executor.execute(request(ActionKind.CLEAR_CACHE))
    assert result.status is ActionStatus.FAILED
    assert "{cache_key}" in result.detail


def test_command_time_out_and_missing_program() -> None:
    slow = LocalExecutor(commands={ActionKind.RETRY: [sys.executable, "-c", "import time; time.sleep(5)"]},
                         timeout_seconds=0.3)
    assert "did not finish within 0.3 s" in slow.execute(request()).detail
    missing = LocalExecutor(commands={ActionKind.RETRY: ["/nonexistent/retry-tool"]})
    assert "was not found" in missing.execute(request()).detail


def test_journal_remembers_successes_across_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal = str(tmp_path / "local.jsonl")
    first = LocalExecutor(clock=FakeClock(), journal_path=journal)
    assert first.execute(request(key="k-restart")).status is ActionStatus.SUCCEEDED
    assert first.execute(request(key="k-fails", simulate="fail")).status is ActionStatus.FAILED
    with open(journal, "a", encoding="utf-8") as f:
        f.write('{"idempotency_key": "torn')  # a crash in the middle of a write

    restarted = LocalExecutor(clock=FakeClock(), journal_path=journal)
    again = restarted.execute(request(key="k-restart"))
    assert again.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert "simulated RETRY of unit tests" in again.detail
    assert restarted.execute(request(key="k-fails")).status is ActionStatus.SUCCEEDED

    third = LocalExecutor(clock=FakeClock(), journal_path=journal)
    assert third.execute(request(key="k-fails")).status is ActionStatus.SKIPPED_ALREADY_DONE
