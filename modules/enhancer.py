"""NSF-HiFiGAN enhancer: re-vocode the synthesizer's output with adaptive key (spec §10.6).

The audio is resampled so that its pitch, read at the vocoder's rate, is shifted by
``adaptive_key`` semitones; the vocoder re-synthesises it from its own mel and the (equally
scaled) f0; the result is resampled back. With key 0 this is a plain re-vocoding at 44.1 kHz.

    audio @ sr ──resample──▶ audio @ adaptive_sr ──mel──▶ vocoder(mel, f0·real_factor) ──▶ @ adaptive_sr
                                                                          └─resample──▶ @ vocoder sr
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from modules.audio import sinc_resample
from vdecoder.vocoder import RESAMPLE_FILTER_WIDTH, Vocoder


class Enhancer:
    """4.1's ``modules.enhancer.Enhancer(enhancer_type, enhancer_ckpt, device=None)``.

    The vocoder is the one of :mod:`vdecoder.registry` (loaded once per process and shared
    with shallow diffusion).
    """

    def __init__(self, enhancer_type: str, enhancer_ckpt: str | os.PathLike, device: str | torch.device | None = None) -> None:
        self.vocoder = Vocoder(enhancer_type, enhancer_ckpt, device=device)
        self.device = self.vocoder.device
        self.enhancer_sample_rate = self.vocoder.vocoder_sample_rate
        self.enhancer_hop_size = self.vocoder.vocoder_hop_size

    def adaptive_rate(self, adaptive_key: float) -> tuple[int, float]:
        """``(adaptive_sr, real_factor)``: the rate the audio is resampled to, rounded to 100 Hz."""
        factor = 2 ** (-adaptive_key / 12)
        adaptive_sr = 100 * int(np.round(self.enhancer_sample_rate / factor / 100))
        return adaptive_sr, self.enhancer_sample_rate / adaptive_sr

    @torch.inference_mode()
    def enhance(self, audio: torch.Tensor, sample_rate: int, f0: torch.Tensor, hop_size: int,
                adaptive_key: float = 0, silence_front: float = 0) -> tuple[torch.Tensor, int]:
        """Re-vocode ``audio [1, L]`` at ``sample_rate`` with ``f0 [1, T, 1]`` (Hz per ``hop_size``).

        Returns ``(audio [L'], vocoder sample rate)``. ``silence_front`` seconds at the start are
        skipped and returned as zeros (realtime use).
        """
        start_frame = int(silence_front * sample_rate / hop_size)
        real_silence_front = start_frame * hop_size / sample_rate
        audio = audio[:, int(np.round(real_silence_front * sample_rate)):]
        f0 = f0[:, start_frame:, :]

        adaptive_sr, real_factor = self.adaptive_rate(adaptive_key)
        audio_res = audio
        if sample_rate != adaptive_sr:
            audio_res = sinc_resample(audio, sample_rate, adaptive_sr, lowpass_filter_width=RESAMPLE_FILTER_WIDTH)
        n_frames = int(audio_res.size(-1) // self.enhancer_hop_size + 1)

        # f0 onto the vocoder's frame grid, scaled like the audio (np.interp holds the end values).
        f0_np = f0.squeeze(0).squeeze(-1).float().cpu().numpy() * real_factor
        time_org = (hop_size / sample_rate) * np.arange(len(f0_np)) / real_factor
        time_frame = (self.enhancer_hop_size / self.enhancer_sample_rate) * np.arange(n_frames)
        f0_res = np.interp(time_frame, time_org, f0_np, left=f0_np[0], right=f0_np[-1])
        f0_res = torch.from_numpy(f0_res).unsqueeze(0).float().to(self.device)  # [1, n_frames]

        # The resampled audio is treated as if it were at the vocoder's rate (that is the shift).
        mel = self.vocoder.stft.get_mel(audio_res.to(self.device))  # [1, n_mels, T]
        enhanced = self.vocoder.infer(mel.transpose(1, 2), f0_res[:, : mel.size(-1), None]).reshape(-1)
        if adaptive_sr != self.enhancer_sample_rate:
            enhanced = sinc_resample(enhanced, adaptive_sr, self.enhancer_sample_rate,
                                     lowpass_filter_width=RESAMPLE_FILTER_WIDTH)
        if start_frame > 0:
            enhanced = F.pad(enhanced, (int(np.round(self.enhancer_sample_rate * real_silence_front)), 0))
        return enhanced, self.enhancer_sample_rate
