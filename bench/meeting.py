"""Meeting benchmark: finalize ACK latency with 100 concurrent meetings, local summary time for a
one-hour (~900 segment) meeting, and meeting API detail requests/s (over NATS, and over HTTP via
the gateway when it runs). Embedded NATS/Valkey, services as subprocesses; prints one JSON line.

    uv run python bench/meeting.py [--replicas 2] [--meetings 100] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from supie_common.bus import BusError, connect_nats, request
from supie_common.contracts import (
    ApiReply,
    DeviceInbound,
    DeviceOutbound,
    HealthPing,
    HealthPong,
    MeetingApiRequest,
    ModeChanged,
    Subjects,
    Transcript,
    decode,
    encode,
    new_id,
    now_ms,
)
from supie_common.embedded import EmbeddedNats, EmbeddedValkey, free_port
from supie_common.store import connect_redis
from supie_meeting.local_summarizer import summarize_local
from supie_meeting.state import MeetingKeys
from supie_meeting.summary import normalize_summary

_TOPICS = ["budget", "launch", "hiring", "vendor", "roadmap", "testing", "security", "pricing"]
_TEMPLATES = [
    "We need to review the {t} plan before the end of the month.",
    "The {t} numbers look better than last quarter.",
    "We decided to move the {t} review to Thursday.",
    "Alice will prepare the {t} report for the board.",
    "There is a risk that the {t} work slips by two weeks.",
    "Next step is to share the {t} draft with the whole team.",
    "I think the {t} discussion needs more data from sales.",
    "Bob asked whether the {t} changes affect the customers.",
]


def sentences(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(_TEMPLATES).format(t=rng.choice(_TOPICS)) + f" (point {i})" for i in range(n)
    ]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=fh, stderr=subprocess.STDOUT
        )


async def wait_healthy(
    nc: NATS, service: str, procs: list[subprocess.Popen[bytes]], logs: list[Path], count: int
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{service} exited: {logs[0].read_text()[-2000:]}")
        try:
            await request(nc, Subjects.health(service), HealthPing(), HealthPong, timeout=0.5)
            if all(f"{service} started as" in log.read_text() for log in logs[:count]):
                return
        except BusError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{service} not healthy")


def envelope(device: str) -> dict[str, str]:
    return {"device_id": device, "session_id": new_id(), "gateway_id": "bench"}


async def open_meeting(nc: NATS, device: str, m: str, texts: list[str]) -> None:
    env = envelope(device)
    await nc.publish(
        Subjects.MODE_CHANGED,
        encode(ModeChanged(**env, state="start", mode="meeting", meeting_id=m)),
    )
    base = now_ms()
    for i, text in enumerate(texts):
        await nc.publish(
            Subjects.MEETING_TRANSCRIPT,
            encode(
                Transcript(
                    **env,
                    stream_id="s",
                    utterance_id=new_id(),
                    text=text,
                    start_ms=0,
                    end_ms=1,
                    meeting_id=m,
                    ts_ms=base + i,
                )
            ),
        )


async def bench_ack(nc: NATS, redis: Redis, meetings: int) -> dict[str, Any]:
    devices = [f"bench:{i:04d}:{new_id()[:6]}" for i in range(meetings)]
    ids = [new_id() for _ in devices]
    acked: dict[str, float] = {}
    summarized: dict[str, float] = {}
    done = asyncio.Event()

    def handler(m: str) -> Any:
        async def cb(msg: Any) -> None:
            out = decode(DeviceOutbound, msg.data).message or {}
            if out.get("phase") == "finalize":
                acked.setdefault(m, time.perf_counter())
            elif out.get("phase") == "summary" and not out.get("checkpoint"):
                summarized.setdefault(m, time.perf_counter())
                if len(summarized) == meetings:
                    done.set()

        return cb

    for d, m in zip(devices, ids, strict=True):
        await nc.subscribe(Subjects.device_out(d), cb=handler(m))
    for i, (d, m) in enumerate(zip(devices, ids, strict=True)):
        await open_meeting(nc, d, m, sentences(30, seed=i))
    await nc.flush()
    await wait_stored(redis, ids, 30)
    await asyncio.sleep(0.5)
    sent: dict[str, float] = {}
    for d, m in zip(devices, ids, strict=True):  # all 100 finalizes at once
        sent[m] = time.perf_counter()
        await nc.publish(
            Subjects.MEETING_INBOUND,
            encode(
                DeviceInbound(
                    **envelope(d),
                    mode="meeting",
                    meeting_id=m,
                    message={"type": "meeting", "phase": "finalize"},
                )
            ),
        )
    await nc.flush()
    await asyncio.wait_for(done.wait(), 120)
    lat = [(acked[m] - sent[m]) * 1000 for m in ids]
    summ = [(summarized[m] - sent[m]) * 1000 for m in ids]
    return {
        "ack_p50_ms": round(pct(lat, 50), 2),
        "ack_p99_ms": round(pct(lat, 99), 2),
        "ack_max_ms": round(max(lat), 2),
        "finalize_to_summary_p50_ms": round(pct(summ, 50), 1),
        "finalize_to_summary_p99_ms": round(pct(summ, 99), 1),
        "ids": ids,
    }


async def wait_stored(redis: Redis, ids: list[str], per_meeting: int) -> None:
    """Until the service has ingested every transcript (finalize latency, not ingest backlog)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts = [await redis.llen(MeetingKeys.segments(m)) for m in ids]
        if all(c >= per_meeting for c in counts):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("transcripts not ingested")


async def bench_long_meeting(nc: NATS, redis: Redis) -> tuple[dict[str, Any], str]:
    texts = sentences(900, seed=42)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        normalize_summary(summarize_local(texts), 3_600_000)
        runs.append((time.perf_counter() - t0) * 1000)
    device, m = f"bench:long:{new_id()[:6]}", new_id()
    got = asyncio.Event()
    marks: dict[str, float] = {}

    async def cb(msg: Any) -> None:
        out = decode(DeviceOutbound, msg.data).message or {}
        if out.get("phase") == "summary":
            marks["summary"] = time.perf_counter()
            got.set()

    await nc.subscribe(Subjects.device_out(device), cb=cb)
    await open_meeting(nc, device, m, texts)
    await nc.flush()
    await wait_stored(redis, [m], len(texts))
    t0 = time.perf_counter()
    await nc.publish(
        Subjects.MEETING_INBOUND,
        encode(
            DeviceInbound(
                **envelope(device),
                mode="meeting",
                meeting_id=m,
                message={"type": "meeting", "phase": "finalize"},
            )
        ),
    )
    await asyncio.wait_for(got.wait(), 60)
    return {
        "summary_local_900_ms": round(statistics.median(runs), 1),
        "finalize_900_summary_ms": round((marks["summary"] - t0) * 1000, 1),
    }, m


async def bench_api_nats(nc: NATS, ids: list[str], total: int, concurrency: int = 64) -> float:
    reqs = [
        encode(
            MeetingApiRequest(op="detail", params={"sessionId": ids[i % len(ids)], "preview": "5"})
        )
        for i in range(total)
    ]
    queue = iter(reqs)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for payload in queue:
            msg = await nc.request(Subjects.MEETING_API, payload, timeout=10)
            reply = decode(ApiReply, msg.data)
            if reply.status != 200:
                failures += 1
                if failures == 1:
                    print(
                        f"detail failed: {reply.status} {reply.error} {payload!r}", file=sys.stderr
                    )

    await asyncio.gather(*(worker() for _ in range(20)))  # warm the file cache
    queue = iter(reqs)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{failures} detail requests failed")
    return total / elapsed


async def _http_get_loop(host: str, port: int, paths: list[str]) -> int:
    """One keep-alive HTTP/1.1 connection issuing GETs back to back (a lean client, so that the
    figure is the server's and not httpx's)."""
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"HTTP {status!r} for {path}")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


async def bench_api_http(base: str, ids: list[str], total: int, concurrency: int = 32) -> float:
    host, port = base.removeprefix("http://").split(":")
    paths = [f"/supie/meetings/{ids[i % len(ids)]}?preview=5" for i in range(total)]
    await _http_get_loop(host, int(port), paths[:200])  # warm up
    per = [paths[i::concurrency] for i in range(concurrency)]
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(_http_get_loop(host, int(port), p) for p in per))
    return sum(counts) / (time.perf_counter() - t0)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="supie-bench-meeting-"))
    nats_srv, valkey = EmbeddedNats(tmp / "nats"), EmbeddedValkey(tmp / "valkey")
    nats_srv.start()
    valkey.start()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    result: dict[str, Any] = {
        "bench": "meeting",
        "cores": os.cpu_count(),
        "replicas": args.replicas,
    }
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
        env.update(
            {
                "SUPIE_NATS__URL": nats_srv.url,
                "SUPIE_REDIS__URL": valkey.url,
                "SUPIE_DATA_DIR": str(tmp / "data"),
                "SUPIE_CONFIG": str(tmp / "none.yaml"),
                "SUPIE_MEETING__TRANSCRIPT_PUSH_INTERVAL_MS": "5000",
            }
        )
        logs = [tmp / f"meeting-{i}.log" for i in range(args.replicas)]
        procs += [spawn("supie_meeting", env, log) for log in logs]
        nc = await connect_nats(nats_srv.url, "bench-meeting")
        await wait_healthy(nc, "meeting", procs, logs, args.replicas)
        redis = connect_redis(valkey.url)
        ack = await bench_ack(nc, redis, args.meetings)
        ids = ack.pop("ids")
        result.update(ack)
        long_figures, long_id = await bench_long_meeting(nc, redis)
        result.update(long_figures)
        metrics_log = tmp / "data" / "meetings" / "metrics.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every meeting archived (index settled)
            lines = metrics_log.read_text().splitlines() if metrics_log.exists() else []
            if len(lines) >= args.meetings + 1:
                break
            await asyncio.sleep(0.1)
        for _ in range(200):  # the archive is written right after the summary is sent
            probe = await nc.request(
                Subjects.MEETING_API,
                encode(MeetingApiRequest(op="detail", params={"sessionId": long_id})),
                timeout=10,
            )
            if decode(ApiReply, probe.data).status == 200:
                break
            await asyncio.sleep(0.05)
        # Retention keeps the 100 most recent: bench the ones the index still lists.
        recent = await nc.request(
            Subjects.MEETING_API,
            encode(MeetingApiRequest(op="recent", params={"limit": 100})),
            timeout=10,
        )
        ids = [e["sessionId"] for e in decode(ApiReply, recent.data).data]
        result["api_detail_rps_nats"] = round(await bench_api_nats(nc, ids, args.requests))
        try:
            http_port = free_port()
            gw_env = {
                **env,
                "SUPIE_SERVER__WS_PORT": str(free_port()),
                "SUPIE_SERVER__HTTP_PORT": str(http_port),
                "SUPIE_SERVER__IP": "127.0.0.1",
                "SUPIE_SERVER__API_RATE_LIMIT": "0",
                "SUPIE_LOG__LEVEL": "WARNING",
            }
            gw_log = tmp / "gateway.log"
            procs.append(spawn("supie_gateway", gw_env, gw_log))
            await wait_healthy(nc, "gateway", procs[-1:], [gw_log], 0)
            await asyncio.sleep(0.5)
            result["api_detail_rps_http"] = round(
                await bench_api_http(f"http://127.0.0.1:{http_port}", ids, args.requests // 2)
            )
        except Exception as exc:  # the gateway is optional for this bench
            result["api_detail_rps_http"] = None
            result["http_error"] = f"{type(exc).__name__}: {exc}"[:200]
        await nc.drain()
        await redis.aclose()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        nats_srv.stop()
        valkey.stop()
        acks = [
            float(x)
            for log in logs
            if log.exists()
            for x in re.findall(r"ack sent in ([0-9.]+) ms", log.read_text())
        ]
        shutil.rmtree(tmp, ignore_errors=True)
    if acks:  # the service's own share (Redis + publish), without NATS hops and this client
        result["ack_in_service_p50_ms"] = round(pct(acks, 50), 2)
        result["ack_in_service_p99_ms"] = round(pct(acks, 99), 2)
    result["goals_met"] = {
        "ack_p99_lt_100ms": result["ack_p99_ms"] < 100,
        "summary_lt_1s": result["summary_local_900_ms"] < 1000,
        "api_ge_1000_rps": result["api_detail_rps_nats"] >= 1000,
        "http_api_ge_1000_rps": (result.get("api_detail_rps_http") or 0) >= 1000,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--meetings", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
