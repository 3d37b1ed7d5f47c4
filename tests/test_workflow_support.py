"""Shared helpers for the workflow tests (no tests here): a stand-in gateway on the bus, badges,
and an in-process workflow service. Loaded by path (the tests run with --import-mode=importlib).

The stand-in gateway does what dataflow.md §2 asks of the real one: it hands a badge's workflow
messages to ``workflow.inbound`` as ``DeviceInbound`` requests, retries them (same message id)
until one is answered without ``retry``, and delivers to each badge, in arrival order, both the
reply frames and whatever is published on the badge's ``device.<dev>.out``. One subscription
receives both, so "arrival order" is the order the NATS server delivered them in.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.contracts import (
    DeviceInbound,
    DeviceOutbound,
    InboundReply,
    Subjects,
    Transcript,
    decode,
    device_token,
    encode,
    new_id,
)
from supie_common.store import Presence

__all__ = ["Badge", "FakeGateway", "start_workflow", "wait_for", "wait_for_async"]


async def wait_for(pred: Callable[[], Any], within: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


@dataclass
class Badge:
    device_id: str
    group: str
    session_id: str = field(default_factory=new_id)
    frames: list[dict[str, Any]] = field(default_factory=list)  # everything it received, in order

    def snapshots(self) -> list[list[dict[str, Any]]]:
        return [
            f["tasks"]
            for f in self.frames
            if f.get("type") == "workflow" and f.get("event") == "update" and "tasks" in f
        ]

    def last_snapshot(self) -> list[dict[str, Any]] | None:
        snaps = self.snapshots()
        return snaps[-1] if snaps else None

    def of(self, **match: Any) -> list[dict[str, Any]]:
        return [f for f in self.frames if all(f.get(k) == v for k, v in match.items())]


class FakeGateway:
    def __init__(self, nc: NATS, redis: Redis, presence_ttl_s: int = 30) -> None:
        self.nc = nc
        self.presence = Presence(redis, presence_ttl_s)
        self.gateway_id = f"gw-test-{new_id()[:6]}"
        self.badges: dict[str, Badge] = {}  # device token -> badge
        self._waiting: dict[str, asyncio.Future[InboundReply]] = {}
        self._sub: Any = None
        self.attempts = 0

    async def start(self) -> FakeGateway:
        self._sub = await self.nc.subscribe("supie.v1.device.>", cb=self._on_message)
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def badge(self, device_id: str, group: str, *, online: bool = True) -> Badge:
        badge = Badge(device_id, group)
        self.badges[device_token(device_id)] = badge
        if online:
            await self.presence.register(device_id, self.gateway_id, badge.session_id, group)
        return badge

    async def _on_message(self, msg: Any) -> None:
        parts = msg.subject.split(".")
        if len(parts) < 5 or parts[2] != "device":
            return
        badge = self.badges.get(parts[3])
        kind = parts[4]
        if kind == "out":
            out = decode(DeviceOutbound, msg.data)
            if badge is not None and out.frame is not None:
                badge.frames.append(json.loads(out.frame))
        elif kind == "r" and len(parts) >= 6:
            future = self._waiting.pop(parts[5], None)
            if future is None or future.done():
                return  # a late answer to an attempt already answered
            if not msg.data:  # NATS "no responders": nobody took it, try again
                future.set_result(InboundReply(retry=True, error="no responders"))
                return
            reply = decode(InboundReply, msg.data)
            if reply.retry:
                future.set_result(reply)
                return
            if badge is not None:
                badge.frames.extend(json.loads(f) for f in reply.frames)
            future.set_result(reply)

    async def request(
        self,
        badge: Badge,
        subject: str,
        payload: DeviceInbound | Transcript,
        *,
        attempt_timeout: float = 3.0,
        within: float = 60.0,
    ) -> InboundReply:
        """Until a reply without ``retry`` (same payload, so the same message id)."""
        deadline = time.monotonic() + within
        backoff = 0.2
        while True:
            token = new_id()
            future: asyncio.Future[InboundReply] = asyncio.get_running_loop().create_future()
            self._waiting[token] = future
            reply_to = f"{Subjects.device_out(badge.device_id)[:-4]}.r.{token}"
            self.attempts += 1
            await self.nc.publish(subject, encode(payload), reply=reply_to)
            try:
                reply = await asyncio.wait_for(future, attempt_timeout)
                if not reply.retry:
                    return reply
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(token, None)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica accepted the message within {within}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def inbound(
        self, badge: Badge, message: dict[str, Any], message_id: str | None = None
    ) -> DeviceInbound:
        return DeviceInbound(
            device_id=badge.device_id,
            session_id=badge.session_id,
            gateway_id=self.gateway_id,
            mode="working",
            group_key=badge.group,
            message={"type": "workflow", **message},
            message_id=message_id or new_id(),
        )

    async def send(
        self, badge: Badge, message: dict[str, Any], *, message_id: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """A badge's workflow message; returns the reply frames."""
        inbound = self.inbound(badge, message, message_id)
        reply = await self.request(badge, Subjects.WORKFLOW_INBOUND, inbound, **kw)
        return [json.loads(f) for f in reply.frames]

    async def say(
        self, badge: Badge, text: str, *, utterance_id: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """A final transcript as the mode router hands it to workflow.intent."""
        transcript = Transcript(
            device_id=badge.device_id,
            session_id=badge.session_id,
            gateway_id=self.gateway_id,
            stream_id="s",
            utterance_id=utterance_id or f"s:{new_id()[:8]}",
            text=text,
            start_ms=0,
            end_ms=1500,
            mode="working",
        )
        reply = await self.request(badge, Subjects.WORKFLOW_INTENT, transcript, **kw)
        return [json.loads(f) for f in reply.frames]


async def start_workflow(nats_url: str, redis_url: str, tmp_path: Path, **overrides: Any) -> Any:
    """A started in-process workflow replica (stop it with ``await svc.stop()``)."""
    from supie_common.settings import load_settings
    from supie_workflow import WorkflowService, WorkflowSettings

    intent_llm = overrides.pop("intent_llm", None)
    settings = load_settings(
        WorkflowSettings,
        tmp_path / "no-config.yaml",
        nats={"url": nats_url},
        redis={"url": redis_url},
        data_dir=tmp_path / "data",
        **overrides,
    )
    svc = WorkflowService(settings, intent_llm=intent_llm)
    await svc.start()
    return svc


def group_name() -> str:
    """A fresh 8-character group (tests share one Valkey)."""
    return f"g{new_id()[:7]}"


def device_in(group: str) -> str:
    """A device id whose default group (id[:8]) is ``group``."""
    return f"{group}:{new_id()[:10]}"


async def wait_for_async(call: Callable[[], Any], within: float = 20.0, what: str = "call") -> Any:
    """The first result of ``await call()`` that does not raise, retried until ``within``."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
