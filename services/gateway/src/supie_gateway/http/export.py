"""A meeting's export, its live transcript and its speaker labels, answered by the meeting
service (``MEETING_API`` ops ``export``, ``live``, ``speakers``, ``rename_speaker``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from supie_common.contracts import MeetingApiRequest, Subjects

from .body import json_object_body
from .bus_api import API_ERRORS, bus_api
from .context import HttpContext
from .schemas import ApiBody, api_responses

__all__ = ["export_router"]

_EXPORT_TYPES = ("text/markdown", "text/plain", "text/vtt", "application/json")

_SPEAKER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["speakerId", "label"],
                    "properties": {
                        "speakerId": {"type": "string"},
                        "label": {"type": "string", "description": "empty: back to the id"},
                        "scope": {"type": "string", "enum": ["meeting", "all"]},
                    },
                }
            }
        },
    }
}


def export_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/supie/meetings", tags=["meetings"])
    errors = api_responses(*API_ERRORS)

    async def call(req: Request, op: str, params: dict[str, Any]) -> Response:
        payload = MeetingApiRequest(op=op, params=params)
        return await bus_api(ctx, req, Subjects.MEETING_API, payload, op, "meeting")

    @router.get(
        "/{session_id}/export",
        summary="Export a finalized meeting: Markdown, plain text, WebVTT or JSON",
        response_class=Response,
        responses={
            200: {
                "description": "the export, as its media type",
                "content": {t: {"schema": {"type": "string"}} for t in _EXPORT_TYPES},
            },
            **errors,
        },
    )
    async def meeting_export(
        req: Request,
        session_id: str,
        format: str | None = Query(default=None, description="md | txt | vtt | json (md)"),
    ) -> Response:
        params = {"sessionId": session_id, "format": format or "md"}
        return await call(req, "export", params)

    @router.get(
        "/{session_id}/live",
        summary="An active meeting's transcript so far (from live state), paged",
        response_model=ApiBody,
        responses=errors,
    )
    async def meeting_live(
        req: Request,
        session_id: str,
        offset: str | None = Query(default=None),
        limit: str | None = Query(default=None, description="1..500, default 200"),
    ) -> Response:
        params = {"sessionId": session_id}
        params.update({k: v for k, v in (("offset", offset), ("limit", limit)) if v is not None})
        return await call(req, "live", params)

    @router.get(
        "/{session_id}/speakers",
        summary="Speaker labels of a meeting (its own, then every meeting's)",
        response_model=ApiBody,
        responses=errors,
    )
    async def meeting_speakers(req: Request, session_id: str) -> Response:
        return await call(req, "speakers", {"sessionId": session_id})

    @router.post(
        "/{session_id}/speakers",
        summary="Rename a speaker, in this meeting or in every meeting",
        response_model=ApiBody,
        responses={**errors, 413: api_responses(413)[413]},
        openapi_extra=_SPEAKER_BODY,
    )
    async def meeting_rename_speaker(req: Request, session_id: str) -> Response:
        body = await json_object_body(req, ctx.settings().server.max_json_depth)
        if isinstance(body, Response):
            return body
        params: dict[str, Any] = {**(body or {}), "sessionId": session_id}
        return await call(req, "rename_speaker", params)

    return router
