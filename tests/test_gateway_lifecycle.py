"""Connection lifecycle (issue 6): mode-aware idle close in two layers, listen debounce, live
configuration, graceful shutdown. Timeouts are scaled down to fractions of a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from supie_common.audio import OpusEncoder
from supie_common.contracts import (
    AsrControl,
    ConfigUpdated,
    DeviceOutbound,
    Subjects,
    decode,
    encode,
)
from supie_common.device_client import DeviceClient

from .test_gateway_protocol import dev_id
from .test_gateway_support import Stack, eventually, stack, strict_frames  # noqa: F401

pytestmark = pytest.mark.usefixtures("strict_frames")

SILENCE = OpusEncoder().encode(np.zeros(960, dtype=np.int16))


def idle(threshold: float, **extra: object) -> dict[str, object]:
    server: dict[str, object] = {
        "close_connection_no_voice_time": threshold,
        "idle_mode_multiplier": 3.0,
        "hard_close_extra_s": 30.0,
        "hard_close_wait_s": 0.4,
        "idle_check_interval_s": 0.05,
    }
    server.update(extra)
    return {"server": server}


async def stream_silence_until_closed(
    dev: DeviceClient, limit_s: float, ping_at: float | None = None
) -> float:
    """Send silent 60 ms frames (a badge in a quiet room) until the server closes; return when."""
    t0 = time.monotonic()
    pinged = False
    while not dev.closed.is_set() and time.monotonic() - t0 < limit_s:
        if ping_at is not None and not pinged and time.monotonic() - t0 >= ping_at:
            await dev.send_text("ping")
            pinged = True
        try:
            await dev.send_audio(SILENCE)
        except Exception:
            break
        await asyncio.sleep(0.06)
    await asyncio.wait_for(dev.closed.wait(), 3)
    return time.monotonic() - t0


def warning_index(dev: DeviceClient) -> int:
    return next(
        i
        for i, m in enumerate(dev.received)
        if m.get("type") == "stt" and "即将结束" in m.get("text", "")
    )


@pytest.mark.parametrize(
    ("mode", "expected"), [(None, 0.6), ("coding", 0.6), ("working", 1.8), ("meeting", 1.8)]
)
async def test_no_voice_close_is_mode_aware_and_warns_first(
    make_gateway, stack, mode, expected
) -> None:
    gw = await make_gateway(**idle(0.6))
    dev = await DeviceClient(gw.ws_url, dev_id()).connect()
    await dev.hello()
    t_mode = time.monotonic()
    if mode:
        await dev.send_json({"type": "mode", "state": "start", "mode": mode})
        await dev.expect("mode", status="ok")
    await dev.listen("start", "auto")
    elapsed = await stream_silence_until_closed(dev, 6) + (time.monotonic() - t_mode) * 0
    assert expected * 0.8 <= elapsed <= expected + 0.8, elapsed
    warn = warning_index(dev)
    close = next(i for i, m in enumerate(dev.received) if m.get("event") == "idle_close")
    assert warn < close


async def test_any_message_resets_the_no_voice_timer(make_gateway, asr_owner) -> None:
    gw = await make_gateway(**idle(1.0))
    dev = await DeviceClient(gw.ws_url, dev_id()).connect()
    await dev.hello()
    await dev.listen("start", "auto")
    elapsed = await stream_silence_until_closed(dev, 6, ping_at=0.7)
    assert elapsed >= 1.5  # 0.7 s + a fresh 1.0 s threshold


async def test_hard_close_after_threshold_with_timeout_warning(make_gateway) -> None:
    gw = await make_gateway(**idle(0.3, hard_close_extra_s=0.3, hard_close_wait_s=0.5))
    dev = await DeviceClient(gw.ws_url, dev_id()).connect()
    await dev.hello()
    t0 = time.monotonic()
    warning = await dev.expect("system", timeout=3, event="timeout_warning")
    t_warn = time.monotonic() - t0
    assert "空闲" in warning["message"]
    await asyncio.wait_for(dev.closed.wait(), 3)
    t_close = time.monotonic() - t0
    assert 0.5 <= t_warn <= 1.2, t_warn
    assert 0.4 <= t_close - t_warn <= 1.0


async def test_a_message_during_the_hard_close_wait_cancels_it(make_gateway) -> None:
    gw = await make_gateway(**idle(0.3, hard_close_extra_s=0.3, hard_close_wait_s=0.6))
    dev = await DeviceClient(gw.ws_url, dev_id()).connect()
    await dev.hello()
    await dev.expect("system", timeout=3, event="timeout_warning")
    await dev.send_text("keepalive")
    await asyncio.sleep(0.5)
    assert not dev.closed.is_set()  # the wait was cancelled; a new idle period starts
    await dev.expect("system", timeout=3, event="timeout_warning")
    await asyncio.wait_for(dev.closed.wait(), 3)


async def test_hard_close_is_tripled_in_meeting_mode(make_gateway, stack) -> None:
    gw = await make_gateway(**idle(0.3, hard_close_extra_s=0.2, hard_close_wait_s=0.2))
    dev = await DeviceClient(gw.ws_url, dev_id()).connect()
    await dev.hello()
    await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
    await dev.expect("mode", status="ok")
    t0 = time.monotonic()
    await dev.expect("system", timeout=4, event="timeout_warning")
    assert time.monotonic() - t0 >= 0.9  # 0.3 x 3 + 0.2
    await dev.close()


async def test_listen_debounce(gateway, nc, asr_owner) -> None:
    controls: list[AsrControl] = []

    async def on_control(msg) -> None:  # type: ignore[no-untyped-def]
        controls.append(decode(AsrControl, msg.data))

    sub = await nc.subscribe("supie.v1.asr.stream.*.control", cb=on_control)
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.listen("start", "manual")  # opens the stream
        await dev.listen("stop")  # within 300 ms: ignored
        await dev.listen("start", "manual")  # within 300 ms: ignored
        await asyncio.sleep(0.35)
        await dev.listen("stop")  # accepted: flush
        await asyncio.sleep(0.35)
        await dev.listen("start", "auto")  # accepted
        await asyncio.sleep(0.2)
    await sub.unsubscribe()
    actions = [c.action for c in controls]
    assert actions[:2] == ["listen_stop", "listen_start"], actions
    assert controls[1].listen_mode == "auto"


async def test_listen_debounce_coalesces_a_short_press(gateway, nc, asr_owner) -> None:
    """A push-to-talk press shorter than the window still ends its utterance: the stop inside
    the window is applied when the window ends (it used to be dropped)."""
    controls: list[AsrControl] = []

    async def on_control(msg) -> None:  # type: ignore[no-untyped-def]
        controls.append(decode(AsrControl, msg.data))

    sub = await nc.subscribe("supie.v1.asr.stream.*.control", cb=on_control)
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.listen("start", "manual")  # opens the stream
        await asyncio.sleep(0.4)
        await dev.listen("start", "manual")  # accepted at once (the window is over)
        await dev.listen("stop")  # 20 ms later: inside the window, applied when it ends
        await eventually(lambda: any(c.action == "listen_stop" for c in controls), 3)
        for state in ("start", "stop", "start", "stop"):  # a bouncing button, ends released
            await dev.listen(state, "manual")
        await asyncio.sleep(0.8)
        assert [c.action for c in controls] == ["listen_start", "listen_stop"]  # no change
        for state in ("start", "stop", "start"):  # ends pressed: one start
            await dev.listen(state, "manual")
        await eventually(lambda: len(controls) >= 3, 3)
        await asyncio.sleep(0.5)
    await sub.unsubscribe()
    actions = [c.action for c in controls if c.action != "close"]
    assert actions == ["listen_start", "listen_stop", "listen_start"], actions


async def test_a_start_right_after_a_stop_falls_where_the_device_put_it(
    gateway, nc, asr_owner
) -> None:
    """Stop, then the next press at once (inside the window): the start waits out the window,
    and the audio after it waits with it, so asr sees the boundary before that audio, not a
    window later in the middle of the next sentence (it split every sentence of a meeting)."""
    order: list[str] = []

    async def on_any(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.subject.endswith(".audio"):
            order.append(f"audio:{bytes(msg.data)!r}")
        elif msg.subject.endswith(".control"):
            order.append(decode(AsrControl, msg.data).action)

    sub = await nc.subscribe("supie.v1.asr.stream.*.*", cb=on_any)
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.listen("start", "manual")  # opens the stream
        await asyncio.sleep(0.4)
        await dev.send_audio(b"first")
        await dev.listen("stop")  # the window is over: applied at once
        await dev.listen("start", "manual")  # inside the window: applied when it ends
        for i in range(3):
            await dev.send_audio(f"next{i}".encode())
            await asyncio.sleep(0.05)
        await eventually(lambda: sum(x.startswith("audio:") for x in order) >= 4, 5)
    await sub.unsubscribe()
    seen = [x for x in order if x != "close"]
    assert seen == [
        "audio:b'first'",
        "listen_stop",
        "listen_start",
        "audio:b'next0'",
        "audio:b'next1'",
        "audio:b'next2'",
    ], seen


async def test_update_config_checks_the_secret_and_reloads(
    make_gateway, nc, tmp_path: Path
) -> None:
    cfg = tmp_path / "live.yaml"
    cfg.write_text("server:\n  listen_debounce_ms: 300\n")
    gw = await make_gateway(server={"secret": "topsecret", "config_watch_interval_s": 0})
    gw.service.config_path = cfg
    events: list[ConfigUpdated] = []

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        events.append(decode(ConfigUpdated, msg.data))

    sub = await nc.subscribe(Subjects.CONFIG_UPDATED, cb=on_event)
    async with DeviceClient(gw.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json(
            {"type": "server", "action": "update_config", "content": {"secret": "wrong"}}
        )
        err = await dev.expect("server", timeout=3)
        assert err["status"] == "error" and "secret" in err["message"]
        await asyncio.sleep(0.2)
        assert events == []
        cfg.write_text("server:\n  listen_debounce_ms: 999\n  secret: topsecret\n")
        await dev.send_json(
            {"type": "server", "action": "update_config", "content": {"secret": "topsecret"}}
        )
        ok = await dev.expect("server", timeout=3)
        assert ok["status"] == "success"
        for _ in range(40):
            if gw.service.settings.server.listen_debounce_ms == 999:
                break
            await asyncio.sleep(0.05)
    await sub.unsubscribe()
    assert [e.source for e in events] == ["device"]
    assert gw.service.settings.server.listen_debounce_ms == 999


async def test_invalid_config_is_rejected_and_the_old_one_kept(
    make_gateway, nc, tmp_path: Path
) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{message}")
    try:
        cfg = tmp_path / "bad.yaml"
        cfg.write_text("server:\n  listen_debounce_ms: many\n")
        gw = await make_gateway(server={"config_watch_interval_s": 0})
        before = gw.service.settings
        await nc.publish(
            Subjects.CONFIG_UPDATED, encode(ConfigUpdated(source="api", config_path=str(cfg)))
        )
        await eventually(lambda: any("config reload rejected" in x for x in lines), 5)
        assert gw.service.settings is before
        assert any("server.listen_debounce_ms" in x for x in lines)
        # the event path still works: a valid file applies
        good = tmp_path / "good.yaml"
        good.write_text("server:\n  listen_debounce_ms: 123\n")
        await nc.publish(
            Subjects.CONFIG_UPDATED, encode(ConfigUpdated(source="api", config_path=str(good)))
        )
        await eventually(lambda: gw.service.settings.server.listen_debounce_ms == 123, 5)
    finally:
        logger.remove(sink)


async def test_a_changed_config_file_reloads_every_service(
    make_gateway, nc, tmp_path: Path
) -> None:
    cfg = tmp_path / "watched.yaml"
    cfg.write_text("server:\n  api_rate_limit: 10\n")
    events: list[ConfigUpdated] = []

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        events.append(decode(ConfigUpdated, msg.data))

    sub = await nc.subscribe(Subjects.CONFIG_UPDATED, cb=on_event)
    gw = await make_gateway(server={"config_watch_interval_s": 0.1})
    gw.service.config_path = cfg
    gw.service.spawn(gw.service._watch_config_file(), "watch")  # noqa: SLF001 - the test's file
    await asyncio.sleep(0.3)
    cfg.write_text("server:\n  api_rate_limit: 77\n")
    for _ in range(40):
        if gw.service.settings.server.api_rate_limit == 77:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    assert [e.source for e in events] == ["file"]
    assert gw.service.rate_limiter.rate == 77


async def test_sigterm_drains_then_closes_1001_and_state_follows_the_device(
    make_gateway, nc, stack: Stack
) -> None:
    a, b = await make_gateway(server={"drain_timeout_s": 20}), await make_gateway()
    device = dev_id()
    dev = await DeviceClient(a.ws_url, device).connect()
    await dev.hello()
    await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
    ack = await dev.expect("mode", status="ok")
    meeting_id = ack["sessionId"]
    for i in range(20):
        await nc.publish(
            Subjects.device_out(device),
            encode(DeviceOutbound(message={"type": "stt", "text": f"queued {i}"})),
        )
    await nc.flush()  # the 20 messages are at the gateway (queued for the device)
    await a.service.stop()
    await asyncio.wait_for(dev.closed.wait(), 5)
    assert dev.ws is not None and dev.ws.close_code == 1001
    texts = [m["text"] for m in dev.received if m.get("type") == "stt"]
    assert texts == [f"queued {i}" for i in range(20)]  # nothing queued was lost
    async with DeviceClient(b.ws_url, device) as again:
        await again.hello()
        resumed = await again.expect("meeting", timeout=5, phase="transcript")
        assert resumed["resumed"] is True and resumed["sessionId"] == meeting_id
        session = b.service.connections[device].session
        assert session.mode == "meeting" and session.meeting_id == meeting_id


async def test_voice_shortcut_switches_to_working_mode_from_any_mode(gateway, stack) -> None:
    async with DeviceClient(gateway.ws_url, dev_id()) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "meeting"})
        meeting = (await dev.expect("mode", status="ok"))["sessionId"]
        await dev.listen("detect", text="进入工作模式")
        notice = await dev.expect("meeting", timeout=5, event="command")
        assert notice["intent"] == "mode_switch" and notice["targetMode"] == "working"
        echo = await dev.expect("stt", timeout=5)
        assert echo["intent"] == "mode_switch" and echo["target_mode"] == "working"
        assert (await dev.expect("mode", timeout=5))["mode"] == "working"
        assert (await dev.expect("listen", timeout=3))["mode"] == "manual"
    assert stack.meeting.status[meeting] == "finalizing"  # leaving a meeting finalizes it


async def test_working_mode_text_reaches_intent_recognition(gateway, stack) -> None:
    device = dev_id()
    async with DeviceClient(gateway.ws_url, device) as dev:
        await dev.hello()
        await dev.send_json({"type": "mode", "state": "start", "mode": "working"})
        await dev.expect("mode", status="ok")
        await dev.listen("detect", text="完成第二个任务")
        assert (await dev.expect("stt", timeout=5))["text"] == "完成第二个任务"
        await eventually(lambda: stack.workflow.texts, 5)
    assert [(t.device_id, t.text, t.mode, t.source) for t in stack.workflow.texts] == [
        (device, "完成第二个任务", "working", "text")
    ]
