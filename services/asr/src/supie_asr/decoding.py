"""Pure helpers of whisper decoding: the quality checks behind temperature fallback and the
trimming of repetition loops. No model here, so they are tested on plain values."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

__all__ = ["compression_ratio", "average_logprob", "trim_repetitions"]


def compression_ratio(text: str) -> float:
    """How well the text compresses: looping output ("the the the ...") compresses far better
    than speech does (whisper's own check uses the same gzip-style ratio, threshold 2.4)."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def average_logprob(score: float, tokens: int, length_penalty: float = 1.0) -> float:
    """CTranslate2 reports a length-normalised score; whisper's threshold is on the mean
    log-probability per token, counting the end-of-text token."""
    cumulative = score * (tokens**length_penalty)
    return cumulative / (tokens + 1)


def trim_repetitions(
    tokens: Sequence[int], *, min_repeats: int = 3, max_period: int = 32
) -> list[int]:
    """Cut a loop at the end of a hypothesis down to one occurrence.

    A loop is a block of 1..``max_period`` tokens repeated back to back at least
    ``min_repeats`` times (blocks of one token: twice as many, so "ha ha ha" survives) up to the
    end of the hypothesis, which is where whisper's loops sit: once it repeats, it repeats until
    the length cap, which may cut the last block short. Everything before the loop and its first
    occurrence are kept."""
    out = list(tokens)
    n = len(out)
    best: int | None = None
    for period in range(1, min(max_period, n // min_repeats) + 1):
        need = min_repeats * 2 if period == 1 else min_repeats
        run = 0  # trailing positions equal to the token one period earlier
        while run < n - period and out[n - 1 - run] == out[n - 1 - run - period]:
            run += 1
        if run + period >= need * period:
            keep = n - run  # the loop starts at n - run - period; keep one block
            if best is None or keep < best:
                best = keep
    return out if best is None else out[:best]
