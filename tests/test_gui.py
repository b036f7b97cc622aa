"""The realtime window (gui.py, realtime_gui/app.py) under Xvfb, in a subprocess.

The window opens with the settings given, shows the model's speakers, a value read back from
it matches, "Save settings" writes JSON (not a pickle), "Start" without a sound card reports
the missing device in the window instead of crashing; with a stand-in sound system "Start"
loads the model, converts blocks, shows latency and compute time, passes a live setting to the
engine, and "Stop" stops it; then the window closes. Skipped only when Xvfb
is not installed (it is listed in packages-debian.txt).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from realtime_helpers import start_xvfb, subprocess_env
from webui_helpers import build_tiny_models

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
from types import SimpleNamespace
import inference.audio_io as audio_io
from inference.realtime import RealtimeSettings
from realtime_gui.app import RealtimeApp

# a sound system with no devices, whatever the test machine has
fake = SimpleNamespace(query_hostapis=lambda: [{"name": "ALSA"}], query_devices=lambda: [],
                       default=SimpleNamespace(device=[-1, -1]))
audio_io.sounddevice_module = lambda: fake
model, settings_path = sys.argv[1], sys.argv[2]
app = RealtimeApp(RealtimeSettings(model_path=model, threshold=-50, block_time=0.3), settings_path=settings_path)
event, values = app.read(50)
report = {"threshold": values["threshold"], "block_time": values["block_time"],
          "f0_predictor": values["f0_predictor"], "speakers": list(app.window["speaker"].Values),
          "speaker": values["speaker"], "title": app.window.Title, "device_status": app.window["status"].get(),
          "pitch": app.window["pitch"].get()}
app.window["transpose"].update(7)
app.window["noise_scale"].update(0.25)
app.window.write_event_value("save", None)
app.step(500)
report["latency"] = app.window["latency"].get()
app.window.write_event_value("start", None)
app.step(500)
report["start_status"] = app.window["status"].get()
# the status line shows the whole message: a label of the same font and wrap width, free to grow,
# needs no more height than the status widget has
import tkinter as tk
app.window.TKroot.update()
st = app.window["status"].Widget
probe = tk.Label(st.master, text=st.cget("text"), font=st.cget("font"), wraplength=st.cget("wraplength"),
                 justify=st.cget("justify"))
report["status_fits"] = [probe.winfo_reqheight(), st.winfo_height()]
root = app.window.TKroot
report["status_inside"] = st.winfo_rooty() + st.winfo_height() <= root.winfo_rooty() + root.winfo_height()
probe.destroy()
report["alive"] = app.step(50)

# now a sound system with one input and one output; the stream runs 3 blocks when started
import numpy as np
dev = {"hostapi": 0, "default_samplerate": 44100.0}
fake.query_devices = lambda: [dict(dev, index=0, name="Mic", max_input_channels=2, max_output_channels=0),
                              dict(dev, index=1, name="Speakers", max_input_channels=0, max_output_channels=2)]
fake.default = SimpleNamespace(device=[0, 1])
fake.check_input_settings = fake.check_output_settings = lambda **kw: None
fake.CallbackAbort = RuntimeError
played = []

class Stream:
    def __init__(self, device, samplerate, blocksize, dtype, channels, callback):
        self.args, self.callback, self.active, self.latency = (device, samplerate, blocksize, channels), callback, False, (0.01, 0.02)
    def start(self):
        self.active = True
        _, sr, n, (cin, cout) = self.args
        t = np.arange(3 * n) / sr
        x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for i in range(3):
            out = np.zeros((n, cout), np.float32)
            self.callback(np.repeat(x[i * n:(i + 1) * n, None], cin, axis=1), out, n, None, None)
            played.append(out)
    def stop(self):
        self.active = False
    def close(self):
        pass

fake.Stream = Stream
app.window.write_event_value("reload_devices", None)
app.step(200)
app.window.write_event_value("start", None)
app.step(200)
report["run_status"] = app.window["status"].get()
report["run_latency"] = app.window["latency"].get()
report["run_compute"] = app.window["compute"].get()
report["played"] = [len(played), int(played[0].shape[0]), int(played[0].shape[1]), float(np.abs(played[-1]).max())]
app.window["transpose"].update(3)
app.window.write_event_value("transpose", 3)
app.step(200)
report["live_transpose"] = app.converter.engine.settings.transpose
report["run_pitch"] = app.window["pitch"].get()
app.window.write_event_value("stop", None)
app.step(200)
report["stopped"] = app.stream is None and app.window["status"].get()
app.close()
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def display():
    started = start_xvfb()
    if started is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb; it is in packages-debian.txt)")
    proc, name = started
    yield name
    proc.terminate()
    proc.wait(timeout=10)


def test_window_opens_reads_saves_and_closes(display, tmp_path):
    from modules.f0_stats import SpeakerF0Stats, save_f0_stats

    models = build_tiny_models(tmp_path)
    alto = SpeakerF0Stats(frames=100, voiced_seconds=1.2, median_hz=110.0, p5_hz=95.0, p95_hz=130.0)
    save_f0_stats(models.config.parent / "f0_stats.json", {"alto": alto})
    settings_path = tmp_path / "gui_settings.json"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(models.g), str(settings_path)], cwd=ROOT,
                       env=subprocess_env(display, SVC_PRETRAIN_DIR=str(models.pretrain)), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.split("REPORT ", 1)[1])
    assert report["threshold"] == -50 and report["block_time"] == 0.3
    assert report["f0_predictor"] == "fcpe"             # the 4.1 GUI default
    assert report["speakers"] == ["alto", "tenor"] and report["speaker"] == "alto"
    assert "no audio input device" in report["device_status"]
    assert "no audio input device" in report["start_status"] and "--input" in report["start_status"]
    assert report["alive"] is True
    needed, shown = report["status_fits"]
    assert needed <= shown and report["status_inside"], report["status_fits"]   # not cut off at the bottom
    assert report["latency"].startswith("≈ 370 ms")   # 0.3 s block + 0.04 s crossfade + 0.01 + 0.02
    # with a (fake) sound card: the model loads, blocks flow, the readout shows latency and compute
    assert report["run_status"].startswith("running: Mic (ALSA) → Speakers (ALSA) at 44100 Hz"), report
    assert report["run_latency"] == "372 ms algorithmic + 30 ms device"   # 26 frames + 40 + 10 + 20 ms
    assert re.fullmatch(r"\d+ ms of 302 ms \(\d+ %\)", report["run_compute"]), report["run_compute"]
    n_blocks, block, channels, peak = report["played"]
    assert (n_blocks, block, channels) == (3, 26 * 512, 2) and peak > 1e-3
    assert report["live_transpose"] == 3.0
    # the speaker's range from the model's f0 statistics; once the 220 Hz input ran, the key
    assert report["pitch"] == "alto: median 110 Hz, 5-95 % 95-130 Hz"
    assert "suggested key -12 semitones (your voice: median 2" in report["run_pitch"], report["run_pitch"]
    assert report["stopped"] == "stopped"
    saved = json.loads(settings_path.read_text())
    assert saved["transpose"] == 7.0 and saved["noise_scale"] == 0.25 and saved["threshold"] == -50.0
    assert saved["model_path"] == str(models.g)


def test_gui_without_display_says_so(tmp_path):
    env = subprocess_env()
    env.pop("DISPLAY", None)
    r = subprocess.run([sys.executable, "gui.py", "--settings", str(tmp_path / "none.json")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "cannot open a window" in r.stderr and "--input in.wav --output out.wav" in r.stderr


def test_compute_warning_when_blocks_approach_their_length():
    from realtime_gui.app import COMPUTE_WARNING_BLOCKS, compute_warning

    block = 0.3
    assert compute_warning([], block) is None
    assert compute_warning([0.1] * 20, block) is None                 # 33 %: fine
    msg = compute_warning([0.1] * 20 + [0.26] * COMPUTE_WARNING_BLOCKS, block)
    assert msg is not None and "260 ms of 300 ms (87 %)" in msg and "block time" in msg
    # one slow block among fast ones is not a trend (median of the recent blocks)
    assert compute_warning([0.1] * (COMPUTE_WARNING_BLOCKS - 1) + [0.5], block) is None
