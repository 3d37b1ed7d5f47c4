"""A finalized meeting's ``actions`` and ``nextSteps`` as tasks (``MEET-<sid>-A1``,
``MEET-<sid>-N1``...), asked of the meeting service over the bus (``meeting.api``: ``recent`` then
``detail``). Imports create missing tasks only, so importing a meeting again changes nothing a
team already did with its tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from supie_common.bus import BusError, request
from supie_common.contracts import ApiReply, MeetingApiRequest, Subjects
from supie_common.contracts.device import TaskPatch

__all__ = ["MeetingUnavailable", "MeetingNotFound", "MeetingTasks", "fetch_meeting_tasks"]

TITLE_MAX = 200
MAX_ITEMS = 100  # per kind: a summary has a handful; anything past this is not a task list


class MeetingUnavailable(RuntimeError):
    """The meeting service did not answer (or answered with an error of its own)."""


class MeetingNotFound(LookupError):
    pass


@dataclass(frozen=True)
class MeetingTasks:
    session_id: str | None  # None: there is no meeting at all
    patches: list[TaskPatch]


def _items(summary: dict[str, Any], key: str) -> list[str]:
    raw = summary.get(key) or []
    if not isinstance(raw, list):
        return []
    return [str(x).strip()[:TITLE_MAX] for x in raw[:MAX_ITEMS] if str(x).strip()]


async def _ask(nc: NATS, op: str, params: dict[str, Any], timeout: float) -> ApiReply:
    try:
        reply = await request(
            nc, Subjects.MEETING_API, MeetingApiRequest(op=op, params=params), ApiReply,
            timeout=timeout,
        )  # fmt: skip
    except BusError as exc:
        raise MeetingUnavailable(str(exc)) from None
    if reply.status == 404:
        raise MeetingNotFound(reply.error or "meeting not found")
    if not reply.success:
        raise MeetingUnavailable(reply.error or f"meeting api answered {reply.status}")
    return reply


async def fetch_meeting_tasks(
    nc: NATS, session_id: str | None, *, timeout: float = 5.0
) -> MeetingTasks:
    if not session_id:
        recent = await _ask(nc, "recent", {"limit": 1}, timeout)
        items = recent.data if isinstance(recent.data, list) else []
        if not items or not isinstance(items[0], dict) or not items[0].get("sessionId"):
            return MeetingTasks(None, [])
        session_id = str(items[0]["sessionId"])
    detail = await _ask(nc, "detail", {"sessionId": session_id}, timeout)
    data = detail.data if isinstance(detail.data, dict) else {}
    summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
    assert isinstance(summary, dict)
    patches: list[TaskPatch] = []
    for prefix, key in (("A", "actions"), ("N", "nextSteps")):
        for n, title in enumerate(_items(summary, key), start=1):
            patches.append(
                TaskPatch.model_validate(
                    {
                        "id": f"MEET-{session_id}-{prefix}{n}",
                        "title": title,
                        "source": "meeting",
                        "sessionId": session_id,
                    }
                )
            )
    return MeetingTasks(session_id, patches)
