"""The language an ASR stream is opened with."""

from __future__ import annotations

from .config import GatewaySettings

__all__ = ["stream_language"]


def stream_language(settings: GatewaySettings, device_id: str) -> str | None:
    """The one place the gateway picks a stream's language (None = the asr default).

    For now ``asr.language``; per-device languages (``asr.device_languages``) come with
    ``AsrSection.language_for(device_id)``.
    """
    return settings.asr.language
