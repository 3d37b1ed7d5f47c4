"""Log text as the service stores it: one line, no terminal colours, no code fences, bounded.

Badges show a few lines of small text, and the buffer is fed to extractors and an LLM: ANSI
colour codes (``pytest --color=yes`` piped through) and Markdown fences carry nothing, runs of
whitespace only cost space. The cut counts characters (code points), so a multi-byte character
is never split and the stored text always encodes back to valid UTF-8.
"""

from __future__ import annotations

import re

__all__ = ["normalize_text", "cut"]

# CSI sequences (colours, cursor moves) and OSC sequences (terminal titles, hyperlinks).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# A fence marker with its optional language tag: ```python, ~~~, ```
_FENCE = re.compile(r"(?:```|~~~)[A-Za-z0-9_+.-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def cut(text: str, max_len: int) -> str:
    """At most ``max_len`` code points; a lone surrogate (not valid UTF-8) is dropped first."""
    if len(text) > max_len:
        text = text[:max_len].rstrip()
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub("", text)
    return text


def normalize_text(text: str, max_len: int) -> str:
    """Colours and fences stripped, whitespace (newlines included) collapsed to single spaces,
    cut to ``max_len`` characters. May return ``""`` (only fences or whitespace)."""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "```" in text or "~~~" in text:
        text = _FENCE.sub(" ", text)
    if not text.isprintable():  # a printable text holds no control character: the usual line
        text = _CONTROL.sub("", text)
    # split() and \s agree on what whitespace is (str.isspace): runs collapsed, ends stripped
    text = " ".join(text.split())
    return cut(text, max_len)
