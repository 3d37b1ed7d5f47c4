"""Coding service benchmark: one replica (``python -m supie_coding``) against embedded NATS +
Valkey, this process acting as the gateway for ``--badges`` badges.

Phase 1 (paced): every badge streams ``--rate`` lines/s (the lines of the test corpus, levels
guessed as ``supie coding pipe`` does) for ``--seconds``, one request at a time per badge as the
gateway sends them. Every 2 s each badge also sends a probe: an error line naming a new failing
test (its insight is immediate: that latency excludes the debounce) or, alternately, a warning
naming a new slow host (its insight waits for the debounce window the stream opened, so its
latency is at most the debounce plus the processing). Latency = probe sent -> the insight naming
it arrives on the badge's ``device.<dev>.out``.

Phase 2 (capacity): every badge sends as fast as its replies come back, for ``--burst-seconds``:
the lines/s one replica sustains. Prints ONE JSON line. Goal (issue 13): >= 5,000 lines/s per
replica.

    uv run python bench/coding.py [--badges 100] [--rate 20] [--seconds 10] [--profile FILE]

``BENCH_REPLICA_LOG=path`` keeps the replica's log there (``BENCH_LOG_LEVEL``, default WARNING).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from nats.aio.client import Client as NATS
from supie_coding.normalize import normalize_text
from supie_coding.signals import LogLine, extract_all
from supie_common.bus import connect_nats
from supie_common.bus import request as bus_request
from supie_common.contracts import DeviceOutbound, HealthPing, HealthPong, Subjects, decode, new_id
from supie_common.embedded import EmbeddedNats, EmbeddedValkey

from supie_cli.coding_pipe import guess_level

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "coding"
DEBOUNCE_MS = 1200
PROBE_EVERY_S = 2.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def corpus_lines() -> list[tuple[str, str]]:
    """The corpus' info lines that say nothing alone (headers, code, progress): the stream
    around the probes, so that each probe's finding is the news of its insight (a success line
    after a probe would make its failure stale, by design)."""
    out: list[tuple[str, str]] = []
    for path in sorted(CORPUS.glob("*.log")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or guess_level(line) != "info":
                continue
            if not extract_all([LogLine(normalize_text(line, 512))]):
                out.append((line, "info"))
    return out


def payload(device: str, session: str, level: str, text: str) -> bytes:
    """A DeviceInbound as the gateway encodes it, built without pydantic (the load generator
    must not be the bottleneck)."""
    return json.dumps(
        {
            "device_id": device,
            "session_id": session,
            "gateway_id": "bench-gw",
            "message_id": new_id(),
            "mode": "coding",
            "message": {"type": "coding", "event": "log", "level": level, "text": text},
        },
        separators=(",", ":"),
    ).encode()


class Replies:
    """One inbox subscription for every request of the load generator."""

    def __init__(self) -> None:
        self.prefix = f"_INBOX.bench{new_id()[:8]}"
        self.waiting: dict[str, asyncio.Future[bytes]] = {}
        self.n = 0

    async def start(self, nc: NATS) -> None:
        async def on_reply(msg: object) -> None:
            future = self.waiting.pop(msg.subject, None)  # type: ignore[attr-defined]
            if future is not None and not future.done():
                future.set_result(msg.data)  # type: ignore[attr-defined]

        await nc.subscribe(f"{self.prefix}.*", cb=on_reply)

    async def call(self, nc: NATS, subject: str, data: bytes) -> bytes:
        self.n += 1
        inbox = f"{self.prefix}.{self.n}"
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[inbox] = future
        await nc.publish(subject, data, reply=inbox)
        try:
            return await asyncio.wait_for(future, 30)
        finally:
            self.waiting.pop(inbox, None)


replies = Replies()


class BenchBadge:
    def __init__(self, nc: NATS, n: int) -> None:
        self.nc = nc
        self.device = f"bench:{n:04d}:{new_id()[:6]}"
        self.session = new_id()
        self.probes: dict[str, tuple[float, bool]] = {}  # token -> (sent at, debounced)
        self.latencies: list[float] = []
        self.debounced: list[float] = []
        self.insights = 0

    async def listen(self) -> None:
        async def on_frame(msg: object) -> None:
            out = decode(DeviceOutbound, msg.data)  # type: ignore[attr-defined]
            if out.frame is None:
                return
            self.insights += 1
            now = time.monotonic()
            for token in [t for t in self.probes if t in out.frame]:
                sent, debounced = self.probes.pop(token)
                ms = (now - sent) * 1000
                if debounced:
                    self.debounced.append(ms)
                else:
                    self.latencies.append(ms)

        await self.nc.subscribe(Subjects.device_out(self.device), cb=on_frame)

    async def send(self, level: str, text: str) -> None:
        # nc.request() costs this load generator more than the replica spends on the message:
        # publish with a reply subject of our own and wait for the answer instead.
        await replies.call(
            self.nc, Subjects.CODING_INBOUND, payload(self.device, self.session, level, text)
        )

    async def paced(self, lines: list[tuple[str, str]], rate: float, seconds: float) -> int:
        sent = 0
        start = time.monotonic()
        next_probe = start + PROBE_EVERY_S * (hash(self.device) % 100) / 100
        probe_n = 0
        offset = hash(self.device) % len(lines)
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                return sent
            if now >= next_probe:
                probe_n += 1
                token = f"p{probe_n}x{new_id()[:8]}"
                debounced = probe_n % 2 == 0
                if debounced:
                    text = (
                        f"requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='h{token}"
                        ".example.com', port=443): Read timed out. (read timeout=10)"
                    )
                    level = "warn"
                else:
                    text = f"FAILED tests/test_probe.py::test_{token} - assert 0 == 1"
                    level = "error"
                self.probes[token] = (time.monotonic(), debounced)
                await self.send(level, text)
                next_probe += PROBE_EVERY_S
            else:
                line, level = lines[(offset + sent) % len(lines)]
                await self.send(level, line)
            sent += 1
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def flood(self, lines: list[tuple[str, str]], seconds: float) -> int:
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            line, level = lines[sent % len(lines)]
            await self.send(level, line)
            sent += 1
        return sent


# The replica under cProfile timed by CPU, not wall clock: on a busy shared machine a wall-clock
# profile charges a call with the time the process waited for a core (a write that wakes NATS
# or Valkey looks expensive), which says nothing about what the replica costs.
_PROFILED = """
import cProfile, runpy, time
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    runpy.run_module("supie_coding", run_name="__main__")
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats({out!r})
"""


def start_replica(
    nats_url: str, redis_url: str, work: Path, profile: str | None = None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env.update(
        {
            "SUPIE_NATS__URL": nats_url,
            "SUPIE_REDIS__URL": redis_url,
            "SUPIE_CONFIG": str(work / "none.yaml"),
            "SUPIE_CODING__INSIGHT_DEBOUNCE_MS": str(DEBOUNCE_MS),
            "SUPIE_LOG__LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
    )
    with open(os.environ.get("BENCH_REPLICA_LOG", work / "coding.log"), "wb") as log:
        target = ["-c", _PROFILED.format(out=str(profile))] if profile else ["-m", "supie_coding"]
        return subprocess.Popen(
            [sys.executable, *target],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def run(args: argparse.Namespace, nats_url: str, proc: subprocess.Popen[bytes]) -> dict:
    nc = await connect_nats(nats_url, "bench-coding")
    deadline = time.monotonic() + 60
    while True:
        try:
            await bus_request(nc, Subjects.health("coding"), HealthPing(), HealthPong, timeout=1)
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the coding replica did not start") from None
            await asyncio.sleep(0.2)
    lines = corpus_lines()
    await replies.start(nc)
    badges = [BenchBadge(nc, n) for n in range(args.badges)]
    for b in badges:
        await b.listen()
    await nc.flush()
    cpu = psutil.Process(proc.pid)
    try:
        # warm-up: connections, script cache, code paths
        await asyncio.gather(*(b.send("info", "warm-up") for b in badges))

        c0, t0 = sum(cpu.cpu_times()[:2]), time.monotonic()
        sent = await asyncio.gather(*(b.paced(lines, args.rate, args.seconds) for b in badges))
        paced_s = time.monotonic() - t0
        paced_cpu = sum(cpu.cpu_times()[:2]) - c0
        await asyncio.sleep(DEBOUNCE_MS / 1000 + 1.5)  # the last probes' insights
        latencies = [ms for b in badges for ms in b.latencies]
        debounced = [ms for b in badges for ms in b.debounced]
        lost = sum(len(b.probes) for b in badges)
        if os.environ.get("BENCH_DEBUG"):
            now = time.monotonic()
            for b in badges:
                for token, (sent, debounced) in b.probes.items():
                    print("lost", token, debounced, round(now - sent, 1), file=sys.stderr)
        insights = sum(b.insights for b in badges)

        c1, t1 = sum(cpu.cpu_times()[:2]), time.monotonic()
        flooded = await asyncio.gather(*(b.flood(lines, args.burst_seconds) for b in badges))
        flood_s = time.monotonic() - t1
        flood_cpu = sum(cpu.cpu_times()[:2]) - c1
    finally:
        await nc.drain()
    return {
        "bench": "coding",
        "replicas": 1,
        "badges": args.badges,
        "rate_per_badge": args.rate,
        "paced_lines_per_s": round(sum(sent) / paced_s, 1),
        "lines_per_s": round(sum(flooded) / flood_s, 1),
        "immediate_latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "immediate_latency_p99_ms": round(percentile(latencies, 99), 1),
        "debounced_latency_p50_ms": round(statistics.median(debounced), 1) if debounced else None,
        "debounced_latency_p99_ms": round(percentile(debounced, 99), 1),
        "probes": len(latencies) + len(debounced),
        "probes_lost": lost,
        "insights_per_s": round(insights / paced_s, 1),
        "replica_cpu_paced": round(paced_cpu / paced_s, 2),
        "replica_cpu_flood": round(flood_cpu / flood_s, 2),
        "replica_cpu_us_per_line": round(flood_cpu * 1e6 / max(sum(flooded), 1), 1),
        # what one replica sustains given a whole core (here it shares 2 with the load
        # generator, NATS and Valkey): lines per second of the replica's own CPU
        "lines_per_replica_cpu_s": round(sum(flooded) / max(flood_cpu, 1e-9), 1),
        "debounce_ms": DEBOUNCE_MS,
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--badges", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="lines/s per badge (phase 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of phase 1")
    parser.add_argument("--burst-seconds", type=float, default=5.0, help="length of phase 2")
    parser.add_argument("--profile", help="write a cProfile of the replica to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="supie-bench-coding-") as tmp:
        work = Path(tmp)
        with EmbeddedNats(work / "nats") as nats_server, EmbeddedValkey(work / "valkey") as kv:
            proc = start_replica(nats_server.url, kv.url, work, args.profile)
            try:
                figures = asyncio.run(run(args, nats_server.url, proc))
            finally:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    print((work / "coding.log").read_text()[-3000:], file=sys.stderr)
                    raise
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
