"""Test totals: passed / failed / skipped as each runner reports them at the end of a run.

One :data:`Kind.COUNTS` signal per runner, the last report winning (a re-run supersedes the one
before), except cargo, whose test binaries each print a ``test result:`` line that add up, and
go, counted from its ``--- PASS/FAIL/SKIP`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal

__all__ = ["extract"]

_PYTEST = re.compile(r"^=+ (.*?\d+ (?:passed|failed|skipped|errors?|xfailed|xpassed)\b.*?) =+$")
_PART = re.compile(r"(\d+) (passed|failed|skipped|ignored|errors?|xfailed|xpassed|pending|todo)")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ")
_UNITTEST_RESULT = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$")
_UNITTEST_PART = re.compile(r"(failures|errors|skipped|expected failures)=(\d+)")
_JEST = re.compile(r"^Tests: (.+?), (\d+) total$")
_VITEST = re.compile(r"^Tests (.+?) \((\d+)\)$")
_CARGO = re.compile(r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored")
_GO = re.compile(r"^--- (PASS|FAIL|SKIP): ")

_NAMES = {
    "passed": "passed",
    "failed": "failed",
    "skipped": "skipped",
    "ignored": "skipped",
    "pending": "skipped",
    "todo": "skipped",
    "error": "errors",
    "errors": "errors",
    "xfailed": "skipped",
    "xpassed": "passed",
}


def _parts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for number, word in _PART.findall(text):
        name = _NAMES[word]
        out[name] = out.get(name, 0) + int(number)
    return out


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    found: dict[str, tuple[dict[str, int], int]] = {}
    cargo: dict[str, int] = {}
    cargo_at = 0
    go: dict[str, int] = {}
    go_at = 0
    unittest_ran: int | None = None
    for i, entry in enumerate(lines):
        text = entry.text
        if not text or entry.kind != "log":
            continue
        first = text[0]
        if first == "=" and (m := _PYTEST.match(text)):
            found["pytest"] = (_parts(m.group(1)), i)
        elif first == "R" and (m := _UNITTEST_RAN.match(text)):
            unittest_ran = int(m.group(1))
        elif unittest_ran is not None and first in "OF" and (m := _UNITTEST_RESULT.match(text)):
            parts = {k: int(v) for k, v in _UNITTEST_PART.findall(m.group(2) or "")}
            failed = parts.get("failures", 0)
            errors = parts.get("errors", 0)
            skipped = parts.get("skipped", 0) + parts.get("expected failures", 0)
            counts = {
                "passed": max(unittest_ran - failed - errors - skipped, 0),
                "failed": failed,
                "errors": errors,
                "skipped": skipped,
            }
            found["unittest"] = ({k: v for k, v in counts.items() if v or k == "passed"}, i)
            unittest_ran = None
        elif first == "T":
            if m := _JEST.match(text):
                found["jest"] = (_parts(m.group(1)), i)
            elif m := _VITEST.match(text):
                found["vitest"] = (_parts(m.group(1)), i)
        elif first == "t" and (m := _CARGO.match(text)):
            passed, failed, ignored = (int(g) for g in m.groups())
            cargo["passed"] = cargo.get("passed", 0) + passed
            cargo["failed"] = cargo.get("failed", 0) + failed
            cargo["skipped"] = cargo.get("skipped", 0) + ignored
            cargo_at = i
        elif first == "-" and (m := _GO.match(text)):
            name = {"PASS": "passed", "FAIL": "failed", "SKIP": "skipped"}[m.group(1)]
            go[name] = go.get(name, 0) + 1
            go_at = i
    if cargo:
        found["cargo"] = ({k: v for k, v in cargo.items() if v or k == "passed"}, cargo_at)
    if go:
        found["go"] = (go, go_at)
    return [
        Signal(Kind.COUNTS, tool=tool, counts=counts, index=at)
        for tool, (counts, at) in found.items()
        if counts
    ]
