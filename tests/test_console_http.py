"""The console's HTTP side without a browser, on a real gateway: the static files (security
headers, ETag revalidation, every module the shell preloads is served, nothing from another
origin), the session probe, the token on the API and on the live stream, the live stream's
topics (bad ones refused by name) and its events fed from the bus."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
from nats.aio.client import Client as NATS
from supie_common.contracts import MeetingStateChanged, Subjects, encode, new_id


class Events:
    """The events of one Server-Sent Events response, read as they come."""

    def __init__(self, resp: httpx.Response) -> None:
        self.lines = resp.aiter_lines()

    async def next(self, want: int = 1, within: float = 20.0) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        name = ""

        async def read() -> None:
            nonlocal name
            async for line in self.lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if len(events) >= want:
                        return

        await asyncio.wait_for(read(), within)
        return events


async def test_static_files_headers_and_preloads(make_gateway: Any) -> None:
    gw = await make_gateway()
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
        shell = await http.get("/console/")
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in shell.headers["content-security-policy"]
        assert shell.headers["x-content-type-options"] == "nosniff"
        for path in ("/console/meetings/abc", "/console/tasks", "/console/devices"):
            assert (await http.get(path)).text == shell.text  # one shell, routed in the page
        assert (await http.get("/console", follow_redirects=False)).status_code == 308
        refs = re.findall(r'<(?:link|script)[^>]*?(?:href|src)="([^"]+)"', shell.text)
        assert refs and all(r.startswith("/console/static/") for r in refs)  # no CDN
        for ref in refs:
            resp = await http.get(ref)
            assert resp.status_code == 200, ref
            if ref.endswith(".js"):
                assert resp.headers["content-type"].startswith("text/javascript")
                for dep in re.findall(r'from "(\.[^"]+)"', resp.text):  # imports resolve
                    url = httpx.URL(f"{gw.http_url}{ref}").join(dep)
                    assert (await http.get(str(url))).status_code == 200, (ref, dep)
        etag = (await http.get("/console/static/app.css")).headers["etag"]
        again = await http.get("/console/static/app.css", headers={"If-None-Match": etag})
        assert again.status_code == 304
        missing = await http.get("/console/static/nope.js")
        assert missing.status_code == 404 and missing.json()["success"] is False
        assert (await http.get("/console/static/../pages.py")).status_code == 404


async def test_session_probe_and_token_on_api_and_live(make_gateway: Any) -> None:
    secret = "tok-" + new_id()[:8]
    gw = await make_gateway(server={"api_token": secret})
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
        assert (await http.get("/console/")).status_code == 200  # the pages are public
        probe = (await http.get("/console/session")).json()
        assert probe == {"tokenRequired": True, "authorized": False}
        wrong = await http.get("/console/session", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 200 and wrong.json()["authorized"] is False
        right = await http.get("/console/session", headers={"Authorization": f"Bearer {secret}"})
        assert right.json() == {"tokenRequired": True, "authorized": True}
        assert secret not in right.text
        assert (await http.get("/supie/devices")).status_code == 401
        assert (await http.get("/console/live", params={"topics": "devices"})).status_code == 401
        ok = await http.get("/supie/devices", headers={"Authorization": f"Bearer {secret}"})
        assert ok.status_code == 200 and ok.json()["success"] is True
        async with http.stream(
            "GET", "/console/live", params={"topics": "devices", "token": secret}
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            ((name, hello),) = await Events(resp).next()
            assert name == "hello" and hello["topics"] == ["devices"]


async def test_live_topics_and_events_from_the_bus(make_gateway: Any, nc: NATS) -> None:
    gw = await make_gateway()
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
        for topics, word in [
            (None, "required"),
            ("meetings,nonsense", "nonsense"),
            ("meeting:../x", "meeting:../x"),
            (",".join(["devices"] * 9), "at most"),
        ]:
            params = {"topics": topics} if topics is not None else {}
            bad = await http.get("/console/live", params=params)
            assert bad.status_code == 400 and word in bad.json()["error"]
        mine, other = new_id(), new_id()
        async with http.stream(
            "GET", "/console/live", params={"topics": f"meeting:{mine}"}
        ) as resp:
            stream = Events(resp)
            events = [await stream.next()]
            for m in (other, mine):
                await nc.publish(
                    Subjects.MEETING_STATE_CHANGED,
                    encode(MeetingStateChanged(meeting_id=m, device_id="d1", status="finalizing")),
                )
            await nc.publish(Subjects.MEETING_STATE_CHANGED, b"{not json")  # ignored
            events.append(await stream.next())
        ((_, hello),) = events[0]
        ((name, state),) = events[1]
        assert hello["topics"] == [f"meeting:{mine}"]
        assert name == "meeting" and state["meeting_id"] == mine and state["status"] == "finalizing"
