"""Limits on what an HTTP client controls (issue 9 item 3).

- :class:`BodyLimits` (ASGI, outermost): a body above ``server.http_max_body_bytes`` gets 413
  (at once when ``Content-Length`` says so, else as soon as the bytes pass the limit), and a
  client that stalls while sending its body for ``server.http_header_timeout_s`` gets 408.
- :func:`guarded_http_protocol`: uvicorn's HTTP protocol with a deadline on the request head: a
  client that connects and sends its headers slower than ``server.http_header_timeout_s`` is
  cut off (uvicorn itself only times out idle keep-alive connections).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BodyLimits", "guarded_http_protocol"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"success": False, "error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    def __init__(
        self, app: ASGIApp, max_bytes: Callable[[], int], read_timeout_s: Callable[[], float]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        too_large = f"request body larger than {limit} bytes (server.http_max_body_bytes)"
        has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await _answer(send, 413, too_large)
                    return
                has_body = has_body or int(value) > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # HTTP/1.1: no Content-Length and no Transfer-Encoding is no body (every GET):
            # nothing to wait for, so no timed read per request.
            await self.app(scope, receive, send)
            return
        timeout = self.read_timeout_s()
        # The body is read here, whole (it is small by the limit), before the app sees it: an
        # error raised from inside the app's receive() would come out as a 500.
        chunks: list[bytes] = []
        received = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                await _answer(send, 408, f"request body not received within {timeout:g} s")
                return
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            received += len(body)
            if received > limit:
                await _answer(send, 413, too_large)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered: Message | None = {
            "type": "http.request",
            "body": b"".join(chunks),
            "more_body": False,
        }

        async def replay() -> Message:
            nonlocal buffered
            if buffered is not None:
                message, buffered = buffered, None
                return message
            return await receive()

        await self.app(scope, replay, send)


def guarded_http_protocol(header_timeout_s: Callable[[], float]) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, plus a deadline for each request head."""

    class GuardedHttp(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s(), self._head_late)

        def _disarm_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_head()

        def on_headers_complete(self) -> None:
            self._disarm_head()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head()
            super().connection_lost(exc)

    return GuardedHttp
