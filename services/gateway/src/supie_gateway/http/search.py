"""``/supie/meetings/search`` and ``/supie/meetings/active``: answered by the meeting service
(``MEETING_API`` ops ``search`` and ``active``). Included before the meetings router, whose
``/{session_id}`` would otherwise take these paths."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from supie_common.contracts import MeetingApiRequest, Subjects

from .bus_api import API_ERRORS, bus_api
from .context import HttpContext
from .schemas import ApiBody, api_responses

__all__ = ["search_router"]


def search_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/supie/meetings", tags=["meetings"])
    errors = api_responses(*API_ERRORS)

    @router.get(
        "/search",
        summary="Search finalized meetings (summary and transcript, Chinese and English)",
        response_model=ApiBody,
        responses=errors,
    )
    async def meetings_search(
        req: Request,
        q: str | None = Query(default=None, description="words or a phrase; CJK substrings"),
        device_id: str | None = Query(default=None, alias="deviceId"),
        from_ts: str | None = Query(default=None, alias="fromTs", description="ms, endedAt >="),
        to_ts: str | None = Query(default=None, alias="toTs", description="ms, endedAt <="),
        limit: str | None = Query(default=None, description="1..100, default 20"),
        offset: str | None = Query(default=None, description="0.., default 0"),
    ) -> Response:
        params = {
            k: v
            for k, v in (
                ("q", q),
                ("deviceId", device_id),
                ("fromTs", from_ts),
                ("toTs", to_ts),
                ("limit", limit),
                ("offset", offset),
            )
            if v is not None
        }
        payload = MeetingApiRequest(op="search", params=params)
        return await bus_api(ctx, req, Subjects.MEETING_API, payload, "search", "meeting")

    @router.get(
        "/active",
        summary="Meetings in progress: device, started, segments so far",
        response_model=ApiBody,
        responses=errors,
    )
    async def meetings_active(req: Request) -> Response:
        payload = MeetingApiRequest(op="active")
        return await bus_api(ctx, req, Subjects.MEETING_API, payload, "active", "meeting")

    return router
