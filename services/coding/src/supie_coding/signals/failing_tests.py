"""Failing tests: pytest, unittest, jest / vitest, ``go test`` and ``cargo test``.

Each runner names a failing test in one line and says where and why in the lines around it, so
this extractor walks the buffer once, remembering the section it is in (a pytest failure header,
a unittest ``FAIL:`` block, a jest ``●`` block, a go ``=== RUN``, a cargo ``---- x stdout ----``)
and merges what it learns per test: the name, the file and line, the first assertion message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .model import Kind, LogLine, Signal, short_path

__all__ = ["extract"]

# pytest
_PYTEST_FAILED = re.compile(r"^(FAILED|ERROR) (\S+?\.py)::(\S+)(?: - (.+))?$")
_PYTEST_VERBOSE = re.compile(r"^(\S+?\.py)::(\S+) (FAILED|ERROR)\b")
_PYTEST_HEADER = re.compile(r"^_{3,} (?:ERROR at \w+ of )?([\w.\[\]-]+(?:\[.*\])?) _{3,}$")
_PYTEST_LOCATION = re.compile(r"^(\S+?\.py):(\d+): (\w+)$")
_PYTEST_E = re.compile(r"^E (.+)$")
# unittest
_UNITTEST_HEAD = re.compile(r"^(FAIL|ERROR): (\w+) \(([\w.]+)\)")
_PY_FRAME = re.compile(r'^File "([^"]+)", line (\d+), in (\S+)')
_PY_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Failure)): (.+)$")
# jest / vitest
_JEST_FILE = re.compile(r"^FAIL (\S+\.[jt]sx?)$")
_VITEST_FAIL = re.compile(r"^FAIL (\S+\.[jt]sx?) > (.+)$")
_JEST_BULLET = re.compile(r"^● (.+)$")
_JEST_CROSS = re.compile(r"^[✕×✗] (.+?)(?: \(\d+ ?m?s\)| \d+ ?ms)?$")
_JS_AT = re.compile(r"\(?((?:[A-Za-z]:)?[^\s():]+\.[cm]?[jt]sx?):(\d+):(\d+)\)?$")
_JEST_EXPECTED = re.compile(r"^Expected(?: value)?: (.+)$")
_JEST_RECEIVED = re.compile(r"^Received(?: value)?: (.+)$")
_VITEST_ARROW = re.compile(r"^→ (.+)$")
_VITEST_LOC = re.compile(r"^❯ (\S+\.[cm]?[jt]sx?):(\d+):\d+$")
# go
_GO_RUN = re.compile(r"^=== RUN (\S+)$")
_GO_FAIL = re.compile(r"^--- FAIL: (\S+) \(([\d.]+)s\)$")
_GO_LOG = re.compile(r"^(\S+_test\.go):(\d+): (.+)$")
# cargo
_CARGO_FAILED = re.compile(r"^test (\S+) \.\.\. FAILED$")
_CARGO_STDOUT = re.compile(r"^---- (\S+) stdout ----$")
_RUST_PANIC_NEW = re.compile(r"^thread '([^']+)' panicked at (\S+?):(\d+):\d+:$")
_RUST_PANIC_OLD = re.compile(r"^thread '([^']+)' panicked at '(.+)', (\S+?):(\d+):\d+$")


@dataclass
class _Test:
    tool: str
    name: str
    file: str = ""
    line: int | None = None
    message: str = ""
    code: str = ""  # "error" for tests that errored (setup, exceptions) rather than failed
    index: int = 0

    def signal(self) -> Signal:
        return Signal(
            Kind.TEST_FAILED,
            tool=self.tool,
            subject=self.name,
            file=short_path(self.file) if self.file else "",
            line=self.line,
            message=self.message,
            code=self.code,
            index=self.index,
        )


class _Found:
    """Failing tests by (tool, name), in the order they were first seen."""

    def __init__(self) -> None:
        self.tests: dict[tuple[str, str], _Test] = {}

    def get(self, tool: str, name: str, index: int) -> _Test:
        key = (tool, name)
        test = self.tests.get(key)
        if test is None and tool in ("pytest", "unittest"):
            # pytest names a test "Class.test" in headers and "Class::test" in summaries
            base = name.replace("::", ".").split(".")[-1]
            for (t, n), other in self.tests.items():
                if t == tool and n.replace("::", ".").split(".")[-1] == base:
                    if len(name) > len(n):  # keep the fuller name
                        del self.tests[(t, n)]
                        other.name = name
                        self.tests[key] = other
                    return other
        if test is None:
            test = self.tests[key] = _Test(tool, name, index=index)
        return test


def _set_message(test: _Test, message: str) -> None:
    if not test.message:
        test.message = message.strip()


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    found = _Found()
    section: _Test | None = None  # the failing test whose details the next lines describe
    go_running: str | None = None
    go_pending: tuple[str, int, str] | None = None  # file, line, message logged by a go test
    jest_file = ""
    for i, entry in enumerate(lines):
        text = entry.text
        if not text or entry.kind != "log":
            continue
        first = text[0]
        # -- pytest -------------------------------------------------------------------------
        if first in "FE" and ".py::" in text and (m := _PYTEST_FAILED.match(text)):
            test = found.get("pytest", m.group(3), i)
            test.file = test.file or m.group(2)
            if m.group(1) == "ERROR":
                test.code = "error"
            if m.group(4):
                _set_message(test, m.group(4))
            continue
        if ".py::" in text and (m := _PYTEST_VERBOSE.match(text)):
            test = found.get("pytest", m.group(2), i)
            test.file = test.file or m.group(1)
            continue
        if first == "_" and (m := _PYTEST_HEADER.match(text)):
            section = found.get("pytest", m.group(1), i)
            continue
        if section is not None and section.tool == "pytest":
            if first == "E" and (m := _PYTEST_E.match(text)):
                msg = m.group(1)
                if not msg.startswith("+"):  # "+ where ..." explains, the first line says
                    _set_message(section, msg)
                continue
            if (m := _PYTEST_LOCATION.match(text)) and section.line is None:
                section.file, section.line = m.group(1), int(m.group(2))
                continue
        # -- unittest -----------------------------------------------------------------------
        if first in "FE" and (m := _UNITTEST_HEAD.match(text)):
            # Python >= 3.11 prints "test_x (pkg.mod.Class.test_x)", older ones "(pkg.mod.Class)"
            name = m.group(3)
            if not name.endswith("." + m.group(2)):
                name = f"{name}.{m.group(2)}"
            section = found.get("unittest", name, i)
            if m.group(1) == "ERROR":
                section.code = "error"
            continue
        if section is not None and section.tool == "unittest":
            if first == "F" and (m := _PY_FRAME.match(text)):
                if m.group(3) == section.name.rsplit(".", 1)[-1] or section.line is None:
                    section.file, section.line = m.group(1), int(m.group(2))
                continue
            if m := _PY_EXCEPTION.match(text):
                _set_message(section, f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}")
                section = None
                continue
        # -- jest / vitest ------------------------------------------------------------------
        if first == "F" and text.startswith("FAIL "):
            if m := _VITEST_FAIL.match(text):
                section = found.get("vitest", m.group(2), i)
                section.file = section.file or m.group(1)
                continue
            if m := _JEST_FILE.match(text):
                jest_file = m.group(1)
                continue
        if first == "●" and (m := _JEST_BULLET.match(text)):
            name = m.group(1)
            if name.startswith("Test suite failed to run"):
                section = None
                continue
            section = found.get("jest", name, i)
            section.file = section.file or jest_file
            continue
        if first in "✕×✗" and (m := _JEST_CROSS.match(text)):
            tool = "vitest" if first == "×" else "jest"
            test = found.get(tool, m.group(1), i)
            test.file = test.file or jest_file
            section = test
            continue
        if section is not None and section.tool in ("jest", "vitest"):
            if text.startswith("at ") and (m := _JS_AT.search(text)) and section.line is None:
                if "node_modules" not in m.group(1):
                    section.file, section.line = m.group(1), int(m.group(2))
                continue
            if first == "❯" and (m := _VITEST_LOC.match(text)) and section.line is None:
                section.file, section.line = m.group(1), int(m.group(2))
                continue
            if m := _JEST_EXPECTED.match(text):
                section.message = f"expected {m.group(1)}"
                continue
            if (m := _JEST_RECEIVED.match(text)) and section.message.startswith("expected "):
                section.message += f", received {m.group(1)}"
                continue
            if first == "→" and (m := _VITEST_ARROW.match(text)):
                _set_message(section, m.group(1).split(" // ")[0])
                continue
            if text.startswith("AssertionError: "):
                _set_message(section, text.split(": ", 1)[1].split(" // ")[0])
                continue
        # -- go test ------------------------------------------------------------------------
        if first == "=" and (m := _GO_RUN.match(text)):
            go_running, go_pending = m.group(1), None
            continue
        if go_running and "_test.go:" in text and (m := _GO_LOG.match(text)):
            go_pending = go_pending or (m.group(1), int(m.group(2)), m.group(3))
            continue
        if first == "-" and (m := _GO_FAIL.match(text)):
            test = found.get("go", m.group(1), i)
            if go_pending and go_running == m.group(1):
                test.file, test.line, test.message = go_pending
            go_running, go_pending = None, None
            continue
        # -- cargo test ---------------------------------------------------------------------
        if first == "t":
            if m := _CARGO_FAILED.match(text):
                found.get("cargo", m.group(1), i)
                continue
            if text.startswith("thread '"):
                if m := _RUST_PANIC_NEW.match(text):
                    if (("cargo", m.group(1))) in found.tests:
                        section = found.get("cargo", m.group(1), i)
                        section.file, section.line = m.group(2), int(m.group(3))
                    continue
                if m := _RUST_PANIC_OLD.match(text):
                    if ("cargo", m.group(1)) in found.tests:
                        test = found.get("cargo", m.group(1), i)
                        test.file, test.line = m.group(3), int(m.group(4))
                        _set_message(test, m.group(2))
                    continue
        if first == "-" and (m := _CARGO_STDOUT.match(text)):
            section = found.get("cargo", m.group(1), i)
            continue
        if section is not None and section.tool == "cargo" and section.line is not None:
            if not section.message and not text.startswith(("note:", "stack backtrace")):
                section.message = text
            continue
    return [t.signal() for t in found.tests.values()]
