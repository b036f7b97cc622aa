"""Sound-card streams for realtime conversion (``sounddevice`` / PortAudio), no GUI.

Devices are named ``"<device> (<host API>)"`` as 4.1's GUI named them. The stream runs at the
model rate when both devices accept it (4.1 always asked for it) and otherwise at the input
device's default rate, with the rate conversion done by :class:`inference.realtime.RealtimeConverter`.
Without PortAudio or without any device, a clear :class:`AudioError` says what to install and
that the file mode works without a sound card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from modules.errors import AudioError

log = logging.getLogger(__name__)

FILE_MODE_HINT = "without a sound card, convert a file through the same realtime path: " \
                 "python gui.py -m G.pth --input in.wav --output out.wav"


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float

    @property
    def label(self) -> str:
        return f"{self.name} ({self.hostapi})"


def sounddevice_module():
    """``import sounddevice`` with an actionable error when it or PortAudio is missing."""
    try:
        import sounddevice as sd
    except OSError as e:  # sounddevice raises OSError("PortAudio library not found")
        raise AudioError(f"the PortAudio library is missing ({e}). Install it (Debian/Ubuntu: apt-get install "
                         f"libportaudio2; macOS: brew install portaudio); {FILE_MODE_HINT}") from None
    except ImportError:
        raise AudioError(f"the sounddevice package is missing: pip install sounddevice; {FILE_MODE_HINT}") from None
    return sd


def list_devices(sd: Any = None) -> tuple[list[Device], list[Device]]:
    """``(input devices, output devices)`` PortAudio sees (either list may be empty)."""
    sd = sd or sounddevice_module()
    try:
        hostapis = [h["name"] for h in sd.query_hostapis()]
        raw = list(sd.query_devices())
    except Exception as e:  # PortAudio initialisation errors
        raise AudioError(f"could not list sound devices ({e}); {FILE_MODE_HINT}") from None
    devices = [Device(int(d.get("index", i)), str(d["name"]), hostapis[d["hostapi"]] if d["hostapi"] < len(hostapis)
                      else "?", int(d["max_input_channels"]), int(d["max_output_channels"]),
                      float(d["default_samplerate"])) for i, d in enumerate(raw)]
    return ([d for d in devices if d.max_input_channels > 0], [d for d in devices if d.max_output_channels > 0])


def resolve_device(label: str, kind: str, sd: Any = None) -> Device:
    """The input/output device named ``label`` (empty: the system default)."""
    sd = sd or sounddevice_module()
    inputs, outputs = list_devices(sd)
    pool = inputs if kind == "input" else outputs
    if not pool:
        raise AudioError(f"no audio {kind} device found (PortAudio sees none; is a sound card connected and "
                         f"not used exclusively by another program?); {FILE_MODE_HINT}")
    if label:
        for d in pool:
            if d.label == label or d.name == label:
                return d
        raise AudioError(f"{kind} device {label!r} not found; available: {', '.join(d.label for d in pool)}")
    default = sd.default.device[0 if kind == "input" else 1]
    for d in pool:
        if d.index == default:
            return d
    return pool[0]


def choose_sample_rate(inp: Device, out: Device, model_rate: int, requested: int = 0, sd: Any = None) -> int:
    """``requested`` if given, else the model rate if both devices accept it, else the input default."""
    sd = sd or sounddevice_module()
    candidates = [requested] if requested else [model_rate, int(inp.default_samplerate), int(out.default_samplerate)]
    errors = []
    for rate in dict.fromkeys(candidates):
        try:
            sd.check_input_settings(device=inp.index, samplerate=rate, channels=1, dtype="float32")
            sd.check_output_settings(device=out.index, samplerate=rate, channels=1, dtype="float32")
            return int(rate)
        except Exception as e:
            errors.append(f"{rate} Hz: {e}")
    raise AudioError(f"no sample rate works for both {inp.label} and {out.label} ({'; '.join(errors)})")


class AudioStream:
    """A duplex stream feeding a :class:`~inference.realtime.RealtimeConverter`.

    The callback down-mixes the input, converts one block and writes it to every output
    channel (4.1 wrote stereo). Exceptions inside the callback stop the stream and are kept in
    :attr:`error`; :attr:`xruns` counts blocks PortAudio flagged as over/underflowing.
    """

    def __init__(self, converter, input_device: Device, output_device: Device, sd: Any = None) -> None:
        self.sd = sd or sounddevice_module()
        self.converter = converter
        self.input_device, self.output_device = input_device, output_device
        self.xruns = 0
        self.error: BaseException | None = None
        self._stream = None

    def _callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info, status) -> None:
        if status:
            self.xruns += 1
        try:
            x = indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0]
            outdata[:] = self.converter.process(x)[:, None]
        except Exception as e:  # keep the reason; PortAudio would otherwise swallow it
            self.error = e
            outdata.fill(0)
            raise self.sd.CallbackAbort from e

    def start(self) -> None:
        ch_in = min(2, self.input_device.max_input_channels)
        ch_out = min(2, self.output_device.max_output_channels)
        try:
            self._stream = self.sd.Stream(device=(self.input_device.index, self.output_device.index),
                                          samplerate=self.converter.sample_rate, blocksize=self.converter.block_size,
                                          dtype="float32", channels=(ch_in, ch_out), callback=self._callback)
            self._stream.start()
        except Exception as e:
            self._stream = None
            raise AudioError(f"could not open {self.input_device.label} → {self.output_device.label} at "
                             f"{self.converter.sample_rate} Hz ({e})") from None
        log.info("audio stream started: %s → %s, %d Hz, blocks of %d samples, algorithmic latency %.0f ms",
                 self.input_device.label, self.output_device.label, self.converter.sample_rate,
                 self.converter.block_size, 1000 * self.converter.latency_seconds)

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    @property
    def device_latency(self) -> float:
        """Input + output latency PortAudio reports (seconds), on top of the algorithmic latency."""
        if self._stream is None:
            return 0.0
        lat = self._stream.latency
        return float(sum(lat)) if isinstance(lat, (tuple, list)) else float(lat)

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None
