"""Frame loudness (linear RMS per hop), 4.1-Latest's ``utils.Volume_Extractor`` (spec §3.4)."""

from __future__ import annotations

import numpy as np
import torch


class VolumeExtractor:
    """``extract(audio [1, L]) → [floor(L / hop)]`` float32 RMS of non-overlapping hops.

    Frame i covers samples [i·hop, (i+1)·hop) (4.1-Latest; 4.1-Stable centred the frames).
    """

    def __init__(self, hop_size: int = 512) -> None:
        self.hop_size = int(hop_size)

    def extract(self, audio: torch.Tensor | np.ndarray) -> torch.Tensor:
        if not isinstance(audio, torch.Tensor):
            audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if audio.dim() == 1:
            audio = audio[None]
        n_frames = int(audio.size(-1) // self.hop_size)
        audio2 = audio**2
        # Same reduction as 4.1 (unfold → mean over the hop), so values are bitwise identical.
        frames = F_unfold(audio2, self.hop_size)[:, :, :n_frames]
        return torch.sqrt(frames.mean(dim=1)[0])


def F_unfold(audio2: torch.Tensor, hop: int) -> torch.Tensor:
    return torch.nn.functional.unfold(audio2[:, None, None, :], (1, hop), stride=hop)


# 4.1 name
Volume_Extractor = VolumeExtractor
