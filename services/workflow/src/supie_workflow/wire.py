"""Many commands in one round trip to a single Redis server, packed by hand.

redis-py's pipeline encodes every argument through its generic encoder and keeps per-command
bookkeeping (callbacks, retries); for the change batches (:mod:`.batch`: dozens of EVALSHA calls
of a dozen string arguments each) that cost more CPU than the rest of a change's handling in
Python. Here the commands are packed straight into RESP and sent on one pooled connection; each
reply is read back in order, an error reply as its exception (the others still stand). Not for
a cluster: there one connection does not reach every slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["pack", "send_packed"]


def pack(args: Sequence[str]) -> bytes:
    """One command in the Redis protocol (RESP): an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


async def send_packed(redis: Redis, commands: list[bytes]) -> list[Any]:
    """Send the packed commands at once; their replies in order, an error reply as its
    exception. A connection found broken (Redis restarted since it was opened) is replaced once,
    as redis-py does: the commands are sent again, which the task scripts allow (a change already
    applied is answered from its record)."""
    try:
        return await _send_once(redis, commands)
    except (RedisConnectionError, RedisTimeoutError):
        return await _send_once(redis, commands)


async def _send_once(redis: Redis, commands: list[bytes]) -> list[Any]:
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(commands)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # this command's error: the next replies follow
                replies.append(exc)
    except BaseException:
        # Replies may be left unread (an error, a cancellation): the connection cannot be
        # handed to anyone else as it is.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    return replies
