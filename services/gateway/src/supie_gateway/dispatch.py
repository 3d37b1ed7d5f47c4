"""Device messages owned by a service (``meeting``, ``workflow``, ``coding``), handed over one at a
time and in order per connection (docs/dataflow.md §2).

A snippet sent before a finalize is stored before it; a workflow ``complete`` never overtakes the
``update`` that created its task. Each message is a :class:`DeviceInbound` request with its own
``message_id``, retried until the service accepts it (``server.accept_timeout_s``); the reply's
frames go to the badge in order; a message nobody accepted gets the type's own error with
``code: UNAVAILABLE``. Messages already queued when the badge disconnects are still handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from pydantic import BaseModel
from supie_common.contracts import (
    DeviceInbound,
    ErrorCode,
    InboundReply,
    ServiceMessage,
    Subjects,
    to_frame,
)
from supie_common.contracts.device import (
    CodingError,
    MeetingError,
    MeetingFinalize,
    MeetingSnippet,
    WorkflowError,
)
from supie_common.tasks import TaskSet

from .accept import request_until_accepted
from .session import DeviceSession

__all__ = ["INBOUND_SUBJECTS", "MAX_QUEUED", "InboundDispatcher", "unavailable", "service_error"]

INBOUND_SUBJECTS = {
    "meeting": Subjects.MEETING_INBOUND,
    "workflow": Subjects.WORKFLOW_INBOUND,
    "coding": Subjects.CODING_INBOUND,
}
MAX_QUEUED = 100  # per connection; beyond it the badge is told RATE_LIMITED

SendFrames = Callable[[list[str]], Awaitable[None]]


def service_error(
    mtype: str,
    code: ErrorCode,
    message: str,
    *,
    field: str | None = None,
    sub: str | None = None,
    request_id: str | None = None,
) -> BaseModel:
    """The error model of a service message type (``sub`` = its phase or event)."""
    if mtype == "meeting":
        return MeetingError(code=code, message=message, field=field, phase=sub)
    if mtype == "workflow":
        return WorkflowError(
            code=code, message=message, field=field, event=sub, request_id=request_id
        )
    return CodingError(code=code, message=message, field=field, event=sub)


def _sub_of(message: ServiceMessage) -> str | None:
    if isinstance(message, MeetingSnippet | MeetingFinalize):
        return message.phase
    return getattr(message, "event", None)


def unavailable(message: ServiceMessage, budget_s: float) -> BaseModel:
    return service_error(
        message.type,
        ErrorCode.UNAVAILABLE,
        f"the {message.type} service did not accept the message within {budget_s:g} s; "
        "send it again later",
        sub=_sub_of(message),
        request_id=getattr(message, "request_id", None),
    )


class InboundDispatcher:
    def __init__(
        self,
        nc: NATS,
        session: DeviceSession,
        send_frames: SendFrames,
        tasks: TaskSet,
        *,
        budget_s: Callable[[], float],
        attempt_timeout_s: Callable[[], float],
    ) -> None:
        self.nc = nc
        self.session = session
        self.send_frames = send_frames
        self.tasks = tasks
        self.budget_s = budget_s
        self.attempt_timeout_s = attempt_timeout_s
        self._queue: asyncio.Queue[ServiceMessage] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def submit(self, message: ServiceMessage) -> BaseModel | None:
        """Queue one message; returns an error model to send instead when the queue is full."""
        if self._queue.qsize() >= MAX_QUEUED:
            return service_error(
                message.type,
                ErrorCode.RATE_LIMITED,
                f"more than {MAX_QUEUED} messages waiting for their service; slow down",
                sub=_sub_of(message),
            )
        self._queue.put_nowait(message)
        if self._worker is None:
            self._worker = self.tasks.spawn(
                self._run(), f"inbound-{self.session.device_id}-{self.session.session_id[:6]}"
            )
        return None

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (1 if self._worker is not None else 0)

    async def _run(self) -> None:
        try:
            while not self._queue.empty():
                await self._hand_over(self._queue.get_nowait())
        finally:
            self._worker = None

    async def _hand_over(self, message: ServiceMessage) -> None:
        s = self.session
        inbound = DeviceInbound(**s.envelope(), mode=s.mode, group_key=s.group_key, message=message)
        budget = self.budget_s()
        reply = await request_until_accepted(
            self.nc,
            INBOUND_SUBJECTS[message.type],
            lambda n: inbound.model_copy(update={"attempt": n}),
            InboundReply,
            budget_s=budget,
            attempt_timeout_s=self.attempt_timeout_s(),
            wants_retry=lambda r: r.retry,
            what=f"device {s.device_id} {message.type} message {inbound.message_id}",
        )
        if reply is None:
            await self.send_frames([to_frame(unavailable(message, budget))])
        elif reply.frames:
            await self.send_frames(reply.frames)
