"""Compile and type errors with a file and a line: tsc, gcc / clang (and go, javac), rustc, mypy,
and linker errors (an undefined symbol has no line, only a name)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .imports import IMPORT_CODES
from .model import Kind, LogLine, Signal, short_path

__all__ = ["extract"]

_TSC = re.compile(r"^(\S+?)(?:\((\d+),\d+\):|:(\d+):\d+ -) error (TS\d+): (.+)$")
_CC = re.compile(
    r"^(\S+?\.(?:c|cc|cpp|cxx|c\+\+|h|hh|hpp|hxx|m|mm|java|swift|zig)):(\d+)(?::\d+)?: "
    r"(?:fatal )?error: (.+)$"
)
_GO = re.compile(r"^(\S+?\.go):(\d+):\d+: (.+)$")
_RUSTC = re.compile(r"^error(?:\[(E\d{4})\])?: (.+)$")
_RUST_AT = re.compile(r"^--> (\S+?):(\d+):\d+$")
_MYPY = re.compile(r"^(\S+?\.pyi?):(\d+)(?::\d+)?: error: (.+?)(?: \[([\w-]+)\])?$")
_LINKER = re.compile(
    r"undefined reference to [`'\"]?([^`'\"\s]+)[`'\"]?|Undefined symbols? .*?\"(\S+)\""
)
_RUST_NOT_ERRORS = (
    "could not compile",
    "aborting due to",
    "test failed",
    "Recipe",
    "process didn't exit",
    "failed to run custom build",
)
_TYPE_WORDS = ("type", "Type", "assignable", "mismatched", "expected")


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: dict[tuple[str, int | None, str], Signal] = {}

    def add(
        tool: str, file: str, line: int | None, message: str, code: str, i: int, subject: str = ""
    ) -> None:
        file = short_path(file) if file else ""
        key = (file or subject, line, code or message)
        if key in out:
            return
        is_type = tool in ("typescript", "mypy") or any(w in message for w in _TYPE_WORDS)
        out[key] = Signal(
            Kind.COMPILE_ERROR,
            tool=tool,
            subject=subject or ("type error" if is_type else "compile error"),
            file=file,
            line=line,
            message=message.rstrip("."),
            code=code,
            index=i,
        )

    for i, entry in enumerate(lines):
        text = entry.text
        if not text or entry.kind != "log" or "error" not in text and "undefined" not in text:
            continue
        if m := _TSC.match(text):
            if m.group(4) not in IMPORT_CODES:
                add(
                    "typescript",
                    m.group(1),
                    int(m.group(2) or m.group(3)),
                    m.group(5),
                    m.group(4),
                    i,
                )
            continue
        if m := _CC.match(text):
            if "No such file or directory" not in m.group(3):  # a missing header: imports
                tool = "javac" if m.group(1).endswith(".java") else "cc"
                add(tool, m.group(1), int(m.group(2)), m.group(3), "", i)
            continue
        if m := _MYPY.match(text):
            add("mypy", m.group(1), int(m.group(2)), m.group(3), m.group(4) or "", i)
            continue
        if text.startswith("error") and (m := _RUSTC.match(text)):
            code, message = m.group(1) or "", m.group(2)
            if code in IMPORT_CODES or message.startswith(_RUST_NOT_ERRORS):
                continue
            file, line = "", None
            for follow in lines[i + 1 : i + 4]:
                if at := _RUST_AT.match(follow.text):
                    file, line = at.group(1), int(at.group(2))
                    break
            if file or code:
                add("rustc", file, line, message, code, i)
            continue
        if m := _LINKER.search(text):
            symbol = m.group(1) or m.group(2)
            add("linker", "", None, f"undefined reference to {symbol}", "", i, subject=symbol)
            continue
        if ".go:" in text and (m := _GO.match(text)) and "_test.go" not in m.group(1):
            add("go", m.group(1), int(m.group(2)), m.group(3), "", i)
    return list(out.values())
