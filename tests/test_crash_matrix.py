"""Issue 11's crash matrix, on a real ``supie up`` stack (gateway, asr, meeting, webhook, and the
embedded nats-server and valkey-server, each restarted by the supervisor when it dies):

for each of the six processes x {mid-stream, finalize +0 ms, finalize +50 ms}, one badge (a
firmware-exact :class:`DeviceClient` that reconnects when its socket drops and sends a finalize
again until it is acknowledged) holds a meeting: snippets, the three sentences of
``meeting_us.wav`` in manual listen mode, a finalize; the process is SIGKILLed mid-stream (half
way through the second sentence) or right when / 50 ms after the finalize is sent. Then:

- the meeting was finalized exactly once (one commit, one ``meeting.finalized`` event, one entry
  in the archive index);
- one summary everywhere: every summary frame the badge got, the API's archived meeting, the
  stored one and every webhook delivery carry the same seven fields;
- the webhook was delivered, signed, under one ``webhook-id`` (at least once: repeats dedupe);
- every snippet acknowledged to the badge is in the archived transcript;
- the archived ASR text matches the fixture within a WER bound.

The badge resumes its audio from the first frame it could not send after a reconnect (a real
badge loses what the microphone hears while it reconnects, and a person repeats it; resuming
keeps the WER about what the *server* lost). Two bounds: the whole archived ASR text within WER
0.2 of the fixture (the clean run's bound), and each fixture sentence within 0.35 of its
best-matching stretch of it. The second is what catches a lost half sentence (0.2 of the whole
is 6 words, most of a sentence); it is looser than the first because a kill mid-utterance may cut
a sentence in two utterances (the part the dead gateway had, flushed by the asr, then the rest on
the new stream), and whisper-tiny transcribes half a sentence without its context less well (in
runs: "A new release is planned." + "for the end of the month.": 1 of 11 words).

Each case prints one JSON line (``crash case: {...}``) and the last one a table of the matrix.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import redis.asyncio as aioredis
from supie_common.audio import OpusEncoder
from supie_common.bus import connect_nats
from supie_common.device_client import DeviceClient
from supie_common.embedded import free_port
from supie_common.webhooks import WebhookVerificationError, verify


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


HERE = Path(__file__).parent
speech = _load("speech_fixtures", HERE / "fixtures" / "speech" / "speech.py")
bus = _load("supie_tests_meeting_bus", HERE / "fixtures" / "meeting_bus.py")

SECRET = "crash-matrix-" + uuid.uuid4().hex[:12]
WER_BOUND = 0.2  # the whole text, as on a clean run (tests/test_meeting_e2e.py)
SENTENCE_BOUND = 0.35  # each sentence, against its best-matching stretch of the archive
SPEED = 2.0  # audio sent at twice the microphone's pace
SEVEN = ("title", "duration", "bullets", "decisions", "actions", "risks", "nextSteps")
PROCESSES = {  # matrix name -> (what its command line contains, its name in supie up's output)
    "gateway": ("supie_gateway", "gateway"),
    "asr": ("supie_asr", "asr"),
    "meeting": ("supie_meeting", "meeting"),
    "webhook": ("supie_webhook", "webhook"),
    "nats-server": ("nats-server", "nats-server"),
    "valkey-server": ("valkey-server", "valkey-server"),
}
TIMINGS = ("mid-stream", "finalize +0 ms", "finalize +50 ms")
RESULTS: list[dict[str, Any]] = []

# Short leases and timeouts, so that a takeover takes seconds (every value the config allows).
CONFIG = """\
meeting:
  lease_ms: 1500
  finalize_lock_ms: 1500
  scan_interval_ms: 200
  transcript_push_interval_ms: 3000
  webhook:
    url: {url}
    secret: {secret}
webhook:
  ack_wait_s: 5
"""


# -- the webhook receiver --------------------------------------------------------------------
class _Sink(BaseHTTPRequestHandler):
    deliveries: list[dict[str, Any]] = []  # noqa: RUF012 - one receiver per module
    bad: list[str] = []  # noqa: RUF012

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            payload = verify(body, dict(self.headers.items()), SECRET, scheme="both")
        except WebhookVerificationError as exc:
            _Sink.bad.append(str(exc))
        else:
            _Sink.deliveries.append({"id": self.headers["webhook-id"], "payload": payload})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


# -- the stack ---------------------------------------------------------------------------------
class Stack:
    """``supie up --services gateway,asr,meeting,webhook``; its output collected by a thread."""

    def __init__(self, tmp: Path, webhook_url: str) -> None:
        self.data_dir = tmp / "data"
        self.ws_port, self.http_port = free_port(), free_port()
        self.nats_port, self.valkey_port = free_port(), free_port()
        config = tmp / "config.yaml"
        config.write_text(CONFIG.format(url=webhook_url, secret=SECRET))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["SUPIE_ASR__CPU_THREADS"] = "2"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supie_cli", "up",
             "--services", "gateway,asr,meeting,webhook",
             "--ws-port", str(self.ws_port), "--http-port", str(self.http_port),
             "--nats-port", str(self.nats_port), "--valkey-port", str(self.valkey_port),
             "--data-dir", str(self.data_dir), "--config", str(config)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/supie/v1/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_line(self, pred: Callable[[str], bool], timeout: float, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if pred(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"not seen in {timeout}s; output:\n{''.join(self.lines[-80:])}")

    def child_pid(self, needle: str) -> int:
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if needle in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    return p.pid
            except psutil.Error:
                continue
        raise AssertionError(f"no child matching {needle!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    up = Stack(tmp_path_factory.mktemp("crash"), f"http://127.0.0.1:{server.server_address[1]}/h")
    try:
        up.wait_line(lambda line: line.startswith("Supie is ready"), 120)
        yield up
    finally:
        up.stop()
        server.shutdown()
        log = up.data_dir.parent / "up.log"
        log.write_text("".join(up.lines))
        print(f"\nsupie up output: {log}")
        if RESULTS:
            print("\n" + _table(RESULTS))


# -- the badge -----------------------------------------------------------------------------------
class Badge:
    """One badge across reconnects: what every connection received, in order."""

    def __init__(self, url: str) -> None:
        raw = uuid.uuid4().hex[:12]
        self.url = url
        self.device_id = ":".join(raw[i : i + 2] for i in range(0, 12, 2))
        self.clients: list[DeviceClient] = []
        self.listening = False
        self.connected = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def received(self) -> list[dict[str, Any]]:
        return [m for c in self.clients for m in c.received]

    @property
    def reconnects(self) -> int:
        return max(0, len(self.clients) - 1)

    async def _connect_once(self) -> DeviceClient:
        dev = DeviceClient(self.url, self.device_id)
        await dev.connect()
        try:
            await dev.hello(timeout=10)
        except BaseException:
            await dev.close()
            raise
        return dev

    async def _connect(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                dev = await self._connect_once()
            except Exception:  # refused while the gateway restarts, or dropped at once
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
                continue
            self.clients.append(dev)
            if self.listening:  # the firmware opens its audio channel again
                try:
                    await dev.listen("start", mode="manual")
                except Exception:
                    continue
            self.connected.set()
            return

    async def start(self) -> None:
        await self._connect()
        self._keeper = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await self.clients[-1].closed.wait()
            self.connected.clear()
            await self._connect()

    async def send(self, msg: dict[str, Any]) -> None:
        while True:
            await asyncio.wait_for(self.connected.wait(), 120)
            try:
                await self.clients[-1].send_json(msg)
                return
            except Exception:
                self.connected.clear()
                await asyncio.sleep(0.05)

    async def send_audio(self, packet: bytes, ts: int) -> None:
        while True:
            await asyncio.wait_for(self.connected.wait(), 120)
            try:
                await self.clients[-1].send_audio(packet, timestamp_ms=ts)
                return
            except Exception:
                self.connected.clear()
                await asyncio.sleep(0.05)

    def meeting_msgs(self, phase: str, **match: Any) -> list[dict[str, Any]]:
        return [
            m
            for m in self.received
            if m.get("type") == "meeting"
            and m.get("phase") == phase
            and all(m.get(k) == v for k, v in match.items())
        ]

    async def wait_for(self, pred: Callable[[], Any], within: float, what: str) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.device_id}: timed out waiting for {what}")

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        for c in self.clients:
            await c.close()


async def _speak(badge: Badge, pcm: np.ndarray, on_half: Callable[[], Any] | None = None) -> None:
    packets = OpusEncoder(frame_ms=60).encode_all(pcm)
    badge.listening = True
    await badge.send({"type": "listen", "state": "start", "mode": "manual"})
    start = time.monotonic()
    for i, packet in enumerate(packets):
        delay = start + i * 0.06 / SPEED - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_half is not None and i == len(packets) // 2:
            on_half()
        await badge.send_audio(packet, i * 60)
    await asyncio.sleep(0.4)  # past the gateway's listen debounce
    badge.listening = False
    await badge.send({"type": "listen", "state": "stop"})


async def _snippet(badge: Badge, text: str, acked: set[str], timeout: float = 60) -> None:
    """Send one snippet; once its ack says it was stored, it counts as acknowledged. Sent again
    (like the firmware) when the socket dropped before the ack."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = len(badge.clients)
        seen = len(badge.meeting_msgs("snippet"))
        await badge.send(
            {"type": "meeting", "phase": "snippet", "items": [{"tag": "note", "text": text}]}
        )
        while time.monotonic() < deadline and len(badge.clients) == conn:
            acks = badge.meeting_msgs("snippet")[seen:] if len(badge.clients) == conn else []
            if acks:
                ack = acks[0]
                if ack.get("status") == "ok" and (ack.get("accepted") or ack.get("duplicates")):
                    acked.add(text)
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"snippet {text!r} never answered")


def _sentence_error(sentence: str, text: str) -> float:
    """WER of ``sentence`` against the stretch of ``text`` that matches it best (edit distance
    with a free start and end in ``text``)."""
    ref, hyp = speech.normalise(sentence).split(), speech.normalise(text).split()
    row = [0] * (len(hyp) + 1)  # a match may start anywhere in the text
    for i, r in enumerate(ref, 1):
        prev_diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(row[j] + 1, row[j - 1] + 1, prev_diag + (r != h))
            prev_diag, row[j] = row[j], cur
    return min(row) / len(ref)  # ... and end anywhere


def _heard_all(sentences: list[str], text: str) -> bool:
    return speech.wer(" ".join(sentences), text) <= WER_BOUND and all(
        _sentence_error(x, text) <= SENTENCE_BOUND for x in sentences
    )


def _summary_of(frame: dict[str, Any]) -> dict[str, Any]:
    return {k: frame.get(k) for k in SEVEN}


def _asr_text(segments: list[dict[str, Any]]) -> str:
    return " ".join(s["text"] for s in segments if s.get("tag") != "note")


async def _api_json(http: httpx.AsyncClient, path: str, within: float = 90, **params: Any) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            resp = await http.get(path, params=params)
            last = resp.status_code, resp.text[:300]
            if resp.status_code == 200:
                return resp.json()["data"]
        except httpx.HTTPError as exc:
            last = repr(exc)
        await asyncio.sleep(0.3)
    raise AssertionError(f"GET {path} never answered 200: {last}")


async def _archived_transcript(http: httpx.AsyncClient, m: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = await _api_json(http, f"/supie/meetings/{m}/transcript", offset=offset, limit=200)
        items += page["items"]
        offset = page.get("nextOffset")
    return items


async def _finalize(
    badge: Badge, m: str, kill: Callable[[], None] | None, delay_s: float
) -> tuple[dict[str, Any] | None, int]:
    """Send the finalize (and kill ``delay_s`` later) until it is acknowledged; a badge that
    missed the ack of a finalize that went through gets it again on its next try (idempotent),
    or NO_ACTIVE_MEETING once ``finalize_repeat_window_s`` has passed."""
    sends = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        conn = len(badge.clients)
        seen = len(badge.meeting_msgs("finalize"))
        await badge.send({"type": "meeting", "phase": "finalize"})
        sends += 1
        if kill is not None:
            if delay_s:
                await asyncio.sleep(delay_s)
            kill()
            kill = None
        answer_by = time.monotonic() + 40  # past the gateway's 30 s accept budget
        while time.monotonic() < answer_by and len(badge.clients) == conn:
            answers = [
                a for a in badge.meeting_msgs("finalize")[seen:] if a.get("sessionId") in (m, None)
            ]
            if answers:
                break
            await asyncio.sleep(0.05)
        else:
            continue  # the socket dropped or nothing came: send it again
        answer = answers[0]
        if "code" not in answer:
            return answer, sends
        if answer.get("code") == "NO_ACTIVE_MEETING":
            return None, sends
        await asyncio.sleep(1.0)  # UNAVAILABLE or RATE_LIMITED: later
    raise AssertionError("the finalize was never answered")


# nats-server restart mid-stream: core NATS drops the frames the gateway publishes while the asr's
# subscription is not yet back. The asr hands such a stream back (on its reconnect, and on any
# hole in the frame sequence) and the gateway replays from committed_seq: no sentence loses words.
CASES = [pytest.param(p, t, id=f"{p}-{t.replace(' ', '')}") for p in PROCESSES for t in TIMINGS]


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize(("process", "timing"), CASES)
async def test_crash_matrix(stack: Stack, process: str, timing: str) -> None:
    needle, name = PROCESSES[process]
    pcm = speech.samples("meeting_us")
    spans = speech.sentence_spans(pcm)
    sentences = speech.references()["meeting_us"]
    reference = " ".join(sentences)
    acked: set[str] = set()
    tag = uuid.uuid4().hex[:6]
    killed: dict[str, Any] = {}

    def kill() -> None:
        killed["line"] = len(stack.lines)
        killed["pid"] = pid = stack.child_pid(needle)
        killed["at"] = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        killed["watch"] = asyncio.get_running_loop().run_in_executor(
            None, stack.wait_line, lambda line: line.startswith(f"[up] {name} is back"), 90,
            killed["line"],
        )  # fmt: skip
        killed["watch"].add_done_callback(lambda _: killed.setdefault("back", time.monotonic()))

    badge = Badge(stack.ws_url)
    await badge.start()
    http = httpx.AsyncClient(base_url=stack.http_url, timeout=10)
    try:
        await badge.send({"type": "mode", "state": "start", "mode": "meeting"})
        ack = await badge.wait_for(
            lambda: next(
                (x for x in badge.received if x.get("type") == "mode" and x.get("sessionId")),
                None,
            ),
            60,
            "the meeting to start",
        )
        m = ack["sessionId"]
        await _snippet(badge, f"crash {tag} opening note", acked)
        for n, (start, end) in enumerate(spans):
            half = kill if timing == "mid-stream" and n == 1 else None
            await _speak(badge, pcm[max(0, start - 4800) : end + 4800], half)
            await _snippet(badge, f"crash {tag} note after sentence {n + 1}", acked)

        def pushed() -> str:
            seen: dict[tuple[int, str], str] = {}
            for push in badge.meeting_msgs("transcript", sessionId=m):
                for item in push["items"]:
                    if item.get("tag") != "note":
                        seen[(item["ts"], item["text"])] = item["text"]
            return " ".join(seen[k] for k in sorted(seen))

        # Finalize once everything said was transcribed, as a person would (or after 60 s).
        try:
            await badge.wait_for(lambda: _heard_all(sentences, pushed()), 60, "the transcript")
        except AssertionError:
            pass
        if timing == "mid-stream":
            fin_ack, sends = await _finalize(badge, m, None, 0)
        else:
            racing_from = len(badge.meeting_msgs("snippet"))
            await badge.send(  # racing the finalize: handed over before it, in order
                {"type": "meeting", "phase": "snippet",
                 "items": [{"tag": "note", "text": f"crash {tag} last word"}]}
            )  # fmt: skip
            delay = 0.05 if timing.endswith("+50 ms") else 0.0
            fin_ack, sends = await _finalize(badge, m, kill, delay)
        finalize_sent = time.monotonic()  # summary_s: from the answer to the summary
        summary = await badge.wait_for(
            lambda: next(
                (s for s in badge.meeting_msgs("summary", sessionId=m) if not s.get("checkpoint")),
                None,
            ),
            120,
            "the summary at the badge",
        )
        summary_s = time.monotonic() - finalize_sent
        await killed["watch"]  # the supervisor brought it back
        recovery_s = killed["back"] - killed["at"]
        if timing != "mid-stream":  # the racing snippet counts if its ack says it was stored
            racing = badge.meeting_msgs("snippet")[racing_from:]
            if any(a.get("accepted") or a.get("duplicates") for a in racing):
                acked.add(f"crash {tag} last word")

        detail = await _api_json(http, f"/supie/meetings/{m}")
        transcript = await _archived_transcript(http, m)
        archived_texts = {s["text"] for s in transcript}

        # Webhook: at least once, one id, one summary.
        hooks = await badge.wait_for(
            lambda: [d for d in _Sink.deliveries if d["payload"]["sessionId"] == m],
            120,
            "the webhook",
        )
        events = await _finalized_events(stack, m)
        await asyncio.sleep(2.0)  # late duplicates, if any, arrive now
        hooks = [d for d in _Sink.deliveries if d["payload"]["sessionId"] == m]
        commits, stored = await _stored(stack, m)
        index = json.loads((stack.data_dir / "meetings" / "index.json").read_text())
        indexed = sum(1 for e in index if e["sessionId"] == m)
        metrics = (stack.data_dir / "meetings" / "metrics.log").read_text()

        badge_summaries = [
            _summary_of(s)
            for s in badge.meeting_msgs("summary", sessionId=m)
            if not s["checkpoint"]
        ]
        everywhere = {
            json.dumps(s, sort_keys=True)
            for s in [
                *badge_summaries,
                _summary_of(detail["summary"]),
                _summary_of(stored),
                *(_summary_of(d["payload"]["summary"]) for d in hooks),
                *(_summary_of(e.summary.model_dump(by_alias=True)) for e in events),
            ]
        }
        wer = speech.wer(reference, _asr_text(transcript))
        per_sentence = [_sentence_error(x, _asr_text(transcript)) for x in sentences]
        figures = {
            "process": process,
            "timing": timing,
            "finalized": commits,
            "events": len(events),
            "indexed": indexed,
            "summaries": len(everywhere),
            "badge_summaries": len(badge_summaries),
            # "no active meeting": the ACK went down with the socket, the retry found it done
            "finalize_ack": "ack" if fin_ack is not None else "NO_ACTIVE_MEETING",
            "finalize_sends": sends,
            "archived": 1 if detail else 0,
            "webhooks": len({d["id"] for d in hooks}),
            "webhook_deliveries": len(hooks),
            "snippets_acked": len(acked),
            "snippets_archived": len(acked & archived_texts),
            "wer": round(wer, 3),
            "sentence_wer": [round(x, 2) for x in per_sentence],
            "reconnects": badge.reconnects,
            "recovery_s": round(recovery_s, 1),
            "summary_s": round(summary_s, 1),
        }
        RESULTS.append(figures)
        print("crash case:", json.dumps(figures))
        assert commits == 1 and len(events) == 1 and indexed == 1, figures
        assert f"sessionId={m}," in metrics
        assert len(everywhere) == 1, everywhere
        assert figures["webhooks"] == 1 and not _Sink.bad, (figures, _Sink.bad)
        assert acked <= archived_texts, sorted(acked - archived_texts)
        assert len(acked) >= len(spans) + 1, figures  # a snippet is never refused for good
        assert wer <= WER_BOUND, (wer, _asr_text(transcript))
        assert max(per_sentence) <= SENTENCE_BOUND, (per_sentence, _asr_text(transcript))
        assert summary["sourceSegments"] == len(transcript) == detail["segmentsCount"]
    finally:
        await http.aclose()
        await badge.close()


async def _finalized_events(stack: Stack, m: str) -> list[Any]:
    nc = await connect_nats(f"nats://127.0.0.1:{stack.nats_port}", "crash-matrix")
    try:
        return (await bus.finalized_events(nc, {m}, within=60, settle=1.0)).get(m, [])
    finally:
        await nc.drain()


async def _stored(stack: Stack, m: str) -> tuple[int, dict[str, Any]]:
    from supie_meeting.keys import MeetingKeys

    r = aioredis.Redis(port=stack.valkey_port, decode_responses=True)
    try:
        meta = await r.hgetall(MeetingKeys.meta(m))
        assert meta.get("status") == "finalized", meta
        record = json.loads(await r.get(MeetingKeys.summary(m)))
        return int(meta.get("commits") or 0), record["summary"]
    finally:
        await r.aclose()


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ("process", "timing", "finalized", "summaries", "archived", "webhooks",
            "snippets_acked", "snippets_archived", "wer", "sentence_wer", "finalize_ack",
            "recovery_s", "summary_s")  # fmt: skip
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r[c]) for c in cols) for r in rows]
    return "crash matrix:\n" + "\n".join(lines)


@pytest.mark.timeout(90)
async def test_a_summary_without_a_receipt_is_published_again(spawn_service: Any, nc: Any) -> None:
    """The summary is a core NATS message: one lost (NATS restarting) never reached a badge that
    stayed connected. Without a receipt it is published again, the same summary each time; once
    the receipt is back, no more."""
    await bus.replicas(spawn_service, nc, 1)
    badge = await bus.Badge(nc, receipts=False).listen()
    await badge.start()
    await badge.say("we agreed to ship the release on friday")
    await badge.finalize()
    await bus.until(lambda: len(badge.of("summary")) >= 2, 30, "the summary published again")
    first, second = badge.of("summary")[:2]
    assert first == second
    badge.receipts = True  # the next one is confirmed: the resends stop there
    await bus.until(lambda: len(badge.of("summary")) >= 3, 30, "one more resend")
    seen = len(badge.of("summary"))
    await asyncio.sleep(10.0)  # past the next resend delay (8 s after the 4 s one)
    assert len(badge.of("summary")) == seen
