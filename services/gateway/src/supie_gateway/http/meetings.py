"""``/supie/meetings/...``: answered by the meeting service over ``MEETING_API``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from supie_common.contracts import MeetingApiRequest, Subjects

from .bus_api import API_ERRORS, bus_api
from .context import HttpContext
from .schemas import ApiBody, api_responses, documented_params

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

    # The read routes take only the Request (their parameters documented, not declared): they
    # are the hot ones, and the meeting service checks every parameter anyway.
    @router.get(
        "/recent",
        summary="Recent finalized meetings",
        response_model=ApiBody,
        responses=errors,
        openapi_extra=documented_params(
            limit="how many (1..100, default 10)",
            deviceId="only this badge's meetings",
            fromTs="ended at or after (ms since the epoch)",
            toTs="ended at or before (ms since the epoch)",
        ),
    )
    async def meetings_recent(req: Request) -> Response:
        return await call(req, "recent", _params(req))

    @router.get(
        "/{session_id}",
        summary="One meeting: summary and preview",
        response_model=ApiBody,
        responses=errors,
        openapi_extra=documented_params("session_id", preview="items, clamped 1..20"),
    )
    async def meeting_detail(req: Request) -> Response:
        return await call(req, "detail", _params(req, sessionId=req.path_params["session_id"]))

    @router.get(
        "/{session_id}/transcript",
        summary="A meeting's transcript, paged",
        response_model=ApiBody,
        responses=errors,
        openapi_extra=documented_params(
            "session_id", offset="the first item (default 0)", limit="1..500, default 100"
        ),
    )
    async def meeting_transcript(req: Request) -> Response:
        session_id = req.path_params["session_id"]
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
