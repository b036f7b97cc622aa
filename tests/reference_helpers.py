"""Reference outputs recorded before the inference refactor (issue 18), and the code that makes them.

``tests/data/realtime/reference.npz``: realtime file mode (``stream_array``) on tiny random models;
``tests/data/synth/staged_reference.npz``: ``SynthesizerTrn.infer`` of several mini configs. The
tests (tests/test_inference_seams.py) recompute them with the current code. Regenerate only when
an output change is intended:

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.reference_helpers
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
REALTIME_REF = DATA / "realtime" / "reference.npz"
SYNTH_REF = DATA / "synth" / "staged_reference.npz"

# name → (RealtimeSettings overrides, Svc keyword arguments, file rate)
REALTIME_CASES = {
    "direct_pm": (dict(f0_predictor="pm"), {}, 44100),
    "bridge48k_autof0": (dict(f0_predictor="pm", auto_f0=True, noise_scale=0.0), {}, 48000),
    "skip_safe_zone": (dict(f0_predictor="pm", skip_safe_zone=True, transpose=3.0), {}, 44100),
    "enhancer": (dict(f0_predictor="pm"), dict(nsf_hifigan_enhance=True), 44100),
    "diffusion": (dict(f0_predictor="pm", k_step=20, diffusion_speedup=10, diffusion_method="ddim"),
                  "diffusion", 44100),
}
REALTIME_SECONDS = 0.5


def realtime_models(root: Path):
    """Tiny audible SoVITS model + tiny diffusion model under ``root`` (as tests/test_realtime.py)."""
    from types import SimpleNamespace

    from realtime_helpers import write_audible_generator
    from webui_helpers import build_diffusion, build_tiny_models

    models = build_tiny_models(root)
    dm, dc = build_diffusion(root, models.pretrain)
    config = root / "audible" / "config.json"
    config.parent.mkdir(exist_ok=True)
    config.write_text(models.config.read_text())
    g = write_audible_generator(root / "audible" / "G_0.pth", json.loads(config.read_text()))
    return SimpleNamespace(root=root, g=g, config=config, pretrain=models.pretrain, dm=dm, dc=dc)


def realtime_outputs(tiny) -> dict[str, np.ndarray]:
    """Every case of :data:`REALTIME_CASES` streamed through ``RealtimeConverter`` (float32)."""
    from infer_helpers import voice
    from inference.infer_tool import Svc
    from inference.realtime import RealtimeConverter, RealtimeSettings, stream_array

    out = {}
    for name, (over, svc_kw, rate) in REALTIME_CASES.items():
        if svc_kw == "diffusion":
            svc_kw = dict(shallow_diffusion=True, diffusion_model_path=tiny.dm, diffusion_config_path=tiny.dc)
        svc = Svc(tiny.g, tiny.config, device="cpu", cluster_model_path=None, **svc_kw)
        settings = RealtimeSettings(**{**dict(block_time=0.1, crossfade_time=0.04, history_blocks=3,
                                              threshold=-60.0), **over})
        y = voice(REALTIME_SECONDS, rate, 210.0, seed=11)
        conv = RealtimeConverter(svc, settings, sample_rate=rate)
        try:
            out[name] = stream_array(conv, y).astype(np.float32)
        finally:
            conv.close()
    return out


# name → build_mini overrides, infer keyword arguments
SYNTH_CASES = {
    "default_ns04": ({}, dict(noice_scale=0.4)),
    "predict_f0_vol": (dict(vol_embedding=True), dict(noice_scale=0.35, predict_f0=True, vol=True)),
    "snake": (dict(vocoder_name="nsf-snake-hifigan"), dict(noice_scale=0.4)),
    "transformer_shared": (dict(use_transformer_flow=True, flow_share_parameter=True), dict(noice_scale=0.4)),
    "resblock2_depthwise": (dict(resblock="2", resblock_dilation_sizes=[[1, 3]] * 3, use_depthwise_conv=True),
                            dict(noice_scale=0.0, seed=7)),
}


def synth_outputs(prepared: bool = False) -> dict[str, np.ndarray]:
    """``infer`` of each :data:`SYNTH_CASES` mini model on ``mini_batch`` (first item) → audio."""
    import torch

    from synth_helpers import build_mini, mini_batch

    out = {}
    for name, (over, kw) in SYNTH_CASES.items():
        net = build_mini(**over).eval()
        if prepared:
            net = net.prepare_for_inference()
        b = mini_batch(net, 16, batch=1)
        kw = dict(kw)
        vol = b["vol"] if kw.pop("vol", False) else None
        with torch.no_grad():
            audio, f0 = net.infer(b["c"], b["f0"], b["uv"], g=b["sid"], vol=vol, **kw)
        out[name] = audio.numpy().astype(np.float32)
        out[name + "_f0"] = f0.numpy().astype(np.float32)
    return out


def main() -> None:
    import sys
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    torch.set_num_threads(1)
    np.savez_compressed(SYNTH_REF, **synth_outputs())
    with tempfile.TemporaryDirectory() as tmp:
        import os

        tiny = realtime_models(Path(tmp))
        os.environ["SVC_PRETRAIN_DIR"] = str(tiny.pretrain)
        np.savez_compressed(REALTIME_REF, **realtime_outputs(tiny))


if __name__ == "__main__":
    main()
