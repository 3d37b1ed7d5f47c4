"""The meetings HTTP API (``/supie/meetings/...``), answered over NATS for the gateway.

Parameters arrive as the gateway got them (query strings are strings). Bad ones give 400 naming
the parameter; an unknown meeting gives 404. File reads run in worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from supie_common.contracts import ApiReply, MeetingApiRequest

from .archive import ArchiveReader, NotFound, valid_session_id

__all__ = ["BadParam", "MeetingApi", "int_param"]


class BadParam(ValueError):
    pass


def int_param(
    params: dict[str, Any],
    name: str,
    default: int | None,
    *,
    low: int | None = None,
    high: int | None = None,
    clamp: bool = False,
) -> int | None:
    """An integer parameter; out of range is clamped (``clamp``) or a :class:`BadParam`."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise BadParam(f"{name}: expected an integer")
    try:
        value = int(raw) if isinstance(raw, int) else int(str(raw).strip())
    except ValueError:
        raise BadParam(f"{name}: expected an integer, got {str(raw)[:40]!r}") from None
    if clamp:
        if low is not None:
            value = max(low, value)
        if high is not None:
            value = min(high, value)
        return value
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        raise BadParam(f"{name}: expected an integer in {bounds}, got {value}")
    return value


def _session_id(params: dict[str, Any]) -> str:
    sid = params.get("sessionId")
    if sid is None or sid == "":
        raise BadParam("sessionId: required")
    if not valid_session_id(sid):
        raise BadParam("sessionId: expected 1-128 characters of [A-Za-z0-9_-]")
    return str(sid)


FinalizeFn = Callable[[dict[str, Any]], Awaitable[ApiReply]]


class MeetingApi:
    def __init__(self, reader: ArchiveReader, finalize: FinalizeFn) -> None:
        self.reader = reader
        self.finalize = finalize

    async def handle(self, req: MeetingApiRequest) -> ApiReply:
        try:
            if req.op == "recent":
                return await self._recent(req.params)
            if req.op == "detail":
                return await self._detail(req.params)
            if req.op == "transcript":
                return await self._transcript(req.params)
            return await self.finalize(req.params)
        except BadParam as exc:
            return ApiReply(status=400, success=False, error=str(exc))
        except NotFound:
            return ApiReply(status=404, success=False, error="meeting not found")

    async def _recent(self, params: dict[str, Any]) -> ApiReply:
        limit = int_param(params, "limit", 10, low=1, high=100)
        from_ts = int_param(params, "fromTs", None, low=0)
        to_ts = int_param(params, "toTs", None, low=0)
        device = params.get("deviceId")
        if device is not None and not isinstance(device, str):
            raise BadParam("deviceId: expected a string")
        assert limit is not None
        items = await asyncio.to_thread(self.reader.recent, limit, device or None, from_ts, to_ts)
        return ApiReply(data=items)

    async def _detail(self, params: dict[str, Any]) -> ApiReply:
        sid = _session_id(params)
        preview = int_param(params, "preview", 5, low=1, high=20, clamp=True)
        assert preview is not None
        return ApiReply(data=await asyncio.to_thread(self.reader.detail, sid, preview))

    async def _transcript(self, params: dict[str, Any]) -> ApiReply:
        sid = _session_id(params)
        offset = int_param(params, "offset", 0, low=0)
        limit = int_param(params, "limit", 100, low=1, high=500)
        assert offset is not None and limit is not None
        return ApiReply(data=await asyncio.to_thread(self.reader.transcript, sid, offset, limit))
