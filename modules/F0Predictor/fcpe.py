"""FCPE (``fcpe``): 4.1's ``pretrain/fcpe.pt`` model, or the model shipped in the torchfcpe wheel.

Both variants share the pipeline (spec §5.2): resample to the mel rate (torchaudio-compatible
sinc, lowpass width 128) → nvSTFT log-mel (``modules.mel_processing.STFT``) → frame-count fix
against ``len(input) // hop + 1`` computed from the *un-resampled* length (spec §13.26) →
conv stack → conformer layers → LayerNorm → weight-normed Linear → sigmoid → "local argmax"
decoding (weighted mean of the cent table over the 9 bins around the argmax, indices clamped;
unvoiced where the peak ≤ threshold) → nearest resize to ``p_len`` and interpolation.

The two files differ in layout:

* 4.1 (``pretrain/fcpe.pt``): ``{"config": {mel, model, loss}, "model": state dict}``; layers
  are Performer self-attention (8 heads of 64, stored random-feature ``projection_matrix``)
  + conformer conv module; keys ``stack.*``, ``decoder._layers.{i}.*``, ``dense_out.*``.
* torchfcpe 0.0.4 wheel (``assets/fcpe_c_v001.pt``): ``{"config_dict": ..., "model": ...}``,
  ``CFNaiveMelPE``: the same stack and conformer conv module, optionally attention with
  L2-normalised q/k (``use_fa_norm``) or none at all (``conv_only``, the shipped model); keys
  ``input_stack.*``, ``net.encoder_layers.{i}.*``, ``output_proj.*``. Its keys are renamed
  to the 4.1 ones on load, so one network class serves both.

When ``pretrain/fcpe.pt`` is missing the wheel's model is used, so FCPE works on a fresh
install with nothing downloaded. torchfcpe itself is never imported (it imports torchaudio).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.audio import sinc_resample
from modules.checkpoint import atomic_torch_save, load_state_dict_checked, torch_load
from modules.errors import CheckpointError, MissingPretrainedError
from modules.F0Predictor.base import NeuralF0Predictor, cached_model, resolve_device, restrict_salience
from modules.mel_processing import STFT
from modules.pretrained import expected_path, missing_message

log = logging.getLogger(__name__)

WHEEL_ASSET = "fcpe_c_v001.pt"


# --- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FCPEConfig:
    """What the network and its front end need, from either file layout."""

    sampling_rate: int = 16000
    num_mels: int = 128
    n_fft: int = 1024
    win_size: int = 1024
    hop_size: int = 160
    fmin: float = 0.0
    fmax: float = 8000.0
    out_dims: int = 360
    n_layers: int = 12
    n_chans: int = 512
    n_heads: int = 8          # 4.1's PCmer always uses 8
    f0_min: float = 32.70
    f0_max: float = 1975.5
    attention: bool = True    # False for torchfcpe's conv_only model
    qk_norm: bool = False     # torchfcpe's use_fa_norm
    source: str = "4.1"       # "4.1" or "torchfcpe"

    @classmethod
    def from_41(cls, config: dict, path: Path) -> "FCPEConfig":
        try:
            mel, model = config["mel"], config["model"]
            if model.get("use_siren") or model.get("use_full"):
                raise CheckpointError(f"{path}: FCPE with use_siren/use_full is not supported (4.1 refuses it too)")
            return cls(sampling_rate=int(mel["sampling_rate"]), num_mels=int(mel["num_mels"]), n_fft=int(mel["n_fft"]),
                       win_size=int(mel["win_size"]), hop_size=int(mel["hop_size"]), fmin=float(mel["fmin"]),
                       fmax=float(mel["fmax"]), out_dims=int(model["out_dims"]), n_layers=int(model["n_layers"]),
                       n_chans=int(model["n_chans"]),
                       f0_min=float(model["f0_min"]) if model.get("f0_min") is not None else 32.70,
                       f0_max=float(model["f0_max"]) if model.get("f0_max") is not None else 1975.5)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: FCPE config is incomplete or malformed ({e!r}); "
                                  "expected 'mel' and 'model' sections as in 4.1's fcpe.pt") from None

    @classmethod
    def from_torchfcpe(cls, config: dict, path: Path) -> "FCPEConfig":
        try:
            mel, model = config["mel"], config["model"]
            if model.get("type", "CFNaiveMelPE") != "CFNaiveMelPE" or model.get("use_harmonic_emb"):
                raise CheckpointError(f"{path}: unsupported torchfcpe model type {model.get('type')!r}")
            return cls(sampling_rate=int(mel.get("sr") or 16000), num_mels=int(mel.get("num_mels") or 128),
                       n_fft=int(mel.get("n_fft") or 1024), win_size=int(mel.get("win_size") or 1024),
                       hop_size=int(mel.get("hop_size") or 160), fmin=float(mel.get("fmin") or 0),
                       fmax=float(mel.get("fmax") or 8000), out_dims=int(model["out_dims"]),
                       n_layers=int(model["n_layers"]), n_chans=int(model["hidden_dims"]),
                       n_heads=int(model["n_heads"]), f0_min=float(model["f0_min"]), f0_max=float(model["f0_max"]),
                       attention=not bool(model.get("conv_only")), qk_norm=bool(model.get("use_fa_norm")),
                       source="torchfcpe")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: torchfcpe config is incomplete or malformed ({e!r})") from None


# --- the network -------------------------------------------------------------------------------
def _softmax_kernel(data: torch.Tensor, projection: torch.Tensor, is_query: bool, eps: float = 1e-4) -> torch.Tensor:
    """Performer's positive random features of ``data [B, H, N, D]`` with ``projection [M, D]``.

    Queries are stabilised by their row maximum; keys are not (4.1 dropped that term).
    """
    normalizer = data.shape[-1] ** -0.25
    ratio = projection.shape[0] ** -0.5
    proj = projection.type_as(data)
    data_dash = torch.einsum("...id,jd->...ij", normalizer * data, proj)
    diag = (data ** 2).sum(dim=-1, keepdim=True) / 2.0 * normalizer ** 2
    if is_query:
        return ratio * (torch.exp(data_dash - diag - data_dash.amax(dim=-1, keepdim=True)) + eps)
    return ratio * torch.exp(data_dash - diag + eps)


class FastAttention(nn.Module):
    def __init__(self, dim_head: int, qk_norm: bool) -> None:
        super().__init__()
        n_features = int(dim_head * math.log(dim_head))
        self.register_buffer("projection_matrix", torch.zeros(n_features, dim_head))
        self.qk_norm = qk_norm

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.qk_norm:
            q = q / (q.norm(dim=-1, keepdim=True) + 1e-8)
            k = k / (k.norm(dim=-1, keepdim=True) + 1e-8)
        q = _softmax_kernel(q, self.projection_matrix, is_query=True)
        k = _softmax_kernel(k, self.projection_matrix, is_query=False)
        # non-causal linear attention
        k_sum = k.sum(dim=-2)
        d_inv = 1.0 / (torch.einsum("...nd,...d->...n", q, k_sum.type_as(q)) + 1e-8)
        context = torch.einsum("...nd,...ne->...de", k, v)
        return torch.einsum("...de,...nd,...n->...ne", context, q, d_inv)


class SelfAttention(nn.Module):
    """Multi-head Performer self-attention; heads of 64 whatever the model width."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, dim_head: int = 64) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.fast_attention = FastAttention(dim_head, qk_norm)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (self.to_q(x), self.to_k(x), self.to_v(x)))
        out = self.fast_attention(q, k, v)  # [B, H, N, D]
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


class _DepthWise(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConformerConv(nn.Module):
    """LayerNorm → 1×1 conv → GLU → depthwise conv (31, same padding) → SiLU → 1×1 conv on ``[B, N, C]``;
    the positions in ``net`` give the file's key names (``net.0``, ``net.2``, ``net.4.conv``, ``net.6``)."""

    def __init__(self, dim: int, expansion: int = 2, kernel_size: int = 31) -> None:
        super().__init__()
        inner = dim * expansion
        self.net = nn.Sequential(nn.LayerNorm(dim), _Transpose(), nn.Conv1d(dim, inner * 2, 1), _GLU(),
                                 _DepthWise(inner, kernel_size), nn.SiLU(), nn.Conv1d(inner, dim, 1), _Transpose())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, attention: bool, qk_norm: bool) -> None:
        super().__init__()
        self.conformer = ConformerConv(dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, qk_norm) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.norm(x))
        return x + self.conformer(x)


class FCPE(nn.Module):
    """``mel [B, N, n_mels] → salience [B, N, out_dims]`` (sigmoid), with 4.1's parameter names.

    ``dense_out`` is weight-normed in the file (``weight_g``/``weight_v``); the product is
    formed once at load time with the same arithmetic as ``torch.nn.utils.weight_norm``.
    """

    def __init__(self, cfg: FCPEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stack = nn.Sequential(nn.Conv1d(cfg.num_mels, cfg.n_chans, 3, 1, 1), nn.GroupNorm(4, cfg.n_chans),
                                   nn.LeakyReLU(), nn.Conv1d(cfg.n_chans, cfg.n_chans, 3, 1, 1))
        self.decoder = nn.Module()
        self.decoder._layers = nn.ModuleList(
            [EncoderLayer(cfg.n_chans, cfg.n_heads, cfg.attention, cfg.qk_norm) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(cfg.n_chans)
        self.dense_out = nn.Linear(cfg.n_chans, cfg.out_dims)
        self.register_buffer("cent_table", torch.zeros(cfg.out_dims))

    def logits(self, mel: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output ``[B, N, out_dims]``."""
        x = self.stack(mel.transpose(1, 2)).transpose(1, 2)
        for layer in self.decoder._layers:
            x = layer(x)
        return self.dense_out(self.norm(x))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(mel))


_TORCHFCPE_RENAMES = (("input_stack.", "stack."), ("net.encoder_layers.", "decoder._layers."), ("output_proj.", "dense_out."))


def _fold_weight_norm(sd: dict, prefix: str, path: Path) -> dict:
    g, v = sd.pop(prefix + "weight_g", None), sd.pop(prefix + "weight_v", None)
    if g is None and v is None:  # torch.nn.utils.parametrizations.weight_norm naming
        g = sd.pop(prefix + "parametrizations.weight.original0", None)
        v = sd.pop(prefix + "parametrizations.weight.original1", None)
    if g is None or v is None:
        if prefix + "weight" in sd:
            return sd
        raise CheckpointError(f"{path}: missing '{prefix}weight_g' / '{prefix}weight_v'")
    sd[prefix + "weight"] = torch._weight_norm(v.float(), g.float(), 0)
    return sd


def _read(path: Path) -> tuple[FCPEConfig, dict]:
    ckpt = torch_load(path, what="FCPE checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not an FCPE checkpoint (expected a dict with 'config' and 'model')")
    sd = dict(ckpt["model"])
    if isinstance(ckpt.get("config"), dict):
        cfg = FCPEConfig.from_41(ckpt["config"], path)
    elif isinstance(ckpt.get("config_dict"), dict):
        cfg = FCPEConfig.from_torchfcpe(ckpt["config_dict"], path)
        renamed = {}
        for k, v in sd.items():
            for old, new in _TORCHFCPE_RENAMES:
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            renamed[k] = v
        renamed.pop("gaussian_blurred_cent_mask", None)  # training-only buffer
        sd = renamed
    else:
        raise CheckpointError(f"{path}: FCPE checkpoint has no 'config' (4.1) or 'config_dict' (torchfcpe) entry")
    return cfg, _fold_weight_norm(sd, "dense_out.", path)


def torchfcpe_weights() -> Path | None:
    """``assets/fcpe_c_v001.pt`` inside the installed torchfcpe wheel (not imported), or None."""
    spec = importlib.util.find_spec("torchfcpe")
    for loc in (list(spec.submodule_search_locations or []) if spec is not None else []):
        p = Path(loc) / "assets" / WHEEL_ASSET
        if p.is_file():
            return p
    return None


def resolve_fcpe_path(path: str | Path | None = None) -> Path:
    """An explicit ``path`` must exist; otherwise ``pretrain/fcpe.pt``, else the wheel's model."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MissingPretrainedError(missing_message("fcpe", p))
        return p
    p = expected_path("fcpe")
    if p.is_file():
        return p
    wheel = torchfcpe_weights()
    if wheel is None:
        raise MissingPretrainedError(missing_message("fcpe", p) + " Alternatively install the torchfcpe wheel, "
                                     "whose bundled model is used when fcpe.pt is absent: "
                                     "pip install --no-deps torchfcpe==0.0.4")
    log.info("fcpe: %s not found; using the model shipped in the torchfcpe wheel (%s)", p, wheel)
    return wheel


def load_fcpe(path: str | Path | None = None, device: str | torch.device | None = None) -> FCPE:
    """The FCPE network (either layout) on ``device`` in float32, loaded once per process."""
    p = resolve_fcpe_path(path)
    device = resolve_device(device)

    def load() -> FCPE:
        cfg, sd = _read(p)
        model = FCPE(cfg)
        load_state_dict_checked(model, sd, source=str(p))
        return model.to(device).eval()

    return cached_model(("fcpe", str(p.resolve()), p.stat().st_mtime_ns, str(device)), load)


def _gaussian_orthogonal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Performer's random feature matrix (orthogonal blocks scaled by Gaussian row norms)."""
    blocks = []
    for _ in range(math.ceil(rows / cols)):
        q, _ = torch.linalg.qr(torch.randn(cols, cols, generator=gen), mode="reduced")
        blocks.append(q.T)
    m = torch.cat(blocks)[:rows]
    return torch.randn(rows, cols, generator=gen).norm(dim=1)[:, None] * m


def make_random_checkpoint(path: str | Path, seed: int = 0, *, n_layers: int = 2, n_chans: int = 64) -> Path:
    """Write a small FCPE checkpoint in 4.1's format (``config`` + ``model`` with ``dense_out.weight_g/_v``,
    ``projection_matrix`` buffers and the ``cent_table``) holding random weights."""
    cfg = FCPEConfig(n_layers=n_layers, n_chans=n_chans)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FCPE(cfg)
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("projection_matrix"):
            v.copy_(_gaussian_orthogonal(v.shape[0], v.shape[1], gen))
        elif v.ndim == 1 and k != "cent_table" and bool((v == v.flatten()[0]).all()):
            v.add_(0.02 * torch.randn(v.shape, generator=gen))  # zero / one initialised norms and biases
    cents = 1200 * np.log2(np.array([cfg.f0_min, cfg.f0_max]) / 10.0)
    sd["cent_table"] = torch.tensor(np.linspace(cents[0], cents[1], cfg.out_dims), dtype=torch.float32)
    weight = sd.pop("dense_out.weight")
    sd["dense_out.weight_g"] = weight.norm(dim=1, keepdim=True)
    sd["dense_out.weight_v"] = weight
    config = {
        "mel": {"sampling_rate": cfg.sampling_rate, "num_mels": cfg.num_mels, "n_fft": cfg.n_fft,
                "win_size": cfg.win_size, "hop_size": cfg.hop_size, "fmin": 0, "fmax": 8000},
        "model": {"input_channel": cfg.num_mels, "out_dims": cfg.out_dims, "n_layers": n_layers, "n_chans": n_chans,
                  "use_siren": False, "use_full": False, "f0_max": cfg.f0_max, "f0_min": cfg.f0_min,
                  "confidence": False},
        "loss": {"loss_mse_scale": 10, "loss_l2_regularization": False, "loss_l2_regularization_scale": 1,
                 "loss_grad1_mse": False, "loss_grad1_mse_scale": 1},
    }
    atomic_torch_save({"config": config, "model": sd}, path)
    return Path(path)


# --- front end and decoding ------------------------------------------------------------------------
def fcpe_mel(model: FCPE, audio: torch.Tensor, sampling_rate: int) -> torch.Tensor:
    """``audio [1, L]`` at ``sampling_rate`` → model input ``[1, L // hop + 1, n_mels]``."""
    cfg = model.cfg
    res = audio
    if sampling_rate != cfg.sampling_rate:
        res = sinc_resample(audio, sampling_rate, cfg.sampling_rate, lowpass_filter_width=128)
    stft = STFT(cfg.sampling_rate, cfg.num_mels, cfg.n_fft, cfg.win_size, cfg.hop_size, cfg.fmin, cfg.fmax)
    mel = stft.get_mel(res).transpose(1, 2)  # [1, frames, n_mels]
    # 4.1 compares with the frame count of the *input* length (spec §13.26): append the last
    # frame once if short, crop if long.
    n_frames = audio.shape[-1] // cfg.hop_size + 1
    if n_frames > mel.shape[1]:
        mel = torch.cat((mel, mel[:, -1:, :]), 1)
    return mel[:, :n_frames, :]


def local_argmax_f0(salience: torch.Tensor, cent_table: torch.Tensor, threshold: float) -> torch.Tensor:
    """``salience [N, bins]`` → f0 ``[N]`` (Hz): weighted mean of ``cent_table`` over the 9 bins around
    the argmax (indices clamped, so edge bins repeat), 0 where the peak ≤ threshold."""
    peak, center = salience.max(dim=-1, keepdim=True)
    idx = (center + torch.arange(-4, 5, device=salience.device)).clamp(0, salience.shape[-1] - 1)
    w = salience.gather(-1, idx)
    cents = (cent_table[idx] * w).sum(dim=-1, keepdim=True) / w.sum(dim=-1, keepdim=True)
    # 4.1 multiplies by -inf below the threshold, giving 10·2^(-inf) = 0 Hz.
    mask = torch.where(peak <= threshold, torch.full_like(peak, -float("inf")), torch.ones_like(peak))
    return (10.0 * 2 ** (cents * mask / 1200.0))[:, 0]


# --- the predictor -------------------------------------------------------------------------------
class FCPEF0Predictor(NeuralF0Predictor):
    """``fcpe``. Extra keyword argument ``model_path``: a 4.1 ``fcpe.pt`` or a torchfcpe checkpoint;
    default ``pretrain/fcpe.pt`` and, when that is missing, the torchfcpe wheel's model. Runs in float32."""

    name = "fcpe"

    def __init__(self, hop_length: int = 512, sampling_rate: int = 44100, *, model_path: str | Path | None = None,
                 **kwargs) -> None:
        super().__init__(hop_length, sampling_rate, **kwargs)
        self.model = load_fcpe(model_path, self.device)

    @torch.no_grad()
    def salience(self, wav: np.ndarray) -> torch.Tensor:
        """``wav`` at the model rate → salience ``[L // mel_hop + 1, 360]``."""
        audio = torch.from_numpy(wav).to(self.device)[None]
        return self.model(fcpe_mel(self.model, audio, self.sampling_rate))[0]

    def model_track(self, wav: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f0 [T] Hz, peak salience [T])`` at the model's mel frame rate."""
        sal = self.salience(wav)
        table = self.model.cent_table
        if self.f0_range_given:
            sal = restrict_salience(sal, 10.0 * 2 ** (table / 1200.0), self.f0_min, self.f0_max)
        return local_argmax_f0(sal, table, self.threshold).cpu(), sal.max(dim=-1).values.cpu()
