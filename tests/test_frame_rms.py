"""``modules.audio.frame_rms`` gives librosa.feature.rms's values bit for bit (the slicer's cut
points and the loudness matching depend on them; 4.1 used librosa)."""

from __future__ import annotations

import numpy as np
import pytest

from modules.audio import frame_rms


@pytest.mark.parametrize("length", [100, 2047, 2048, 5000, 132317])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("frame,hop", [(2048, 512), (1764, 441), (88, 882)])
def test_frame_rms_equals_librosa(length, dtype, frame, hop):
    librosa = pytest.importorskip("librosa")
    y = (np.random.default_rng(length).standard_normal(length) * 0.3).astype(dtype)
    ref = librosa.feature.rms(y=y, frame_length=frame, hop_length=hop)
    got = frame_rms(y, frame, hop)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert np.array_equal(got, ref)


def test_frame_rms_of_several_channels_and_of_silence():
    y = np.zeros((2, 3000), np.float32)
    y[1, 1000:1100] = 1.0
    r = frame_rms(y, 400, 100)
    assert r.shape == (2, 1, 31)
    assert float(r[0].max()) == 0.0
    assert float(r[1].max()) == pytest.approx(np.sqrt(100 / 400), rel=1e-6)  # a window holding the whole burst
