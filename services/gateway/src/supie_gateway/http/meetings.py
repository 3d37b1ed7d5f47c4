"""``/supie/meetings/...``: answered by the meeting service over ``MEETING_API``."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from supie_common.contracts import MeetingApiRequest, Subjects

from .bus_api import API_ERRORS, bus_api
from .context import HttpContext
from .schemas import ApiBody, api_responses

__all__ = ["meetings_router"]

_HIDDEN = ("token",)  # the API token may come as a query parameter: never forwarded


def _params(req: Request, **extra: str) -> dict[str, str]:
    params = {k: v for k, v in req.query_params.items() if k not in _HIDDEN}
    params.update(extra)
    return params


def meetings_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/supie/meetings", tags=["meetings"])
    errors = api_responses(*API_ERRORS)

    async def call(req: Request, op: str, params: dict[str, str]) -> Response:
        payload = MeetingApiRequest(op=op, params=params)
        return await bus_api(ctx, req, Subjects.MEETING_API, payload, op, "meeting")

    @router.get(
        "/recent", summary="Recent finalized meetings", response_model=ApiBody, responses=errors
    )
    async def meetings_recent(
        req: Request,
        limit: str | None = Query(default=None, description="how many (1..100)"),
        device_id: str | None = Query(default=None, alias="deviceId"),
        from_ts: str | None = Query(default=None, alias="fromTs"),
        to_ts: str | None = Query(default=None, alias="toTs"),
    ) -> Response:
        return await call(req, "recent", _params(req))

    @router.get(
        "/{session_id}",
        summary="One meeting: summary and preview",
        response_model=ApiBody,
        responses=errors,
    )
    async def meeting_detail(
        req: Request,
        session_id: str,
        preview: str | None = Query(default=None, description="items, clamped 1..20"),
    ) -> Response:
        return await call(req, "detail", _params(req, sessionId=session_id))

    @router.get(
        "/{session_id}/transcript",
        summary="A meeting's transcript, paged",
        response_model=ApiBody,
        responses=errors,
    )
    async def meeting_transcript(
        req: Request,
        session_id: str,
        offset: str | None = Query(default=None),
        limit: str | None = Query(default=None, description="1..500, default 100"),
    ) -> Response:
        return await call(req, "transcript", _params(req, sessionId=session_id))

    @router.post(
        "/{session_id}/finalize",
        summary="Finalize an active meeting",
        response_model=ApiBody,
        responses=errors,
    )
    async def meeting_finalize(req: Request, session_id: str) -> Response:
        return await call(req, "finalize", {"sessionId": session_id})

    return router
