"""The web console end to end in a real headless Chromium (Playwright, the system's browser), on
a real stack: the gateway in process, the meeting and workflow services as processes, NATS and
Valkey from the session fixtures, badges simulated at the protocol level over WebSocket.

- a badge in a meeting -> the home page lists it -> its meeting page shows each new snippet and
  ASR final live (no reload) -> finalize from the page -> the summary appears (and reaches the
  badge); search finds the meeting by a word of its transcript (English and Chinese); each export
  format parses (WebVTT validated);
- the tasks page reflects a badge's change live, and the page's add / assign / complete reach
  the badge; the badges page lists it with its group and mode;
- with an API token: the login prompt, a wrong token refused, the right one kept in
  sessionStorage; a 429 shown and retried; a lost live connection shown and recovered;
- no console error on any page. Screenshots of each page go under the test's tmp dir (and
  ``$CONSOLE_SHOTS_DIR``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from supie_common.contracts import Transcript, new_id
from supie_common.device_client import DeviceClient


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


FIXTURES = Path(__file__).parent / "fixtures"
browser_support = _load("supie_tests_browser", FIXTURES / "browser.py")
vtt = _load("supie_tests_vtt", FIXTURES / "vtt.py")
CHROMIUM = browser_support.find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (install Debian's chromium: scripts/test-deps.sh, or set "
    "CHROMIUM_PATH)",
)
SUMMARY_LABELS = ["Title", "Duration", "Key points", "Decisions", "Actions", "Risks", "Next steps"]
FAST_API = {"api_rate_limit": 1000, "api_rate_burst": 1000}


def badge_id(prefix: str) -> str:
    raw = new_id()[:4]
    return f"{prefix}:{raw[:2]}:{raw[2:]}"


async def until(pred: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await pred() if asyncio.iscoroutinefunction(pred) else pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        await browser.close()


async def new_page(browser: Any, watch: Any | None = None) -> tuple[Any, Any]:
    context = await browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(20_000)
    watch = (watch or browser_support.PageWatch()).attach(page)
    return page, watch


async def services(spawn_service: Any, nc: NATS, *names: str) -> None:
    procs = [(spawn_service(f"supie_{n}"), n) for n in names]
    for proc, name in procs:
        await proc.wait_healthy(nc, name, timeout=60)


async def say_final(nc: NATS, dev: DeviceClient, meeting_id: str, text: str) -> None:
    """An ASR final exactly as the asr service publishes it (into the transcripts stream)."""
    from supie_gateway.transcripts import publish_transcript

    assert dev.session_id
    t = Transcript(
        device_id=dev.device_id,
        session_id=dev.session_id,
        gateway_id="asr-test",
        stream_id=f"s-{meeting_id}",
        utterance_id=f"s-{meeting_id}:{new_id()[:8]}",
        text=text,
        start_ms=0,
        end_ms=1500,
        meeting_id=meeting_id,
        source="asr",
        mode="meeting",
    )
    await publish_transcript(nc.jetstream(), t)


@pytest.mark.timeout(150)
async def test_meeting_live_finalize_search_export(
    make_gateway: Any, spawn_service: Any, nc: NATS, chromium: Any, tmp_path: Path
) -> None:
    await services(spawn_service, nc, "meeting", "workflow")
    gw = await make_gateway(server=FAST_API)
    base = gw.http_url
    page, watch = await new_page(chromium)
    http = httpx.AsyncClient(base_url=base, timeout=10)

    async with DeviceClient(gw.ws_url, badge_id("c0nsole1")) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        await dev.expect("mode", status="ok", state="start")

        async def active_id() -> str | None:
            items = (await http.get("/supie/meetings/active")).json()["data"]["items"]
            return next((m["sessionId"] for m in items if m["deviceId"] == dev.device_id), None)

        meeting_id = await until(active_id, 20, "the meeting in /supie/meetings/active")

        # Home lists the meeting in progress (and the badge online).
        started = time.monotonic()
        await page.goto(f"{base}/console/")
        row = page.locator(f'#active-table tr[data-session="{meeting_id}"]')
        await row.wait_for()
        assert time.monotonic() - started < 10  # generous: the bench measures it
        assert await row.locator(".pill.live").count() == 1
        await page.locator(f'#badges [data-device="{dev.device_id}"]').wait_for()
        assert (
            "meeting" in await page.locator(f'#badges [data-device="{dev.device_id}"]').inner_text()
        )
        # The segment count on the home page follows live.
        await dev.send_json(
            {
                "type": "meeting",
                "phase": "snippet",
                "items": [{"tag": "note", "text": "We reviewed the zebrafish budget for Q3"}],
            }
        )
        await row.locator(".segments").filter(has_text=re.compile(r"^1$")).wait_for()
        await browser_support.shoot(page, tmp_path, "home")

        # The meeting page: the transcript so far, then each new segment pushed live.
        await row.locator("a").click()
        await page.wait_for_url(f"**/console/meetings/{meeting_id}")
        transcript = page.locator("#transcript")
        await transcript.get_by_text("We reviewed the zebrafish budget for Q3").wait_for()
        await page.evaluate("window.__sameDocument = true")
        lines = [
            ("snippet", "Alice will prepare the launch checklist by Friday"),
            ("asr", "我们决定下周发布测试版本"),
            ("snippet", "The main risk is the vendor delay on hardware"),
            ("asr", "Next step is to schedule the design review"),
        ]
        for kind, text in lines:
            if kind == "snippet":
                await dev.send_json(
                    {
                        "type": "meeting",
                        "phase": "snippet",
                        "items": [{"tag": "note", "text": text}],
                    }
                )
            else:
                await say_final(nc, dev, meeting_id, text)
            await transcript.get_by_text(text).wait_for(timeout=15_000)
        assert await page.evaluate("window.__sameDocument === true")  # no reload happened
        assert await transcript.locator("li").count() == 5
        who = await transcript.locator("li .who").all_inner_texts()
        assert set(who) == {dev.device_id[:8]}
        await browser_support.shoot(page, tmp_path, "meeting-live")

        # Rename the speaker: the transcript shows the new label (kept in Redis).
        form = page.locator(f'#speakers form[data-speaker="{dev.device_id[:8]}"]')
        await form.locator("input:not([type=checkbox])").fill("Alice 王")
        await form.locator("button").click()
        await transcript.locator("li .who", has_text="Alice 王").first.wait_for()

        # Finalize from the page: the summary appears, and the badge gets it too.
        await page.locator("#finalize").click()
        summary = page.locator("#summary")
        await summary.wait_for(timeout=30_000)
        labels = await summary.locator("dt").all_inner_texts()
        assert labels == SUMMARY_LABELS
        badge_summary = await dev.expect("meeting", phase="summary", timeout=20)
        title = await summary.locator('dd[data-field="title"]').inner_text()
        assert title == badge_summary["title"]
        assert await transcript.locator("li").count() == 5
        assert "Alice 王" in await transcript.locator("li .who").first.inner_text()
        assert await page.locator("#pager").inner_text()
        await browser_support.shoot(page, tmp_path, "meeting-final")

    # Exports: every link of the page, each format parsed.
    hrefs = {
        await a.get_attribute("data-format"): await a.get_attribute("href")
        for a in await page.locator("#exports a[data-format]").all()
    }
    assert set(hrefs) == {"md", "txt", "vtt", "json"}
    got = {fmt: await http.get(str(href)) for fmt, href in hrefs.items()}
    assert all(r.status_code == 200 for r in got.values())
    md = got["md"].text
    assert got["md"].headers["content-type"].startswith("text/markdown")
    assert md.startswith(f"# {title}\n") and f"**Device:** {dev.device_id}" in md
    assert "## Decisions" in md and "## Next steps" in md and "**Alice 王:**" in md
    assert "[00:00:" in got["txt"].text and "我们决定下周发布测试版本" in got["txt"].text
    cues = vtt.parse_vtt(got["vtt"].text)
    assert [c.text for c in cues][-2:] == [t for _, t in lines][-2:]
    assert len(cues) == 5 and {c.voice for c in cues} == {"Alice 王"}
    body = json.loads(got["json"].text)
    assert body["sessionId"] == meeting_id and len(body["segments"]) == 5
    assert body["summary"]["title"] == title

    # Search from the home page: by an English word and by a Chinese one.
    await page.goto(f"{base}/console/")
    for word in ("zebrafish", "发布"):
        await page.locator("#search-q").fill(word)
        await page.locator("#search-form button[type=submit]").click()
        await page.locator(f'#search-results .hit[data-session="{meeting_id}"]').wait_for()
    assert "发布" in await page.locator("#search-results .snippet").first.inner_text()
    # The finalized meeting is in the recent list and no longer in progress.
    await page.locator(f'#recent-table tr[data-session="{meeting_id}"]').wait_for()
    assert await page.locator(f'#active-table tr[data-session="{meeting_id}"]').count() == 0
    await browser_support.shoot(page, tmp_path, "search")
    # The interface in Chinese (CJK fonts render; the choice is kept).
    await page.locator("#lang").click()
    await page.locator("h1", has_text="会议").wait_for()
    assert await page.locator("#search-form button[type=submit]").inner_text() == "搜索"
    await browser_support.shoot(page, tmp_path, "home-zh")
    await page.locator("#lang").click()

    # Import its actions into a group's task list from the meeting page.
    await page.goto(f"{base}/console/meetings/{meeting_id}")
    await page.locator("#import-form button").click()
    await page.locator("#import-result a").wait_for()
    await http.aclose()
    assert watch.errors == []


@pytest.mark.timeout(150)
async def test_tasks_and_badges_pages_live_both_ways(
    make_gateway: Any, spawn_service: Any, nc: NATS, chromium: Any, tmp_path: Path
) -> None:
    await services(spawn_service, nc, "workflow")
    gw = await make_gateway(server=FAST_API)
    base = gw.http_url
    group = f"t{new_id()[:7]}"
    page, watch = await new_page(chromium)

    async def snapshot_where(dev: DeviceClient, pred: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 20
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no snapshot passed"
            msg = await dev.expect("workflow", timeout=left, event="update")
            if "tasks" in msg and pred(msg["tasks"]):
                return list(msg["tasks"])

    async with DeviceClient(gw.ws_url, f"{group}:{new_id()[:6]}") as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "working"})
        await dev.expect("mode", status="ok", state="start")
        await dev.send_json(
            {
                "type": "workflow",
                "event": "update",
                "tasks": [{"id": "b1", "title": "Badge task 徽章任务", "priority": 1}],
            }
        )
        await snapshot_where(dev, lambda ts: any(t["id"] == "b1" for t in ts))

        await page.goto(f"{base}/console/tasks?groupKey={group}")
        row = page.locator('#task-table tr[data-task="b1"]')
        await row.wait_for()
        assert "徽章任务" in await row.inner_text()
        await page.locator(f'#groups [data-group="{group}"]').wait_for()

        # The badge completes it: the page shows it done without a reload.
        await dev.send_json({"type": "workflow", "event": "complete", "ids": ["b1"]})
        await page.locator('#task-table tr[data-task="b1"].task-done').wait_for()

        # The page adds one: the badge gets it in its snapshot.
        await page.locator("#new-title").fill("Console task 控制台")
        await page.locator("#new-priority").select_option("0")
        await page.locator("#add-form button").click()
        tasks = await snapshot_where(
            dev, lambda ts: any(t["title"] == "Console task 控制台" for t in ts)
        )
        added = next(t for t in tasks if t["title"] == "Console task 控制台")
        assert added["priority"] == 0 and added["status"] == "open"
        new_row = page.locator(f'#task-table tr[data-task="{added["id"]}"]')
        await new_row.wait_for()

        # Assign and complete from the page: the badge sees both.
        await new_row.locator("form.assign input").fill("bob")
        await new_row.locator("form.assign button").click()
        await snapshot_where(
            dev, lambda ts: any(t["id"] == added["id"] and t.get("owner") == "bob" for t in ts)
        )
        await new_row.locator("button.complete").click()
        await snapshot_where(
            dev, lambda ts: any(t["id"] == added["id"] and t["status"] == "done" for t in ts)
        )
        await page.locator(f'#task-table tr[data-task="{added["id"]}"].task-done').wait_for()
        await browser_support.shoot(page, tmp_path, "tasks")

        # The badges page: online, its group and its mode.
        await page.goto(f"{base}/console/devices")
        device_row = page.locator(f'#device-table tr[data-device="{dev.device_id}"]')
        await device_row.wait_for()
        text = await device_row.inner_text()
        assert group in text and "working" in text and "online" in text
        await browser_support.shoot(page, tmp_path, "badges")
    # It goes offline on the page once it disconnects.
    await page.locator(
        f'#device-table tr[data-device="{dev.device_id}"][data-online="0"]'
    ).wait_for()
    assert watch.errors == []


@pytest.mark.timeout(120)
async def test_login_token_rate_limit_and_lost_live_connection(
    make_gateway: Any, spawn_service: Any, nc: NATS, chromium: Any, tmp_path: Path
) -> None:
    await services(spawn_service, nc, "meeting")
    secret = "s3cret-" + new_id()[:8]
    gw = await make_gateway(
        server={"api_token": secret, "api_rate_limit": 1000, "api_rate_burst": 1000}
    )
    base = gw.http_url
    page, watch = await new_page(chromium)

    await page.goto(f"{base}/console/")
    await page.locator("#token").wait_for()
    await browser_support.shoot(page, tmp_path, "login")
    await page.locator("#token").fill("wrong")
    await page.locator("form.login button").click()
    await page.get_by_text("That token was refused.").wait_for()
    await page.locator("#token").fill(secret)
    await page.locator("form.login button").click()
    await (
        page.locator("#recent")
        .get_by_text("No finalized meeting yet.")
        .or_(page.locator("#recent-table"))
        .wait_for()
    )
    assert await page.evaluate("sessionStorage.getItem('supie.apiToken')") == secret
    # Another page of the same tab: no prompt, the token is kept.
    await page.goto(f"{base}/console/devices")
    await page.locator("#devices").wait_for()
    assert await page.locator("#token").count() == 0

    # The live connection lost (the gateway goes away) is shown, then recovers by itself.
    await page.goto(f"{base}/console/")
    await page.locator("#active").wait_for()
    port = gw.service.http_port
    await gw.service.stop()
    banner = page.locator(".banner")
    await banner.first.wait_for(timeout=20_000)
    assert "Live updates lost" in await banner.first.inner_text()
    await browser_support.shoot(page, tmp_path, "live-lost")
    await until(lambda: port_free(port), 30, f"port {port} released by the stopped gateway")
    gw2 = await make_gateway(
        server={
            "api_token": secret,
            "http_port": port,
            "api_rate_limit": 1000,
            "api_rate_burst": 1000,
        }
    )
    assert gw2.service.http_port == port
    await page.locator(".banner").first.wait_for(state="detached", timeout=30_000)
    # Reconnecting while the server was away logs network errors: those are expected here.
    lost = list(watch.errors)
    watch.errors.clear()

    # A 429 is shown plainly and retried until it goes through. The limit is per client
    # address: this test spends the bucket first (same 127.0.0.1), so the page's first requests
    # are refused whatever the machine's speed.
    limited = await make_gateway(
        server={"api_token": secret, "api_rate_limit": 1, "api_rate_burst": 4}
    )
    page2, watch2 = await new_page(chromium)
    watch2.allowed = ("429",)
    await page2.goto(f"{limited.http_url}/console/")
    # The sign-in form first: until it shows, the page may still clear a token it found refused.
    await page2.locator("#token").wait_for()
    await page2.evaluate(f"sessionStorage.setItem('supie.apiToken', {json.dumps(secret)})")
    async with httpx.AsyncClient(base_url=limited.http_url) as http:
        statuses = [
            (await http.get("/supie/meetings/recent", headers={"X-API-Token": secret})).status_code
            for _ in range(8)
        ]
    assert 429 in statuses, statuses
    await page2.reload()
    await page2.locator(".banner", has_text="Too many requests (429)").wait_for(timeout=20_000)
    await browser_support.shoot(page2, tmp_path, "rate-limited")
    await (
        page2.locator("#badges")
        .get_by_text("No badge online.")
        .or_(page2.locator("#badges .group"))
        .wait_for(timeout=60_000)
    )
    assert all("Failed to load resource" in e or "net::" in e for e in lost), lost
    assert watch.errors == [] and watch2.errors == []


@pytest.mark.timeout(120)
async def test_long_meeting_transcript_is_paged(
    make_gateway: Any, spawn_service: Any, nc: NATS, chromium: Any, tmp_path: Path
) -> None:
    bus = _load("supie_tests_meeting_bus", FIXTURES / "meeting_bus.py")
    await services(spawn_service, nc, "meeting")
    gw = await make_gateway(server=FAST_API)
    badge = await bus.Badge(nc, f"longmtg:{new_id()[:6]}").listen()
    m = await badge.start()
    for i in range(130):  # routed finals, as the mode router sends them
        await badge.say(f"long meeting line {i}")
    await badge.finalize()
    await bus.finalized_events(nc, {m})

    page, watch = await new_page(chromium)
    await page.goto(f"{gw.http_url}/console/meetings/{m}")
    transcript = page.locator("#transcript")
    await page.locator("#summary").wait_for()
    await transcript.get_by_text("long meeting line 99", exact=True).wait_for()
    assert await transcript.locator("li").count() == 100
    pager = page.locator("#pager")
    assert "1–100 / 130" in await pager.inner_text()
    await pager.get_by_role("button", name="Next").click()
    await transcript.get_by_text("long meeting line 129", exact=True).wait_for()
    assert await transcript.locator("li").count() == 30
    assert "101–130 / 130" in await pager.inner_text()
    assert await pager.get_by_role("button", name="Next").is_disabled()
    await pager.get_by_role("button", name="Previous").click()
    await transcript.get_by_text("long meeting line 0", exact=True).wait_for()
    await browser_support.shoot(page, tmp_path, "meeting-paged")
    await badge.close()
    assert watch.errors == []
