"""Listen start/stop debounce that *coalesces* (SPEC §3, issue 9 item 9).

Start/stop repeated within the window are not applied one by one: the last state seen wins and
is applied when the window ends. So a short push-to-talk press (start, stop 100 ms later) still
ends its utterance, and a bouncing button does not open and close the stream ten times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supie_common.contracts import ListenMode

__all__ = ["ListenDebounce", "ListenEvent"]


@dataclass(frozen=True, slots=True)
class ListenEvent:
    state: Literal["start", "stop"]
    mode: ListenMode | None = None


class ListenDebounce:
    """Pure state: the caller supplies the clock and runs the timer."""

    def __init__(self) -> None:
        self.applied: ListenEvent | None = None
        self.applied_at: float | None = None
        self.pending: ListenEvent | None = None
        self.due_at: float | None = None

    def offer(self, event: ListenEvent, now: float, window_s: float) -> ListenEvent | None:
        """The event to apply now, or None when it waits (then :attr:`due_at` says until when:
        call :meth:`take_due` then)."""
        if self.pending is None and (self.applied_at is None or now - self.applied_at >= window_s):
            return self._apply(event, now)
        self.pending = event
        if self.due_at is None:
            self.due_at = (self.applied_at or now) + window_s
        return None

    def take_due(self, now: float) -> ListenEvent | None:
        """The coalesced event once the window is over (None: it changes nothing)."""
        event, self.pending, self.due_at = self.pending, None, None
        if event is None or event == self.applied:
            return None
        return self._apply(event, now)

    def _apply(self, event: ListenEvent, now: float) -> ListenEvent:
        self.applied, self.applied_at = event, now
        return event
