"""Every Redis key of the meeting service, in one place, cluster-safe.

All keys one atomic operation touches share one hash tag, so Redis Cluster puts them in one slot
and accepts the Lua script that touches them: ``{m:<meeting>}`` for a meeting's keys,
``{d:<device>}`` for a device's. Key names are built here and handed to scripts through ``KEYS``;
no script builds a key name itself. :func:`same_slot` is the check the state layer runs on every
script call.
"""

from __future__ import annotations

from supie_common.contracts import device_token
from supie_common.store import K

__all__ = ["DeviceKeys", "MeetingKeys", "hash_tag", "same_slot"]

_P = "supie:meeting"


def _m(meeting_id: str) -> str:
    return f"{_P}:{{m:{meeting_id}}}"


def _d(device_id: str) -> str:
    # device_token escapes every byte outside [A-Za-z0-9:-], braces included: the tag is intact
    return f"{_P}:{{d:{device_token(device_id)}}}"


class MeetingKeys:
    """Keys of one meeting (tag ``{m:<id>}``) and the two global ones."""

    ACTIVE = f"{_P}s:active"  # zset: meetings not yet finalized -> when they were registered
    SPEAKERS = f"{_P}s:speakers"  # hash: speaker id -> label, for every meeting (console)
    INDEX_LOCK = K.lock("meeting-index")  # serialises index.json updates (files archive)

    @staticmethod
    def meta(m: str) -> str:
        """Hash: status, device, timestamps, push/checkpoint marks, finalize steps done."""
        return _m(m)

    @staticmethod
    def segments(m: str) -> str:
        """List of segment JSON, in arrival order."""
        return f"{_m(m)}:segments"

    @staticmethod
    def seen(m: str) -> str:
        """Hash: message / utterance id -> the outcome it had (a repeat gets the same)."""
        return f"{_m(m)}:seen"

    @staticmethod
    def dedup(m: str) -> str:
        """Zset: text digest -> when it was last stored (duplicate window)."""
        return f"{_m(m)}:dedup"

    @staticmethod
    def summary(m: str) -> str:
        """The committed final summary record (compare-and-set on the fence)."""
        return f"{_m(m)}:summary"

    @staticmethod
    def fence(m: str) -> str:
        """Counter: the fencing token of the latest finalize generation."""
        return f"{_m(m)}:fence"

    @staticmethod
    def lock(m: str) -> str:
        """The finalize lock: ``<holder>:<fence>``, short TTL, renewed while generating."""
        return f"{_m(m)}:lock"

    @staticmethod
    def lease(m: str) -> str:
        """The timer lease: the replica holding it runs the meeting's pushes and checks."""
        return f"{_m(m)}:lease"

    @staticmethod
    def speakers(m: str) -> str:
        """Hash: speaker id -> label in this meeting (console renames; outlives the meeting)."""
        return f"{_m(m)}:speakers"

    @staticmethod
    def all_of(m: str) -> list[str]:
        """The keys that expire together once the meeting is finalized."""
        return [
            MeetingKeys.meta(m),
            MeetingKeys.segments(m),
            MeetingKeys.seen(m),
            MeetingKeys.dedup(m),
            MeetingKeys.summary(m),
            MeetingKeys.fence(m),
        ]


class DeviceKeys:
    """Keys of one device (tag ``{d:<device>}``)."""

    @staticmethod
    def device(device_id: str) -> str:
        """Hash: the active meeting, the connected session, gone_since, the last finalized."""
        return _d(device_id)

    @staticmethod
    def sessions(device_id: str) -> str:
        """Hash: session id -> ``up`` or ``down:<ms>`` (events may arrive in any order)."""
        return f"{_d(device_id)}:sessions"

    @staticmethod
    def seen(device_id: str, message_id: str) -> str:
        """Which meeting a message id was bound to (short TTL: the gateway's retry window)."""
        return f"{_d(device_id)}:seen:{message_id}"

    @staticmethod
    def rate(device_id: str, kind: str, window: int) -> str:
        """A rate counter: ``kind`` is ``items`` (per second, fixed windows: ``window`` is the
        window's number) or ``finalize`` (a log of the last minute's requests, ``window`` 0)."""
        return f"{_d(device_id)}:rate:{kind}:{window}"


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (the whole key when it has no tag)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def same_slot(keys: list[str]) -> bool:
    """True when every key hashes by the same tag (so one Lua call may touch them all)."""
    return len({hash_tag(k) for k in keys}) <= 1
