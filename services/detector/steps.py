"""Failed step: which step or command of a CI job failed, read from the provider's own framing.

Every CI provider frames a job log its own way: GitHub Actions and Azure Pipelines with
`##[...]` logging commands, GitLab with `section_start:`/`section_end:` markers and `$ cmd`
lines, Travis with `travis_fold:` markers and `The command "cmd" exited with N.`, Jenkins
with `[Pipeline]` lines and `sh -x` traces, Buildkite with `--- name` headers. `StepTracker`
follows that framing while the log streams past and reports the step that failed: its name
as the provider shows it, the command, the exit code and the lines where it ran and failed.

When no provider framing appears at all, plain shell traces (`+ cmd` from `set -x`, `$ cmd`)
followed by an exit report (`make: *** [x] Error 2`, `npm ERR! code ...`, `exit status N`...)
stand in for it. Provider framing always wins over shell traces: a GitLab log's
`make: *** Error 2` line says less than its `ERROR: Job failed: exit code 2`.

Decisions worth knowing:
- A log that shows framing but no failure (all steps passed) gives None, like a log with no
  framing at all: `finish()` only ever returns a step that failed.
- A shell exit report with no traced command before it is not framing: None.
- When several steps fail (Travis carries on after a failed script command; GitHub steps with
  `continue-on-error`) the primary one is the first; `failed_steps` keeps them all (at most
  MAX_FAILED_STEPS).
- `start_line` is the line that shows the failed command starting (the GitHub `##[group]Run`
  header, the GitLab/Travis `$ cmd` line, the Jenkins `+ cmd` trace) when the log shows one,
  else the step's header line, else 0. `end_line` is the line that reports the failure, the
  exit-code line when there is one.

Cost: one re2 scan per block finds the few lines that can matter (markers at a line start or
after a `\\r`, and a few exit-report phrases anywhere); only those lines are decoded. Memory is
a handful of small records whatever the log size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import re2

MAX_FAILED_STEPS = 16
MAX_COMMAND_CHARS = 400
MAX_SEGMENT_BYTES = 4096  # longest piece of a line read around a marker
MAX_OPEN_SECTIONS = 8  # nesting kept for GitLab sections and Azure steps

FRAMINGS = ("github_actions", "gitlab", "travis", "jenkins", "buildkite", "azure", "shell")


@dataclass(frozen=True)
class FailedStep:
    name: str  # the step's display name as the provider shows it, "" if none
    command: str  # the command that failed, first line, clipped to MAX_COMMAND_CHARS ("" if unknown)
    exit_code: int | None  # as reported, None if the log does not say
    framing: str  # one of FRAMINGS
    start_line: int  # 1-based line showing the command start / step header (0 if unknown)
    end_line: int  # 1-based line where the failure is reported
    # That line's text as the log shows it (redacted upstream), clipped.
    end_text: str = field(default="", compare=False)



def _not_beginning_with(words: list[bytes]) -> bytes:
    """An RE2 fragment matching the start of any text that begins with none of `words`
    (RE2 has no negative lookahead: spell out the prefixes that turn away)."""
    firsts = sorted({w[:1] for w in words})
    parts = [b"[^" + b"".join(re.escape(f) for f in firsts) + b"]"]
    for first in firsts:
        rests = [w[1:] for w in words if w[:1] == first]
        if all(rests):
            parts.append(re.escape(first) + b"(?:" + _not_beginning_with(rests) + b")")
    return b"|".join(parts)


_UNANCHORED = re2._Anchor.UNANCHORED
_MARKER_OPTIONS = re2.Options()
_MARKER_OPTIONS.never_capture = True
# Runner timestamps, as diagnose.strip_presentation removes them (GitLab adds a stream tag: "00O ").
_STAMP_BYTES = rb"\[?[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\]? (?:[0-9]{2}[OE]\+? )?"
# The lines worth decoding. Markers sit at a line start (after an optional runner
# timestamp) or right after a `\r` (GitLab and Travis put several markers on one line,
# separated by `\r`); exit-report phrases may sit anywhere in a line. Shell traces are
# frequent and only the last one before a marker matters, so they are not searched here
# (see `_last_trace`) unless a timestamp hides them from that cheaper search.
_MARKER = re2.compile(
    rb"(?m)(?:^|\r)(?:" + _STAMP_BYTES + rb")?(?:"
    rb"##\[(?:group\]Run |error\]|section\]Starting: |section\]Finishing: )"
    rb"|Run "
    rb"|section_(?:start|end):|ERROR: Job failed|Job succeeded"
    rb"|travis_(?:fold|time):|The command \"|Done\. Your build exited"
    rb"|\[Pipeline\] |ERROR: script returned|Build step '|Finished: [A-Z]|Stage \""
    # Buildkite headers, but not Go's "--- PASS: TestName" result lines.
    rb"|--- (?:" + _not_beginning_with([b"PASS:", b"FAIL:", b"SKIP:"]) + rb")|(?:~~~|\^\^\^|\+\+\+) "
    rb"|(?:\x{1F6A8} )?Error: (?:Process completed|The operation was cancel|The job running on runner"
    rb"|The command exited)"
    rb"|Script contents:|\[command\]"
    rb"|make(?:\[[0-9]+\])?: \*\*\* |npm (?:ERR!|error) (?:code|errno) "
    rb")"
    rb"|^" + _STAMP_BYTES + rb"(?:\++ |\$ )"
    rb"|returned non-zero exit status|exited with code|exit status -?[0-9]|\" (?:failed and )?exited with",
    _MARKER_OPTIONS,
)
_SEARCH = _MARKER._regexp.Match

_STAMP = re.compile(r"\[?[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\]? (?:[0-9]{2}[OE]\+? )?")
_TRACE_PREFIX = re.compile(r"\++ ")
_TRACE_BYTES = re.compile(rb"\++ ")

# GitHub Actions and Azure Pipelines (`##[...]` logging commands).
_ERROR_EXIT_CODE = re.compile(r"(?:exit code|exited with code|return code)[: ]*'?(-?[0-9]+)")
_GITHUB_UI_ERROR = re.compile(
    r"Error: (?:Process completed with exit code (-?[0-9]+)|The operation was cancel|The job running on runner)"
)
# GitLab.
_GITLAB_SECTION = re.compile(r"section_(start|end):[0-9]+:([^\[\s]+)")
_GITLAB_JOB_FAILED = re.compile(r"ERROR: Job failed(?:: exit code (-?[0-9]+))?")
# Sections whose `$` lines are the job's own script (their commands are the ones that fail a job).
_GITLAB_SCRIPT_SECTIONS = frozenset({"step_script", "build_script", "script"})
# Sections the runner opens after the script whatever happened: never the failing one.
_GITLAB_AFTERMATH_SECTIONS = frozenset({
    "after_script", "cleanup_file_variables", "upload_artifacts_on_failure", "upload_artifacts_on_success",
    "archive_cache_on_failure", "archive_cache",
})
# Travis CI.
_TRAVIS_COMMAND = re.compile(r'The command "(.*)" (?:failed and )?exited with (-?[0-9]+)(?: during ([^.\s]+))?')
_TRAVIS_COMMAND_OPENED = re.compile(r'The command "(.*)')
_TRAVIS_COMMAND_CLOSED = re.compile(r'" (?:failed and )?exited with (-?[0-9]+)(?: during ([^.\s]+))?')
_TRAVIS_DONE = re.compile(r"Done\. Your build exited with (-?[0-9]+)")
# Jenkins.
_JENKINS_STAGE = re.compile(r"\[Pipeline\] \{ \((.*)\)\s*$")
_JENKINS_SKIPPED = re.compile(r'Stage "(.*)" skipped')
_JENKINS_SCRIPT_FAILED = re.compile(r"ERROR: script returned exit code (-?[0-9]+)")
_JENKINS_BUILD_STEP_FAILED = re.compile(r"Build step '(.*)' marked build as failure")
_JENKINS_FINISHED = re.compile(r"Finished: (FAILURE|ABORTED)\b")
# Buildkite; Go test results and unified diff headers look like section headers and are not.
_BUILDKITE_SECTION = re.compile(r"(?:---|\+\+\+|~~~) (.*\S)")
_BUILDKITE_LOOKALIKE = re.compile(r"(?:---|\+\+\+) (?:(?:FAIL|PASS|SKIP|BENCH)\b|[ab]/|/)")
_BUILDKITE_FAILED = re.compile(r"(?:\U0001F6A8 )?Error: The command exited with status (-?[0-9]+)")
# Plain shell exit reports.
_MAKE_FAILED = re.compile(r"make(?:\[[0-9]+\])?: \*\*\* (?:.*?Error (-?[0-9]+))?")
_NPM_FAILED = re.compile(r"npm (?:ERR!|error) (code|errno) (\S+)")
_EXIT_PHRASE = re.compile(
    r"(?:returned non-zero exit status|exited with code|exit status) '?(-?[0-9]+)"
)


def _last_trace(block: bytes, low: int, high: int, lead: bytes, has_cr: bool) -> int:
    """Start of the last line (or `\r`-piece, if the block `has_cr`) in block[low:high] that
    is a shell trace beginning with `lead` (`+`, `$ `), or -1. `low` is a line start only
    when it is 0."""
    end = high
    while end > low:
        found = block.rfind(b"\n" + lead, low, end)
        if has_cr:
            found = max(found, block.rfind(b"\r" + lead, low, end))
        if found < 0:
            break
        if _is_trace(block, found + 1, lead):
            return found + 1
        end = found + len(lead)  # look again, before this one
    return low if low == 0 and block.startswith(lead, 0, high) and _is_trace(block, 0, lead) else -1


def _is_trace(block: bytes, start: int, lead: bytes) -> bool:
    if lead != b"+":
        return True
    return _TRACE_BYTES.match(block, start) is not None and not block.startswith(b"+++ ", start)


def _clip(text: str, limit: int = MAX_COMMAND_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(piece: bytes) -> str:
    return piece.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Trace:
    """A command the log shows being run (`+ cmd`, `$ cmd`)."""

    line: int
    command: str


@dataclass
class _Step:
    """A step the provider opened with a header line."""

    name: str
    command: str
    line: int  # header line
    framing: str
    command_line: int = 0


class StepTracker:
    """Streaming, bounded memory: fed blocks of whole lines in order.

    Blocks are valid UTF-8, already stripped of ANSI colour and runner timestamps (a
    timestamp left in front of a marker is tolerated). Never raises on log content.
    """

    def __init__(self) -> None:
        self._failures: list[FailedStep] = []  # framed by a provider
        self._shell_failures: list[FailedStep] = []
        self._last_key: dict[bool, object] = {}  # per list: which step its last entry is
        self._reading: tuple[int, str] = (0, "")  # the line being read, for the failure's own text
        self._framed = False  # some provider's framing was seen
        # Shell traces: the last of each kind, as of `_plus_from`/`_dollar_from` in the
        # current block (traces are frequent, readers rare: see `_catch_up_traces`).
        self._plus: _Trace | None = None
        self._dollar: _Trace | None = None
        self._plus_from = self._dollar_from = 0
        self._block_has_cr = False
        self._counted = (0, 1)  # (offset, its line number) in the current block
        # GitHub Actions / Azure.
        self._current: _Step | None = None  # the step `##[error]` lines belong to
        self._azure_steps: list[_Step] = []
        self._github_raw = False
        self._azure_seen = False
        self._github_ui_step: _Step | None = None
        self._await_script_line = False
        # GitLab.
        self._gitlab_sections: list[tuple[str, int]] = []
        self._gitlab_script: tuple[str, _Trace] | None = None  # script section and its last command
        self._gitlab_last_section: tuple[str, int] | None = None
        # Travis.
        self._travis_open: str | None = None  # `The command "...` awaiting its closing quote
        # Jenkins.
        self._jenkins_stage: tuple[str, int] | None = None  # the stage open now
        self._jenkins_work_stage: tuple[str, int] | None = None  # the last that did work (not post, not skipped)
        self._jenkins_previous_stage: tuple[str, int] | None = None
        self._jenkins_failing: tuple[str, int, _Trace] | None = None  # stage, its line, its last `+` command
        # Buildkite.
        self._buildkite_section: tuple[str, int] | None = None

    # -- the stream -------------------------------------------------------------------

    def observe(self, first_line_no: int, block: bytes) -> None:
        """Feed one block of whole lines; its first line is numbered `first_line_no`."""
        if not block:
            return
        block = bytes(block)
        if self._await_script_line:
            self._await_script_line = False
            end = block.find(b"\n", 0, MAX_SEGMENT_BYTES)
            self._take_script_line(_decode(block[: end if end >= 0 else MAX_SEGMENT_BYTES]))
        size = len(block)
        has_cr = self._block_has_cr = b"\r" in block
        self._counted = (0, first_line_no)
        self._plus_from = self._dollar_from = 0
        search, find, startswith = _SEARCH, block.find, block.startswith
        position = 0
        while True:
            hit = search(_UNANCHORED, block, position, size)[0][0]
            if hit < 0:
                break
            # The piece of the line the marker is in (as `_segment`), inline for the
            # markers at a piece start: most of them, and most need no more than a look.
            if block[hit] == 0x0D:
                start = hit + 1
            elif hit == 0 or block[hit - 1] == 0x0A:
                start = hit
            else:
                start, end = self._segment(block, hit)
                position = max(end, hit + 1)
                self._on_marker(block, hit, start, end, position)
                continue
            limit = min(size, start + MAX_SEGMENT_BYTES)
            end = find(b"\n", start, limit)
            if end < 0:
                end = limit
            if has_cr:
                carriage = find(b"\r", start, end)
                if carriage >= 0:
                    end = carriage
            position = max(end, hit + 1)
            lead = block[start]
            if lead == 0x23:  # "##[...]": GitHub/Azure logging commands read no shell trace
                line = self._line_at(block, start)
                text = _decode(block[start:end])
                self._reading = (line, text)
                self._on_logging_command(text, line)
                continue
            if lead == 0x73 and startswith(b"section_", start):  # GitLab sections read only `$` traces
                if self._dollar_from < hit:
                    found = self._last_command(block, self._dollar_from, hit, b"$ ")
                    if found is not None:
                        self._dollar = found
                self._dollar_from = position
                line = self._line_at(block, start)
                text = _decode(block[start:end])
                self._reading = (line, text)
                self._on_gitlab(text, line)
                continue
            if lead == 0x5B:  # "[" : markers that mostly cannot change anything
                if startswith(b"[command]", start):
                    step = self._current
                    if step is None or step.framing != "azure" or step.command:
                        continue
                elif startswith(b"[Pipeline] ", start) and not startswith(b"[Pipeline] { (", start):
                    self._framed = True
                    continue
            self._on_marker(block, hit, start, end, position)
        self._catch_up_traces(block, size)

    def finish(self) -> FailedStep | None:
        """The failing step (the first one, when several failed), or None."""
        steps = self.failed_steps
        return steps[0] if steps else None

    @property
    def failed_steps(self) -> tuple[FailedStep, ...]:
        """Every failed step seen, in order (at most MAX_FAILED_STEPS); shell traces only
        count when no provider framing was seen."""
        return tuple(self._failures if self._framed or self._failures else self._shell_failures)

    # -- reading one marker ----------------------------------------------------------

    def _on_marker(self, block: bytes, hit: int, start: int, end: int, position: int) -> None:
        """A marker whose handler may read the shell traces before it: bring them up to
        date, then read the marker's text."""
        self._catch_up_traces(block, hit)
        self._plus_from = self._dollar_from = position
        line = self._line_at(block, hit)
        text = _decode(block[start:end])
        stamp = _STAMP.match(text)
        if stamp:
            text = text[stamp.end():]
        self._on_segment(text, line, block, end)

    def _line_at(self, block: bytes, offset: int) -> int:
        """1-based number of the line holding block[offset] (counting on from the last answer)."""
        counted_to, line_no = self._counted
        if offset >= counted_to:
            line_no += block.count(b"\n", counted_to, offset)
            self._counted = (offset, line_no)
            return line_no
        return line_no - block.count(b"\n", offset, counted_to)

    @staticmethod
    def _segment(block: bytes, hit: int) -> tuple[int, int]:
        """Bounds of the `\\r`/`\\n`-delimited piece of a line the hit at `hit` is in."""
        if block[hit] == 0x0D:  # the marker follows a \r
            start = hit + 1
        elif hit == 0 or block[hit - 1] == 0x0A:
            start = hit
        else:  # a phrase in mid-line: back to the piece's start, within reason
            low = max(0, hit - MAX_SEGMENT_BYTES)
            before = max(block.rfind(b"\n", low, hit), block.rfind(b"\r", low, hit))
            start = before + 1 if before >= 0 else low
        limit = min(len(block), max(start, hit) + MAX_SEGMENT_BYTES)
        end = block.find(b"\n", start, limit)
        end = limit if end < 0 else end
        carriage = block.find(b"\r", start, end)
        return start, (end if carriage < 0 else carriage)

    # -- shell traces, read lazily ---------------------------------------------------
    #
    # Shell traces are frequent and read rarely, so they are looked for only when a marker's
    # handler may read them: `_plus`/`_dollar` then become what they would be had every
    # stretch of log between two markers been searched for its last trace (a stretch whose
    # last trace shows no command leaves the one before standing).

    def _catch_up_traces(self, block: bytes, high: int) -> None:
        """Update `_plus` and `_dollar` with the traces in block[..high) not looked at yet."""
        if self._plus_from < high:
            found = self._last_command(block, self._plus_from, high, b"+")
            if found is not None:
                self._plus = found
        if self._dollar_from < high:
            found = self._last_command(block, self._dollar_from, high, b"$ ")
            if found is not None:
                self._dollar = found
        self._plus_from = self._dollar_from = max(self._plus_from, self._dollar_from, high)

    def _last_command(self, block: bytes, low: int, high: int, lead: bytes) -> _Trace | None:
        """The last trace in block[low:high] that shows a command, taken stretch by stretch
        (stretches between markers) from the end: the last trace of the latest stretch whose
        last trace is not blank. `low` is a stretch start."""
        while high > low:
            start = _last_trace(block, low, high, lead, self._block_has_cr)
            if start < 0:
                return None
            end = self._segment(block, start)[1]
            if lead == b"+":
                command = _TRACE_PREFIX.sub("", _decode(block[start:end]), count=1)
            else:
                command = _decode(block[start + 2 : end]).replace("# collapsed multi-line command", "")
            if command.strip():
                return _Trace(self._line_at(block, start), _clip(command))
            high = self._stretch_start(block, low, start)  # a blank trace: the stretches before it
        return None

    def _stretch_start(self, block: bytes, low: int, offset: int) -> int:
        """Where the stretch between markers holding block[offset] begins (markers found again
        from `low`, a stretch start, exactly as `observe` finds them)."""
        position = low
        while True:
            hit = _SEARCH(_UNANCHORED, block, position, len(block))[0][0]
            if hit < 0 or hit > offset:
                return position
            position = max(self._segment(block, hit)[1], hit + 1)

    def _on_segment(self, text: str, line: int, block: bytes, end: int) -> None:
        self._reading = (line, text)
        if text.startswith("##["):
            self._on_logging_command(text, line)
        elif text.startswith("$ "):
            command = text[2:].replace("# collapsed multi-line command", "")
            if command.strip():
                self._dollar = _Trace(line, _clip(command))
        elif _TRACE_PREFIX.match(text) and not text.startswith("+++ "):
            command = _TRACE_PREFIX.sub("", text, count=1)
            if command.strip():
                self._plus = _Trace(line, _clip(command))
        elif text.startswith(("section_", "ERROR: Job failed", "Job succeeded")):
            self._on_gitlab(text, line)
        elif text.startswith(("travis_", "The command \"", "Done. Your build")):
            self._on_travis(text, line)
        elif text.startswith(("[Pipeline] ", "ERROR: script", "Build step '", "Finished: ", "Stage \"")):
            self._on_jenkins(text, line)
        elif text.startswith(("--- ", "+++ ", "~~~ ", "^^^ ")) or "Error: The command exited" in text[:40]:
            self._on_buildkite(text, line)
        elif text.startswith(("Run ", "Error: ")):
            if not self._on_github_ui(text, line):
                self._on_shell_report(text, line)
        elif text.startswith(("Script contents:", "[command]")):
            self._on_azure_script(text, line, block, end)
        elif '" exited with' in text or '" failed and exited with' in text:
            self._on_travis(text, line)
        else:
            self._on_shell_report(text, line)

    # -- recording failures -----------------------------------------------------------

    def _record(self, step: FailedStep, key: object) -> None:
        """Add a failure; a second report for the same step only fills in a missing exit code."""
        shell = step.framing == "shell"
        failures = self._shell_failures if shell else self._failures
        if failures and self._last_key.get(shell) == key:
            last = failures[-1]
            if last.exit_code is None and step.exit_code is not None:
                failures[-1] = replace(
                    last, exit_code=step.exit_code, end_line=step.end_line, end_text=self._end_text(step)
                )
            return
        if len(failures) < MAX_FAILED_STEPS:
            failures.append(replace(step, end_text=self._end_text(step)))
            self._last_key[shell] = key

    def _end_text(self, step: FailedStep) -> str:
        """The text of the line reporting `step`'s failure when that is the line being read."""
        current_line, current_text = self._reading
        return _clip(current_text.strip()) if step.end_line == current_line else step.end_text

    def _latest_trace(self) -> _Trace | None:
        traces = [t for t in (self._plus, self._dollar) if t is not None]
        return max(traces, key=lambda t: t.line) if traces else None

    # -- GitHub Actions and Azure Pipelines --------------------------------------------

    def _on_logging_command(self, text: str, line: int) -> None:
        self._framed = True
        if text.startswith("##[group]Run "):
            command = _clip(text[len("##[group]Run "):])
            self._github_raw = True
            self._current = _Step(_clip("Run " + command), command, line, "github_actions", line)
        elif text.startswith("##[section]Starting: "):
            self._azure_seen = True
            step = _Step(_clip(text[len("##[section]Starting: "):]), "", line, "azure")
            self._azure_steps = [*self._azure_steps[-(MAX_OPEN_SECTIONS - 1):], step]
            self._current = step
        elif text.startswith("##[section]Finishing: "):
            name = _clip(text[len("##[section]Finishing: "):])
            names = [s.name for s in self._azure_steps]
            if name in names:
                del self._azure_steps[len(names) - 1 - names[::-1].index(name):]
                self._current = self._azure_steps[-1] if self._azure_steps else None
        elif text.startswith("##[error]"):
            code = _ERROR_EXIT_CODE.search(text)
            exit_code = int(code.group(1)) if code else None
            if exit_code == 0:
                return
            current = self._current
            if current is None:
                framing = "azure" if self._azure_seen and not self._github_raw else "github_actions"
                self._record(FailedStep("", "", exit_code, framing, 0, line), ("job",))
                return
            start = current.command_line or current.line
            self._record(
                FailedStep(current.name, current.command, exit_code, current.framing, start, line),
                ("step", current.line),
            )

    def _on_azure_script(self, text: str, line: int, block: bytes, end: int) -> None:
        step = self._current
        if step is None or step.framing != "azure":
            return
        if text.startswith("[command]"):
            if not step.command:
                step.command = _clip(text[len("[command]"):])
            return
        # "Script contents:" is followed by the script itself: its first line is the command.
        newline = block.find(b"\n", end)
        if newline < 0 or newline + 1 >= len(block):
            self._await_script_line = True
            return
        following = block.find(b"\n", newline + 1, newline + 1 + MAX_SEGMENT_BYTES)
        following = min(len(block), newline + 1 + MAX_SEGMENT_BYTES) if following < 0 else following
        self._take_script_line(_decode(block[newline + 1 : following]))

    def _take_script_line(self, text: str) -> None:
        stamp = _STAMP.match(text)
        text = text[stamp.end():] if stamp else text
        step = self._current
        if step is not None and step.framing == "azure" and text.strip() and not text.startswith("====="):
            step.command = _clip(text)

    def _on_github_ui(self, text: str, line: int) -> bool:
        """The form a log takes when copied from the GitHub web page: no `##[...]` markers.
        False when the line turns out to be something else."""
        if text.startswith("Run "):
            if not self._github_raw and text[4:].strip():
                command = _clip(text[4:])
                self._github_ui_step = _Step(_clip(text), command, line, "github_actions", line)
            return True
        failed = _GITHUB_UI_ERROR.match(text)
        if failed is None:
            return False
        exit_code = int(failed.group(1)) if failed.group(1) else None
        step = self._github_ui_step
        if exit_code is None and step is None:
            return True  # "Error: The operation was canceled." alone is not framing enough
        if exit_code == 0:
            return True
        self._framed = True
        if step is None:
            self._record(FailedStep("", "", exit_code, "github_actions", 0, line), ("job",))
        else:
            self._record(
                FailedStep(step.name, step.command, exit_code, "github_actions", step.line, line),
                ("step", step.line),
            )
        return True

    # -- GitLab -------------------------------------------------------------------------

    def _settle_gitlab(self) -> None:
        """Credit the last `$` command to the script section it ran in."""
        dollar = self._dollar
        if dollar is None:
            return
        for name, opened in self._gitlab_sections:
            if (name in _GITLAB_SCRIPT_SECTIONS or name.startswith("step_")) and dollar.line > opened:
                self._gitlab_script = (name, dollar)
                return

    def _on_gitlab(self, text: str, line: int) -> None:
        self._framed = True
        self._settle_gitlab()
        section = _GITLAB_SECTION.match(text)
        if section is not None:
            kind, name = section.group(1), section.group(2)
            if kind == "start":
                self._gitlab_sections = [*self._gitlab_sections[-(MAX_OPEN_SECTIONS - 1):], (name, line)]
                if name not in _GITLAB_AFTERMATH_SECTIONS:
                    self._gitlab_last_section = (name, line)
            else:
                names = [n for n, _ in self._gitlab_sections]
                if name in names:
                    del self._gitlab_sections[len(names) - 1 - names[::-1].index(name):]
            return
        failed = _GITLAB_JOB_FAILED.match(text)
        if failed is None:
            return  # "Job succeeded"
        exit_code = int(failed.group(1)) if failed.group(1) else None
        if exit_code == 0:
            return
        if self._gitlab_script is not None:
            name, command = self._gitlab_script
            step = FailedStep(name, command.command, exit_code, "gitlab", command.line, line)
        elif self._gitlab_last_section is not None:
            name, opened = self._gitlab_last_section
            step = FailedStep(name, "", exit_code, "gitlab", opened, line)
        else:
            step = FailedStep("", "", exit_code, "gitlab", 0, line)
        self._record(step, ("gitlab", step.start_line))

    # -- Travis CI ------------------------------------------------------------------------

    def _on_travis(self, text: str, line: int) -> None:
        if text.startswith("travis_"):
            self._framed = True
            return
        done = _TRAVIS_DONE.match(text)
        if done is not None:
            self._framed = True
            exit_code = int(done.group(1))
            if exit_code != 0 and not any(f.framing == "travis" for f in self._failures):
                dollar = self._dollar
                step = FailedStep(
                    "", dollar.command if dollar else "", exit_code, "travis", dollar.line if dollar else 0, line
                )
                self._record(step, ("travis", line))
            return
        whole = _TRAVIS_COMMAND.match(text)
        if whole is not None:
            self._framed = True
            self._travis_open = None
            self._travis_failed(whole.group(1), int(whole.group(2)), whole.group(3), line)
            return
        opened = _TRAVIS_COMMAND_OPENED.match(text)
        if opened is not None:
            self._framed = True
            self._travis_open = opened.group(1)  # a multi-line command: its end comes later
            return
        closed = _TRAVIS_COMMAND_CLOSED.search(text)
        if closed is not None and self._travis_open is not None:
            command = self._travis_open
            self._travis_open = None
            self._travis_failed(command, int(closed.group(1)), closed.group(2), line)
            return
        self._on_shell_report(text, line)

    def _travis_failed(self, command: str, exit_code: int, phase: str | None, end: int) -> None:
        if exit_code == 0:
            return
        command = _clip(command)
        dollar = self._dollar
        # The `$ cmd` line Travis printed when it started this command, if that was the last one.
        same = dollar is not None and (command.startswith(dollar.command) or dollar.command.startswith(command))
        start = dollar.line if dollar is not None and same else 0
        self._record(FailedStep(phase or "script", command, exit_code, "travis", start, end), ("travis", end))

    # -- Jenkins ---------------------------------------------------------------------------

    def _settle_jenkins(self) -> None:
        """Credit the last `+` command to the stage it ran in (post actions excepted)."""
        stage, plus = self._jenkins_stage, self._plus
        if stage is None or plus is None or plus.line <= stage[1]:
            return
        if not stage[0].startswith("Declarative: Post"):
            self._jenkins_failing = (stage[0], stage[1], plus)

    def _on_jenkins(self, text: str, line: int) -> None:
        if text.startswith("[Pipeline] "):
            self._framed = True
            opened = _JENKINS_STAGE.match(text)
            if opened is not None:
                self._settle_jenkins()
                self._jenkins_stage = (_clip(opened.group(1)), line)
                if not opened.group(1).startswith("Declarative: Post"):
                    self._jenkins_previous_stage = self._jenkins_work_stage
                    self._jenkins_work_stage = self._jenkins_stage
            return
        skipped = _JENKINS_SKIPPED.match(text)
        if skipped is not None:
            work = self._jenkins_work_stage
            if work is not None and work[0] == _clip(skipped.group(1)):
                self._jenkins_work_stage = self._jenkins_previous_stage  # a skipped stage ran nothing
            return
        self._settle_jenkins()
        script = _JENKINS_SCRIPT_FAILED.match(text)
        build_step = _JENKINS_BUILD_STEP_FAILED.match(text) if script is None else None
        finished = _JENKINS_FINISHED.match(text) if script is None and build_step is None else None
        if script is None and build_step is None and finished is None:
            if text.startswith("Finished: "):
                self._framed = True
            return
        self._framed = True
        if finished is not None and any(f.framing == "jenkins" for f in self._failures):
            return  # the build's verdict after the failure was already reported
        exit_code = int(script.group(1)) if script is not None else None
        if exit_code == 0:
            return
        if build_step is not None:  # freestyle job: the failing build step and its last trace
            plus = self._plus
            name = _clip(build_step.group(1))
            step = FailedStep(name, plus.command if plus else "", None, "jenkins", plus.line if plus else 0, line)
        elif self._jenkins_failing is not None:
            name, _, plus = self._jenkins_failing
            step = FailedStep(name, plus.command, exit_code, "jenkins", plus.line, line)
        elif self._jenkins_work_stage is not None:
            name, stage_line = self._jenkins_work_stage
            step = FailedStep(name, "", exit_code, "jenkins", stage_line, line)
        else:
            plus = self._plus
            step = FailedStep("", plus.command if plus else "", exit_code, "jenkins", plus.line if plus else 0, line)
        self._record(step, ("jenkins", step.name, step.start_line))

    # -- Buildkite ---------------------------------------------------------------------------

    def _on_buildkite(self, text: str, line: int) -> None:
        failed = _BUILDKITE_FAILED.match(text)
        if failed is None:
            if text.startswith("^^^ ") or _BUILDKITE_LOOKALIKE.match(text):
                return  # "^^^ +++" re-opens the previous section; it names nothing
            header = _BUILDKITE_SECTION.match(text)
            if header is not None:
                self._buildkite_section = (_clip(header.group(1)), line)
            return
        self._framed = True
        exit_code = int(failed.group(1))
        if exit_code == 0:
            return
        section, trace = self._buildkite_section, self._latest_trace()
        name = section[0] if section else ""
        start = trace.line if trace else (section[1] if section else 0)
        step = FailedStep(name, trace.command if trace else "", exit_code, "buildkite", start, line)
        self._record(step, ("buildkite", name, start))

    # -- plain shell -------------------------------------------------------------------------

    def _on_shell_report(self, text: str, line: int) -> None:
        trace = self._latest_trace()
        if trace is None:
            return  # an exit report with no traced command is not framing
        make = _MAKE_FAILED.match(text)
        npm = _NPM_FAILED.match(text) if make is None else None
        phrase = _EXIT_PHRASE.search(text) if make is None and npm is None else None
        if make is not None:
            exit_code = int(make.group(1)) if make.group(1) else None
        elif npm is not None:
            value = npm.group(2)
            exit_code = int(value) if value.isdigit() else None
            if npm.group(1) == "errno" and exit_code is None:
                return  # a negative errno is a system error number, not an exit code
        elif phrase is not None:
            exit_code = int(phrase.group(1))
        else:
            return
        if exit_code == 0:
            return
        self._record(FailedStep("", trace.command, exit_code, "shell", trace.line, line), ("shell", trace.line))


def find_failed_step(text: str | bytes) -> FailedStep | None:
    """The failing step of a whole log given at once (already stripped of ANSI colour)."""
    block = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    tracker = StepTracker()
    tracker.observe(1, block)
    return tracker.finish()
