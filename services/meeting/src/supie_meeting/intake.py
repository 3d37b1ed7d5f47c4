"""One way in for every line of a meeting: ASR finals, typed text and device snippets.

Whatever its source, an item gets the same treatment before it is stored: its text cut to
``meeting.snippet_max_bytes`` without splitting a UTF-8 character, the device's rate
(``snippets_per_second``, items per second), duplicates within ``dedup_window_s`` dropped (typed
text and snippets by their text; ASR finals by their utterance id, since people do say "yes"
twice), and at most ``max_pending`` items waiting for the next push. The request's id (message or
utterance) is recorded with the change in one Lua call, so a retry is stored once and answered
the same way. Nothing is created here: without an active meeting the answer is
``NO_ACTIVE_MEETING``.

What happens over a limit depends on who can wait: a snippet or typed text over the rate or the
pending cap is dropped and the badge is told (``dropped``/``reason``, or ``RATE_LIMITED``); a
spoken sentence is never dropped: the answer is ``retry`` and the router redelivers it later
(JetStream), which slows the device down without losing what was said.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loguru import logger
from supie_common.contracts import (
    DeviceInbound,
    ErrorCode,
    InboundReply,
    Transcript,
    now_ms,
)
from supie_common.contracts.device import MeetingSnippet
from supie_common.settings import MeetingSection

from .models import Segment
from .outbox import Outbox
from .snippets import cut_utf8
from .state import AppendResult, MeetingState
from .wire import error_frame, snippet_ack_frame

__all__ = ["Intake", "SEEN_TTL_S"]

# How long a device message id stays bound to its meeting: well past the gateway's retry window
# (server.accept_timeout_s, 30 s).
SEEN_TTL_S = 600
TYPED_TEXT_TAG = "TEXT"
ASR_TAG = "ASR"


@dataclass(frozen=True)
class _Item:
    segment: Segment
    deduplicate: bool


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


class Intake:
    def __init__(
        self, state: MeetingState, outbox: Outbox, config: Callable[[], MeetingSection]
    ) -> None:
        self.state = state
        self.outbox = outbox
        self.config = config

    async def snippet(self, inbound: DeviceInbound, message: MeetingSnippet) -> InboundReply:
        device = inbound.device_id
        now = now_ms()
        cut = self.config().snippet_max_bytes
        items = [
            _Item(
                Segment(
                    ts=now,
                    text=cut_utf8(it.text, cut),
                    speaker_id=(it.speaker_id or device[:8])[:64],
                    tag=it.tag[:64],
                ),
                deduplicate=True,
            )
            for it in message.items
        ]
        return await self._take(device, f"m:{inbound.message_id}", items, None, "snippet")

    async def transcript(self, t: Transcript) -> InboundReply:
        """A routed final (ASR or typed text); partials and empty texts are not stored."""
        text = t.text.strip()
        if t.kind != "final" or not text:
            return InboundReply()
        typed = t.source == "text"
        seg = Segment(
            ts=t.ts_ms,
            text=cut_utf8(text, self.config().snippet_max_bytes),
            speaker_id=t.device_id[:8],
            tag=TYPED_TEXT_TAG if typed else ASR_TAG,
            utterance_id=t.utterance_id[:128],
        )
        return await self._take(
            t.device_id,
            f"u:{t.utterance_id}",
            [_Item(seg, typed)],
            t.meeting_id,
            None,
            wait=not typed,
        )

    async def _take(
        self,
        device: str,
        request_id: str,
        items: Sequence[_Item],
        meeting_id: str | None,
        phase: str | None,
        *,
        wait: bool = False,
    ) -> InboundReply:
        """``wait``: over a limit, ask for a retry instead of dropping (speech)."""
        cfg = self.config()
        now = now_ms()
        resolved = await self.state.resolve(
            device,
            request_id,
            n=len(items),
            limit=cfg.snippets_per_second,
            rate_kind="items",
            window_s=1,
            now_ms=now,
            seen_ttl_s=SEEN_TTL_S,
            meeting_id=meeting_id,
        )
        if resolved.kind == "none" or resolved.meeting_id is None:
            return _no_meeting(phase)
        m = resolved.meeting_id
        if resolved.kind == "rate" and wait:
            return InboundReply(retry=True, error="rate limited: try again later")
        if resolved.kind == "rate":
            logger.warning("device {}: over {} items/s, dropped", device, cfg.snippets_per_second)
            return InboundReply(
                frames=[
                    error_frame(
                        ErrorCode.RATE_LIMITED,
                        f"more than {cfg.snippets_per_second} items/s; dropped",
                        phase=phase,
                    )
                ]
            )
        allowed = items[: resolved.allowed]
        res = await self.state.append(
            m,
            device,
            now,
            [(_digest(i.segment.text) if i.deduplicate else "", i.segment) for i in allowed],
            seen_id=request_id,
            max_pending=cfg.max_pending,
            dedup_ms=cfg.dedup_window_s * 1000,
            rate_dropped=len(items) - len(allowed),
            whole=wait,
        )
        if res.kind == "full":
            return InboundReply(retry=True, error="too many items waiting for a push")
        if res.kind == "missing":
            return _no_meeting(phase)
        if res.kind == "ok":
            for pos, index in res.accepted_indexes():
                await self.outbox.segment_added(m, device, index, allowed[pos].segment)
        if phase is None:  # routed text: the push shows it; only a drop is worth a word
            if res.kind == "ok" and res.overflow:
                return InboundReply(
                    frames=[
                        error_frame(
                            ErrorCode.RATE_LIMITED,
                            f"more than {cfg.max_pending} items waiting for a push; dropped",
                        )
                    ]
                )
            return InboundReply()
        return InboundReply(frames=[self._ack(m, device, res)])

    def _ack(self, m: str, device: str, res: AppendResult) -> str:
        if res.kind == "ignored":
            return snippet_ack_frame(m, ignored=True)
        dropped = res.rate_dropped + res.overflow
        reason = "pending_full" if res.overflow else "rate_limited"
        if dropped and res.kind == "ok":
            logger.warning("device {}: {} snippet items dropped ({})", device, dropped, reason)
        return snippet_ack_frame(
            m, accepted=res.accepted, duplicates=res.duplicates, dropped=dropped, reason=reason
        )


def _no_meeting(phase: str | None) -> InboundReply:
    return InboundReply(
        frames=[
            error_frame(
                ErrorCode.NO_ACTIVE_MEETING,
                "no active meeting: start one with mode start(meeting)",
                phase=phase,
            )
        ]
    )
