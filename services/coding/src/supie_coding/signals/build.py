"""Build outcomes: a build tool giving up (make, cargo, npm, gradle, maven, ninja, webpack, tsc,
a CI step's exit code) or succeeding; and ``step`` events, whose status says it directly."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, lines_with

__all__ = ["extract", "FAILED_STATUSES", "OK_STATUSES"]

FAILED_STATUSES = frozenset(
    {"fail", "failed", "failure", "error", "errored", "ko", "red", "broken", "crashed", "timeout"}
)
OK_STATUSES = frozenset({"ok", "success", "succeeded", "pass", "passed", "done", "green", "0"})

# (tool, a substring every match contains: the cheap test first, pattern)
_FAILED: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    (
        "make",
        "***",
        re.compile(r"^(?:g?make(?:\[\d+\])?): \*\*\* \[(?:[^\]:]+:\d+: )?([^\]]+)\] Error (\d+)"),
    ),
    ("cargo", "could not compile", re.compile(r"^error: could not compile `([^`]+)`")),
    (
        "npm",
        "npm ",
        re.compile(
            r"^npm (?:ERR!|error) (?:Lifecycle script `?([\w:-]+)`? failed|code (ELIFECYCLE))"
        ),
    ),
    ("gradle", "FAIL", re.compile(r"^(?:FAILURE: Build failed with an exception|BUILD FAILED)")),
    ("maven", "[ERROR]", re.compile(r"^\[ERROR\] (?:BUILD FAILURE|Failed to execute goal)")),
    ("ninja", "ninja", re.compile(r"^ninja: build stopped: subcommand failed")),
    (
        "webpack",
        "ompile",
        re.compile(r"(?:webpack .*compiled with (\d+) errors?|^Failed to compile\.?$)"),
    ),
    ("tsc", "Found ", re.compile(r"^Found (\d+) errors? in (\d+) files?\.?$")),
    (
        "ci",
        "exit",
        re.compile(r"(?:Process completed with exit code|exited with (?:code|status)) ([1-9]\d*)"),
    ),
    ("go", "FAIL ", re.compile(r"^FAIL (\S+/\S+)(?: \[build failed\]| [\d.]+s)")),
)
_OK: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("cargo", "Finished", re.compile(r"^Finished `?(?:dev|release|test|bench)`? (?:profile )?\[")),
    ("gradle", "BUILD SUCCESSFUL", re.compile(r"^BUILD SUCCESSFUL")),
    ("maven", "BUILD SUCCESS", re.compile(r"^\[INFO\] BUILD SUCCESS")),
    ("webpack", "compiled successfully", re.compile(r"compiled successfully")),
    ("vite", "built in", re.compile(r"^✓ built in ")),
    ("dotnet", "Build succeeded", re.compile(r"^Build succeeded\.?")),
    ("docker", "Successfully built", re.compile(r"^Successfully built [0-9a-f]+")),
)


# Every log line acted on below holds one of the gates.
_GATES = tuple(sorted({gate for _, gate, _ in _FAILED + _OK}))


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: list[Signal] = []
    steps = [i for i, entry in enumerate(lines) if entry.kind == "step"]
    for i in sorted({*steps, *lines_with(lines, _GATES)}):
        entry = lines[i]
        if entry.kind == "step":
            status = entry.status.lower()
            if status in FAILED_STATUSES:
                out.append(
                    Signal(Kind.BUILD_FAILED, tool="step", subject=entry.name, code=status, index=i)
                )
            elif status in OK_STATUSES:
                out.append(Signal(Kind.BUILD_OK, tool="step", subject=entry.name, index=i))
            continue
        text = entry.text
        if not text or entry.kind != "log":
            continue
        for tool, gate, pattern in _FAILED:
            if gate in text and (m := pattern.search(text)):
                subject = next((g for g in m.groups() if g and not g.isdigit()), "")
                code = next((g for g in m.groups() if g and g.isdigit()), "")
                out.append(
                    Signal(Kind.BUILD_FAILED, tool=tool, subject=subject, code=code, index=i)
                )
                break
        else:
            for tool, gate, pattern in _OK:
                if gate in text and pattern.search(text):
                    out.append(Signal(Kind.BUILD_OK, tool=tool, index=i))
                    break
    return out
