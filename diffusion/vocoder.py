"""4.1 import path (``from diffusion.vocoder import Vocoder``); the class lives in :mod:`vdecoder.vocoder`."""

from vdecoder.vocoder import Vocoder

__all__ = ["Vocoder"]
