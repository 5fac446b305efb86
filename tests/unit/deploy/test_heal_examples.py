"""The demo's report of a diagnosis: the failed step and the decisive line as real log text,
and long lines wrapped at word boundaries, never cut inside a word."""

from __future__ import annotations

import pytest

from deploy.heal_examples import WIDTH, HealReport, describe_step, print_report, read_diagnosis, wrapped
from healing_guard.common.v1 import common_pb2

DECISIVE = "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"


def diagnosis(**fields: object) -> common_pb2.Diagnosis:
    base: dict[str, object] = {
        "failure_id": "f-1", "failure_class": common_pb2.OUT_OF_MEMORY, "confidence": 0.93,
        "template": "FATAL ERROR: Reached heap limit <n>",
        "evidence": [
            common_pb2.EvidenceLine(line=50, text="> jest --ci"), common_pb2.EvidenceLine(line=51, text=DECISIVE)
        ],
    }
    return common_pb2.Diagnosis(**{**base, **fields})  # type: ignore[arg-type]


def test_the_decisive_line_is_the_real_log_line_with_its_number() -> None:
    report = HealReport(file="oom.log", expected_class="OUT_OF_MEMORY")
    step = common_pb2.FailedStep(name="Run npm test", command="npm test", exit_code=1, start_line=48, end_line=52)
    read_diagnosis(report, diagnosis(decisive_line=common_pb2.EvidenceLine(line=51, text=DECISIVE), failed_step=step))
    assert (report.decisive, report.decisive_line, report.decisive_from) == (DECISIVE, 51, "detector")
    assert "<n>" not in report.decisive
    assert report.step == "Run npm test (exit 1) at line 52, started at line 48"


def test_without_a_decisive_line_the_first_evidence_line_stands_in_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = HealReport(file="oom.log", expected_class="OUT_OF_MEMORY")
    read_diagnosis(report, diagnosis())
    assert (report.decisive, report.decisive_line, report.decisive_from) == ("> jest --ci", 50, "first evidence line")
    assert report.step == ""
    print_report(report)
    out = capsys.readouterr().out
    assert "   decisive  : line 50 (first evidence line): > jest --ci" in out and "step      :" not in out
    empty = HealReport(file="x.log", expected_class="UNKNOWN")
    read_diagnosis(empty, diagnosis(evidence=[]))
    assert (empty.decisive, empty.decisive_from) == ("", "")


@pytest.mark.parametrize(
    ("step", "shown"),
    [
        (common_pb2.FailedStep(name="Run npm test -- --ci", command="npm test -- --ci", exit_code=1, end_line=52),
         "Run npm test -- --ci (exit 1) at line 52"),
        (common_pb2.FailedStep(name="step_script", command="cargo test --locked", exit_code=101, start_line=2,
                               end_line=4), "step_script: cargo test --locked (exit 101) at line 4, started at line 2"),
        (common_pb2.FailedStep(command="make -j4 check", end_line=7), "make -j4 check at line 7"),
        (common_pb2.FailedStep(name="Lint", exit_code=0, end_line=3), "Lint (exit 0) at line 3"),
    ],
)
def test_a_failed_step_reads_as_name_command_exit_code_and_line(step: common_pb2.FailedStep, shown: str) -> None:
    assert describe_step(step) == shown


def test_long_lines_wrap_at_word_boundaries_under_their_label() -> None:
    words = [f"word{n:03d}" for n in range(60)] + ["/very/" + "long/" * 40 + "path"]
    text = " ".join(words)
    out = wrapped("decisive", text)
    lines = out.split("\n")
    assert len(lines) > 2 and lines[0].startswith("   decisive  : word000")
    assert all(line.startswith(" " * 15) for line in lines[1:])
    # Every word survives whole; only a word longer than a line may make its line longer.
    assert " ".join(line.strip() for line in lines).removeprefix("decisive  : ") == text
    assert all(len(line) <= WIDTH for line in lines if "/very/" not in line)
    assert any(line.strip() == words[-1] for line in lines)


def test_print_report_cuts_no_word(capsys: pytest.CaptureFixture[str]) -> None:
    hint = "Raise the Node heap (NODE_OPTIONS=--max-old-space-size=4096) or the runner's memory limit, " * 3
    report = HealReport(
        file="oom.log", expected_class="OUT_OF_MEMORY", failure_id="f-1", failure_class="OUT_OF_MEMORY",
        decisive=DECISIVE + " " + DECISIVE, decisive_line=51, decisive_from="detector", hint=hint.strip(),
        step="Run npm test (exit 1) at line 52", rationale="Diagnosed OUT_OF_MEMORY " + "because of the heap " * 12,
        actions=[{"kind": "RAISE_RESOURCE_LIMIT", "state": "SUCCEEDED", "by": "local",
                  "detail": "memory limit raised from 4096 MB to 8192 MB on the next run " * 3}],
    )
    print_report(report)
    out = capsys.readouterr().out
    assert "   step      : Run npm test (exit 1) at line 52\n" in out
    assert "\n   decisive  : line 51: FATAL ERROR: Reached heap limit" in out
    assert all(len(line) <= WIDTH for line in out.splitlines())
    printed = set(" ".join(out.split()).split())
    for word in (DECISIVE + " " + hint + " " + report.actions[0]["detail"]).split():
        assert word in printed, word


RATIONALE = "\n".join([
    'Diagnosed NETWORK (confidence 0.91) from the evidence: "curl: (6) Could not resolve host"',
    'Failed step: `Run ./fetch.sh` (exit 6); decisive line 12: "curl: (6) Could not resolve host".',
    "Learned success rates, ranked by expected value (posterior mean, exploration off): RETRY 0.70 (prior); "
    "CLEAR_CACHE 0.40 (prior).",
    "Predictor: no risk forecast was available.",
    "Policy rule applied: default/NETWORK.",
    "Plan: RETRY, then if that fails CLEAR_CACHE; escalate to a human if the job is still failing.",
])


def test_the_plan_reasoning_is_shown_whole_rates_and_policy_rule_included(capsys: pytest.CaptureFixture[str]) -> None:
    report = HealReport(file="net.log", expected_class="NETWORK", failure_id="f-2", failure_class="NETWORK",
                        plan=["RETRY", "CLEAR_CACHE", "ESCALATE"], rationale=RATIONALE)
    print_report(report)
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    for line in RATIONALE.splitlines()[2:]:
        assert " ".join(line.split()) in flat, line
    assert "   because   : Learned success rates" in out
    assert "Diagnosed NETWORK" not in out  # shown once, as the diagnosis line


def test_a_skipped_action_names_no_dispatcher_and_a_replay_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    report = HealReport(file="net.log", expected_class="NETWORK", failure_id="f-2", failure_class="NETWORK",
                        resumed=True, actions=[
                            {"kind": "RETRY", "state": "SUCCEEDED", "by": "coordinator-1", "detail": "re-ran"},
                            {"kind": "CLEAR_CACHE", "state": "SKIPPED", "by": "", "detail": "an earlier action healed"},
                        ])
    print_report(report)
    out = capsys.readouterr().out
    assert "by -" not in out
    assert "   action    : CLEAR_CACHE SKIPPED: an earlier action healed" in out
    assert "RETRY SUCCEEDED by coordinator-1: re-ran" in out
    assert "   replayed  : this job attempt was healed by an earlier run" in out


def test_the_network_hint_agrees_with_the_network_policy() -> None:
    from services.common.vocabulary import ActionKind, FailureClass
    from services.detector.knowledge_base.defaults import HINT
    from services.planner.policy import default_policies

    hint = HINT[FailureClass.NETWORK]
    allowed = default_policies()[FailureClass.NETWORK].allowed_actions
    assert "fresh runner" not in hint and ActionKind.RETRY_ON_FRESH_RUNNER not in allowed
    assert ActionKind.CLEAR_CACHE in allowed and "clear the cache" in hint
