"""The speaker encoder of Resemblyzer (GE2E d-vector), as a plain module with no I/O.

Architecture and front end, as released in the ``resemblyzer`` 0.1.4 wheel (its
``pretrained.pt``, Apache-2.0; read by :mod:`evaluation.speaker`):

* input: 16 kHz mono audio, power (not log) mel spectrogram, 40 Slaney mel bands 0–8 kHz,
  25 ms Hann window (400 samples, n_fft 400), 10 ms hop (160 samples), centred frames;
* the utterance is cut into *partials* of 160 frames (1.6 s); partial starts are
  ``round(16000 / 1.3 / 160) = 77`` frames apart (1.3 partials per second, ≈ 52 % overlap);
  a last partial covering less than 75 % real audio is dropped unless it is the only one;
* network: 3-layer LSTM (40 → 256) over a partial, final hidden state of the top layer →
  Linear(256, 256) → ReLU → L2 normalisation;
* utterance embedding: mean of the partial embeddings, L2-normalised again ([256], unit norm,
  every entry ≥ 0, so cosine similarities lie in [0, 1]).

The checkpoint also holds GE2E's ``similarity_weight`` / ``similarity_bias`` (training only); they
are ignored.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

SAMPLE_RATE = 16000                     # Hz, rate of the encoder's input audio
WINDOW_SAMPLES = SAMPLE_RATE * 25 // 1000   # 400 samples = 25 ms (also n_fft)
HOP_SAMPLES = SAMPLE_RATE * 10 // 1000      # 160 samples = 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160                    # frames per partial utterance (1.6 s)
PARTIALS_PER_SECOND = 1.3               # partial start rate of the released embed_utterance
MIN_COVERAGE = 0.75                     # share of real audio a last partial needs to be kept
HIDDEN = 256
EMBEDDING = 256
LAYERS = 3


class SpeakerEncoder(nn.Module):
    """``mels [B, PARTIAL_FRAMES, N_MELS]`` (power mel) → ``[B, EMBEDDING]`` unit-norm embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)           # hidden: [LAYERS, B, HIDDEN]
        e = torch.relu(self.linear(hidden[-1]))    # [B, EMBEDDING]
        return e / e.norm(dim=1, keepdim=True)


def partial_starts(n_samples: int) -> tuple[list[int], int]:
    """Where the partials of an ``n_samples``-long 16 kHz utterance start (in frames).

    Returns ``(starts, padded_samples)``: the start frame of each partial, and the length the
    audio must be zero-padded to so that the last partial lies inside it::

        frames  0 ........ 77 ........ 154 ....... 231 ...
        part 0  [0, 160)
        part 1             [77, 237)
        part 2                         [154, 314)      kept if ≥ 75 % of it is real audio
    """
    n_frames = int(np.ceil((n_samples + 1) / HOP_SAMPLES))
    step = int(np.round(SAMPLE_RATE / PARTIALS_PER_SECOND / HOP_SAMPLES))
    last = max(1, n_frames - PARTIAL_FRAMES + step + 1)
    starts = list(range(0, last, step))
    covered = (n_samples - starts[-1] * HOP_SAMPLES) / (PARTIAL_FRAMES * HOP_SAMPLES)
    if covered < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts, (starts[-1] + PARTIAL_FRAMES) * HOP_SAMPLES
