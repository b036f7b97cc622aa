"""Every SynthesizerTrn config switch builds, trains (forward + backward) and infers with the
right shapes; plus prepared-model equivalence, save → load round trip, character mix and the
frame-rate sine path. Uses a very small random-weight synthesizer (tests/synth_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import SynthesizerTrn
from vencoder import ENCODERS, encoder_dim
from modules.checkpoint import load_checkpoint, save_checkpoint, torch_load
from modules.errors import ConfigError
from modules.losses import kl_loss
from tests.synth_helpers import MINI_SEGMENT, build_mini, mini_batch, one_thread, rel_err  # noqa: F401

FRAMES = 12


def _train_pass(net: SynthesizerTrn, vol: bool = False):
    b = mini_batch(net, FRAMES)
    net.train()
    out = net(b["c"], b["f0"], b["uv"], b["spec"], g=b["sid"], c_lengths=b["lengths"], spec_lengths=b["lengths"],
              vol=b["vol"] if vol else None)
    y_hat, ids_slice, z_mask, (z, z_p, m_p, logs_p, m_q, logs_q), pred_lf0, norm_lf0, lf0 = out
    hop = net.dec.upp
    assert y_hat.shape == (2, 1, MINI_SEGMENT * hop)
    assert ids_slice.shape == (2,) and z_mask.shape == (2, 1, FRAMES)
    for t in (z, z_p, m_p, logs_p, m_q, logs_q):
        assert t.shape == (2, net.inter_channels, FRAMES)
    loss = y_hat.abs().mean() + kl_loss(z_p, logs_q, m_p, logs_p, z_mask)
    if net.use_automatic_f0_prediction:
        assert pred_lf0.shape == norm_lf0.shape == lf0.shape == (2, 1, FRAMES)
        loss = loss + torch.nn.functional.mse_loss(pred_lf0, lf0)
    else:
        assert pred_lf0 == norm_lf0 == lf0 == 0
    net.zero_grad()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    # Every parameter takes part in training except the F0 decoder's speaker-independent paths
    # that 4.1 also leaves unused (none) — so nothing may be missing.
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    return out


def _infer(net: SynthesizerTrn, vol: bool = False, **kw):
    b = mini_batch(net, FRAMES, batch=1)
    net.eval()
    audio, f0 = net.infer(b["c"], b["f0"], b["uv"], g=b["sid"], vol=b["vol"] if vol else None, **kw)
    assert audio.shape == (1, 1, FRAMES * net.dec.upp)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    return audio, f0


SWITCHES = {
    "default": {},
    "vol_embedding": {"vol_embedding": True},
    "depthwise": {"use_depthwise_conv": True},
    "share_flow": {"flow_share_parameter": True},
    "depthwise_share": {"use_depthwise_conv": True, "flow_share_parameter": True},
    "transformer_flow": {"use_transformer_flow": True},
    "transformer_flow_shared": {"use_transformer_flow": True, "flow_share_parameter": True},
    "no_f0_decoder": {"use_automatic_f0_prediction": False},
    "snake": {"vocoder_name": "nsf-snake-hifigan"},
    "resblock2": {"resblock": "2", "resblock_dilation_sizes": [[1, 3], [1, 3], [1, 3]]},
    "one_speaker": {"n_speakers": 1},
    "32k": {"sampling_rate": 32000, "upsample_rates": [10, 8, 2, 2], "upsample_kernel_sizes": [20, 16, 4, 4]},
    "48k": {"sampling_rate": 48000, "upsample_rates": [10, 6, 2, 2, 2], "upsample_kernel_sizes": [20, 12, 4, 4, 4]},
    "odd_strides": {"sampling_rate": 24000, "upsample_rates": [2, 3, 5], "upsample_kernel_sizes": [4, 7, 11]},
}


@pytest.mark.parametrize("name", list(SWITCHES))
def test_switch_trains_and_infers(name):
    overrides = SWITCHES[name]
    net = build_mini(**overrides)
    vol = bool(overrides.get("vol_embedding"))
    _train_pass(net, vol=vol)
    audio, _ = _infer(net, vol=vol, noice_scale=0.4, predict_f0=True)
    # The prepared model (folded weight norm, channels-last decoder) gives the same audio.
    net = net.prepare_for_inference()
    again, _ = _infer(net, vol=vol, noice_scale=0.4, predict_f0=True)
    assert rel_err(again, audio) < 1e-5


def test_switches_change_the_state_dict_as_4_1():
    keys = lambda net: list(net.state_dict())  # noqa: E731
    assert any(k.startswith("emb_vol.") for k in keys(build_mini(vol_embedding=True)))
    assert not any(k.startswith("emb_vol.") for k in keys(build_mini()))

    dw = build_mini(use_depthwise_conv=True).state_dict()
    assert dw["enc_q.enc.in_layers.0.depth_conv.weight_v"].shape == (8, 1, 5)
    assert dw["flow.flows.0.enc.in_layers.0.point_conv.weight_v"].shape == (16, 8, 1)
    assert not any("depth_conv" in k for k in dw if k.startswith("dec."))  # decoder unaffected

    shared = build_mini(flow_share_parameter=True)
    sd = shared.state_dict()
    assert torch.equal(sd["flow.wn.cond_layer.weight_v"], sd["flow.flows.6.enc.cond_layer.weight_v"])
    names = list(sd)
    wn = [i for i, k in enumerate(names) if k.startswith("flow.wn.")]
    flows = [i for i, k in enumerate(names) if k.startswith("flow.flows.")]
    assert wn and min(wn) > max(flows) and wn == list(range(min(wn), max(wn) + 1))  # 4.1: flows, then wn
    assert len(list(shared.parameters())) < len(list(build_mini().parameters()))

    assert not any(k.startswith("f0_decoder.") for k in keys(build_mini(use_automatic_f0_prediction=False)))
    snake = keys(build_mini(vocoder_name="nsf-snake-hifigan"))
    assert "dec.snakes.0.act.alpha" in snake and "dec.snake_post.downsample.lowpass.filter" in snake
    assert "dec.resblocks.0.activations.5.upsample.filter" in snake


def test_flow_layer_semantics():
    """n_flow_layer: WN depth for the residual flow (4 coupling layers fixed) but the number of
    coupling layers for the transformer flow, whose depth is n_layers_trans_flow (spec §13.7)."""
    res = build_mini(n_flow_layer=2)
    assert len(res.flow.flows) == 8 and len(res.flow.flows[0].enc.in_layers) == 2
    tf = build_mini(use_transformer_flow=True, n_flow_layer=3, n_layers_trans_flow=2)
    assert len(tf.flow.flows) == 6
    enc = tf.flow.flows[0].enc
    assert len(enc.self_attn_layers) == 2 and enc.ffn_layers[0].conv_1.weight.shape[-1] == 5
    sd = tf.state_dict()
    assert sd["flow.flows.4.enc.cond_layer.weight_v"].shape == (2 * 8 * 2, 16, 1)
    # The posterior encoder depth is 16 whatever n_layers_q says (spec §13.9).
    assert len(build_mini(n_layers_q=3).enc_q.enc.in_layers) == 16


@pytest.mark.parametrize("dim", sorted({encoder_dim(name) for name in ENCODERS}))  # 256, 768, 1024, 1280
def test_every_encoder_dimension(dim):
    net = build_mini(ssl_dim=dim, gin_channels=dim)
    assert net.state_dict()["pre.weight"].shape == (8, dim, 5)
    assert net.state_dict()["dec.cond.weight"].shape == (32, dim, 1)
    _train_pass(net)
    _infer(net)


def test_unknown_vocoder_name_is_a_config_error():
    with pytest.raises(ConfigError, match="nsf-hifigan"):
        build_mini(vocoder_name="hifigan-typo")


def test_half_precision_is_refused_on_cpu():
    with pytest.raises(ValueError, match="GPU"):
        build_mini().prepare_for_inference(dtype=torch.float16)


def test_save_load_round_trip_gives_identical_audio(tmp_path):
    net = build_mini(vol_embedding=True, flow_share_parameter=True, use_depthwise_conv=True)
    audio, _ = _infer(net, vol=True, noice_scale=0.4)
    optim = torch.optim.AdamW(net.parameters(), 1e-4)
    path = tmp_path / "G_5.pth"
    save_checkpoint(net, optim, 1e-4, 3, path)
    ckpt = torch_load(path)
    assert set(ckpt) == {"model", "iteration", "optimizer", "learning_rate"}
    assert any(k.endswith("weight_g") for k in ckpt["model"])
    assert not any("parametrizations" in k for k in ckpt["model"])
    fresh = build_mini(vol_embedding=True, flow_share_parameter=True, use_depthwise_conv=True, n_speakers=3)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # make sure the load really overwrites everything
    fresh.load_state_dict(ckpt["model"], strict=True)
    _, optim2, lr, it = load_checkpoint(path, fresh, torch.optim.AdamW(fresh.parameters(), 1e-4))
    assert (lr, it) == (1e-4, 3)
    again, _ = _infer(fresh, vol=True, noice_scale=0.4)
    assert torch.equal(audio, again)


def test_character_mix_with_one_hot_weights_equals_the_speaker():
    net = build_mini(n_speakers=3).eval()
    b = mini_batch(net, FRAMES, batch=1)
    ref, _ = net.infer(b["c"], b["f0"], b["uv"], g=torch.LongTensor([[1]]))
    net.EnableCharacterMix(3, "cpu")
    weights = torch.zeros(FRAMES, 3)
    weights[:, 1] = 1.0
    mixed, _ = net.infer(b["c"], b["f0"], b["uv"], g=weights)
    assert rel_err(mixed, ref) < 1e-5


def test_frame_rate_sine_path_matches_sample_rate_path_for_steady_f0():
    from vdecoder.hifigan.models import SineGen

    gen = SineGen(44100, harmonic_num=8, sine_amp=0.1)
    f0_frames = torch.full((1, 20), 220.0)
    f0_samples = f0_frames.repeat_interleave(512, dim=1)[..., None]
    torch.manual_seed(3)
    ref, _ = gen(f0_samples)
    gen.onnx = True
    torch.manual_seed(3)
    fast, _ = gen(f0_frames, 512)
    assert fast.shape == ref.shape == (1, 20 * 512, 9)
    # The fundamental has no random initial phase, so both paths give the same sine. (The
    # overtones differ by their start phase: 4.1's frame path adds the random phase to a whole
    # frame of samples, i.e. 512 times.)
    assert (fast[..., 0] - ref[..., 0]).abs().max() < 1e-3
    assert (fast[..., 0] - ref[..., 0]).abs().max() < (fast[..., 1:] - ref[..., 1:]).abs().max()


def test_onnx_switch_runs_the_decoder_on_frame_rate_f0():
    net = build_mini().eval()
    b = mini_batch(net, FRAMES, batch=1)
    z = torch.randn(1, 8, FRAMES)
    g = net.emb_g(b["sid"]).transpose(1, 2)
    with torch.no_grad():
        torch.manual_seed(0)
        ref = net.dec(z, b["f0"], g=g)
        net.dec.OnnxExport()
        assert net.dec.onnx and net.dec.m_source.l_sin_gen.onnx
        torch.manual_seed(0)
        out = net.dec(z, b["f0"], g=g)
    assert out.shape == ref.shape == (1, 1, FRAMES * 512)
    assert rel_err(out, ref) < 0.2  # same signal, slightly different sine phase arithmetic


def test_discriminator_and_losses():
    from models import MultiPeriodDiscriminator
    from modules.losses import discriminator_loss, feature_loss, generator_loss

    from models import DiscriminatorP

    d = MultiPeriodDiscriminator()
    y, y_hat = torch.randn(2, 1, 1000) * 0.1, torch.randn(2, 1, 1000) * 0.1
    rs, gs, frs, fgs = d(y, y_hat)
    assert len(rs) == len(gs) == len(frs) == len(fgs) == 6
    assert [len(f) for f in frs] == [7, 6, 6, 6, 6, 6]
    assert frs[1][0].shape[-1] == 2 and frs[5][0].shape[-1] == 11  # period folding
    sn = DiscriminatorP(3, use_spectral_norm=True)
    assert "conv_post.weight_orig" in sn.state_dict()
    assert sn(y)[0].shape[0] == 2
    ones, zeros = [torch.ones(2, 3)] * 2, [torch.zeros(2, 3)] * 2
    loss, r, g = discriminator_loss(ones, zeros)
    assert loss.item() == 0.0 and r == g == [0.0, 0.0]
    loss, per = generator_loss(zeros)
    assert loss.item() == 2.0 and len(per) == 2
    assert feature_loss([[torch.ones(3)]], [[torch.zeros(3)]]).item() == 2.0
    z = torch.zeros(1, 2, 4)
    mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    # Per element logs_p − logs_q − 0.5 + ½(z_p − m_p)²e^(−2 logs_p); summed over channels and
    # divided by the number of unmasked frames (not elements), as 4.1.
    assert kl_loss(z, z, z, z, mask).item() == pytest.approx(-0.5 * 2)
    assert kl_loss(z, z - 0.5, z, z, mask).item() == pytest.approx(0.0)


def test_legacy_weight_norm_files_interoperate():
    """Our files use 4.1's weight_g/weight_v names; a legacy weight-normed layer loads ours and
    ours loads the legacy one."""
    from modules.modules import weight_norm

    torch.manual_seed(0)
    ours = weight_norm(torch.nn.Conv1d(4, 6, 3))
    legacy = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3))  # the API 4.1 used
    assert list(ours.state_dict()) == list(legacy.state_dict()) == ["bias", "weight_g", "weight_v"]
    legacy.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 4, 10)
    torch.testing.assert_close(legacy(x), ours(x))
    other = weight_norm(torch.nn.Conv1d(4, 6, 3))
    other.load_state_dict(legacy.state_dict(), strict=True)
    torch.testing.assert_close(other(x), ours(x))



@pytest.mark.parametrize("resblock", ["1", "2"])
def test_chunked_residual_blocks_equal_unchunked(resblock):
    """Inference runs the residual blocks in chunks with a halo of their receptive radius; a
    too-small halo would change samples near every chunk border."""
    dil = [[1, 3, 5]] * 3 if resblock == "1" else [[1, 3]] * 3
    source = build_mini(resblock=resblock, resblock_dilation_sizes=dil)
    with torch.no_grad():  # 4.1's N(0, 0.01) init makes the blocks nearly the identity
        for name, w in source.dec.resblocks.named_parameters():
            if name.endswith("original1"):  # weight norm's direction v
                w.normal_(0, 0.3)
    net = source.for_inference(mrf_chunk=0)
    ref, _ = _infer(net, noice_scale=0.4)
    chunked_net = source.for_inference(mrf_chunk=97)  # many odd-sized chunks per stage
    assert (net.dec.mrf_chunk, chunked_net.dec.mrf_chunk) == (0, 97)
    chunked, _ = _infer(chunked_net, noice_scale=0.4)
    assert rel_err(chunked, ref) < 1e-6
    assert net.dec._mrf_halo == (60 if resblock == "1" else 5 * (1 + 3))
    with pytest.raises(ValueError, match="mrf_chunk"):
        source.for_inference(mrf_chunk=-1)


def test_default_config_has_the_4_1_tensor_counts():
    """Spec §7.2: the default config (vec768l12) has 751 tensors / 52,402,957 values, enc_q
    12,067,200; with flow_share_parameter the flow encoder is saved 5 times (778 keys)."""
    from modules.hparams import get_hparams_from_file

    hps = get_hparams_from_file(Path(__file__).parents[1] / "configs" / "config_template.json")
    torch.manual_seed(0)
    sd = SynthesizerTrn(1025, 20, **hps.model).state_dict()
    assert len(sd) == 751
    assert sum(v.numel() for v in sd.values()) == 52_402_957
    assert sum(v.numel() for k, v in sd.items() if k.startswith("enc_q.")) == 12_067_200
    assert sd["dec.ups.0.weight_v"].shape == (512, 256, 16) and sd["emb_g.weight"].shape == (200, 768)


def test_reduced_precision_inference_path():
    """The half/bfloat16 path (a GPU option) keeps the sine source in float32 and returns
    float32 audio; exercised here with bfloat16 on CPU by casting a prepared model by hand."""
    net = build_mini(vol_embedding=True).prepare_for_inference()
    ref, _ = _infer(net, vol=True, predict_f0=True)
    net.to(torch.bfloat16)
    out, f0 = _infer(net, vol=True, predict_f0=True)
    assert out.dtype == f0.dtype == torch.float32
    assert rel_err(out, ref) < 0.05


def test_discriminator_joint_pass_equals_separate_calls_and_keeps_gradients():
    from models import MultiPeriodDiscriminator

    torch.manual_seed(0)
    d = MultiPeriodDiscriminator()
    y = torch.randn(2, 1, 1200) * 0.1
    y_hat = (torch.randn(2, 1, 1200) * 0.1).requires_grad_()
    rs, gs, frs, fgs = d(y, y_hat)
    for k, disc in enumerate(d.discriminators):  # 4.1: each discriminator called on y, then on ŷ
        r, fr = disc(y)
        g, fg = disc(y_hat)
        assert torch.allclose(rs[k], r, atol=1e-6) and torch.allclose(gs[k], g, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(frs[k] + fgs[k], fr + fg))
    sum(x.sum() for x in gs).backward()
    assert y_hat.grad is not None and y_hat.grad.abs().sum() > 0


def test_spectral_norm_discriminator_keeps_two_calls(monkeypatch):
    from models import MultiPeriodDiscriminator

    d = MultiPeriodDiscriminator(use_spectral_norm=True)
    batches = []
    first = d.discriminators[0]
    orig = first.forward
    monkeypatch.setattr(first, "forward", lambda x: (batches.append(x.shape[0]), orig(x))[1])
    d(torch.randn(2, 1, 600), torch.randn(2, 1, 600))
    assert batches == [2, 2]  # one power iteration per call, as 4.1
