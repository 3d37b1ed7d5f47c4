"""The FastAPI app of the HTTP port, built from an :class:`HttpContext`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse

from ..console import console_router, live_router
from .context import HttpContext
from .devices import devices_router
from .export import export_router
from .health import health_router
from .meetings import meetings_router
from .ota import ota_router
from .search import search_router
from .tasks import tasks_router
from .workflow import workflow_router

__all__ = ["build_app"]


def build_app(ctx: HttpContext) -> FastAPI:
    app = FastAPI(
        title="Supie gateway HTTP API",
        version="1",
        description="OTA for devices, health, metrics, and the meetings and workflow APIs.",
        # Metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks would only cost a
        # check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    app.include_router(ota_router(ctx))
    app.include_router(search_router(ctx))  # before meetings: /search is not a session id
    app.include_router(meetings_router(ctx))
    app.include_router(export_router(ctx))
    app.include_router(workflow_router(ctx))
    app.include_router(tasks_router(ctx))
    app.include_router(devices_router(ctx))
    app.include_router(console_router(ctx))
    app.include_router(live_router(ctx))
    app.include_router(health_router(ctx))

    @app.get("/", include_in_schema=False)
    async def root() -> PlainTextResponse:
        return PlainTextResponse("Supie gateway is running\n")

    return app
