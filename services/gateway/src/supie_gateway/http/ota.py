"""Device OTA check (``GET|POST /supie/ota/`` and ``/xiaozhi/ota/``): where the WebSocket is,
and a device token when device auth is on.

With ``server.auth.enabled`` a token is handed only to an allowed device
(``server.auth.allowed_devices``) or to a request carrying ``server.auth.ota_activation_secret``
in its ``Activation-Secret`` header; anyone else gets the URL with an empty token (and is then
refused at the WebSocket handshake).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from supie_common.protocol import normalize_device_id
from supie_common.settings import secret_value

from ..auth import mint_token, same_secret
from ..handshake import HandshakeRefused, check_id
from .body import json_object_body
from .context import HttpContext
from .guard import fail
from .schemas import OtaFirmware, OtaReply, OtaServerTime, OtaWebsocket, api_responses

__all__ = ["ota_router"]

_OTA_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def ota_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(tags=["ota"])

    async def ota(
        req: Request,
        device: str | None = Header(default=None, alias="Device-Id"),
        client: str | None = Header(default=None, alias="Client-Id"),
        activation_secret: str | None = Header(default=None, alias="Activation-Secret"),
    ) -> Response:
        server = ctx.settings().server
        device_id = normalize_device_id(device)
        client_id = normalize_device_id(client)
        try:
            check_id("Device-Id", device_id, server.max_device_id_len)
            check_id("Client-Id", client_id, server.max_device_id_len)
        except HandshakeRefused as exc:
            return fail(400, exc.reason)
        if req.method == "POST":
            body = await json_object_body(req, server.max_json_depth)
            if isinstance(body, Response):
                return body
        path = "/xiaozhi/v1/" if req.url.path.startswith("/xiaozhi") else "/supie/v1/"
        host = server.advertise_ip or (req.url.hostname or "127.0.0.1")
        ws_url = server.websocket or f"ws://{host}:{ctx.ws_port()}{path}"
        token = ""
        auth = server.auth
        if auth.enabled and auth.auth_key and device_id:
            activation = secret_value(auth.ota_activation_secret)
            allowed = device_id in auth.allowed_devices or (
                activation is not None and same_secret(activation_secret, activation)
            )
            if allowed:
                token = mint_token(auth.auth_key.get_secret_value(), client_id, device_id)
        reply = OtaReply(
            server_time=OtaServerTime(
                timestamp=int(time.time() * 1000), timezone_offset=server.timezone_offset * 60
            ),
            firmware=OtaFirmware(version=server.firmware_version, url=server.firmware_url),
            websocket=OtaWebsocket(url=ws_url, token=token),
        )
        return JSONResponse(reply.model_dump())

    for prefix in ("/supie/ota/", "/xiaozhi/ota/"):
        for method in ("GET", "POST"):
            router.add_api_route(
                prefix,
                ota,
                methods=[method],
                summary="Device OTA check",
                response_model=OtaReply,
                responses=api_responses(400, 413) if method == "POST" else api_responses(400),
                operation_id=f"ota_{prefix.strip('/').replace('/', '_')}_{method}",
                openapi_extra=_OTA_BODY if method == "POST" else None,
            )
    return router
