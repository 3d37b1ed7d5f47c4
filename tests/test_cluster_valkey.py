"""``supie_common.store`` against a real 3-master Valkey cluster (tests/fixtures_cluster.py):
``connect_redis`` takes a cluster URL and returns a ``RedisCluster``; leases, idempotency keys
and presence work with keys spread over every master."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from supie_common.store import K, Lease, Presence, connect_redis, once

from tests.fixtures_cluster import ValkeyCluster

# Real clusters take a while to form and fail over (~10-20 s a file on 2 cores): `make test-slow`;
# the one-node cluster tests (test_meeting_cluster.py, test_workflow_store.py) catch CROSSSLOT
# in `make test`.
pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster_redis(valkey_cluster: ValkeyCluster):  # type: ignore[no-untyped-def]
    client = connect_redis(valkey_cluster.url)
    await client.initialize()  # type: ignore[attr-defined]  # learn the slot map now
    yield client
    await client.aclose()


def _slot_spread(client: RedisCluster, keys: list[str]) -> set[str]:
    return {client.get_node_from_key(k).name for k in keys}


async def test_a_cluster_url_gives_a_cluster_client_on_every_seed_form(
    valkey_cluster: ValkeyCluster,
) -> None:
    first = valkey_cluster.nodes[0]
    for url in (
        valkey_cluster.url,
        f"redis+cluster://{first.host}:{first.port}",
        f"redis://{first.host}:{first.port}/0?cluster=true",
    ):
        client = connect_redis(url)
        try:
            assert isinstance(client, RedisCluster)
            await client.set(f"supie:test:{url}", "1")
            assert await client.get(f"supie:test:{url}") == "1"
            nodes = client.get_primaries()
            assert len(nodes) == 3
        finally:
            await client.aclose()


async def test_leases_on_a_cluster(cluster_redis) -> None:  # type: ignore[no-untyped-def]
    keys = [K.lock(f"meeting-{i}") for i in range(12)]
    assert len(_slot_spread(cluster_redis, keys)) == 3  # the test covers every master
    for key in keys:
        a = Lease(cluster_redis, key, ttl_ms=5000, holder="a")
        b = Lease(cluster_redis, key, ttl_ms=5000, holder="b")
        assert await a.acquire() and not await b.acquire()
        assert await a.renew() and not await b.renew()
        assert await a.owner() == "a"
        assert not await b.release() and await a.release()
        assert await b.acquire() and await b.owner() == "b"


async def test_idempotency_keys_on_a_cluster(cluster_redis) -> None:  # type: ignore[no-untyped-def]
    for i in range(12):
        assert await once(cluster_redis, "finalize", f"m{i}")
        assert not await once(cluster_redis, "finalize", f"m{i}")


async def test_presence_heartbeats_and_lookups_on_a_cluster(cluster_redis) -> None:  # type: ignore[no-untyped-def]
    presence = Presence(cluster_redis, ttl_s=30)
    devices = [f"aa:bb:cc:dd:ee:{i:02x}" for i in range(12)]
    assert len(_slot_spread(cluster_redis, [K.presence(d) for d in devices])) == 3
    # A non-transactional pipeline over keys on every master: redis-py splits it per node.
    await presence.heartbeat_many([(d, "gw-1", f"s-{d}", "grp-a") for d in devices])
    assert (await presence.where(devices[0]))["gateway"] == "gw-1"
    assert await presence.online_in_group("grp-a") == sorted(devices)
    await presence.register(devices[0], "gw-2", "s-new", "grp-a")
    assert (await presence.where(devices[0]))["session"] == "s-new"


async def test_presence_unregister_on_a_cluster(cluster_redis) -> None:  # type: ignore[no-untyped-def]
    presence = Presence(cluster_redis, ttl_s=30)
    device = "aa:bb:cc:dd:ee:99"
    await presence.register(device, "gw-1", "s-1", "grp-b")
    await presence.unregister(device, "s-0-older", "grp-b")  # not ours any more: kept
    assert (await presence.where(device))["session"] == "s-1"
    await presence.unregister(device, "s-1", "grp-b")
    assert await presence.where(device) == {}
    assert await presence.online_in_group("grp-b") == []
