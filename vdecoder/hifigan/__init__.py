"""NSF-HiFiGAN decoder used inside the synthesizer (``dec`` of ``SynthesizerTrn``)."""

from vdecoder.hifigan.models import Generator, SineGen, SourceModuleHnNSF

__all__ = ["Generator", "SineGen", "SourceModuleHnNSF"]
