"""Heals as load: worker threads report the sample failures (examples/), each with a run
id of its own, through `start_heal`, and remember what was acknowledged. A call refused
as UNAVAILABLE or DEADLINE_EXCEEDED is retried with the same report (the same job
attempt, so the same failure): a client that retries must not get the work done twice.

`check_complete` then reads every acknowledged heal back: its diagnosis, its plan's
actions (all present and finished), and the local executor's ledger (each action carried
out at most once).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from deploy.heal_examples import EXAMPLES, failure_report
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from tests.reliability.harness import Harness, start_heal

RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
TERMINAL = {common_pb2.ACTION_STATE_SUCCEEDED, common_pb2.ACTION_STATE_FAILED, common_pb2.ACTION_STATE_SKIPPED,
            common_pb2.ACTION_STATE_CANCELLED}
# The local executor appends "<action id> <kind>" to the ledger each time it carries out an
# action (LOCAL_EXECUTOR_COMMAND_<KIND>, a real command run by the coordinator).
LEDGER_KINDS = ("RETRY", "RETRY_ON_FRESH_RUNNER", "CLEAR_CACHE", "RAISE_RESOURCE_LIMIT", "QUARANTINE_TEST",
                "ROLLBACK")


def ledger_env(ledger: Path) -> dict[str, str]:
    script = f'printf "%s %s\\n" "$1" "$2" >> {ledger}'
    return {f"LOCAL_EXECUTOR_COMMAND_{kind}": json.dumps(["/bin/sh", "-c", script, "hg-ledger", "{action_id}",
                                                          "{kind}"])
            for kind in LEDGER_KINDS}


def ledger_counts(ledger: Path) -> Counter[str]:
    try:
        lines = ledger.read_text().splitlines()
    except OSError:
        return Counter()
    return Counter(line.split()[0] for line in lines if line.strip())


@dataclass
class Ack:
    run_id: str
    failure_id: str
    plan_id: str
    action_ids: list[str]
    warnings: list[str]
    tries: int


@dataclass
class HealLoad:
    harness: Harness
    tenant: str
    workers: int = 2
    rate_per_s: float = 0.0  # heals started per second by all workers together (0: back to back)
    acknowledged: list[Ack] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    attempts: int = 0
    gave_up: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.examples = json.loads((EXAMPLES / "manifest.json").read_text())
        self.logs = {e["file"]: (EXAMPLES / e["file"]).read_bytes() for e in self.examples}
        self.token = self.harness.mint("reliability-load", self.tenant, ["operator", "viewer"])

    def start(self) -> HealLoad:
        self.started_at = time.monotonic()
        self._slot = 0
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, args=(number,), daemon=True, name=f"heal-load-{number}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _work(self, number: int) -> None:
        client = self.harness.stubs(self.token)
        count = 0
        while not self._stop.is_set():
            example = self.examples[(number * 7 + count) % len(self.examples)]
            count += 1
            report = failure_report(example)
            report.tenant_id = self.tenant
            report.job.run_id = f"rel-{uuid.uuid4().hex[:12]}"
            if self.rate_per_s:  # wait for the next slot of the schedule shared by the workers
                with self._lock:
                    at = self.started_at + self._slot / self.rate_per_s
                    self._slot += 1
                if self._stop.wait(max(0.0, at - time.monotonic())):
                    return
            self._heal(client, report, self.logs[example["file"]])

    def _heal(self, client: Any, report: detector_pb2.FailureReport, log: bytes) -> None:
        for tries in range(1, 31):
            started = time.monotonic()
            with self._lock:
                self.attempts += 1
            try:
                answer = start_heal(client, report, log, timeout=20)
            except grpc.RpcError as error:
                with self._lock:
                    self.errors[error.code().name] += 1
                if error.code() not in RETRIED:
                    return
                time.sleep(0.2)
                continue
            with self._lock:
                self.latencies_ms.append((time.monotonic() - started) * 1000)
                self.acknowledged.append(Ack(report.job.run_id, answer.diagnosis.failure_id, answer.plan.plan_id,
                                             list(answer.action_ids), list(answer.warnings), tries))
            return
        with self._lock:
            self.gave_up.append(report.job.run_id)


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)


def check_complete(harness: Harness, load: HealLoad, ledger: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Read back every acknowledged heal (three at a time); what is missing, unfinished or
    done twice, and what was acknowledged with a warning instead of a whole heal."""
    client = harness.stubs(load.token)
    deadline = time.monotonic() + timeout
    findings: dict[str, Any] = {"lost": [], "unfinished": {}, "twice": [], "without_plan": [], "without_actions": []}
    lock = threading.Lock()

    def note(kind: str, item: Any, key: str | None = None) -> None:
        with lock:
            if key is None:
                findings[kind].append(item)
            else:
                findings[kind][key] = item

    def check(ack: Ack) -> None:
        try:
            diagnosis = _retrying(lambda: client.detector.GetDiagnosis(
                detector_pb2.GetDiagnosisRequest(failure_id=ack.failure_id), metadata=client.metadata, timeout=10),
                deadline)
            if diagnosis.failure_id != ack.failure_id:
                note("lost", f"{ack.run_id}: diagnosis {ack.failure_id} reads back as {diagnosis.failure_id}")
        except grpc.RpcError as error:
            note("lost", f"{ack.run_id}: diagnosis {ack.failure_id}: {error.code().name} {error.details()}")
            return
        if not ack.plan_id:
            note("without_plan", f"{ack.run_id}: {'; '.join(ack.warnings)[:200]}")
            return
        if not ack.action_ids:
            note("without_actions", f"{ack.run_id}: plan {ack.plan_id}: {'; '.join(ack.warnings)[:200]}")
        while True:
            try:
                actions = list(_retrying(lambda: client.coordinator.ListActions(
                    coordinator_pb2.ListActionsRequest(failure_id=ack.failure_id, limit=100),
                    metadata=client.metadata, timeout=10), deadline).actions)
            except grpc.RpcError as error:
                note("lost", f"{ack.run_id}: actions of {ack.failure_id}: {error.code().name} {error.details()}")
                return
            ids = {a.action_id for a in actions}
            missing = [a for a in ack.action_ids if a not in ids]
            if missing:
                note("lost", f"{ack.run_id}: acknowledged actions missing: {missing}")
                return
            plans = {a.plan_id for a in actions}
            if len(plans) > 1:
                note("twice", f"{ack.run_id}: {len(plans)} plans acted on for one failure: {sorted(plans)}")
            pending = [a for a in actions if a.state not in TERMINAL]
            if not pending:
                return
            if time.monotonic() > deadline:
                note("unfinished", ", ".join(f"{a.action_id} {common_pb2.ActionState.Name(a.state)}"
                                             for a in pending), ack.run_id)
                return
            time.sleep(0.5)

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="read-back") as pool:
        list(pool.map(check, load.acknowledged))
    # Only this load's actions: the ledger is shared by every case that ran before it.
    own = {action for ack in load.acknowledged for action in ack.action_ids}
    counts = {action: n for action, n in ledger_counts(ledger).items() if action in own}
    twice = findings["twice"] + [f"action {action} carried out {n} times" for action, n in counts.items() if n > 1]
    warnings = Counter(w[:100] for ack in load.acknowledged for w in ack.warnings)
    return {"acknowledged": len(load.acknowledged), "lost": findings["lost"], "unfinished": findings["unfinished"],
            "done_twice": twice, "warnings": dict(warnings.most_common(10)),
            "without_plan": findings["without_plan"], "without_actions": findings["without_actions"],
            "actions_carried_out": sum(counts.values()),
            "retried_acknowledgements": sum(1 for a in load.acknowledged if a.tries > 1),
            "gave_up": load.gave_up}


def _retrying(call: Any, deadline: float) -> Any:
    """UNAVAILABLE and DEADLINE_EXCEEDED retried, and the gateway's rate limit waited out."""
    pause = 0.3
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in RETRIED | {grpc.StatusCode.RESOURCE_EXHAUSTED} or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
