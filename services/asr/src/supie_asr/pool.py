"""The models of one asr process and which one serves a stream's language.

English streams use ``asr.model`` (tiny.en by default); every other language, and ``auto``, use
``asr.multilingual_model`` (the bundled multilingual base by default), or ``asr.model`` itself
when that one is multilingual. Each model has its own recognizer, so utterances are batched per
model (a batch may mix streams and languages). The models the configuration can need are loaded
at start; one a stream asks for later (a language the gateway set that this process's config did
not foresee) is loaded on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from loguru import logger
from supie_common.settings import AsrSection

from .engine import AUTO, AsrEngine, create_engine
from .recognizer import Recognizer

__all__ = ["EnginePool", "LanguageError", "model_for_language"]


class LanguageError(ValueError):
    """A language this process has no model for."""


def model_for_language(cfg: AsrSection, language: str) -> str:
    """The configured model name that transcribes ``language`` (a code or ``auto``)."""
    if language == "en":
        return cfg.model
    if cfg.multilingual_model is not None:
        return cfg.multilingual_model
    if not AsrSection.english_only_name(cfg.model):
        return cfg.model
    raise LanguageError(
        f"language {language!r} needs a multilingual model, but asr.model={cfg.model!r} is "
        "English-only and asr.multilingual_model is null"
    )


def configured_languages(cfg: AsrSection) -> set[str]:
    return {cfg.language, *cfg.device_languages.values()}


EngineFactory = Callable[[AsrSection, str, Path], AsrEngine]


class EnginePool:
    """Loaded engines by model name, each with its recognizer (its batching queue)."""

    def __init__(
        self, cfg: AsrSection, models_dir: Path, factory: EngineFactory = create_engine
    ) -> None:
        self.cfg = cfg
        self.models_dir = models_dir
        self.factory = factory
        self.recognizers: dict[str, Recognizer] = {}
        self._loading: dict[str, asyncio.Task[Recognizer]] = {}

    async def start(self) -> None:
        """Load every model the configured languages need and check each can serve them."""
        needed: dict[str, set[str]] = {}
        for language in configured_languages(self.cfg):
            needed.setdefault(model_for_language(self.cfg, language), set()).add(language)
        for model, languages in needed.items():
            rec = await self.recognizer(model)
            if not rec.engine.multilingual and languages - {"en"}:
                keys = "asr.multilingual_model" if model != self.cfg.model else "asr.model"
                raise LanguageError(
                    f"{keys}={model!r} is an English-only model but the configuration asks it "
                    f"for {sorted(languages - {'en'})} (asr.language / asr.device_languages)"
                )

    async def recognizer(self, model: str) -> Recognizer:
        rec = self.recognizers.get(model)
        if rec is not None:
            return rec
        task = self._loading.get(model)
        if task is None:
            task = asyncio.create_task(self._load(model), name=f"asr-load-{model}")
            self._loading[model] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._loading.pop(model, None)

    async def for_language(self, language: str) -> tuple[Recognizer, str]:
        """The recognizer of a stream's language and the language it will actually decode in
        (``en`` when only an English model can serve it)."""
        rec = await self.recognizer(model_for_language(self.cfg, language))
        if not rec.engine.multilingual and language != "en":
            raise LanguageError(
                f"language {language!r}: the model {model_for_language(self.cfg, language)!r} "
                "is English-only (set asr.multilingual_model)"
            )
        if language != AUTO and language not in rec.engine.language_codes:
            raise LanguageError(f"language {language!r} is not one whisper knows")
        return rec, language

    async def _load(self, model: str) -> Recognizer:
        cfg = self.cfg

        def load() -> AsrEngine:
            engine = self.factory(cfg, model, self.models_dir)
            engine.warm_up()
            return engine

        engine = await asyncio.to_thread(load)
        rec = Recognizer(engine, workers=cfg.num_workers, batch_max=cfg.batch_max)
        rec.start()
        self.recognizers[model] = rec
        logger.info(
            "asr model {} ready ({})", model, "multilingual" if engine.multilingual else "English"
        )
        return rec

    async def stop(self) -> None:
        for task in self._loading.values():
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)
        for rec in self.recognizers.values():
            await rec.stop()

    @property
    def backlog(self) -> int:
        return sum(r.backlog for r in self.recognizers.values())

    @property
    def utterances(self) -> int:
        return sum(r.utterances for r in self.recognizers.values())

    @property
    def batches(self) -> int:
        return sum(r.batches for r in self.recognizers.values())

    @property
    def busy_s(self) -> float:
        return sum(r.busy_s for r in self.recognizers.values())
