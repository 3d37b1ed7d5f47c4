"""Uncaught exceptions: Python tracebacks, Node stack traces, Rust and Go panics.

The signal names the exception (``subject``: ``KeyError``), its message, and the innermost frame
in the project's own code (frames in ``site-packages``, the standard library or ``<frozen ...>``
say little about what to fix). Failures that other extractors own are left to them: assertion
errors (a failing test), missing modules (imports), timeouts, memory errors (OOM).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, short_path

__all__ = ["extract"]

_PY_FRAME = re.compile(r'^File "([^"]+)", line (\d+), in (\S+)')
_PY_EXC = re.compile(
    r"^((?:[A-Za-z_]\w*\.)*(?:[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Iteration|Failure)"
    r"|KeyError|Warning))(?:: (.*))?$"
)
_JS_EXC = re.compile(r"^(?:Uncaught )?((?:[A-Z]\w*)?Error): (.+)$")
_JS_AT = re.compile(r"^at (?:(\S+) )?\(?((?:[A-Za-z]:)?[^\s():]+\.[cm]?[jt]sx?):(\d+):\d+\)?$")
_RUST_PANIC = re.compile(r"^thread '([^']+)' panicked at (?:'(.+)', )?(\S+?):(\d+):\d+:?$")
_GO_PANIC = re.compile(r"^panic: (.+?)(?: \[recovered\])?$")
_GO_FRAME = re.compile(r"^((?:[A-Za-z]:)?/?\S+?\.go):(\d+)(?: \+0x[0-9a-f]+)?$")

_OWNED_ELSEWHERE = (
    "AssertionError",
    "ModuleNotFoundError",
    "ImportError",
    "TimeoutError",
    "MemoryError",
    "Timeout",
)
_LIBRARY_PARTS = ("site-packages", "dist-packages", "/lib/python", "<frozen", "node_modules")


def _own_code(path: str) -> bool:
    return not any(part in path for part in _LIBRARY_PARTS) and not path.startswith("node:")


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: dict[tuple[str, str, int | None], Signal] = {}

    def add(tool: str, name: str, message: str, file: str, line: int | None, i: int) -> None:
        short = name.rsplit(".", 1)[-1]
        if short in _OWNED_ELSEWHERE or "out of memory" in message or "timed out" in message:
            return
        key = (short, short_path(file) if file else "", line)
        if key not in out:
            out[key] = Signal(
                Kind.EXCEPTION,
                tool=tool,
                subject=short,
                file=key[1],
                line=line,
                message=message.strip(),
                index=i,
            )

    in_traceback = False
    frame: tuple[str, int] | None = None  # innermost own frame of the current traceback
    any_frame: tuple[str, int] | None = None
    for i, entry in enumerate(lines):
        text = entry.text
        if not text or entry.kind != "log":
            continue
        if text.startswith("Traceback (most recent call last)"):
            in_traceback, frame, any_frame = True, None, None
            continue
        if in_traceback:
            if m := _PY_FRAME.match(text):
                any_frame = (m.group(1), int(m.group(2)))
                if _own_code(m.group(1)):
                    frame = any_frame
                continue
            if m := _PY_EXC.match(text):
                where = frame or any_frame
                file, line = where if where else ("", None)
                add("python", m.group(1), m.group(2) or "", file, line, i)
                in_traceback = False
            continue
        if text.startswith("thread '") and (m := _RUST_PANIC.match(text)):
            if m.group(1) == "main":  # a test thread's panic is a failing test
                message = m.group(2) or (lines[i + 1].text if i + 1 < len(lines) else "")
                add("rust", "panic", message, m.group(3), int(m.group(4)), i)
            continue
        if text.startswith("panic: ") and (m := _GO_PANIC.match(text)):
            file, line = "", None
            for follow in lines[i + 1 : i + 12]:
                if (at := _GO_FRAME.match(follow.text)) and "/runtime/" not in at.group(1):
                    file, line = at.group(1), int(at.group(2))
                    break
            add("go", "panic", m.group(1), file, line, i)
            continue
        if "Error: " in text and (m := _JS_EXC.match(text)):
            for follow in lines[i + 1 : i + 4]:
                at = _JS_AT.match(follow.text)
                if at and _own_code(at.group(2)):
                    add("node", m.group(1), m.group(2), at.group(2), int(at.group(3)), i)
                    break
    return list(out.values())
