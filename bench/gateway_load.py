"""Gateway load: N device connections (hello + keepalive pings), M of them streaming 60 ms audio
frames at real-time pace. Prints one JSON line: connections held, streaming, frames/s, frame loss,
device-send → bus-delivery latency p50/p99 (sampled streams), gateway CPU % and RSS, cores.

    uv run python bench/gateway_load.py [--connections 2000] [--streaming 500] [--seconds 20]

One gateway process against embedded nats-server and valkey; the load generator runs in
``--workers`` client processes. Each frame's payload carries its send time (the gateway forwards
payloads untouched), so latency is measured end to end on one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import uvloop
from supie_common.bus import connect_nats
from supie_common.contracts import (
    AsrEvent,
    AsrOpenReply,
    AsrOpenRequest,
    AudioHeaders,
    MeetingControlReply,
    Queues,
    Subjects,
    decode,
    encode,
)
from supie_common.embedded import EmbeddedNats, EmbeddedValkey, free_port, wait_for_port

FRAME_MS = 60
PAYLOAD_PAD = b"\x00" * 120  # about the size of a 60 ms Opus packet at 16 kbit/s


def device_id(worker: int, i: int) -> str:
    n = worker * 100_000 + i
    return "be:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (32, 24, 16, 8, 0))


async def _client(
    url: str,
    dev: str,
    stream_s: float | None,
    hold_s: float,
    stream_at: float,
    stats: dict[str, int],
) -> None:
    from websockets.asyncio.client import connect

    try:
        async with connect(
            url,
            additional_headers={"Device-Id": dev, "Client-Id": dev, "Protocol-Version": "1"},
            open_timeout=60,
            ping_interval=None,
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "hello",
                        "version": 1,
                        "transport": "websocket",
                        "audio_params": {
                            "format": "opus",
                            "sample_rate": 16000,
                            "channels": 1,
                            "frame_duration": 60,
                        },
                    }
                )
            )
            await asyncio.wait_for(ws.recv(), 30)
            stats["connected"] += 1
            reader = asyncio.create_task(_drain(ws))
            end = time.monotonic() + hold_s
            if stream_s:
                await ws.send(json.dumps({"type": "listen", "state": "start", "mode": "auto"}))
                # Everyone streams at once, after all connections are up (wall clock: shared
                # by the worker processes).
                await asyncio.sleep(max(0.0, stream_at - time.time()))
                start = time.monotonic()
                i = 0
                while time.monotonic() < start + stream_s:
                    delay = start + i * FRAME_MS / 1000 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send(struct.pack(">Q", time.time_ns()) + PAYLOAD_PAD)
                    stats["sent"] += 1
                    i += 1
            while time.monotonic() < end:
                await asyncio.sleep(min(10.0, max(0.0, end - time.monotonic())))
                await ws.send("ping")
            reader.cancel()
    except Exception:
        stats["failed"] += 1


async def _drain(ws) -> None:  # type: ignore[no-untyped-def]
    async for _ in ws:
        pass


def _worker(
    url: str,
    worker: int,
    n_conn: int,
    n_stream: int,
    ramp_s: float,
    stream_s: float,
    hold_s: float,
    stream_at: float,
    out: mp.Queue,  # type: ignore[type-arg]
) -> None:
    async def main() -> None:
        stats = {"connected": 0, "sent": 0, "failed": 0}
        tasks = []
        for i in range(n_conn):
            dev = device_id(worker, i)
            streaming = stream_s if i < n_stream else None
            tasks.append(
                asyncio.create_task(_client(url, dev, streaming, hold_s, stream_at, stats))
            )
            await asyncio.sleep(ramp_s / max(n_conn, 1))
        await asyncio.gather(*tasks)
        out.put(stats)

    uvloop.run(main())  # the load generator must not be the bottleneck it measures


async def _measure(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="supie-bench-"))
    nats, valkey = EmbeddedNats(tmp / "nats"), EmbeddedValkey(tmp / "valkey")
    nats.start()
    valkey.start()
    ws_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env.update(
        {
            "SUPIE_NATS__URL": nats.url,
            "SUPIE_REDIS__URL": valkey.url,
            "SUPIE_DATA_DIR": str(tmp / "data"),
            "SUPIE_SERVER__WS_PORT": str(ws_port),
            "SUPIE_SERVER__HTTP_PORT": str(http_port),
            "SUPIE_LOG__LEVEL": "WARNING",
            "SUPIE_SERVER__IP": "127.0.0.1",
        }
    )
    gw = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [sys.executable, "-m", "supie_gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", ws_port, 30)
    gw_ps = psutil.Process(gw.pid)

    nc = await connect_nats(nats.url, "bench")
    latencies: list[float] = []
    seqs: dict[str, set[int]] = {}

    async def on_audio(msg) -> None:  # type: ignore[no-untyped-def]
        headers = msg.headers or {}
        seqs[headers[AudioHeaders.STREAM]].add(int(headers[AudioHeaders.SEQ]))
        sent_ns = struct.unpack_from(">Q", msg.data)[0]
        latencies.append((time.time_ns() - sent_ns) / 1e6)

    # The bench plays the asr service: it owns every stream (answers the open, heartbeats), so
    # what is measured is the gateway's own path from socket to bus. It subscribes to one stream
    # in ``--sample`` for latency and gaps, so that this Python subscriber is not the bottleneck.
    streams: set[str] = set()

    async def on_open(msg) -> None:  # type: ignore[no-untyped-def]
        req = decode(AsrOpenRequest, msg.data)
        if req.stream_id not in streams and len(streams) % args.sample == 0:
            seqs[req.stream_id] = set()
            await nc.subscribe(Subjects.asr_audio(req.stream_id), cb=on_audio)
            await nc.flush()
        streams.add(req.stream_id)
        await msg.respond(encode(AsrOpenReply(ok=True, stream_id=req.stream_id, owner="bench")))

    async def heartbeats() -> None:
        # committed_seq is unknown here (the bench does not count every stream's frames): a
        # large value releases the gateway's replay buffers as a real asr replica would.
        while True:
            await asyncio.sleep(0.5)
            for sid in list(streams):
                beat = AsrEvent(kind="heartbeat", stream_id=sid, owner="bench", committed_seq=2**40)
                await nc.publish(Subjects.asr_events(sid), encode(beat))

    # ... and the meeting service: every connect asks for the device's meeting (none here).
    async def on_meeting_control(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(encode(MeetingControlReply()))

    await nc.subscribe(Subjects.ASR_OPEN, queue="asr", cb=on_open)
    await nc.subscribe(Subjects.MEETING_CONTROL, queue=Queues.MEETING, cb=on_meeting_control)
    beat = asyncio.create_task(heartbeats())

    def fetch_metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    async def frames_in() -> float:
        # In a thread: this process measures latency and must never stall its own loop.
        text = await asyncio.to_thread(fetch_metrics)
        line = next(x for x in text.splitlines() if x.startswith("supie_gateway_frames_in_total"))
        return float(line.split()[-1])

    url = f"ws://127.0.0.1:{ws_port}/supie/v1/"
    workers = args.workers
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    hold = args.ramp + args.seconds + 5
    stream_at = time.time() + args.ramp + 1
    procs = []
    for w in range(workers):
        n_conn = args.connections // workers + (1 if w < args.connections % workers else 0)
        n_stream = args.streaming // workers + (1 if w < args.streaming % workers else 0)
        p = mp.Process(
            target=_worker,
            args=(url, w, n_conn, n_stream, args.ramp, args.seconds, hold - 2, stream_at, out),
        )
        p.start()
        procs.append(p)

    await asyncio.sleep(args.ramp + 2)  # connections ramp up, streams start
    gw_ps.cpu_percent(None)
    t0, f0 = time.monotonic(), await frames_in()
    await asyncio.sleep(max(1.0, args.seconds - 4))
    window = time.monotonic() - t0
    frames_per_s = (await frames_in() - f0) / window
    cpu = gw_ps.cpu_percent(None)
    rss_mb = gw_ps.memory_info().rss / 2**20
    results = [await asyncio.to_thread(out.get) for _ in procs]
    for p in procs:
        p.join(30)
    await asyncio.sleep(1.0)  # late frames still in flight
    gateway_frames = await frames_in()
    beat.cancel()
    await nc.drain()
    gw.terminate()
    gw.wait(30)
    nats.stop()
    valkey.stop()

    sent = sum(r["sent"] for r in results)
    lat = sorted(latencies)
    pct = (
        (lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))], 2)) if lat else (lambda q: None)
    )
    return {
        "bench": "gateway_load",
        "connections": sum(r["connected"] for r in results),
        "connections_requested": args.connections,
        "connect_failures": sum(r["failed"] for r in results),
        "streaming": args.streaming,
        "frames_sent": sent,
        "frames_at_gateway": int(gateway_frames),
        "frames_per_s": round(frames_per_s, 1),
        "frame_loss_at_gateway": round(1 - gateway_frames / sent, 5) if sent else None,
        "sampled_streams": len(seqs),
        "sampled_frames_delivered": sum(len(v) for v in seqs.values()),
        "sampled_seq_gaps": sum(max(v) + 1 - len(v) for v in seqs.values() if v),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p95": pct(0.95),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": round(lat[-1], 2) if lat else None,
        "latency_ms_mean": round(statistics.fmean(lat), 2) if lat else None,
        "gateway_cpu_percent": round(cpu, 1),
        "gateway_rss_mb": round(rss_mb, 1),
        "client_workers": workers,
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--streaming", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0, help="streaming duration")
    parser.add_argument("--ramp", type=float, default=15.0, help="seconds to open connections")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--sample", type=int, default=10, help="measure 1 stream in N")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_measure(args))), flush=True)


if __name__ == "__main__":
    main()
