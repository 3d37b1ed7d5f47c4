"""The FastAPI app of the HTTP port, built from an :class:`HttpContext`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse

from .context import HttpContext
from .health import health_router
from .meetings import meetings_router
from .ota import ota_router
from .workflow import workflow_router

__all__ = ["build_app"]


def build_app(ctx: HttpContext) -> FastAPI:
    app = FastAPI(
        title="Supie gateway HTTP API",
        version="1",
        description="OTA for devices, health, metrics, and the meetings and workflow APIs.",
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    app.include_router(ota_router(ctx))
    app.include_router(meetings_router(ctx))
    app.include_router(workflow_router(ctx))
    app.include_router(health_router(ctx))

    @app.get("/", include_in_schema=False)
    async def root() -> PlainTextResponse:
        return PlainTextResponse("Supie gateway is running\n")

    return app
