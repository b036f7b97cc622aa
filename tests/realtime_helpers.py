"""Helpers for the realtime tests (tests/test_realtime*.py, tests/test_gui*.py).

Tiny random-weight models come from the web-UI writers (real 4.1 file formats); the
pass-through block processor exercises the block DSP (buffer, SOLA, crossfade, latency) with
an exactly predictable output.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

from inference.realtime import BlockProcessor


class Passthrough(BlockProcessor):
    """Renders the input buffer itself: the output must be the input delayed by ``stream_offset``."""

    def render(self, k: int) -> np.ndarray:
        return self.buffer.copy()


def band_limited_noise(n: int, sr: int, cutoff: float = 15000.0, seed: int = 0) -> np.ndarray:
    """White noise low-passed at ``cutoff`` Hz (so a resampling round trip keeps it), peak 0.5."""
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(seed)
    sos = butter(8, cutoff, fs=sr, output="sos")
    y = sosfiltfilt(sos, rng.standard_normal(n))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def free_display() -> int:
    """An X display number with neither a lock file nor a socket."""
    for n in range(90, 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number in 90…199")


def start_xvfb() -> tuple[subprocess.Popen, str] | None:
    """Start Xvfb on a free display; ``(process, ":N")`` or None if Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        return None
    for _ in range(3):
        n = free_display()
        proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = Path(f"/tmp/.X11-unix/X{n}")
        for _ in range(100):
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is None and sock.exists():
            _wait_connectable(sock)
            return proc, f":{n}"
        proc.kill()
        proc.wait()
    raise RuntimeError("Xvfb did not start")


def _wait_connectable(sock: Path, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(sock))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()


def subprocess_env(display: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    if display is not None:
        env["DISPLAY"] = display
    return env


def write_audible_generator(path: Path, cfg: dict, seed: int = 0) -> Path:
    """A tiny ``G_*.pth`` whose output follows its input: the random NSF decoder's biases are zeroed
    (they otherwise bury the waveform under a constant) and its first and last convolutions
    scaled, so the audio is a harmonic waveform of f0 shaped by the content (std ≈ 0.06)."""
    import copy

    import torch

    from models import SynthesizerTrn
    from modules.checkpoint import save_checkpoint
    from modules.hparams import HParams

    h = HParams(**copy.deepcopy(cfg))
    torch.manual_seed(seed)
    net = SynthesizerTrn(h.data.filter_length // 2 + 1, h.train.segment_size // h.data.hop_length, **h.model)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".post." in name or "emb_g" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            if name.startswith("dec.") and name.endswith("bias") and not name.startswith("dec.m_source"):
                p.zero_()
        net.dec.conv_post.parametrizations.weight.original0.mul_(400)
        net.dec.conv_pre.parametrizations.weight.original0.mul_(10)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(net, None, 1e-4, 1, path)
    return path
