"""The xiaozhi device protocol's wire details, shared by the gateway and the device simulator.

Binary framing (all big-endian), chosen by the ``Protocol-Version`` header:

* v1: one raw Opus packet per WebSocket binary frame;
* v2: ``u16 version, u16 type (0 opus, 1 json), u32 reserved, u32 timestamp_ms,
  u32 payload_size`` then the payload (16-byte header);
* v3: ``u8 type, u8 reserved, u16 payload_size`` then the payload (4-byte header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "FrameError",
    "BinaryFrame",
    "decode_frame",
    "encode_frame",
    "normalize_device_id",
    "SUPPORTED_VERSIONS",
    "TYPE_AUDIO",
    "TYPE_JSON",
]

SUPPORTED_VERSIONS = (1, 2, 3)
TYPE_AUDIO = 0
TYPE_JSON = 1
_V2 = struct.Struct(">HHIII")
_V3 = struct.Struct(">BBH")


class FrameError(ValueError):
    """A binary frame does not match its protocol version's layout."""


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    payload: bytes
    type: int = TYPE_AUDIO
    timestamp_ms: int = 0


def decode_frame(data: bytes, version: int) -> BinaryFrame:
    if version == 1:
        return BinaryFrame(payload=bytes(data))
    if version == 2:
        if len(data) < _V2.size:
            raise FrameError(f"protocol v2 frame needs a 16-byte header, got {len(data)} bytes")
        _ver, ftype, _res, ts, size = _V2.unpack_from(data)
        if size != len(data) - _V2.size:
            raise FrameError(
                f"protocol v2 payload_size={size} but {len(data) - _V2.size} bytes follow"
            )
        return BinaryFrame(payload=bytes(data[_V2.size :]), type=ftype, timestamp_ms=ts)
    if version == 3:
        if len(data) < _V3.size:
            raise FrameError(f"protocol v3 frame needs a 4-byte header, got {len(data)} bytes")
        ftype, _res, size = _V3.unpack_from(data)
        if size != len(data) - _V3.size:
            raise FrameError(
                f"protocol v3 payload_size={size} but {len(data) - _V3.size} bytes follow"
            )
        return BinaryFrame(payload=bytes(data[_V3.size :]), type=ftype)
    raise FrameError(f"unsupported protocol version {version}")


def encode_frame(
    payload: bytes, version: int, *, timestamp_ms: int = 0, ftype: int = TYPE_AUDIO
) -> bytes:
    if version == 1:
        return payload
    if version == 2:
        return _V2.pack(2, ftype, 0, timestamp_ms & 0xFFFFFFFF, len(payload)) + payload
    if version == 3:
        if len(payload) > 0xFFFF:
            raise FrameError("protocol v3 payload larger than 65535 bytes")
        return _V3.pack(ftype, 0, len(payload)) + payload
    raise FrameError(f"unsupported protocol version {version}")


def normalize_device_id(raw: str | None) -> str:
    """Trim, strip quotes, lower-case (SPEC §3)."""
    if raw is None:
        return ""
    return raw.strip().strip("'\"").strip().lower()
