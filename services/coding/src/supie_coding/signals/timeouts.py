"""Timeouts: a test over its limit (pytest-timeout, jest, go test), a request that timed out
(``requests``, ``httpx``, Node ``ETIMEDOUT``, gRPC/Go deadlines), a CI job over its time."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, lines_with

__all__ = ["extract"]

_PYTEST_FAILED = re.compile(r"^FAILED (\S+?\.py)::(\S+) - .*Timeout >([\d.]+)s")
_PYTEST_TIMEOUT = re.compile(r"Timeout >([\d.]+)s")
_GO = re.compile(r"^panic: test timed out after (\S+)")
_GO_RUNNING = re.compile(r"^(Test\w+) \((\S+)\)$")
_JEST = re.compile(r"Exceeded timeout of (\d+) ms for a (?:test|hook)")
_JEST_BULLET = re.compile(r"^● (.+)$")
_HOST = re.compile(r"host='([^']+)'|https?://([^/\s:'\"]+)|ETIMEDOUT (\d[\d.]+(?::\d+)?)")
_AFTER = re.compile(r"(?:timed out|timeout) after (\d+(?:\.\d+)?) ?(ms|s|seconds?|minutes?|m)\b")
_GENERIC = re.compile(
    r"Read timed out|Connect(?:ion)? ?timed out|ConnectTimeout|ReadTimeout|TimeoutError"
    r"|ETIMEDOUT|deadline exceeded|DEADLINE_EXCEEDED|operation timed out|timed out after"
    r"|has exceeded the maximum execution time|Timed out waiting"
)


# Every line acted on below holds one of these (a jest bullet names the test that follows).
_WORDS = ("●", "imeout", "timed out", "TIMEDOUT", "DEADLINE", "deadline", "exceeded")


def _host(text: str) -> str:
    m = _HOST.search(text)
    return next((g for g in m.groups() if g), "") if m else ""


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: dict[str, Signal] = {}
    jest_test = ""

    def add(subject: str, signal: Signal) -> None:
        out.setdefault(subject or f"#{len(out)}", signal)

    for i in lines_with(lines, _WORDS):
        entry = lines[i]
        text = entry.text
        if not text or entry.kind != "log":
            continue
        if text[0] == "●" and (m := _JEST_BULLET.match(text)):
            jest_test = m.group(1)
            continue
        if "imeout" not in text and "timed out" not in text and "TIMEDOUT" not in text:
            if "DEADLINE" not in text and "deadline" not in text and "exceeded" not in text:
                continue
        if m := _PYTEST_FAILED.match(text):
            out.pop("pytest", None)
            add(
                m.group(2),
                Signal(
                    Kind.TIMEOUT,
                    tool="pytest",
                    subject=m.group(2),
                    file=m.group(1),
                    code=f"{float(m.group(3)):g}s",
                    index=i,
                ),
            )
            continue
        if m := _PYTEST_TIMEOUT.search(text):
            if not any(s.tool == "pytest" for s in out.values()):
                code = f"{float(m.group(1)):g}s"
                out["pytest"] = Signal(Kind.TIMEOUT, tool="pytest", code=code, index=i)
            continue
        if m := _GO.match(text):
            test = ""
            for follow in lines[i + 1 : i + 6]:
                if run := _GO_RUNNING.match(follow.text):
                    test = run.group(1)
                    break
            add(test, Signal(Kind.TIMEOUT, tool="go", subject=test, code=m.group(1), index=i))
            continue
        if m := _JEST.search(text):
            code = f"{int(m.group(1)) / 1000:g}s"
            add(jest_test, Signal(Kind.TIMEOUT, tool="jest", subject=jest_test, code=code, index=i))
            continue
        if _GENERIC.search(text):
            host = _host(text)
            code = ""
            if after := _AFTER.search(text):
                unit = after.group(2)
                code = after.group(1) + ("ms" if unit == "ms" else unit[0])
            tool = "request" if host else ""
            add(host, Signal(Kind.TIMEOUT, tool=tool, subject=host, code=code, index=i))
    return list(out.values())
