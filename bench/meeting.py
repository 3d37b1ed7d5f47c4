"""Meeting benchmark, over the request/reply contract of docs/dataflow.md (the bench acts as the
gateway, with ``tests/fixtures/meeting_bus.py``). Embedded NATS/Valkey, services as subprocesses;
prints one JSON line.

Figures:
- ``finalize_ack_*``: 100 meetings (30 segments each) finalized at once; from sending the
  ``DeviceInbound(finalize)`` request to its reply, which carries the ACK and is sent only once
  the meeting is marked finalizing in Redis ("acknowledged means persisted");
- ``finalize_to_summary_*``: from that request to the summary frame on ``device.<dev>.out``;
- ``snippet_ack_*``: 100 badges sending 20 snippets each (one at a time per badge, as the gateway
  does per connection), request to reply (stored in Redis);
- ``speech_to_archive_*`` (end of speech -> archive visible): for each of 20 meetings, from the
  router sending the meeting's last final transcript (``meeting.transcript`` request) -- the
  badge's finalize follows as soon as that is acknowledged -- until the meeting API
  (``meeting.api`` ``transcript``, what ``GET /supie/meetings/<id>/transcript`` answers) returns
  that sentence, polled every 5 ms;
- ``summary_local_900_ms`` / ``finalize_900_summary_ms``: local summary of a one-hour meeting;
- ``api_detail_rps_nats`` / ``api_detail_rps_http``: meeting detail requests/s over NATS, and
  over HTTP via the gateway's HTTP port (the gateway in this tree; its HTTP API route uses the
  same ``meeting.api`` contract).

    uv run python bench/meeting.py [--replicas 2] [--meetings 100] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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
from supie_common.bus import BusError, connect_nats, request
from supie_common.contracts import (
    ApiReply,
    HealthPing,
    HealthPong,
    MeetingApiRequest,
    Subjects,
    decode,
    encode,
)
from supie_common.embedded import EmbeddedNats, EmbeddedValkey, free_port
from supie_meeting.local_summarizer import summarize_local
from supie_meeting.summary import normalize_summary


def _load_bus() -> Any:
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "meeting_bus.py"
    spec = importlib.util.spec_from_file_location("supie_bench_meeting_bus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bus = _load_bus()
Badge = bus.Badge

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


def figures(name: str, values: list[float]) -> dict[str, float]:
    return {
        f"{name}_p50_ms": round(pct(values, 50), 2),
        f"{name}_p99_ms": round(pct(values, 99), 2),
        f"{name}_max_ms": round(max(values), 2),
    }


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


async def bench_ack(nc: NATS, meetings: int) -> tuple[dict[str, Any], list[str]]:
    badges = [await Badge(nc, f"bench:{i:04d}").listen() for i in range(meetings)]
    ids = [await b.start() for b in badges]
    for i, b in enumerate(badges):
        await asyncio.gather(*(b.say(t) for t in sentences(30, seed=i)))
    await asyncio.sleep(0.5)
    acked: dict[str, float] = {}
    sent: dict[str, float] = {}

    async def finalize(b: Any, m: str) -> None:
        sent[m] = time.perf_counter()
        frames = await b.finalize(timeout=10)
        acked[m] = time.perf_counter()
        assert frames[0]["phase"] == "finalize" and frames[0]["sessionId"] == m, frames

    await asyncio.gather(*(finalize(b, m) for b, m in zip(badges, ids, strict=True)))
    deadline = time.monotonic() + 120
    summarized: dict[str, float] = {}
    while len(summarized) < meetings and time.monotonic() < deadline:
        for b, m in zip(badges, ids, strict=True):
            if m not in summarized and b.of("summary", sessionId=m):
                summarized[m] = time.perf_counter()
        await asyncio.sleep(0.005)
    lat = [(acked[m] - sent[m]) * 1000 for m in ids]
    summ = [(summarized[m] - sent[m]) * 1000 for m in ids]
    retried = sum(1 for b in badges if b.attempts[-1] > 1)
    for b in badges:
        await b.close()
    return {
        **figures("finalize_ack", lat),
        "finalize_retried": retried,
        **figures("finalize_to_summary", summ),
    }, ids


async def bench_snippets(nc: NATS, badges_n: int = 100, per_badge: int = 20) -> dict[str, Any]:
    badges = [await Badge(nc, f"bench:snip:{i:04d}").listen() for i in range(badges_n)]
    for b in badges:
        await b.start()
    lat: list[float] = []

    async def send(i: int, b: Any) -> None:
        for k in range(per_badge):
            t0 = time.perf_counter()
            ack = await b.snippet(f"badge {i} note {k}: " + sentences(1, seed=i * 100 + k)[0])
            lat.append((time.perf_counter() - t0) * 1000)
            assert ack["accepted"] == 1, ack
            await asyncio.sleep(0.1)  # a steady 10 snippets/s per badge, 1,000/s in all

    await asyncio.gather(*(send(i, b) for i, b in enumerate(badges)))
    for b in badges:
        await b.control("end", "mode_end")
        await b.close()
    return figures("snippet_ack", lat)


async def bench_speech_to_archive(nc: NATS, meetings: int = 20) -> dict[str, Any]:
    lat: list[float] = []
    for i in range(meetings):
        b = await Badge(nc, f"bench:speech:{i:04d}").listen()
        await b.start()
        for text in sentences(9, seed=1000 + i):
            await b.say(text)
        last = f"And that is the last sentence of meeting {i}."
        t0 = time.perf_counter()
        await b.say(last)  # the router's request for the last final; stored when answered
        await b.finalize()
        while True:
            reply = await bus.api(nc, "transcript", sessionId=b.meeting_id, limit=100)
            if reply.status == 200 and any(x["text"] == last for x in reply.data["items"]):
                break
            await asyncio.sleep(0.005)
        lat.append((time.perf_counter() - t0) * 1000)
        await b.close()
    return figures("speech_to_archive", lat)


async def bench_long_meeting(nc: NATS) -> tuple[dict[str, Any], str]:
    texts = sentences(900, seed=42)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        normalize_summary(summarize_local(texts), 3_600_000)
        runs.append((time.perf_counter() - t0) * 1000)
    b = await Badge(nc, "bench:long").listen()
    m = await b.start()
    for i in range(0, len(texts), 50):
        await asyncio.gather(*(b.say(t) for t in texts[i : i + 50]))
    t0 = time.perf_counter()
    await b.finalize()
    await bus.until(lambda: b.of("summary", sessionId=m), 60)
    elapsed = (time.perf_counter() - t0) * 1000
    await b.close()
    return {
        "summary_local_900_ms": round(statistics.median(runs), 1),
        "finalize_900_summary_ms": round(elapsed, 1),
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
                # throughput, not the per-device limits (tests/test_meeting_limits.py)
                "SUPIE_MEETING__SNIPPETS_PER_SECOND": "100000",
                "SUPIE_MEETING__MAX_PENDING": "100000",
                "SUPIE_MEETING__FINALIZE_PER_MINUTE": "1000",
            }
        )
        logs = [tmp / f"meeting-{i}.log" for i in range(args.replicas)]
        procs += [spawn("supie_meeting", env, log) for log in logs]
        nc = await connect_nats(nats_srv.url, "bench-meeting")
        await wait_healthy(nc, "meeting", procs, logs, args.replicas)
        ack, ids = await bench_ack(nc, args.meetings)
        result.update(ack)
        result.update(await bench_snippets(nc))
        result.update(await bench_speech_to_archive(nc))
        long_figures, long_id = await bench_long_meeting(nc)
        result.update(long_figures)
        for _ in range(400):  # the archive is written right after the summary is sent
            probe = await bus.api(nc, "detail", sessionId=long_id)
            if probe.status == 200:
                break
            await asyncio.sleep(0.05)
        # Retention keeps the 100 most recent: bench the ones the index still lists.
        recent = await bus.api(nc, "recent", limit=100)
        ids = [e["sessionId"] for e in recent.data]
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
        in_service = [
            float(x)
            for log in logs
            if log.exists()
            for x in re.findall(r"ack ready in ([0-9.]+) ms", log.read_text())
        ]
        shutil.rmtree(tmp, ignore_errors=True)
    if in_service:  # the service's own share (two Lua calls, two publishes), without NATS hops
        result["finalize_ack_in_service_p50_ms"] = round(pct(in_service, 50), 2)
        result["finalize_ack_in_service_p99_ms"] = round(pct(in_service, 99), 2)
    result["goals_met"] = {
        "ack_p99_lt_100ms": result["finalize_ack_p99_ms"] < 100,
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
