"""Request bodies the HTTP port reads itself: a JSON object (or nothing), depth-checked before it
is parsed (2,000 nested brackets used to crash the parser: HTTP 500)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from supie_common.device_codec import check_depth
from supie_common.errors import ProtocolError

from .guard import fail

__all__ = ["json_object_body"]


async def json_object_body(req: Request, max_depth: int) -> dict[str, Any] | JSONResponse | None:
    """The body as a dict, None when empty, or a 400 answer saying what is wrong."""
    raw = await req.body()
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return fail(400, "body must be UTF-8 JSON")
    try:
        check_depth(text, max_depth)
        value = json.loads(text)
    except ProtocolError as exc:
        return fail(400, exc.message)
    except (ValueError, RecursionError):
        return fail(400, "body is not valid JSON")
    if not isinstance(value, dict):
        return fail(400, "body must be a JSON object (or empty)")
    return value
