"""training/data.py: item loading over the 4.1 artifacts, random processing, collation, sampling."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from modules.hparams import get_hparams_from_file
from modules.mel_processing import spectrogram_torch
from preprocessing.features import spec_path
from preprocessing.report import DatasetError
from training.data import (CROP_FRAMES, TextAudioCollate, TextAudioSpeakerLoader, build_train_loader,
                           ensure_spectrograms)
from tests.train_helpers import SSL_DIM, make_dataset, one_thread, write_clip, write_config  # noqa: F401


@pytest.fixture
def ds_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, clips_per_speaker=2, vol=True)
    return tmp_path


def _hps(root, **model):
    return get_hparams_from_file(write_config(root, model=model or None))


def test_item_matches_the_artifacts(ds_root):
    hps = _hps(ds_root)
    ds = TextAudioSpeakerLoader(hps.data.training_files, hps, min_frames=10)
    # 4.1's order: the list shuffled once with random.seed(1234)
    listed = (ds_root / "filelists/train.txt").read_text().split()
    random.Random(1234).shuffle(listed)
    assert ds.audiopaths == listed
    path = "dataset/44k/spk1/spk1_1.wav"
    it = ds.load_item(path)
    t = 44  # frames + 4·i for clip 1
    assert it.c.shape == (SSL_DIM, t) and it.f0.shape == (t,) and it.uv.shape == (t,)
    assert it.spec.shape == (1025, t) and it.audio.shape == (1, t * 512)
    assert it.spk.tolist() == [1] and it.volume is None  # vol_embedding off: the .vol.npy is not read
    assert it.f0.dtype == torch.float32 and float(it.f0[5]) == pytest.approx(110 + 60 + 15)
    assert it.uv[:2].tolist() == [0.0, 0.0] and bool(it.uv[2:].all())
    # the stored spectrogram is the one of the audio as read (int16 / 32768)
    torch.testing.assert_close(it.spec, spectrogram_torch(it.audio, 2048, 44100, 512, 2048)[0])
    assert float(it.audio.abs().max()) == pytest.approx(0.5, abs=1e-3)


def test_volume_augmentation_rescales_audio_volume_and_spectrogram(ds_root):
    hps = _hps(ds_root, vol_embedding=True)
    hps.train.vol_aug = True
    ds = TextAudioSpeakerLoader(hps.data.training_files, hps, min_frames=10)
    base = ds.load_item(ds.audiopaths[0])
    assert base.volume is not None and base.volume.shape == base.f0.shape
    random.seed(3)
    changed = 0
    for _ in range(6):
        it = ds[0]
        ratio = float(it.audio.abs().max() / base.audio.abs().max())
        torch.testing.assert_close(it.volume, base.volume * ratio, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(it.spec, spectrogram_torch(it.audio, 2048, 44100, 512, 2048)[0])
        torch.testing.assert_close(it.c, base.c)  # units and f0 untouched
        changed += abs(ratio - 1) > 1e-3
    assert 0 < changed < 6  # a coin flip per item
    hps.train.vol_aug = False
    assert torch.equal(TextAudioSpeakerLoader(hps.data.training_files, hps)[0].audio, base.audio)


def test_long_items_are_cut_to_790_frames(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, clips_per_speaker=1)
    write_clip(tmp_path / "dataset/44k/spk0/long.wav", 805, 200.0, seed=9)
    hps = _hps(tmp_path)
    ds = TextAudioSpeakerLoader(["dataset/44k/spk0/long.wav"], hps)
    full = ds.load_item("dataset/44k/spk0/long.wav")
    random.seed(0)
    it = ds[0]
    assert it.c.shape[1] == it.spec.shape[1] == it.f0.shape[0] == CROP_FRAMES
    assert it.audio.shape[1] == CROP_FRAMES * 512
    start = next(s for s in range(0, 6) if torch.equal(full.spec[:, s:s + CROP_FRAMES], it.spec))
    assert torch.equal(it.audio, full.audio[:, start * 512:(start + CROP_FRAMES) * 512])


def test_collate_sorts_longest_first_and_zero_pads(ds_root):
    hps = _hps(ds_root, vol_embedding=True)
    ds = TextAudioSpeakerLoader(hps.data.training_files, hps)
    items = [ds.load_item(p) for p in ("dataset/44k/spk0/spk0_0.wav", "dataset/44k/spk1/spk1_1.wav")]
    b = TextAudioCollate()(items)
    assert list(b) == ["c", "f0", "spec", "y", "spk", "lengths", "uv", "volume"]  # 4.1's tuple order
    assert b["lengths"].tolist() == [44, 40] and b["spk"].tolist() == [[1], [0]]
    assert b["c"].shape == (2, SSL_DIM, 44) and b["y"].shape == (2, 1, 44 * 512) and b["volume"].shape == (2, 44)
    assert torch.equal(b["spec"][1, :, :40], items[0].spec) and not b["spec"][1, :, 40:].any()
    assert not b["y"][1, :, 40 * 512:].any() and not b["f0"][1, 40:].any()
    items[0].volume = None
    assert TextAudioCollate()(items)["volume"] is None


def test_missing_spectrograms_are_never_written_by_workers(ds_root, one_thread):
    hps = _hps(ds_root)
    hps.train.num_workers = 2
    victim = spec_path("dataset/44k/spk0/spk0_1.wav")
    saved = torch.load(victim, weights_only=True)
    victim.unlink()
    loader, sampler = build_train_loader(hps)
    assert sampler is None and loader.num_workers == 2
    before = sorted(p.name for p in (ds_root / "dataset").rglob("*"))
    batches = list(loader)
    assert sorted(p.name for p in (ds_root / "dataset").rglob("*")) == before  # nothing written
    assert sum(int(b["lengths"].numel()) for b in batches) == 4
    # the main process writes it, atomically, with the same content preprocessing gives
    assert ensure_spectrograms(loader.dataset) == 1
    torch.testing.assert_close(torch.load(victim, weights_only=True), saved)
    assert not [p for p in victim.parent.iterdir() if p.name.startswith(".")]
    assert ensure_spectrograms(loader.dataset) == 0


def test_distributed_sampler_splits_the_files_between_ranks(ds_root):
    hps = _hps(ds_root)
    hps.train.batch_size = 1
    seen = []
    for rank in (0, 1):
        loader, sampler = build_train_loader(hps, rank=rank, world_size=2)
        seen.append([loader.dataset.audiopaths[i] for i in sampler])
    assert len(seen[0]) == len(seen[1]) == 2
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted((ds_root / "filelists/train.txt").read_text().split())


def test_unusable_file_lists_fail_up_front(ds_root, caplog):
    hps = _hps(ds_root)
    (ds_root / "dataset/44k/spk0/spk0_0.wav.f0.npy").unlink()
    with pytest.raises(DatasetError, match=r"1 of 4 listed files cannot be used:\n  dataset/44k/spk0/spk0_0.wav: "
                                           r"missing spk0_0.wav.f0.npy"):
        TextAudioSpeakerLoader(hps.data.training_files, hps)
    with pytest.raises(DatasetError, match="speaker folder 'nobody' is not in the config's spk map"):
        write_clip(ds_root / "dataset/44k/nobody/x.wav", 20, 100.0, seed=1)
        TextAudioSpeakerLoader(["dataset/44k/nobody/x.wav"], hps)
    with pytest.raises(DatasetError, match="file list not found"):
        TextAudioSpeakerLoader("filelists/missing.txt", hps)
    # clips shorter than a training segment are left out, with a warning
    caplog.set_level(logging.WARNING)
    ds = TextAudioSpeakerLoader(["dataset/44k/spk1/spk1_0.wav", "dataset/44k/spk1/spk1_1.wav"], hps, min_frames=42)
    assert ds.audiopaths == ["dataset/44k/spk1/spk1_1.wav"]
    assert "leaving out 1 clip(s) shorter than 42 frames" in caplog.text


def test_features_of_another_encoder_are_a_config_error(ds_root):
    from modules.errors import ConfigError

    hps = _hps(ds_root, ssl_dim=32, gin_channels=32)
    ds = TextAudioSpeakerLoader(hps.data.training_files, hps)
    with pytest.raises(ConfigError, match="units have 16 channels but model.ssl_dim is 32"):
        ds[0]


def test_truncated_artifacts_are_reported(ds_root):
    hps = _hps(ds_root)
    path = "dataset/44k/spk0/spk0_0.wav"
    from preprocessing.features import save_f0

    save_f0(path + ".f0.npy", np.full(30, 100.0), np.ones(30))  # 30 of 40 frames
    ds = TextAudioSpeakerLoader([path], hps)
    with pytest.raises(DatasetError, match="artifacts do not match the audio"):
        ds.load_item(path)


def test_all_in_mem_reads_every_file_once(ds_root, monkeypatch):
    import training.data as data

    hps = _hps(ds_root)
    ds = TextAudioSpeakerLoader(hps.data.training_files, hps, all_in_mem=True)
    assert len(ds.cache) == 4
    monkeypatch.setattr(data, "load_f0", lambda path: pytest.fail(f"read {path} again"))
    items = [ds[i] for i in range(len(ds))]
    assert [int(it.spk) for it in items] == [int(c.spk) for c in ds.cache]
    hps.train.all_in_mem = True
    assert data.default_num_workers(hps.train) == 0  # 4.1: no workers with all_in_mem
