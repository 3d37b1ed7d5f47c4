"""ASR latency benchmark: the speech fixtures streamed at real-time pace by a firmware-exact
device through gateway -> asr, with its own embedded NATS/Valkey and services as subprocesses.

Prints one JSON line: real-time factor (pipeline compute / audio), endpoint latency p50/p95
(last voiced frame sent -> ``stt`` received, minus the configured silence window), the error
rate (WER; CER for Chinese) of the pipeline and of a plain faster-whisper ``transcribe()`` with
the same model and decoding options, on the same audio (each whole clip after the Opus round
trip the device's audio takes, which is what the pipeline hears) and on the clean WAVs, the ratio
of pipeline compute to plain compute, and the asr process's peak memory.

    uv run python bench/asr_latency.py [--language en|zh] [--no-gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "speech_fixtures", ROOT / "tests" / "fixtures" / "speech" / "speech.py"
)
assert _spec is not None and _spec.loader is not None
speech = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speech)

FRAME_MS = 60
MIN_SILENCE_MS = 500


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


@dataclass
class Clip:
    """A fixture pre-encoded as device packets, with the packet index ending each sentence."""

    name: str
    pcm: np.ndarray
    packets: list[bytes]
    sentences: list[str]
    last_voiced_packet: list[int]  # per sentence
    sentence_end_ms: list[int]

    language: str = "en"

    @classmethod
    def load(cls, name: str) -> Clip:
        from supie_common.audio import OpusEncoder

        pcm = speech.samples(name)
        spans = speech.sentence_spans(pcm)
        frame = 16 * FRAME_MS
        language = speech.language_of(name)
        return cls(
            name=name,
            pcm=pcm,
            packets=OpusEncoder(frame_ms=FRAME_MS).encode_all(pcm),
            sentences=speech.references(language)[name],
            language=language,
            last_voiced_packet=[(end - 1) // frame for _, end in spans],
            sentence_end_ms=[end // 16 for _, end in spans],
        )

    def heard(self) -> np.ndarray:
        """The clip as the asr service hears it: decoded from the device's Opus packets."""
        from supie_common.audio import OpusDecoder

        decoder = OpusDecoder()
        return np.concatenate([decoder.decode(p) for p in self.packets])


@dataclass
class Stack:
    """Embedded NATS/Valkey plus service subprocesses."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)

    def start_servers(self, valkey: bool = True) -> None:
        from supie_common.embedded import EmbeddedNats, EmbeddedValkey

        nats = EmbeddedNats(self.tmp / "nats")
        nats.start()
        self.servers.append(nats)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SUPIE_")}
        self.env.update(
            {
                "SUPIE_NATS__URL": nats.url,
                "SUPIE_DATA_DIR": str(self.tmp / "data"),
                "SUPIE_CONFIG": str(self.tmp / "none.yaml"),
                "PYTHONUNBUFFERED": "1",
                "SUPIE_LOG__LEVEL": "WARNING",
            }
        )
        if valkey:
            redis = EmbeddedValkey(self.tmp / "valkey")
            redis.start()
            self.servers.append(redis)
            self.env["SUPIE_REDIS__URL"] = redis.url

    def spawn(self, module: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{module}-{len(self.procs)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in reversed(self.servers):
            server.stop()


async def wait_asr_ready(nc: Any, within_s: float = 90) -> None:
    """An asr replica answers opens once its model is loaded."""
    from supie_common.bus import BusError, request
    from supie_common.contracts import AsrOpenReply, AsrOpenRequest, Subjects, encode

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        req = AsrOpenRequest(device_id="probe", session_id="probe", gateway_id="bench")
        try:
            reply = await request(nc, Subjects.ASR_OPEN, req, AsrOpenReply, timeout=1)
            if reply.ok:
                from supie_common.contracts import AsrControl

                await nc.publish(
                    Subjects.asr_control(req.stream_id), encode(AsrControl(action="close"))
                )
                return
        except BusError:
            await asyncio.sleep(0.2)
    raise TimeoutError("no asr replica became ready")


async def wait_port(port: int, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


def plain_transcribe(clips: list[Clip], threads: int, language: str) -> dict[str, float]:
    """Plain faster-whisper ``transcribe()`` of each whole clip with the model and decoding
    options the pipeline uses for the language: compute seconds and error rates, on the audio
    the pipeline hears (after Opus) and on the clean WAVs."""
    from faster_whisper import WhisperModel
    from supie_asr.models import resolve_model
    from supie_asr.pool import model_for_language
    from supie_common.settings import AsrSection
    from supie_common.text import to_simplified

    cfg = AsrSection(language=language)
    name = model_for_language(cfg, language)
    model = WhisperModel(
        resolve_model(name, Path(tempfile.gettempdir()) / "supie-bench-models"),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
    )
    multilingual = model.model.is_multilingual
    options = {
        "language": language,
        "beam_size": cfg.multilingual_beam_size if multilingual else cfg.beam_size,
        "initial_prompt": cfg.initial_prompts.get(language),
        "temperature": cfg.temperatures,
    }
    list(model.transcribe(np.zeros(16000, dtype=np.float32), **options)[0])  # warm up
    total = 0.0
    refs, heard, clean = [], [], []
    import ctranslate2

    for clip in clips:
        for audio, hyps in ((clip.heard(), heard), (clip.pcm, clean)):
            # temperature fallback samples: a fixed seed makes the reference repeatable (as
            # the pipeline seeds its own sampled decodes)
            ctranslate2.set_random_seed(1234)
            started = time.perf_counter()
            segments, _ = model.transcribe(audio.astype(np.float32) / 32768.0, **options)
            hyps.append(to_simplified(" ".join(s.text for s in segments)))
            if hyps is heard:
                total += time.perf_counter() - started
        refs.append(" ".join(clip.sentences))
    ref = " ".join(refs)
    return {
        "plain_transcribe_s": total,
        "plain_error": speech.error_rate(ref, " ".join(heard), language),
        "plain_error_clean_audio": speech.error_rate(ref, " ".join(clean), language),
    }


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def run(use_gateway: bool, threads: int, language: str) -> dict[str, Any]:
    from supie_common.bus import connect_nats
    from supie_common.contracts import AsrEvent, decode
    from supie_common.device_client import DeviceClient
    from supie_common.embedded import free_port

    clips = [Clip.load(n) for n in speech.references(language)]
    stack = Stack(Path(tempfile.mkdtemp(prefix="supie-bench-")))
    stack.start_servers(valkey=use_gateway)
    try:
        nc = await connect_nats(stack.env["SUPIE_NATS__URL"], "bench")
        asr = stack.spawn(
            "supie_asr",
            SUPIE_ASR__CPU_THREADS=str(threads),
            SUPIE_ASR__LANGUAGE=language,
            SUPIE_ASR__MODELS_DIR=str(Path(tempfile.gettempdir()) / "supie-bench-models"),
        )
        ws_port = free_port()
        if use_gateway:
            stack.spawn(
                "supie_gateway",
                SUPIE_SERVER__WS_PORT=str(ws_port),
                SUPIE_SERVER__HTTP_PORT=str(free_port()),
                SUPIE_SERVER__IP="127.0.0.1",
                # the gateway opens each stream in the device's language (one config for all)
                SUPIE_ASR__LANGUAGE=language,
            )
            await wait_port(ws_port)
        await wait_asr_ready(nc)

        finals: list[Any] = []

        async def on_event(msg: Any) -> None:
            event = decode(AsrEvent, msg.data)
            if event.kind == "transcript" and event.transcript and event.transcript.kind == "final":
                finals.append(event.transcript)

        await nc.subscribe("supie.v1.asr.stream.*.events", cb=on_event)
        latencies: list[float] = []
        refs, hyps = [], []
        audio_ms = 0
        for clip in clips:
            arrivals: list[float] = []
            before = len(finals)
            if use_gateway:
                dev = await DeviceClient(
                    f"ws://127.0.0.1:{ws_port}/supie/v1/", "be:nc:h0:00:00:01"
                ).connect()
                await dev.hello()
                await dev.listen("start", mode="auto")

                async def collect(
                    dev: DeviceClient = dev, arrivals: list[float] = arrivals
                ) -> None:
                    while True:
                        await dev.expect("stt", timeout=3600)
                        arrivals.append(time.monotonic())

                collector = asyncio.create_task(collect())
                send = dev.send_audio
            else:
                from supie_common.contracts import AsrOpenRequest
                from supie_gateway.asr_link import AsrStream

                async def on_t(t: Any, arrivals: list[float] = arrivals) -> None:
                    arrivals.append(time.monotonic())

                stream = AsrStream(
                    nc,
                    AsrOpenRequest(
                        device_id="bench", session_id="b", gateway_id="bench", language=language
                    ),
                    on_t,
                )
                await stream.open()
                send = stream.send_audio
            sent_at: dict[int, float] = {}
            start = time.monotonic()
            for i, packet in enumerate(clip.packets):
                delay = start + i * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await send(packet)
                sent_at[i] = time.monotonic()
            deadline = time.monotonic() + 10 + len(clip.pcm) / 16000
            # two different sources append to arrivals; polling is simplest
            while len(arrivals) < len(clip.sentences) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            # each final ends one sentence: the last sentence end before the final's (padded)
            # end; an utterance recognised as nothing sends no final and has no latency
            ended = dict(zip(clip.sentence_end_ms, clip.last_voiced_packet, strict=True))
            for arrival, final in zip(arrivals, finals[before:], strict=False):
                ends = [ms for ms in ended if ms <= final.end_ms + 200]
                if ends:
                    idx = ended.pop(max(ends))
                    latencies.append((arrival - sent_at[idx]) * 1000 - MIN_SILENCE_MS)
                    print(
                        f"  endpoint {latencies[-1]:.0f} ms (compute {final.compute_ms} ms, "
                        f"{final.audio_ms} ms of audio)",
                        file=sys.stderr,
                    )
            if use_gateway:
                collector.cancel()
                await dev.close()
            else:
                await stream.close()
            await asyncio.sleep(0.3)
            refs.append(" ".join(clip.sentences))
            hyps.append(" ".join(t.text for t in finals[before:]))
            print(f"{clip.name}: {hyps[-1]}", file=sys.stderr)
            audio_ms += len(clip.pcm) // 16
        compute_ms = sum(t.compute_ms for t in finals)
        utter_ms = sum(t.audio_ms for t in finals)
        rss_mb = peak_rss_mb(asr.pid)
        await nc.drain()
    finally:
        stack.stop()
    plain = plain_transcribe(clips, threads, language)
    plain_s = plain["plain_transcribe_s"]
    pipeline_error = speech.error_rate(" ".join(refs), " ".join(hyps), language)
    metric = "cer" if language == "zh" else "wer"
    return {
        "bench": "asr_latency",
        "language": language,
        "metric": metric,
        "path": "device->gateway->asr" if use_gateway else "asr_link->asr",
        "cores": os.cpu_count(),
        "cpu_threads": threads,
        "audio_s": round(audio_ms / 1000, 2),
        "utterances": len(finals),
        "rtf": round(compute_ms / audio_ms, 4),
        "rtf_speech": round(compute_ms / max(utter_ms, 1), 4),
        "endpoint_latency_ms_p50": round(percentile(latencies, 50), 1),
        "endpoint_latency_ms_p95": round(percentile(latencies, 95), 1),
        metric: round(pipeline_error, 4),
        f"plain_{metric}": round(plain["plain_error"], 4),
        f"plain_{metric}_clean_audio": round(plain["plain_error_clean_audio"], 4),
        f"{metric}_minus_plain": round(pipeline_error - plain["plain_error"], 4),
        "pipeline_compute_s": round(compute_ms / 1000, 3),
        "plain_transcribe_s": round(plain_s, 3),
        "overhead_ratio": round(compute_ms / 1000 / plain_s, 3),
        "asr_peak_rss_mb": rss_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-gateway", action="store_true", help="stream straight to asr")
    parser.add_argument("--threads", type=int, default=2, help="asr.cpu_threads")
    parser.add_argument("--language", choices=["en", "zh"], default="en")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(not args.no_gateway, args.threads, args.language))))


if __name__ == "__main__":
    main()
