"""The realtime path at a device rate (:class:`RealtimeConverter`) and the file mode.

At the model rate, blocks go straight to the :class:`~inference.realtime.engine.RealtimeEngine`;
at another rate, streaming sinc resamplers on both sides and a FIFO absorb the ≤ 1-frame jitter.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Callable

import numpy as np

from inference.realtime.engine import RealtimeEngine, load_svc
from inference.realtime.resampler import StreamResampler
from inference.realtime.settings import RealtimeSettings
from inference.realtime.sola import BlockProcessor
from modules.errors import AudioError

log = logging.getLogger(__name__)

__all__ = ["RealtimeConverter", "convert_file", "stream_array"]


class RealtimeConverter:
    """The whole realtime path at a device rate: ``process(block)`` takes and returns exactly
    ``block_size`` samples at ``sample_rate`` (mono float32). Used by the sound-card stream and
    by the file mode alike.

    At the model rate, blocks go straight to the :class:`RealtimeEngine`. At another rate, input
    is resampled to the model rate (streaming sinc), converted in whole frames as soon as they
    are complete, resampled back, and a FIFO pre-filled with the exact worst-case jitter
    (simulated from the block arithmetic) keeps the output continuous.
    """

    def __init__(self, svc, settings: RealtimeSettings, *, sample_rate: int | None = None,
                 engine_factory: Callable[..., BlockProcessor] | None = None) -> None:
        make = engine_factory or (lambda **kw: RealtimeEngine(svc, settings, **kw))
        model_rate = int(svc.target_sample)
        self.model_rate = model_rate
        self.sample_rate = int(sample_rate or model_rate)
        if self.sample_rate == model_rate:
            self.engine = make()
            self.block_size = self.engine.block_size
            self.prefill = 0
            self._direct = True
        else:
            self._direct = False
            self.block_size = max(1, round(settings.block_time * self.sample_rate))
            self.in_rs = StreamResampler(self.sample_rate, model_rate)
            self.out_rs = StreamResampler(model_rate, self.sample_rate)
            hop = int(svc.hop_size)
            k_max, prefill = self._plan(hop)
            self.engine = make(max_block_frames=k_max)
            self.prefill = prefill
        self.reset()

    def _plan(self, hop: int, blocks: int = 4000) -> tuple[int, int]:
        """Largest engine block (frames) and the output pre-fill that never underflows."""
        received = model = consumed = out = 0
        k_max, deficit = 1, 0
        for t in range(1, blocks + 1):
            received += self.block_size
            model = self.in_rs.groups_after(received) * self.in_rs.n
            k = (model - consumed) // hop
            k_max = max(k_max, k)
            consumed += k * hop
            out = self.out_rs.groups_after(consumed) * self.out_rs.n
            deficit = max(deficit, t * self.block_size - out)
        return k_max, deficit

    def reset(self) -> None:
        self.engine.reset()
        if not self._direct:
            self.in_rs.reset()
            self.out_rs.reset()
            self.fifo_in = np.zeros(0, np.float32)
            self.fifo_out = np.zeros(self.prefill, np.float32)
        self.compute_times: deque[float] = deque(maxlen=200)

    @property
    def stream_offset(self) -> int:
        """Device samples by which the output stream lags the input (file mode)."""
        if self._direct:
            return self.engine.stream_offset
        return self.prefill + round(self.engine.stream_offset * self.sample_rate / self.model_rate)

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency: one block + :attr:`stream_offset` (device buffers and compute come on top)."""
        return (self.block_size + self.stream_offset) / self.sample_rate

    @property
    def last_compute_time(self) -> float:
        return self.compute_times[-1] if self.compute_times else 0.0

    @property
    def block_seconds(self) -> float:
        return self.block_size / self.sample_rate

    def process(self, block: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        x = np.asarray(block, np.float32).reshape(-1)
        if x.shape[0] != self.block_size:
            raise AudioError(f"realtime block of {x.shape[0]} samples; this stream uses {self.block_size}")
        if self._direct:
            out = self.engine.process(x)
        else:
            hop = self.engine.hop
            self.fifo_in = np.concatenate([self.fifo_in, self.in_rs.push(x)])
            n = self.fifo_in.shape[0] // hop * hop
            if n:
                y = self.engine.process(self.fifo_in[:n])
                self.fifo_in = self.fifo_in[n:]
                self.fifo_out = np.concatenate([self.fifo_out, self.out_rs.push(y)])
            if self.fifo_out.shape[0] < self.block_size:  # cannot happen with the planned pre-fill
                log.warning("realtime output ran short by %d samples", self.block_size - self.fifo_out.shape[0])
                self.fifo_out = np.concatenate([self.fifo_out, np.zeros(self.block_size - self.fifo_out.shape[0],
                                                                        np.float32)])
            out, self.fifo_out = self.fifo_out[:self.block_size], self.fifo_out[self.block_size:]
        self.compute_times.append(time.perf_counter() - t0)
        return out

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def stream_array(converter: RealtimeConverter, y: np.ndarray, *, align: bool = True,
                 progress: bool = False) -> np.ndarray:
    """Push ``y`` (mono, at ``converter.sample_rate``) through the realtime path block by block.

    With ``align`` the stream is flushed with silence and the output shifted back by
    :attr:`RealtimeConverter.stream_offset`, so output sample i belongs to input sample i; the
    result is as long as ``y`` either way.
    """
    from tqdm import tqdm

    y = np.asarray(y, np.float32).reshape(-1)
    B = converter.block_size
    shift = converter.stream_offset if align else 0
    total = y.shape[0] + shift
    n_blocks = -(-total // B)
    x = np.zeros(n_blocks * B, np.float32)
    x[:y.shape[0]] = y
    out = np.empty_like(x)
    for i in tqdm(range(n_blocks), unit="block", disable=not progress, desc="realtime"):
        out[i * B:(i + 1) * B] = converter.process(x[i * B:(i + 1) * B])
    return out[shift: shift + y.shape[0]]


def convert_file(settings: RealtimeSettings, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
                 svc=None, align: bool = True, progress: bool = True) -> dict[str, float]:
    """File mode: stream ``input_path`` through exactly the realtime path, write ``output_path``.

    The file's own rate plays the sound card's rate (a 44.1 kHz file and model go straight
    through; other rates take the resampling bridge). Returns the figures the GUI shows.
    """
    from modules.audio import load_audio, save_audio

    settings.validate()
    y, sr = load_audio(input_path)
    svc = svc if svc is not None else load_svc(settings)
    conv = RealtimeConverter(svc, settings, sample_rate=sr)
    try:
        out = stream_array(conv, y, align=align, progress=progress)
    finally:
        conv.close()
    save_audio(output_path, out, sr)
    times = np.asarray(conv.compute_times or [0.0])
    stats = {"latency_ms": 1000 * conv.latency_seconds, "block_ms": 1000 * conv.block_seconds,
             "median_compute_ms": 1000 * float(np.median(times)), "max_compute_ms": 1000 * float(times.max()),
             "blocks": int(-(-(y.shape[0] + (conv.stream_offset if align else 0)) // conv.block_size))}
    log.info("realtime file mode: %d blocks of %.0f ms, algorithmic latency %.0f ms, compute per block "
             "median %.0f ms (max %.0f ms)", stats["blocks"], stats["block_ms"], stats["latency_ms"],
             stats["median_compute_ms"], stats["max_compute_ms"])
    return stats
