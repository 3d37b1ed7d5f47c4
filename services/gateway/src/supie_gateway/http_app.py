"""The HTTP port: OTA, health, metrics and the bus-backed API (meetings)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from supie_common.bus import BusError, request
from supie_common.contracts import (
    ApiReply,
    HealthPing,
    HealthPong,
    MeetingApiRequest,
    Subjects,
)
from supie_common.protocol import normalize_device_id
from supie_common.settings import secret_value

from .auth import mint_token

if TYPE_CHECKING:
    from .service import GatewayService

__all__ = ["build_app", "RateLimiter"]


class RateLimiter:
    """Token bucket per client: ``rate`` requests/s with bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget idle clients
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return True


def _fail(status: int, error: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": error}, status_code=status)


def build_app(svc: GatewayService) -> FastAPI:
    app = FastAPI(
        title="Supie gateway HTTP API",
        version="1",
        description="OTA for devices, health, metrics, and the meetings API.",
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    limiter = RateLimiter(svc.settings.server.api_rate_limit, svc.settings.server.api_rate_burst)
    svc.rate_limiter = limiter

    def guard(req: Request) -> JSONResponse | None:
        """Token auth (401) then per-client rate limit (429) for the API routes."""
        token = secret_value(svc.settings.server.api_token)
        if token:
            given = req.headers.get("X-API-Token") or req.query_params.get("token")
            auth = req.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given != token:
                return _fail(401, "unauthorized: send Authorization: Bearer <token> or X-API-Token")
        client = req.client.host if req.client else "?"
        if not svc.rate_limiter.allow(client):
            return _fail(429, "rate limit exceeded: slow down (server.api_rate_limit)")
        return None

    async def bus_api(req: Request, op: str, params: dict[str, Any]) -> JSONResponse:
        refusal = guard(req)
        if refusal is not None:
            svc.metrics.http_requests.labels(op, str(refusal.status_code)).inc()
            return refusal
        try:
            reply = await request(
                svc.nc,
                Subjects.MEETING_API,
                MeetingApiRequest(op=op, params=params),
                ApiReply,
                timeout=svc.settings.nats.request_timeout_s,
            )
        except BusError as exc:
            svc.metrics.http_requests.labels(op, "503").inc()
            return _fail(503, f"meeting service unavailable: {exc}")
        svc.metrics.http_requests.labels(op, str(reply.status)).inc()
        body: dict[str, Any] = {"success": reply.success}
        body["data" if reply.success else "error"] = reply.data if reply.success else reply.error
        return JSONResponse(body, status_code=reply.status)

    @app.get("/supie/meetings/recent", summary="Recent finalized meetings")
    async def meetings_recent(req: Request) -> JSONResponse:
        return await bus_api(req, "recent", dict(req.query_params))

    @app.get("/supie/meetings/{session_id}", summary="One meeting: summary and preview")
    async def meeting_detail(req: Request, session_id: str) -> JSONResponse:
        return await bus_api(req, "detail", {**req.query_params, "sessionId": session_id})

    @app.get("/supie/meetings/{session_id}/transcript", summary="A meeting's transcript, paged")
    async def meeting_transcript(req: Request, session_id: str) -> JSONResponse:
        return await bus_api(req, "transcript", {**req.query_params, "sessionId": session_id})

    @app.post("/supie/meetings/{session_id}/finalize", summary="Finalize an active meeting")
    async def meeting_finalize(req: Request, session_id: str) -> JSONResponse:
        return await bus_api(req, "finalize", {"sessionId": session_id})

    async def ota(req: Request) -> JSONResponse:
        server = svc.settings.server
        device_id = normalize_device_id(req.headers.get("Device-Id"))
        client_id = normalize_device_id(req.headers.get("Client-Id"))
        if req.method == "POST":
            try:
                body = await req.json()
            except ValueError:
                body = None
            if body is not None and not isinstance(body, dict):
                return _fail(400, "body must be the device's JSON object (or empty)")
        path = "/xiaozhi/v1/" if req.url.path.startswith("/xiaozhi") else "/supie/v1/"
        host = server.advertise_ip or (req.url.hostname or "127.0.0.1")
        ws_url = server.websocket or f"ws://{host}:{svc.ws_port}{path}"
        token = ""
        if server.auth.enabled and server.auth.auth_key and device_id:
            token = mint_token(server.auth.auth_key.get_secret_value(), client_id, device_id)
        return JSONResponse(
            {
                "server_time": {
                    "timestamp": int(time.time() * 1000),
                    "timezone_offset": server.timezone_offset * 60,
                },
                "firmware": {"version": server.firmware_version, "url": server.firmware_url},
                "websocket": {"url": ws_url, "token": token},
            }
        )

    for prefix in ("/supie/ota/", "/xiaozhi/ota/"):
        for method in ("GET", "POST"):
            app.add_api_route(
                prefix,
                ota,
                methods=[method],
                summary="Device OTA check",
                operation_id=f"ota_{prefix.strip('/').replace('/', '_')}_{method}",
            )

    @app.get("/healthz", summary="200 when NATS, Redis and every service answer")
    async def healthz() -> JSONResponse:
        report: dict[str, Any] = {"nats": "ok" if svc.nc.is_connected else "down"}
        if svc.redis is not None:
            try:
                await asyncio.wait_for(svc.redis.ping(), 1.0)
                report["redis"] = "ok"
            except Exception as exc:
                report["redis"] = f"down: {type(exc).__name__}"
        else:
            report["redis"] = "not configured"

        async def probe(name: str) -> tuple[str, str]:
            try:
                pong = await request(
                    svc.nc, Subjects.health(name), HealthPing(), HealthPong, timeout=1.5
                )
            except BusError as exc:
                return name, f"down: {exc}"
            return name, "ok" if pong.ok else f"degraded: {pong.detail}"

        results = await asyncio.gather(*(probe(n) for n in svc.settings.services))
        report["services"] = dict(results)
        ok = (
            report["nats"] == "ok"
            and report["redis"] == "ok"
            and all(v == "ok" for v in report["services"].values())
        )
        report["ok"] = ok
        if not ok:
            logger.debug("healthz not ok: {}", report)
        return JSONResponse(report, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def root() -> PlainTextResponse:
        return PlainTextResponse("Supie gateway is running\n")

    return app
