"""NSF-HiFiGAN decoder with anti-aliased SnakeBeta activations (``vocoder_name`` nsf-snake-hifigan)."""

from vdecoder.hifiganwithsnake.models import Generator, SnakeAlias, SnakeBeta

__all__ = ["Generator", "SnakeAlias", "SnakeBeta"]
