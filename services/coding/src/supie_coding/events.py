"""A device's ``coding`` message as the service applies it: normalised text, the buffered entry,
whether it asks for an insight now, and the semantic errors that name their field."""

from __future__ import annotations

from dataclasses import dataclass

from supie_common.contracts.device import (
    CodingClear,
    CodingError,
    CodingLog,
    CodingMessage,
    CodingPhase,
    CodingStart,
    CodingStep,
    CodingStop,
    ErrorCode,
)

from .normalize import normalize_text
from .signals import LogLine
from .signals.build import FAILED_STATUSES

__all__ = ["Event", "SchemaInvalid", "event_of", "note_event"]

STEP_NAME_MAX = 200
STATUS_MAX = 32
PHASE_MAX = 64


class SchemaInvalid(ValueError):
    """Valid JSON of the right type, but nothing usable once normalised."""

    def __init__(self, field: str, message: str, event: str) -> None:
        super().__init__(message)
        self.field = field
        self.event = event

    def error(self) -> CodingError:
        return CodingError(
            code=ErrorCode.SCHEMA_INVALID, field=self.field, message=str(self), event=self.event
        )


@dataclass(frozen=True, slots=True)
class Event:
    op: str  # start | stop | clear | phase | log | step | note
    entry: LogLine | None = None
    immediate: bool = False  # an error line, a step or a phase: the insight is due now
    value: str = ""  # phase value / step name
    status: str = ""  # step status


def _required(text: str, field: str, event: str) -> str:
    if not text:
        raise SchemaInvalid(
            field, f"{field}: empty once whitespace and code fences are removed", event
        )
    return text


def event_of(message: CodingMessage, max_len: int) -> Event:
    """Raises :class:`SchemaInvalid` for a message with nothing left to record."""
    if isinstance(message, CodingStart | CodingStop | CodingClear):
        return Event(message.event)
    if isinstance(message, CodingLog):
        text = _required(normalize_text(message.text, max_len), "text", "log")
        entry = LogLine(
            text, level=message.level, kind="note" if message.level == "note" else "log"
        )
        return Event("log", entry, immediate=message.level == "error")
    if isinstance(message, CodingStep):
        name = _required(normalize_text(message.name, min(max_len, STEP_NAME_MAX)), "name", "step")
        status = normalize_text(message.status or "", STATUS_MAX).lower()
        text = f"step {name}: {status}" if status else f"step {name}"
        level = "error" if status in FAILED_STATUSES else "info"
        entry = LogLine(text, level=level, kind="step", name=name, status=status)
        return Event("step", entry, immediate=True, value=name, status=status)
    if isinstance(message, CodingPhase):
        value = _required(normalize_text(message.value, PHASE_MAX), "phase", "phase")
        entry = LogLine(f"phase {value}", kind="phase", name=value)
        return Event("phase", entry, immediate=True, value=value)
    raise SchemaInvalid("event", "event: expected start, stop, clear, phase, log or step", "")


def note_event(text: str, max_len: int) -> Event | None:
    """A coding-mode utterance as a ``note`` line (None when nothing is left of it)."""
    text = normalize_text(text, max_len)
    if not text:
        return None
    return Event("note", LogLine(text, level="note", kind="note"))
