"""Turns a stream of VAD windows into utterances (server VAD), or holds them until the device's
boundary (manual listen mode). Pure logic over audio time, so it is tested without a bus."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from loguru import logger

from .vad import WINDOW_MS

__all__ = ["SegmenterConfig", "Utterance", "Segmenter"]


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 100
    min_speech_ms: int = 250
    max_utterance_s: float = 30.0
    decode_margin_ms: int = 200  # extra audio either side handed to the recogniser


@dataclass
class Utterance:
    start_ms: int  # stream audio time, padded
    end_ms: int
    audio: np.ndarray  # float32 16 kHz, including the decode margin
    voiced_ms: int
    reason: str  # "silence" | "max_length" | "flush"
    first_window: int = 0  # index of the first VAD window of ``audio`` (decode margin included)


class Segmenter:
    """Silero-style hysteresis: speech starts at ``p >= threshold`` and ends after
    ``min_silence_ms`` below ``threshold - 0.15``. ``vad_cuts=False`` (manual listen mode) keeps
    one utterance open across pauses until :meth:`flush` (a device boundary) or the max length."""

    def __init__(
        self, config: SegmenterConfig, *, vad_cuts: bool = True, stream_id: str = ""
    ) -> None:
        self.cfg = config
        self.vad_cuts = vad_cuts
        self.stream_id = stream_id
        self.neg_threshold = max(config.threshold - 0.15, 0.01)
        self._pad_w = -(-config.speech_pad_ms // WINDOW_MS)
        self._margin_w = -(-config.decode_margin_ms // WINDOW_MS)
        self._silence_w = -(-config.min_silence_ms // WINDOW_MS)
        self._max_w = int(config.max_utterance_s * 1000 // WINDOW_MS)
        self._min_voiced_w = -(-config.min_speech_ms // WINDOW_MS)
        self._preroll = self._pad_w + self._margin_w
        # windows kept in memory: (index, samples); index = window number since stream start
        self._windows: deque[tuple[int, np.ndarray]] = deque()
        self.index = 0  # next window index
        self.speech_start: int | None = None  # first voiced window of the pending utterance
        self.last_voiced: int | None = None
        self.silence_start: int | None = None  # first window of the current pause
        self.voiced = 0

    @property
    def now_ms(self) -> int:
        return self.index * WINDOW_MS

    @property
    def in_speech(self) -> bool:
        return self.speech_start is not None

    def pending_ms(self) -> int:
        return 0 if self.speech_start is None else (self.index - self.speech_start) * WINDOW_MS

    def retained_from(self) -> int:
        """First window the segmenter still needs: the pending utterance's (with its pre-roll)
        or, between utterances, the pre-roll of the next one. Audio before it is done with."""
        start = self.index if self.speech_start is None else self.speech_start
        return max(0, start - self._preroll)

    def pending_audio(self) -> np.ndarray | None:
        """Audio of the utterance in progress (for partial hypotheses)."""
        if self.speech_start is None:
            return None
        lo = self.speech_start - self._preroll
        chunks = [w for i, w in self._windows if i >= lo]
        return np.concatenate(chunks) if chunks else None

    def push(self, windows: np.ndarray, probs: np.ndarray) -> list[Utterance]:
        """Consume VAD windows (``[n, 512]``) and their probabilities; return finished
        utterances."""
        out: list[Utterance] = []
        for window, prob in zip(windows, probs, strict=True):
            i = self.index
            self._windows.append((i, window))
            self.index += 1
            if prob >= self.cfg.threshold:
                if self.speech_start is None:
                    self.speech_start = i
                self.last_voiced = i
                self.silence_start = None
                self.voiced += 1
            elif self.speech_start is not None and prob < self.neg_threshold:
                if self.silence_start is None:
                    self.silence_start = i
                silent_w = self.index - self.silence_start
                if self.vad_cuts and silent_w >= self._silence_w:
                    utt = self._cut("silence")
                    if utt is not None:
                        out.append(utt)
            if self.speech_start is not None and self.index - self.speech_start >= self._max_w:
                utt = self._cut("max_length")  # forced cut; speech may go on in a new utterance
                if utt is not None:
                    out.append(utt)
            self._trim()
        return out

    def settled(self) -> Utterance | None:
        """The utterance a silence cut will give if this pause lasts ``min_silence_ms``, once
        all of its audio (up to the pad and decode margin after the last voiced window) is in:
        decoded ahead, its final is ready when the pause turns out long enough. ``None`` while
        speaking, in manual mode, or when a cut would give nothing."""
        return self._assemble("silence") if self.settled_key() is not None else None

    def settled_key(self) -> tuple[int, int] | None:
        """``(first_window, end_ms)`` of :meth:`settled`'s utterance, without assembling its
        audio (called after every batch of frames: the audio is built only for a new one)."""
        if not self.vad_cuts or self.silence_start is None or self.last_voiced is None:
            return None
        if self.index - 1 < self.last_voiced + self._pad_w + self._margin_w:
            return None
        assert self.speech_start is not None
        first = max(self.speech_start - self._pad_w, 0)
        return max(first - self._margin_w, 0), (self.last_voiced + self._pad_w + 1) * WINDOW_MS

    def flush(self) -> Utterance | None:
        """The pending utterance now (listen stop, flush, close, manual boundary)."""
        return self._cut("flush") if self.speech_start is not None else None

    def _assemble(self, reason: str) -> Utterance | None:
        """The pending utterance as a cut now would give it (state unchanged)."""
        assert self.speech_start is not None and self.last_voiced is not None
        first = max(self.speech_start - self._pad_w, 0)
        last = min(self.last_voiced + self._pad_w, self.index - 1)
        if reason == "max_length":
            last = self.index - 1
        lo = first - self._margin_w
        hi = last + self._margin_w
        chunks = [w for i, w in self._windows if lo <= i <= hi]
        if self.voiced < self._min_voiced_w or not chunks:
            return None
        return Utterance(
            start_ms=first * WINDOW_MS,
            end_ms=(last + 1) * WINDOW_MS,
            audio=np.concatenate(chunks),
            voiced_ms=self.voiced * WINDOW_MS,
            reason=reason,
            first_window=max(lo, 0),
        )

    def _cut(self, reason: str) -> Utterance | None:
        assert self.speech_start is not None
        if self.silence_start is not None:
            # a duration, never a timestamp (see SPEC §4)
            silence_duration_ms = self.now_ms - self.silence_start * WINDOW_MS
        else:
            silence_duration_ms = 0
        utt = self._assemble(reason)
        voiced = self.voiced
        start_ms = max(self.speech_start - self._pad_w, 0) * WINDOW_MS
        if reason == "max_length":
            # keep going: the speech continues in a fresh utterance from the next window
            self.speech_start = self.index
            self.last_voiced = self.index
        else:
            self.speech_start = None
            self.last_voiced = None
        self.silence_start = None
        self.voiced = 0
        logger.debug(
            "stream {} utterance end ({}): from {} ms, voiced {} ms, silence_duration_ms={}",
            self.stream_id,
            reason,
            start_ms,
            voiced * WINDOW_MS,
            silence_duration_ms,
        )
        return utt

    def _trim(self) -> None:
        """Keep only the pre-roll while idle; the whole utterance (plus pre-roll) while speaking."""
        if self.speech_start is None:
            keep_from = self.index - self._preroll
        else:
            keep_from = self.speech_start - self._preroll
        while self._windows and self._windows[0][0] < keep_from:
            self._windows.popleft()
