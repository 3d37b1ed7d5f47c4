"""Voice (and typed) commands the gateway's router acts on: finalize in meeting mode, a mode
switch in any mode. Working-mode intents (assign / complete / refresh) are the workflow
service's: its finals go there whole, and it reads them with the same table.

The phrase table and its rules (the utterance *is* the command; no negation) are
:mod:`supie_common.commands`, shared with the workflow service.
"""

from __future__ import annotations

from dataclasses import dataclass

from supie_common.commands import MEETING_INTENTS, Intent, parse_command
from supie_common.contracts import Mode

__all__ = ["VoiceCommand", "parse_voice_command"]

_SWITCH_ONLY = frozenset({Intent.SWITCH_MODE})


@dataclass(frozen=True, slots=True)
class VoiceCommand:
    intent: str  # "finalize" | "mode_switch"
    target_mode: Mode | None = None
    keyword: str = ""


def parse_voice_command(text: str, mode: Mode | None) -> VoiceCommand | None:
    """The command ``text`` is in ``mode`` (finalize only in meeting mode), else None."""
    found = parse_command(text, MEETING_INTENTS if mode == "meeting" else _SWITCH_ONLY)
    if found is None:
        return None
    if found.intent is Intent.FINALIZE:
        return VoiceCommand("finalize", None, found.keyword)
    if found.intent is Intent.SWITCH_MODE and found.target_mode is not None:
        return VoiceCommand("mode_switch", found.target_mode, found.keyword)
    return None
