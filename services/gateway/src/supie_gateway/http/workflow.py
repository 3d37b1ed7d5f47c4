"""``/supie/workflow...``: answered by the workflow service over ``WORKFLOW_API``."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from supie_common.contracts import Subjects, WorkflowApiRequest

from .body import json_object_body
from .bus_api import API_ERRORS, bus_api
from .context import HttpContext
from .schemas import ApiBody, api_responses

__all__ = ["workflow_router"]

_IMPORT_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "groupKey": {"type": "string"},
                        "sessionId": {"type": "string"},
                    },
                }
            }
        },
    }
}


def workflow_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/supie/workflow", tags=["workflow"])
    errors = api_responses(*API_ERRORS)

    @router.get("", summary="A group's task list", response_model=ApiBody, responses=errors)
    async def workflow_list(
        req: Request, group_key: str | None = Query(default=None, alias="groupKey")
    ) -> Response:
        params = {"groupKey": group_key} if group_key is not None else {}
        payload = WorkflowApiRequest(op="list", params=params)
        return await bus_api(ctx, req, Subjects.WORKFLOW_API, payload, "workflow_list", "workflow")

    @router.post(
        "/import-from-meeting",
        summary="A meeting's actions and next steps become tasks in a group",
        response_model=ApiBody,
        responses=errors,
        openapi_extra=_IMPORT_BODY,
    )
    async def workflow_import(
        req: Request,
        group_key: str | None = Query(default=None, alias="groupKey"),
        session_id: str | None = Query(default=None, alias="sessionId"),
    ) -> Response:
        body = await json_object_body(req, ctx.settings().server.max_json_depth)
        if isinstance(body, Response):
            return body
        params = {k: v for k, v in (("groupKey", group_key), ("sessionId", session_id)) if v}
        payload = WorkflowApiRequest(op="import_from_meeting", params=params, body=body or {})
        return await bus_api(
            ctx, req, Subjects.WORKFLOW_API, payload, "workflow_import", "workflow"
        )

    return router
