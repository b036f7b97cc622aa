"""Streaming sinc resampler for the device-rate bridge of the realtime path."""

from __future__ import annotations

import math

import numpy as np
import torch

from modules.audio import sinc_resample

__all__ = ["RESAMPLE_WIDTH", "StreamResampler"]

RESAMPLE_WIDTH = 16          # lowpass_filter_width of the streaming device-rate resamplers


class StreamResampler:
    """Block-by-block :func:`modules.audio.sinc_resample`: the concatenated output equals the
    whole-signal resampling (zeros before the start), delayed until the filter has its right
    context. The output count per push varies; :meth:`groups_after` predicts it (``n`` samples
    per group of ``o`` input samples, rates reduced by their gcd)."""

    def __init__(self, orig: int, new: int, lowpass_filter_width: int = RESAMPLE_WIDTH) -> None:
        g = math.gcd(int(orig), int(new))
        self.orig_rate, self.new_rate = int(orig), int(new)
        self.o, self.n = int(orig) // g, int(new) // g
        self.lowpass_filter_width = lowpass_filter_width
        base = min(self.o, self.n) * 0.99
        self.width = math.ceil(lowpass_filter_width * self.o / base)
        self.left = -(-self.width // self.o) * self.o   # whole groups of left context
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.groups = 0
        self.buf = np.zeros(self.left, np.float32)      # input from (groups·o − left)
        self.buf_start = -self.left

    def groups_after(self, received: int) -> int:
        return max(0, (received - self.width) // self.o)

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, x])
        self.received += x.shape[0]
        ready = self.groups_after(self.received)
        new = ready - self.groups
        if new <= 0:
            return np.zeros(0, np.float32)
        a = self.groups * self.o - self.left - self.buf_start          # segment start inside buf
        seg = self.buf[a: ready * self.o + self.width - self.buf_start]
        y = sinc_resample(torch.from_numpy(np.ascontiguousarray(seg)), self.orig_rate, self.new_rate,
                          lowpass_filter_width=self.lowpass_filter_width).numpy()
        first = self.left // self.o * self.n
        out = y[first: first + new * self.n]
        self.groups = ready
        drop = self.groups * self.o - self.left - self.buf_start
        self.buf = self.buf[drop:]
        self.buf_start += drop
        return out.astype(np.float32, copy=False)

