"""Realtime voice conversion (4.1-Latest ``gui.py``, spec §11.3), without any GUI.

Fixed-size blocks in, blocks of the same size out. Modules, one job each:

* :mod:`~inference.realtime.settings`: :class:`RealtimeSettings` (JSON load/save, validation);
* :mod:`~inference.realtime.sola`: :class:`BlockProcessor`, the buffer / SOLA splice / crossfade /
  latency arithmetic (model-independent, with the diagram);
* :mod:`~inference.realtime.resampler`: :class:`StreamResampler`, block-wise sinc resampling;
* :mod:`~inference.realtime.engine`: :class:`RealtimeEngine`, the model side (features cached per
  frame, the synthesizer's stages over a window, the phase-carrying harmonic source);
* :mod:`~inference.realtime.converter`: :class:`RealtimeConverter` (device-rate bridge),
  :func:`stream_array` and :func:`convert_file` (file mode).
"""

from inference.realtime.converter import RealtimeConverter, convert_file, stream_array
from inference.realtime.engine import GATE_DILATION, SEED, RealtimeEngine, SinePhase, decoder_radius_frames, load_svc
from inference.realtime.resampler import RESAMPLE_WIDTH, StreamResampler
from inference.realtime.settings import RealtimeSettings, load_settings, save_settings
from inference.realtime.sola import LAST_DELAY_SECONDS, SOLA_SEARCH_SECONDS, BlockProcessor

__all__ = ["GATE_DILATION", "LAST_DELAY_SECONDS", "RESAMPLE_WIDTH", "SEED", "SOLA_SEARCH_SECONDS", "BlockProcessor",
           "RealtimeConverter", "RealtimeEngine", "RealtimeSettings", "SinePhase", "StreamResampler", "convert_file",
           "decoder_radius_frames", "load_settings", "load_svc", "save_settings", "stream_array"]
