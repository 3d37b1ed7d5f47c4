"""Import and module-not-found errors: Python, Node / TypeScript / webpack, Go, Rust, C headers.

The signal names the missing module (``subject``), the file that wanted it when the log says,
and the ecosystem (``tool``), which decides the fix the heuristics suggest (``pip install`` for
a third-party Python package, a path check for a relative import).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, short_path

__all__ = ["extract", "IMPORT_CODES"]

# Compiler codes that mean "cannot find a module": compile_errors leaves these lines to us.
IMPORT_CODES = frozenset({"TS2307", "TS2792", "E0432", "E0433", "E0463"})

_PY_NO_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'")
_PY_CANNOT_IMPORT = re.compile(r"ImportError: cannot import name '(\w+)' from '([\w.]+)'")
_PY_FRAME = re.compile(r'^File "([^"]+)", line (\d+), in ')
_PYTEST_FRAME = re.compile(r"^(\S+?\.py):(\d+): in ")
_NODE = re.compile(r"Cannot find module '([^']+)'")
_TSC = re.compile(
    r"^(\S+?)(?:\((\d+),\d+\):|:(\d+):\d+ -) error (TS2307|TS2792): Cannot find module '([^']+)'"
)
_WEBPACK = re.compile(r"Module not found: Error: Can't resolve '([^']+)' in '([^']+)'")
_GO = re.compile(
    r"no required module provides package ([\w./-]+)|cannot find package \"([^\"]+)\""
    r"|package ([\w./-]+) is not in (?:GOROOT|std)"
)
_RUST = re.compile(r"^error\[(E0432|E0433|E0463)\]: (.+?)`([^`]+)`")
_RUST_AT = re.compile(r"^--> (\S+?):(\d+):\d+$")
_C_HEADER = re.compile(r"^(\S+?):(\d+):\d+: fatal error: ([\w./+-]+): No such file or directory")


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: dict[tuple[str, str], Signal] = {}
    where: tuple[str, int] | None = None  # the last Python frame seen: who imported it

    def add(tool: str, module: str, file: str, line: int | None, code: str, i: int) -> None:
        key = (tool, module)
        if key not in out:
            out[key] = Signal(
                Kind.IMPORT_ERROR,
                tool=tool,
                subject=module,
                file=short_path(file) if file else "",
                line=line,
                code=code,
                index=i,
            )

    for i, entry in enumerate(lines):
        text = entry.text
        if not text or entry.kind != "log":
            continue
        if text.startswith('File "') and (m := _PY_FRAME.match(text)):
            where = (m.group(1), int(m.group(2)))
            continue
        if ".py:" in text and (m := _PYTEST_FRAME.match(text)):
            where = (m.group(1), int(m.group(2)))
            continue
        if "odule" in text or "import" in text or "package" in text:
            if m := _PY_NO_MODULE.search(text):
                file, line = where if where else ("", None)
                add("python", m.group(1), file, line, "ModuleNotFoundError", i)
                continue
            if m := _PY_CANNOT_IMPORT.search(text):
                file, line = where if where else ("", None)
                add("python", f"{m.group(1)} from {m.group(2)}", file, line, "ImportError", i)
                continue
            if m := _TSC.match(text):
                add("typescript", m.group(5), m.group(1), int(m.group(2) or m.group(3)), "", i)
                continue
            if m := _WEBPACK.search(text):
                add("webpack", m.group(1), "", None, "", i)
                continue
            if m := _NODE.search(text):
                add("node", m.group(1), "", None, "", i)
                continue
            if text.startswith("error[") and (m := _RUST.match(text)):
                file, line = "", None
                for follow in lines[i + 1 : i + 4]:
                    if at := _RUST_AT.match(follow.text):
                        file, line = at.group(1), int(at.group(2))
                        break
                add("rust", m.group(3).split("::")[0], file, line, m.group(1), i)
                continue
            if m := _GO.search(text):
                add("go", next(g for g in m.groups() if g), "", None, "", i)
                continue
        if "No such file" in text and (m := _C_HEADER.match(text)):
            add("c", m.group(3), m.group(1), int(m.group(2)), "", i)
    return list(out.values())
