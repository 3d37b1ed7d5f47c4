"""The gateway's edge: one device text frame -> one typed :data:`DeviceMessage`, or a clear
:class:`ProtocolError`. Nothing a client sends can crash what comes after it:

- JSON nested deeper than ``max_depth`` is refused *before* it is parsed (CPython's parser and
  pydantic both recurse; 2,000 levels took a connection down);
- lone surrogates (``"\\ud800"``) are replaced with U+FFFD: they cannot be encoded as UTF-8, so
  they used to crash the first publish or send that touched them;
- every validation error names the field and what was expected.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .contracts.device import (
    DEVICE_MESSAGE_TYPES,
    DeviceMessage,
    ErrorCode,
    describe_validation_error,
)
from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DeviceMessageError",
    "check_depth",
    "parse_device_message",
    "scrub_surrogates",
]

DEFAULT_MAX_DEPTH = 32
_ADAPTER: TypeAdapter[Any] = TypeAdapter(DeviceMessage)
# Strings (with escapes) or brackets: what the depth scan needs to see, and nothing else.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class DeviceMessageError(ProtocolError):
    """A message of a known ``type`` with a wrong shape: the reply can use the type's own error
    model (``ModeError``, ``MeetingError``, ...). ``sub`` is its ``phase``/``event`` if any."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None,
        message_type: str,
        sub: str | None = None,
    ) -> None:
        super().__init__(code, message, field)
        self.message_type = message_type
        self.sub = sub


def check_depth(text: str, max_depth: int) -> None:
    """Raise :class:`ProtocolError` if the JSON text nests deeper than ``max_depth``."""
    # Cheap exit for ordinary messages: fewer opening brackets than the limit cannot nest deeper.
    if text.count("{") + text.count("[") <= max_depth:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("{", "["):
            depth += 1
            if depth > max_depth:
                raise ProtocolError(
                    ErrorCode.BAD_JSON,
                    f"JSON nested deeper than {max_depth} levels (server.max_json_depth)",
                )
        elif token in ("}", "]"):
            depth -= 1


def scrub_surrogates(value: Any) -> Any:
    """The same JSON value with every lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [scrub_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    return value


def parse_device_message(text: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse one text frame into a :data:`DeviceMessage` model.

    Raises :class:`ProtocolError` with ``BAD_JSON``, ``UNKNOWN_TYPE`` or ``SCHEMA_INVALID``.
    """
    check_depth(text, max_depth)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"text frame is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(
            ErrorCode.BAD_JSON, "a message must be a JSON object with a 'type'", "type"
        )
    if "\\u" in text:  # escapes are the only way a lone surrogate gets in
        raw = scrub_surrogates(raw)
    mtype = raw.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise ProtocolError(
            ErrorCode.SCHEMA_INVALID,
            "type: required, a string such as 'hello', 'listen', 'mode'",
            "type",
        )
    if mtype not in DEVICE_MESSAGE_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"type: unknown message type; expected one of {sorted(DEVICE_MESSAGE_TYPES)}",
            "type",
        )
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        field, message = describe_validation_error(exc, device_union=True)
        sub = raw.get("phase") if mtype == "meeting" else raw.get("event")
        raise DeviceMessageError(
            ErrorCode.SCHEMA_INVALID,
            message,
            field,
            mtype,
            sub if isinstance(sub, str) and len(sub) <= 32 else None,
        ) from None
