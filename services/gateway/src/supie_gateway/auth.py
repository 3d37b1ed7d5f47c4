"""Device authentication (off unless ``server.auth.enabled``): allow-list, static tokens, or
HMAC tokens ``<sig>.<ts>`` where sig = urlsafe-b64(HMAC-SHA256(key, "client|device|ts"))."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from supie_common.settings import AuthSection

__all__ = ["mint_token", "check_device_auth"]


def _sign(key: str, client_id: str, device_id: str, ts: int) -> str:
    mac = hmac.new(key.encode(), f"{client_id}|{device_id}|{ts}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def mint_token(key: str, client_id: str, device_id: str, ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    return f"{_sign(key, client_id, device_id, ts)}.{ts}"


def _strip_bearer(value: str | None) -> str:
    if not value:
        return ""
    value = value.strip()
    return value[7:].strip() if value.lower().startswith("bearer ") else value


def check_device_auth(
    auth: AuthSection, device_id: str, client_id: str, authorization: str | None
) -> str | None:
    """None when the device may connect, else the reason it may not."""
    if not auth.enabled or device_id in auth.allowed_devices:
        return None
    token = _strip_bearer(authorization)
    if not token:
        return "missing Authorization: Bearer <token>"
    if any(hmac.compare_digest(token, t.get_secret_value()) for t in auth.tokens):
        return None
    if auth.auth_key and "." in token:
        sig, _, ts_text = token.rpartition(".")
        if ts_text.isdigit():
            ts = int(ts_text)
            if time.time() - ts > auth.expire_seconds:
                return "token expired"
            key = auth.auth_key.get_secret_value()
            if hmac.compare_digest(sig, _sign(key, client_id, device_id, ts)):
                return None
    return "invalid token"
