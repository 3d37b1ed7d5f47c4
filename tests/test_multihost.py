"""Any host serves any meeting (issue 16 item 4), on three test hosts made of network namespaces
(tests/fixtures_netns.py):

    host 1: nats n1, gateway, meeting      host 2: nats n2, gateway, meeting
    host 3: nats n3, valkey, asr, webhook  the test: badges on both gateways, webhook receiver

The NATS nodes form one cluster; every Supie stream has 3 replicas (``nats.stream_replicas``),
and so has the archive (``meeting.archive.backend: nats``, JetStream Object Store + KV): both
meeting replicas share it, so either gateway serves any meeting. Badges on both gateways hold
meetings with real speech; mid-meeting the NATS node leading the events stream is SIGKILLed,
then one meeting replica. Every meeting must be finalized once (one summary on the badge, one
finalize event), archived once (one index entry, one metrics line), delivered once to the webhook
receiver (verified signature), and keep every transcript segment spoken. Prints its figures as
one JSON line."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pytest
from supie_common.audio import OpusEncoder
from supie_common.contracts import MeetingFinalized, Streams, Subjects, decode
from supie_common.device_client import DeviceClient
from supie_common.embedded import die_with_parent, valkey_server_binary, wait_for_port
from supie_common.webhooks import verify
from supie_meeting.archive_nats import NatsArchive
from supie_webhook.receiver import ReceivedRequest, WebhookReceiver

from tests.fixtures_cluster import NatsCluster
from tests.fixtures_netns import NetnsLab

_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", Path(__file__).parent / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)

SECRET = "whsec_c3VwaWUtbXVsdGlob3N0LXRlc3Qtc2VjcmV0"
BADGES_PER_GATEWAY = 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
]

AT_FINALIZE = pytest.param("finalize")


class HostProcess:
    """A service (``python -m <module>``) run on one lab host."""

    def __init__(self, lab: NetnsLab, host: int, argv: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                lab.wrap(host, argv),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _utterances() -> list[np.ndarray]:
    out = []
    for name in ("meeting_us", "schedule_gb"):
        pcm = speech.samples(name)
        out += [pcm[max(0, s - 4800) : e + 4800] for s, e in speech.sentence_spans(pcm)]
    return out


def _references() -> list[str]:
    refs = speech.references()
    return refs["meeting_us"] + refs["schedule_gb"]


def _device_id() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


async def _until(pred: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")


async def _until_async(call: Any, within: float, what: str) -> Any:
    """The first truthy result of ``await call()``; errors count as not yet."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            value = await call()
        except Exception:
            value = None
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")


async def _finalized_events(js: Any, ids: set[str]) -> dict[str, int]:
    """How many ``meeting.finalized`` events the events stream holds per meeting."""
    counts = dict.fromkeys(ids, 0)
    sub = await js.subscribe(
        Subjects.MEETING_FINALIZED, stream=Subjects.EVENTS_STREAM, ordered_consumer=True
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=3)
            except TimeoutError:
                return counts
            sid = decode(MeetingFinalized, msg.data).session_id
            if sid in counts:
                counts[sid] += 1
    finally:
        await sub.unsubscribe()


async def _speak(dev: DeviceClient, pcm: np.ndarray) -> None:
    await dev.listen("start", mode="manual")
    await dev.stream_packets(OpusEncoder(frame_ms=60).encode_all(pcm), frame_ms=20)
    await asyncio.sleep(0.4)  # past the gateway's listen debounce
    await dev.listen("stop")


def _replicas(info: Any) -> int:
    """A stream's current replicas: its leader and every follower that is caught up."""
    cluster = info.cluster
    if cluster is None or not cluster.leader:
        return 0
    return 1 + sum(1 for r in cluster.replicas or [] if r.current and not r.offline)


@pytest.mark.parametrize("meeting_kill", ["mid-meeting", AT_FINALIZE])
async def test_meetings_survive_a_nats_leader_and_a_meeting_replica_dying(
    netns_lab: NetnsLab, tmp_path: Path, meeting_kill: str
) -> None:
    """``meeting_kill``: the meeting replica dies between two utterances (``mid-meeting``), or
    30 ms after the badges sent their finalize (``finalize``)."""
    lab = netns_lab
    procs: list[HostProcess] = []
    nats_cluster = NatsCluster(
        tmp_path / "nats",
        hosts=[lab.ip(i) for i in range(3)],
        wrap=lab.wrap,
        ports=[(4222, 6222, 8222)] * 3,  # every host has its own port space
    )
    received: list[ReceivedRequest] = []

    async def on_webhook(req: ReceivedRequest) -> int:
        received.append(req)
        return 200

    receiver = WebhookReceiver(on_webhook, host=lab.client_ip, port=0)
    nc = None
    try:
        await asyncio.to_thread(nats_cluster.start)
        valkey_dir = tmp_path / "valkey"
        valkey_dir.mkdir()
        valkey = HostProcess(
            lab,
            2,
            [valkey_server_binary(), "--bind", lab.ip(2), "--port", "6379", "--dir",
             str(valkey_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--protected-mode", "no"],
            dict(os.environ),
            tmp_path / "valkey.log",
        )  # fmt: skip
        procs.append(valkey)
        await asyncio.to_thread(wait_for_port, lab.ip(2), 6379, 15)
        await receiver.__aenter__()

        nc = await nats.connect(servers=nats_cluster.urls, max_reconnect_attempts=-1)
        js = nc.jetstream(timeout=5)

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
        data_dirs = [tmp_path / f"host{i + 1}" / "data" for i in range(3)]  # nothing shared

        def env_for(host: int) -> dict[str, str]:
            seeds = [host] + [h for h in range(3) if h != host]  # its own node first
            return {
                **base_env,
                "SUPIE_NATS__URL": ",".join(f"nats://{lab.ip(h)}:4222" for h in seeds),
                "SUPIE_NATS__STREAM_REPLICAS": "3",
                "SUPIE_MEETING__ARCHIVE__BACKEND": "nats",
                "SUPIE_MEETING__ARCHIVE__REPLICAS": "3",
                "SUPIE_REDIS__URL": f"redis://{lab.ip(2)}:6379/0",
                "SUPIE_DATA_DIR": str(data_dirs[host]),
                "SUPIE_CONFIG": str(tmp_path / "none.yaml"),
                "SUPIE_SERVER__WS_PORT": "8004",
                "SUPIE_SERVER__HTTP_PORT": "8003",
                "SUPIE_MEETING__WEBHOOK__URL": f"http://{lab.client_ip}:{receiver.port}/hook",
                "SUPIE_MEETING__WEBHOOK__SECRET": SECRET,
                "SUPIE_ASR__CPU_THREADS": "2",
                "PYTHONUNBUFFERED": "1",
            }

        layout = {
            "gateway-1": (0, "supie_gateway"),
            "meeting-1": (0, "supie_meeting"),
            "gateway-2": (1, "supie_gateway"),
            "meeting-2": (1, "supie_meeting"),
            "asr": (2, "supie_asr"),
            "webhook": (2, "supie_webhook"),
        }
        services: dict[str, HostProcess] = {}
        for name, (host, module) in layout.items():
            services[name] = HostProcess(
                lab, host, [sys.executable, "-m", module], env_for(host), tmp_path / f"{name}.log"
            )
            procs.append(services[name])
        for name, svc in services.items():
            kind = name.split("-")[0]
            await _until(
                lambda svc=svc, kind=kind: (
                    f"{kind} started as" in svc.log() or svc.proc.poll() is not None
                ),
                180,
                f"{name} to start",
            )
            assert svc.proc.poll() is None, f"{name} exited:\n{svc.log()[-3000:]}"

        # The services made their streams, the archive's included, with 3 replicas each.
        streams = [
            Subjects.EVENTS_STREAM,
            Streams.TRANSCRIPTS,
            "OBJ_supie_meetings",
            "KV_supie_meetings_index",
            "KV_supie_meetings_metrics",
        ]

        async def replicated() -> bool:
            try:
                infos = [await js.stream_info(name) for name in streams]
            except Exception:
                return False
            return all(_replicas(i) == 3 for i in infos)

        deadline = time.monotonic() + 60
        while not await replicated():
            assert time.monotonic() < deadline, "streams never had 3 current replicas"
            await asyncio.sleep(0.5)

        utterances = _utterances()
        refs = _references()
        gateways = [f"ws://{lab.ip(0)}:8004/supie/v1/", f"ws://{lab.ip(1)}:8004/supie/v1/"]
        badges = [
            DeviceClient(gateways[g], _device_id())
            for g in range(2)
            for _ in range(BADGES_PER_GATEWAY)
        ]
        for dev in badges:
            await dev.connect()
            await dev.hello()
            await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
            await dev.expect("mode", status="ok", state="start", timeout=20)

        async def speak_all(k: int) -> None:
            await asyncio.gather(*(_speak(dev, utterances[k]) for dev in badges))

        figures: dict[str, Any] = {}
        await speak_all(0)
        await speak_all(1)
        info = await js.stream_info(Subjects.EVENTS_STREAM)
        leader = info.cluster.leader if info.cluster else None
        assert leader, info
        killed_at = time.monotonic()
        await asyncio.to_thread(nats_cluster.kill, leader)
        figures["events_leader_killed"] = leader
        await speak_all(2)
        await speak_all(3)
        if meeting_kill == "mid-meeting":
            services["meeting-1"].kill()
        await speak_all(4)

        def finals(dev: DeviceClient) -> list[dict[str, Any]]:
            return [
                item
                for m in dev.received
                if m.get("type") == "meeting" and m.get("phase") == "transcript"
                if not m.get("final")
                for item in m.get("items", [])
            ]

        await asyncio.gather(
            *(
                _until(lambda d=d: len(finals(d)) >= len(utterances), 120, "transcript pushes")
                for d in badges
            ),
            return_exceptions=True,
        )
        for dev in badges:
            await dev.send_json({"type": "meeting", "phase": "finalize"})
        if meeting_kill == "finalize":
            await asyncio.sleep(0.03)
            services["meeting-1"].kill()
        figures["meeting_replica_killed"] = f"meeting-1 {meeting_kill}"
        results = await asyncio.gather(
            *(dev.expect("meeting", phase="summary", timeout=75) for dev in badges),
            return_exceptions=True,
        )
        missing = [
            dev.device_id for dev, r in zip(badges, results, strict=True) if not isinstance(r, dict)
        ]
        acked = [
            any(m.get("type") == "meeting" and m.get("phase") == "finalize" for m in dev.received)
            for dev in badges
        ]
        assert not missing, (
            f"{len(missing)} of {len(badges)} meetings never got a summary {missing}; "
            f"finalize acknowledged: {acked}"
        )
        summaries = [r for r in results if isinstance(r, dict)]
        figures["kill_to_all_summaries_s"] = round(time.monotonic() - killed_at, 1)
        ids = [s["sessionId"] for s in summaries]
        assert len(set(ids)) == len(badges)

        # Finalized once: one summary per badge, even a few seconds later.
        await asyncio.sleep(5)
        for dev, meeting_id in zip(badges, ids, strict=True):
            got = [
                m
                for m in dev.received
                if m.get("type") == "meeting"
                and m.get("phase") == "summary"
                and m.get("sessionId") == meeting_id
            ]
            assert len(got) == 1, f"{meeting_id}: {len(got)} summaries"

        # Archived once, in the shared archive, with every segment spoken; either gateway
        # serves it (its host's meeting replica reads what the other wrote).
        archive = await NatsArchive.open(nc, replicas=3)
        lost = 0
        for meeting_id in ids:
            record = await _until_async(lambda m=meeting_id: archive.read_main(m), 60, "archive")
            texts = [seg.text for seg in record.inline_segments()]
            for k in range(record.shard_count):
                shard = await archive.read_shard(meeting_id, k)
                assert shard is not None, (meeting_id, k)
                texts += [seg.text for seg in shard.segments]
            lost += max(0, len(utterances) - len(texts))
            assert speech.wer(" ".join(refs), " ".join(texts)) <= 0.35, texts
        figures["segments_lost"] = lost
        assert lost == 0
        index = [e.session_id for e in await archive.read_index()]
        assert sorted(index) == sorted(ids), index
        metrics = await archive.metrics_lines()
        per_meeting = {m: sum(f"sessionId={m}," in line for line in metrics) for m in ids}
        assert per_meeting == dict.fromkeys(ids, 1), (per_meeting, metrics)
        async with httpx.AsyncClient(timeout=10) as http:
            for meeting_id in ids:
                for host in (0, 1):
                    url = f"http://{lab.ip(host)}:8003/supie/meetings/{meeting_id}"
                    resp = await http.get(url)
                    assert resp.status_code == 200, (url, resp.text[:300])
                    assert resp.json()["data"]["sessionId"] == meeting_id
        events = await _finalized_events(js, set(ids))
        assert events == dict.fromkeys(ids, 1), events

        # Delivered once, signed.
        def deliveries() -> dict[str, int]:
            counts = dict.fromkeys(ids, 0)
            for req in received:
                payload = verify(req.body, req.headers, SECRET, scheme="both")
                sid = payload.get("sessionId")
                if sid in counts:
                    counts[sid] += 1
            return counts

        await _until(lambda: all(deliveries().values()), 120, "a webhook per meeting")
        await asyncio.sleep(3)
        assert deliveries() == dict.fromkeys(ids, 1), deliveries()
        figures.update(
            meetings=len(ids),
            archive="nats",
            finalized_events=sum(events.values()),
            webhooks=sum(deliveries().values()),
        )
        print(json.dumps({"test": "multihost", **figures}))
        for dev in badges:
            await dev.close()
    except BaseException:
        for p in procs:
            print(f"---- {p.log_path.name}\n{p.log()[-2500:]}")
        raise
    finally:
        if nc is not None:
            await nc.close()
        for p in reversed(procs):
            await asyncio.to_thread(p.stop)
        await asyncio.to_thread(nats_cluster.stop)
        await receiver.__aexit__(None, None, None)
