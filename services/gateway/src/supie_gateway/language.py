"""The language an ASR stream is opened with."""

from __future__ import annotations

from .config import GatewaySettings

__all__ = ["stream_language"]


def stream_language(settings: GatewaySettings, device_id: str) -> str | None:
    """The one place the gateway picks a stream's language: ``asr.device_languages`` (exact id
    or longest prefix), else ``asr.language``."""
    return settings.asr.language_for(device_id)
