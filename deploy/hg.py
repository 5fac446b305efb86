"""hg — the operator's command-line client of a Healing Guard mesh, through the gateway.

    hg heal LOGFILE --provider github --repository o/r --pipeline ci --job test --run-id N
    hg diagnosis FAILURE_ID      hg plan PLAN_ID        hg actions (FAILURE_ID | PLAN_ID)
    hg watch [--plan ID]         hg leader              hg audit head
    hg audit export --from 0 --to 100 -o EXPORT.json    hg audit verify EXPORT.json [--keys KEYS.json]

Connection details come from `.run/mesh.env` (written by `make up`; --env-file or
HG_ENV_FILE to name another), and HG_* variables in the environment override it.
The log is sent as bytes (no base64 to do) and streamed in chunks when over 4 MiB.
Every command takes --json. Exit status: 0 done, 1 refused or failed (one line on
stderr: the gRPC status, the message and the fields named), 2 usage mistake.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from deploy.client import MeshClient, MeshConnection
from deploy.heal_examples import HealReport, follow_heal, print_report, send_heal
from healing_guard.audit.v1 import audit_pb2
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.planner.v1 import planner_pb2

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = ROOT / ".run" / "mesh.env"
PROVIDERS = {
    "github": common_pb2.PROVIDER_GITHUB_ACTIONS, "gitlab": common_pb2.PROVIDER_GITLAB,
    "jenkins": common_pb2.PROVIDER_JENKINS, "generic": common_pb2.PROVIDER_GENERIC, "local": common_pb2.PROVIDER_LOCAL,
}
TIMEOUT_S = 30.0


class Failed(Exception):
    """The command could not be done: one readable line, exit 1."""


class Usage(Exception):
    """The command line is wrong in a way argparse cannot see: one line, exit 2."""


def describe_rpc_error(error: grpc.RpcError) -> str:
    """`INVALID_ARGUMENT: <message> [report.job.repository: must not be empty; ...]`: the status,
    the message and each field a BadRequest names."""
    code = error.code().name if hasattr(error, "code") else "UNKNOWN"
    message = error.details() if hasattr(error, "details") else str(error)
    fields: list[str] = []
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (AttributeError, ValueError):
        status = None
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [f"{v.field}: {v.description}" for v in bad.field_violations]
    line = f"{code}: {message}"
    if fields and any(f not in (message or "") for f in fields):
        line += f" [fields: {'; '.join(fields)}]"
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        line += " (is the mesh up? `make status`; a client without its certificate also ends here)"
    return " ".join(line.split())


# -- output -------------------------------------------------------------------------------
def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def emit(args: argparse.Namespace, document: Any, text: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        text()


def action_row(record: coordinator_pb2.ActionRecord) -> str:
    state = common_pb2.ActionState.Name(record.state).removeprefix("ACTION_STATE_")
    kind = common_pb2.ActionKind.Name(record.action.kind)
    return (f"{record.action_id:<28} {kind:<24} {state:<10} {record.dispatched_by or '-':<16} "
            f"{' '.join(record.detail.split())}")


# -- commands -----------------------------------------------------------------------------
def cmd_heal(args: argparse.Namespace, client: MeshClient) -> int:
    log = read_file(args.logfile, "LOGFILE")
    junit = read_file(args.junit, "--junit") if args.junit else b""
    job = common_pb2.JobRef(provider=PROVIDERS[args.provider], repository=args.repository, pipeline=args.pipeline,
                            job=args.job, run_id=args.run_id, attempt=args.attempt, commit_sha=args.commit,
                            branch=args.branch)
    report = detector_pb2.FailureReport(job=job, exit_code=args.exit_code, junit_xml=junit,
                                        diagnose_only=args.diagnose_only)

    def progress(sent: int, total: int) -> None:
        print(f"\rstreaming the log: {sent / 2**20:.1f} of {total / 2**20:.1f} MiB", end="", file=sys.stderr,
              flush=True)
        if sent == total:
            print(file=sys.stderr)

    answer = send_heal(client, report, log, progress=progress)
    result = HealReport(file=args.logfile, expected_class="")
    follow_heal(client, result, answer, wait=not args.no_wait)

    def text() -> None:
        print_report(result)
    if not args.json:
        print(f"failure {result.failure_id}  plan {result.plan_id or '-'}"
              f"{'  (resumed an earlier heal of this job attempt)' if answer.resumed else ''}")
    emit(args, {**asdict(result), "resumed": answer.resumed, "action_ids": list(answer.action_ids)}, text)
    return 0


def cmd_diagnosis(args: argparse.Namespace, client: MeshClient) -> int:
    diagnosis = client.detector.GetDiagnosis(detector_pb2.GetDiagnosisRequest(failure_id=args.id),
                                             metadata=client.metadata, timeout=TIMEOUT_S)

    def text() -> None:
        from deploy.heal_examples import read_diagnosis, wrapped

        report = HealReport(file="", expected_class="")
        read_diagnosis(report, diagnosis)
        print(wrapped("diagnosis", f"{report.failure_class} (confidence {report.confidence:.2f}), "
                                   f"decided by {diagnosis.decided_by or '-'}, failure {report.failure_id}"))
        if report.step:
            print(wrapped("step", report.step))
        if report.decisive:
            print(wrapped("decisive", f"line {report.decisive_line}: {report.decisive}"))
        if report.hint:
            print(wrapped("hint", report.hint))
        for line in report.evidence:
            print(wrapped("evidence", line))
    emit(args, as_dict(diagnosis), text)
    return 0


def cmd_plan(args: argparse.Namespace, client: MeshClient) -> int:
    answer = client.planner.ExplainPlan(planner_pb2.ExplainPlanRequest(plan_id=args.id), metadata=client.metadata,
                                        timeout=TIMEOUT_S)

    def text() -> None:
        from deploy.heal_examples import wrapped

        plan = answer.plan
        print(wrapped("plan", " -> ".join(common_pb2.ActionKind.Name(a.kind) for a in plan.actions) or "(none)"))
        print(wrapped("expected", f"success {plan.expected_success:.2f}, {plan.expected_runner_minutes:.1f} runner "
                                  f"minutes, ${plan.expected_cost_usd:.2f}"))
        for line in (answer.explanation or plan.rationale).splitlines():
            print(wrapped("because", line))
    emit(args, as_dict(answer), text)
    return 0


def cmd_actions(args: argparse.Namespace, client: MeshClient) -> int:
    request = coordinator_pb2.ListActionsRequest(limit=args.limit)
    if args.id.startswith("f-"):
        request.failure_id = args.id
    else:
        request.plan_id = args.id
    records = client.coordinator.ListActions(request, metadata=client.metadata, timeout=TIMEOUT_S).actions

    def text() -> None:
        print(f"{'action':<28} {'kind':<24} {'state':<10} {'by':<16} detail")
        for record in records:
            print(action_row(record))
    emit(args, [as_dict(r) for r in records], text)
    return 0


def cmd_watch(args: argparse.Namespace, client: MeshClient) -> int:
    request = coordinator_pb2.WatchActionsRequest(start_revision=args.from_revision, plan_id=args.plan,
                                                  failure_id=args.failure)
    stream = client.coordinator.WatchActions(request, metadata=client.metadata)
    seen = 0
    try:
        for event in stream:
            if args.json:
                print(json.dumps({"revision": event.revision, **as_dict(event.action)}), flush=True)
            else:
                print(f"{event.revision:>8} {action_row(event.action)}", flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()
    return 0


def cmd_leader(args: argparse.Namespace, client: MeshClient) -> int:
    answer = client.coordinator.Leader(coordinator_pb2.LeaderRequest(), metadata=client.metadata, timeout=TIMEOUT_S)
    emit(args, as_dict(answer),
         lambda: print(f"leader {answer.leader_id or '(none elected)'} at {answer.leader_address or '-'}, "
                       f"term {answer.term}"))
    return 0


def cmd_audit_head(args: argparse.Namespace, client: MeshClient) -> int:
    head = client.audit.GetSignedTreeHead(audit_pb2.GetSignedTreeHeadRequest(), metadata=client.metadata,
                                          timeout=TIMEOUT_S)
    document = {**as_dict(head), "root_hash": head.root_hash.hex(), "signature": head.signature.hex()}
    emit(args, document, lambda: print(f"tree size {head.tree_size}, root {head.root_hash.hex()}, key {head.key_id}, "
                                       f"origin {head.origin}"))
    return 0


def cmd_audit_export(args: argparse.Namespace, client: MeshClient) -> int:
    if args.end <= args.start:
        raise Usage(f"--to must be above --from, got --from {args.start} --to {args.end}")
    answer = client.audit.ExportRange(audit_pb2.ExportRangeRequest(start_index=args.start, end_index=args.end),
                                      metadata=client.metadata, timeout=120)
    try:
        Path(args.output).write_text(answer.export_json, encoding="utf-8")
    except OSError as error:
        raise Failed(f"cannot write {args.output}: {error.strerror}") from None
    document = {"file": args.output, "start_index": args.start, "end_index": args.end,
                "next_start_index": answer.next_start_index}
    note = (f"; the export stopped early at {answer.next_start_index} (size limit): run again with "
            f"--from {answer.next_start_index}" if answer.next_start_index else "")
    emit(args, document, lambda: print(f"wrote entries {args.start}..{args.end} to {args.output}{note}; "
                                       f"verify with: hg audit verify {args.output} --keys KEYS.json"))
    return 0


def run_audit_verify(args: argparse.Namespace) -> int:
    """Offline: no mesh needed. The same verifier as `python -m services.audit.verify`."""
    from services.audit import verify

    argv = [args.export, *(["--keys", args.keys] if args.keys else []), *(["--json"] if args.json else [])]
    return verify.main(argv)


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise Usage(f"cannot read {what} {path}: {error.strerror}") from None


# -- the command line ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument("--env-file", type=Path, help="connection details (default: $HG_ENV_FILE or .run/mesh.env)")
    parser = argparse.ArgumentParser(prog="hg", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    heal = commands.add_parser("heal", parents=[common], help="heal one failed job from its log")
    heal.add_argument("logfile", metavar="LOGFILE")
    heal.add_argument("--provider", required=True, choices=sorted(PROVIDERS))
    heal.add_argument("--repository", "--repo", required=True, help="owner/name")
    heal.add_argument("--pipeline", required=True)
    heal.add_argument("--job", required=True)
    heal.add_argument("--run-id", "--run", required=True)
    heal.add_argument("--attempt", type=int, default=1)
    heal.add_argument("--exit-code", type=int, default=1)
    heal.add_argument("--junit", metavar="FILE", help="the job's JUnit XML report")
    heal.add_argument("--commit", default="", help="the commit the job ran on")
    heal.add_argument("--branch", default="")
    heal.add_argument("--diagnose-only", action="store_true", help="diagnose and plan, queue nothing")
    heal.add_argument("--no-wait", action="store_true", help="do not wait for the actions' outcomes")
    heal.set_defaults(run=cmd_heal)

    diagnosis = commands.add_parser("diagnosis", parents=[common], help="show one diagnosis")
    diagnosis.add_argument("id", metavar="FAILURE_ID")
    diagnosis.set_defaults(run=cmd_diagnosis)
    plan = commands.add_parser("plan", aliases=["explain"], parents=[common], help="show one plan and why")
    plan.add_argument("id", metavar="PLAN_ID")
    plan.set_defaults(run=cmd_plan)

    actions = commands.add_parser("actions", parents=[common], help="a failure's or a plan's actions")
    actions.add_argument("id", metavar="FAILURE_ID|PLAN_ID", help="f-… for a failure, else a plan id")
    actions.add_argument("--limit", type=int, default=100)
    actions.set_defaults(run=cmd_actions)

    watch = commands.add_parser("watch", parents=[common], help="follow action state changes live")
    watch.add_argument("--plan", default="")
    watch.add_argument("--failure", default="")
    watch.add_argument("--from-revision", type=int, default=0, help="etcd revision to resume from (0: now)")
    watch.add_argument("--count", type=int, default=0, help="stop after this many events (0: never)")
    watch.set_defaults(run=cmd_watch)

    leader = commands.add_parser("leader", parents=[common], help="the coordinator leader")
    leader.set_defaults(run=cmd_leader)

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="audit_command", required=True,
                                                                              metavar="COMMAND")
    head = audit.add_parser("head", parents=[common], help="the signed tree head")
    head.set_defaults(run=cmd_audit_head)
    export = audit.add_parser("export", parents=[common], help="write entries and proofs for offline verification")
    export.add_argument("--from", dest="start", type=int, default=0, help="first index")
    export.add_argument("--to", dest="end", type=int, required=True, help="index after the last")
    export.add_argument("-o", "--output", required=True, metavar="FILE")
    export.set_defaults(run=cmd_audit_export)
    verify = audit.add_parser("verify", parents=[common], help="verify an export offline (no mesh needed)")
    verify.add_argument("export", metavar="EXPORT.json")
    verify.add_argument("--keys", metavar="KEYS.json",
                        help="trusted keys (the audit service's <data dir>/tree-head-public-keys.json)")
    verify.set_defaults(run=None, offline=run_audit_verify)
    return parser


def connect(args: argparse.Namespace) -> MeshClient:
    env_file = args.env_file or Path(os.environ.get("HG_ENV_FILE") or DEFAULT_ENV_FILE)
    if args.env_file and not env_file.exists():
        raise Usage(f"--env-file {env_file} does not exist")
    try:
        connection = MeshConnection.from_env(env_file=env_file)
    except SystemExit as missing:  # from_env names what is missing
        raise Failed(f"{missing.code} (looked in {env_file} and the environment)") from None
    for path, name in ((connection.cacert, "HG_CACERT"), (connection.cert, "HG_CERT"), (connection.key, "HG_KEY")):
        if not path.exists():
            raise Failed(f"{name} {path} does not exist: is the mesh up (`make up`)?")
    return MeshClient(connection)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage mistakes: argparse prints usage and exits 2
    try:
        if args.run is None:
            return int(args.offline(args))
        with connect(args) as client:
            return int(args.run(args, client))
    except Usage as error:
        print(f"hg: {error}", file=sys.stderr)
        return 2
    except Failed as error:
        print(f"hg: {error}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        print(f"hg: {describe_rpc_error(error)}", file=sys.stderr)
        return 1
    except TimeoutError as error:
        print(f"hg: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
