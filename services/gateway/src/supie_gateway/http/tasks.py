"""The console's task board routes, answered by the workflow service (``WORKFLOW_API`` ops
``groups`` and ``operate``): an operation here is the one a badge would send, so the group's
badges get their snapshot as they do for each other's changes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from supie_common.contracts import Subjects, WorkflowApiRequest

from .body import json_object_body
from .bus_api import API_ERRORS, bus_api
from .context import HttpContext
from .guard import fail
from .schemas import ApiBody, api_responses

__all__ = ["tasks_router"]

_OPERATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["groupKey", "message"],
                    "properties": {
                        "groupKey": {"type": "string"},
                        "message": {
                            "type": "object",
                            "description": "a badge's workflow message: update, complete, "
                            "delete, assign, list",
                        },
                        "by": {"type": "string"},
                    },
                }
            }
        },
    }
}


def tasks_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/supie/workflow", tags=["workflow"])
    errors = api_responses(*API_ERRORS)

    @router.get(
        "/groups",
        summary="Every group with its task count",
        response_model=ApiBody,
        responses=errors,
    )
    async def workflow_groups(req: Request) -> Response:
        payload = WorkflowApiRequest(op="groups")
        return await bus_api(
            ctx, req, Subjects.WORKFLOW_API, payload, "workflow_groups", "workflow"
        )

    @router.post(
        "/operate",
        summary="Apply a workflow operation to a group, as a badge of it would",
        response_model=ApiBody,
        responses=errors,
        openapi_extra=_OPERATE_BODY,
    )
    async def workflow_operate(req: Request) -> Response:
        body = await json_object_body(req, ctx.settings().server.max_json_depth)
        if isinstance(body, Response):
            return body
        if body is None:
            return fail(400, "body: expected {groupKey, message}")
        payload = WorkflowApiRequest(op="operate", body=body)
        return await bus_api(
            ctx, req, Subjects.WORKFLOW_API, payload, "workflow_operate", "workflow"
        )

    return router
