"""From a claimed buffer to the ``CodingInsight`` a badge gets: signals, the local result, the
LLM's candidate when one is configured, and the judgement between them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from loguru import logger
from supie_common.contracts.device import CodingInsight
from supie_common.llm import LlmError
from supie_common.settings import LlmProvider

from .body import InsightBody, Limits
from .config import CodingSettings
from .heuristics import RunStats, key_facts, local_insight, outcome
from .llm import LlmClients, LlmRejected, build_prompt, judge, parse_body
from .signals import EXTRACTORS, LogLine, Signal, combine
from .state import Claim

__all__ = ["Written", "InsightWriter", "limits_for"]

# The wire model's own caps (CodingInsight): configuration may lower them, never raise them.
_CAPS = Limits()


def limits_for(settings: CodingSettings, *, summary: bool) -> Limits:
    """``insight_max_items`` caps the insights; ``summary_max_items`` every list of a summary."""
    cfg = settings.coding
    if summary:
        n = cfg.summary_max_items
        return Limits(
            insights=min(n, _CAPS.insights),
            risks=min(n, _CAPS.risks),
            actions=min(n, _CAPS.actions),
            next_steps=min(n, _CAPS.next_steps),
        )
    return Limits(insights=min(cfg.insight_max_items, _CAPS.insights))


@dataclass(frozen=True, slots=True)
class Written:
    message: CodingInsight
    source: str  # local | llm
    fallback: str  # why the LLM's answer was not used ("" when it was, or none configured)
    seq: int


def _stats(claim: Claim, *, summary: bool) -> RunStats:
    p = "s_" if summary else ""
    started = claim.int_of(f"{p}started_at")
    stopped = claim.int_of("s_stopped_at") if summary else 0
    return RunStats(
        phase=claim.fields.get(f"{p}phase") or ("stopped" if summary else "idle"),
        running=not summary and claim.fields.get("running") == "1",
        lines=claim.int_of(f"{p}lines"),
        errors=claim.int_of(f"{p}errors"),
        warns=claim.int_of(f"{p}warns"),
        step=claim.fields.get(f"{p}step", ""),
        step_status=claim.fields.get(f"{p}step_status", ""),
        duration_s=(stopped - started) / 1000 if summary and started and stopped else None,
    )


def _prompt_stats(stats: RunStats, signals: list[Signal]) -> dict[str, object]:
    state = outcome(signals, stats)
    failed = sum(1 for s in signals if s.kind.value == "test_failed")
    return {
        "phase": stats.phase,
        "errorCount": stats.errors,
        "warnCount": stats.warns,
        "lastStep": f"{stats.step} {stats.step_status}".strip(),
        "buildSuccess": state == "passed",
        "buildRunning": stats.running,
        "testsFailed": failed,
    }


async def _extract(lines: list[LogLine]) -> list[Signal]:
    """The extractors one at a time, yielding to the loop between them: each takes a fraction
    of a millisecond over a full buffer, so messages keep flowing while an insight is written
    (a worker thread would buy nothing: the regexes hold the GIL)."""
    found: list[list[Signal]] = []
    for extractor in EXTRACTORS:
        found.append(extractor(lines))
        await asyncio.sleep(0)
    return combine(found)


class InsightWriter:
    def __init__(self, settings: CodingSettings, clients: LlmClients) -> None:
        self.settings = settings
        self.clients = clients
        self._warned_alias: str | None = None

    def provider(self) -> tuple[str, LlmProvider] | None:
        alias = self.settings.llm_by_mode.alias_for("coding")
        if not alias:
            return None
        provider = self.settings.llm.get(alias)
        if provider is None:
            if self._warned_alias != alias:
                logger.warning("llm_by_mode.coding names {!r}, which llm does not define", alias)
                self._warned_alias = alias
            return None
        return alias, provider

    async def write(self, device_id: str, claim: Claim, *, summary: bool) -> Written:
        stats = _stats(claim, summary=summary)
        limits = limits_for(self.settings, summary=summary)
        lines = claim.lines
        signals = await _extract(lines)
        local = local_insight(lines, signals, stats, limits, summary=summary)
        body, source, fallback = local, "local", ""
        chosen = self.provider()
        if chosen is not None:
            try:
                body = await self._ask(chosen, signals, stats, claim, local, limits, summary)
                source = "llm"
            except LlmError as exc:  # the call failed, or the local result beats it
                fallback = str(exc)
                logger.info(
                    "coding llm answer not used for {} ({}): local insight", device_id, fallback
                )
        message = CodingInsight(
            event="summary" if summary else "insight",
            phase=stats.phase,
            insights=body.insights,
            risks=body.risks,
            actions=body.actions,
            next_steps=body.next_steps,
        )
        return Written(message, source, fallback, claim.int_of("seq"))

    async def _ask(
        self,
        chosen: tuple[str, LlmProvider],
        signals: list[Signal],
        stats: RunStats,
        claim: Claim,
        local: InsightBody,
        limits: Limits,
        summary: bool,
    ) -> InsightBody:
        alias, provider = chosen
        cfg = self.settings.coding
        timeout_s = min(cfg.llm_timeout_s, provider.timeout_s)
        prompt = build_prompt(
            signals,
            _prompt_stats(stats, signals),
            claim.lines,
            cfg.insight_max_chars,
            summary=summary,
        )
        started = time.perf_counter()
        try:
            content = await asyncio.wait_for(
                self.clients.complete(alias, provider, prompt, timeout_s=timeout_s),
                timeout_s + 0.5,
            )
        except TimeoutError:
            raise LlmRejected(f"timed out after {timeout_s:g} s") from None
        logger.debug("coding llm answered in {:.0f} ms", (time.perf_counter() - started) * 1000)
        candidate = parse_body(content)
        texts = [line.text for line in claim.lines]
        return judge(candidate, local, texts, key_facts(signals), limits)
