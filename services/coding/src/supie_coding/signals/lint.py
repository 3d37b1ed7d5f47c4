"""Lint findings and compiler warnings: ruff / flake8 / pycodestyle, pylint, eslint (stylish
output: a file line, then ``line:col severity message rule``), gcc/clang and rustc warnings.

One signal per finding (``code`` = the rule, ``file``/``line``), plus one per summary line
("Found 3 errors.", "✖ 2 problems") with ``counts`` so the total is known even when the
buffer only holds the tail of a long report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, short_path

__all__ = ["extract"]

_RUFF = re.compile(r"^(\S+?\.pyi?):(\d+):\d+: ([A-Z]{1,4}\d{2,4}) (?:\[\*\] )?(.+)$")
_PYLINT = re.compile(r"^(\S+?\.py):(\d+):\d+: ([CRWEF]\d{4}): (.+?)(?: \(([\w-]+)\))?$")
_ESLINT_FILE = re.compile(r"^((?:[A-Za-z]:)?\S+\.(?:[cm]?[jt]sx?|vue|svelte|astro))$")
_ESLINT_ROW = re.compile(r"^(\d+):\d+ (warning|error) (.+) ((?:@[\w-]+/)?[\w-]+(?:/[\w-]+)?)$")
_CC_WARNING = re.compile(
    r"^(\S+?\.(?:c|cc|cpp|cxx|h|hpp|m|mm)):(\d+):\d+: warning: (.+?)(?: \[(-W[\w=-]+)\])?$"
)
_RUST_WARNING = re.compile(r"^warning: (.+)$")
_RUST_AT = re.compile(r"^--> (\S+?):(\d+):\d+$")
_RUFF_SUMMARY = re.compile(r"^Found (\d+) errors?\.?$")
_RUFF_FIXABLE = re.compile(r"^\[\*\] (\d+) fixable with the `--fix` option")
_ESLINT_SUMMARY = re.compile(r"^✖ (\d+) problems? \((\d+) errors?, (\d+) warnings?\)")


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: list[Signal] = []
    eslint_file = ""
    for i, entry in enumerate(lines):
        text = entry.text
        if not text or entry.kind != "log":
            continue
        if ":" not in text and text[0] not in "✖/" and "." not in text:
            continue  # every finding, summary and eslint file line has one of these
        python = ".py" in text  # what a ruff or pylint finding names
        if python and (m := _RUFF.match(text)):
            out.append(
                Signal(
                    Kind.LINT,
                    tool="ruff",
                    file=short_path(m.group(1)),
                    line=int(m.group(2)),
                    code=m.group(3),
                    message=m.group(4),
                    index=i,
                )
            )
            continue
        if python and (m := _PYLINT.match(text)):
            out.append(
                Signal(
                    Kind.LINT,
                    tool="pylint",
                    file=short_path(m.group(1)),
                    line=int(m.group(2)),
                    code=m.group(5) or m.group(3),
                    message=m.group(4),
                    index=i,
                )
            )
            continue
        if " " not in text and (m := _ESLINT_FILE.match(text)):
            eslint_file = short_path(m.group(1))
            continue
        if eslint_file and text[0].isdigit() and (m := _ESLINT_ROW.match(text)):
            out.append(
                Signal(
                    Kind.LINT,
                    tool="eslint",
                    file=eslint_file,
                    line=int(m.group(1)),
                    code=m.group(4),
                    message=m.group(3),
                    subject=m.group(2),
                    index=i,
                )
            )
            continue
        if "warning" in text:
            if m := _CC_WARNING.match(text):
                out.append(
                    Signal(
                        Kind.LINT,
                        tool="cc",
                        file=short_path(m.group(1)),
                        line=int(m.group(2)),
                        code=m.group(4) or "warning",
                        message=m.group(3),
                        index=i,
                    )
                )
                continue
            if (m := _RUST_WARNING.match(text)) and not m.group(1).startswith("`"):
                for follow in lines[i + 1 : i + 4]:
                    if at := _RUST_AT.match(follow.text):
                        out.append(
                            Signal(
                                Kind.LINT,
                                tool="rustc",
                                file=short_path(at.group(1)),
                                line=int(at.group(2)),
                                code="warning",
                                message=m.group(1),
                                index=i,
                            )
                        )
                        break
                continue
        if text[0] not in "F[✖":  # how each summary below starts
            continue
        if m := _RUFF_SUMMARY.match(text):
            counts = {"problems": int(m.group(1))}
            out.append(Signal(Kind.LINT, tool="ruff", code="summary", counts=counts, index=i))
            continue
        if m := _RUFF_FIXABLE.match(text):
            counts = {"fixable": int(m.group(1))}
            out.append(Signal(Kind.LINT, tool="ruff", code="fixable", counts=counts, index=i))
            continue
        if m := _ESLINT_SUMMARY.match(text):
            counts = {
                "problems": int(m.group(1)),
                "errors": int(m.group(2)),
                "warnings": int(m.group(3)),
            }
            out.append(Signal(Kind.LINT, tool="eslint", code="summary", counts=counts, index=i))
    return out
