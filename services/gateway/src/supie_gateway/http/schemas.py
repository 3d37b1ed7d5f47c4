"""Response models of the HTTP port, for its OpenAPI document (and so for schemathesis)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ApiBody",
    "ApiError",
    "HealthReport",
    "OtaFirmware",
    "OtaReply",
    "OtaServerTime",
    "OtaWebsocket",
    "api_responses",
    "documented_params",
]


class ApiBody(BaseModel):
    """``{"success": true, "data": ...}`` or ``{"success": false, "error": "..."}``."""

    success: bool
    data: Any = None
    error: str | None = None


class ApiError(BaseModel):
    success: bool = False
    error: str


class OtaServerTime(BaseModel):
    timestamp: int
    timezone_offset: int


class OtaFirmware(BaseModel):
    version: str
    url: str


class OtaWebsocket(BaseModel):
    url: str
    token: str


class OtaReply(BaseModel):
    model_config = ConfigDict(extra="forbid")  # no "mqtt" key, ever

    server_time: OtaServerTime
    firmware: OtaFirmware
    websocket: OtaWebsocket


class HealthReport(BaseModel):
    ok: bool
    nats: str
    redis: str
    services: dict[str, str]


def _err(description: str) -> dict[str, Any]:
    return {"model": ApiError, "description": description}


def api_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route."""
    text = {
        400: "invalid request (the error names what)",
        401: "missing or wrong API token",
        404: "not found",
        408: "the request body arrived too slowly",
        409: "conflict with the current state",
        413: "request body too large (server.http_max_body_bytes)",
        429: "rate limit exceeded",
        503: "the owning service is unavailable",
    }
    return {code: _err(text[code]) for code in codes}


def documented_params(*path: str, **query: str) -> dict[str, Any]:
    """``openapi_extra`` for a route whose handler takes only the ``Request``: its path
    parameters and (optional, string) query parameters with their descriptions. The service
    behind the route validates them (a 400 names the parameter); declared as handler arguments,
    FastAPI's per-request parameter solving was 17% of the gateway's CPU on a meeting detail."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path
    ]
    params += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            **({"description": text} if text else {}),
        }
        for name, text in query.items()
    ]
    return {"parameters": params}
