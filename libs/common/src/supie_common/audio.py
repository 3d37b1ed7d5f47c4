"""Audio helpers: WAV I/O, Opus encode (device simulator) and decode (ASR), all via PyAV's
bundled libopus so nothing depends on system libraries."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

__all__ = [
    "SAMPLE_RATE",
    "read_wav",
    "write_wav",
    "OpusEncoder",
    "OpusDecoder",
    "pcm16_to_float",
    "float_to_pcm16",
    "frames_of",
]

SAMPLE_RATE = 16000


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Return (int16 mono samples, sample rate)."""
    with wave.open(str(path), "rb") as wf:
        if wf.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        rate = wf.getframerate()
        data = np.frombuffer(wf.readframes(wf.getnframes()), dtype=np.int16)
        if wf.getnchannels() > 1:
            data = data.reshape(-1, wf.getnchannels()).mean(axis=1).astype(np.int16)
    if rate != SAMPLE_RATE:
        data = _resample(data, rate, SAMPLE_RATE)
        rate = SAMPLE_RATE
    return data, rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(np.asarray(samples, dtype=np.int16).tobytes())


def _resample(data: np.ndarray, src: int, dst: int) -> np.ndarray:
    n = int(round(len(data) * dst / src))
    x = np.linspace(0, len(data) - 1, n)
    return np.interp(x, np.arange(len(data)), data.astype(np.float32)).astype(np.int16)


def pcm16_to_float(data: bytes | np.ndarray) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.int16) if isinstance(data, bytes | bytearray) else data
    return arr.astype(np.float32) / 32768.0


def float_to_pcm16(data: np.ndarray) -> np.ndarray:
    return (np.clip(data, -1.0, 1.0) * 32767.0).astype(np.int16)


def frames_of(samples: np.ndarray, frame_ms: int = 60, rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Split int16 samples into full frames, zero-padding the last one."""
    size = rate * frame_ms // 1000
    out = []
    for i in range(0, len(samples), size):
        chunk = samples[i : i + size]
        if len(chunk) < size:
            chunk = np.pad(chunk, (0, size - len(chunk)))
        out.append(chunk)
    return out


class OpusEncoder:
    """16 kHz mono Opus, one packet per ``frame_ms`` of audio (what the firmware sends)."""

    def __init__(self, frame_ms: int = 60, rate: int = SAMPLE_RATE, bitrate: int = 24000) -> None:
        self.frame_ms = frame_ms
        self.rate = rate
        self.frame_samples = rate * frame_ms // 1000
        self._ctx = av.CodecContext.create("libopus", "w")
        self._ctx.sample_rate = rate
        self._ctx.layout = "mono"
        self._ctx.format = "s16"
        self._ctx.bit_rate = bitrate
        self._ctx.options = {"frame_duration": str(frame_ms), "application": "voip"}
        self._ctx.open()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        """Encode exactly one frame of int16 samples; returns 0..n packets."""
        frame = AudioFrame.from_ndarray(
            np.asarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += frame.samples
        return [bytes(p) for p in self._ctx.encode(frame)]

    def encode_all(self, samples: np.ndarray) -> list[bytes]:
        """Encode a whole signal; pads with silence so every input frame yields a packet."""
        packets: list[bytes] = []
        for chunk in frames_of(samples, self.frame_ms, self.rate):
            packets.extend(self.encode(chunk))
        silence = np.zeros(self.frame_samples, dtype=np.int16)
        while len(packets) < len(frames_of(samples, self.frame_ms, self.rate)):
            packets.extend(self.encode(silence))
        return packets


class OpusDecoder:
    """Opus packets -> 16 kHz mono int16 samples."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._ctx = av.CodecContext.create("libopus", "r")
        self._ctx.sample_rate = rate
        self._ctx.layout = "mono"
        self._resampler = AudioResampler(format="s16", layout="mono", rate=rate)

    def decode(self, packet: bytes) -> np.ndarray:
        """Decode one packet; raises ``ValueError`` for data that is not Opus."""
        if not packet:
            # An empty av.Packet means "end of stream" to FFmpeg and would leave the decoder
            # refusing every later packet, so it is rejected here instead.
            raise ValueError("empty Opus packet (0 bytes)")
        try:
            frames = self._ctx.decode(av.Packet(packet))
        except av.error.FFmpegError as exc:
            raise ValueError(f"not a valid Opus packet ({len(packet)} bytes): {exc}") from None
        out = []
        for frame in frames:
            for res in self._resampler.resample(frame):
                out.append(res.to_ndarray().reshape(-1))
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(out).astype(np.int16)
