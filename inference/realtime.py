"""Realtime voice conversion (4.1-Latest ``gui.py``, spec §11.3), without any GUI.

Fixed-size blocks in, blocks of the same size out. Each block is appended to a history buffer,
the buffer's tail is converted and joined to the previous output with SOLA and a sin² crossfade::

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
shorten it by up to sola_search. In file mode the output stream lags the input by
``stream_offset`` = latency − block (the block itself is not waited for).

Only what the new block needs is computed (4.1 reconverted the whole buffer every block):

* f0 and speech-encoder units are computed on the newest frames (the new block, the frames of
  the output window, plus ``feature_context`` seconds of left context) and cached per frame;
  older frames keep the values computed when they were new (``incremental=False``: 4.1's full
  recomputation);
* the prior encoder and flow run over the whole buffer (they are cheap and use it as context),
  the NSF-HiFiGAN decoder (the costly part) only over the frames that reach the output window plus
  its receptive field, so those samples equal a full-buffer decode;
* the decoder's harmonic source runs on the frame-rate ("ONNX") path as in 4.1, with its phase
  carried from block to block (4.1 restarted it at the buffer start every block, so consecutive
  blocks disagreed and only SOLA could line them up); the prior noise ε is drawn once per frame
  and kept (4.1 drew a new ε for the whole buffer every block);
* a block whose output window is entirely below the response threshold is not synthesised.

The realtime path at a device rate other than the model rate (:class:`RealtimeConverter`) adds
streaming sinc resamplers on both sides and a FIFO that absorbs the ≤ 1-frame jitter.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from modules.audio import sinc_resample
from modules.errors import AudioError, ConfigError, SvcError

log = logging.getLogger(__name__)

SOLA_SEARCH_SECONDS = 0.01   # 4.1: sola_search_frame = 0.01·sr
LAST_DELAY_SECONDS = 0.02    # 4.1: last_delay_frame = 0.02·sr (the only look-ahead)
GATE_DILATION = 8            # 4.1: max_pool1d(kernel 8, stride 1, padding 4) over the gate mask
SEED = 52468                 # the synthesizer's seed (4.1); also seeds ε and the sine phases here
RESAMPLE_WIDTH = 16          # lowpass_filter_width of the streaming device-rate resamplers


# --- settings ------------------------------------------------------------------------------------
@dataclass
class RealtimeSettings:
    """Everything the realtime GUI sets (spec §11.3), saved as JSON (4.1 pickled it).

    Times are in seconds, the threshold in dB, ``transpose`` in semitones. ``config_path`` /
    ``diffusion_config_path`` empty = ``config.json`` / ``config.yaml`` beside the model file.
    ``sample_rate`` 0 = open the sound devices at the model rate if they accept it, else at
    their default rate (with resampling). Fields marked *live* take effect on the next block.
    """

    # model
    model_path: str = "logs/44k/G_30000.pth"
    config_path: str = ""
    cluster_model_path: str = "logs/44k/kmeans_10000.pt"
    speaker: str = ""                   # live; empty = the model's first speaker
    device: str = "auto"                # torch device: auto, cpu, cuda, cuda:N
    # sound devices
    input_device: str = ""              # "<name> (<host API>)" as 4.1; empty = system default
    output_device: str = ""
    sample_rate: int = 0
    # normal settings
    threshold: float = -45.0            # live; response threshold (volume gate), dB
    cluster_ratio: float = 0.0          # live; k-means / retrieval mix ratio
    transpose: float = 0.0              # live
    noise_scale: float = 0.4            # live
    # performance
    block_time: float = 0.5
    crossfade_time: float = 0.04
    history_blocks: int = 4             # 4.1 "extra" buffer blocks of context
    f0_predictor: str = "fcpe"          # live
    f0_threshold: float = 0.05          # live; cr_threshold of crepe / rmvpe / fcpe
    enhancer: bool = False
    feature_retrieval: bool = False
    auto_f0: bool = False               # live
    skip_safe_zone: bool = False        # live; 4.1 "diff_silence": synthesise only the tail
    enhancer_adaptive_key: float = 0.0  # live
    # shallow diffusion
    diffusion_model_path: str = "logs/44k/diffusion/model_400000.pt"
    diffusion_config_path: str = ""
    use_diffusion: bool = False
    k_step: int = 100                   # live
    diffusion_speedup: int = 10         # live
    diffusion_method: str = "ddim"      # live
    second_encoding: bool = False       # live
    # new in this implementation
    feature_context: float = 1.0        # s of left context for f0 / units of new frames
    incremental: bool = True            # False: recompute f0 / units of the whole buffer (4.1)

    LIVE = ("speaker", "threshold", "cluster_ratio", "transpose", "noise_scale", "f0_predictor", "f0_threshold",
            "auto_f0", "skip_safe_zone", "enhancer_adaptive_key", "k_step", "diffusion_speedup",
            "diffusion_method", "second_encoding")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # 5 → 5.0 for float fields; wrong types are errors
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.type, "settings"))

    # --- JSON ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "settings") -> "RealtimeSettings":
        """Build from a mapping; unknown keys and wrong types are :class:`ConfigError`\\ s."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a JSON object of settings, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        return cls(**{name: _coerce(name, value, known[name].type, source) for name, value in data.items()})

    def replace(self, **changes) -> "RealtimeSettings":
        return RealtimeSettings.from_dict({**self.to_dict(), **changes})

    def validate(self) -> "RealtimeSettings":
        """Refuse impossible values, naming the setting. Returns ``self``."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(0.01 <= self.block_time <= 10, f"block_time must be in [0.01, 10] s, got {self.block_time}")
        need(0 < self.crossfade_time <= 1, f"crossfade_time must be in (0, 1] s, got {self.crossfade_time}")
        need(self.history_blocks >= 0, f"history_blocks must be ≥ 0, got {self.history_blocks}")
        need(self.noise_scale >= 0, f"noise_scale must be ≥ 0, got {self.noise_scale}")
        need(0 <= self.cluster_ratio <= 1, f"cluster_ratio must be in [0, 1], got {self.cluster_ratio}")
        need(-96 <= self.transpose <= 96, f"transpose must be in [-96, 96] semitones, got {self.transpose}")
        need(self.threshold <= 0, f"threshold is in dB below full scale and must be ≤ 0, got {self.threshold}")
        need(self.k_step >= 1, f"k_step must be ≥ 1, got {self.k_step}")
        need(self.diffusion_speedup >= 1, f"diffusion_speedup must be ≥ 1, got {self.diffusion_speedup}")
        need(self.feature_context >= 0, f"feature_context must be ≥ 0 s, got {self.feature_context}")
        need(self.sample_rate == 0 or 8000 <= self.sample_rate <= 384000,
             f"sample_rate must be 0 (automatic) or a device rate in Hz, got {self.sample_rate}")
        from diffusion.samplers import SAMPLERS
        need(self.diffusion_method in SAMPLERS,
             f"unknown diffusion_method {self.diffusion_method!r}; choose one of: {', '.join(SAMPLERS)}")
        from inference.components import f0_predictor_names
        names = f0_predictor_names()
        need(self.f0_predictor in names, f"unknown f0_predictor {self.f0_predictor!r}; choose one of: {', '.join(names)}")
        return self

    def resolved_config_path(self) -> Path:
        return Path(self.config_path) if self.config_path else Path(self.model_path).parent / "config.json"

    def resolved_diffusion_config_path(self) -> Path:
        if self.diffusion_config_path:
            return Path(self.diffusion_config_path)
        return Path(self.diffusion_model_path).parent / "config.yaml"


def _coerce(name: str, value: Any, type_name: Any, source: str) -> Any:
    type_name = getattr(type_name, "__name__", type_name)
    ok = {"str": isinstance(value, str), "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool)
          or isinstance(value, float) and value.is_integer(),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool)}[type_name]
    if not ok:
        raise ConfigError(f"{source}: setting {name!r} must be a {type_name}, got {value!r}")
    return {"int": int, "float": float}.get(type_name, lambda v: v)(value)


def load_settings(path: str | os.PathLike) -> RealtimeSettings:
    """Read settings JSON written by :func:`save_settings` (missing keys take the defaults)."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON settings file ({e}); delete it to start from the defaults") from None
    return RealtimeSettings.from_dict(data, source=str(path))


def save_settings(settings: RealtimeSettings, path: str | os.PathLike) -> Path:
    """Write settings as JSON, atomically."""
    import json

    from modules.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(settings.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def load_svc(settings: RealtimeSettings):
    """The offline pipeline object the engine drives, loaded as 4.1's GUI did (spec §11.3)."""
    from inference.infer_tool import Svc

    model = Path(settings.model_path)
    config = settings.resolved_config_path()
    for p, what in ((model, "model file (G_*.pth)"), (config, "model config (config.json)")):
        if not p.is_file():
            raise SvcError(f"{p}: {what} not found; choose the model in the GUI or pass -m/-c")
    return Svc(str(model), str(config), device=settings.device,
               cluster_model_path=settings.cluster_model_path or None,
               nsf_hifigan_enhance=settings.enhancer and not settings.use_diffusion,
               diffusion_model_path=settings.diffusion_model_path,
               diffusion_config_path=str(settings.resolved_diffusion_config_path()),
               shallow_diffusion=settings.use_diffusion, feature_retrieval=settings.feature_retrieval)


# --- block DSP: buffer, SOLA, crossfade, latency ---------------------------------------------------
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


# --- sine-source phase carried across blocks --------------------------------------------------------
class _SinePhase:
    """Per-harmonic phase (cycles) of the decoder's frame-rate sine source at a given frame.

    In the frame-rate path the sample-level phase at the end of window frame f is
    ``φ0 + upp·Σ_{i≤f} r_i`` (r_i = (h·f0_i/sr) mod 1) when ``φ0/upp`` is added to frame 0's
    increment (that is where 4.1 added its random initial phase). Carrying φ across blocks,
    with the f0 each frame was synthesised with, makes consecutive blocks agree.
    """

    def __init__(self, sine_gen, upp: int) -> None:
        self.sine_gen = sine_gen
        self.dim = int(sine_gen.dim)
        self.sr = float(sine_gen.sampling_rate)
        self.upp = int(upp)
        gen = torch.Generator().manual_seed(SEED)
        phase = torch.rand(self.dim, generator=gen, dtype=torch.float64).numpy()
        phase[0] = 0.0  # the fundamental starts at 0, harmonics at random phases (as 4.1)
        self.initial = phase
        self.reset()

    def reset(self) -> None:
        self.frame: int | None = None
        self.phase = self.initial.copy()
        self.f0: np.ndarray = np.zeros(0, np.float32)
        self.offset = torch.zeros(self.dim)

    @property
    def offset(self) -> torch.Tensor:
        """Initial phases (cycles / upp, ``[dim]``) the sine generator uses instead of its random draw."""
        return self.sine_gen.phase_offset

    @offset.setter
    def offset(self, value: torch.Tensor) -> None:
        self.sine_gen.phase_offset = value

    def increments(self, f0: np.ndarray) -> np.ndarray:
        """Phase advance (cycles, float64 ``[dim]``) over frames with ``f0`` (Hz), as the model computes r."""
        if f0.size == 0:
            return np.zeros(self.dim)
        harmonics = torch.arange(1, self.dim + 1, dtype=torch.float32)
        r = (torch.from_numpy(np.ascontiguousarray(f0, dtype=np.float32))[:, None] * harmonics / self.sr) % 1
        return (self.upp * r.double()).sum(0).numpy()

    def start(self, frame: int, f0: np.ndarray) -> torch.Tensor:
        """Phase at absolute ``frame`` for a window starting there, synthesised with ``f0 [D]``;
        returns the offset to add to frame 0's increment (``[dim]`` float32)."""
        if self.frame is not None:
            n = frame - self.frame
            if n < 0:
                raise AssertionError("the decoder window moved backwards")
            used = self.f0[:n]
            if used.shape[0] < n:  # frames never synthesised (cannot happen with whole windows)
                used = np.concatenate([used, np.zeros(n - used.shape[0], np.float32)])
            self.phase = (self.phase + self.increments(used)) % 1.0
        elif frame < 0:
            # The first window starts in the silence before the stream: count back from frame 0,
            # where the phases are `initial` (as an offline conversion of the same input starts).
            self.phase = (self.initial - self.increments(np.asarray(f0, np.float32)[:-frame])) % 1.0
        self.frame = frame
        self.f0 = np.asarray(f0, dtype=np.float32).copy()
        self.offset = torch.from_numpy(self.phase / self.upp).float()
        return self.offset


def decoder_radius_frames(dec) -> int:
    """Frames of z / f0 on each side that influence a decoder output sample (NSF-HiFiGAN).

    conv_pre (kernel 7) reaches 3 frames; each upsampling stage adds ceil(k/u) input samples of
    its transposed conv and the widest residual block's reach at the new rate; conv_post adds 3
    samples. The snake variant's anti-aliasing filters add 6 samples at every stage. +2 frames slack.
    """
    h = dec.h
    key = str(h["resblock"])
    n_dil = 3 if key == "1" else 2
    mrf = max(sum((k - 1) // 2 * d for d in dil[:n_dil]) + (n_dil * ((k - 1) // 2) if key == "1" else 0)
              for k, dil in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]))
    snake = 6 if hasattr(dec, "snakes") else 0
    reach, rate = 3.0, 1
    for u, k in zip(h["upsample_rates"], h["upsample_kernel_sizes"]):
        reach += (math.ceil(k / u) + snake) / rate
        rate *= int(u)
        reach += (mrf + snake * n_dil * 2) / rate
    reach += (3 + snake) / rate
    return math.ceil(reach) + 2


# --- the engine ------------------------------------------------------------------------------------
class RealtimeEngine(BlockProcessor):
    """Realtime conversion with a loaded :class:`inference.infer_tool.Svc` at the model rate.

    ``process(block [k·hop]) → [k·hop]`` (k = ``block_frames`` normally). The block length is
    ``block_time`` rounded to whole frames (4.1 used any sample count, so its frame grid moved
    from block to block). The Svc's decoder is switched to the frame-rate sine path (as 4.1's
    GUI did); :meth:`close` switches it back.
    """

    def __init__(self, svc, settings: RealtimeSettings, *, max_block_frames: int | None = None) -> None:
        settings.validate()
        if getattr(svc, "net_g_ms", None) is None:
            raise SvcError("realtime conversion needs a SoVITS model (diffusion-only models are not supported)")
        if getattr(svc, "spk_mix_enable", False):
            log.info("speaker mixing is not used in realtime conversion")
        self.svc = svc
        self.settings = settings
        sr, hop = int(svc.target_sample), int(svc.hop_size)
        super().__init__(sample_rate=sr, hop=hop, block_frames=round(settings.block_time * sr / hop),
                         crossfade_time=settings.crossfade_time, history_blocks=settings.history_blocks,
                         max_block_frames=max_block_frames)
        net = svc.net_g_ms
        self.net = net
        self.dev = svc.dev
        self.dec = net.dec
        self.upp = int(getattr(self.dec, "upp", hop))
        sine_gen = getattr(getattr(self.dec, "m_source", None), "l_sin_gen", None)
        self._phase = None
        if hasattr(self.dec, "OnnxExport") and sine_gen is not None and hasattr(sine_gen, "phase_offset"):
            self.dec.OnnxExport()
            self._phase = _SinePhase(sine_gen, self.upp)
            self._sine_gen = sine_gen
        else:
            log.warning("this decoder has no frame-rate sine path; block joins rely on SOLA alone")
        post = 0
        if svc.shallow_diffusion:
            n_layers = int(svc.diffusion_args.model.get("n_layers", 20))
            post = n_layers + 18   # WaveNet (kernel 3 per layer) + mel STFT + vocoder
        elif svc.enhancer is not None:
            post = 18
        self.margin_frames = decoder_radius_frames(self.dec) + post
        self.context_frames = int(round(settings.feature_context * sr / hop))
        self.unit_dim = int(net.ssl_dim)
        self.inter = int(net.enc_p.out_channels)
        self._noise_gen = torch.Generator().manual_seed(SEED)
        self.apply_live_settings()
        self.reset()

    # --- settings ---
    def apply_live_settings(self, **changes) -> None:
        """Change *live* settings (see :class:`RealtimeSettings`); the next block uses them."""
        bad = sorted(set(changes) - set(RealtimeSettings.LIVE))
        if bad:
            raise ConfigError(f"{', '.join(bad)} cannot change while converting; stop and start again")
        s = self.settings.replace(**changes).validate() if changes else self.settings
        svc = self.svc
        speaker = s.speaker or (next(iter(svc.spk2id)) if svc.spk2id else 0)
        self.sid = svc.speaker_id(speaker)
        if s.cluster_ratio and svc.cluster_model is None:
            raise SvcError(f"cluster/retrieval ratio {s.cluster_ratio} needs the k-means / index file; "
                           f"{svc.cluster_model_path or 'none'} was not found (or set the ratio to 0)")
        svc.f0_predictor(s.f0_predictor, s.f0_threshold)  # load once now, not inside a block
        if svc.shallow_diffusion:
            speedup = s.diffusion_speedup if s.diffusion_speedup <= s.k_step else max(1, s.k_step // 4)  # as 4.1
            svc.diffusion_args.infer.speedup = speedup
            svc.diffusion_args.infer.method = s.diffusion_method
        self.settings = s

    def close(self) -> None:
        """Give the Svc's decoder its offline behaviour back (sample-rate sine path)."""
        if self._phase is not None:
            self._sine_gen.phase_offset = None
            self._sine_gen.onnx = False
            self.dec.onnx = False
            self._phase = None

    def reset(self) -> None:
        super().reset()
        if not hasattr(self, "unit_dim"):
            return  # BlockProcessor.__init__ calls reset before the engine's fields exist
        T = self.buffer_frames
        self.f0 = np.zeros(T, np.float32)       # Hz, interpolated through unvoiced frames
        self.uv = np.zeros(T, np.float32)
        self.units = torch.zeros(self.unit_dim, T, device=self.dev)
        self._noise_gen.manual_seed(SEED)
        self.eps = torch.randn(self.inter, T, generator=self._noise_gen).to(self.dev)
        self._primed = False
        if self._phase is not None:
            self._phase.reset()
        self.skipped_blocks = 0

    # --- per block ---
    def render(self, k: int) -> np.ndarray:
        T, hop = self.buffer_frames, self.hop
        self._shift(k)
        # Units are recomputed for every frame of the output window; f0 only for frames that no
        # earlier block has played or put in its crossfade tail (the new block and the last
        # delay): re-estimating f0 there would move the sine phase under the tail being faded.
        refresh = k + -(-(self.crossfade + self.sola_search + self.last_delay) // hop) + 1
        f0_refresh = k + self.last_delay // hop
        if not self._primed or not self.settings.incremental:
            refresh = f0_refresh = T
            context = 0
        else:
            refresh, f0_refresh = min(T, refresh), min(T, f0_refresh)
            context = min(self.context_frames, T - refresh)
        self._update_features(refresh, f0_refresh, context)
        self._primed = True

        out_frames = -(-self.window_length(k * hop) // hop)
        D = min(T, out_frames + self.margin_frames)
        d0 = T - D
        with torch.inference_mode():
            vol = self.svc.volume_extractor.extract(torch.from_numpy(self.buffer)[None].to(self.dev))  # [T]
            mask = self._gate(vol)[d0 * hop:]                                                          # [D·hop]
            f0_t = self.f0 * 2 ** (self.settings.transpose / 12)
            if not mask[-self.window_length(k * hop):].any():
                self.skipped_blocks += 1
                if self._phase is not None:
                    self._phase.start(self.frames_seen - T + d0, f0_t[d0:])
                return np.zeros(D * hop, np.float32)
            audio = self._synthesize(d0, f0_t, vol)
        n = D * hop
        if audio.shape[0] < n:   # post-processing vocoders may return a frame less; pad the start
            audio = F.pad(audio, (n - audio.shape[0], 0))
        audio = audio[-n:] if audio.shape[0] > n else audio
        return (audio * mask).cpu().numpy()

    def _shift(self, k: int) -> None:
        T = self.buffer_frames
        self.f0[:T - k] = self.f0[k:]
        self.uv[:T - k] = self.uv[k:]
        self.units[:, :T - k] = self.units[:, k:].clone()
        self.eps[:, :T - k] = self.eps[:, k:].clone()
        self.eps[:, T - k:] = torch.randn(self.inter, k, generator=self._noise_gen).to(self.dev)

    def _update_features(self, refresh: int, f0_refresh: int, context: int) -> None:
        """Units of the last ``refresh`` frames and f0 / uv of the last ``f0_refresh`` frames (≤ refresh),
        from audio with ``context`` more frames."""
        s, svc, hop = self.settings, self.svc, self.hop
        T = self.buffer_frames
        w0 = T - refresh - context
        wav = self.buffer[w0 * hop:]
        f0, uv = svc.f0_predictor(s.f0_predictor, s.f0_threshold).compute_f0_uv(wav)
        f0 = _fit_frames(np.asarray(f0, np.float32), T - w0)
        uv = _fit_frames(np.asarray(uv, np.float32), T - w0)
        self.f0[T - f0_refresh:] = f0[-f0_refresh:]
        self.uv[T - f0_refresh:] = uv[-f0_refresh:]
        with torch.inference_mode():
            c = svc._units(torch.from_numpy(wav).to(self.dev), T - w0)[:, -refresh:]
            if s.cluster_ratio and svc.cluster_model is not None:
                c = svc.cluster_model.mix(c, svc.speaker_name(self.sid), self.sid, s.cluster_ratio)
            self.units[:, T - refresh:] = c.to(self.units)

    def _gate(self, vol: torch.Tensor) -> torch.Tensor:
        """4.1's volume gate: (vol > threshold) dilated by 8 frames, linear to samples → ``[T·hop]``."""
        mask = (vol > 10 ** (self.settings.threshold / 20)).float()
        mask = F.max_pool1d(mask[None, None], kernel_size=GATE_DILATION, stride=1, padding=GATE_DILATION // 2)
        return F.interpolate(mask, size=self.buffer_frames * self.hop, mode="linear")[0, 0]

    def _synthesize(self, d0: int, f0_t: np.ndarray, vol: torch.Tensor) -> torch.Tensor:
        """SynthesizerTrn.infer (spec §6.7) over the buffer, the decoder over frames [d0, T) only."""
        from modules.f0 import f0_to_coarse, f0_to_lf0, lf0_to_f0, normalize_f0

        s, svc, net, dev = self.settings, self.svc, self.net, self.dev
        T = self.buffer_frames
        s0 = d0 if s.skip_safe_zone else 0
        torch.manual_seed(SEED)  # the snake decoder and diffusion draw noise: keep blocks repeatable
        dtype = net.pre.weight.dtype
        c = self.units[:, s0:][None].to(dtype)                                   # [1, C, T']
        f0 = torch.from_numpy(f0_t[s0:]).to(dev)[None]                           # [1, T']
        uv = torch.from_numpy(self.uv[s0:]).to(dev)[None]
        vol_t = vol[s0:][None].to(dtype)                                         # [1, T']
        x_mask = torch.ones(1, 1, c.shape[-1], device=dev, dtype=dtype)
        g = net.embed_speaker(torch.LongTensor([[self.sid]]).to(dev)).to(dtype)
        x = net.embed_content(c, uv.to(dtype), x_mask, vol_t if svc.vol_embedding else None)
        if s.auto_f0 and net.use_automatic_f0_prediction:
            lf0 = f0_to_lf0(f0[:, None])
            norm_lf0 = normalize_f0(lf0, x_mask, uv, random_scale=False)
            f0 = lf0_to_f0(net.f0_decoder(x, norm_lf0.to(dtype), x_mask, spk_emb=g).to(f0)).squeeze(1)
        _, m_p, logs_p, _ = net.enc_p(x, x_mask, f0=f0_to_coarse(f0), noice_scale=0.0)
        z_p = (m_p + self.eps[:, s0:][None].to(dtype) * torch.exp(logs_p) * s.noise_scale) * x_mask
        z = net.flow(z_p, x_mask, g=g, reverse=True)
        i = d0 - s0
        f0_dec = f0[:, i:]
        if self._phase is not None:
            self._phase.start(self.frames_seen - T + d0, f0_dec[0].float().cpu().numpy())
        audio = self.dec(z[:, :, i:], g=g, f0=f0_dec)[0, 0].float()
        f0_dec, c_dec, vol_dec = f0_dec.float(), c[:, :, i:].float(), vol_t[:, i:].float()
        if svc.shallow_diffusion:
            mel = svc.vocoder.extract(audio[None, :], self.sample_rate)
            sid = torch.LongTensor([[self.sid]]).to(dev)
            audio = svc._diffuse(audio, mel, c_dec, f0_dec, vol_dec, sid, s.k_step, s.second_encoding, False)
        elif svc.enhancer is not None:
            audio = svc._enhance(audio, f0_dec, s.enhancer_adaptive_key)
        return audio.reshape(-1).float()


def _fit_frames(a: np.ndarray, n: int) -> np.ndarray:
    """A predictor's frames cut or padded (last value) to ``n``: frame i stays at i·hop (all
    registered predictors already return len // hop frames)."""
    if a.shape[0] >= n:
        return a[:n]
    return np.concatenate([a, np.full(n - a.shape[0], a[-1] if a.size else 0, a.dtype)])


# --- streaming resampling and the device-rate bridge ---------------------------------------------------
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
