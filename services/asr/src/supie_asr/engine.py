"""Recognition engines behind one interface; faster-whisper (CTranslate2, int8 CPU) is the default.

Engines are blocking and called from a worker thread only (see :mod:`supie_asr.recognizer`).
Another engine (openai-whisper, ...) subclasses :class:`AsrEngine` and registers in
:func:`create_engine`; the service does not change.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from supie_common.settings import AsrSection
from supie_common.text import to_script

from .decoding import average_logprob, compression_ratio, trim_repetitions
from .models import resolve_model

__all__ = [
    "AUTO",
    "Request",
    "EngineResult",
    "AsrEngine",
    "FasterWhisperEngine",
    "create_engine",
]

AUTO = "auto"
_CONTEXT_BUCKETS = (4, 8, 16, 32, 64, 128, 223)  # previous-text lengths, tokens (223: whisper's)
_CHINESE = ("zh", "yue")


@dataclass
class Request:
    """One utterance to transcribe: 16 kHz mono float32, its language (a code, or ``auto`` to
    detect among ``candidates``) and the stream's previous text (whisper's context)."""

    audio: np.ndarray
    language: str = "en"
    context: str = ""
    candidates: Sequence[str] = field(default_factory=tuple)


@dataclass
class EngineResult:
    text: str
    language: str  # the language actually used
    compute_ms: int  # this utterance's share of the batch's wall time
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    temperature: float = 0.0
    compression_ratio: float = 0.0
    trimmed: bool = False  # a repetition loop was cut
    unprimed: bool = False  # the primed decode echoed the primer; this one had none


class AsrEngine(ABC):
    """Transcribes whole utterances (16 kHz mono float32)."""

    name = "engine"
    multilingual = False
    language_codes: frozenset[str] = frozenset({"en"})

    @abstractmethod
    def transcribe_batch(self, requests: Sequence[Request]) -> list[EngineResult]:
        """Blocking; one result per request, in order. Empty text means nothing was said."""

    def warm_up(self) -> None:
        """Run once at start so the first real utterance does not pay one-off costs."""
        language = "zh" if self.multilingual else "en"
        self.transcribe_batch([Request(np.zeros(16000, dtype=np.float32), language)])


@dataclass
class _Attempt:
    tokens: list[int]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    # the text is the initial prompt again: what whisper says on silence once primed (its
    # no-speech probability drops under the primer); dropped, never a fallback candidate
    echo: bool = False
    unprimed: bool = False  # decoded without the language's initial prompt (see _decode)


@dataclass
class _Batch:
    """One engine call's encoder output and what every decode of it needs."""

    encoded: Any  # ctranslate2.StorageView [size, frames, dim]
    size: int
    tokenizers: list[Any]
    primers: list[str]
    longest_s: float
    _as_array: np.ndarray | None = None

    def rows(self, indices: list[int], ct2: Any) -> Any:
        """The encoder output of some of the batch's utterances."""
        if len(indices) == self.size:
            return self.encoded
        if self._as_array is None:
            self._as_array = np.asarray(self.encoded)
        return ct2.StorageView.from_array(np.ascontiguousarray(self._as_array[indices]))


class FasterWhisperEngine(AsrEngine):
    """faster-whisper's CTranslate2 model driven directly so that several utterances (from any
    streams, in any languages) share one encoder/decoder call, with the quality checks of
    faster-whisper's ``transcribe()``: a result that compresses too well (a loop) or is too
    improbable is decoded again at the next temperature (sampling, for those utterances only),
    no-speech results are dropped, and a loop that survives is trimmed."""

    name = "faster-whisper"

    def __init__(self, cfg: AsrSection, model: str, models_dir: Path) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        self._ct2 = ctranslate2
        self.cfg = cfg
        self.model_name = model
        location = resolve_model(model, models_dir)
        started = time.monotonic()
        self.model = WhisperModel(
            location,
            device="cpu",
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            num_workers=cfg.num_workers,
        )
        self.load_s = time.monotonic() - started
        logger.info(
            "faster-whisper model {} ({}) loaded in {:.1f} s ({} threads, {} workers)",
            model,
            location,
            self.load_s,
            cfg.cpu_threads,
            cfg.num_workers,
        )
        self.multilingual = bool(self.model.model.is_multilingual)
        self._frames_per_s = 100  # whisper features: 10 ms hop
        self._min_frames = int(cfg.min_context_s * self._frames_per_s)
        self._tokenizers: dict[str, Any] = {}
        self._suppress: list[int] | None = None
        self.language_codes: frozenset[str] = frozenset(
            self.model.supported_languages if self.multilingual else ["en"]
        )

    # -- tokens --------------------------------------------------------------------------------
    def _tokenizer(self, language: str) -> Any:
        """One tokenizer per language (its start-of-transcript sequence names the language)."""
        key = language if self.multilingual else "en"
        tok = self._tokenizers.get(key)
        if tok is None:
            from faster_whisper.tokenizer import Tokenizer

            tok = Tokenizer(
                self.model.hf_tokenizer,
                self.multilingual,
                task="transcribe",
                language=key if self.multilingual else None,
            )
            self._tokenizers[key] = tok
        return tok

    def _suppressed(self, tokenizer: Any) -> list[int]:
        if self._suppress is None:
            from faster_whisper.transcribe import get_suppressed_tokens

            self._suppress = list(get_suppressed_tokens(tokenizer, [-1]) or [])
        return self._suppress

    def _prompt(
        self, tokenizer: Any, language: str, context: str, *, primed: bool = True
    ) -> list[int]:
        """As ``transcribe()`` builds it: previous text (the language's initial prompt, then
        what the stream said before) after ``<|startofprev|>``, at most half the decoder's
        window, then the start-of-transcript sequence without timestamps.

        The initial prompt is kept whole; the stream's text is cut (oldest first) so that the
        whole previous text is one of a few fixed lengths: CTranslate2 decodes a batch together
        only when <|startoftranscript|> sits at the same place in every prompt, so streams that
        have said enough share decoder calls."""
        limit = self.model.max_length // 2 - 1
        primer_text = self.cfg.initial_prompts.get(language, "").strip() if primed else ""
        primer = tokenizer.encode(" " + primer_text)[:limit] if primer_text else []
        said = tokenizer.encode(" " + context.strip()) if context.strip() else []
        total = len(primer) + len(said)
        fits = [b for b in _CONTEXT_BUCKETS if len(primer) <= b <= min(total, limit)]
        keep = max(fits) - len(primer) if fits else 0
        previous = [*primer, *said[len(said) - keep :]] if keep else primer
        prompt = [tokenizer.sot_prev, *previous] if previous else []
        return [*prompt, *tokenizer.sot_sequence, tokenizer.no_timestamps]

    # -- decoding ------------------------------------------------------------------------------
    def transcribe_batch(self, requests: Sequence[Request]) -> list[EngineResult]:
        if not requests:
            return []
        started = time.perf_counter()
        longest = max(len(r.audio) for r in requests) // 160  # feature frames (10 ms hop)
        # whisper was trained on 30 s windows; a shorter one (min_context_s) is cheaper, and one
        # second of head-room after the speech keeps it from running on into a loop
        frames = min(3000, max(self._min_frames, longest + self._frames_per_s))
        features = np.stack([self._features(r.audio, frames) for r in requests])
        encoded = self.model.model.encode(self._ct2.StorageView.from_array(features), to_cpu=True)
        languages = self._languages(requests, encoded)
        tokenizers = [self._tokenizer(lang) for lang in languages]
        contexts = [r.context if self.cfg.condition_on_previous_text else "" for r in requests]
        batch = _Batch(
            encoded=encoded,
            size=len(requests),
            tokenizers=tokenizers,
            primers=[self.cfg.initial_prompts.get(lang, "") for lang in languages],
            longest_s=max(len(r.audio) for r in requests) / 16000,
        )
        prompts = [
            self._prompt(tok, lang, ctx)
            for tok, lang, ctx in zip(tokenizers, languages, contexts, strict=True)
        ]
        attempts: list[list[_Attempt]] = [[] for _ in requests]
        self._decode(batch, list(range(len(requests))), prompts, attempts)
        # Primed with "以下是普通话的句子。", whisper sometimes says the primer back instead of
        # the sentence (a whole sentence lost): those are decoded again without the primer.
        echoed = [i for i, tried in enumerate(attempts) if tried[-1].echo]
        if echoed:
            unprimed = [
                self._prompt(tok, lang, ctx, primed=False)
                for tok, lang, ctx in zip(tokenizers, languages, contexts, strict=True)
            ]
            self._decode(batch, echoed, unprimed, attempts, unprimed=True)
        share = int((time.perf_counter() - started) * 1000 / len(requests))
        return [
            self._result(attempts[i], languages[i], tokenizers[i], share)
            for i in range(len(requests))
        ]

    def _decode(
        self,
        batch: _Batch,
        indices: list[int],
        prompts: list[list[int]],
        attempts: list[list[_Attempt]],
        *,
        unprimed: bool = False,
    ) -> None:
        """Decode ``indices`` of the batch at temperature 0, then again at each higher
        temperature those whose result fails the quality checks; appends to ``attempts``.
        An unprimed retry is decoded at temperature 0 only: it is a second opinion, and
        sampling after it would cost up to five more decodes of a sentence already late."""
        # room for fast speech at temperature 0 (loops are trimmed); a sampled fallback may not
        # outrun a fast speaker (~6 tokens/s): high temperatures babble (Mandarin on an English
        # model became a 46-word story for 14 syllables)
        limit = self.model.max_length // 2
        max_new = int(min(limit, 16 + 15 * batch.longest_s))
        max_sampled = int(min(limit, 8 + 6 * batch.longest_s))
        # CTranslate2 decodes a batch together only when <|startoftranscript|> sits at the
        # same place in every prompt: one decoder call per previous-text length
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(prompts[i].index(batch.tokenizers[i].sot), []).append(i)
        for group in groups.values():
            todo = group
            for temperature in self.cfg.temperatures[:1] if unprimed else self.cfg.temperatures:
                if not todo:
                    break
                done = self._generate(
                    batch.rows(todo, self._ct2),
                    [prompts[i] for i in todo],
                    [batch.tokenizers[i] for i in todo],
                    [batch.primers[i] for i in todo],
                    max_new if temperature == 0 else max_sampled,
                    temperature,
                )
                for i, attempt in zip(todo, done, strict=True):
                    attempt.unprimed = unprimed
                    attempts[i].append(attempt)
                todo = [i for i in todo if self._needs_fallback(attempts[i][-1])]

    def _generate(
        self,
        encoded: Any,
        prompts: list[list[int]],
        tokenizers: list[Any],
        primers: list[str],
        max_new: int,
        temperature: float,
    ) -> list[_Attempt]:
        if temperature > 0:
            # sampled decoding is random: a fixed seed keeps a given input's result repeatable
            self._ct2.set_random_seed(1234)
            kwargs: dict[str, Any] = {
                "beam_size": 1,
                "num_hypotheses": 5,
                "sampling_topk": 0,
                "sampling_temperature": temperature,
            }
        else:
            beam = self.cfg.multilingual_beam_size if self.multilingual else self.cfg.beam_size
            kwargs = {"beam_size": beam}
        longest_prompt = max(len(p) for p in prompts)
        results = self.model.model.generate(
            encoded,
            prompts,
            max_length=min(self.model.max_length, longest_prompt + max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizers[0]),
            **kwargs,
        )
        out = []
        for tokenizer, primer, res in zip(tokenizers, primers, results, strict=True):
            tokens = [t for t in res.sequences_ids[0] if t < tokenizer.eot]
            text = tokenizer.decode(tokens).strip()
            score = res.scores[0] if res.scores else 0.0
            out.append(
                _Attempt(
                    tokens=tokens,
                    text=text,
                    avg_logprob=average_logprob(score, len(tokens)),
                    no_speech_prob=float(getattr(res, "no_speech_prob", 0.0)),
                    compression_ratio=compression_ratio(text),
                    temperature=temperature,
                    echo=bool(text) and not _without_primer(text, primer),
                )
            )
        return out

    def _is_silence(self, a: _Attempt) -> bool:
        # whisper's rule, plus: near-certain no-speech is silence even when the decoder is sure
        # of its words (the classic "you" / "Thank you." on an empty window)
        return a.no_speech_prob > self.cfg.no_speech_alone_threshold or (
            a.no_speech_prob > self.cfg.no_speech_threshold
            and a.avg_logprob < self.cfg.log_prob_threshold
        )

    def _needs_fallback(self, a: _Attempt) -> bool:
        if self._is_silence(a):
            return False  # nothing was said: no point in trying harder
        return (
            a.compression_ratio > self.cfg.compression_ratio_threshold
            or a.avg_logprob < self.cfg.log_prob_threshold
        )

    def _result(
        self, attempts: list[_Attempt], language: str, tokenizer: Any, compute_ms: int
    ) -> EngineResult:
        last = attempts[-1]
        if self._needs_fallback(last):
            # every temperature failed: like transcribe(), the most probable result that does
            # not loop, else the most probable of all
            limit = self.cfg.compression_ratio_threshold
            fine = [a for a in attempts if a.compression_ratio <= limit and not a.echo]
            chosen = max(fine or attempts, key=lambda a: a.avg_logprob)
        else:
            chosen = last
        text = chosen.text
        trimmed = False
        if self._is_silence(chosen):
            text = ""
        else:
            kept = trim_repetitions(chosen.tokens)
            if len(kept) < len(chosen.tokens):
                trimmed = True
                text = tokenizer.decode(kept).strip()
            text = _without_primer(text, self.cfg.initial_prompts.get(language, ""))
        if language in _CHINESE:
            text = to_script(text, self.cfg.chinese_script)
        return EngineResult(
            text=text,
            language=language,
            compute_ms=compute_ms,
            no_speech_prob=chosen.no_speech_prob,
            avg_logprob=chosen.avg_logprob,
            temperature=chosen.temperature,
            compression_ratio=chosen.compression_ratio,
            trimmed=trimmed,
            unprimed=chosen.unprimed,
        )

    def _languages(self, requests: Sequence[Request], encoded: Any) -> list[str]:
        """Each request's language; ``auto`` ones detected on the encoder output, restricted to
        their candidates."""
        if not self.multilingual:
            return ["en"] * len(requests)
        languages = [r.language for r in requests]
        auto = [i for i, lang in enumerate(languages) if lang == AUTO]
        if not auto:
            return languages
        sub = self._ct2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[auto]))
        for i, probs in zip(auto, self.model.model.detect_language(sub), strict=True):
            allowed = set(requests[i].candidates) or set(self.language_codes)
            scored = [(p, tok[2:-2]) for tok, p in probs if tok[2:-2] in allowed]
            languages[i] = max(scored)[1] if scored else sorted(allowed)[0]
        return languages

    def _features(self, audio: np.ndarray, frames: int) -> np.ndarray:
        """Log-mel of the audio zero-padded to ``frames`` (as whisper pads to 30 s)."""
        audio = np.asarray(audio, dtype=np.float32)[: frames * 160]
        padded = np.zeros(frames * 160, dtype=np.float32)
        padded[: len(audio)] = audio
        feats = self.model.feature_extractor(padded)[:, :frames]
        return np.ascontiguousarray(feats, dtype=np.float32)


def _bare(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum()).lower()


def _without_primer(text: str, primer: str) -> str:
    """Whisper echoing its primer ("以下是普通话的句子。") is a known hallucination on unclear
    audio: the echo goes, with or without its final punctuation."""
    primer = primer.strip()
    if not primer or not text:
        return text
    bare_text, bare_primer = _bare(text), _bare(primer)
    if bare_text and SequenceMatcher(None, bare_text, bare_primer).ratio() >= 0.75:
        return ""  # all of it is (nearly) the primer
    for echo in (primer, primer.rstrip("。.!?！？")):
        if echo and echo in text:
            return " ".join(text.replace(echo, " ").split()).strip(" ，,。")
    return text


def create_engine(cfg: AsrSection, model: str, models_dir: Path) -> AsrEngine:
    engines: dict[str, type[FasterWhisperEngine]] = {"faster-whisper": FasterWhisperEngine}
    try:
        engine_cls = engines[cfg.engine]
    except KeyError:
        raise ValueError(
            f"asr.engine: unknown engine {cfg.engine!r}, expected one of {sorted(engines)}"
        ) from None
    return engine_cls(cfg, model, models_dir)
