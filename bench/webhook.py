"""Webhook dispatcher benchmark: one dispatcher replica (``python -m supie_webhook``) against
embedded NATS + Valkey and a fast local receiver in this process.

Phase 1 (throughput): publish ``--events`` meeting.finalized events at once, time until the last
delivery. Phase 2 (latency): publish at a steady ``--rate`` for ``--seconds`` and measure
publish-to-delivery latency (the receiver's arrival time minus the moment the meeting side
published). Prints ONE JSON line. Goal (issue 5): >= 200 deliveries/s per replica, p99 < 500 ms.

    uv run python bench/webhook.py [--events 2000] [--rate 200] [--seconds 5]
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
from supie_common.bus import connect_nats, ensure_events_stream
from supie_common.contracts import MeetingFinalized, Subjects, encode, new_id
from supie_common.embedded import EmbeddedNats, EmbeddedValkey, free_port
from supie_webhook.receiver import ReceivedRequest, WebhookReceiver

SUMMARY = {
    "title": "Weekly sync / sprint 42",
    "duration": "00:31:07",
    "bullets": ["Release train on Thursday", "Latency budget agreed", "Docs owner named"],
    "decisions": ["Ship v2 behind a flag"],
    "actions": ["Alice: write the migration", "Bob: load test"],
    "risks": ["Vendor API limits"],
    "nextSteps": ["Review on Monday"],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_dispatcher(
    nats_url: str,
    redis_url: str,
    receiver_url: str,
    workdir: Path,
    profile: str | None = None,
    concurrency: int | None = None,
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
    env.update(
        {
            "SUPIE_NATS__URL": nats_url,
            "SUPIE_REDIS__URL": redis_url,
            "SUPIE_CONFIG": str(workdir / "none.yaml"),
            "SUPIE_MEETING__WEBHOOK__URL": receiver_url,
            "SUPIE_MEETING__WEBHOOK__SECRET": "bench-secret",
        }
    )
    if concurrency:
        env["SUPIE_WEBHOOK__CONCURRENCY"] = str(concurrency)
    with open(workdir / "webhook.log", "wb") as log:
        prof = ["-m", "cProfile", "-o", profile] if profile else []
        return subprocess.Popen(
            [sys.executable, *prof, "-m", "supie_webhook"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def run(
    args: argparse.Namespace, nats_url: str, proc: subprocess.Popen[bytes], receiver_port: int
) -> dict:
    arrived: dict[str, float] = {}
    done = asyncio.Event()
    expected: set[str] = set()

    async def respond(req: ReceivedRequest) -> int:
        sid = json.loads(req.body)["sessionId"]
        arrived.setdefault(sid, req.received_mono)
        if expected and expected <= arrived.keys():
            done.set()
        return 200

    async with WebhookReceiver(respond, port=receiver_port):
        nc = await connect_nats(nats_url, "bench-webhook")
        js = nc.jetstream()
        await ensure_events_stream(js)
        published: dict[str, float] = {}

        async def publish_one() -> str:
            sid = new_id()
            event = MeetingFinalized(
                event_id=f"evt-{sid}",
                session_id=sid,
                device_id="aa:bb",
                summary=SUMMARY,
                metrics={"segmentsCount": 120},
                duration_ms=1_867_000,
                started_at=1,
                ended_at=2,
            )
            published[sid] = time.monotonic()
            await js.publish(Subjects.MEETING_FINALIZED, encode(event))
            return sid

        async def wait_all(sids: list[str], limit_s: float) -> None:
            expected.clear()
            expected.update(sids)
            done.clear()
            if not expected <= arrived.keys():
                await asyncio.wait_for(done.wait(), limit_s)

        try:
            # Warm-up: the dispatcher is up, connected and its connection pool is open.
            await wait_all([await publish_one() for _ in range(20)], 60)
            cpu = psutil.Process(proc.pid)
            cpu0 = sum(cpu.cpu_times()[:2])

            # Phase 1: a burst, as fast as the meeting side can publish.
            t0 = time.monotonic()
            burst: list[str] = []
            for _ in range(0, args.events, 100):
                burst += await asyncio.gather(*(publish_one() for _ in range(100)))
            publish_s = time.monotonic() - t0
            await wait_all(burst, 120)
            burst_s = max(arrived[s] for s in burst) - t0
            burst_lat = [(arrived[s] - published[s]) * 1000 for s in burst]
            cpu_burst = sum(cpu.cpu_times()[:2]) - cpu0

            # Phase 2: a steady rate; latency from publish to arrival at the receiver.
            steady: list[str] = []
            interval = 1.0 / args.rate
            start = time.monotonic()
            for i in range(int(args.rate * args.seconds)):
                await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
                steady.append(await publish_one())
            await wait_all(steady, 60)
            lat = [(arrived[s] - published[s]) * 1000 for s in steady]
        finally:
            await nc.drain()
    return {
        "bench": "webhook",
        "replicas": 1,
        "events": len(burst),
        "deliveries_per_s": round(len(burst) / burst_s, 1),
        "burst_publish_per_s": round(len(burst) / publish_s, 1),
        "burst_latency_p99_ms": round(percentile(burst_lat, 99), 1),
        "dispatcher_cpu_ms_per_delivery": round(cpu_burst * 1000 / len(burst), 2),
        "steady_rate_per_s": args.rate,
        "latency_p50_ms": round(statistics.median(lat), 1),
        "latency_p99_ms": round(percentile(lat, 99), 1),
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="burst size (phase 1)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in phase 2")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of phase 2")
    parser.add_argument("--concurrency", type=int, help="webhook.concurrency override")
    parser.add_argument("--profile", help="write a cProfile of the dispatcher to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="supie-bench-webhook-") as tmp:
        work = Path(tmp)
        with EmbeddedNats(work / "nats") as nats_server, EmbeddedValkey(work / "valkey") as kv:
            port = free_port()
            url = f"http://127.0.0.1:{port}/hook"
            proc = start_dispatcher(
                nats_server.url, kv.url, url, work, args.profile, args.concurrency
            )
            try:
                figures = asyncio.run(run(args, nats_server.url, proc, port))
            finally:
                proc.terminate()
                proc.wait(15)
            ok_lines = (work / "webhook.log").read_text(errors="replace").count("result=ok")
    figures["result_ok_log_lines"] = ok_lines
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
