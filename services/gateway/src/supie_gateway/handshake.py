"""What the WebSocket handshake tells us about a device, checked before anything uses it.

Headers first, query string second (browsers cannot set headers). Ids are normalised (trimmed,
unquoted, lower-cased) and refused with 400 when longer than ``server.max_device_id_len`` or
when they contain control or format characters (a CR/LF in an id forged log lines; a 4,200
character id made a subject line so long that NATS closed the gateway's connection for good).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from supie_common.contracts import new_id
from supie_common.protocol import SUPPORTED_VERSIONS, normalize_device_id
from websockets.datastructures import Headers

__all__ = ["HandshakeInfo", "HandshakeRefused", "check_id", "parse_handshake"]

# Cc: C0/C1 controls (CR, LF, NUL, ...); Cf: format (zero-width, bidi overrides); Cs: lone
# surrogates; Zl/Zp: line and paragraph separators. None belongs in an id that ends up in logs.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})


class HandshakeRefused(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HandshakeInfo:
    device_id: str
    client_id: str | None
    authorization: str | None
    protocol_version: int


def _header(headers: Headers, name: str) -> str | None:
    value = headers.get(name)
    if value is None or value.isascii():
        return value
    # HTTP headers arrive as ISO-8859-1; a UTF-8 id reads better decoded as UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def check_id(what: str, value: str, max_len: int) -> None:
    if len(value) > max_len:
        raise HandshakeRefused(
            HTTPStatus.BAD_REQUEST,
            f"{what} is {len(value)} characters long; at most {max_len} allowed "
            "(server.max_device_id_len)",
        )
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise HandshakeRefused(
                HTTPStatus.BAD_REQUEST,
                f"{what} contains a control or format character (U+{ord(ch):04X})",
            )


def parse_handshake(path: str, headers: Headers, *, max_id_len: int) -> HandshakeInfo:
    """Raises :class:`HandshakeRefused` (400) for a bad version or id."""
    try:
        fields = parse_qs(urlsplit(path).query, max_num_fields=32)
    except ValueError:
        raise HandshakeRefused(HTTPStatus.BAD_REQUEST, "too many query parameters") from None
    query = {k.lower(): v[0] for k, v in fields.items() if v}
    device = _header(headers, "Device-Id") or query.get("device-id") or query.get("device_id")
    client = _header(headers, "Client-Id") or query.get("client-id") or query.get("client_id")
    auth = headers.get("Authorization") or query.get("authorization") or query.get("token")
    raw_version = headers.get("Protocol-Version", "1").strip()
    version = int(raw_version) if raw_version.isdigit() and len(raw_version) < 3 else 0
    if version not in SUPPORTED_VERSIONS:
        raise HandshakeRefused(HTTPStatus.BAD_REQUEST, "Protocol-Version must be 1, 2 or 3")
    device_id = normalize_device_id(device)
    client_id = normalize_device_id(client)
    check_id("Device-Id", device_id, max_id_len)
    check_id("Client-Id", client_id, max_id_len)
    return HandshakeInfo(
        device_id=device_id or f"auto-{new_id()[:8]}",
        client_id=client_id or None,
        authorization=auth,
        protocol_version=version,
    )
