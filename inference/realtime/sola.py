"""Block DSP of the realtime path: input buffer, SOLA splice, sin² crossfade, latency.

Each block is appended to a history buffer, the buffer's tail is converted (by a subclass's
:meth:`BlockProcessor.render`) and joined to the previous output::

    input buffer (model rate, whole frames; the newest block at the right)
    |<─────────── history (context) ───────────>|<──── new block (k·hop) ────>|
                    |<──── decoder window: margin + frames of the output window ────>|
                              |<──────── n + crossfade + sola_search ────────>|<delay>|
                              |s|<───────────── n (out) ──────────>|<─ cf ─>|
                               ▲ SOLA offset s ∈ [0, sola_search]: best match with the previous tail
    out  = window[s : s+n], its first cf samples blended: new·sin²(π/2·u) + tail·(1 − sin²(π/2·u))
    tail = window[s+n : s+n+cf]  (blended into the next block)

Algorithmic latency (what a listener hears, before device buffers and compute time) =
block + crossfade + sola_search (0.01 s) + last_delay (0.02 s), as 4.1 reports it; SOLA can
shorten it by up to sola_search. In file mode the output stream lags the input stream by
``stream_offset`` = latency − block (the block itself is not waited for).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from modules.errors import AudioError

__all__ = ["BlockProcessor", "LAST_DELAY_SECONDS", "SOLA_SEARCH_SECONDS"]

SOLA_SEARCH_SECONDS = 0.01   # 4.1: sola_search_frame = 0.01·sr
LAST_DELAY_SECONDS = 0.02    # 4.1: last_delay_frame = 0.02·sr (the only look-ahead)


class BlockProcessor:
    """The model-independent part of the realtime path (see the module diagram).

    Subclasses implement :meth:`render`, which returns converted audio ending at the end of the
    input buffer. Sizes are in samples at ``sample_rate``; blocks are whole frames of ``hop``.

    Args:
        block_frames: nominal block length in frames. max_block_frames: the largest block
            :meth:`process` accepts (the device-rate bridge feeds blocks that vary by a frame).
        crossfade_time, history_blocks: as the GUI (seconds, blocks).
    """

    def __init__(self, *, sample_rate: int, hop: int, block_frames: int, crossfade_time: float,
                 history_blocks: int, max_block_frames: int | None = None) -> None:
        self.sample_rate = int(sample_rate)
        self.hop = int(hop)
        self.block_frames = max(1, int(block_frames))
        self.block_size = self.block_frames * self.hop
        self.max_block_frames = max(self.block_frames, int(max_block_frames or 0))
        self.crossfade = max(1, int(crossfade_time * self.sample_rate))
        self.sola_search = int(SOLA_SEARCH_SECONDS * self.sample_rate)
        self.last_delay = int(LAST_DELAY_SECONDS * self.sample_rate)
        longest = self.max_block_frames * self.hop
        need = max(longest + self.crossfade + self.sola_search + 2 * self.last_delay,
                   (1 + int(history_blocks)) * self.block_size)
        self.buffer_frames = -(-need // self.hop)
        # fade curves (4.1): fade_in = sin²(π/2·u), u = 0, 1/cf, …; fade_out = 1 − fade_in
        u = np.arange(self.crossfade, dtype=np.float64) / self.crossfade
        self.fade_in = (np.sin(np.pi / 2 * u) ** 2).astype(np.float32)
        self.fade_out = (1 - self.fade_in).astype(np.float32)
        self.compute_times: deque[float] = deque(maxlen=200)
        self.sola_offsets: deque[int] = deque(maxlen=200)  # 0 while consecutive blocks agree
        self.reset()

    def reset(self) -> None:
        """Forget the stream (silence in the buffer, no previous tail)."""
        self.buffer = np.zeros(self.buffer_frames * self.hop, dtype=np.float32)
        self.tail = np.zeros(self.crossfade, dtype=np.float32)
        self.frames_seen = 0          # frames of input consumed since the start
        self.last_sola_offset = 0
        self.compute_times.clear()
        self.sola_offsets.clear()

    # --- reported figures ---
    @property
    def stream_offset(self) -> int:
        """Samples by which the output stream lags the input stream (file mode)."""
        return self.crossfade + self.sola_search + self.last_delay

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: block + crossfade + SOLA search + last delay (4.1's figure)."""
        return self.block_size + self.stream_offset

    @property
    def latency_seconds(self) -> float:
        return self.latency_samples / self.sample_rate

    @property
    def last_compute_time(self) -> float:
        """Seconds the last :meth:`process` call took (0 before the first)."""
        return self.compute_times[-1] if self.compute_times else 0.0

    def window_length(self, n: int) -> int:
        """Samples :meth:`render` must return for an ``n``-sample block."""
        return n + self.crossfade + self.sola_search + self.last_delay

    # --- the block loop ---
    def process(self, block: np.ndarray) -> np.ndarray:
        """One block in (float32 ``[k·hop]``, mono, model rate) → one block out, same length."""
        t0 = time.perf_counter()
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        n = x.shape[0]
        if n == 0 or n % self.hop or n > self.max_block_frames * self.hop:
            raise AudioError(f"realtime block of {n} samples: blocks must be 1…{self.max_block_frames} whole frames "
                             f"of {self.hop} samples")
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        k = n // self.hop
        self.buffer[:-n] = self.buffer[n:]
        self.buffer[-n:] = x
        self.frames_seen += k
        audio = np.asarray(self.render(k), dtype=np.float32)
        need = self.window_length(n)
        if audio.shape[0] < need:
            raise AssertionError(f"render returned {audio.shape[0]} samples, need {need}")
        window = audio[audio.shape[0] - need: audio.shape[0] - self.last_delay]
        out = self._sola_crossfade(window, n)
        self.compute_times.append(time.perf_counter() - t0)
        return out

    def _sola_crossfade(self, window: np.ndarray, n: int) -> np.ndarray:
        cf, search = self.crossfade, self.sola_search
        offset = 0
        if search > 0 and self.tail.any():
            head = window[:cf + search].astype(np.float64)
            num = np.correlate(head, self.tail.astype(np.float64), mode="valid")     # [search + 1]
            energy = np.convolve(head * head, np.ones(cf), mode="valid")             # moving Σx² over cf
            offset = int(np.argmax(num / np.sqrt(np.maximum(energy, 0) + 1e-8)))
        self.last_sola_offset = offset
        self.sola_offsets.append(offset)
        seg = window[offset: offset + n + cf].copy()
        seg[:cf] = seg[:cf] * self.fade_in + self.tail * self.fade_out
        self.tail = seg[n:n + cf].copy()
        return seg[:n]

    def render(self, k: int) -> np.ndarray:
        """Converted audio ending at the end of :attr:`buffer`, at least ``window_length(k·hop)`` long."""
        raise NotImplementedError

