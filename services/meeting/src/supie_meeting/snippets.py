"""Validation of device ``{"type":"meeting","phase":"snippet","items":[...]}`` messages.

The whole message is checked before anything is stored, and the first problem is reported with
the exact field path, e.g. ``items[0].text: expected a non-empty string``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SnippetItem", "SchemaInvalid", "validate_snippet", "cut_utf8", "MAX_ITEMS_PER_MESSAGE"]

MAX_ITEMS_PER_MESSAGE = 50


class SchemaInvalid(ValueError):
    """A device message does not match the schema; ``str()`` names the field."""


@dataclass(frozen=True)
class SnippetItem:
    tag: str
    text: str
    speaker_id: str | None


def cut_utf8(text: str, max_bytes: int) -> str:
    """At most ``max_bytes`` of UTF-8, never splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def _string(item: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise SchemaInvalid(f"{where}.{key}: expected a {'non-empty ' if required else ''}string")
    return value.strip()


def validate_snippet(message: dict[str, Any], max_text_bytes: int) -> list[SnippetItem]:
    items = message.get("items")
    if not isinstance(items, list) or not items:
        raise SchemaInvalid("items: expected a non-empty array of {tag,text,speakerId?}")
    if len(items) > MAX_ITEMS_PER_MESSAGE:
        raise SchemaInvalid(f"items: at most {MAX_ITEMS_PER_MESSAGE} items per message")
    out: list[SnippetItem] = []
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            raise SchemaInvalid(f"{where}: expected an object {{tag,text,speakerId?}}")
        tag = _string(item, "tag", where, required=True)
        text = _string(item, "text", where, required=True)
        speaker = _string(item, "speakerId", where, required=False)
        assert tag is not None and text is not None
        out.append(
            SnippetItem(
                tag=tag[:64],
                text=cut_utf8(text, max_text_bytes),
                speaker_id=speaker[:64] if speaker else None,
            )
        )
    return out
