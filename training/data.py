"""Training data over the 4.1 per-file artifacts (spec §6.12; 4.1 ``data_utils.py``).

For every wav listed in a file list the dataset reads (spec §1.3)::

    X.wav          16-bit PCM at data.sampling_rate  → audio [1, L] in [-1, 1]
    X.spec.pt      [n_fft/2+1, T] linear magnitudes  (computed in the main process when missing)
    X.wav.f0.npy   object array (2, T): f0 Hz, uv    → f0 [T], uv [T] float32
    X.wav.soft.pt  [1, C, N] units at 50 Hz           → c [C, T] stretched with unit_interpolate_mode
    X.wav.vol.npy  [T] frame RMS                      (only with model.vol_embedding)

and cuts everything to ``lmin = min(frames(c), frames(spec))`` frames and ``lmin · hop`` samples.
The speaker is the name of the wav's parent folder, looked up in the config's ``spk`` map.

Random processing per item (4.1): with probability ½ a volume augmentation (``train.vol_aug`` and a
volume track present); then items longer than 800 frames are cut to a random 790-frame window.

Differences from 4.1 (docs/compat/train.md): nothing is ever written from a DataLoader worker (4.1
saved missing ``X.spec.pt`` files from inside workers, racing between processes); the file list
is checked once up front (missing artifacts and unknown speakers are one clear error; clips too
short for a training segment are left out with a warning instead of crashing mid-epoch); with
several processes a :class:`~torch.utils.data.DistributedSampler` gives each rank its own share of
the files (4.1 fed every GPU the whole dataset).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from modules.errors import ConfigError
from preprocessing.features import f0_path, load_f0, load_float_array, load_soft, load_spec, save_spec, soft_path, \
    spec_path, vol_path
from preprocessing.report import DatasetError

log = logging.getLogger(__name__)

FILELIST_SHUFFLE_SEED = 1234  # 4.1 shuffles every file list once with random.seed(1234)
CROP_IF_LONGER = 800          # frames: longer items are cut to a random window ...
CROP_FRAMES = 790             # ... of this many frames (spec §6.12)
FIX = "run preprocess_hubert_f0.py (and resample.py / preprocess_flist_config.py before it)"


@dataclass
class Item:
    """One training example, T frames at data.hop_length, L = T · hop samples."""

    c: torch.Tensor            # [C, T] content units stretched to frames
    f0: torch.Tensor           # [T] Hz (unvoiced frames interpolated)
    spec: torch.Tensor         # [n_fft/2+1, T] linear magnitude spectrogram
    audio: torch.Tensor        # [1, L] float in [-1, 1]
    spk: torch.Tensor          # [1] int64 speaker id
    uv: torch.Tensor           # [T] 1.0 voiced / 0.0 unvoiced
    volume: torch.Tensor | None  # [T] frame RMS, or None without vol_embedding


def read_filelist(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a 4.1 file list (one wav path per line, '\\' normalised to '/')."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: file list not found; run preprocess_flist_config.py to create it")
    lines = [ln.strip().replace("\\", "/") for ln in p.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DatasetError(f"{p}: file list is empty; run preprocess_flist_config.py on a dataset with audio")
    return lines


def compute_spectrogram(audio: torch.Tensor, data_hps: Any) -> torch.Tensor:
    """``audio [1, L]`` → ``[n_fft/2+1, floor(L / hop)]`` as preprocessing writes ``X.spec.pt``."""
    from modules.mel_processing import spectrogram_torch

    return spectrogram_torch(audio, data_hps.filter_length, data_hps.sampling_rate, data_hps.hop_length,
                             data_hps.win_length, center=False)[0]


def _speaker_of(path: str) -> str:
    return path.split("/")[-2] if "/" in path else ""


class TextAudioSpeakerLoader(torch.utils.data.Dataset):
    """The training / validation dataset (4.1 name).

    Args:
        audiopaths: a file-list path or the list of wav paths.
        hparams: the full config (``data``, ``train``, ``model``, ``spk`` sections).
        all_in_mem: load every item once up front and keep it in memory.
        vol_aug: allow volume augmentation (still needs ``train.vol_aug`` and a volume track).
        min_frames: clips with fewer frames are left out with a warning (a training segment
            must fit; 0 keeps everything, as for validation).
    """

    def __init__(self, audiopaths: str | os.PathLike | Sequence[str], hparams: Any, all_in_mem: bool = False,
                 vol_aug: bool = True, *, min_frames: int = 0) -> None:
        data = hparams.data
        self.hps = hparams
        self.source = str(audiopaths) if isinstance(audiopaths, (str, os.PathLike)) else "file list"
        paths = read_filelist(audiopaths) if isinstance(audiopaths, (str, os.PathLike)) else list(audiopaths)
        self.hop_length = int(data.hop_length)
        self.sampling_rate = int(data.sampling_rate)
        self.spec_bins = int(data.filter_length) // 2 + 1
        self.unit_interpolate_mode = data.get("unit_interpolate_mode", "nearest")
        self.spk_map = dict(hparams.spk)
        self.ssl_dim = int(hparams.model.ssl_dim)
        self.vol_emb = bool(hparams.model.get("vol_embedding", False))
        self.vol_aug = bool(hparams.train.get("vol_aug", False)) and vol_aug
        random.Random(FILELIST_SHUFFLE_SEED).shuffle(paths)  # = 4.1's random.seed(1234); random.shuffle
        self.audiopaths = self._check(paths, min_frames)
        self.all_in_mem = all_in_mem
        self.cache: list[Item] | None = None
        if all_in_mem:
            from tqdm import tqdm

            self.cache = [self.load_item(p) for p in tqdm(self.audiopaths, desc="loading dataset into memory",
                                                          disable=None, leave=False)]

    # -- up-front check ----------------------------------------------------------------------------
    def _check(self, paths: list[str], min_frames: int) -> list[str]:
        """Fail once, naming the files, for anything that would stop training mid-epoch."""
        from modules.wavcheck import WavProblem, WavRequirements, check_wav

        problems: list[str] = []
        short: list[str] = []
        kept: list[str] = []
        for p in paths:
            wanted = [Path(p), soft_path(p), f0_path(p)] + ([vol_path(p)] if self.vol_emb else [])
            missing = [str(w) for w in wanted if not w.is_file()]
            if missing:
                problems.append(f"{p}: missing {', '.join(Path(m).name for m in missing)}")
                continue
            spk = _speaker_of(p)
            if spk not in self.spk_map:
                problems.append(f"{p}: speaker folder '{spk}' is not in the config's spk map "
                                f"({', '.join(sorted(self.spk_map)) or 'empty'})")
                continue
            # a clip shorter than one training segment (at least 2 frames) is left out, not an error
            check = check_wav(p, WavRequirements(sampling_rate=self.sampling_rate,
                                                 min_samples=max(min_frames, 2) * self.hop_length))
            if check.problem is WavProblem.TOO_SHORT:
                short.append(p)
                continue
            if check.problem:
                problems.append(f"{p}: {check.reason}")
                continue
            kept.append(p)
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise DatasetError(f"{self.source}: {len(problems)} of {len(paths)} listed files cannot be used:\n  "
                               f"{shown}{more}\nFix: {FIX}")
        if short:
            log.warning("%s: leaving out %d clip(s) shorter than %d frames (one training segment), e.g. %s",
                        self.source, len(short), min_frames, short[0])
        if not kept:
            raise DatasetError(f"{self.source}: no usable clip (all {len(paths)} are shorter than {min_frames} "
                               "frames); lower train.segment_size or add longer clips")
        return kept

    def missing_spectrograms(self) -> list[str]:
        return [p for p in self.audiopaths if not spec_path(p).is_file()]

    # -- loading -------------------------------------------------------------------------------------
    def load_item(self, filename: str) -> Item:
        """Read and align the artifacts of one wav (4.1 ``get_audio``)."""
        from modules.audio import load_audio
        from modules.commons import repeat_expand_2d

        audio_np, sr = load_audio(filename)
        if sr != self.sampling_rate:
            raise DatasetError(f"{filename}: {sr} Hz, the config expects {self.sampling_rate} Hz (run resample.py)")
        # soundfile's float view of 16-bit PCM is exactly int16 / 32768 (4.1: / max_wav_value)
        audio = torch.from_numpy(audio_np).unsqueeze(0)
        sp = spec_path(filename)
        if sp.is_file():
            spec = load_spec(sp)
        else:  # computed here, never written from a worker (see ensure_spectrograms)
            spec = compute_spectrogram(audio, self.hps.data)
        if spec.shape[0] != self.spec_bins:
            raise DatasetError(f"{sp}: {spec.shape[0]} frequency bins, the config's filter_length needs "
                               f"{self.spec_bins}; delete it and {FIX}")
        spk = torch.LongTensor([self.spk_map[_speaker_of(filename)]])
        f0_np, uv_np = load_f0(f0_path(filename))
        f0 = torch.from_numpy(f0_np)
        uv = torch.from_numpy(uv_np)
        units = load_soft(soft_path(filename))
        if units.shape[1] != self.ssl_dim:
            raise ConfigError(f"{soft_path(filename)}: units have {units.shape[1]} channels but model.ssl_dim is "
                              f"{self.ssl_dim}; the dataset was preprocessed with another speech_encoder than the "
                              "config names (delete the .soft.pt files and run preprocess_hubert_f0.py again)")
        c = repeat_expand_2d(units.squeeze(0), f0.shape[0], mode=self.unit_interpolate_mode)
        volume = torch.from_numpy(load_float_array(vol_path(filename))).float() if self.vol_emb else None

        lmin = min(c.size(-1), spec.size(-1))
        if abs(c.size(-1) - spec.size(-1)) >= 3 or abs(audio.shape[1] - lmin * self.hop_length) >= 3 * self.hop_length:
            raise DatasetError(f"{filename}: artifacts do not match the audio (f0 {c.size(-1)} frames, spectrogram "
                               f"{spec.size(-1)} frames, audio {audio.shape[1]} samples); delete this file's "
                               f".spec.pt/.f0.npy/.soft.pt and {FIX}")
        spec, c, f0, uv = spec[:, :lmin], c[:, :lmin], f0[:lmin], uv[:lmin]
        audio = audio[:, :lmin * self.hop_length]
        if volume is not None:
            volume = volume[:lmin]
        return Item(c, f0, spec, audio, spk, uv, volume)

    def random_slice(self, item: Item) -> Item:
        """4.1's per-item randomness: volume augmentation, then the 790-frame crop of long items.

        Uses the global ``random`` module, which the DataLoader seeds differently in each worker.
        """
        c, f0, spec, audio, uv, volume = item.c, item.f0, item.spec, item.audio, item.uv, item.volume
        if random.choice([True, False]) and self.vol_aug and volume is not None:
            max_amp = float(torch.max(torch.abs(audio))) + 1e-5
            max_shift = min(1, np.log10(1 / max_amp))
            log10_vol_shift = random.uniform(-1, max_shift)
            audio = audio * (10 ** log10_vol_shift)
            volume = volume * (10 ** log10_vol_shift)
            spec = compute_spectrogram(audio, self.hps.data)
        if spec.shape[1] > CROP_IF_LONGER:
            start = random.randint(0, spec.shape[1] - CROP_IF_LONGER)
            end = start + CROP_FRAMES
            spec, c, f0, uv = spec[:, start:end], c[:, start:end], f0[start:end], uv[start:end]
            audio = audio[:, start * self.hop_length:end * self.hop_length]
            if volume is not None:
                volume = volume[start:end]
        return Item(c, f0, spec, audio, item.spk, uv, volume)

    def __getitem__(self, index: int) -> Item:
        if self.cache is not None:
            return self.random_slice(self.cache[index])
        return self.random_slice(self.load_item(self.audiopaths[index]))

    def __len__(self) -> int:
        return len(self.audiopaths)


def ensure_spectrograms(dataset: TextAudioSpeakerLoader) -> int:
    """Write the missing ``X.spec.pt`` files of ``dataset`` from this (main) process, atomically.

    Returns how many were written. Call on one rank before the DataLoaders start.
    """
    missing = dataset.missing_spectrograms()
    if not missing:
        return 0
    from modules.audio import load_audio

    log.warning("%d spectrogram file(s) (X.spec.pt) are missing, e.g. %s; computing them now "
                "(preprocess_hubert_f0.py writes them ahead of training)", len(missing), spec_path(missing[0]))
    for p in missing:
        audio_np, _ = load_audio(p)
        save_spec(spec_path(p), compute_spectrogram(torch.from_numpy(audio_np).unsqueeze(0), dataset.hps.data))
    return len(missing)


class TextAudioCollate:
    """Pad a list of :class:`Item` into a batch (4.1 ``TextAudioCollate``).

    Items are sorted by frame count, longest first (a stable sort). Returns a dict whose keys
    follow 4.1's tuple order: ``c [B, C, T]``, ``f0 [B, T]``, ``spec [B, F, T]``, ``y [B, 1, L]``,
    ``spk [B, 1]``, ``lengths [B]``, ``uv [B, T]``, ``volume [B, T]`` (None when any item lacks it).
    Everything is zero-padded to the longest item.
    """

    def __call__(self, batch: Iterable[Item | None]) -> dict[str, torch.Tensor | None]:
        items = [b for b in batch if b is not None]
        lengths_in = torch.LongTensor([it.c.shape[1] for it in items])
        _, order = torch.sort(lengths_in, dim=0, descending=True, stable=True)
        b = len(items)
        max_c_len = int(lengths_in.max())
        max_wav_len = max(it.audio.size(1) for it in items)
        c_padded = torch.zeros(b, items[0].c.shape[0], max_c_len)
        f0_padded = torch.zeros(b, max_c_len)
        spec_padded = torch.zeros(b, items[0].spec.shape[0], max_c_len)
        wav_padded = torch.zeros(b, 1, max_wav_len)
        spkids = torch.zeros(b, 1, dtype=torch.long)
        lengths = torch.zeros(b, dtype=torch.long)
        uv_padded = torch.zeros(b, max_c_len)
        volume_padded: torch.Tensor | None = torch.zeros(b, max_c_len)
        if any(it.volume is None for it in items):
            volume_padded = None
        for i, j in enumerate(order.tolist()):
            it = items[j]
            t = it.c.size(1)
            c_padded[i, :, :t] = it.c
            lengths[i] = t
            f0_padded[i, :it.f0.size(0)] = it.f0
            spec_padded[i, :, :it.spec.size(1)] = it.spec
            wav_padded[i, :, :it.audio.size(1)] = it.audio
            spkids[i, 0] = it.spk[0]
            uv_padded[i, :it.uv.size(0)] = it.uv
            if volume_padded is not None:
                volume_padded[i, :it.volume.size(0)] = it.volume
        return {"c": c_padded, "f0": f0_padded, "spec": spec_padded, "y": wav_padded, "spk": spkids,
                "lengths": lengths, "uv": uv_padded, "volume": volume_padded}


def default_num_workers(train_hps: Any) -> int:
    """``train.num_workers`` if set; else 4.1's rule (5 above 4 CPUs, else the CPU count); 0 with all_in_mem."""
    if train_hps.get("all_in_mem", False):
        return 0
    configured = train_hps.get("num_workers")
    if configured is not None:
        return max(0, int(configured))
    n = os.cpu_count() or 1
    return 5 if n > 4 else n


def build_train_loader(hps: Any, *, rank: int = 0, world_size: int = 1, pin_memory: bool = False):
    """The training DataLoader → ``(loader, sampler)``; ``sampler`` is None in a single process.

    With several processes a :class:`~torch.utils.data.DistributedSampler` (no shuffling, like
    4.1's fixed file order) gives rank r the items r, r + W, r + 2W, ... of the shuffled list.
    """
    seg_frames = int(hps.train.segment_size) // int(hps.data.hop_length)
    dataset = TextAudioSpeakerLoader(hps.data.training_files, hps, all_in_mem=bool(hps.train.get("all_in_mem", False)),
                                     min_frames=seg_frames)
    sampler = None
    if world_size > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                                                  shuffle=False, drop_last=False)
    workers = default_num_workers(hps.train)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=int(hps.train.batch_size), shuffle=False, sampler=sampler, num_workers=workers,
        pin_memory=pin_memory, collate_fn=TextAudioCollate(), persistent_workers=workers > 0)
    return loader, sampler


def build_eval_loader(hps: Any):
    """Validation DataLoader: batch 1, file order as 4.1, no volume augmentation, no workers."""
    dataset = TextAudioSpeakerLoader(hps.data.validation_files, hps, all_in_mem=bool(hps.train.get("all_in_mem", False)),
                                     vol_aug=False)
    return torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0,
                                       collate_fn=TextAudioCollate())
