"""Speaker embeddings for the similarity metrics: Resemblyzer's released encoder, run by our module.

The weights come from the ``resemblyzer`` wheel (``resemblyzer/pretrained.pt``), installed
without its dependencies (``requirements-nodeps.txt``); the package is never imported (it
imports webrtcvad and librosa at import time). The file is read with ``weights_only=True``
through :mod:`modules.checkpoint`.

Pipeline for one utterance (16 kHz mono float, see :mod:`evaluation.speaker_encoder`)::

    wav ─► preprocess_for_speaker: raise quiet audio to −30 dBFS (never lowered),
           drop silences longer than ~0.2 s (energy gate)
        ─► speaker_mel: |STFT|² (400-pt Hann, hop 160, centred, zero pad) · 40-band mel bank
        ─► partials of 160 frames ─► SpeakerEncoder ─► mean ─► L2 norm  →  [256]

Resemblyzer's own preprocessing finds silences with WebRTC's VAD; this module uses an energy
gate instead (no extra native dependency): a 30 ms window counts as sound when its RMS is
within 40 dB of the loudest window, then the same smoothing over 8 windows and widening by
6 windows. On the *same* preprocessed audio the embeddings equal the package's
(tests/test_eval_speaker.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from evaluation.speaker_encoder import (HOP_SAMPLES, N_MELS, PARTIAL_FRAMES, SAMPLE_RATE, WINDOW_SAMPLES,
                                        SpeakerEncoder, partial_starts)
from modules.checkpoint import load_state_dict_checked, torch_load
from modules.errors import AudioError, CheckpointError, MissingPretrainedError
from modules.mel_processing import mel_basis, stft_magnitude

log = logging.getLogger(__name__)

RESEMBLYZER_VERSION = "0.1.4"
WHEEL_FILE = "pretrained.pt"
# SHA-256 of pretrained.pt in the resemblyzer 0.1.4 wheel: another file still loads, with a warning
# that its scores are not comparable with published ones.
RELEASED_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
INSTALL_HINT = f"pip install --no-deps resemblyzer=={RESEMBLYZER_VERSION} (see requirements-nodeps.txt)"

TARGET_DBFS = -30.0          # quiet audio is raised to this RMS level (dB re full scale)
GATE_WINDOW = SAMPLE_RATE * 30 // 1000   # 480 samples = 30 ms
GATE_RANGE_DB = 40.0         # a window is sound when within this many dB of the loudest window
GATE_SMOOTH = 8              # windows averaged when smoothing the sound/silence flags
GATE_WIDEN = 6               # sound regions are widened by this many windows on each side


def resemblyzer_weights() -> Path | None:
    """``pretrained.pt`` inside the installed resemblyzer wheel (the package is not imported), or None."""
    spec = importlib.util.find_spec("resemblyzer")
    for loc in (list(spec.submodule_search_locations or []) if spec is not None else []):
        p = Path(loc) / WHEEL_FILE
        if p.is_file():
            return p
    return None


def resolve_weights(path: str | Path | None = None) -> Path:
    """An explicit ``path`` must exist; otherwise the wheel's file; else a message saying how to get it."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MissingPretrainedError(f"{p}: speaker-encoder weights not found. Give the path of Resemblyzer's "
                                         f"pretrained.pt, or leave it out to use the installed wheel's ({INSTALL_HINT})")
        return p
    p = resemblyzer_weights()
    if p is None:
        raise MissingPretrainedError("speaker similarity needs Resemblyzer's released encoder weights, which ship in "
                                     f"its wheel; install it with: {INSTALL_HINT}")
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_encoder(path: str | Path, device: str | torch.device = "cpu") -> SpeakerEncoder:
    """Build a :class:`SpeakerEncoder` from a Resemblyzer checkpoint (``{"model_state": ...}``)."""
    path = Path(path)
    ckpt = torch_load(path, what="speaker-encoder checkpoint")
    state = ckpt.get("model_state") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a Resemblyzer encoder checkpoint (no 'model_state' entry)")
    state = {k: v for k, v in state.items() if not k.startswith("similarity_")}  # GE2E training terms
    model = SpeakerEncoder()
    load_state_dict_checked(model, state, source=str(path))
    if _sha256(path) != RELEASED_SHA256:
        log.warning("%s is not the released Resemblyzer %s encoder; similarity scores are not comparable with "
                    "scores from the released weights", path, RESEMBLYZER_VERSION)
    return model.to(device).eval()


_CACHE: dict[tuple, SpeakerEncoder] = {}
_LOCK = threading.Lock()


def load_speaker_encoder(path: str | Path | None = None, device: str | torch.device | None = "cpu") -> SpeakerEncoder:
    """The encoder from ``path`` (default: the resemblyzer wheel's weights), loaded once per process."""
    p = resolve_weights(path).resolve()
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (str(p), p.stat().st_mtime_ns, str(dev))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = read_encoder(p, dev)
        return _CACHE[key]


# --- front end -----------------------------------------------------------------------------------
def preprocess_for_speaker(wav: np.ndarray) -> np.ndarray:
    """16 kHz ``[L]`` float → the same audio raised to −30 dBFS if quieter, long silences removed.

    Raises :class:`AudioError` for silent audio (nothing to embed).
    """
    from scipy.ndimage import binary_dilation

    x = np.asarray(wav, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if rms <= 1e-7:
        raise AudioError("speaker embedding: the audio is silent")
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    if gain_db > 0:  # only ever raised, as the released preprocessing does
        x = x * np.float32(10 ** (gain_db / 20))
    n_win = len(x) // GATE_WINDOW
    if n_win < 2:
        return x
    x = x[: n_win * GATE_WINDOW]
    win_db = 10 * np.log10(np.mean(np.square(x.reshape(n_win, GATE_WINDOW), dtype=np.float64), axis=1) + 1e-12)
    sound = (win_db >= win_db.max() - GATE_RANGE_DB).astype(np.float64)
    # Moving average over GATE_SMOOTH windows (centred, zero outside), rounded back to flags: isolated
    # blips and dropouts disappear.
    smooth = np.convolve(np.pad(sound, ((GATE_SMOOTH - 1) // 2, GATE_SMOOTH // 2)), np.ones(GATE_SMOOTH) / GATE_SMOOTH,
                         mode="valid")
    keep = binary_dilation(np.round(smooth).astype(bool), np.ones(GATE_WIDEN + 1, dtype=bool))
    if not keep.any():
        return x
    return x[np.repeat(keep, GATE_WINDOW)]


def speaker_mel(wav: torch.Tensor) -> torch.Tensor:
    """``[L]`` 16 kHz audio → ``[1 + L // 160, 40]`` power mel (frames first, as the LSTM reads them)."""
    mag = stft_magnitude(wav[None].float(), WINDOW_SAMPLES, HOP_SAMPLES, WINDOW_SAMPLES, center=True,
                         pad_mode="constant")[0]                       # [201, T]
    basis = mel_basis(SAMPLE_RATE, WINDOW_SAMPLES, N_MELS, 0.0, None, dtype=mag.dtype, device=mag.device)
    return (basis @ mag.square()).T


@torch.no_grad()
def embed_preprocessed(encoder: SpeakerEncoder, wav: np.ndarray) -> np.ndarray:
    """Embedding ``[256]`` float32 (unit norm) of already preprocessed 16 kHz audio ``[L]``."""
    x = np.asarray(wav, dtype=np.float32)
    starts, padded = partial_starts(len(x))
    if padded > len(x):
        x = np.pad(x, (0, padded - len(x)))
    device = next(encoder.parameters()).device
    mel = speaker_mel(torch.from_numpy(x).to(device))
    partials = torch.stack([mel[s:s + PARTIAL_FRAMES] for s in starts])   # [P, 160, 40]
    mean = encoder(partials).mean(dim=0)
    return (mean / mean.norm()).cpu().numpy().astype(np.float32)


def embed_utterance(encoder: SpeakerEncoder, wav: np.ndarray) -> np.ndarray:
    """Embedding ``[256]`` of raw 16 kHz audio ``[L]`` (preprocessed first)."""
    return embed_preprocessed(encoder, preprocess_for_speaker(wav))


def embed_speaker(encoder: SpeakerEncoder, wavs: Iterable[np.ndarray]) -> np.ndarray:
    """Speaker embedding ``[256]``: the L2-normalised mean of the utterance embeddings of ``wavs``."""
    embs = [embed_utterance(encoder, w) for w in wavs]
    if not embs:
        raise AudioError("speaker embedding: no reference audio given")
    mean = np.mean(embs, axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (1 = same direction)."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
