"""One interface, two producers: the configured LLM, else (or on any failure) the local one.

An LLM call runs under a deadline (``meeting.summary_deadline_s`` for final summaries,
``meeting.checkpoint_deadline_s`` for checkpoints): a slow or failing LLM falls back to the local
summarizer, so a meeting is never held up by it. Local summaries of long meetings are CPU work:
they run in worker threads, :data:`LOCAL_SUMMARY_WORKERS` at a time, so the event loop (ACKs,
lease renewals) stays responsive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger
from supie_common.contracts import MeetingSegment as Segment
from supie_common.settings import SupieSettings

from .config import MeetingSettings
from .llm import LlmClients, LlmError, build_prompt
from .local_summarizer import detect_language, summarize_local
from .summary import Summary, is_weak, normalize_summary

__all__ = ["LOCAL_SUMMARY_WORKERS", "Summarizer", "SummaryResult"]

LOCAL_SUMMARY_WORKERS = 2  # local summaries at once per replica (CPU-bound, in threads)


def _fields(seg: Segment | Mapping[str, Any]) -> tuple[str, str]:
    """(speaker, text) of a segment record or a plain dict."""
    if isinstance(seg, Segment):
        return seg.speaker_id or "", seg.text
    return str(seg.get("speakerId") or ""), str(seg.get("text") or "")


@dataclass
class SummaryResult:
    summary: Summary
    source: str  # "llm" | "local"
    llm_elapsed_ms: int
    elapsed_ms: int
    fallback_reason: str | None = None


class Summarizer:
    """Turns transcript segments into a :class:`Summary`; never raises for bad input."""

    def __init__(self, settings: MeetingSettings) -> None:
        self.settings = settings
        self.clients = LlmClients()
        self._local_slots = asyncio.Semaphore(LOCAL_SUMMARY_WORKERS)

    async def reload(self, settings: MeetingSettings) -> None:
        self.settings = settings
        await self.clients.clear()

    def _provider(self, settings: SupieSettings) -> tuple[str, Any] | None:
        alias = settings.llm_by_mode.alias_for("meeting")
        if not alias:
            return None
        provider = settings.llm.get(alias)
        if provider is None:
            logger.warning("llm_by_mode.meeting names unknown provider {!r}; using local", alias)
            return None
        return alias, provider

    async def summarize(
        self,
        segments: Sequence[Segment | Mapping[str, Any]],
        duration_ms: int,
        *,
        checkpoint: bool = False,
        deadline_s: float | None = None,
    ) -> SummaryResult:
        """Never raises for bad input or a bad LLM. ``deadline_s``: the most the LLM may take
        (default: the configured summary or checkpoint deadline)."""
        started = time.perf_counter()
        settings = self.settings
        cfg = settings.meeting
        if deadline_s is None:
            deadline_s = cfg.checkpoint_deadline_s if checkpoint else cfg.summary_deadline_s
        pairs = [_fields(s) for s in segments]
        texts = [text for _, text in pairs if text]
        fallback_title = (
            "会议纪要" if detect_language(" ".join(texts[:50])) == "zh" else "Meeting notes"
        )
        llm_ms = 0
        reason: str | None = None
        chosen = self._provider(settings)
        if chosen is not None:
            alias, provider = chosen
            lines = [f"[{speaker}] {text}" for speaker, text in pairs]
            prompt = build_prompt(lines, cfg.summary_transcript_max_chars, checkpoint=checkpoint)
            timeout_s = min(cfg.llm_timeout_s or provider.timeout_s, deadline_s)
            t0 = time.perf_counter()
            try:
                # The httpx timeout covers each phase; the deadline covers the whole call.
                raw = await asyncio.wait_for(
                    self.clients.complete_json(
                        alias,
                        provider,
                        prompt,
                        max_tokens=cfg.checkpoint_max_tokens if checkpoint else cfg.max_tokens,
                        timeout_s=timeout_s,
                    ),
                    deadline_s,
                )
                llm_ms = int((time.perf_counter() - t0) * 1000)
                summary = normalize_summary(
                    raw,
                    duration_ms,
                    min_duration_ms=cfg.min_duration_ms,
                    fallback_title=fallback_title,
                )
                if not is_weak(summary, len(texts)):
                    return SummaryResult(
                        summary, "llm", llm_ms, int((time.perf_counter() - started) * 1000)
                    )
                reason = "weak output"
            except TimeoutError:
                llm_ms = int((time.perf_counter() - t0) * 1000)
                reason = f"timed out after the {deadline_s}s deadline"
            except LlmError as exc:
                llm_ms = int((time.perf_counter() - t0) * 1000)
                reason = str(exc)
            logger.warning("llm summary unusable ({}); using the local summarizer", reason)
        async with self._local_slots:
            raw_local = await asyncio.to_thread(summarize_local, texts)
        summary = normalize_summary(
            raw_local,
            duration_ms,
            min_duration_ms=cfg.min_duration_ms,
            fallback_title=fallback_title,
        )
        return SummaryResult(
            summary, "local", llm_ms, int((time.perf_counter() - started) * 1000), reason
        )
