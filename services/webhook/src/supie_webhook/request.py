"""What one webhook request is made of: the exact body bytes, its stable id, and log-safe labels."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from supie_common.contracts import MeetingFinalized
from supie_common.webhooks import compact_json

__all__ = ["webhook_body", "webhook_id", "body_digest", "endpoint_host", "endpoint_label"]


def webhook_body(event: MeetingFinalized) -> bytes:
    """Compact JSON ``{sessionId, deviceId, summary, metrics, durationMs}``: the signed bytes."""
    return compact_json(
        {
            "sessionId": event.session_id,
            "deviceId": event.device_id,
            "summary": event.summary.model_dump(by_alias=True),
            "metrics": event.metrics,
            "durationMs": event.duration_ms,
        }
    )


def webhook_id(event_id: str, url: str) -> str:
    """Stable per (event, endpoint): every attempt and redelivery carries the same id, so a
    receiver can deduplicate; two endpoints never share one."""
    return "msg_" + hashlib.sha256(f"{event_id}\n{url}".encode()).hexdigest()[:32]


def body_digest(body: bytes) -> str:
    """First 8 hex digits of the body's SHA-256, for the log line (the body itself never is)."""
    return hashlib.sha256(body).hexdigest()[:8]


def endpoint_host(url: str) -> str:
    """``host[:port]`` without user info: safe to log (paths and queries may carry tokens)."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


def endpoint_label(url: str) -> str:
    """``scheme://host[:port]/path`` without user info or query, for listings."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{endpoint_host(url)}{parts.path}"
