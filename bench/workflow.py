"""Workflow benchmark: 200 badges in 20 groups against N workflow replicas (subprocesses) over an
embedded NATS and Valkey. The bench itself plays the gateway over NATS (DeviceInbound requests,
presence in Valkey, the badges' device.<dev>.out); it does not go through a real gateway.

- throughput: every badge sends updates back to back (one in flight per badge, as the gateway
  hands them), for ``--seconds``: accepted operations per second;
- latency at ``--rate`` ops/s (open loop): update sent -> the snapshot holding it received by
  another badge of the group (one observer badge per group), p50 / p99, and the CPU each process
  spent per operation at that fixed rate (``cpu_ms_per_op_at_rate``; an overloaded replica
  batches more and so spends less per operation: compare runs whose latencies are alike).

    uv run python bench/workflow.py [--replicas 2] [--seconds 10] [--rate 500] [--log-level INFO]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from nats.aio.client import Client as NATS
from supie_common.bus import BusError, connect_nats, request
from supie_common.contracts import (
    DeviceInbound,
    DeviceOutbound,
    HealthPing,
    HealthPong,
    InboundReply,
    Subjects,
    decode,
    encode,
    new_id,
)
from supie_common.embedded import EmbeddedNats, EmbeddedValkey
from supie_common.store import Presence, connect_redis

GROUPS = 20
PER_GROUP = 10


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Badge:
    def __init__(self, group: str, index: int) -> None:
        self.group = group
        self.index = index
        self.device_id = f"{group}:{index:02d}:{new_id()[:6]}"
        self.session_id = new_id()
        self.busy = False
        self.n = 0


class BenchGateway:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.waiting: dict[str, asyncio.Future[bytes]] = {}
        self.sent_at: dict[tuple[str, str], tuple[int, float]] = {}  # (group, task) -> (n, t)
        self.latencies: list[float] = []
        self.measuring = False
        self.prefix = f"bench.r.{new_id()[:8]}"

    async def start(self, observers: list[Badge]) -> None:
        async def on_reply(msg: Any) -> None:
            future = self.waiting.pop(msg.subject.rsplit(".", 1)[-1], None)
            if future is not None and not future.done():
                future.set_result(msg.data)

        async def on_push(msg: Any) -> None:
            if not self.measuring:
                return
            now = time.perf_counter()
            out = decode(DeviceOutbound, msg.data)
            frame = json.loads(out.frame or "{}")
            group = frame.get("groupKey")
            for task in frame.get("tasks", []):
                sent = self.sent_at.get((group, task["id"]))
                if sent is not None and task.get("n") == sent[0]:
                    self.latencies.append((now - sent[1]) * 1000)
                    del self.sent_at[(group, task["id"])]

        await self.nc.subscribe(f"{self.prefix}.*", cb=on_reply)
        for badge in observers:
            await self.nc.subscribe(Subjects.device_out(badge.device_id), cb=on_push)
        await self.nc.flush()

    async def update(self, badge: Badge, timeout: float = 10.0) -> bool:
        badge.n += 1
        task_id = f"b{badge.index}"
        inbound = DeviceInbound(
            device_id=badge.device_id,
            session_id=badge.session_id,
            gateway_id="bench",
            mode="working",
            group_key=badge.group,
            message={
                "type": "workflow",
                "event": "update",
                "tasks": [{"id": task_id, "title": f"task of {badge.index}", "n": badge.n}],
            },
        )
        token = new_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[token] = future
        if self.measuring:
            self.sent_at[(badge.group, task_id)] = (badge.n, time.perf_counter())
        await self.nc.publish(
            Subjects.WORKFLOW_INBOUND, encode(inbound), reply=f"{self.prefix}.{token}"
        )
        try:
            data = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.waiting.pop(token, None)
            return False
        return bool(data) and not decode(InboundReply, data).retry


def spawn_replica(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "supie_workflow"], env=env, stdout=fh, stderr=subprocess.STDOUT
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-workflow-"))
    nats = EmbeddedNats(tmp / "nats")
    valkey = EmbeddedValkey(tmp / "valkey")
    nats.start()
    valkey.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
        env.update(
            {
                "SUPIE_NATS__URL": nats.url,
                "SUPIE_REDIS__URL": valkey.url,
                "SUPIE_DATA_DIR": str(tmp / "data"),
                "SUPIE_CONFIG": str(tmp / "none.yaml"),
                "SUPIE_LOG__LEVEL": args.log_level,
            }
        )
        logs = [tmp / f"workflow-{i}.log" for i in range(args.replicas)]
        procs += [spawn_replica(env, log) for log in logs]
        nc = await connect_nats(nats.url, "bench")
        redis = connect_redis(valkey.url)
        # every replica answers health pings (queue group): wait until each one has
        instances: set[str] = set()
        deadline = time.monotonic() + 90
        while len(instances) < args.replicas:
            try:
                pong = await request(
                    nc, Subjects.health("workflow"), HealthPing(), HealthPong, timeout=1
                )
                instances.add(pong.instance)
            except BusError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(logs[0].read_text(errors="replace")[-3000:]) from None
                await asyncio.sleep(0.2)

        groups = [f"bg{g:02d}{new_id()[:4]}"[:8] for g in range(GROUPS)]
        badges = [Badge(g, i) for g in groups for i in range(PER_GROUP)]
        presence = Presence(redis, ttl_s=3600)
        await presence.heartbeat_many(
            [(b.device_id, "bench", b.session_id, b.group) for b in badges]
        )
        observers = [b for b in badges if b.index == 0]
        senders = [b for b in badges if b.index != 0]
        gw = BenchGateway(nc)
        await gw.start(observers)

        # warm-up: every badge's task exists, scripts are loaded
        await asyncio.gather(*(gw.update(b) for b in badges))

        # -- throughput (closed loop) --
        done = 0
        failed = 0
        stop_at = time.perf_counter() + args.seconds

        async def loop(badge: Badge) -> None:
            nonlocal done, failed
            while time.perf_counter() < stop_at:
                if await gw.update(badge):
                    done += 1
                else:
                    failed += 1

        watched = {
            "workflow": [psutil.Process(p.pid) for p in procs],
            "nats": [psutil.Process(nats.proc.pid)] if nats.proc else [],
            "valkey": [psutil.Process(valkey.proc.pid)] if valkey.proc else [],
            "bench": [psutil.Process()],
        }

        def cpu() -> dict[str, float]:
            return {
                k: sum(p.cpu_times().user + p.cpu_times().system for p in ps)
                for k, ps in watched.items()
            }

        cpu_before = cpu()
        started = time.perf_counter()
        await asyncio.gather(*(loop(b) for b in badges))
        ops_per_s = done / (time.perf_counter() - started)
        cpu_after = cpu()
        cpu_ms_per_op = {
            k: round((cpu_after[k] - cpu_before[k]) * 1000 / max(done, 1), 3) for k in cpu_after
        }

        # -- latency at a fixed rate (open loop) --
        await asyncio.sleep(1.0)
        gw.measuring = True
        total = int(args.rate * args.seconds)
        interval = 1.0 / args.rate
        inflight: set[asyncio.Task[bool]] = set()
        skipped = 0
        cpu_before = cpu()
        t0 = time.perf_counter()
        for k in range(total):
            target = t0 + k * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            badge = senders[k % len(senders)]
            if badge.busy:
                skipped += 1
                continue
            badge.busy = True

            async def one(b: Badge) -> bool:
                try:
                    return await gw.update(b)
                finally:
                    b.busy = False

            task = asyncio.create_task(one(badge))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        achieved = (total - skipped) / (time.perf_counter() - t0)
        if inflight:
            await asyncio.wait(inflight, timeout=15)
        cpu_after = cpu()
        # The same offered work whatever the machine's load (the closed loop offers what the
        # replicas manage); a replica that falls behind batches more, so spends less per op.
        cpu_ms_per_op_at_rate = {
            k: round((cpu_after[k] - cpu_before[k]) * 1000 / max(total - skipped, 1), 3)
            for k in cpu_after
        }
        await asyncio.sleep(1.0)
        gw.measuring = False
        lost = len(gw.sent_at)
        await nc.drain()
        await redis.aclose()
        return {
            "bench": "workflow",
            "gateway": "simulated over NATS (DeviceInbound requests, device.<dev>.out)",
            "replicas": args.replicas,
            "log_level": args.log_level,
            "badges": len(badges),
            "groups": GROUPS,
            "cores": os.cpu_count(),
            "ops_per_s": round(ops_per_s, 1),
            "throughput_failed": failed,
            "cpu_ms_per_op": cpu_ms_per_op,
            "latency_rate_ops_per_s": round(achieved, 1),
            "cpu_ms_per_op_at_rate": cpu_ms_per_op_at_rate,
            "update_to_other_badge_ms_p50": round(pct(gw.latencies, 50), 2),
            "update_to_other_badge_ms_p99": round(pct(gw.latencies, 99), 2),
            "latency_samples": len(gw.latencies),
            "latency_unseen": lost,
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        valkey.stop()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument(
        "--log-level", default="INFO", help="the replicas' log.level (INFO: one line per op)"
    )
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
