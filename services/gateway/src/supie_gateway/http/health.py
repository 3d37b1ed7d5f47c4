"""``/healthz`` (always JSON, whatever is down) and ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from supie_common.bus import request
from supie_common.contracts import HealthPing, HealthPong, Subjects

from .context import HttpContext
from .schemas import HealthReport

__all__ = ["PROBE_TIMEOUT_S", "health_router"]

PROBE_TIMEOUT_S = 3.0


def health_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(tags=["operations"])

    async def probe(name: str) -> tuple[str, str]:
        if not ctx.nc.is_connected:
            return name, "unknown: NATS down"
        if name == "gateway":
            return name, "ok"  # this replica is answering: no round trip through the bus
        try:
            pong = await asyncio.wait_for(
                request(
                    ctx.nc,
                    Subjects.health(name),
                    HealthPing(),
                    HealthPong,
                    timeout=PROBE_TIMEOUT_S,
                ),
                PROBE_TIMEOUT_S + 0.5,
            )
        except Exception as exc:
            return name, f"down: {type(exc).__name__}"
        return name, "ok" if pong.ok else f"degraded: {sorted(pong.detail)}"

    async def redis_state() -> str:
        if ctx.redis is None:
            return "not configured"
        try:
            await asyncio.wait_for(ctx.redis.ping(), 1.0)
        except Exception as exc:
            return f"down: {type(exc).__name__}"
        return "ok"

    @router.get(
        "/healthz",
        summary="200 when NATS, Redis and every service answer; 503 names what is down",
        response_model=HealthReport,
        responses={503: {"model": HealthReport, "description": "something is down"}},
    )
    async def healthz() -> JSONResponse:
        report: dict[str, Any] = {"nats": "ok" if ctx.nc.is_connected else "down"}
        try:
            report["redis"] = await redis_state()
            results = await asyncio.gather(*(probe(n) for n in ctx.settings().services))
            report["services"] = dict(results)
        except Exception as exc:  # never a bare 500: the answer is always this JSON
            report.setdefault("redis", "unknown")
            report["services"] = {"gateway": f"error: {type(exc).__name__}"}
        ok = (
            report["nats"] == "ok"
            and report["redis"] in ("ok", "not configured")
            and all(v == "ok" for v in report["services"].values())
        )
        report["ok"] = ok
        if not ok:
            logger.debug("healthz not ok: {}", report)
        return JSONResponse(report, status_code=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "metrics"}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
