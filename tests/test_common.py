"""libs/common: settings, logging, atomic files, framing, contracts."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger
from pydantic import ValidationError
from supie_common.contracts import Subjects, Transcript, decode, device_token
from supie_common.files import append_line, read_json, write_json_atomic
from supie_common.logs import setup_logging, truncate_middle
from supie_common.protocol import FrameError, decode_frame, encode_frame, normalize_device_id
from supie_common.settings import ConfigError, LogSection, load_settings
from supie_gateway.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_yaml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "server:\n  ws_port: 9100\n  http_port: 9101\nmeeting:\n"
        "  transcript_push_interval_ms: 20000\n"
    )
    monkeypatch.setenv("SUPIE_SERVER__HTTP_PORT", "9200")
    settings = load_settings(GatewaySettings, cfg)
    assert settings.server.ws_port == 9100
    assert settings.server.http_port == 9200  # env beats the file
    assert settings.meeting.push_interval_ms == 15000  # clamped 3000..15000


def test_invalid_config_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  ws_port: lots\n")
    with pytest.raises(ConfigError, match=r"server\.ws_port"):
        load_settings(GatewaySettings, cfg)
    cfg.write_text("log:\n  level: LOUD\n")
    with pytest.raises(ConfigError, match=r"log\.level"):
        load_settings(GatewaySettings, cfg)
    cfg.write_text("")
    monkeypatch.setenv("SUPIE_SERVER__MAX_FRAME_BYTES", "-5")
    with pytest.raises(ConfigError, match=r"server\.max_frame_bytes"):
        load_settings(GatewaySettings, cfg)


def test_config_file_must_be_a_mapping(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(GatewaySettings, cfg)


def test_truncate_middle_keeps_head_and_tail() -> None:
    text = "HEAD" + "x" * 5000 + "TAIL"
    cut = truncate_middle(text, 200)
    assert len(cut) <= 200 and cut.startswith("HEAD") and cut.endswith("TAIL")
    assert truncate_middle("short", 200) == "short"


_LOG_LAG_PROBE = """
import asyncio, io, json, time
from loguru import logger
from supie_common.logs import setup_logging
from supie_common.settings import LogSection

written = io.StringIO()

class SlowSink:  # a slow disk or terminal
    def write(self, message):
        time.sleep(0.0005)
        written.write(message)

async def main():
    sink = setup_logging(LogSection(max_message_length=300), "probe", sink=SlowSink())
    worst = 0.0
    done = asyncio.Event()

    async def watchdog():
        nonlocal worst
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - t0 - 0.005)

    async def writer(n):
        for i in range(200):
            logger.info("task {} line {} {}", n, i, "y" * 1000)
            await asyncio.sleep(0)  # a task logs between other work

    dog = asyncio.create_task(watchdog())
    await asyncio.gather(*(writer(n) for n in range(50)))
    done.set()
    await dog
    await logger.complete()
    logger.remove()
    sink.drain(30)
    lines = written.getvalue().splitlines()
    print(json.dumps({"worst_ms": worst * 1000, "lines": len(lines),
                      "longest": max(map(len, lines))}))

asyncio.run(main())
"""


def test_logging_never_blocks_the_event_loop() -> None:
    """10,000 log calls from 50 concurrent tasks behind a slow sink: the loop never stalls for
    more than 50 ms. Run in a fresh interpreter so other tests' loaded models and threads do not
    add their own pauses to the figure."""
    out = subprocess.run(
        [sys.executable, "-c", _LOG_LAG_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["worst_ms"] < 50, figures
    assert figures["lines"] >= 10_000  # nothing dropped
    assert figures["longest"] < 450  # messages cut to max_message_length (+ the line prefix)


def test_stdlib_logging_is_intercepted() -> None:
    import logging

    out = io.StringIO()
    writer = setup_logging(LogSection(), "test", sink=out)
    logging.getLogger("some.library").warning("from stdlib")
    logger.remove()
    writer.drain()
    assert "from stdlib" in out.getvalue()


def test_atomic_json_write_and_append(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    write_json_atomic(target, {"x": "中文"})
    write_json_atomic(target, {"x": 2})
    assert read_json(target) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]  # no temp files left
    append_line(tmp_path / "m.log", "one")
    append_line(tmp_path / "m.log", "two\n")
    assert (tmp_path / "m.log").read_text() == "one\ntwo\n"
    assert read_json(tmp_path / "missing.json", default=[]) == []


@pytest.mark.parametrize("version", [1, 2, 3])
def test_frame_round_trip(version: int) -> None:
    data = encode_frame(b"opus!", version, timestamp_ms=1234)
    frame = decode_frame(data, version)
    assert frame.payload == b"opus!"
    if version == 2:
        assert frame.timestamp_ms == 1234 and len(data) == 16 + 5
    if version == 3:
        assert len(data) == 4 + 5


def test_frame_errors_name_the_problem() -> None:
    with pytest.raises(FrameError, match="16-byte header"):
        decode_frame(b"abc", 2)
    with pytest.raises(FrameError, match="payload_size"):
        decode_frame(b"\x00\x00\x00\x09abc", 3)


def test_device_id_normalisation_and_tokens() -> None:
    assert normalize_device_id('  "AA:BB:CC:DD:EE:FF" ') == "aa:bb:cc:dd:ee:ff"
    assert device_token("aa:bb") == "aa:bb"
    assert device_token("a.b*c>d e") != device_token("a_b_c_d_e")
    assert "." not in device_token("a.b") and "*" not in device_token("x*")


def test_malformed_payload_raises() -> None:
    with pytest.raises(ValidationError):
        decode(Transcript, b'{"device_id": "x"}')


def test_every_subject_is_documented() -> None:
    doc = (ROOT / "docs" / "subjects.md").read_text()
    constants = [
        v
        for k, v in vars(Subjects).items()
        if k.isupper() and isinstance(v, str) and v.startswith("supie.")
    ]
    builders = [
        getattr(Subjects, k)("X") for k, v in vars(Subjects).items() if isinstance(v, staticmethod)
    ]
    for subject in constants + builders:
        pattern = re.sub(r"\bX\b|\*", "<", subject).split("<")[0]
        assert pattern in doc, f"{subject} missing from docs/subjects.md"


def test_contract_models_serialise_compactly() -> None:
    t = Transcript(
        device_id="d",
        session_id="s",
        gateway_id="g",
        stream_id="st",
        utterance_id="u",
        text="hi",
        start_ms=0,
        end_ms=10,
    )
    body = json.loads(t.model_dump_json())
    assert body["text"] == "hi"
