"""A device that speaks exactly the xiaozhi firmware protocol: the demo tool (``supie device``),
the protocol test client and the benchmarks' load generator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from .audio import OpusEncoder, read_wav
from .protocol import decode_frame, encode_frame

__all__ = ["DeviceClient", "firmware_hello", "opus_packets_for_wav"]


def firmware_hello(frame_ms: int = 60, fmt: str = "opus") -> dict[str, Any]:
    """The hello the firmware sends (FW ``GetHelloMessage``)."""
    return {
        "type": "hello",
        "version": 1,
        "features": {"mcp": True},
        "transport": "websocket",
        "audio_params": {
            "format": fmt,
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": frame_ms,
        },
    }


def opus_packets_for_wav(path: str | Path, frame_ms: int = 60) -> list[bytes]:
    samples, _ = read_wav(path)
    return OpusEncoder(frame_ms=frame_ms).encode_all(samples)


class DeviceClient:
    """One simulated badge. Text messages land in :attr:`inbox`, binary ones in :attr:`audio`.

    ``strict``: check every text frame received against the documented server -> device models
    (``contracts.device.validate_server_message``); what does not match is collected in
    :attr:`violations` (and in the class-wide :attr:`all_violations`). Tests switch it on for
    every client with :attr:`STRICT`.
    """

    STRICT = False
    all_violations: list[str] = []  # noqa: RUF012 - shared on purpose: one list per test run

    def __init__(
        self,
        url: str,
        device_id: str = "aa:bb:cc:dd:ee:ff",
        *,
        client_id: str | None = None,
        token: str | None = None,
        protocol_version: int = 1,
        use_query: bool = False,
        extra_headers: dict[str, str] | None = None,
        strict: bool | None = None,
    ) -> None:
        self.url = url
        self.device_id = device_id
        self.client_id = client_id or str(uuid.uuid4())
        self.token = token
        self.protocol_version = protocol_version
        self.use_query = use_query
        self.extra_headers = extra_headers or {}
        self.strict = self.STRICT if strict is None else strict
        self.violations: list[str] = []
        self.ws: ClientConnection | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.texts: list[str] = []
        self.received: list[dict[str, Any]] = []
        self.audio: list[bytes] = []
        self.session_id: str | None = None
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> DeviceClient:
        headers: dict[str, str] = dict(self.extra_headers)
        url = self.url
        if self.use_query:
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}device-id={self.device_id}&client-id={self.client_id}"
            if self.token:
                url += f"&authorization=Bearer%20{self.token}"
        else:
            headers.update(
                {
                    "Protocol-Version": str(self.protocol_version),
                    "Device-Id": self.device_id,
                    "Client-Id": self.client_id,
                }
            )
            if self.token is not None:
                # The firmware prepends "Bearer " only when the token has no space.
                headers["Authorization"] = (
                    self.token if " " in self.token else f"Bearer {self.token}"
                )
        self.ws = await connect(url, additional_headers=headers, max_size=2**22, open_timeout=10)
        self._reader = asyncio.create_task(self._read(), name=f"device-read-{self.device_id}")
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for data in self.ws:
                if isinstance(data, str):
                    self.texts.append(data)
                    try:
                        msg = json.loads(data)
                    except ValueError:
                        msg = {"type": "_text", "text": data}
                    if not isinstance(msg, dict):
                        msg = {"type": "_json", "value": msg}
                    if self.strict:
                        self._check(msg, data)
                    if msg.get("type") == "hello" and msg.get("session_id"):
                        self.session_id = msg["session_id"]
                    self.received.append(msg)
                    await self.inbox.put(msg)
                else:
                    self.audio.append(decode_frame(data, self.protocol_version).payload)
        except Exception:  # connection closed by the server: that is news, not an error
            pass
        finally:
            self.closed.set()

    def _check(self, msg: dict[str, Any], raw: str) -> None:
        from .contracts.device import validate_server_message

        try:
            validate_server_message(msg)
        except ValueError as exc:
            problem = f"{self.device_id}: {raw[:300]} ({str(exc)[:300]})"
            self.violations.append(problem)
            DeviceClient.all_violations.append(problem)

    async def send_json(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(msg, ensure_ascii=False))

    async def send_text(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)

    async def send_bytes(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def send_audio(self, packet: bytes, timestamp_ms: int = 0) -> None:
        await self.send_bytes(
            encode_frame(packet, self.protocol_version, timestamp_ms=timestamp_ms)
        )

    async def hello(
        self, msg: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        await self.send_json(msg or firmware_hello())
        return await self.expect("hello", timeout=timeout)

    async def listen(self, state: str, mode: str = "auto", text: str | None = None) -> None:
        msg: dict[str, Any] = {"type": "listen", "state": state}
        if self.session_id:
            msg["session_id"] = self.session_id
        if state == "start":
            msg["mode"] = mode
        if text is not None:
            msg["text"] = text
        await self.send_json(msg)

    async def stream_packets(
        self, packets: Iterable[bytes], frame_ms: int = 60, realtime: bool = True
    ) -> None:
        """Send packets at the pace the microphone produces them."""
        start = time.monotonic()
        for i, packet in enumerate(packets):
            if realtime:
                delay = start + i * frame_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_audio(packet, timestamp_ms=i * frame_ms)

    async def stream_silence(self, seconds: float, frame_ms: int = 60) -> None:
        enc = OpusEncoder(frame_ms=frame_ms)
        silence = np.zeros(enc.frame_samples, dtype=np.int16)
        packets = [p for _ in range(int(seconds * 1000 / frame_ms)) for p in enc.encode(silence)]
        await self.stream_packets(packets, frame_ms)

    async def expect(self, type_: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """Wait for the next message of ``type_`` with matching fields, skipping others (every
        message also stays in :attr:`received`)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {type_!r} message {match} within {timeout}s")
            try:
                msg = await asyncio.wait_for(self.inbox.get(), remaining)
            except TimeoutError:
                raise TimeoutError(f"no {type_!r} message {match} within {timeout}s") from None
            if msg.get("type") == type_ and all(msg.get(k) == v for k, v in match.items()):
                return msg

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()

    async def __aenter__(self) -> DeviceClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
