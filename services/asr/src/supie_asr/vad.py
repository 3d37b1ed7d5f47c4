"""Silero VAD (v6 ONNX, the file shipped in the faster-whisper wheel) on onnxruntime, streamed.

The v6 graph takes ``input`` of shape ``[n, 576]`` (64 samples of context from the previous
window + one 512-sample window per row, rows in time order), plus LSTM state ``h`` and ``c``
(``[1, 1, 128]`` each), and returns one speech probability per row and the new state. The state
is carried per stream in :class:`VadState`; one :class:`SileroVad` session serves every stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

__all__ = ["WINDOW", "CONTEXT", "WINDOW_MS", "default_model_path", "SileroVad", "VadState"]

WINDOW = 512  # samples per VAD window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window prepended to each window
WINDOW_MS = WINDOW * 1000 // 16000


def default_model_path() -> Path:
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


@dataclass
class VadState:
    """Per-stream VAD state: LSTM state, last context and samples not yet a full window."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), dtype=np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


class SileroVad:
    """One onnxruntime session (single intra-op thread) shared by all streams of a process."""

    def __init__(self, path: str | Path | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # VAD is tiny; more threads only add contention
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path) if path else default_model_path()
        self.session = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise ValueError(f"{self.path}: unexpected Silero inputs {sorted(names)}")

    def new_state(self) -> VadState:
        return VadState()

    def process(self, state: VadState, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed float32 samples; return (windows ``[n, 512]``, speech probabilities ``[n]``) for
        every window completed by them. Leftover samples wait in ``state.pending``."""
        audio = np.concatenate([state.pending, np.asarray(samples, dtype=np.float32)])
        n = len(audio) // WINDOW
        state.pending = audio[n * WINDOW :]
        if n == 0:
            return np.zeros((0, WINDOW), dtype=np.float32), np.zeros(0, dtype=np.float32)
        windows = audio[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.empty((n, CONTEXT), dtype=np.float32)
        contexts[0] = state.context
        if n > 1:
            contexts[1:] = windows[:-1, -CONTEXT:]
        rows = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1))
        probs, state.h, state.c = self.session.run(
            None, {"input": rows, "h": state.h, "c": state.c}
        )
        state.context = windows[-1, -CONTEXT:].copy()
        return windows, np.asarray(probs, dtype=np.float32).reshape(-1)
