"""Standalone NSF-HiFiGAN vocoder (openvpi release) used by shallow diffusion and the enhancer."""

from vdecoder.nsf_hifigan.loader import clear_cache, load_config, load_model
from vdecoder.nsf_hifigan.models import Generator, NsfHifiganConfig, SineGen, SourceModuleHnNSF

__all__ = ["Generator", "NsfHifiganConfig", "SineGen", "SourceModuleHnNSF", "clear_cache", "load_config", "load_model"]
