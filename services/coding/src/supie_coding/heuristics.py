"""The local insight: short sentences written from the signals, no LLM involved.

Each kind of signal contributes what it knows to the four lists: the finding (``insights``),
what it puts at stake (``risks``), what to do now (``actions``: a command to re-run the test, the
package to install, the line to open) and what comes after (``nextSteps``). Sentences name the
test, the module, the file and line, and always reword: a location is written ``path line N``,
never ``path:N:`` as the log has it, so a finding never repeats a log line. When the signals
leave a list empty, state-based sentences fill it (a badge always gets four non-empty lists).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .body import ITEM_MAX_CHARS, EchoGuard, InsightBody, Limits, clip, finish
from .signals import Kind, LogLine, Signal

__all__ = ["RunStats", "local_insight", "key_facts", "outcome"]

# What the insight list leads with: the most actionable finding first.
_PRIORITY = (
    Kind.OOM,
    Kind.COMPILE_ERROR,
    Kind.IMPORT_ERROR,
    Kind.EXCEPTION,
    Kind.TEST_FAILED,
    Kind.TIMEOUT,
    Kind.NETWORK,
    Kind.COUNTS,
    Kind.BUILD_FAILED,
    Kind.LINT,
    Kind.BUILD_OK,
    Kind.NOTE,
)
_FAILURES = frozenset(
    {
        Kind.OOM,
        Kind.COMPILE_ERROR,
        Kind.IMPORT_ERROR,
        Kind.EXCEPTION,
        Kind.TEST_FAILED,
        Kind.TIMEOUT,
        Kind.NETWORK,
        Kind.BUILD_FAILED,
    }
)
_PER_KIND = 3  # at most this many findings of one kind in the insight list
_ROOT_CAUSE_FIRST = frozenset({Kind.COMPILE_ERROR, Kind.IMPORT_ERROR, Kind.BUILD_FAILED})
# import name -> the distribution pip installs it from, where they differ
_PIP_NAMES = {
    "yaml": "pyyaml",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "jwt": "pyjwt",
    "magic": "python-magic",
    "serial": "pyserial",
    "usb": "pyusb",
    "Crypto": "pycryptodome",
    "OpenSSL": "pyopenssl",
    "google.protobuf": "protobuf",
    "psycopg2": "psycopg2-binary",
    "attr": "attrs",
    "zmq": "pyzmq",
}


@dataclass(frozen=True, slots=True)
class RunStats:
    """What the device's state says about the run (counted over every line, not only the
    buffered ones)."""

    phase: str = "idle"
    running: bool = False
    lines: int = 0
    errors: int = 0
    warns: int = 0
    step: str = ""
    step_status: str = ""
    duration_s: float | None = None


def _is_success(signal: Signal) -> bool:
    if signal.kind is Kind.BUILD_OK:
        return True
    if signal.kind is Kind.COUNTS:
        return not signal.counts.get("failed") and not signal.counts.get("errors")
    return False


def current(signals: Sequence[Signal]) -> list[Signal]:
    """Failures from before the latest success are stale (a re-run in the same buffer fixed
    them): drop them. Findings that do not contradict success (lint, notes) stay."""
    outcomes = [s for s in signals if s.kind in (Kind.BUILD_OK, Kind.BUILD_FAILED, Kind.COUNTS)]
    if not outcomes:
        return list(signals)
    last = max(outcomes, key=lambda s: s.index)
    if not _is_success(last):
        return list(signals)
    return [s for s in signals if s.kind not in _FAILURES or s.index > last.index]


def outcome(signals: Sequence[Signal], stats: RunStats) -> str:
    """``failed`` | ``passed`` | ``running`` | ``unknown``: how the run stands."""
    if any(s.kind in _FAILURES for s in signals):
        return "failed"
    if stats.step_status.lower() in ("fail", "failed", "failure", "error", "errored"):
        return "failed"
    if any(_is_success(s) for s in signals):
        return "passed"
    return "running" if stats.running else "unknown"


def _test_name(signal: Signal) -> str:
    name = signal.subject
    if signal.tool == "unittest":
        return ".".join(name.split(".")[-2:])
    if signal.tool == "pytest":
        return name.replace("::", ".")
    if signal.tool in ("jest", "vitest"):
        return f"'{name}'"
    return name


def _reason(message: str) -> str:
    """A failure message without the exception class that only says "an assertion failed"."""
    for prefix in ("AssertionError: ", "AssertError: ", "Failed: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _bare(text: str) -> str:
    return text.strip().strip("'\"`")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Writer:
    def __init__(self, guard: EchoGuard) -> None:
        self.guard = guard
        self.insights: defaultdict[Kind, list[str]] = defaultdict(list)
        self.risks: list[str] = []
        self.actions: list[str] = []
        self.next_steps: list[str] = []

    def insight(self, kind: Kind, head: str, detail: str = "") -> None:
        """``head: detail``; the detail (a message quoted from the log) is dropped if the result
        would contain a whole log line."""
        text = head
        if detail:
            text = f"{head}: {clip(detail, max(ITEM_MAX_CHARS - len(head) - 2, 24))}"
            if self.guard(text):
                text = head
        self.insights[kind].append(text)

    def ordered_insights(self) -> list[str]:
        out: list[str] = []
        for kind in _PRIORITY:
            found = self.insights.get(kind, [])
            # The first compile or import error is the root cause; of failing tests, crashes,
            # timeouts the newest are the news of a live stream (newest first: the list may
            # be cut after it).
            if kind in _ROOT_CAUSE_FIRST:
                out += found[:_PER_KIND]
            else:
                out += reversed(found[-_PER_KIND:])
        return out


# -- one function per kind ----------------------------------------------------------------------


def _tests(w: _Writer, tests: list[Signal], timeouts: set[str]) -> None:
    for s in tests:
        if s.subject in timeouts:
            continue  # the timeout sentence says it better
        where = f" at {s.where}" if s.where else ""
        verb = "errored" if s.code == "error" else "failed"
        w.insight(Kind.TEST_FAILED, f"{_test_name(s)} {verb}{where}", _reason(s.message))
    first = tests[0]
    name = _test_name(first)
    if len(tests) == 1:
        w.risks.append(f"{name} is red: merging now ships the regression it guards against")
    else:
        w.risks.append(f"{len(tests)} failing tests: the branch cannot merge green")
    rerun = {
        "pytest": f"pytest {first.file}::{first.subject} -x" if first.file else "",
        "unittest": f"python -m unittest {first.subject}",
        "jest": f'npx jest {first.file} -t "{first.subject.split(" › ")[-1]}"'
        if first.file
        else "",
        "vitest": f'npx vitest run {first.file} -t "{first.subject.split(" > ")[-1]}"'
        if first.file
        else "",
        "go": f"go test -run '^{first.subject}$' ./...",
        "cargo": f"cargo test {first.subject}",
    }.get(first.tool, "")
    if rerun:
        w.actions.append(f"Re-run it alone: {rerun}")
    if first.where and first.subject not in timeouts:
        w.actions.append(f"Open {first.where} and compare expected with actual")
    w.next_steps.append("Re-run the whole suite once it passes")


def _counts(w: _Writer, counts: list[Signal]) -> None:
    total: Counter[str] = Counter()
    for s in counts:
        total.update(s.counts)
    failed = total["failed"] + total["errors"]
    passed, skipped = total["passed"], total["skipped"]
    everything = failed + passed + skipped
    if failed:
        extra = f", {skipped} skipped" if skipped else ""
        w.insight(
            Kind.COUNTS,
            f"{failed} of {_plural(everything, 'test')} failed ({passed} passed{extra})",
        )
    elif passed:
        extra = f" ({skipped} skipped)" if skipped else ""
        w.insight(Kind.COUNTS, f"All {_plural(passed, 'test')} passed{extra}")
        if skipped:
            w.risks.append(f"{_plural(skipped, 'skipped test')} check nothing: see why")
        w.next_steps.append("Commit and push: the suite is green")


def _compile(w: _Writer, errors: list[Signal]) -> None:
    for s in errors:
        kind = "Type error" if s.subject == "type error" else "Compile error"
        code = f" {s.code}" if s.code else ""
        where = f" at {s.where}" if s.where else ""
        w.insight(Kind.COMPILE_ERROR, f"{kind}{code}{where}", s.message)
    first = errors[0]
    w.risks.append(
        f"The build is blocked until {_plural(len(errors), 'compile error')} are fixed"
        if len(errors) > 1
        else "The build is blocked until this error is fixed"
    )
    if first.where:
        w.actions.append(f"Fix {first.where} first: later errors often follow from it")
    if first.tool == "rustc" and first.code:
        w.actions.append(f"Read rustc --explain {first.code}")
    elif first.tool == "typescript":
        w.actions.append("Re-run tsc --noEmit after the fix")
    w.next_steps.append("Rebuild and check that no new errors appear")


def _imports(w: _Writer, errors: list[Signal]) -> None:
    for s in errors:
        by = f" (imported by {s.where})" if s.where else ""
        module = s.subject
        if s.tool == "python" and " from " in module:
            name, _, source = module.partition(" from ")
            w.insight(Kind.IMPORT_ERROR, f"'{name}' cannot be imported from {source}{by}")
        elif s.tool == "python":
            w.insight(Kind.IMPORT_ERROR, f"Python module '{module}' is not installed{by}")
        elif s.tool == "c":
            included = f" (included by {s.where})" if s.where else ""
            w.insight(Kind.IMPORT_ERROR, f"Header {module} not found{included}")
        elif s.tool == "rust":
            w.insight(Kind.IMPORT_ERROR, f"Crate or module '{module}' is not declared{by}")
        else:
            w.insight(Kind.IMPORT_ERROR, f"Module '{module}' cannot be found{by}")
    first = errors[0]
    module = first.subject
    if first.tool == "python" and " from " not in module:
        top = module.split(".")[0]
        dist = _PIP_NAMES.get(module) or _PIP_NAMES.get(top) or top
        w.risks.append(f"Nothing that imports {top} can run until it is installed")
        w.actions.append(f"Install it: pip install {dist}")
        w.actions.append(f"Add {dist} to the project's dependencies so CI gets it too")
    elif first.tool == "python":
        w.risks.append("An API the code relies on moved or was renamed")
        w.actions.append(f"Check the installed version of {module.partition(' from ')[2]}")
    elif module.startswith((".", "/")):
        w.risks.append(f"A file was moved or renamed: '{module}' no longer resolves")
        where = f" in {first.file}" if first.file else ""
        w.actions.append(f"Check the path '{module}'{where}: the file may be missing")
    elif first.tool == "rust":
        w.risks.append(f"The crate does not build without {module}")
        w.actions.append(f"Add {module} to [dependencies] in Cargo.toml")
    elif first.tool == "c":
        w.risks.append(f"Every file including {module} fails to compile")
        w.actions.append(f"Generate {module} or add its folder to the include path (-I)")
    elif first.tool == "go":
        w.risks.append(f"The module does not build without {module}")
        w.actions.append(f"Run go get {module}")
    else:
        w.risks.append(f"The app does not start without {module}")
        w.actions.append(f"Install it: npm install {module}")
    w.next_steps.append("Re-run once the dependency is in place")


def _oom(w: _Writer, signal: Signal, failed_targets: list[Signal]) -> None:
    target = next((s for s in failed_targets if s.code == "137"), None)
    if signal.tool == "kernel":
        pid = f" (pid {signal.code})" if signal.code else ""
        w.insight(Kind.OOM, f"{signal.subject}{pid} was killed by the kernel: out of memory")
    elif signal.tool in ("shell", "exit"):
        w.insight(Kind.OOM, "The process was killed (SIGKILL, exit 137): most likely out of memory")
    else:
        w.insight(Kind.OOM, f"Out of memory: {signal.message}")
    if target is not None and target.subject:
        w.insight(Kind.OOM, f"make target {target.subject} died with exit 137")
    w.risks.append("It will die again at the same point: memory use exceeds the limit")
    if signal.tool == "node":
        w.actions.append("Raise the heap: NODE_OPTIONS=--max-old-space-size=4096")
    elif signal.tool == "cuda":
        w.actions.append("Lower the batch size or use mixed precision to fit the GPU")
    else:
        w.actions.append("Lower the batch size or load less data at once")
        w.actions.append("Give the job more memory (container, VM or CI runner limit)")
    w.next_steps.append("Watch memory while re-running (top, /usr/bin/time -v)")


def _exceptions(w: _Writer, errors: list[Signal]) -> None:
    for s in errors:
        where = f" at {s.where}" if s.where else ""
        name = "panic" if s.subject == "panic" else s.subject
        w.insight(
            Kind.EXCEPTION,
            f"{name} raised{where}" if name != "panic" else f"panic{where}",
            s.message,
        )
    first = errors[0]
    place = first.where or "the innermost frame"
    w.risks.append(f"{first.subject} is not handled: the program stops there")
    key = _bare(first.message)
    advice = {
        "KeyError": f"Check that key '{key}' exists before {place} reads it",
        "IndexError": f"Guard the index used at {place} against short input",
        "AttributeError": f"Check for None or a wrong type before {place}",
        "TypeError": f"Check the argument types passed at {place}",
        "ValueError": f"Validate the input parsed at {place}",
        "FileNotFoundError": f"Check that the file read at {place} exists",
        "ZeroDivisionError": f"Guard the division at {place} against zero",
    }.get(first.subject, f"Inspect {place} where {first.subject} is raised")
    w.actions.append(advice)
    w.next_steps.append(f"Add a test that reproduces the {first.subject}")


def _timeouts(w: _Writer, timeouts: list[Signal]) -> None:
    for s in timeouts:
        after = f" after {s.code}" if s.code else ""
        if s.tool in ("pytest", "jest", "go") and s.subject:
            w.insight(Kind.TIMEOUT, f"{s.subject} timed out{after}")
        elif s.tool == "go":
            w.insight(Kind.TIMEOUT, f"go test timed out{after}")
        elif s.subject:
            w.insight(Kind.TIMEOUT, f"Request to {s.subject} timed out{after}")
        elif s.tool == "pytest":
            w.insight(Kind.TIMEOUT, f"A test exceeded its timeout{after}")
        else:
            w.insight(Kind.TIMEOUT, f"An operation timed out{after}")
    first = timeouts[0]
    if first.tool in ("pytest", "jest", "go") and first.subject:
        w.risks.append(f"{first.subject} may hang on a lock, a slow call or a dead service")
        w.actions.append(f"Run {first.subject} alone with a longer timeout: hung or just slow?")
    elif first.subject:
        w.risks.append(f"Everything that calls {first.subject} stalls while it is slow")
        w.actions.append(f"Check that {first.subject} is up and answers in time")
    else:
        w.risks.append("A hung call can block the job until its time limit")
        w.actions.append("Find the blocking call and give it an explicit timeout")
    w.next_steps.append("Re-run once the slow part is fixed or given a timeout")


_NET_INSIGHT = {
    "dns": ("Cannot resolve {host}: DNS lookup failed", "DNS lookups fail: no network or resolver"),
    "refused": ("Connection to {host} refused: nothing is listening", "A connection was refused"),
    "reset": ("Connection to {host} was reset", "A connection was reset by the peer"),
    "unreachable": ("{host} is unreachable", "The network is unreachable"),
    "tls": ("TLS certificate check failed for {host}", "A TLS certificate check failed"),
}


def _network(w: _Writer, errors: list[Signal]) -> None:
    for s in errors:
        with_host, without = _NET_INSIGHT.get(s.code, ("{host} answered {code}", "A server error"))
        text = with_host.format(host=s.subject, code=s.code.removeprefix("http-"))
        w.insight(Kind.NETWORK, text if s.subject else without)
    codes = {s.code for s in errors}
    refused = next((s for s in errors if s.code == "refused" and s.subject), None)
    if refused is not None:
        w.risks.append(f"Tests need a service on {refused.subject} that is not running")
        w.actions.append(f"Start the service on {refused.subject} (docker compose up?)")
    if "dns" in codes or "unreachable" in codes:
        w.risks.append("Builds depend on the network: they fail while it is down")
        w.actions.append("Check the network, VPN or proxy: installs need the registry")
    if "tls" in codes:
        w.actions.append("Check the system clock and CA certificates (or the proxy's CA)")
    if not w.actions:
        w.actions.append("Check that the remote service is up, then retry")
    w.next_steps.append("Re-run once the network or the service is back")


def _builds(w: _Writer, failed: list[Signal]) -> None:
    for s in failed:
        code = f" (exit {s.code})" if s.code and s.code.isdigit() else ""
        if s.tool == "step":
            w.insight(
                Kind.BUILD_FAILED, f"Step '{s.subject}' failed" + (f" ({s.code})" if s.code else "")
            )
        elif s.tool == "make":
            w.insight(Kind.BUILD_FAILED, f"make target {s.subject} failed{code}")
        elif s.tool == "cargo":
            w.insight(Kind.BUILD_FAILED, f"Crate {s.subject} does not compile")
        elif s.tool == "tsc" and s.code:
            w.insight(Kind.BUILD_FAILED, f"tsc reports {_plural(int(s.code), 'error')}")
        elif s.tool == "go":
            w.insight(Kind.BUILD_FAILED, f"Package {s.subject} fails")
        elif s.tool == "ci" and s.code:
            w.insight(Kind.BUILD_FAILED, f"A command exited with status {s.code}")
        else:
            what = f" {s.subject}" if s.subject else ""
            w.insight(Kind.BUILD_FAILED, f"{s.tool} build{what} failed")
    step = next((s for s in failed if s.tool == "step"), None)
    if step is not None:
        w.actions.append(f"Read the first error before step '{step.subject}' failed")
    w.next_steps.append("Re-run the build after the fix")


def _lint(w: _Writer, findings: list[Signal]) -> None:
    items = [s for s in findings if s.code not in ("summary", "fixable")]
    summaries = {s.tool: s.counts for s in findings if s.code == "summary"}
    fixable = sum(s.counts.get("fixable", 0) for s in findings if s.code == "fixable")
    by_tool: defaultdict[str, list[Signal]] = defaultdict(list)
    for s in items:
        by_tool[s.tool].append(s)
    for tool, found in by_tool.items():
        n = summaries.get(tool, {}).get("problems") or len(found)
        codes = list(dict.fromkeys(s.code for s in found if s.code and s.code != "warning"))
        label = "compiler warning" if tool in ("cc", "rustc") else f"{tool} finding"
        listed = f" ({', '.join(codes[:3])})" if codes else ""
        first = found[0]
        w.insight(Kind.LINT, f"{_plural(n, label)}{listed}, first at {first.where}")
    if not items:
        for tool, counts in summaries.items():
            w.insight(Kind.LINT, f"{tool} reports {_plural(counts.get('problems', 0), 'problem')}")
    errors = [s for s in items if s.subject == "error" or s.tool in ("ruff", "pylint")]
    if errors:
        w.risks.append("Lint errors will fail a strict CI check")
    else:
        w.risks.append("Warnings left alone tend to hide the one that matters")
    if fixable:
        w.actions.append(f"ruff check --fix fixes {fixable} of them automatically")
    if "eslint" in by_tool:
        w.actions.append("npx eslint --fix handles the auto-fixable eslint rules")
    if items:
        first = next((s for s in items if s.subject == "error"), items[0])
        w.actions.append(f"Fix {first.code or 'the finding'} at {first.where}")
    w.next_steps.append("Re-run the linter until it is clean")


def _successes(w: _Writer, ok: list[Signal], has_counts: bool) -> None:
    ok = sorted(ok, key=lambda s: s.index)
    tools = list(dict.fromkeys(s.tool for s in ok if s.tool != "step"))
    steps = [s.subject for s in ok if s.tool == "step" and s.subject]
    if tools:
        w.insight(Kind.BUILD_OK, f"Build succeeded ({', '.join(tools[:3])})")
    for name in steps[-2:]:
        w.insight(Kind.BUILD_OK, f"Step '{name}' passed")
    if not has_counts:
        w.next_steps.append("Run the tests next")


def _notes(w: _Writer, notes: list[Signal]) -> None:
    for s in notes[-2:]:
        w.next_steps.append(f"Follow up on your note about {s.subject}")


# -- assembly -----------------------------------------------------------------------------------


def _fill(w: _Writer, signals: list[Signal], stats: RunStats, state: str) -> None:
    """State-based sentences for lists the signals left empty."""
    if not w.ordered_insights():
        if stats.errors:
            w.insight(
                Kind.NOTE,
                f"{_plural(stats.errors, 'error line')} so far, none of a known kind",
            )
        elif stats.lines:
            # no line count here: an unchanged insight is not resent to the badge
            w.insight(Kind.NOTE, "No errors so far")
        else:
            w.insight(Kind.NOTE, "No output yet")
        if stats.step:
            status = f" ({stats.step_status})" if stats.step_status else ""
            w.insight(Kind.NOTE, f"Last step: {stats.step}{status}")
    if not w.risks:
        if state == "failed":
            w.risks.append("The run is failing: do not merge yet")
        elif stats.warns:
            w.risks.append(f"{_plural(stats.warns, 'warning')} in the output, worth a look")
        elif state == "passed":
            w.risks.append("No risk found in this output")
        else:
            w.risks.append("Nothing alarming yet; the run is not finished")
    if not w.actions:
        if state == "failed":
            w.actions.append("Scroll to the first error of the run and fix that one")
        elif state == "passed":
            w.actions.append("Nothing to fix")
        else:
            w.actions.append("Let the run finish; insights update as lines arrive")
    if not w.next_steps:
        if state == "passed":
            w.next_steps.append("Commit and push the change")
        elif state == "failed":
            w.next_steps.append("Re-run after the fix")
        else:
            w.next_steps.append("Wait for the result of the run")


def _summary_head(w: _Writer, signals: list[Signal], stats: RunStats, state: str) -> list[str]:
    took = f" in {stats.duration_s:.0f} s" if stats.duration_s is not None else ""
    verdict = {"failed": "failed", "passed": "passed"}.get(state, "ended")
    head = [
        f"Run {verdict}{took}: {_plural(stats.lines, 'line')}, "
        f"{_plural(stats.errors, 'error')}, {_plural(stats.warns, 'warning')}"
    ]
    if stats.step:
        status = f" ({stats.step_status})" if stats.step_status else ""
        head.append(f"Last step: {stats.step}{status}")
    return head


def local_insight(
    lines: Sequence[LogLine],
    signals: Sequence[Signal],
    stats: RunStats,
    limits: Limits,
    *,
    summary: bool = False,
) -> InsightBody:
    """The four lists for ``signals`` (from :func:`extract_all` over ``lines``)."""
    live = current(signals)
    by_kind: defaultdict[Kind, list[Signal]] = defaultdict(list)
    for s in sorted(live, key=lambda s: s.index):
        by_kind[s.kind].append(s)
    state = outcome(live, stats)
    guard = EchoGuard([line.text for line in lines])
    w = _Writer(guard)
    if Kind.OOM in by_kind:
        _oom(w, by_kind[Kind.OOM][0], by_kind.get(Kind.BUILD_FAILED, []))
    if Kind.COMPILE_ERROR in by_kind:
        _compile(w, by_kind[Kind.COMPILE_ERROR])
    if Kind.IMPORT_ERROR in by_kind:
        _imports(w, by_kind[Kind.IMPORT_ERROR])
    if Kind.EXCEPTION in by_kind:
        _exceptions(w, by_kind[Kind.EXCEPTION])
    timeouts = by_kind.get(Kind.TIMEOUT, [])
    if Kind.TEST_FAILED in by_kind:
        _tests(w, by_kind[Kind.TEST_FAILED], {s.subject for s in timeouts if s.subject})
    if timeouts:
        _timeouts(w, timeouts)
    if Kind.NETWORK in by_kind:
        _network(w, by_kind[Kind.NETWORK])
    if Kind.COUNTS in by_kind:
        _counts(w, by_kind[Kind.COUNTS])
    failed_builds = by_kind.get(Kind.BUILD_FAILED, [])
    # A failing package or a 137 exit says less than the test or the OOM already named.
    if Kind.TEST_FAILED in by_kind:
        failed_builds = [s for s in failed_builds if s.tool not in ("go", "ci")]
    if Kind.OOM in by_kind:
        failed_builds = [s for s in failed_builds if s.code != "137"]
    if failed_builds:
        _builds(w, failed_builds)
    if Kind.LINT in by_kind:
        _lint(w, by_kind[Kind.LINT])
    if Kind.BUILD_OK in by_kind and state != "failed":
        _successes(w, by_kind[Kind.BUILD_OK], Kind.COUNTS in by_kind)
    if Kind.NOTE in by_kind:
        _notes(w, by_kind[Kind.NOTE])
    _fill(w, list(live), stats, state)
    insights = w.ordered_insights()
    if summary:
        insights = _summary_head(w, list(live), stats, state) + insights
    body = InsightBody(insights=insights, risks=w.risks, actions=w.actions, next_steps=w.next_steps)
    return finish(body, guard, limits)


def key_facts(signals: Sequence[Signal], limit: int = 5) -> list[str]:
    """The names a good insight mentions (a failing test, a missing module, a file, a host), most
    important first: what an LLM's answer is measured against."""
    facts: list[str] = []
    order = {kind: n for n, kind in enumerate(_PRIORITY)}
    for s in sorted(current(signals), key=lambda s: order[s.kind]):
        if s.kind in (Kind.COUNTS, Kind.NOTE, Kind.BUILD_OK, Kind.LINT):
            continue
        if s.kind is Kind.TEST_FAILED:
            fact = s.subject.replace("::", ".").split(".")[-1].split(" › ")[-1].split(" > ")[-1]
        elif s.kind in (Kind.IMPORT_ERROR, Kind.NETWORK, Kind.TIMEOUT) and s.subject:
            fact = s.subject.split(" from ")[0]
        elif s.file:
            fact = s.file.rsplit("/", 1)[-1]
        else:
            fact = s.subject
        if fact and fact not in facts:
            facts.append(fact)
        if len(facts) == limit:
            break
    return facts
