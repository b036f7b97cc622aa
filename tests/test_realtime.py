"""Realtime engine (inference/realtime.py), its file mode (gui.py --input/--output) and the
sound-card layer (inference/audio_io.py), on tiny random-weight models.

Bounds stated here:
* block DSP alone (pass-through renderer): output = input delayed by exactly ``stream_offset``
  samples (latency − block), to float rounding;
* tiny model whose output is a harmonic waveform of f0 (``write_audible_generator``), steady
  220 Hz input, noise 0: the file-mode output (latency removed) differs from the offline
  conversion of the whole file (same sine phases) by < 25 % RMS and by < 30 % of the offline
  peak-to-mean around every block join (measured ≈ 12 % and ≈ 13 %; the rest is the shorter
  attention context of a block), and no other shift within ±40 samples fits better (a sine
  phase restarted every block, as 4.1 did, gives ≈ 157 % RMS);
* the decoder run on the tail window equals the full-buffer decode to 1e-4 of the peak;
* consecutive blocks agree where they overlap, so SOLA never has to shift (offset 0 for every
  block; 4.1 restarted the sine phase and redrew the noise every block, so SOLA had to realign),
  and with noise 0.4 the largest sample step at a join is no larger than the largest inside blocks.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from infer_helpers import voice
from inference.realtime import (RealtimeConverter, RealtimeEngine, RealtimeSettings, StreamResampler,
                                load_settings, save_settings, stream_array)
from modules.errors import AudioError, ConfigError
from realtime_helpers import Passthrough, band_limited_noise, write_audible_generator
from webui_helpers import build_diffusion, build_tiny_models

SR = 44100
HOP = 512


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention on a shared 2-core box
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("realtime")
    models = build_tiny_models(root)
    dm, dc = build_diffusion(root, models.pretrain)
    mp = pytest.MonkeyPatch()
    mp.setenv("SVC_PRETRAIN_DIR", str(models.pretrain))
    import json

    config = root / "audible" / "config.json"
    config.parent.mkdir()
    config.write_text(models.config.read_text())
    g = write_audible_generator(root / "audible" / "G_0.pth", json.loads(config.read_text()))
    yield SimpleNamespace(root=root, g=g, config=config, pretrain=models.pretrain, dm=dm, dc=dc)
    mp.undo()


@pytest.fixture(scope="module")
def svc(tiny):
    from inference.infer_tool import Svc

    return Svc(tiny.g, tiny.config, device="cpu", cluster_model_path=None)


def steady_tone(seconds: float, f0: float = 220.0, sr: int = SR) -> np.ndarray:
    """Seven harmonics at a fixed pitch, 50 ms fades (every f0 predictor agrees on its pitch)."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    return (0.4 * y * env / np.abs(y).max()).astype(np.float32)


def _settings(**kw) -> RealtimeSettings:
    base = dict(block_time=0.2, crossfade_time=0.04, history_blocks=4, f0_predictor="pm", threshold=-60.0)
    return RealtimeSettings(**{**base, **kw})


def _offline_like(conv, svc, y: np.ndarray, monkeypatch, f0p: str = "pm") -> np.ndarray:
    """Offline conversion of the whole array with the realtime engine's harmonic source: 4.1's
    frame-rate formula with the sine phases the engine ``conv`` gives frame 0."""
    from vdecoder.hifigan.sources import FrameRateSource

    phase = conv.engine._phase
    offset = torch.from_numpy(phase.initial / phase.upp).float()
    with monkeypatch.context() as mp:
        mp.setattr(svc.net_g_ms.dec, "default_source", lambda: FrameRateSource(offset))
        return svc.infer("alto", 0, y, f0_predictor=f0p, noice_scale=0.0)[0].numpy()


# --- block DSP, latency, resampling (no models) ----------------------------------------------------
@pytest.mark.parametrize("block_frames, crossfade, history", [(17, 0.04, 4), (40, 0.1, 1), (3, 0.15, 2)])
def test_output_is_input_delayed_by_reported_latency(block_frames, crossfade, history):
    p = Passthrough(sample_rate=SR, hop=HOP, block_frames=block_frames, crossfade_time=crossfade,
                    history_blocks=history)
    B = p.block_size
    cf, sola, delay = int(crossfade * SR), int(0.01 * SR), int(0.02 * SR)
    # 4.1's figure: block + crossfade + SOLA search (10 ms) + last delay (20 ms)
    assert p.latency_samples == B + cf + sola + delay
    assert p.latency_seconds == pytest.approx((B + cf + sola + delay) / SR)
    assert p.stream_offset == cf + sola + delay
    x = band_limited_noise(12 * B, SR, seed=block_frames)
    out = np.concatenate([p.process(x[i:i + B]) for i in range(0, len(x), B)])
    assert out.shape == x.shape
    d = p.stream_offset
    np.testing.assert_allclose(out[d:], x[:-d], atol=1e-6)
    assert np.abs(out[:d]).max() < 1e-6
    assert p.last_sola_offset == 0


def test_block_sizes_are_checked():
    p = Passthrough(sample_rate=SR, hop=HOP, block_frames=4, crossfade_time=0.04, history_blocks=2)
    with pytest.raises(AudioError, match="whole frames"):
        p.process(np.zeros(4 * HOP + 1, np.float32))
    with pytest.raises(AudioError, match="whole frames"):
        p.process(np.zeros(5 * HOP, np.float32))


def test_stream_resampler_equals_whole_signal_resampling():
    from modules.audio import sinc_resample

    x = band_limited_noise(30000, 48000, seed=3)
    rs = StreamResampler(48000, 44100)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        parts.append(rs.push(x[i:i + n]))
        i += n
    got = np.concatenate(parts)
    ref = sinc_resample(torch.from_numpy(x), 48000, 44100, lowpass_filter_width=rs.lowpass_filter_width).numpy()
    assert 0 < len(ref) - len(got) <= rs.n * (1 + (rs.width + rs.o) // rs.o)  # only the filter's look-ahead is held
    np.testing.assert_allclose(got, ref[:len(got)], atol=1e-5)


def test_device_rate_bridge_keeps_timing():
    """48 kHz device, 44.1 kHz model: resampled both ways, still the input delayed by stream_offset."""
    stub = SimpleNamespace(target_sample=SR, hop_size=HOP)
    s = _settings(block_time=0.1)
    conv = RealtimeConverter(stub, s, sample_rate=48000, engine_factory=lambda **kw: Passthrough(
        sample_rate=SR, hop=HOP, block_frames=9, crossfade_time=s.crossfade_time, history_blocks=2, **kw))
    B = conv.block_size
    assert B == 4800 and conv.engine.max_block_frames >= 9
    x = band_limited_noise(25 * B, 48000, cutoff=12000, seed=5)
    out = np.concatenate([conv.process(x[i:i + B]) for i in range(0, len(x), B)])
    d = conv.stream_offset
    ref = x[:-d]
    err = np.abs(out[d:] - ref)[2000:]  # skip the fade-in of the start
    assert err.max() < 0.01 * np.abs(x).max()
    assert conv.latency_seconds == pytest.approx((B + d) / 48000)


# --- settings ------------------------------------------------------------------------------------
def test_settings_json_round_trip_and_errors(tmp_path):
    s = RealtimeSettings(transpose=5, threshold=-30, speaker="alto", history_blocks=3)
    assert RealtimeSettings().f0_predictor == "fcpe"  # the GUI's default (spec §10.8)
    path = save_settings(s, tmp_path / "gui_settings.json")
    text = path.read_text()
    assert '"transpose": 5.0' in text and "pickle" not in text
    assert load_settings(path) == s
    (tmp_path / "bad.json").write_text('{"block_tim": 0.3}')
    with pytest.raises(ConfigError, match="block_tim"):
        load_settings(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text('{"history_blocks": "four"}')
    with pytest.raises(ConfigError, match="history_blocks"):
        load_settings(tmp_path / "bad2.json")
    (tmp_path / "bad3.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad3.json"):
        load_settings(tmp_path / "bad3.json")
    with pytest.raises(ConfigError, match="f0_predictor"):
        RealtimeSettings(f0_predictor="yin").validate()
    with pytest.raises(ConfigError, match="crossfade_time"):
        RealtimeSettings(crossfade_time=0).validate()


# --- the engine on a tiny model ------------------------------------------------------------------------
def test_file_mode_cli_keeps_length_and_rate(tiny, tmp_path):
    from gui import main
    from modules.cli import run_main

    y44 = voice(1.2, SR, 220.0, seed=1)
    sf.write(tmp_path / "in44.wav", y44, SR)
    sf.write(tmp_path / "in48.wav", voice(1.2, 48000, 220.0, seed=1), 48000)
    none = str(tmp_path / "no_settings.json")
    # default f0 predictor (fcpe, the torchfcpe wheel's weights) at the model rate
    assert main(["-m", str(tiny.g), "--input", str(tmp_path / "in44.wav"), "--output", str(tmp_path / "o44.wav"),
                 "--block", "0.25", "--settings", none]) == 0
    # another device rate: the resampling bridge
    assert main(["-m", str(tiny.g), "--input", str(tmp_path / "in48.wav"), "--output", str(tmp_path / "o48.wav"),
                 "--block", "0.25", "-f0p", "pm", "--settings", none, "--no-align"]) == 0
    for name, sr, n in (("o44", SR, len(y44)), ("o48", 48000, int(1.2 * 48000))):
        data, rate = sf.read(tmp_path / f"{name}.wav", dtype="float32")
        assert rate == sr and data.ndim == 1 and len(data) == n
        assert np.isfinite(data).all() and np.abs(data).max() > 1e-3
    assert run_main(main, ["--input", str(tmp_path / "in44.wav"), "--settings", none]) == 2


def test_realtime_matches_offline_conversion_across_block_joins(svc, monkeypatch):
    y = steady_tone(2.0)
    conv = RealtimeConverter(svc, _settings(noise_scale=0.0))
    try:
        assert conv.latency_seconds == pytest.approx((17 * HOP + 1764 + 441 + 882) / SR)
        out = stream_array(conv, y)
        off = _offline_like(conv, svc, y, monkeypatch)
    finally:
        conv.close()
    assert out.shape == y.shape
    n = len(off)  # whole frames
    inner = slice(conv.block_size, n - int(0.1 * SR))  # away from the file's edges
    out = out[:n]
    ac = off[inner] - off[inner].mean()
    assert ac.std() > 0.01  # the model's output does follow the input
    err = (out - off)[inner] - (out - off)[inner].mean()
    assert np.linalg.norm(err) / np.linalg.norm(ac) < 0.25
    dev, scale = np.abs(out - off - (out - off)[inner].mean()), np.abs(ac).max()
    cf = conv.engine.crossfade
    for j in range(2 * conv.block_size, n - int(0.1 * SR), conv.block_size):
        assert dev[j - cf: j + cf].max() < 0.3 * scale, f"block join at sample {j}"
    lags = np.arange(-40, 41)  # the latency removed is the right one: no other shift fits better
    mse = [np.mean((out[inner] - np.roll(off, k)[inner]) ** 2) for k in lags]
    assert lags[int(np.argmin(mse))] == 0
    assert set(conv.engine.sola_offsets) == {0}


def test_block_joins_have_no_steps_with_noise(svc):
    """Default noise 0.4, vibrato, fcpe: blocks agree (SOLA stays at 0), no step at the joins."""
    y = voice(1.6, SR, 200.0, seed=4)
    conv = RealtimeConverter(svc, _settings(block_time=0.1, f0_predictor="fcpe"))
    try:
        out = stream_array(conv, y, align=False)
    finally:
        conv.close()
    B = conv.block_size
    d = np.abs(np.diff(out))
    joins = np.arange(B, len(out) - 1, B) - 1
    assert d[joins].max() <= 1.0 * np.delete(d, joins).max()
    assert np.abs(out).max() > 1e-3
    assert len(conv.engine.sola_offsets) == -(-len(out) // B) and set(conv.engine.sola_offsets) == {0}


def test_synthesis_follows_synthesizer_infer(svc, monkeypatch):
    """The engine's step-by-step synthesis = SynthesizerTrn.infer on the same buffer (noise 0)."""
    y = voice(1.5, SR, 240.0, seed=2)
    for auto in (False, True):
        eng = RealtimeEngine(svc, _settings(noise_scale=0.0, auto_f0=auto))
        try:
            B = eng.block_size
            for i in range(0, 6 * B, B):
                eng.process(y[i:i + B])
            with torch.inference_mode():
                vol = svc.volume_extractor.extract(torch.from_numpy(eng.buffer)[None])
                eng._phase.reset()  # the whole buffer is an earlier window than the last block's
                ours = eng._synthesize(0, eng.f0.copy(), vol)  # d0 = 0: decode the whole buffer
                # infer with the engine's source (phase at the buffer start), else the same stages
                monkeypatch.setattr(svc.net_g_ms.dec, "default_source", eng._phase.source)
                ref, _ = svc.net_g_ms.infer(eng.units[None], torch.from_numpy(eng.f0)[None],
                                            torch.from_numpy(eng.uv)[None], g=torch.LongTensor([[eng.sid]]),
                                            noice_scale=0.0, predict_f0=auto)
            np.testing.assert_allclose(ours.numpy(), ref[0, 0].numpy(), atol=2e-5)
        finally:
            monkeypatch.undo()
            eng.close()


def test_decoder_window_equals_full_decode(svc):
    """Decoding only the tail (margin = receptive field, sine phase carried) gives the same samples."""
    eng = RealtimeEngine(svc, _settings())
    try:
        net = svc.net_g_ms
        dec = net.dec
        gen = torch.Generator().manual_seed(0)
        T, d0 = 90, 40
        z = torch.randn(1, eng.inter, T, generator=gen)
        f0 = 120 + 200 * torch.rand(1, T, generator=gen)
        g = net.embed_speaker(torch.LongTensor([[0]]))
        phase = eng._phase
        from vdecoder.hifigan.sources import FrameRateSource, SampleRateSource

        with torch.inference_mode():
            phase.reset()
            phase.start(0, f0[0].numpy())
            full = net.decode(z, f0, g, source=phase.source())[0, 0]
            phase.start(d0, f0[0, d0:].numpy())
            tail = net.decode(z[:, :, d0:], f0[:, d0:], g, source=phase.source())[0, 0]
            m = eng.margin_frames * HOP
            np.testing.assert_allclose(tail[m:].numpy(), full[d0 * HOP + m:].numpy(), atol=1e-4 * full.abs().max())
            # without the carried phase the same window differs: the check above can fail
            wrong_source = FrameRateSource(torch.rand(phase.dim, generator=gen) / phase.upp)
            wrong = net.decode(z[:, :, d0:], f0[:, d0:], g, source=wrong_source)[0, 0]
            assert (wrong[m:] - full[d0 * HOP + m:]).abs().max() > 1e-2 * full.abs().max()
    finally:
        eng.close()
    # the engine changed nothing of the Svc's model: its decoder still runs the offline source
    assert not dec.onnx and isinstance(dec.default_source(), SampleRateSource)


def test_silence_is_gated_and_not_synthesised(svc):
    eng = RealtimeEngine(svc, _settings(threshold=-45.0))
    try:
        B = eng.block_size
        quiet = (1e-4 * np.random.default_rng(0).standard_normal(5 * B)).astype(np.float32)  # −80 dBFS
        out = np.concatenate([eng.process(quiet[i:i + B]) for i in range(0, 5 * B, B)])
        assert np.abs(out).max() == 0 and eng.skipped_blocks == 5
        loud = voice(0.8, SR, 220.0, seed=3)[:3 * B]
        out = np.concatenate([eng.process(loud[i:i + B]) for i in range(0, 3 * B, B)])
        assert np.abs(out[-B:]).max() > 1e-3 and eng.skipped_blocks == 5
        assert len(eng.compute_times) == 8 and eng.last_compute_time > 0
    finally:
        eng.close()


def test_live_settings_apply_to_the_next_block(svc):
    y = voice(1.2, SR, 220.0, seed=5)
    outs = []
    for tr in (0.0, 12.0):
        eng = RealtimeEngine(svc, _settings(noise_scale=0.0))
        try:
            B = eng.block_size
            eng.apply_live_settings(transpose=tr, speaker="tenor")
            assert eng.sid == 1 and eng.settings.transpose == tr
            outs.append(np.concatenate([eng.process(y[i:i + B]) for i in range(0, 5 * B, B)]))
            with pytest.raises(ConfigError, match="block_time"):
                eng.apply_live_settings(block_time=1.0)
            with pytest.raises(Exception, match="speaker"):
                eng.apply_live_settings(speaker="nobody")
        finally:
            eng.close()
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


def test_shallow_diffusion_and_enhancer_in_blocks(tiny):
    from inference.infer_tool import Svc

    y = voice(0.8, SR, 220.0, seed=6)
    for kw in (dict(shallow_diffusion=True, diffusion_model_path=tiny.dm, diffusion_config_path=tiny.dc),
               dict(nsf_hifigan_enhance=True)):
        svc2 = Svc(tiny.g, tiny.config, device="cpu", cluster_model_path=None, **kw)
        eng = RealtimeEngine(svc2, _settings(block_time=0.15, k_step=20, diffusion_speedup=10,
                                             diffusion_method="ddim"))
        try:
            B = eng.block_size
            out = np.concatenate([eng.process(y[i:i + B]) for i in range(0, 4 * B, B)])
        finally:
            eng.close()
        assert out.shape == (4 * B,) and np.isfinite(out).all() and np.abs(out[-B:]).max() > 1e-4


# --- sound-card layer ------------------------------------------------------------------------------
class FakeSD:
    """Just enough of ``sounddevice`` for the device logic."""

    class CallbackAbort(Exception):
        pass

    def __init__(self, devices=(), rates=(44100, 48000)):
        self.devices = [dict(d, index=i) for i, d in enumerate(devices)]
        self.rates = set(rates)
        self.default = SimpleNamespace(device=[0 if devices else -1, 1 if len(devices) > 1 else -1])

    def query_hostapis(self):
        return [{"name": "ALSA"}]

    def query_devices(self):
        return self.devices

    def check_input_settings(self, device=None, samplerate=None, **kw):
        if samplerate not in self.rates:
            raise ValueError("Invalid sample rate")

    check_output_settings = check_input_settings


def _dev(name, n_in, n_out, rate=48000.0):
    return {"name": name, "hostapi": 0, "max_input_channels": n_in, "max_output_channels": n_out,
            "default_samplerate": rate}


def test_no_audio_device_gives_a_clear_message():
    from inference.audio_io import resolve_device

    with pytest.raises(AudioError, match="no audio input device.*--input in.wav --output out.wav"):
        resolve_device("", "input", sd=FakeSD([]))
    with pytest.raises(AudioError, match="output device 'Nope' not found; available: Speakers \\(ALSA\\)"):
        resolve_device("Nope", "output", sd=FakeSD([_dev("Mic", 2, 0), _dev("Speakers", 0, 2)]))


def test_missing_portaudio_gives_a_clear_message(monkeypatch):
    from inference import audio_io

    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(AudioError, match="libportaudio2"):
        audio_io.sounddevice_module()
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(AudioError, match="pip install sounddevice"):
        audio_io.sounddevice_module()


def test_devices_rates_and_callback():
    from inference.audio_io import AudioStream, choose_sample_rate, list_devices, resolve_device

    sd = FakeSD([_dev("Mic", 2, 0, 48000.0), _dev("Speakers", 0, 2, 48000.0)])
    inputs, outputs = list_devices(sd)
    assert [d.label for d in inputs] == ["Mic (ALSA)"] and [d.label for d in outputs] == ["Speakers (ALSA)"]
    mic, spk = resolve_device("", "input", sd), resolve_device("Speakers (ALSA)", "output", sd)
    assert choose_sample_rate(mic, spk, 44100, sd=sd) == 44100          # the model rate when accepted
    assert choose_sample_rate(mic, spk, 44100, sd=FakeSD(rates=[48000])) == 48000  # else the device's
    with pytest.raises(AudioError, match="no sample rate"):
        choose_sample_rate(mic, spk, 44100, requested=22050, sd=sd)

    conv = SimpleNamespace(process=lambda x: 2 * x)
    stream = AudioStream(conv, mic, spk, sd=sd)
    indata = np.stack([np.full(8, 0.1, np.float32), np.full(8, 0.3, np.float32)], axis=1)
    outdata = np.zeros((8, 2), np.float32)
    stream._callback(indata, outdata, 8, None, None)
    np.testing.assert_allclose(outdata, 0.4)
    stream.converter = SimpleNamespace(process=lambda x: 1 / 0)
    with pytest.raises(FakeSD.CallbackAbort):
        stream._callback(indata, outdata, 8, None, "input overflow")
    assert isinstance(stream.error, ZeroDivisionError) and stream.xruns == 1 and not outdata.any()
