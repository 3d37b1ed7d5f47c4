"""Redis commands as wire bytes, packed by us (RESP2/3 requests are the same).

redis-py's pipeline packs each argument through generic encoders and type checks and keeps a
command object per call: under load that cost more than the script itself. The arguments the
coding service sends are only ``str``, ``int`` and ``bytes``, so packing them is a few byte
operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["Arg", "pack", "pack_all"]

Arg = str | int | bytes


def pack(args: Sequence[Arg]) -> bytes:
    """One command (``("EVALSHA", sha, 4, key, ...)``) as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int):  # after str: a bool is an int, and is sent as 0/1 like one
            data = b"%d" % arg
        else:
            raise TypeError(f"a Redis argument must be str, int or bytes, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def pack_all(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Several commands for one write (a pipeline)."""
    return b"".join(pack(args) for args in commands)
