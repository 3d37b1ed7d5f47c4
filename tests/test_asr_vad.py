"""Silero VAD wrapper and the utterance segmenter, with the real ONNX model on fixture audio."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from loguru import logger
from supie_asr.segmenter import Segmenter, SegmenterConfig, Utterance
from supie_asr.vad import WINDOW, SileroVad

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def run(vad: SileroVad, seg: Segmenter, pcm: np.ndarray, chunk: int = 960) -> list[Utterance]:
    """Feed like the service does: one decoded 60 ms frame at a time."""
    state = vad.new_state()
    audio = pcm.astype(np.float32) / 32768.0
    out: list[Utterance] = []
    for i in range(0, len(audio), chunk):
        windows, probs = vad.process(state, audio[i : i + chunk])
        out.extend(seg.push(windows, probs))
    return out


def test_model_io_and_chunking_do_not_change_probabilities(vad: SileroVad) -> None:
    audio = speech.samples("meeting_us").astype(np.float32) / 32768.0
    whole_state, chunk_state = vad.new_state(), vad.new_state()
    _, whole = vad.process(whole_state, audio)
    parts = [vad.process(chunk_state, audio[i : i + 333])[1] for i in range(0, len(audio), 333)]
    chunked = np.concatenate(parts)
    assert len(whole) == len(audio) // WINDOW == len(chunked)
    assert np.allclose(whole, chunked, atol=1e-4)
    assert whole.max() > 0.9 and whole[:10].max() < 0.2  # speech found, leading silence is not


def test_silence_and_noise_floor_give_no_utterance(vad: SileroVad) -> None:
    seg = Segmenter(SegmenterConfig())
    rng = np.random.default_rng(1)
    quiet = np.concatenate([np.zeros(16000 * 2), rng.normal(0, 30, 16000 * 2)]).astype(np.int16)
    assert run(vad, seg, quiet) == []
    assert seg.flush() is None and not seg.in_speech


@pytest.mark.parametrize("name", ["meeting_us", "schedule_gb", "weather_fast"])
def test_one_utterance_per_sentence_at_the_right_time(vad: SileroVad, name: str) -> None:
    pcm = speech.samples(name)
    spans = speech.sentence_spans(pcm)
    utts = run(vad, Segmenter(SegmenterConfig()), pcm)
    assert len(utts) == len(spans) == len(speech.references()[name])
    for utt, (start, end) in zip(utts, spans, strict=True):
        assert abs(utt.start_ms - start / 16) < 250 and abs(utt.end_ms - end / 16) < 350
        assert utt.reason == "silence"
        # decode margin + padding on both sides
        assert len(utt.audio) >= (end - start)


def test_silence_is_logged_as_a_duration(vad: SileroVad) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    try:
        utts = run(
            vad, Segmenter(SegmenterConfig(min_silence_ms=500)), speech.samples("weather_fast")
        )
    finally:
        logger.remove(sink)
    values = [int(m) for line in lines for m in re.findall(r"silence_duration_ms=(\d+)", line)]
    assert len(values) == len(utts) == 2
    # a duration: at least the configured minimum silence, never a stream timestamp (seconds in)
    assert all(500 <= v < 1000 for v in values), values


def test_manual_mode_keeps_one_utterance_until_the_boundary(vad: SileroVad) -> None:
    seg = Segmenter(SegmenterConfig(), vad_cuts=False)
    assert run(vad, seg, speech.samples("schedule_gb")) == []  # pauses do not cut
    utt = seg.flush()
    assert utt is not None and utt.reason == "flush"
    spans = speech.sentence_spans(speech.samples("schedule_gb"))
    assert utt.start_ms < spans[0][0] / 16 and utt.end_ms > spans[-1][1] / 16 - 100


def test_max_utterance_forces_a_cut(vad: SileroVad) -> None:
    pcm = speech.samples("meeting_us")
    seg = Segmenter(SegmenterConfig(max_utterance_s=2.0))
    utts = run(vad, seg, pcm)
    forced = [u for u in utts if u.reason == "max_length"]
    assert forced and all(u.end_ms - u.start_ms <= 2200 for u in forced)


@pytest.mark.parametrize("name", ["meeting_us", "weather_fast"])
def test_the_settled_utterance_is_the_cut_to_come_and_comes_sooner(
    vad: SileroVad, name: str
) -> None:
    """Decode-ahead input: once a pause has all of an utterance's audio, ``settled()`` gives
    exactly what the silence cut gives later (same audio, same place), while the cut still
    waits for the rest of ``min_silence_ms``."""
    seg = Segmenter(SegmenterConfig(min_silence_ms=500))
    state = vad.new_state()
    audio = speech.samples(name).astype(np.float32) / 32768.0
    first_settled: dict[tuple[int, int], tuple[int, Utterance]] = {}
    cuts: list[tuple[int, Utterance]] = []
    for i in range(0, len(audio), 960):
        windows, probs = vad.process(state, audio[i : i + 960])
        for utt in seg.push(windows, probs):
            cuts.append((seg.now_ms, utt))
        ahead = seg.settled()
        if ahead is not None:
            assert seg.settled_key() == (ahead.first_window, ahead.end_ms)
            first_settled.setdefault((ahead.first_window, ahead.end_ms), (seg.now_ms, ahead))
    assert len(cuts) == len(speech.references()[name])
    for cut_at, utt in cuts:
        settled_at, ahead = first_settled[(utt.first_window, utt.end_ms)]
        assert np.array_equal(ahead.audio, utt.audio)
        assert (ahead.start_ms, ahead.voiced_ms) == (utt.start_ms, utt.voiced_ms)
        assert cut_at - settled_at >= 100  # the head start decode-ahead gets (60 ms frames)
    assert seg.settled() is None  # after the last cut: nothing pending


def test_nothing_settles_while_speaking_or_in_manual_mode(vad: SileroVad) -> None:
    audio = speech.samples("meeting_us").astype(np.float32) / 32768.0
    for seg in (Segmenter(SegmenterConfig()), Segmenter(SegmenterConfig(), vad_cuts=False)):
        state = vad.new_state()
        settled_while_speaking = 0
        for i in range(0, len(audio), 960):
            windows, probs = vad.process(state, audio[i : i + 960])
            seg.push(windows, probs)
            if seg.settled() is not None and probs.size and probs[-1] >= 0.5:
                settled_while_speaking += 1
            if not seg.vad_cuts:
                assert seg.settled() is None
        assert settled_while_speaking == 0
