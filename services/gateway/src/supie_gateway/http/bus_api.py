"""HTTP routes answered by a service over NATS (``ApiReply``)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel
from supie_common.bus import request
from supie_common.contracts import ApiReply

from .context import HttpContext
from .guard import fail, guard
from .responses import FastJSONResponse

__all__ = ["API_ERRORS", "bus_api"]

API_ERRORS = (400, 401, 404, 409, 413, 429, 503)


async def bus_api(
    ctx: HttpContext, req: Request, subject: str, payload: BaseModel, op: str, service: str
) -> Response:
    refusal = guard(req, lambda: ctx.settings().server, ctx.limiter)
    if refusal is not None:
        ctx.metrics.http_requests.labels(op, str(refusal.status_code)).inc()
        return refusal
    try:
        reply = await request(
            ctx.nc, subject, payload, ApiReply, timeout=ctx.settings().nats.request_timeout_s
        )
    except Exception as exc:  # no responders, timeout, NATS down, a malformed reply
        ctx.metrics.http_requests.labels(op, "503").inc()
        return fail(503, f"{service} service unavailable: {type(exc).__name__}")
    status = reply.status if 200 <= reply.status <= 599 else 502
    ctx.metrics.http_requests.labels(op, str(status)).inc()
    if reply.content_type:
        return Response(
            content=str(reply.data or ""), media_type=reply.content_type, status_code=status
        )
    if reply.success:
        return FastJSONResponse({"success": True, "data": reply.data}, status_code=status)
    return FastJSONResponse(
        {"success": False, "error": reply.error or "failed"}, status_code=status
    )
