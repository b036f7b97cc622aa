"""The shared audio front end against the golden data of the original 4.1 code."""

from pathlib import Path

import numpy as np
import pytest
import torch

from modules import mel_processing as mp
from modules.commons import repeat_expand_2d
from modules.f0 import f0_to_coarse, interpolate_f0, normalize_f0
from modules.volume import VolumeExtractor

GOLD = Path(__file__).parent / "data" / "golden"


def close(a, b, rel=1e-6, max_abs=1e-4):
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    assert a.shape == b.shape, (a.shape, b.shape)
    rel_l2 = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
    assert rel_l2 <= rel, f"relative L2 {rel_l2:.3e} > {rel}"
    assert np.abs(a - b).max() <= max_abs, f"max abs {np.abs(a - b).max():.3e}"


@pytest.fixture(scope="module")
def clip():
    return torch.from_numpy(np.load(GOLD / "clip.npy"))[None]


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLD / "mel_outputs.npz")


def test_spectrogram_matches_golden(clip, golden):
    spec = mp.spectrogram_torch(clip, 2048, 44100, 512, 2048, center=False)
    assert spec.shape == (1, 1025, 131072 // 512)
    close(spec, golden["spec"])


def test_mel_matches_golden(clip, golden):
    spec = mp.spectrogram_torch(clip, 2048, 44100, 512, 2048)
    mel = mp.spec_to_mel_torch(spec, 2048, 80, 44100, 0.0, 22050)
    close(mel, golden["spec_to_mel"])
    mel2 = mp.mel_spectrogram_torch(clip, 2048, 80, 44100, 512, 2048, 0.0, 22050)
    # same arithmetic → identical
    assert torch.equal(mel, mel2)
    close(mel2, golden["mel_spectrogram"])


@pytest.mark.parametrize("keyshift,key", [(0, "nvstft_mel"), (-3, "nvstft_mel_keyshift_m3")])
def test_vocoder_mel_matches_golden(clip, golden, keyshift, key):
    stft = mp.STFT(44100, 128, 2048, 2048, 512, 40, 16000)
    mel = stft.get_mel(clip, keyshift=keyshift)
    close(mel, golden[key])


def test_filter_banks_equal_librosa_slaney():
    fb = np.load(GOLD / "filter_banks.npz")
    assert np.array_equal(mp.mel_basis(44100, 2048, 80, 0, 22050).numpy(), fb["mel_basis_80"])
    assert np.array_equal(mp.mel_basis(44100, 2048, 128, 40, 16000).numpy(), fb["mel_basis_128"])
    assert np.array_equal(mp.hann_window(2048).numpy(), fb["hann_2048"])


def test_mel_cache_distinguishes_banks_with_same_fmax():
    # 4.1 keyed its cache on fmax only; two front ends with the same fmax must not collide.
    a = mp.mel_basis(44100, 2048, 80, 0, 16000)
    b = mp.mel_basis(44100, 2048, 128, 40, 16000)
    assert a.shape == (80, 1025) and b.shape == (128, 1025)


def test_cache_built_during_a_conversion_still_serves_training():
    # A window or bank first built inside inference mode (a conversion) must not be an inference
    # tensor: autograd would refuse it in a later training step of the same process.
    args = (2048, 80, 22050, 512, 2048, 0.0, 11025.0)   # a rate no other test caches
    mp._tensor_cache.pop(("hann", 2048, torch.float32, "cpu"), None)
    with torch.inference_mode():
        mp.mel_spectrogram_torch(torch.randn(1, 8192), *args)
    assert not mp.hann_window(2048).is_inference() and not mp.mel_basis(22050, 2048, 80, 0.0, 11025.0).is_inference()
    x = torch.randn(1, 8192, requires_grad=True)
    mp.mel_spectrogram_torch(x, *args).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_spectrogram_too_short_is_a_clear_error():
    with pytest.raises(ValueError, match="too short"):
        mp.spectrogram_torch(torch.zeros(1, 500), 2048, 44100, 512, 2048)


def test_volume_matches_golden(clip):
    vol = VolumeExtractor(512).extract(clip)
    close(vol, np.load(GOLD / "volume.npy"), rel=1e-6, max_abs=1e-6)
    assert vol.shape == (256,)
    # frame i covers samples [i*hop, (i+1)*hop): a burst in frame 3 only shows up there
    x = torch.zeros(1, 512 * 6 + 100)
    x[0, 3 * 512:4 * 512] = 0.5
    v = VolumeExtractor(512).extract(x)
    assert v.shape == (6,)
    assert torch.allclose(v, torch.tensor([0, 0, 0, 0.5, 0, 0]))


def test_f0_to_coarse_matches_golden_and_edges():
    f0 = torch.from_numpy(np.load(GOLD / "pm_f0.npy")).float()[None]
    assert torch.equal(f0_to_coarse(f0), torch.from_numpy(np.load(GOLD / "f0_coarse.npy")))
    edge = f0_to_coarse(torch.tensor([0.0, 50.0, 1100.0, 1200.0]))
    # 4.1 quirk kept (spec §13.5): above ~1103 Hz the bin wraps to 0
    assert edge.tolist() == [1, 1, 255, 0]


def test_interpolate_f0():
    f0 = np.array([0, 100, 0, 0, 200, 0], dtype=np.float64)
    filled, uv = interpolate_f0(f0)
    assert uv.tolist() == [0, 1, 0, 0, 1, 0]
    np.testing.assert_allclose(filled, [100, 100, 400 / 3, 500 / 3, 200, 200])
    z, uvz = interpolate_f0(np.zeros(5))
    assert not z.any() and not uvz.any()
    one, _ = interpolate_f0(np.array([0, 0, 150.0, 0]))
    assert (one == 150).all()
    quirk, _ = interpolate_f0(np.array([0, 0, 150.0, 0]), single_voiced_uses_first=True)
    assert (quirk == 0).all()


def test_normalize_f0_uses_voiced_mean_and_global_rng():
    lf0 = torch.tensor([[[1.0, 2.0, 3.0, 10.0]]])
    uv = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    mask = torch.ones(1, 1, 4)
    out = normalize_f0(lf0, mask, uv, random_scale=False)
    assert torch.allclose(out, torch.tensor([[[-1.0, 0.0, 1.0, 8.0]]]))
    torch.manual_seed(1234)
    a = normalize_f0(lf0, mask, uv, random_scale=True)
    torch.manual_seed(1234)
    scale = torch.empty(1, 1).uniform_(0.8, 1.2)
    assert torch.allclose(a, out * scale)


@pytest.mark.parametrize("n,t", [(148, 256), (50, 86), (10, 10), (7, 23)])
def test_repeat_expand_left_equals_nearest_when_upsampling(n, t):
    c = torch.randn(4, n)
    left = repeat_expand_2d(c, t, "left")
    nearest = repeat_expand_2d(c, t, "nearest")
    assert left.shape == (4, t)
    assert torch.equal(left, nearest)


def test_repeat_expand_nearest_index_rule():
    c = torch.arange(5.0)[None]
    out = repeat_expand_2d(c, 8, "nearest")
    assert out[0].tolist() == [float(int(i * 5 / 8)) for i in range(8)]


def test_cached_window_and_mel_basis_work_in_training_after_inference_mode():
    """The first mel under torch.inference_mode() must not cache inference tensors that a later
    training step (autograd) cannot use."""
    import torch

    from modules.mel_processing import mel_spectrogram_torch

    args = (1536, 72, 44100, 384, 1536, 0.0, 22050)  # a size no other test caches first
    with torch.inference_mode():
        mel_spectrogram_torch(torch.randn(1, 6000) * 0.1, *args)
    y = (torch.randn(1, 6000) * 0.1).requires_grad_()
    mel_spectrogram_torch(y, *args).sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
