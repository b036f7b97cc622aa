"""Registry of the standalone mel vocoders (the ``vocoder.type`` of ``diffusion.yaml``).

One table: name → how its input mel is scaled, which pretrained file it uses by default and
how to load it. Sample rate, hop and mel size come from the weight file's own ``config.json``.
(The synthesizer's built-in decoder, ``model.vocoder_name`` in ``config.json``, is a different
family and lives with the synthesizer.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modules.errors import ConfigError


@dataclass(frozen=True)
class VocoderSpec:
    name: str
    mel_scale: float          # the network's input = mel_scale · natural-log mel
    pretrained_key: str       # entry of modules.pretrained.PRETRAINED for the default file
    loader: Callable          # loader(path, device) -> (generator, config)
    description: str


def _nsf_hifigan_loader(path, device):
    from vdecoder.nsf_hifigan.loader import load_model

    return load_model(path, device)


VOCODERS: dict[str, VocoderSpec] = {s.name: s for s in [
    VocoderSpec("nsf-hifigan", 1.0, "nsf-hifigan", _nsf_hifigan_loader,
                "openvpi NSF-HiFiGAN, natural-log mel input"),
    # 0.434294 = log10(e): the same network fed a log10 mel (4.1's literal constant, kept so
    # outputs match bit for bit).
    VocoderSpec("nsf-hifigan-log10", 0.434294, "nsf-hifigan", _nsf_hifigan_loader,
                "NSF-HiFiGAN trained on log10 mels"),
]}


def get_vocoder_spec(name: str) -> VocoderSpec:
    """The registry entry for ``name``; unknown names raise :class:`ConfigError` listing the valid ones."""
    try:
        return VOCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown vocoder type '{name}'; choose one of: {', '.join(VOCODERS)}") from None
