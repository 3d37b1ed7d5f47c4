"""The meetings HTTP API (``/supie/meetings/...``), answered over NATS for the gateway.

Parameters arrive as the gateway got them (query strings are strings). Bad ones give 400 naming
the parameter; an unknown meeting gives 404. Every reply fits one bus message: transcript pages
stop early (``truncated:true``, ``nextOffset``) rather than grow past the payload limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from supie_common.contracts import ApiReply, MeetingApiRequest, new_id

from .archive import valid_session_id
from .finalize import Finalizer
from .reader import ArchiveReader, NotFound
from .state import MeetingState

__all__ = [
    "API_SUMMARY_WAIT_S",
    "BadParam",
    "ConsoleOps",
    "MeetingApi",
    "int_param",
    "session_id_param",
]

API_SUMMARY_WAIT_S = 3.0  # an HTTP finalize waits this long for the summary, then answers 202


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


def session_id_param(params: dict[str, Any]) -> str:
    sid = params.get("sessionId")
    if sid is None or sid == "":
        raise BadParam("sessionId: required")
    if not valid_session_id(sid):
        raise BadParam("sessionId: expected 1-128 characters of [A-Za-z0-9_-]")
    return str(sid)


class ConsoleOps(Protocol):
    """The console's operations (``console_api.ConsoleApi``), answered after the core ones."""

    async def handle(self, op: str, params: dict[str, Any]) -> ApiReply: ...


class MeetingApi:
    """``recent``, ``detail``, ``transcript`` (pages bounded by ``max_bytes`` as well as by
    ``limit``) and ``finalize`` (by ``sessionId`` or ``deviceId``); the console's operations
    (``console_ops``) besides."""

    def __init__(
        self,
        reader: ArchiveReader,
        finalizer: Finalizer,
        state: MeetingState,
        max_bytes: Callable[[], int],
        console_ops: tuple[frozenset[str], ConsoleOps] | None = None,
    ) -> None:
        self.console_ops = console_ops
        self.reader = reader
        self.finalizer = finalizer
        self.state = state
        self.max_bytes = max_bytes

    async def handle(self, req: MeetingApiRequest) -> ApiReply:
        try:
            if req.op == "recent":
                return await self._recent(req.params)
            if req.op == "detail":
                return await self._detail(req.params)
            if req.op == "transcript":
                return await self._transcript(req.params)
            if req.op == "finalize":
                return await self._finalize(req.params)
            if self.console_ops is not None and req.op in self.console_ops[0]:
                return await self.console_ops[1].handle(req.op, req.params)
            return ApiReply(status=400, success=False, error=f"op: unknown operation {req.op!r}")
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
        return ApiReply(data=await self.reader.recent(limit, device or None, from_ts, to_ts))

    async def _detail(self, params: dict[str, Any]) -> ApiReply:
        sid = session_id_param(params)
        preview = int_param(params, "preview", 5, low=1, high=20, clamp=True)
        assert preview is not None
        return ApiReply(data=await self.reader.detail(sid, preview))

    async def _transcript(self, params: dict[str, Any]) -> ApiReply:
        sid = session_id_param(params)
        offset = int_param(params, "offset", 0, low=0)
        limit = int_param(params, "limit", 100, low=1, high=500)
        assert offset is not None and limit is not None
        page = await self.reader.transcript(sid, offset, limit, self.max_bytes())
        return ApiReply(data=page)

    async def _finalize(self, params: dict[str, Any]) -> ApiReply:
        sid = params.get("sessionId")
        device = params.get("deviceId")
        if sid:
            sid = session_id_param(params)
        elif isinstance(device, str) and device:
            sid = await self.state.device_meeting(device)
            if not sid:
                return ApiReply(status=404, success=False, error="no active meeting for deviceId")
        else:
            raise BadParam("sessionId: required")
        begin = await self.finalizer.for_meeting(sid, new_id(), "api")
        if begin is None:  # no live state: finalized long ago, or never existed
            main = await self.reader.main(sid)
            return ApiReply(
                data={
                    "sessionId": sid,
                    "status": "finalized",
                    "idempotent": True,
                    "summary": main.summary.model_dump(by_alias=True),
                }
            )
        data: dict[str, Any] = {
            "sessionId": sid,
            "startedAt": begin.started_at,
            "pendingCount": begin.pending,
            "status": "finalizing",
            "idempotent": begin.previous_status != "active",
        }
        # The device gets its summary regardless; the caller waits a little for it.
        if await self.finalizer.wait_finished(sid, API_SUMMARY_WAIT_S):
            stored = await self.state.stored_summary(sid)
            if stored is not None:
                data.update(status="finalized", summary=stored.summary.model_dump(by_alias=True))
                return ApiReply(data=data)
        return ApiReply(status=202, data=data)
