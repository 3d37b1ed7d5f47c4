"""What the extractors find in a log, and the log line they read it from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Kind", "LogLine", "Signal", "lines_with", "short_path"]


class Kind(StrEnum):
    """Signal kinds, most serious first (the order insights are written in)."""

    BUILD_FAILED = "build_failed"  # make/cargo/npm/tsc gave up, a step failed
    COMPILE_ERROR = "compile_error"  # tsc, gcc/clang, rustc, mypy: a file, a line, a code
    IMPORT_ERROR = "import_error"  # a module, package, crate or header that cannot be found
    OOM = "oom"  # out of memory, killed by the kernel / exit 137
    EXCEPTION = "exception"  # an uncaught exception (a Python traceback, a Rust/Go panic)
    TEST_FAILED = "test_failed"  # one failing test (pytest, unittest, jest/vitest, go, cargo)
    TIMEOUT = "timeout"  # a test, a request or a job that ran out of time
    NETWORK = "network"  # DNS, refused/reset connections, TLS, unreachable registries
    LINT = "lint"  # linter findings and compiler warnings
    COUNTS = "counts"  # passed / failed / skipped totals reported by a test runner
    BUILD_OK = "build_ok"  # the build or the test run succeeded
    NOTE = "note"  # something the developer said (coding-mode speech)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One buffered entry: a ``log`` line, a spoken ``note``, a ``step`` or a ``phase``."""

    text: str
    level: str = "info"  # info | warn | error | note
    kind: str = "log"  # log | note | step | phase
    name: str = ""  # step name / phase value
    status: str = ""  # step status

    def as_dict(self) -> dict[str, str]:
        out = {"t": self.text, "l": self.level, "k": self.kind}
        if self.name:
            out["n"] = self.name
        if self.status:
            out["s"] = self.status
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogLine:
        return cls(
            text=str(d.get("t", "")),
            level=str(d.get("l", "info")),
            kind=str(d.get("k", "log")),
            name=str(d.get("n", "")),
            status=str(d.get("s", "")),
        )


@dataclass(frozen=True, slots=True)
class Signal:
    """One finding. ``subject`` is what it is about (a test, a module, a host, a rule), ``file``
    and ``line`` where, ``message`` a short detail, ``tool`` who reported it."""

    kind: Kind
    tool: str = ""
    subject: str = ""
    file: str = ""
    line: int | None = None
    message: str = ""
    code: str = ""  # TS2322, E0308, F401, exit status...
    counts: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    index: int = field(default=0, compare=False)  # position of the line it was read from

    @property
    def key(self) -> tuple[str, str, str, str, int | None, str]:
        """What makes two signals the same finding (for de-duplication)."""
        return (self.kind.value, self.tool, self.subject, self.file, self.line, self.code)

    @property
    def where(self) -> str:
        """``path line N`` (never ``path:N:``: the form a log line has, see heuristics)."""
        if not self.file:
            return ""
        return f"{self.file} line {self.line}" if self.line else self.file

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        for name in ("tool", "subject", "file", "line", "message", "code"):
            value = getattr(self, name)
            if value not in ("", None):
                out[name] = value
        if self.counts:
            out["counts"] = dict(self.counts)
        return out


def lines_with(lines: Sequence[LogLine], words: Sequence[str]) -> list[int]:
    """The positions of the lines holding one of ``words`` (plain substrings), in order.

    An extractor reads only these when every line it acts on holds one of its words: a few
    substring searches of the whole buffer (in C) instead of a few tests per line (in Python)
    for the 200 lines of each insight, most of which hold none."""
    blob = "\n".join([entry.text for entry in lines])
    found: set[int] = set()
    for word in words:
        at = blob.find(word)
        while at >= 0:
            found.add(blob.count("\n", 0, at))  # the line it is in (hits are few)
            end = blob.find("\n", at + len(word))
            at = blob.find(word, end + 1) if end >= 0 else -1
    return sorted(found)


def short_path(path: str) -> str:
    """A path as short as it can be while still naming the file: absolute checkout prefixes
    dropped (``/home/dev/shop/shop/config.py`` -> ``shop/config.py``)."""
    path = path.strip().strip("\"'")
    if path.startswith(("./", ".\\")):
        path = path[2:]
    if path.startswith("/") or (len(path) > 2 and path[1] == ":"):
        parts = path.replace("\\", "/").split("/")
        # keep the last two components: "<package>/<module>.py" names the file well enough
        if len(parts) > 3:
            return "/".join(parts[-2:])
    return path
