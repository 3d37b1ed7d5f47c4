"""Voice and typed commands in working mode: what was said, and which task it means.

Recognition uses the phrase table shared with the meeting's voice commands
(``supie_common.commands``: negation and filler rules included); an LLM may back it when
``llm_by_mode.intent`` is configured (:mod:`.intent_llm`). The ordinal counts the group's *open*
tasks in snapshot order; without one, the first actionable task is meant: for ``complete`` the
first open task the speaker owns, else the first open one; for ``assign`` the first open task
nobody owns, else the first open one the speaker does not own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supie_common.commands import WORKING_INTENTS, Intent, parse_command
from supie_common.contracts.device import Task

__all__ = ["Command", "CommandIntent", "recognise_rules", "open_tasks", "pick_target"]

CommandIntent = Literal["assign", "complete", "refresh"]
_WORKING = ("assign", "complete", "refresh")


@dataclass(frozen=True)
class Command:
    intent: CommandIntent
    ordinal: int | None = None  # 1-based, as spoken
    source: Literal["rules", "llm"] = "rules"


def recognise_rules(text: str) -> Command | None:
    """The command the shared phrase table finds in ``text``, if it is one of working mode's
    (a mode switch is the gateway's business)."""
    found = parse_command(text, WORKING_INTENTS)
    if found is None:
        return None
    if found.intent is Intent.ASSIGN:
        return Command("assign", found.ordinal)
    if found.intent is Intent.COMPLETE:
        return Command("complete", found.ordinal)
    if found.intent is Intent.REFRESH:
        return Command("refresh", found.ordinal)
    return None


def open_tasks(tasks: list[Task]) -> list[Task]:
    """The open tasks in snapshot order (what "the second task" counts)."""
    return [t for t in tasks if t.status == "open"]


def pick_target(command: Command, tasks: list[Task], me: str) -> Task | None:
    candidates = open_tasks(tasks)
    if command.ordinal is not None:
        index = command.ordinal - 1
        return candidates[index] if 0 <= index < len(candidates) else None
    if command.intent == "complete":
        mine = [t for t in candidates if t.owner == me]
        return next(iter(mine or candidates), None)
    if command.intent == "assign":
        free = [t for t in candidates if not t.owner]
        others = [t for t in candidates if t.owner != me]
        return next(iter(free or others), None)
    return None
