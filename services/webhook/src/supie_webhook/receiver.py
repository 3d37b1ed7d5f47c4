"""A small local HTTP receiver for webhooks: records every request and answers what its
``respond`` callback says. Used by the tests and the benchmark, and by ``python -m supie_webhook
echo`` to try a configuration by hand. HTTP/1.1 with keep-alive, on asyncio streams only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = ["ReceivedRequest", "WebhookReceiver"]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_mono: float = field(default_factory=time.monotonic)


Responder = Callable[[ReceivedRequest], Awaitable[int]]


async def _ok(_: ReceivedRequest) -> int:
    return 200


class WebhookReceiver:
    """``async with WebhookReceiver(respond) as rx: ... rx.url ... rx.requests``."""

    def __init__(
        self, respond: Responder | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.respond = respond or _ok
        self.host = host
        self.port = port
        self.requests: list[ReceivedRequest] = []
        self.arrived = asyncio.Event()  # set on every request; waiters clear it
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):  # hanging responders must not block shutdown
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_until(self, predicate: Callable[[list[ReceivedRequest]], bool]) -> None:
        """Wait until ``predicate(self.requests)`` holds (wrap in ``asyncio.timeout``)."""
        while not predicate(self.requests):
            self.arrived.clear()
            await self.arrived.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                self.arrived.set()
                status = await self.respond(request)
                reason = HTTPStatus(status).phrase
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: 2\r\n\r\nok".encode()
                )
                await writer.drain()
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return  # stop() cancels open connections; end this handler quietly
        finally:
            self._handlers.discard(task)
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed the (keep-alive) connection
        if len(head) > MAX_HEADER_BYTES:
            raise ConnectionError("header too large")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY_BYTES:
            raise ConnectionError("body too large")
        body = await reader.readexactly(length) if length else b""
        return ReceivedRequest(method=method, path=path, headers=headers, body=body)
