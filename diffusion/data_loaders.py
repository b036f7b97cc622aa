"""Training data for the shallow-diffusion model: the ``--use_diff`` artifacts (spec §1.3, §8.4).

Per listed ``X.wav``: ``X.wav.f0.npy``, ``.vol.npy``, ``.aug_vol.npy``, ``.mel.npy``,
``.aug_mel.npy`` and ``.soft.pt`` (read with the safe readers of
:mod:`preprocessing.features`); the wav only for its duration. Training items are random
``data.duration``-second crops; with probability ½ the key-shifted, volume-scaled variant is
used (augmented mel and volume, f0 × 2^(shift/12), ``aug_shift`` = shift). Validation items are
whole files.

Differences from 4.1 (all fixes, none changes a trained model): files shorter than
``duration + 0.1`` s are dropped from the training set up front (4.1 substituted the next file on
every draw and recursed forever when all were short); validation keeps them; without
``cache_all_data`` the augmented mel is read for augmented items (4.1 read the plain mel); a
speaker folder missing from ``spk`` is an error (4.1 silently trained it as speaker 0); every
artifact's frame count is checked against the f0's.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from modules.commons import repeat_expand_2d
from modules.errors import ConfigError
from preprocessing import features as art
from preprocessing.report import DatasetError

log = logging.getLogger(__name__)

MIN_EXTRA_SECONDS = 0.1  # a training file must be longer than duration + this


def read_filelist(path: str | os.PathLike) -> list[str]:
    """Wav paths of a filelist: one per line, field 0 of ``|``-separated lines, ``\\`` → ``/``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: filelist not found (run preprocess_flist_config.py, or fix data.training_files / "
                          "data.validation_files)")
    lines = path.read_text(encoding="utf-8").splitlines()
    out = [ln.strip().split("|")[0].replace("\\", "/") for ln in lines]
    out = [p for p in out if p]
    if not out:
        raise DatasetError(f"{path}: filelist is empty")
    return out


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in ``path`` (header only)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for missing/unreadable files
        raise DatasetError(f"{path}: cannot read the audio file listed in the filelist ({e})") from None
    return info.frames / info.samplerate


@dataclass
class _Entry:
    name_ext: str
    duration: float
    f0: torch.Tensor          # [T, 1] Hz
    volume: torch.Tensor      # [T, 1]
    aug_vol: torch.Tensor | None
    spk_id: torch.Tensor      # long [1]
    keyshift: float
    mel: torch.Tensor | None = None      # [T, M], cached
    aug_mel: torch.Tensor | None = None  # [T, M], cached
    units: torch.Tensor | None = None    # [T, C], cached


class AudioDataset(Dataset):
    """4.1's ``diffusion.data_loaders.AudioDataset`` (keyword arguments as there).

    Item: dict ``mel [F, M]``, ``f0 [F, 1]``, ``volume [F, 1]``, ``units [F, C]``, ``spk_id [1]``,
    ``aug_shift [1, 1]``, ``name``, ``name_ext`` with F = int(waveform_sec / (hop / sr)) frames,
    or every frame of the file with ``whole_audio``.
    """

    def __init__(self, filelists: str | os.PathLike, *, waveform_sec: float, hop_size: int, sample_rate: int,
                 load_all_data: bool = True, whole_audio: bool = False, extensions: Any = None, n_spk: int = 1,
                 spk: dict | None = None, device: str | torch.device = "cpu", fp16: bool = False,
                 unit_interpolate_mode: str = "nearest", use_aug: bool = False, n_mels: int | None = None) -> None:
        super().__init__()
        self.waveform_sec = float(waveform_sec)
        self.sample_rate = int(sample_rate)
        self.hop_size = int(hop_size)
        self.whole_audio = whole_audio
        self.use_aug = use_aug
        self.load_all_data = load_all_data
        self.fp16 = fp16
        self.device = torch.device(device)
        self.unit_interpolate_mode = unit_interpolate_mode
        self.n_mels = n_mels
        self.n_spk = n_spk
        self.spk = dict(spk or {})
        paths = read_filelist(filelists)
        entries = [self._load(p) for p in tqdm(paths, desc=f"loading {Path(filelists).name}", leave=False)]
        if not whole_audio:
            too_short = [e for e in entries if e.duration < self.waveform_sec + MIN_EXTRA_SECONDS]
            if too_short:
                log.warning("%d of %d files in %s are shorter than data.duration + %.1f s = %.2f s and are not used "
                            "for training (e.g. %s)", len(too_short), len(entries), filelists, MIN_EXTRA_SECONDS,
                            self.waveform_sec + MIN_EXTRA_SECONDS, too_short[0].name_ext)
            entries = [e for e in entries if e.duration >= self.waveform_sec + MIN_EXTRA_SECONDS]
            if not entries:
                raise DatasetError(f"{filelists}: every file is shorter than data.duration + {MIN_EXTRA_SECONDS} s "
                                   f"= {self.waveform_sec + MIN_EXTRA_SECONDS:.2f} s; lower data.duration in the "
                                   "diffusion config or add longer clips")
        self.entries = entries
        self.paths = [e.name_ext for e in entries]

    # --- loading ----------------------------------------------------------------------------
    def _speaker_id(self, name_ext: str) -> int:
        if self.n_spk is None or self.n_spk <= 1:
            return 0
        spk_name = Path(name_ext).parent.name
        if spk_name not in self.spk:
            raise DatasetError(f"{name_ext}: speaker folder '{spk_name}' is not in the config's spk map "
                               f"({', '.join(map(str, self.spk)) or 'empty'}); add it or fix the filelist")
        spk_id = int(self.spk[spk_name])
        if not 0 <= spk_id < self.n_spk:
            raise ConfigError(f"speaker '{spk_name}' has id {spk_id}, but model.n_spk is {self.n_spk}; "
                              f"ids must be 0…{self.n_spk - 1}")
        return spk_id

    def _check_frames(self, path: Path, arr_frames: int, n_frames: int, what: str) -> None:
        if arr_frames != n_frames:
            raise DatasetError(f"{path}: {what} has {arr_frames} frames but the f0 file has {n_frames}; "
                               "delete the artifacts of this file and run preprocess_hubert_f0.py --use_diff again")

    def _read_mel(self, name_ext: str, n_frames: int, aug: bool) -> tuple[torch.Tensor, float]:
        if aug:
            path = art.aug_mel_path(name_ext)
            mel, keyshift = art.load_aug_mel(path)
        else:
            path = art.mel_path(name_ext)
            mel, keyshift = art.load_float_array(path), 0.0
        if mel.ndim != 2 or (self.n_mels is not None and mel.shape[1] != self.n_mels):
            raise DatasetError(f"{path}: expected a mel of shape [T, {self.n_mels or 'n_mels'}], found {mel.shape}; the "
                               "vocoder used for preprocessing differs from the diffusion config's vocoder")
        self._check_frames(path, mel.shape[0], n_frames, "the mel")
        return torch.from_numpy(np.ascontiguousarray(mel)), keyshift

    def _read_units(self, name_ext: str, n_frames: int) -> torch.Tensor:
        units = art.load_soft(art.soft_path(name_ext))[0]  # [C, N] at 50 Hz
        return repeat_expand_2d(units, n_frames, self.unit_interpolate_mode).transpose(0, 1).contiguous()  # [T, C]

    def _load(self, name_ext: str) -> _Entry:
        paths = art.artifact_paths(name_ext)
        duration = audio_duration(name_ext)
        f0, _uv = art.load_f0(paths.f0)
        n = len(f0)
        volume = art.load_float_array(paths.vol).reshape(-1)
        self._check_frames(paths.vol, len(volume), n, "the volume")
        aug_vol, keyshift = None, 0.0
        if self.use_aug:
            aug_vol = art.load_float_array(paths.aug_vol).reshape(-1)
            self._check_frames(paths.aug_vol, len(aug_vol), n, "the augmented volume")
            aug_vol = torch.from_numpy(aug_vol).float().unsqueeze(-1)
        entry = _Entry(name_ext=name_ext, duration=duration, f0=torch.from_numpy(f0).float().unsqueeze(-1),
                       volume=torch.from_numpy(volume).float().unsqueeze(-1), aug_vol=aug_vol,
                       spk_id=torch.LongTensor([self._speaker_id(name_ext)]), keyshift=0.0)
        if self.use_aug:
            if self.load_all_data:
                entry.aug_mel, keyshift = self._read_mel(name_ext, n, aug=True)
            else:
                keyshift = art.load_aug_mel(paths.aug_mel)[1]
            entry.keyshift = float(keyshift)
        if self.load_all_data:
            entry.mel, _ = self._read_mel(name_ext, n, aug=False)
            entry.units = self._read_units(name_ext, n)
            if self.fp16:
                entry.mel = entry.mel.half()
                entry.units = entry.units.half()
                if entry.aug_mel is not None:
                    entry.aug_mel = entry.aug_mel.half()
        for k in ("f0", "volume", "aug_vol", "spk_id", "mel", "aug_mel", "units"):
            v = getattr(entry, k)
            if v is not None:
                setattr(entry, k, v.to(self.device))
        return entry

    # --- items ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        e = self.entries[index]
        n_frames = e.f0.shape[0]
        if self.whole_audio:
            start, length = 0, n_frames
        else:
            frame_resolution = self.hop_size / self.sample_rate
            idx_from = random.uniform(0, e.duration - self.waveform_sec - MIN_EXTRA_SECONDS)
            length = int(self.waveform_sec / frame_resolution)
            # The wav header and the features can disagree by a frame; stay inside the features.
            start = min(int(idx_from / frame_resolution), max(n_frames - length, 0))
        aug = self.use_aug and random.choice([True, False])
        sl = slice(start, start + length)

        mel = e.aug_mel if aug else e.mel
        if mel is None:
            mel, _ = self._read_mel(e.name_ext, n_frames, aug=aug)
        units = e.units if e.units is not None else self._read_units(e.name_ext, n_frames)
        aug_shift = e.keyshift if aug else 0.0
        volume = e.aug_vol if aug else e.volume
        return dict(
            mel=mel[sl], f0=2 ** (aug_shift / 12) * e.f0[sl], volume=volume[sl], units=units[sl], spk_id=e.spk_id,
            aug_shift=torch.tensor([[aug_shift]], dtype=torch.float32), name=os.path.splitext(e.name_ext)[0],
            name_ext=e.name_ext,
        )


def get_data_loaders(args, whole_audio: bool = False, *, n_mels: int | None = None) -> tuple[DataLoader, DataLoader]:
    """(train loader, validation loader) from a diffusion config, as 4.1 builds them."""
    cache_on_cpu = str(args.train.cache_device) == "cpu"
    common = dict(waveform_sec=args.data.duration, hop_size=args.data.block_size, sample_rate=args.data.sampling_rate,
                  load_all_data=args.train.cache_all_data, n_spk=args.model.n_spk, spk=dict(args.get("spk") or {}),
                  unit_interpolate_mode=args.data.get("unit_interpolate_mode", "nearest"), n_mels=n_mels)
    data_train = AudioDataset(args.data.training_files, whole_audio=whole_audio, device=args.train.cache_device,
                              fp16=args.train.cache_fp16, use_aug=True, **common)
    workers = int(args.train.num_workers) if cache_on_cpu else 0
    loader_train = DataLoader(data_train, batch_size=args.train.batch_size if not whole_audio else 1, shuffle=True,
                              num_workers=workers, persistent_workers=workers > 0,
                              pin_memory=cache_on_cpu and torch.cuda.is_available(), drop_last=False)
    data_valid = AudioDataset(args.data.validation_files, whole_audio=True, **common)
    loader_valid = DataLoader(data_valid, batch_size=1, shuffle=False, num_workers=0)
    return loader_train, loader_valid
