"""The realtime GUI window (4.1-Latest ``gui.py`` controls, spec §11.3).

Element keys are the :class:`~inference.realtime.RealtimeSettings` field names, so the window's
values map one-to-one onto the settings that are saved as JSON. Live settings (threshold,
transpose, noise, speaker, f0 predictor, ratio, diffusion depth …) are passed to the running
engine as soon as they change; the others apply on the next Start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from inference.realtime import RealtimeSettings, load_settings, save_settings
from modules.precision import PRECISIONS
from modules.errors import SvcError

log = logging.getLogger(__name__)

TITLE = "so-vits-svc 4.1 realtime"
READOUT_KEYS = ("latency", "compute", "compute_warning", "status")
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(RealtimeSettings)}
#: Warn when the median compute time of the recent blocks reaches this share of the block length:
#: above it, a slower block (another program, a louder passage with more voiced frames) drops out.
COMPUTE_WARNING_SHARE = 0.8
COMPUTE_WARNING_BLOCKS = 10  # recent blocks the median is taken over


def compute_warning(times, block_seconds: float) -> str | None:
    """A warning (shown under the readout) when blocks take ≥ :data:`COMPUTE_WARNING_SHARE` of the block
    length (median of the last :data:`COMPUTE_WARNING_BLOCKS` compute times, seconds), else None."""
    recent = sorted(list(times)[-COMPUTE_WARNING_BLOCKS:])
    if not recent or block_seconds <= 0:
        return None
    median = recent[len(recent) // 2]
    if median < COMPUTE_WARNING_SHARE * block_seconds:
        return None
    return (f"warning: blocks take {1000 * median:.0f} ms of {1000 * block_seconds:.0f} ms "
            f"({100 * median / block_seconds:.0f} %); audio will drop out: raise the block time"
            + (" or choose precision bf16/auto" if "precision" in _FIELD_TYPES else ""))


def model_speakers(model_path: str, config_path: str = "") -> list[str]:
    """Speaker names from the model's config.json, or from a ``.svc.safetensors`` model file's
    header (empty if it cannot be read yet)."""
    from modelfile import is_model_file, read_info

    if is_model_file(model_path):
        try:
            return list(read_info(model_path).metadata["speakers"])
        except SvcError:
            return []
    cfg = Path(config_path) if config_path else Path(model_path).parent / "config.json"
    try:
        return list(json.loads(cfg.read_text(encoding="utf-8")).get("spk", {}))
    except (OSError, ValueError, AttributeError):
        return []


def _layout(sg, s: RealtimeSettings, inputs: list[str], outputs: list[str], speakers: list[str],
            f0_names: list[str], methods: list[str]) -> list:
    def row(label: str, element) -> list:
        return [sg.Text(label, size=(24, 1)), *(element if isinstance(element, list) else [element])]

    def slider(key: str, lo: float, hi: float, step: float) -> Any:
        return sg.Slider(range=(lo, hi), default_value=getattr(s, key), resolution=step, orientation="h",
                         key=key, enable_events=True, size=(34, 15))

    def path(key: str, types: tuple) -> list:
        return [sg.Input(getattr(s, key), key=key, size=(44, 1), enable_events=True),
                sg.FileBrowse(file_types=types + (("All files", "*.*"),))]

    model = sg.Frame("Model", [
        [sg.Text("Model (G_*.pth, .svc.safetensors)", size=(24, 1)),
         *path("model_path", (("Model", "*.pth *.safetensors"),))],
        [sg.Text("Config (blank: beside model)", size=(24, 1)), *path("config_path", (("Config", "*.json"),))],
        [sg.Text("Cluster / index file", size=(24, 1)), *path("cluster_model_path", (("Cluster", "*.pt *.pkl"),))],
        row("Device (torch)", sg.Combo(["auto", "cpu", "cuda"], default_value=s.device, key="device", size=(10, 1))),
    ])
    devices = sg.Frame("Audio devices", [
        row("Input device", sg.Combo(inputs, default_value=s.input_device or (inputs[0] if inputs else ""),
                                     key="input_device", size=(46, 1))),
        row("Output device", sg.Combo(outputs, default_value=s.output_device or (outputs[0] if outputs else ""),
                                      key="output_device", size=(46, 1))),
        [sg.Button("Reload devices", key="reload_devices"),
         sg.Text("Sample rate (0 = model rate)"), sg.Input(str(s.sample_rate), key="sample_rate", size=(8, 1))],
    ])
    normal = sg.Frame("Normal settings", [
        row("Speaker", sg.Combo(speakers, default_value=s.speaker or (speakers[0] if speakers else ""),
                                key="speaker", size=(24, 1), enable_events=True)),
        row("Response threshold (dB)", slider("threshold", -65, 0, 1)),
        row("Cluster / retrieval ratio", slider("cluster_ratio", 0, 1, 0.01)),
        row("Transpose (semitones)", slider("transpose", -24, 24, 1)),
        row("Noise scale", slider("noise_scale", 0, 1, 0.01)),
        row("F0 range (Hz, blank = 4.1)", [sg.Input("" if s.f0_min is None else s.f0_min, key="f0_min", size=(8, 1)),
                                           sg.Text("to"),
                                           sg.Input("" if s.f0_max is None else s.f0_max, key="f0_max", size=(8, 1)),
                                           sg.Checkbox("Octave repair", default=s.f0_repair, key="f0_repair",
                                                       enable_events=True)]),
        [sg.Text("", key="pitch", size=(70, 2))],
    ])
    perf = sg.Frame("Performance", [
        row("Block (s)", slider("block_time", 0.05, 3.0, 0.01)),
        row("Crossfade (s)", slider("crossfade_time", 0.01, 0.15, 0.01)),
        row("History blocks", slider("history_blocks", 1, 20, 1)),
        row("F0 predictor", sg.Combo(f0_names, default_value=s.f0_predictor, key="f0_predictor", readonly=True,
                                     enable_events=True)),
        row("Precision (at Start)", sg.Combo(list(PRECISIONS), default_value=s.precision, key="precision",
                                             readonly=True)),
        [sg.Checkbox("NSF-HiFiGAN enhancer", default=s.enhancer, key="enhancer", enable_events=True),
         sg.Checkbox("Feature retrieval", default=s.feature_retrieval, key="feature_retrieval")],
        [sg.Checkbox("Auto f0 prediction", default=s.auto_f0, key="auto_f0", enable_events=True),
         sg.Checkbox("Skip safe zone (synthesise only the tail)", default=s.skip_safe_zone, key="skip_safe_zone",
                     enable_events=True)],
    ])
    diff = sg.Frame("Shallow diffusion", [
        [sg.Text("Diffusion model", size=(24, 1)), *path("diffusion_model_path", (("Diffusion", "*.pt"),))],
        [sg.Text("Diffusion config (blank: auto)", size=(24, 1)),
         *path("diffusion_config_path", (("Config", "*.yaml"),))],
        row("Diffusion depth (k_step)", slider("k_step", 1, 1000, 1)),
        row("Speed-up", slider("diffusion_speedup", 1, 100, 1)),
        row("Method", sg.Combo(methods, default_value=s.diffusion_method, key="diffusion_method", readonly=True,
                               enable_events=True)),
        [sg.Checkbox("Enable shallow diffusion", default=s.use_diffusion, key="use_diffusion", enable_events=True),
         sg.Checkbox("Second encoding", default=s.second_encoding, key="second_encoding", enable_events=True)],
    ])
    readout = [
        [sg.Button("Start", key="start"), sg.Button("Stop", key="stop", disabled=True),
         sg.Button("Save settings", key="save"), sg.Button("Load settings", key="load")],
        [sg.Text("Latency:"), sg.Text("—", key="latency", size=(34, 1)),
         sg.Text("Compute per block:"), sg.Text("—", key="compute", size=(26, 1))],
        [sg.Text("", key="compute_warning", size=(150, 1), text_color="orange")],
        # 150 characters span the window's width; 4 lines hold the longest messages (device errors
        # with the file-conversion hint took 3 lines of 100 and were cut off at 2)
        [sg.Text("", key="status", size=(150, 4))],
    ]
    return [[model], [devices], [sg.Column([[normal], [perf]]), sg.Column([[diff]], vertical_alignment="top")],
            *readout]


class RealtimeApp:
    """The window plus the running stream. ``run()`` is the event loop; ``step()`` one event."""

    def __init__(self, settings: RealtimeSettings, *, settings_path: str | os.PathLike = "gui_settings.json",
                 devices: tuple[list, list] | None = None) -> None:
        import FreeSimpleGUI as sg

        from diffusion.samplers import SAMPLERS
        from inference.components import f0_predictor_names

        self.sg = sg
        self.settings = settings
        self.settings_path = Path(settings_path)
        self.device_error = ""
        if devices is None:
            devices = self._devices()
        self.inputs = [d.label for d in devices[0]]
        self.outputs = [d.label for d in devices[1]]
        speakers = model_speakers(settings.model_path, settings.config_path)
        sg.theme("DarkGrey9")
        layout = _layout(sg, settings, self.inputs, self.outputs, speakers, f0_predictor_names(), list(SAMPLERS))
        self.window = sg.Window(TITLE, layout, finalize=True)
        self.converter = None
        self.stream = None
        self._svc = None
        self._svc_key: tuple | None = None
        self._stats_key: tuple | None = None
        self._stats = None
        self.status(self.device_error)
        self.show_pitch(settings.model_path, settings.config_path, settings.speaker or (speakers[0] if speakers else ""))

    # --- helpers ---
    def _devices(self) -> tuple[list, list]:
        from inference.audio_io import list_devices
        from modules.errors import AudioError

        try:
            devices = list_devices()
        except AudioError as e:
            self.device_error = str(e)
            return [], []
        if not devices[0] or not devices[1]:
            from inference.audio_io import FILE_MODE_HINT
            self.device_error = f"no audio {'input' if not devices[0] else 'output'} device found; {FILE_MODE_HINT}"
        return devices

    def status(self, text: str) -> None:
        self.window["status"].update(text)

    def show_pitch(self, model_path: str, config_path: str, speaker: str, source_median_hz: float | None = None) -> None:
        """The speaker's f0 range and suggested key (from the model's f0 statistics) as text."""
        from inference.pitch import model_f0_stats, speaker_key_text

        key = (model_path, config_path)
        if key != self._stats_key:
            self._stats, self._stats_key = model_f0_stats(model_path, config_path or None), key
        self.window["pitch"].update(speaker_key_text(self._stats, speaker, source_median_hz) if speaker else "")

    def settings_from_values(self, values: dict) -> RealtimeSettings:
        """The window's values → settings (types as the dataclass; numbers typed into text boxes checked)."""
        data = self.settings.to_dict()
        for key, value in values.items():
            if key not in _FIELD_TYPES or value is None:
                continue
            kind = _FIELD_TYPES[key]
            if "None" in str(kind):  # optional numbers (f0_min / f0_max): blank = None
                kind = "float"
                if str(value).strip() == "":
                    data[key] = None
                    continue
            try:
                data[key] = {"int": lambda v: int(float(v)), "float": float, "bool": bool}.get(kind, str)(value)
            except ValueError:
                raise SvcError(f"{key}: {value!r} is not a number") from None
        return RealtimeSettings.from_dict(data)

    def read(self, timeout: int = 0) -> tuple[Any, dict]:
        return self.window.read(timeout=timeout)

    def _load_svc(self, s: RealtimeSettings):
        from inference.realtime import load_svc

        key = (s.model_path, str(s.resolved_config_path()), s.cluster_model_path, s.device, s.enhancer,
               s.use_diffusion, s.diffusion_model_path, str(s.resolved_diffusion_config_path()), s.feature_retrieval)
        if key != self._svc_key:
            self._svc = None
            self.status("loading model …")
            self.window.refresh()
            self._svc = load_svc(s)
            self._svc_key = key
        return self._svc

    # --- actions ---
    def start(self, values: dict) -> None:
        from inference.audio_io import AudioStream, choose_sample_rate, resolve_device
        from inference.realtime import RealtimeConverter

        self.stop()
        s = self.settings_from_values(values).validate()
        inp = resolve_device(s.input_device, "input")
        out = resolve_device(s.output_device, "output")
        svc = self._load_svc(s)
        rate = choose_sample_rate(inp, out, int(svc.target_sample), s.sample_rate)
        conv = RealtimeConverter(svc, s, sample_rate=rate)
        stream = AudioStream(conv, inp, out)
        try:
            stream.start()
        except Exception:
            conv.close()
            raise
        self.settings, self.converter, self.stream = s, conv, stream
        self.window["start"].update(disabled=True)
        self.window["stop"].update(disabled=False)
        self.status(f"running: {inp.label} → {out.label} at {rate} Hz, blocks of {1000 * conv.block_seconds:.0f} ms")

    def stop(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        if self.converter is not None:
            self.converter.close()
        self.stream = self.converter = None
        self.window["start"].update(disabled=False)
        self.window["stop"].update(disabled=True)

    def refresh_readout(self, values: dict | None = None) -> None:
        conv, stream = self.converter, self.stream
        if conv is None:
            if values:  # what Start will give: block + crossfade + SOLA search + last delay
                try:
                    ms = 1000 * (float(values["block_time"]) + float(values["crossfade_time"]) + 0.03)
                except (KeyError, TypeError, ValueError):
                    return
                self.window["latency"].update(f"≈ {ms:.0f} ms algorithmic (at Start)")
            return
        s = self.settings
        self.show_pitch(s.model_path, s.config_path, s.speaker or self.window["speaker"].get(),
                        conv.engine.input_median_hz())
        device = stream.device_latency if stream is not None else 0.0
        self.window["latency"].update(f"{1000 * conv.latency_seconds:.0f} ms algorithmic + {1000 * device:.0f} ms "
                                      "device")
        compute = conv.last_compute_time
        load = compute / conv.block_seconds if conv.block_seconds else 0.0
        self.window["compute"].update(f"{1000 * compute:.0f} ms of {1000 * conv.block_seconds:.0f} ms "
                                      f"({100 * load:.0f} %)")
        self.window["compute_warning"].update(compute_warning(conv.compute_times, conv.block_seconds) or "")
        if stream is not None and stream.error is not None:
            err = stream.error
            self.stop()
            self.status(f"stopped: {err}")

    def step(self, timeout: int = 200) -> bool:
        """Handle one event (or a timer tick); False once the window is closed."""
        sg = self.sg
        event, values = self.read(timeout)
        if event in (sg.WIN_CLOSED, "Exit"):
            self.stop()
            return False
        try:
            self.handle(event, values)
        except SvcError as e:
            self.status(f"error: {e}")
        except Exception as e:  # keep the window alive; the log has the traceback
            log.exception("GUI action %s failed", event)
            self.status(f"error: {type(e).__name__}: {e}")
        self.refresh_readout(values)
        return True

    def handle(self, event: str, values: dict) -> None:
        if event == "start":
            self.start(values)
        elif event == "stop":
            self.stop()
            self.status("stopped")
        elif event == "save":
            s = self.settings_from_values(values)
            save_settings(s, self.settings_path)
            self.settings = s
            self.status(f"settings saved to {self.settings_path}")
        elif event == "load":
            self.apply_settings(load_settings(self.settings_path))
            self.status(f"settings loaded from {self.settings_path}")
        elif event == "reload_devices":
            self.device_error = ""
            ins, outs = self._devices()
            self.inputs, self.outputs = [d.label for d in ins], [d.label for d in outs]
            self.window["input_device"].update(values=self.inputs, value=self.inputs[0] if self.inputs else "")
            self.window["output_device"].update(values=self.outputs, value=self.outputs[0] if self.outputs else "")
            self.status(self.device_error or f"{len(self.inputs)} input / {len(self.outputs)} output devices")
        elif event in ("model_path", "config_path"):
            speakers = model_speakers(values["model_path"], values["config_path"])
            self.window["speaker"].update(values=speakers, value=speakers[0] if speakers else "")
            self.show_pitch(values["model_path"], values["config_path"], speakers[0] if speakers else "")
        elif event == "speaker":
            self.show_pitch(values["model_path"], values["config_path"], values["speaker"])
        elif event == "enhancer" and values["enhancer"]:
            self.window["use_diffusion"].update(False)   # mutually exclusive, as 4.1
        elif event == "use_diffusion" and values["use_diffusion"]:
            self.window["enhancer"].update(False)
        if event in RealtimeSettings.LIVE and self.converter is not None:
            new = self.settings_from_values(values)
            self.converter.engine.apply_live_settings(**{event: getattr(new, event)})

    def apply_settings(self, s: RealtimeSettings) -> None:
        """Show ``s`` in the window."""
        for key, value in s.to_dict().items():
            if key in self.window.key_dict:
                self.window[key].update(value=str(value) if key == "sample_rate" else
                                        "" if value is None and key in ("f0_min", "f0_max") else value)
        self.settings = s

    def run(self) -> None:
        while self.step():
            pass
        self.close()

    def close(self) -> None:
        self.stop()
        self.window.close()


def run_gui(settings_path: str | os.PathLike = "gui_settings.json") -> None:
    """Open the window with the saved settings (or the defaults) and run until it is closed."""
    path = Path(settings_path)
    settings = load_settings(path) if path.is_file() else RealtimeSettings()
    try:
        app = RealtimeApp(settings, settings_path=path)
    except Exception as e:
        if type(e).__name__ == "TclError":
            raise SvcError(f"cannot open a window ({e}); set DISPLAY or run on a desktop. "
                           "File mode needs no window: python gui.py -m G.pth --input in.wav --output out.wav") from None
        raise
    app.run()
