"""Device and API authentication.

Devices (off unless ``server.auth.enabled``): allow-list, static tokens, or HMAC tokens
``<sig>.<ts>`` where sig = urlsafe-b64(HMAC-SHA256(key, "client|device|ts")). A token's
timestamp may lie at most :data:`FUTURE_SKEW_S` in the future (else it would never expire).

Every comparison is constant-time on bytes: ``hmac.compare_digest`` refuses non-ASCII ``str``
with a TypeError, which used to turn a non-ASCII token into HTTP 500 instead of 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from supie_common.settings import AuthSection

__all__ = ["FUTURE_SKEW_S", "check_device_auth", "mint_token", "same_secret", "strip_bearer"]

FUTURE_SKEW_S = 300


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time equality of a client-supplied secret, whatever characters it holds."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _sign(key: str, client_id: str, device_id: str, ts: int) -> str:
    mac = hmac.new(
        key.encode(),
        f"{client_id}|{device_id}|{ts}".encode("utf-8", "surrogateescape"),
        hashlib.sha256,
    )
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def mint_token(key: str, client_id: str, device_id: str, ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    return f"{_sign(key, client_id, device_id, ts)}.{ts}"


def strip_bearer(value: str | None) -> str:
    if not value:
        return ""
    value = value.strip()
    return value[7:].strip() if value.lower().startswith("bearer ") else value


def check_device_auth(
    auth: AuthSection, device_id: str, client_id: str, authorization: str | None
) -> str | None:
    """None when the device may connect, else the reason it may not (never the token)."""
    if not auth.enabled or device_id in auth.allowed_devices:
        return None
    token = strip_bearer(authorization)
    if not token:
        return "missing Authorization: Bearer <token>"
    if not token.isascii() or len(token) > 512:
        return "invalid token"
    if any(same_secret(token, t.get_secret_value()) for t in auth.tokens):
        return None
    if auth.auth_key and "." in token:
        sig, _, ts_text = token.rpartition(".")
        if ts_text.isdigit() and len(ts_text) <= 12:
            ts = int(ts_text)
            now = time.time()
            if ts - now > FUTURE_SKEW_S:
                return "token timestamp lies in the future"
            if now - ts > auth.expire_seconds:
                return "token expired"
            if same_secret(sig, _sign(auth.auth_key.get_secret_value(), client_id, device_id, ts)):
                return None
    return "invalid token"
