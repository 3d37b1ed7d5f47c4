"""Redis helpers: connection, leases/locks, idempotency keys, presence and group membership."""

from __future__ import annotations

import time
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .contracts import new_id

__all__ = ["connect_redis", "Lease", "once", "Presence", "group_of", "K"]


class K:
    """Key names, in one place."""

    PREFIX = "supie"

    @staticmethod
    def presence(device_id: str) -> str:
        return f"supie:presence:{device_id}"

    @staticmethod
    def group(group_key: str) -> str:
        return f"supie:group:{group_key}"

    @staticmethod
    def idem(scope: str, key: str) -> str:
        return f"supie:idem:{scope}:{key}"

    @staticmethod
    def lock(name: str) -> str:
        return f"supie:lock:{name}"

    @staticmethod
    def device_state(device_id: str) -> str:
        """Per-device connection state that survives a reconnect (mode, meeting id)."""
        return f"supie:device:{device_id}"


_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_TRUE = {"1", "true", "yes", "on"}


def _cluster_url(url: str) -> tuple[str, list[ClusterNode]] | None:
    """For a Redis Cluster URL, the plain URL for redis-py and the seed nodes; None otherwise.

    ``redis+cluster://[user:pass@]host:port[,host:port...][/?...]`` or any ``redis://`` /
    ``rediss://`` URL with ``?cluster=true``. Several seeds let a client start while one node
    is down; the cluster tells it about the rest."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flagged = any(k == "cluster" and v.lower() in _TRUE for k, v in query)
    if parts.scheme not in _CLUSTER_SCHEMES and not flagged:
        return None
    scheme = _CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "6379")
        seeds.append(ClusterNode(name.strip("[]"), int(port or 6379)))
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    netloc = f"{userinfo}@{hosts.split(',')[0]}" if userinfo else hosts.split(",")[0]
    # A cluster has one database: drop a path such as ``/0``.
    return urlunsplit((scheme, netloc, "", rest, "")), seeds


def connect_redis(url: str, max_connections: int = 64) -> Redis:
    """A client for ``url``: a single server (``redis://``, ``rediss://``, ``unix://``) on a bounded
    pool that *waits* for a free connection (redis-py's default pool raises "Too many
    connections" past its limit, which a burst of concurrent work reaches), or a Redis Cluster
    (``redis+cluster://host:port[,host:port...]`` or ``?cluster=true``), returned as a
    :class:`redis.asyncio.cluster.RedisCluster`.

    Keys of one multi-key command, script or transaction must share a hash tag (``{...}``) on a
    cluster, or it refuses them (CROSSSLOT)."""
    cluster = _cluster_url(url)
    if cluster is not None:
        plain, seeds = cluster
        client = RedisCluster.from_url(
            plain,
            startup_nodes=seeds,
            decode_responses=True,
            max_connections=max_connections,
            health_check_interval=10,
        )
        # RedisCluster speaks the same commands as Redis but is not a subclass of it; callers
        # are typed against Redis, and the cluster rules are the docstring's.
        return cast(Redis, client)
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=30,
        health_check_interval=10,
    )
    return Redis.from_pool(pool)


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_DELETE_IF_SESSION = """
if redis.call('hget', KEYS[1], 'session') == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """A Redis lease (``SET NX PX``) owned by one holder, renewed and released atomically."""

    def __init__(self, redis: Redis, key: str, ttl_ms: int, holder: str | None = None) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.holder = holder or new_id()

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.holder, self.ttl_ms))

    async def release(self) -> bool:
        return bool(await self.redis.eval(_RELEASE, 1, self.key, self.holder))

    async def owner(self) -> str | None:
        value = await self.redis.get(self.key)
        return str(value) if value is not None else None


async def once(redis: Redis, scope: str, key: str, ttl_s: int = 24 * 3600) -> bool:
    """True the first time (scope, key) is seen within ``ttl_s``; False for a retry."""
    return bool(await redis.set(K.idem(scope, key), "1", nx=True, ex=ttl_s))


def group_of(device_id: str) -> str:
    """Default group: the first 8 characters of the normalised device id."""
    return device_id[:8]


class Presence:
    """Which devices are online, on which gateway, in which group. Entries expire unless renewed."""

    def __init__(self, redis: Redis, ttl_s: int = 30) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def register(
        self, device_id: str, gateway_id: str, session_id: str, group_key: str
    ) -> None:
        await self.heartbeat_many([(device_id, gateway_id, session_id, group_key)])

    async def heartbeat_many(self, entries: list[tuple[str, str, str, str]]) -> None:
        """Renew (device, gateway, session, group) entries in one round trip."""
        if not entries:
            return
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for device_id, gateway_id, session_id, group_key in entries:
            pipe.hset(
                K.presence(device_id),
                mapping={
                    "gateway": gateway_id,
                    "session": session_id,
                    "group": group_key,
                    "ts": now,
                },
            )
            pipe.expire(K.presence(device_id), self.ttl_s)
            pipe.zadd(K.group(group_key), {device_id: now})
        await pipe.execute()

    async def unregister(self, device_id: str, session_id: str, group_key: str) -> None:
        """Remove the entry only if it still belongs to this session (a newer one may own it).

        Two single-key steps, not one transaction: the presence hash and the group set hash to
        different cluster slots. The compare-and-delete is atomic; the group entry left for a
        moment is harmless (readers drop members whose heartbeat is older than the TTL)."""
        if await self.redis.eval(_DELETE_IF_SESSION, 1, K.presence(device_id), session_id):
            await self.redis.zrem(K.group(group_key), device_id)

    async def where(self, device_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(K.presence(device_id))
        return {str(k): str(v) for k, v in raw.items()}

    async def online_in_group(self, group_key: str) -> list[str]:
        cutoff = int(time.time() * 1000) - self.ttl_s * 1000
        await self.redis.zremrangebyscore(K.group(group_key), 0, cutoff)
        members = await self.redis.zrange(K.group(group_key), 0, -1)
        return sorted(str(m) for m in members)
