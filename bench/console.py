"""Web console benchmark on a real stack (embedded NATS and Valkey; the gateway and the meeting
service as processes) and a real headless Chromium; prints one JSON line.

Figures:
- ``home_first_render_*_ms``: with 1,000 archived meetings, from the navigation's start until
  the recent meetings, the meetings in progress and the online badges are all drawn (the page's
  ``supie:home-ready`` performance mark; its API calls included), over ``--renders`` fresh page
  loads in new browser contexts; ``home_render_driver_p50_ms`` is the same seen from the bench
  (``page.goto`` until the three are visible, Playwright's own round trips included);
- ``search_p50_ms`` / ``search_p99_ms``: ``GET /supie/meetings/search`` over 10,000 archived
  meetings (the HTTP route -> NATS -> the meeting service's FTS5 index and back), English words,
  prefixes, Chinese words and filtered queries, one at a time (goal: p99 < 50 ms);
- ``live_delay_p50_ms`` / ``live_delay_p99_ms``: from an ASR final published into the
  transcripts stream (as the asr service does) until the meeting page shows it, read by a
  MutationObserver in the page against the same wall clock (goal: p99 < 300 ms).

The archive is seeded by writing its files (the files backend's layout) before the meeting
service starts, which indexes them at start. Without a Chromium the browser figures are null.

    uv run python bench/console.py [--meetings 10000] [--home-meetings 1000] [--queries 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from supie_common.bus import BusError, connect_nats, request
from supie_common.contracts import HealthPing, HealthPong, Subjects, Summary, Transcript, new_id
from supie_common.device_client import DeviceClient
from supie_common.embedded import EmbeddedNats, EmbeddedValkey, free_port
from supie_gateway.transcripts import publish_transcript
from supie_meeting.models import ArchivedMeeting, IndexEntry, Segment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from browser import find_chromium  # noqa: E402

_TOPICS = ["budget", "launch", "hiring", "vendor", "roadmap", "testing", "security", "pricing"]
_ZH_TOPICS = ["预算", "发布", "招聘", "供应商", "路线图", "测试", "安全", "定价"]
_EN = [
    "We need to review the {t} plan before the end of the month.",
    "The {t} numbers look better than last quarter.",
    "We decided to move the {t} review to Thursday.",
    "Alice will prepare the {t} report for the board.",
    "There is a risk that the {t} work slips by two weeks.",
    "Next step is to share the {t} draft with the whole team.",
]
_ZH = [
    "我们需要在月底前检查{t}计划。",
    "这个季度的{t}数据比上个季度好。",
    "我们决定把{t}评审改到周四。",
    "下周要和团队分享{t}草案。",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def seed_archive(data_dir: Path, count: int, start: int, rng: random.Random) -> None:
    """``count`` more meetings (30 segments each; every fourth in Chinese) in the files layout,
    and an index listing all of them."""
    root = data_dir / "meetings"
    root.mkdir(parents=True, exist_ok=True)
    index_path = root / "index.json"
    entries = (
        [IndexEntry.model_validate(e) for e in json.loads(index_path.read_text())]
        if (index_path.exists())
        else []
    )
    now = int(time.time() * 1000)
    for i in range(start, start + count):
        zh = i % 4 == 3
        ended = now - (i + 1) * 60_000
        device = f"bench{i % 50:03d}:aa:bb"
        texts = [
            (
                rng.choice(_ZH).format(t=rng.choice(_ZH_TOPICS))
                if zh
                else rng.choice(_EN).format(t=rng.choice(_TOPICS))
            )
            + f" #{i}-{k}"
            for k in range(30)
        ]
        segments = [
            Segment(ts=ended - 1000 * (30 - k), text=t, speaker_id=device[:8], tag="ASR")
            for k, t in enumerate(texts)
        ]
        main = ArchivedMeeting(
            session_id=f"bench{i:06d}",
            device_id=device,
            started_at=ended - 30_000,
            ended_at=ended,
            duration_ms=30_000,
            summary=Summary(
                title=texts[0][:30], duration="00:00:30", bullets=texts[:3], actions=texts[3:4]
            ),
            segments=segments,
            segments_count=30,
            bullets_length=3,
        )
        (root / f"{main.session_id}.json").write_text(
            main.model_dump_json(by_alias=True), encoding="utf-8"
        )
        entries.append(
            IndexEntry(
                session_id=main.session_id,
                device_id=device,
                title=main.summary.title,
                started_at=main.started_at,
                ended_at=ended,
                duration_ms=30_000,
                bullets_length=3,
                segments_count=30,
                total_count=30,
            )
        )
    entries.sort(key=lambda e: e.sort_key, reverse=True)
    index_path.write_text(
        json.dumps([e.model_dump(by_alias=True, exclude_none=True) for e in entries]),
        encoding="utf-8",
    )


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_healthy(nc: Any, service: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{service} exited: {log.read_text()[-2000:]}")
        try:
            await request(nc, Subjects.health(service), HealthPing(), HealthPong, timeout=0.5)
            return
        except BusError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{service} not healthy: {log.read_text()[-2000:]}")


async def wait_indexed(http: httpx.AsyncClient, count: int, within: float = 600) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        resp = await http.get("/supie/meetings/search", params={"q": "", "limit": "1"})
        if resp.status_code == 200:
            data = resp.json()["data"]
            if data["total"] >= count and not data.get("indexing"):
                return time.monotonic() - t0
        await asyncio.sleep(0.25)
    raise TimeoutError(f"the search index did not reach {count} meetings")


def queries(n: int, rng: random.Random) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append({"q": rng.choice(_TOPICS)})
        elif kind == 1:
            out.append({"q": rng.choice(_TOPICS)[:4]})  # prefix
        elif kind == 2:
            out.append({"q": rng.choice(_ZH_TOPICS)})
        elif kind == 3:
            out.append({"q": f"{rng.choice(_TOPICS)} review", "deviceId": f"bench{i % 50:03d}"})
        else:
            out.append({"q": f"#{rng.randrange(10_000)}-{rng.randrange(30)}"})  # one meeting
    return out


async def bench_search(http: httpx.AsyncClient, n: int, rng: random.Random) -> dict[str, Any]:
    qs = queries(n, rng)
    for q in qs[:20]:  # warm
        await http.get("/supie/meetings/search", params=q)
    took: list[float] = []
    hits = 0
    for q in qs:
        t0 = time.perf_counter()
        resp = await http.get("/supie/meetings/search", params=q)
        took.append((time.perf_counter() - t0) * 1000)
        resp.raise_for_status()
        hits += resp.json()["data"]["total"] > 0
    return {
        "search_queries": n,
        "search_p50_ms": round(pct(took, 50), 2),
        "search_p99_ms": round(pct(took, 99), 2),
        "search_with_hits": hits,
    }


async def bench_home(browser: Any, base: str, renders: int) -> dict[str, Any]:
    took: list[float] = []  # as the test driver sees it (Playwright's round trips included)
    in_page: list[float] = []  # navigation start -> the page's "home-ready" mark
    for _ in range(renders):
        context = await browser.new_context()
        page = await context.new_page()
        t0 = time.perf_counter()
        await page.goto(f"{base}/console/")
        await page.locator("#recent-table").wait_for()
        await page.locator("#active > *").first.wait_for()
        await page.locator("#badges > *").first.wait_for()
        took.append((time.perf_counter() - t0) * 1000)
        for _ in range(50):
            mark = await page.evaluate(
                "() => performance.getEntriesByName('supie:home-ready')[0]?.startTime ?? null"
            )
            if mark is not None:
                in_page.append(float(mark))
                break
            await asyncio.sleep(0.05)
        await context.close()
    return {
        "home_renders": renders,
        "home_first_render_p50_ms": round(statistics.median(in_page), 1),
        "home_first_render_max_ms": round(max(in_page), 1),
        "home_render_driver_p50_ms": round(statistics.median(took), 1),
        "home_first_render_each_ms": [round(x) for x in in_page],  # the first: a cold browser
    }


_OBSERVE = """() => {
  window.__seen = {};
  const list = document.getElementById('transcript');
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) for (const node of r.addedNodes) {
      const text = node.querySelector && node.querySelector('.text');
      if (text) window.__seen[text.textContent] = now;
    }
  }).observe(list, { childList: true });
}"""


async def bench_live(browser: Any, base: str, ws_url: str, nc: Any, n: int) -> dict[str, Any]:
    http = httpx.AsyncClient(base_url=base, timeout=10)
    async with DeviceClient(ws_url, f"livebench:{new_id()[:4]}") as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        await dev.expect("mode", status="ok", state="start")
        meeting_id = None
        for _ in range(100):
            items = (await http.get("/supie/meetings/active")).json()["data"]["items"]
            meeting_id = next(
                (m["sessionId"] for m in items if m["deviceId"] == dev.device_id), None
            )
            if meeting_id:
                break
            await asyncio.sleep(0.1)
        assert meeting_id and dev.session_id
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{base}/console/meetings/{meeting_id}")
        await page.locator("#transcript").wait_for()
        await page.locator("#finalize").wait_for()
        await asyncio.sleep(0.5)  # the live stream is open
        await page.evaluate(_OBSERVE)
        js = nc.jetstream()
        sent: dict[str, float] = {}
        for i in range(n):
            text = f"live line {i} {new_id()[:6]}"
            t = Transcript(
                device_id=dev.device_id,
                session_id=dev.session_id,
                gateway_id="bench-asr",
                stream_id=f"s-{meeting_id}",
                utterance_id=f"s-{meeting_id}:{i}",
                text=text,
                start_ms=i * 1000,
                end_ms=i * 1000 + 800,
                meeting_id=meeting_id,
                mode="meeting",
            )
            sent[text] = time.time() * 1000
            await publish_transcript(js, t)
            await asyncio.sleep(0.2)  # an utterance every 200 ms: faster than people talk
        seen: dict[str, float] = {}
        for _ in range(100):
            seen = await page.evaluate("() => window.__seen")
            if len(seen) >= n:
                break
            await asyncio.sleep(0.1)
        await context.close()
        await dev.send_json({"type": "meeting", "phase": "finalize"})
    await http.aclose()
    delays = [seen[t] - sent[t] for t in sent if t in seen]
    return {
        "live_finals": n,
        "live_seen": len(delays),
        "live_delay_p50_ms": round(pct(delays, 50), 1) if delays else None,
        "live_delay_p99_ms": round(pct(delays, 99), 1) if delays else None,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="supie-bench-console-"))
    nats_srv, valkey = EmbeddedNats(tmp / "nats"), EmbeddedValkey(tmp / "valkey")
    nats_srv.start()
    valkey.start()
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"bench": "console", "cores": os.cpu_count()}
    chromium = find_chromium()
    try:
        data = tmp / "data"
        t0 = time.monotonic()
        seed_archive(data, args.home_meetings, 0, rng)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
        http_port, ws_port = free_port(), free_port()
        env.update(
            {
                "SUPIE_NATS__URL": nats_srv.url,
                "SUPIE_REDIS__URL": valkey.url,
                "SUPIE_DATA_DIR": str(data),
                "SUPIE_CONFIG": str(tmp / "none.yaml"),
                "SUPIE_MEETING__RETENTION": str(args.meetings + 100),
                "SUPIE_SERVER__IP": "127.0.0.1",
                "SUPIE_SERVER__HTTP_PORT": str(http_port),
                "SUPIE_SERVER__WS_PORT": str(ws_port),
                "SUPIE_SERVER__API_RATE_LIMIT": "0",
                "SUPIE_LOG__LEVEL": "WARNING",
            }
        )
        nc = await connect_nats(nats_srv.url, "bench-console")
        meeting_log, gateway_log = tmp / "meeting.log", tmp / "gateway.log"
        meeting = spawn("supie_meeting", env, meeting_log)
        gateway = spawn("supie_gateway", env, gateway_log)
        procs += [meeting, gateway]
        await wait_healthy(nc, "meeting", meeting, meeting_log)
        await wait_healthy(nc, "gateway", gateway, gateway_log)
        base = f"http://127.0.0.1:{http_port}"
        http = httpx.AsyncClient(base_url=base, timeout=30)
        await wait_indexed(http, args.home_meetings)

        pw_cm = None
        browser = None
        if chromium:
            from playwright.async_api import async_playwright

            pw_cm = async_playwright()
            pw = await pw_cm.__aenter__()
            browser = await pw.chromium.launch(executable_path=chromium, headless=True)
            result.update(await bench_home(browser, base, args.renders))
            result.update(
                await bench_live(browser, base, f"ws://127.0.0.1:{ws_port}/supie/v1/", nc, 100)
            )
        else:
            result.update(
                home_first_render_p50_ms=None, live_delay_p99_ms=None, browser="none found"
            )

        # Up to --meetings archived, then the meeting service restarted: it indexes the rest
        # at start (what a replica does after a restart).
        seed_archive(data, args.meetings - args.home_meetings, args.home_meetings, rng)
        meeting.terminate()
        meeting.wait(30)
        meeting = spawn("supie_meeting", env, meeting_log)
        procs.append(meeting)
        await wait_healthy(nc, "meeting", meeting, meeting_log)
        result["index_catch_up_s"] = round(await wait_indexed(http, args.meetings), 1)
        result["archived_meetings"] = args.meetings
        result.update(await bench_search(http, args.queries, rng))
        result["wall_s"] = round(time.monotonic() - t0, 1)
        if browser is not None and pw_cm is not None:
            await browser.close()
            await pw_cm.__aexit__(None, None, None)
        await http.aclose()
        await nc.drain()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        nats_srv.stop()
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["goals_met"] = {
        "search_p99_lt_50ms": result["search_p99_ms"] < 50,
        "live_p99_lt_300ms": (result.get("live_delay_p99_ms") or 1e9) < 300,
        "home_p50_lt_1s": (result.get("home_first_render_p50_ms") or 1e9) < 1000,
        "home_max_lt_1s": (result.get("home_first_render_max_ms") or 1e9) < 1000,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meetings", type=int, default=10_000)
    parser.add_argument("--home-meetings", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--renders", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
