"""Webhook signatures: how Supie signs a webhook request, and how a receiver verifies one.

Two signatures travel on every request (SPEC §6):

* ``X-Meeting-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` -- the original fork's
  header, kept so existing receivers keep working. It has no timestamp, so on its own it does not
  stop a replayed request.
* Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id``, ``webhook-timestamp``
  (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{ts}.{body}")>``.
  During a secret rotation the header carries several space-separated signatures, one per
  secret, and a receiver accepts the request when any of them matches. Receivers reject
  timestamps more than 5 minutes away from their clock and deduplicate on ``webhook-id``.

Secrets are used as their UTF-8 bytes, except a Standard Webhooks style ``whsec_<base64>`` secret,
whose decoded bytes are the key (what the Standard Webhooks libraries do), for both signatures.
The sender (``supie_webhook``), the tests and receivers written in Python all use this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

__all__ = [
    "CONTENT_TYPE",
    "MEETING_SIGNATURE",
    "WEBHOOK_ID",
    "WEBHOOK_TIMESTAMP",
    "WEBHOOK_SIGNATURE",
    "DEFAULT_TOLERANCE_S",
    "WebhookVerificationError",
    "compact_json",
    "meeting_signature",
    "standard_signature",
    "sign_headers",
    "verify",
]

CONTENT_TYPE = "application/json; charset=utf-8"
MEETING_SIGNATURE = "X-Meeting-Signature"
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
DEFAULT_TOLERANCE_S = 5 * 60

Scheme = Literal["any", "both", "standard", "meeting"]


class WebhookVerificationError(ValueError):
    """The request is not authentic or is stale; the message says which check failed."""


def compact_json(payload: Any) -> bytes:
    """The exact bytes that are sent and signed: compact separators, UTF-8, no ASCII escaping."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except ValueError as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
    return secret.encode("utf-8")


def meeting_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` for the ``X-Meeting-Signature`` header."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` over ``{id}.{timestamp}.{body}`` (one entry of ``webhook-signature``)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_headers(
    body: bytes, secrets: Sequence[str], msg_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers for one request attempt. ``secrets[0]`` is the current secret, the rest are
    previous ones still accepted during a rotation (they add Standard Webhooks signatures only).
    With no secret at all the request is unsigned (id and timestamp are still sent)."""
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": CONTENT_TYPE,
        WEBHOOK_ID: msg_id,
        WEBHOOK_TIMESTAMP: str(ts),
    }
    if secrets:
        headers[MEETING_SIGNATURE] = meeting_signature(secrets[0], body)
        headers[WEBHOOK_SIGNATURE] = " ".join(
            standard_signature(s, msg_id, ts, body) for s in secrets
        )
    return headers


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in items}


def _check_meeting(h: dict[str, str], body: bytes, secrets: Sequence[str]) -> None:
    sent = h.get(MEETING_SIGNATURE.lower(), "").strip()
    if not sent:
        raise WebhookVerificationError(f"missing {MEETING_SIGNATURE} header")
    if not any(hmac.compare_digest(sent, meeting_signature(s, body)) for s in secrets):
        raise WebhookVerificationError(f"{MEETING_SIGNATURE} does not match the body")


def _check_standard(
    h: dict[str, str], body: bytes, secrets: Sequence[str], tolerance_s: float, now: float
) -> None:
    msg_id = h.get(WEBHOOK_ID)
    ts_text = h.get(WEBHOOK_TIMESTAMP)
    sent = h.get(WEBHOOK_SIGNATURE)
    if not msg_id or not ts_text or not sent:
        raise WebhookVerificationError(
            f"missing {WEBHOOK_ID}, {WEBHOOK_TIMESTAMP} or {WEBHOOK_SIGNATURE} header"
        )
    try:
        ts = int(ts_text)
    except ValueError:
        raise WebhookVerificationError(f"{WEBHOOK_TIMESTAMP} is not an integer") from None
    # Both directions: an old timestamp is a replay, a future one is a forged or skewed clock.
    if abs(now - ts) > tolerance_s:
        raise WebhookVerificationError(
            f"{WEBHOOK_TIMESTAMP} is {int(now - ts)} s from now (allowed ±{int(tolerance_s)} s)"
        )
    candidates = [part for part in sent.split(" ") if part.startswith("v1,")]
    expected = [standard_signature(s, msg_id, ts, body) for s in secrets]
    if not any(hmac.compare_digest(c, e) for c in candidates for e in expected):
        raise WebhookVerificationError(f"no {WEBHOOK_SIGNATURE} entry matches")


def verify(
    body: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    secret: str | Sequence[str],
    *,
    scheme: Scheme = "any",
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> Any:
    """Verify a received webhook and return its parsed JSON body.

    ``body`` must be the raw request bytes (before any JSON parsing). ``secret`` may be a list
    (the receiver's own rotation: current and previous secrets). ``scheme``:

    * ``"any"`` (default): Standard Webhooks when its headers are present (timestamp checked),
      otherwise ``X-Meeting-Signature``;
    * ``"both"``: both signatures must be present and valid;
    * ``"standard"`` / ``"meeting"``: only that one.

    Raises :class:`WebhookVerificationError` naming the failed check.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("verify() needs at least one secret")
    h = _lower(headers)
    when = time.time() if now is None else now
    if scheme == "any":
        scheme = "standard" if WEBHOOK_SIGNATURE in h else "meeting"
    if scheme in ("standard", "both"):
        _check_standard(h, body, secrets, tolerance_s, when)
    if scheme in ("meeting", "both"):
        _check_meeting(h, body, secrets)
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookVerificationError("body is not valid JSON") from None
