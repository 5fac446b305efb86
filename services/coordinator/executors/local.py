"""The built-in local executor, for the demo and for pipelines with no provider API.

For each action kind it either runs a configured command or simulates the action.

- Command: an argv list (never a shell), e.g. ["./ci/retry.sh", "{job_name}"]. Each
  element may name request parameters in braces, plus {action_id}, {tenant} and {kind}.
  Exit 0 is SUCCEEDED; any other exit, a missing program or a time-out is FAILED with
  the reason. The parameters are also in the environment as HG_PARAM_<NAME>.
- Simulation (no command for that kind), deterministic: the action succeeds, unless
  parameters["simulate"] is "fail" (FAILED) or "unavailable" (raises
  ProviderUnavailable, as a provider that is down would). RETRY_ON_FRESH_RUNNER steps
  drain and restore runners in memory; parameters["simulate_runner_health"] =
  "unhealthy" makes the restore step's health check fail.
- ESCALATE never calls anything: it records a notification for a human.

Every execution is recorded (`records`, `notifications`). A request whose idempotency
key already succeeded is not run again (SKIPPED_ALREADY_DONE). That memory lasts as
long as the executor object, or across restarts when `journal_path` names a file: each
success is appended to it (one JSON line, flushed and fsynced) before `execute` returns.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import (
    ActionRequest,
    ActionResult,
    ActionStatus,
    ProviderUnavailable,
    failed,
)
from services.coordinator.executors.fresh_runner import execute_fresh_runner_step

log = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 300


@dataclass(frozen=True)
class LocalRecord:
    """What the local executor did for one request."""

    action_id: str
    idempotency_key: str
    kind: ActionKind
    status: ActionStatus
    detail: str
    at: float
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notification:
    """An escalation: a human should look at this."""

    action_id: str
    tenant: str
    summary: str
    parameters: Mapping[str, str]
    at: float


class _StrictParameters(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


@dataclass
class LocalExecutor:
    commands: Mapping[ActionKind, Sequence[str]] = field(default_factory=dict)
    timeout_seconds: float = 300.0
    clock: Callable[[], float] = time.time
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    journal_path: str | None = None
    provider: Provider = field(default=Provider.PROVIDER_LOCAL, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[LocalRecord] = []
        self._notifications: list[Notification] = []
        self._succeeded: dict[str, ActionResult] = {}
        self._out_of_rotation: set[str] = set()
        if self.journal_path and os.path.exists(self.journal_path):
            with open(self.journal_path, encoding="utf-8") as journal:
                for line in journal:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a crash mid-write: that action was not confirmed
                    self._succeeded[entry["idempotency_key"]] = ActionResult(
                        ActionStatus.SUCCEEDED, entry["detail"], entry.get("provider_reference", ""))
            with open(self.journal_path, "rb+") as journal:
                journal.seek(0, os.SEEK_END)
                if journal.tell() > 0:
                    journal.seek(-1, os.SEEK_END)
                    if journal.read(1) != b"\n":
                        journal.write(b"\n")  # end a torn line so the next entry starts clean

    def _journal(self, request: ActionRequest, result: ActionResult) -> None:
        if not self.journal_path:
            return
        entry = {"idempotency_key": request.idempotency_key, "action_id": request.action_id,
                 "detail": result.detail, "provider_reference": result.provider_reference}
        with open(self.journal_path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    name = "local executor"

    @property
    def records(self) -> list[LocalRecord]:
        with self._lock:
            return list(self._records)

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def supports(self, kind: ActionKind) -> bool:
        return kind is not ActionKind.ACTION_KIND_UNSPECIFIED

    def execute(self, request: ActionRequest) -> ActionResult:
        with self._lock:
            earlier = self._succeeded.get(request.idempotency_key)
        if earlier is not None:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE, f"already done: {earlier.detail}",
                                provider_reference=earlier.provider_reference)
        argv: tuple[str, ...] = ()
        if not self.supports(request.kind):
            result = failed("the action has no kind; the planner must name one")
        elif request.kind is ActionKind.ESCALATE:
            result = self._escalate(request)
        elif request.kind in self.commands:
            result, argv = self._run_command(request, self.commands[request.kind])
        elif request.kind is ActionKind.RETRY_ON_FRESH_RUNNER and "step" in request.parameters:
            self._simulated_outage(request)
            result = execute_fresh_runner_step(self, request, clock=self.clock)
        else:
            result = self._simulate(request)
        with self._lock:
            self._records.append(LocalRecord(request.action_id, request.idempotency_key, request.kind,
                                             result.status, result.detail, self.clock(), argv))
            if result.done:
                self._succeeded[request.idempotency_key] = result
                self._journal(request, result)
        log.info("local executor: %s %s -> %s: %s", request.kind.name, request.action_id,
                 result.status.value, result.detail)
        return result

    # -- the three ways of executing -------------------------------------------------

    def _escalate(self, request: ActionRequest) -> ActionResult:
        summary = request.parameters.get("summary") or (
            f"{request.tenant}: "
            f"{request.parameters.get('repository') or request.parameters.get('job_name') or 'a job'}"
            " needs a human (escalated by the healing plan)")
        with self._lock:
            self._notifications.append(Notification(request.action_id, request.tenant, summary,
                                                    dict(request.parameters), self.clock()))
        return ActionResult(ActionStatus.SUCCEEDED, f"recorded a notification for a human: {summary}",
                            provider_reference=f"notification:{request.action_id}")

    def _run_command(self, request: ActionRequest, template: Sequence[str]) -> tuple[ActionResult,
                                                                                     tuple[str, ...]]:
        values = _StrictParameters(request.parameters)
        values.update(action_id=request.action_id, tenant=request.tenant, kind=request.kind.name)
        try:
            argv = tuple(part.format_map(values) for part in template)
        except KeyError as exc:
            return failed(f"the local command for {request.kind.name} names {{{exc.args[0]}}}, which the "
                          f"action does not carry; its parameters are {sorted(request.parameters)}"), ()
        except (ValueError, IndexError) as exc:
            return failed(f"the local command for {request.kind.name} is not a valid template ({exc})"), ()
        env = {**os.environ, **{f"HG_PARAM_{k.upper()}": v for k, v in request.parameters.items()},
               "HG_ACTION_ID": request.action_id, "HG_TENANT": request.tenant}
        try:
            completed = self.run(list(argv), capture_output=True, text=True, timeout=self.timeout_seconds,
                                 env=env, check=False, shell=False)
        except FileNotFoundError:
            return failed(f"the local command {argv[0]!r} for {request.kind.name} was not found; "
                          "check the executor's command configuration"), argv
        except subprocess.TimeoutExpired:
            return failed(f"the local command {argv[0]!r} did not finish within {self.timeout_seconds:g} s "
                          "and was stopped"), argv
        if completed.returncode == 0:
            tail = (completed.stdout or "").strip()[-OUTPUT_TAIL_CHARS:]
            return ActionResult(ActionStatus.SUCCEEDED,
                                f"ran {argv[0]!r}: exit 0" + (f": {tail}" if tail else ""),
                                provider_reference=" ".join(argv)), argv
        tail = ((completed.stderr or "") or (completed.stdout or "")).strip()[-OUTPUT_TAIL_CHARS:]
        return failed(f"the local command {argv[0]!r} exited with {completed.returncode}"
                      + (f": {tail}" if tail else "")), argv

    def _simulated_outage(self, request: ActionRequest) -> None:
        if request.parameters.get("simulate") == "unavailable":
            raise ProviderUnavailable(f"simulated outage for {request.kind.name} (parameters['simulate'])",
                                      retry_after_seconds=1.0)

    def _simulate(self, request: ActionRequest) -> ActionResult:
        self._simulated_outage(request)
        if request.parameters.get("simulate") == "fail":
            return failed(f"simulated failure of {request.kind.name} (parameters['simulate'] is 'fail')")
        what = request.parameters.get("job_name") or request.parameters.get("job_id") or \
            request.parameters.get("run_id") or request.parameters.get("test_name") or "the job"
        return ActionResult(ActionStatus.SUCCEEDED, f"simulated {request.kind.name} of {what}",
                            provider_reference=f"local:{request.action_id}")

    # -- RunnerPool, in memory -------------------------------------------------------

    def _runner(self, request: ActionRequest) -> str:
        return request.parameters.get("runner_name") or request.parameters.get("runner_id") or "local-runner"

    def describe_runner(self, request: ActionRequest) -> str:
        return f"local runner {self._runner(request)}"

    def runner_in_rotation(self, request: ActionRequest) -> bool:
        with self._lock:
            return self._runner(request) not in self._out_of_rotation

    def take_out_of_rotation(self, request: ActionRequest) -> None:
        with self._lock:
            self._out_of_rotation.add(self._runner(request))

    def put_back_into_rotation(self, request: ActionRequest) -> None:
        with self._lock:
            self._out_of_rotation.discard(self._runner(request))

    def runner_health(self, request: ActionRequest) -> tuple[bool, str]:
        healthy = request.parameters.get("simulate_runner_health", "healthy") != "unhealthy"
        return healthy, "simulated health " + ("healthy" if healthy else "unhealthy")

    def rerun(self, request: ActionRequest) -> ActionResult:
        return self._simulate(replace(request, kind=ActionKind.RETRY))

    def runners_out_of_rotation(self) -> set[str]:
        with self._lock:
            return set(self._out_of_rotation)


def parse_command(text: str, variable: str) -> list[str]:
    """An argv list from its JSON form, e.g. '["./retry.sh", "{job_name}"]'."""
    import json

    from services.common.errors import InvalidArgument

    try:
        value: Any = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(variable,
                              f'must be a JSON list of strings such as ["./retry.sh", "{{job_name}}"], '
                                        f"got {text!r}")
    return value
