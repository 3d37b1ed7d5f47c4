"""Out of memory: the kernel's OOM killer, a bare ``Killed``, exit status 137, and the runtimes'
own words (Python ``MemoryError``, the Node heap limit, Java, CUDA, Go, Rust, C++).

One signal for the whole buffer: the most informative report wins (the kernel names the process
and its pid; ``Killed`` alone only says SIGKILL).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, lines_with

__all__ = ["extract"]

_KERNEL = re.compile(r"Out of memory: Killed process (\d+) \(([^)]+)\)")
_CGROUP = re.compile(r"Memory cgroup out of memory: Killed process (\d+) \(([^)]+)\)")
_EXIT_137 = re.compile(r"(?:Error|exit code|exit status|exited with code|status) 137\b")
_RUNTIMES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"JavaScript heap out of memory"), "node", "the Node.js heap limit was reached"),
    (re.compile(r"java\.lang\.OutOfMemoryError(?:: (.+))?"), "java", "the JVM ran out of heap"),
    (re.compile(r"CUDA out of memory"), "cuda", "the GPU ran out of memory"),
    (re.compile(r"^MemoryError\b|\bMemoryError$"), "python", "Python raised MemoryError"),
    (re.compile(r"fatal error: runtime: out of memory"), "go", "the Go runtime ran out of memory"),
    (re.compile(r"memory allocation of \d+ bytes failed"), "rust", "an allocation failed"),
    (re.compile(r"std::bad_alloc"), "c++", "an allocation failed (std::bad_alloc)"),
    (re.compile(r"\bOOMKilled\b"), "kubernetes", "the container was OOM-killed"),
    (re.compile(r"Cannot allocate memory"), "os", "the system could not allocate memory"),
)
# Every line acted on below holds one of these.
_WORDS = ("emory", "OOM", "alloc", "Killed", "137")
_STRENGTH = {"kernel": 4, "kubernetes": 3, "runtime": 3, "exit": 2, "killed": 1}


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    best: tuple[int, Signal] | None = None

    def offer(strength: int, signal: Signal) -> None:
        nonlocal best
        if best is None or strength > best[0]:
            best = (strength, signal)

    for i in lines_with(lines, _WORDS):
        entry = lines[i]
        text = entry.text
        if not text or entry.kind != "log":
            continue
        if "emory" in text or "OOM" in text or "alloc" in text:
            if m := _KERNEL.search(text) or _CGROUP.search(text):
                offer(
                    _STRENGTH["kernel"],
                    Signal(
                        Kind.OOM,
                        tool="kernel",
                        subject=m.group(2),
                        code=m.group(1),
                        message="killed by the kernel's OOM killer",
                        index=i,
                    ),
                )
                continue
            for pattern, tool, message in _RUNTIMES:
                if pattern.search(text):
                    strength = _STRENGTH["kubernetes" if tool == "kubernetes" else "runtime"]
                    offer(strength, Signal(Kind.OOM, tool=tool, message=message, index=i))
                    break
            continue
        if text == "Killed" or text.endswith(": Killed") or text == "Killed: 9":
            offer(_STRENGTH["killed"], Signal(Kind.OOM, tool="shell", code="SIGKILL", index=i))
            continue
        if "137" in text and _EXIT_137.search(text):
            offer(_STRENGTH["exit"], Signal(Kind.OOM, tool="exit", code="137", index=i))
    return [best[1]] if best is not None else []
