"""SoVITS synthesizer and discriminator (4.1 ``models.py``)."""

from models.discriminator import DiscriminatorP, DiscriminatorS, MultiPeriodDiscriminator
from models.synthesizer import (
    DECODERS,
    F0Decoder,
    PosteriorEncoder,
    ResidualCouplingBlock,
    SynthesizerTrn,
    TextEncoder,
    TransformerCouplingBlock,
)

__all__ = [
    "DECODERS", "DiscriminatorP", "DiscriminatorS", "F0Decoder", "MultiPeriodDiscriminator", "PosteriorEncoder",
    "ResidualCouplingBlock", "SynthesizerTrn", "TextEncoder", "TransformerCouplingBlock",
]
