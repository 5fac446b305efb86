"""The main job, end to end through the gateway: heal each sample failure in
examples/ (Coordinator.HealFailure, StreamHealFailure for large logs), and show its
diagnosis, plan, the action taken, the outcome, and the audit entries with an
inclusion proof verified on this side (no trust in the server).

    make demo                      # brings the mesh up, then runs this
    python -m deploy.heal_examples [--only FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from deploy.client import MeshClient, MeshConnection
from healing_guard.audit.v1 import audit_pb2
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from services.audit.merkle import verify_inclusion

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
UNARY_LOG_LIMIT = 4 * 1024 * 1024
CHUNK = 256 * 1024
OUTCOME_TIMEOUT_S = 60.0
WIDTH = 125  # printed lines are wrapped at word boundaries to this width, never cut

PROVIDERS = {
    "github_actions": common_pb2.PROVIDER_GITHUB_ACTIONS, "gitlab": common_pb2.PROVIDER_GITLAB,
    "jenkins": common_pb2.PROVIDER_JENKINS, "generic": common_pb2.PROVIDER_GENERIC,
    "local": common_pb2.PROVIDER_LOCAL,
}


@dataclass
class HealReport:
    file: str
    expected_class: str
    failure_id: str = ""
    failure_class: str = ""
    confidence: float = 0.0
    evidence: list[str] = field(default_factory=list)
    # The log line the diagnosis rests on, as the log shows it (redacted), and its 1-based
    # number; the first evidence line when the detector names none (decisive_from says which).
    decisive: str = ""
    decisive_line: int = 0
    decisive_from: str = ""  # "detector", "first evidence line" or "" (nothing quoted)
    step: str = ""  # the failed step, e.g. "Run npm test (exit 1) at line 52"; "" when the log shows none
    hint: str = ""
    redactions: int = 0
    plan_id: str = ""
    plan: list[str] = field(default_factory=list)
    rationale: str = ""
    actions: list[dict[str, str]] = field(default_factory=list)
    audit_entries: list[str] = field(default_factory=list)
    audit_verified: bool = False
    trace_id: str = ""
    error: str = ""
    resumed: bool = False  # an earlier call (an earlier `make demo`) had healed this job attempt


def failure_report(example: dict) -> detector_pb2.FailureReport:
    job = common_pb2.JobRef(
        provider=PROVIDERS[example["provider"]], repository=example["repository"], pipeline=example["pipeline"],
        job=example["job"], run_id=str(example["run_id"]), attempt=int(example.get("attempt", 1)),
        commit_sha=example["commit"], branch=example.get("branch", "main"), runner=example.get("runner", ""),
    )
    junit = (EXAMPLES / example["junit"]).read_bytes() if example.get("junit") else b""
    return detector_pb2.FailureReport(job=job, exit_code=int(example.get("exit_code", 1)),
                                      duration_seconds=float(example.get("duration_seconds", 0)), junit_xml=junit)


def heal_failure(client: MeshClient, example: dict, log: bytes) -> coordinator_pb2.HealFailureResponse:
    return send_heal(client, failure_report(example), log)


def send_heal(client: MeshClient, report: detector_pb2.FailureReport, log: bytes,
              progress: Callable[[int, int], None] | None = None) -> coordinator_pb2.HealFailureResponse:
    """HealFailure for a log up to 4 MiB, StreamHealFailure in chunks above (progress(sent, total) per chunk)."""
    if len(log) <= UNARY_LOG_LIMIT:
        return client.coordinator.HealFailure(coordinator_pb2.HealFailureRequest(report=report, log=log),
                                              metadata=client.metadata, timeout=30)

    def chunks() -> Iterator[coordinator_pb2.StreamHealFailureRequest]:
        yield coordinator_pb2.StreamHealFailureRequest(report=report)
        for start in range(0, len(log), CHUNK):
            yield coordinator_pb2.StreamHealFailureRequest(log_chunk=log[start:start + CHUNK])
            if progress is not None:
                progress(min(start + CHUNK, len(log)), len(log))

    return client.coordinator.StreamHealFailure(chunks(), metadata=client.metadata, timeout=120)


def wait_for_actions(client: MeshClient, plan_id: str, timeout: float = OUTCOME_TIMEOUT_S) -> list:
    """Poll (bounded) until every action of the plan is in a terminal state."""
    terminal = {common_pb2.ACTION_STATE_SUCCEEDED, common_pb2.ACTION_STATE_FAILED, common_pb2.ACTION_STATE_SKIPPED,
                common_pb2.ACTION_STATE_CANCELLED}
    deadline = time.monotonic() + timeout
    actions: list = []
    while time.monotonic() < deadline:
        actions = list(client.coordinator.ListActions(coordinator_pb2.ListActionsRequest(plan_id=plan_id),
                                                      metadata=client.metadata, timeout=10).actions)
        if actions and all(a.state in terminal for a in actions):
            return actions
        time.sleep(0.2)
    states = ", ".join(common_pb2.ActionState.Name(a.state) for a in actions)
    raise TimeoutError(f"plan {plan_id} not finished within {timeout:.0f} s (states: {states or 'none'})")


def verify_audit(
    client: MeshClient, failure_id: str, expect_kinds: set[str], timeout: float = 10.0
) -> tuple[list, bool]:
    """The failure's audit entries, and whether the newest is provably in the signed tree."""
    deadline = time.monotonic() + timeout
    entries: list = []
    while time.monotonic() < deadline:
        entries = list(client.audit.ListEntries(audit_pb2.ListEntriesRequest(subject=failure_id, limit=100),
                                                metadata=client.metadata, timeout=10).entries)
        if expect_kinds <= {e.kind for e in entries}:
            break
        time.sleep(0.2)
    if not entries:
        return entries, False
    head = client.audit.GetSignedTreeHead(audit_pb2.GetSignedTreeHeadRequest(), metadata=client.metadata, timeout=10)
    newest = entries[-1]
    proof = client.audit.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(index=newest.index, tree_size=head.tree_size),
        metadata=client.metadata, timeout=10)
    verified = verify_inclusion(newest.leaf_hash, newest.index, head.tree_size, list(proof.hashes), head.root_hash)
    return entries, verified


def describe_step(step: common_pb2.FailedStep) -> str:
    """"Run npm test (exit 1) at line 52": the step as the provider names it (with its
    command when the name does not show it), the exit code when the log gives one, and
    the line that reports the failure."""
    what = step.name or step.command or "(unnamed step)"
    if step.name and step.command and step.command not in step.name:
        what = f"{step.name}: {step.command}"
    if step.HasField("exit_code"):
        what += f" (exit {step.exit_code})"
    if step.end_line:
        what += f" at line {step.end_line}"
        if 0 < step.start_line < step.end_line:
            what += f", started at line {step.start_line}"
    return what


def read_diagnosis(report: HealReport, diagnosis: common_pb2.Diagnosis) -> None:
    report.failure_id = diagnosis.failure_id
    report.failure_class = common_pb2.FailureClass.Name(diagnosis.failure_class)
    report.confidence = round(diagnosis.confidence, 3)
    report.evidence = [f"{line.line}: {line.text}" for line in diagnosis.evidence]
    if diagnosis.HasField("decisive_line"):
        decisive, report.decisive_from = diagnosis.decisive_line, "detector"
    elif diagnosis.evidence:
        decisive, report.decisive_from = diagnosis.evidence[0], "first evidence line"
    else:
        decisive = None
    if decisive is not None:
        report.decisive, report.decisive_line = decisive.text, decisive.line
    report.step = describe_step(diagnosis.failed_step) if diagnosis.HasField("failed_step") else ""
    report.hint = diagnosis.remediation_hint
    report.redactions = diagnosis.redactions


def heal(client: MeshClient, example: dict) -> HealReport:
    log = (EXAMPLES / example["file"]).read_bytes()
    report = HealReport(file=example["file"], expected_class=example.get("expected_class", ""))
    try:
        answer = heal_failure(client, example, log)
    except grpc.RpcError as error:
        report.error = f"{error.code().name}: {error.details()}"
        return report
    follow_heal(client, report, answer)
    return report


def follow_heal(client: MeshClient, report: HealReport, answer: coordinator_pb2.HealFailureResponse,
                wait: bool = True) -> None:
    """Fill the report from a heal's answer: the diagnosis, the plan, (waiting for) its actions, the audit."""
    diagnosis = answer.diagnosis
    report.resumed = answer.resumed
    read_diagnosis(report, diagnosis)
    if answer.HasField("plan"):
        report.plan_id = answer.plan.plan_id
        report.plan = [common_pb2.ActionKind.Name(a.kind) for a in answer.plan.actions]
        report.rationale = answer.plan.rationale
        if wait:
            try:
                for action in wait_for_actions(client, answer.plan.plan_id):
                    report.actions.append({
                        "kind": common_pb2.ActionKind.Name(action.action.kind),
                        "state": common_pb2.ActionState.Name(action.state).removeprefix("ACTION_STATE_"),
                        "detail": action.detail, "by": action.dispatched_by,
                    })
            except TimeoutError as error:
                report.error = str(error)
    expected = {"DIAGNOSIS", "PLAN"} | ({"OUTCOME"} if report.actions else set())
    entries, report.audit_verified = verify_audit(client, diagnosis.failure_id, expected)
    report.audit_entries = [f"#{e.index} {e.kind}" for e in entries]
    if answer.warnings:
        report.error = "; ".join(answer.warnings)


def wrapped(label: str, text: str, width: int = WIDTH) -> str:
    """`   label     : text`, wrapped at word boundaries with continuation lines under the
    text; a word longer than a line (a path, a URL) stays whole on a line of its own."""
    head = f"   {label:<10}: " if label else " " * 15  # no label: continues the line above
    lines = textwrap.wrap(text, width=width, initial_indent=head, subsequent_indent=" " * len(head),
                          break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) or head.rstrip()


def print_report(report: HealReport) -> None:
    print(f"\n== {report.file}" + (f"  (expected {report.expected_class})" if report.expected_class else ""))
    if report.error and not report.failure_id:
        print(wrapped("error", report.error))
        return
    if report.resumed:
        print(wrapped("replayed", "this job attempt was healed by an earlier run: the results below are that run's "
                                  "(the heal is idempotent); `make clean` starts afresh"))
    print(wrapped("diagnosis", f"{report.failure_class} (confidence {report.confidence:.2f}), "
                               f"{report.redactions} secret(s) redacted, failure {report.failure_id}"))
    if report.step:
        print(wrapped("step", report.step))
    if report.decisive:
        source = "" if report.decisive_from == "detector" else f" ({report.decisive_from})"
        print(wrapped("decisive", f"line {report.decisive_line}{source}: {report.decisive}"))
    if report.hint:
        print(wrapped("hint", report.hint))
    print(wrapped("plan", " -> ".join(report.plan) or "(none)"))
    # The rationale's first line restates the diagnosis and its second the failed step and
    # decisive line (both shown above); the rest is the reasoning: learned success rates,
    # the predictor, the policy rule, the plan. Every line of it is shown, wrapped.
    reasons = [line for line in report.rationale.splitlines()
               if line.strip() and not line.startswith(("Diagnosed ", "Failed step:", "Decisive line"))]
    for number, line in enumerate(reasons or report.rationale.splitlines()[:1]):
        print(wrapped("because" if number == 0 else "", line))
    for action in report.actions:
        by = f" by {action['by']}" if action["by"] else ""  # a skipped action was dispatched by no one
        print(wrapped("action", f"{action['kind']} {action['state']}{by}: {action['detail']}"))
    proof = "inclusion proof verified against the signed tree head" if report.audit_verified else "NOT verified"
    print(wrapped("audit", f"{', '.join(report.audit_entries)} — {proof}"))
    if report.error:
        print(wrapped("warning", report.error))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.heal_examples", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="heal only this example file")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--env-file", type=Path, default=ROOT / ".run" / "mesh.env")
    args = parser.parse_args(argv)
    examples = json.loads((EXAMPLES / "manifest.json").read_text())
    if args.only:
        examples = [e for e in examples if e["file"] == args.only]
        if not examples:
            print(f"no example named {args.only!r} in examples/manifest.json", file=sys.stderr)
            return 2
    reports = []
    with MeshClient(MeshConnection.from_env(env_file=args.env_file)) as client:
        for example in examples:
            report = heal(client, example)
            reports.append(report)
            if not args.json:
                print_report(report)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        healed = sum(1 for r in reports if any(a["state"] == "SUCCEEDED" for a in r.actions))
        right = sum(1 for r in reports if r.failure_class == r.expected_class)
        verified = sum(1 for r in reports if r.audit_verified)
        replayed = sum(1 for r in reports if r.resumed)
        print(f"\n{len(reports)} failures: {right} diagnosed as expected, {healed} with a successful action, "
              f"{verified} with verified audit proofs")
        if replayed:
            print(f"{replayed} of them replayed from an earlier run (same job attempts): `make clean` then "
                  "`make demo` to heal them afresh")
    return 0 if all(not r.error or r.failure_id for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
