"""Realtime conversion engine: a loaded :class:`inference.infer_tool.Svc` driven block by block.

Only what the new block needs is computed (4.1 reconverted the whole buffer every block):

* f0 and speech-encoder units are computed on the newest frames (the new block, the frames of
  the output window, plus ``feature_context`` seconds of left context) and cached per frame;
  older frames keep the values computed when they were new (``incremental=False``: 4.1's full
  recomputation);
* the prior encoder and flow run over the whole buffer (they are cheap and use it as context),
  the NSF-HiFiGAN decoder (the costly part) only over the frames that reach the output window plus
  its receptive field, so those samples equal a full-buffer decode;
* the decoder's harmonic source is 4.1's frame-rate formula, with its phase carried from block to
  block (4.1 restarted it at the buffer start every block, so consecutive blocks disagreed and
  only SOLA could line them up); the prior noise ε is drawn once per frame and kept (4.1 drew a
  new ε for the whole buffer every block);
* a block whose output window is entirely below the response threshold is not synthesised.

The synthesis itself is the synthesizer's stages (``embed`` → ``predict_f0`` → ``prior`` →
``sample`` → ``flow_inverse`` → ``decode``), the same methods ``SynthesizerTrn.infer`` composes.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inference.realtime.settings import RealtimeSettings
from inference.realtime.sola import BlockProcessor
from modules.errors import ConfigError, SvcError
from vdecoder.hifigan.models import receptive_radius_frames as decoder_radius_frames
from vdecoder.hifigan.sources import FrameRateSource

log = logging.getLogger(__name__)

__all__ = ["GATE_DILATION", "SEED", "RealtimeEngine", "SinePhase", "decoder_radius_frames", "load_svc"]

GATE_DILATION = 8            # 4.1: max_pool1d(kernel 8, stride 1, padding 4) over the gate mask
SEED = 52468                 # the synthesizer's seed (4.1); also seeds ε and the sine phases here
INPUT_PITCH_SECONDS = 30.0   # input f0 kept for the GUI's key suggestion (s of voiced frames)


def load_svc(settings: RealtimeSettings):
    """The offline pipeline object the engine drives, loaded as 4.1's GUI did (spec §11.3)."""
    from inference.infer_tool import Svc

    model = Path(settings.model_path)
    config = settings.resolved_config_path()
    if config is None:  # a .svc.safetensors model file: config, speakers and optional parts inside
        if settings.config_path:
            log.info("%s carries its own config; the config %s is not used", model, settings.config_path)
        cluster, diffusion = settings.given("cluster_model_path"), settings.given("diffusion_model_path")
    else:
        for p, what in ((model, "model file (G_*.pth)"), (config, "model config (config.json)")):
            if not p.is_file():
                raise SvcError(f"{p}: {what} not found; choose the model in the GUI or pass -m/-c")
        cluster, diffusion = settings.cluster_model_path or None, settings.diffusion_model_path
    return Svc(str(model), str(config) if config is not None else None, device=settings.device,
               cluster_model_path=cluster,
               nsf_hifigan_enhance=settings.enhancer and not settings.use_diffusion,
               diffusion_model_path=diffusion,
               diffusion_config_path=str(settings.resolved_diffusion_config_path()),
               shallow_diffusion=settings.use_diffusion, feature_retrieval=settings.feature_retrieval)


class SinePhase:
    """Per-harmonic phase (cycles) of the decoder's frame-rate sine source at a given frame.

    In the frame-rate path the sample-level phase at the end of window frame f is
    ``φ0 + upp·Σ_{i≤f} r_i`` (r_i = (h·f0_i/sr) mod 1) when ``φ0/upp`` is added to frame 0's
    increment (that is where 4.1 added its random initial phase). Carrying φ across blocks,
    with the f0 each frame was synthesised with, makes consecutive blocks agree.
    """

    def __init__(self, sine_gen, upp: int) -> None:
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

    def source(self) -> FrameRateSource:
        """The decoder's harmonic source for the window :meth:`start` last placed: 4.1's frame-rate
        formula with :attr:`offset` (cycles / upp, ``[dim]``) instead of the random initial phases."""
        return FrameRateSource(phase_offset=self.offset)

    def increments(self, f0: np.ndarray) -> np.ndarray:
        """Phase advance (cycles, float64 ``[dim]``) over frames with ``f0`` (Hz), as the model computes r."""
        if f0.size == 0:
            return np.zeros(self.dim)
        harmonics = torch.arange(1, self.dim + 1, dtype=torch.float32)
        r = (torch.from_numpy(np.ascontiguousarray(f0, dtype=np.float32))[:, None] * harmonics / self.sr) % 1
        return (self.upp * r.double()).sum(0).numpy()

    def start(self, frame: int, f0: np.ndarray) -> torch.Tensor:
        """Phase at absolute ``frame`` for a window starting there, synthesised with ``f0 [D]``;
        returns (and keeps as :attr:`offset`) the offset to add to frame 0's increment (``[dim]`` float32)."""
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


class RealtimeEngine(BlockProcessor):
    """Realtime conversion with a loaded :class:`inference.infer_tool.Svc` at the model rate.

    ``process(block [k·hop]) → [k·hop]`` (k = ``block_frames`` normally). The block length is
    ``block_time`` rounded to whole frames (4.1 used any sample count, so its frame grid moved
    from block to block). The model is driven through its inference stages
    (:meth:`models.SynthesizerTrn.embed` … ``decode``) and the Svc's public ``units`` /
    ``diffuse`` / ``enhance``; nothing of either is changed. The decoder gets 4.1's frame-rate
    harmonic source with the phase carried from block to block (:class:`SinePhase`).
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
        # the inference-ready synthesizer in the chosen precision (fp32: the loaded one)
        self.precision = svc.resolve_precision(settings.precision)
        net = svc.model_for(self.precision)
        self.net = net
        self.dev = svc.dev
        self.dec = net.dec
        self.upp = int(self.dec.upp)
        self._phase = SinePhase(self.dec.m_source.l_sin_gen, self.upp)
        post = 0
        if svc.shallow_diffusion:
            n_layers = int(svc.diffusion_args.model.get("n_layers", 20))
            post = n_layers + 18   # WaveNet (kernel 3 per layer) + mel STFT + vocoder
        elif svc.enhancer is not None:
            post = 18
        self.margin_frames = decoder_radius_frames(self.dec) + post
        self.post_frames = post
        self.context_frames = int(round(settings.feature_context * sr / hop))
        self.unit_dim = int(net.ssl_dim)
        self.inter = int(net.enc_p.out_channels)
        self._noise_gen = torch.Generator().manual_seed(SEED)
        # the input's recent voiced f0 (Hz), for the key suggestion the GUI shows
        self._input_f0: collections.deque = collections.deque(maxlen=int(INPUT_PITCH_SECONDS * sr / hop))
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
        self._f0_predictor(s)  # load once now, not inside a block
        # as 4.1: a speedup larger than k_step falls back to k_step // 4
        self.diffusion_speedup = s.diffusion_speedup if s.diffusion_speedup <= s.k_step else max(1, s.k_step // 4)
        self.settings = s

    def close(self) -> None:
        """Nothing to release (the engine changes neither the Svc nor its model); kept for callers."""

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
                self._phase.start(self.frames_seen - T + d0, f0_t[d0:])
                return np.zeros(D * hop, np.float32)
            audio = self._synthesize(d0, f0_t, vol, keep_from=max(0, D - out_frames - self.post_frames))
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

    def input_median_hz(self) -> float | None:
        """Median f0 (Hz) of the input's voiced frames over the last ``INPUT_PITCH_SECONDS`` of
        converted audio (before transposition); None before any voiced frame."""
        return float(np.median(np.fromiter(self._input_f0, float))) if self._input_f0 else None

    def _f0_predictor(self, s):
        """The Svc's predictor for the settings' name, threshold, range and repair (cached by the Svc)."""
        return self.svc.f0_predictor(s.f0_predictor, s.f0_threshold, f0_min=s.f0_min, f0_max=s.f0_max,
                                     f0_repair=s.f0_repair)

    def _update_features(self, refresh: int, f0_refresh: int, context: int) -> None:
        """Units of the last ``refresh`` frames and f0 / uv of the last ``f0_refresh`` frames (≤ refresh),
        from audio with ``context`` more frames."""
        s, svc, hop = self.settings, self.svc, self.hop
        T = self.buffer_frames
        w0 = T - refresh - context
        wav = self.buffer[w0 * hop:]
        f0, uv = self._f0_predictor(s).compute_f0_uv(wav)
        f0 = _fit_frames(np.asarray(f0, np.float32), T - w0)
        uv = _fit_frames(np.asarray(uv, np.float32), T - w0)
        self.f0[T - f0_refresh:] = f0[-f0_refresh:]
        self.uv[T - f0_refresh:] = uv[-f0_refresh:]
        self._input_f0.extend(f0[-f0_refresh:][(uv[-f0_refresh:] > 0.5) & (f0[-f0_refresh:] > 0)].tolist())
        with torch.inference_mode():
            c = svc.units(torch.from_numpy(wav).to(self.dev), T - w0, self.precision)[:, -refresh:]
            if s.cluster_ratio and svc.cluster_model is not None:
                c = svc.cluster_model.mix(c, svc.speaker_name(self.sid), self.sid, s.cluster_ratio)
            self.units[:, T - refresh:] = c.to(self.units)

    def _gate(self, vol: torch.Tensor) -> torch.Tensor:
        """4.1's volume gate: (vol > threshold) dilated by 8 frames, linear to samples → ``[T·hop]``."""
        mask = (vol > 10 ** (self.settings.threshold / 20)).float()
        mask = F.max_pool1d(mask[None, None], kernel_size=GATE_DILATION, stride=1, padding=GATE_DILATION // 2)
        return F.interpolate(mask, size=self.buffer_frames * self.hop, mode="linear")[0, 0]

    def _synthesize(self, d0: int, f0_t: np.ndarray, vol: torch.Tensor, keep_from: int = 0) -> torch.Tensor:
        """The synthesizer's stages (as ``SynthesizerTrn.infer``) over the buffer, with the kept
        per-frame noise ε; the decoder over frames [d0, T) only → audio ``[(T − d0)·hop]``, of which
        the first ``keep_from`` frames (the decoder's receptive margin, never played) are zero."""
        s, svc, net, dev = self.settings, self.svc, self.net, self.dev
        T = self.buffer_frames
        s0 = d0 if s.skip_safe_zone else 0
        torch.manual_seed(SEED)  # the snake decoder and diffusion draw noise: keep blocks repeatable
        dtype = net.pre.weight.dtype
        c = self.units[:, s0:][None].to(dtype)                                   # [1, C, T']
        f0 = torch.from_numpy(f0_t[s0:]).to(dev)[None]                           # [1, T']
        uv = torch.from_numpy(self.uv[s0:]).to(dev)[None]
        vol_t = vol[s0:][None].to(dtype)                                         # [1, T']
        x, x_mask, g = net.embed(c, uv, torch.LongTensor([[self.sid]]).to(dev), vol_t if svc.vol_embedding else None)
        if s.auto_f0 and net.use_automatic_f0_prediction:
            f0 = net.predict_f0(x, f0, uv, x_mask, g)
        m_p, logs_p = net.prior(x, x_mask, f0)
        # infer draws ε here; the engine keeps one ε per frame instead, but makes the same draw so that
        # the draws after it (snake decoder noise, diffusion) come from where they always did.
        torch.randn_like(m_p)
        z_p = net.sample(m_p, logs_p, x_mask, noise=self.eps[:, s0:][None].to(dtype), noise_scale=s.noise_scale)
        z = net.flow_inverse(z_p, x_mask, g)
        i = d0 - s0
        f0_dec = f0[:, i:]
        self._phase.start(self.frames_seen - T + d0, f0_dec[0].float().cpu().numpy())
        audio = net.decode(z[:, :, i:], f0_dec, g, source=self._phase.source(),
                           keep=(keep_from, T - d0))[0, 0].float()
        f0_dec, c_dec, vol_dec = f0_dec.float(), c[:, :, i:].float(), vol_t[:, i:].float()
        if svc.shallow_diffusion:
            mel = svc.vocoder.extract(audio[None, :], self.sample_rate)
            sid = torch.LongTensor([[self.sid]]).to(dev)
            audio = svc.diffuse(audio, mel, c_dec, f0_dec, vol_dec, sid, s.k_step, s.second_encoding, False,
                                speedup=self.diffusion_speedup, method=s.diffusion_method,
                                precision=self.precision)
        elif svc.enhancer is not None:
            audio = svc.enhance(audio, f0_dec, s.enhancer_adaptive_key)
        return audio.reshape(-1).float()


def _fit_frames(a: np.ndarray, n: int) -> np.ndarray:
    """A predictor's frames cut or padded (last value) to ``n``: frame i stays at i·hop (all
    registered predictors already return len // hop frames)."""
    if a.shape[0] >= n:
        return a[:n]
    return np.concatenate([a, np.full(n - a.shape[0], a[-1] if a.size else 0, a.dtype)])
