"""Idle policy (SPEC §3), as pure decisions over a session and the settings.

- Layer 1, checked on each audio frame: the badge streams but nobody spoke (and no message came)
  for the no-voice threshold (x3 in meeting/working): warn ``grace`` before, then close.
- Layer 2, checked by the sweep: nothing at all from the badge for threshold + extra: a
  ``timeout_warning``, then close after ``hard_close_wait_s`` unless something arrives.
- App keepalive: nothing *sent* to the badge for ``app_keepalive_s``: send a harmless message
  (the firmware drops its audio channel after 120 s without an incoming message).
"""

from __future__ import annotations

from typing import Literal

from supie_common.settings import ServerSection

from .session import DeviceSession

__all__ = ["hard_idle", "keepalive_due", "no_voice"]


def no_voice(
    s: DeviceSession, server: ServerSection, now: float
) -> Literal["warn", "close"] | None:
    if s.closing:
        return None
    threshold = server.no_voice_threshold_s(s.mode)
    silent = now - s.last_voice
    if silent >= threshold:
        return "close"
    if silent >= threshold - server.idle_grace_s(threshold) and not s.idle_warned:
        return "warn"
    return None


def hard_idle(
    s: DeviceSession, server: ServerSection, now: float
) -> Literal["warn", "close"] | None:
    if s.closing:
        return None
    if s.hard_warned_at is None:
        limit = server.no_voice_threshold_s(s.mode) + server.hard_close_extra_s
        return "warn" if now - s.last_inbound >= limit else None
    return "close" if now - s.hard_warned_at >= server.hard_close_wait_s else None


def keepalive_due(s: DeviceSession, server: ServerSection, now: float) -> bool:
    every = server.app_keepalive_s
    return bool(every) and s.hello_done and not s.closing and now - s.last_sent >= every
