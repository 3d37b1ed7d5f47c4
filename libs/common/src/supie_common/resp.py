"""Redis commands packed by us and sent as one write on one connection: a pipeline without
redis-py's per-command machinery.

redis-py's ``Pipeline`` packs each argument through generic encoders and type checks and keeps a
command object and a reply callback per call; for the services' batches (dozens of EVALSHA calls
per round trip) that cost more CPU than the scripts themselves (measured in the coding and
workflow benches). The arguments our scripts take are only ``str``, ``int`` and ``bytes``, so
packing them is a few byte operations. Replies are what Redis sends (no callbacks: ``SET NX``
answers ``b"OK"`` or ``None``). Single server only: on a cluster one connection does not reach
every slot, so callers keep redis-py's cluster pipeline there.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Arg", "execute", "execute_pooled", "pack", "pack_all"]

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


async def execute(conn: Connection, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """One write, then the replies in order (a failed command's reply is its error; the
    others still stand).

    Retried on a fresh connection under the client's retry policy (a dropped connection, a
    timeout), as redis-py retries its pipelines: callers send only commands that may run twice
    (their scripts answer a replayed change from its record)."""
    data = pack_all(commands)

    async def fail(_error: BaseException) -> None:
        await conn.disconnect()

    return await conn.retry.call_with_retry(lambda: _round_trip(conn, data, len(commands)), fail)


async def execute_pooled(redis: Redis, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """:func:`execute` on a connection of the client's pool, for one batch."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        return await execute(conn, commands)
    except BaseException:
        # replies may be left unread (an error, a cancellation): nobody else may get it as is
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


async def _round_trip(conn: Connection, data: bytes, n: int) -> list[Any]:
    await conn.send_packed_command(data)
    replies: list[Any] = []
    # One deadline for the whole batch (a timeout per reply cost as much as reading it); a
    # connection left with replies unread is closed on the way out.
    deadline = conn.socket_timeout or None
    try:
        async with asyncio.timeout(deadline):
            for _ in range(n):
                try:
                    replies.append(await conn.read_response(timeout=math.inf))
                except ResponseError as exc:  # this command's error, the stream is in step
                    replies.append(exc)
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout reading a batch of replies from Redis") from None
    return replies
