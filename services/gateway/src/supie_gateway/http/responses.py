"""JSON responses encoded by pydantic-core (Rust) instead of the standard library: a meeting's
detail is re-encoded on every request, and ``json.dumps`` was the largest single cost per
request in the gateway's profile. Same bytes as Starlette's ``JSONResponse`` (compact, UTF-8,
non-ASCII kept as is)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic_core import to_json

__all__ = ["FastJSONResponse"]


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return to_json(content)
