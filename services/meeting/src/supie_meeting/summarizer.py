"""One interface, two producers: the configured LLM, else (or on any failure) the local one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger
from supie_common.settings import SupieSettings

from .config import MeetingSettings
from .llm import LlmClients, LlmError, build_prompt
from .local_summarizer import detect_language, summarize_local
from .summary import Summary, is_weak, normalize_summary

__all__ = ["Summarizer", "SummaryResult"]


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
        self, segments: list[dict[str, Any]], duration_ms: int, *, checkpoint: bool = False
    ) -> SummaryResult:
        started = time.perf_counter()
        settings = self.settings
        cfg = settings.meeting
        texts = [str(s.get("text", "")) for s in segments if s.get("text")]
        fallback_title = (
            "会议纪要" if detect_language(" ".join(texts[:50])) == "zh" else "Meeting notes"
        )
        llm_ms = 0
        reason: str | None = None
        chosen = self._provider(settings)
        if chosen is not None:
            alias, provider = chosen
            lines = [f"[{s.get('speakerId', '')}] {s.get('text', '')}" for s in segments]
            prompt = build_prompt(lines, cfg.summary_transcript_max_chars, checkpoint=checkpoint)
            t0 = time.perf_counter()
            try:
                raw = await self.clients.complete_json(
                    alias,
                    provider,
                    prompt,
                    max_tokens=cfg.checkpoint_max_tokens if checkpoint else cfg.max_tokens,
                    timeout_s=cfg.llm_timeout_s or provider.timeout_s,
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
            except LlmError as exc:
                llm_ms = int((time.perf_counter() - t0) * 1000)
                reason = str(exc)
            logger.warning("llm summary unusable ({}); using the local summarizer", reason)
        # CPU-bound for long meetings: keep it off the event loop.
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
