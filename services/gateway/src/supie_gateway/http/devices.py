"""``GET /supie/devices``: the badges online (and those seen lately), from Redis presence, which
every gateway replica renews for the devices it holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from supie_common.store import Presence

from .context import HttpContext
from .guard import fail, guard
from .schemas import ApiBody, api_responses

__all__ = ["device_view", "devices_router"]


def device_view(raw: dict[str, str]) -> dict[str, Any]:
    """A presence entry as the API shows it (camelCase, numbers as numbers)."""

    def num(key: str) -> int | None:
        try:
            return int(raw[key])
        except (KeyError, ValueError):
            return None

    online = raw.get("online") == "1"
    view: dict[str, Any] = {
        "deviceId": raw.get("device", ""),
        "online": online,
        "group": raw.get("group") or None,
        "mode": raw.get("mode") or None,
        "gateway": raw.get("gateway") or None,
        "language": raw.get("language") or None,
        "clientId": raw.get("client") or None,
        "protocol": num("protocol"),
        # online: its last message; offline: its last heartbeat or disconnect
        "lastSeen": (num("last_seen") if online else None) or num("seen"),
    }
    return view


def devices_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/supie/devices", tags=["devices"])

    @router.get(
        "",
        summary="Badges online (and seen within a week): group, mode, gateway, language, last seen",
        response_model=ApiBody,
        responses=api_responses(401, 429, 503),
    )
    async def devices(req: Request) -> Response:
        refusal = guard(req, lambda: ctx.settings().server, ctx.limiter)
        if refusal is not None:
            return refusal
        if ctx.redis is None:
            return fail(503, "presence unavailable: redis.url is not set")
        presence = Presence(ctx.redis, ctx.settings().server.presence_ttl_s)
        try:
            entries = await presence.devices()
        except Exception as exc:
            return fail(503, f"presence unavailable: {type(exc).__name__}")
        items = [device_view(e) for e in entries]
        items.sort(key=lambda d: (not d["online"], d["group"] or "", d["deviceId"]))
        return JSONResponse({"success": True, "data": {"items": items}})

    return router
