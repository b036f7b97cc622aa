"""RMVPE (``rmvpe``): the E2E0 network reading ``pretrain/rmvpe.pt`` (spec §5.2, §7.8).

Pipeline: resample to 16 kHz (torchaudio-compatible sinc, lowpass width 128) → HTK log-mel
(128 bins, 30–8000 Hz, hop 160, centred) → zero-pad the frames to a multiple of 32 → U-Net →
3-channel conv → BiGRU → Linear → sigmoid salience ``[T, 360]`` → "local average" decoding
(weighted mean of the cents of the 9 bins around the argmax; unvoiced where the peak
≤ threshold) → nearest resize to ``p_len`` and interpolation.

4.1-Latest runs the model in float16 even on CPU; here it runs in float32 on CPU and in
float16 only when asked for on a GPU (``dtype=torch.float16``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.audio import sinc_resample
from modules.checkpoint import atomic_torch_save, load_state_dict_checked, torch_load
from modules.errors import CheckpointError
from modules.F0Predictor.base import NeuralF0Predictor, cached_model, resolve_device, restrict_salience
from modules.mel_processing import htk_log_mel_spectrogram
from modules.pretrained import require

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160           # samples at 16 kHz (10 ms)
N_MELS = 128
MEL_FMIN, MEL_FMAX = 30.0, 8000.0
WINDOW = 1024
N_CLASS = 360
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0; 20 cents per bin
BN_MOMENTUM = 0.01


# --- the network (parameter names as in the released rmvpe.pt) --------------------------------
class ConvBlockRes(nn.Module):
    """Two 3×3 conv + BN + ReLU with a residual (1×1 conv shortcut when channels change)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + (self.shortcut(x) if self.shortcut is not None else x)


class ResEncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int] | None, n_blocks: int) -> None:
        super().__init__()
        self.conv = nn.ModuleList([ConvBlockRes(in_channels if i == 0 else out_channels, out_channels)
                                   for i in range(n_blocks)])
        self.pool = nn.AvgPool2d(pool) if pool is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv:
            x = block(x)
        return x


class ResDecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int], n_blocks: int) -> None:
        super().__init__()
        out_padding = (0, 1) if stride == (1, 2) else (1, 1)
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride, 1, output_padding=out_padding, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList([ConvBlockRes(out_channels * 2 if i == 0 else out_channels, out_channels)
                                    for i in range(n_blocks)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class Encoder(nn.Module):
    def __init__(self, in_channels: int, n_layers: int, pool: tuple[int, int], n_blocks: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM)
        self.layers = nn.ModuleList()
        self.latent_channels = []
        for _ in range(n_layers):
            self.layers.append(ResEncoderBlock(in_channels, out_channels, pool, n_blocks))
            self.latent_channels.append(out_channels)
            in_channels, out_channels = out_channels, out_channels * 2
        self.out_channel = out_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        x = self.bn(x)
        for layer in self.layers:
            x = layer(x)
            skips.append(x)
            x = layer.pool(x)
        return x, skips


class DeepUnet0(nn.Module):
    """U-Net over ``[B, 1, T, 128]``. ``tf`` (a "timbre filter") is stored in the file but unused."""

    def __init__(self, pool: tuple[int, int], n_blocks: int, en_de_layers: int = 5, inter_layers: int = 4,
                 in_channels: int = 1, en_out_channels: int = 16) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, en_de_layers, pool, n_blocks, en_out_channels)
        mid = self.encoder.out_channel
        self.intermediate = nn.Module()
        self.intermediate.layers = nn.ModuleList(
            [ResEncoderBlock(mid // 2 if i == 0 else mid, mid, None, n_blocks) for i in range(inter_layers)])
        self.tf = nn.Module()
        self.tf.layers = nn.ModuleList([ConvBlockRes(c, c) for c in self.encoder.latent_channels])
        self.decoder = nn.Module()
        channels = [mid // 2 ** i for i in range(en_de_layers + 1)]
        self.decoder.layers = nn.ModuleList(
            [ResDecoderBlock(channels[i], channels[i + 1], pool, n_blocks) for i in range(en_de_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encoder(x)
        for layer in self.intermediate.layers:
            x = layer(x)
        for i, layer in enumerate(self.decoder.layers):
            x = layer(x, skips[-1 - i])
        return x


class BiGRU(nn.Module):
    def __init__(self, input_features: int, hidden_features: int, num_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_features, hidden_features, num_layers=num_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class E2E0(nn.Module):
    """RMVPE ``E2E0(n_blocks=4, n_gru=1, kernel_size=(2, 2))``: ``mel [B, 128, T] → salience [B, T, 360]``
    (T a multiple of 32)."""

    def __init__(self, n_blocks: int = 4, n_gru: int = 1, kernel_size: tuple[int, int] = (2, 2),
                 en_de_layers: int = 5, inter_layers: int = 4, in_channels: int = 1, en_out_channels: int = 16) -> None:
        super().__init__()
        self.unet = DeepUnet0(kernel_size, n_blocks, en_de_layers, inter_layers, in_channels, en_out_channels)
        self.cnn = nn.Conv2d(en_out_channels, 3, (3, 3), padding=(1, 1))
        if n_gru:
            self.fc = nn.Sequential(BiGRU(3 * N_MELS, 256, n_gru), nn.Linear(512, N_CLASS), nn.Dropout(0.25), nn.Sigmoid())
        else:
            self.fc = nn.Sequential(nn.Linear(3 * N_MELS, N_CLASS), nn.Dropout(0.25), nn.Sigmoid())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.transpose(-1, -2).unsqueeze(1)                 # [B, 1, T, 128]
        x = self.cnn(self.unet(x)).transpose(1, 2).flatten(-2)  # [B, T, 3·128]
        return self.fc(x)


# --- loading -------------------------------------------------------------------------------------
def _read_state_dict(path: Path) -> dict:
    ckpt = torch_load(path, what="RMVPE checkpoint")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if isinstance(ckpt, dict) and "fc.1.weight" in ckpt:  # a bare state dict (some re-uploads)
        return ckpt
    raise CheckpointError(f"{path}: not an RMVPE checkpoint (expected a dict with key 'model' holding the "
                          "E2E0 state dict); use the yxlllc RMVPE release model.pt renamed to rmvpe.pt")


def load_rmvpe(path: str | Path | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> E2E0:
    """The RMVPE network from ``path`` (default ``pretrain/rmvpe.pt``), loaded once per process."""
    p = require("rmvpe", path)
    device = resolve_device(device)

    def load() -> E2E0:
        model = E2E0(4, 1, (2, 2))
        load_state_dict_checked(model, _read_state_dict(p), source=str(p))
        return model.to(device=device, dtype=dtype).eval()

    return cached_model(("rmvpe", str(p.resolve()), p.stat().st_mtime_ns, str(device), dtype), load)


def make_random_checkpoint(path: str | Path, seed: int = 0, *, dtype: torch.dtype = torch.float16) -> Path:
    """Write an RMVPE checkpoint in the real format (``{"model": E2E0 state dict}``) with random weights.

    The architecture is fixed by 4.1 (92 M parameters), so the file is ≈ 184 MB with the
    default float16 tensors (≈ 368 MB with ``dtype=torch.float32``); the loader casts to the
    run dtype either way. BatchNorm statistics and affine parameters get mild noise so every
    layer does something.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = E2E0(4, 1, (2, 2))
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("running_var") or (k.endswith("weight") and v.ndim == 1):
            v.copy_(1.0 + 0.1 * torch.rand(v.shape, generator=gen))
        elif k.endswith(("running_mean", "bias")) and v.ndim == 1:
            v.copy_(0.02 * torch.randn(v.shape, generator=gen))
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    atomic_torch_save({"model": sd}, path)
    return Path(path)


# --- decoding ------------------------------------------------------------------------------------
def bin_cents(device: torch.device | str = "cpu") -> torch.Tensor:
    return 20 * torch.arange(N_CLASS, device=device) + CENTS_OFFSET


def local_average_f0(salience: torch.Tensor, threshold: float) -> torch.Tensor:
    """``salience [T, 360]`` → f0 ``[T]`` (float32 Hz, 0 = unvoiced), 4.1's ``to_local_average_cents``.

    Weighted mean of the bin cents over bins max(0, c−4) … min(359, c+4) around the argmax c;
    unvoiced where the peak salience ≤ threshold.
    """
    sal = salience.float()
    peak, center = sal.max(dim=1)
    offsets = torch.arange(-4, 5, device=sal.device)
    idx = center[:, None] + offsets[None, :]
    inside = (idx >= 0) & (idx < N_CLASS)  # the window is cut at the edges, not clamped
    idx = idx.clamp(0, N_CLASS - 1)
    w = sal.gather(1, idx) * inside
    cents = (w * bin_cents(sal.device)[idx]).sum(dim=1) / w.sum(dim=1)
    cents = torch.where(peak > threshold, cents, torch.zeros_like(cents))
    f0 = 10 * 2 ** (cents.double() / 1200)
    return torch.where(cents != 0, f0, torch.zeros_like(f0)).float()


# --- the predictor -------------------------------------------------------------------------------
class RMVPEF0Predictor(NeuralF0Predictor):
    """``rmvpe``. Extra keyword arguments: ``model_path`` (default ``pretrain/rmvpe.pt``),
    ``dtype`` (``torch.float16`` allowed on CUDA only; float32 otherwise)."""

    name = "rmvpe"

    def __init__(self, hop_length: int = 512, sampling_rate: int = 44100, *, model_path: str | Path | None = None,
                 dtype: torch.dtype = torch.float32, **kwargs) -> None:
        super().__init__(hop_length, sampling_rate, **kwargs)
        if dtype != torch.float32 and self.device.type != "cuda":
            log.warning("rmvpe: %s requested on %s; using float32 (half precision is a GPU option)", dtype, self.device)
            dtype = torch.float32
        self.dtype = dtype
        self.model = load_rmvpe(model_path, self.device, dtype)

    @torch.no_grad()
    def salience(self, wav: np.ndarray) -> torch.Tensor:
        """``wav`` at the model rate → salience ``[1 + L16 // 160, 360]`` (float32)."""
        audio = torch.from_numpy(wav).to(self.device)[None]
        if self.sampling_rate != SAMPLE_RATE:
            audio = sinc_resample(audio, self.sampling_rate, SAMPLE_RATE, lowpass_filter_width=128)
        n_frames = 1 + audio.shape[-1] // HOP
        if audio.shape[-1] <= WINDOW // 2:
            # Reflect padding needs more than n_fft/2 samples (4.1 crashed here): pad with zeros.
            audio = F.pad(audio, (0, WINDOW // 2 + 1 - audio.shape[-1]))
        mel = htk_log_mel_spectrogram(audio, sampling_rate=SAMPLE_RATE, n_fft=WINDOW, win_size=WINDOW,
                                      hop_length=HOP, n_mels=N_MELS, fmin=MEL_FMIN, fmax=MEL_FMAX)[..., :n_frames]
        mel = F.pad(mel, (0, -n_frames % 32))  # zeros up to a multiple of 32 frames
        return self.model(mel.to(self.dtype))[0, :n_frames].float()

    def model_track(self, wav: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f0 [T] Hz, peak salience [T])`` at 100 frames/s (16 kHz, hop 160)."""
        sal = self.salience(wav)
        if self.f0_range_given:
            sal = restrict_salience(sal, 10 * 2 ** (bin_cents(sal.device) / 1200), self.f0_min, self.f0_max)
        return local_average_f0(sal, self.threshold).cpu(), sal.max(dim=1).values.cpu()
