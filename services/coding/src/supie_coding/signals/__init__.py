"""Signals extracted locally from a device's log buffer, one small extractor per kind of finding.

Every extractor is a pure function ``extract(lines) -> list[Signal]`` over the buffered
:class:`LogLine` entries (oldest first); :func:`extract_all` runs them all and returns the
findings de-duplicated, most serious first. No LLM is involved: these are what the insights are
built from, and what an LLM's answer is checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import (
    build,
    compile_errors,
    counts,
    failing_tests,
    imports,
    lint,
    network,
    notes,
    oom,
    timeouts,
    tracebacks,
)
from .model import Kind, LogLine, Signal, short_path

__all__ = ["EXTRACTORS", "Kind", "LogLine", "Signal", "combine", "extract_all", "short_path"]

EXTRACTORS: tuple[Callable[[Sequence[LogLine]], list[Signal]], ...] = (
    build.extract,
    compile_errors.extract,
    imports.extract,
    oom.extract,
    tracebacks.extract,
    failing_tests.extract,
    timeouts.extract,
    network.extract,
    lint.extract,
    counts.extract,
    notes.extract,
)
_ORDER = {kind: n for n, kind in enumerate(Kind)}


def extract_all(lines: Sequence[LogLine]) -> list[Signal]:
    """Every signal in ``lines``, de-duplicated, sorted by seriousness then position."""
    return combine([extractor(lines) for extractor in EXTRACTORS])


def combine(found: Sequence[list[Signal]]) -> list[Signal]:
    """The extractors' results (in :data:`EXTRACTORS` order) as :func:`extract_all` returns them."""
    seen: set[tuple[str, str, str, str, int | None, str]] = set()
    out: list[Signal] = []
    for signals in found:
        for signal in signals:
            if signal.key not in seen:
                seen.add(signal.key)
                out.append(signal)
    out.sort(key=lambda s: (_ORDER[s.kind], s.index))
    return out
