"""Per-file training artifacts of ``preprocess_hubert_f0.py``: names, exact formats, readers, writer.

The table of spec §1.3, for ``X.wav`` (44.1 kHz, hop 512, T = floor(L / 512) frames):

======================  ==========================================================================
``X.wav.soft.pt``       ``torch.save`` of float32 ``[1, C, N]`` speech-encoder units at 50 Hz
``X.wav.f0.npy``        ``np.save`` of an object array ``(2, T)`` of Python floats: f0 (Hz,
                        unvoiced frames interpolated) and uv (1.0 voiced); needs pickle to read
``X.spec.pt``           ``torch.save`` of float32 ``[1025, T]`` linear magnitude spectrogram
``X.wav.vol.npy``       float32 ``[T]`` frame RMS (with ``--use_diff`` or ``vol_embedding``)
``X.wav.mel.npy``       float32 ``[T, 128]`` vocoder log-mel (``--use_diff``)
``X.wav.aug_mel.npy``   object array ``(2,)``: float32 ``[T, 128]`` mel of volume-scaled audio
                        with a key shift, and the key shift (Python float, semitones)
``X.wav.aug_vol.npy``   float32 ``[T]`` volume of the same volume-scaled audio
======================  ==========================================================================

Files written here are byte-compatible with 4.1's (``np.save`` / ``torch.save`` of the same
objects), so the original trainer reads ours and :func:`load_f0` & co. read theirs. The object
arrays are read through an allow-list unpickler that only rebuilds numpy arrays, never runs
code named by the file. Every write goes to a temporary name and is renamed, so a killed run
never leaves a half-written artifact (4.1 wrote in place).
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modules.errors import CheckpointError, SvcError
from preprocessing.report import DatasetError, FileOutcome

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# --- names (spec §13.1) -------------------------------------------------------------------------
SOFT_SUFFIX = ".soft.pt"
F0_SUFFIX = ".f0.npy"
VOL_SUFFIX = ".vol.npy"
MEL_SUFFIX = ".mel.npy"
AUG_MEL_SUFFIX = ".aug_mel.npy"
AUG_VOL_SUFFIX = ".aug_vol.npy"
SPEC_SUFFIX = ".spec.pt"          # replaces ".wav" instead of being appended
ARTIFACT_SUFFIXES = (SOFT_SUFFIX, F0_SUFFIX, SPEC_SUFFIX, VOL_SUFFIX, MEL_SUFFIX, AUG_MEL_SUFFIX, AUG_VOL_SUFFIX)

ENCODER_SAMPLE_RATE = 16000       # every speech encoder runs at 16 kHz (spec §4.1)
F0_THRESHOLD = 0.05               # 4.1 creates the predictor with threshold=0.05 in preprocessing
AUG_KEYSHIFT_RANGE = (-5.0, 5.0)  # semitones (spec §1.3)

# The openvpi nsf_hifigan_20221211 front end (spec §3.3), used when the vocoder's config.json
# is not on disk: only the mel parameters are needed here, not the vocoder weights.
OPENVPI_MEL = {"sampling_rate": 44100, "num_mels": 128, "n_fft": 2048, "win_size": 2048, "hop_size": 512,
               "fmin": 40, "fmax": 16000}


def soft_path(wav: str | os.PathLike) -> Path:
    return Path(str(wav) + SOFT_SUFFIX)


def f0_path(wav: str | os.PathLike) -> Path:
    return Path(str(wav) + F0_SUFFIX)


def vol_path(wav: str | os.PathLike) -> Path:
    return Path(str(wav) + VOL_SUFFIX)


def mel_path(wav: str | os.PathLike) -> Path:
    return Path(str(wav) + MEL_SUFFIX)


def aug_mel_path(wav: str | os.PathLike) -> Path:
    return Path(str(wav) + AUG_MEL_SUFFIX)


def aug_vol_path(wav: str | os.PathLike) -> Path:
    return Path(str(wav) + AUG_VOL_SUFFIX)


def spec_path(wav: str | os.PathLike) -> Path:
    """``X.wav`` → ``X.spec.pt``: 4.1's ``filename.replace(".wav", ".spec.pt")``.

    Like 4.1 every ``.wav`` in the *file name* is replaced (``a.wav.wav`` → ``a.spec.pt.spec.pt``);
    unlike 4.1 folder names are left alone (4.1 also rewrote a folder called ``x.wav``, pointing
    the file into a folder that does not exist).
    """
    wav = Path(wav)
    return wav.with_name(wav.name.replace(".wav", SPEC_SUFFIX))


# modules.io_utils.atomic_path's temporaries: ".<final name>.<8 random chars>.tmp<final suffix>"
_TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def is_temporary_name(name: str) -> bool:
    """True for the temporary of an interrupted atomic write of an artifact or a wav."""
    m = _TEMP_NAME.match(name)
    return bool(m) and m.group("final").endswith(ARTIFACT_SUFFIXES + (".wav",))


def is_artifact_name(name: str) -> bool:
    """True for the names this stage writes (and for the hidden temporaries of atomic writes)."""
    return name.endswith(ARTIFACT_SUFFIXES) or is_temporary_name(name)


@dataclass(frozen=True)
class ArtifactPaths:
    wav: Path
    soft: Path
    f0: Path
    spec: Path
    vol: Path
    mel: Path
    aug_mel: Path
    aug_vol: Path

    @classmethod
    def of(cls, wav: str | os.PathLike) -> "ArtifactPaths":
        return cls(Path(wav), soft_path(wav), f0_path(wav), spec_path(wav), vol_path(wav), mel_path(wav),
                   aug_mel_path(wav), aug_vol_path(wav))


def artifact_paths(wav: str | os.PathLike) -> ArtifactPaths:
    return ArtifactPaths.of(wav)


# --- writers (exact 4.1 formats, atomic) --------------------------------------------------------
def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=arr.dtype.hasobject)
    return buf.getvalue()


def _save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    from modules.io_utils import atomic_write_bytes

    atomic_write_bytes(path, _npy_bytes(arr))


def _save_tensor(path: str | os.PathLike, t: "torch.Tensor") -> None:
    import torch

    from modules.io_utils import atomic_write_bytes

    # clone: a view would drag its whole base storage into the file. Saving to a buffer names the
    # zip's root folder "archive" instead of after the random temporary file, so identical
    # tensors give identical files.
    buf = io.BytesIO()
    torch.save(t.detach().to("cpu", dtype=torch.float32).contiguous().clone(), buf)
    atomic_write_bytes(path, buf.getvalue())


def f0_object_array(f0: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """4.1's ``np.asanyarray((f0, uv), dtype=object)``: shape (2, T) of Python floats."""
    f0 = np.asarray(f0).reshape(-1)
    uv = np.asarray(uv).reshape(-1)
    if f0.shape != uv.shape:
        raise ValueError(f"f0 ({f0.shape}) and uv ({uv.shape}) differ in length")
    return np.asanyarray((f0, uv), dtype=object)


def aug_mel_object_array(mel: np.ndarray, keyshift: float) -> np.ndarray:
    """4.1's ``np.asanyarray((aug_mel, keyshift), dtype=object)``: shape (2,), [float32 [T, M], float]."""
    arr = np.empty(2, dtype=object)
    arr[0] = np.asarray(mel, dtype=np.float32)
    arr[1] = float(keyshift)
    return arr


def save_soft(path: str | os.PathLike, units: "torch.Tensor") -> None:
    """Units ``[1, C, N]`` (50 Hz) → ``X.wav.soft.pt`` (float32, CPU)."""
    if units.dim() != 3 or units.size(0) != 1:
        raise ValueError(f"speech-encoder output must be [1, C, N], got {tuple(units.shape)}")
    _save_tensor(path, units)


def save_spec(path: str | os.PathLike, spec: "torch.Tensor") -> None:
    """Linear spectrogram ``[n_fft//2+1, T]`` → ``X.spec.pt`` (float32)."""
    if spec.dim() != 2:
        raise ValueError(f"spectrogram must be [bins, T], got {tuple(spec.shape)}")
    _save_tensor(path, spec)


def save_f0(path: str | os.PathLike, f0: np.ndarray, uv: np.ndarray) -> None:
    _save_npy(path, f0_object_array(f0, uv))


def save_float_array(path: str | os.PathLike, arr: np.ndarray | "torch.Tensor") -> None:
    """``X.wav.vol.npy`` / ``.mel.npy`` / ``.aug_vol.npy``: a plain float32 array."""
    if hasattr(arr, "detach"):
        arr = arr.detach().cpu().numpy()
    _save_npy(path, np.ascontiguousarray(arr, dtype=np.float32))


def save_aug_mel(path: str | os.PathLike, mel: np.ndarray, keyshift: float) -> None:
    _save_npy(path, aug_mel_object_array(mel, keyshift))


# --- readers (safe; used by training too) -------------------------------------------------------
def _artifact_error(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}. Delete it and run preprocess_hubert_f0.py again to rebuild it")


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """``np.load`` that reads object arrays through the allow-list unpickler (no code execution).

    Plain numeric arrays are read with ``allow_pickle=False``.
    """
    from modules.checkpoint import RestrictedUnpickler, numpy_object_array_globals
    from modules.errors import UnsafeFileError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: not found; run preprocess_hubert_f0.py to create it")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            arr = RestrictedUnpickler(f, numpy_object_array_globals(), source=str(path)).load()
    except UnsafeFileError:
        raise
    except (ValueError, OSError, EOFError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise _artifact_error(path, f"not a valid .npy file ({e})") from None
    except Exception as e:  # pickle.UnpicklingError and friends from a damaged pickle stream
        raise _artifact_error(path, f"damaged .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise _artifact_error(path, f"holds a {type(arr).__name__}, expected a numpy array")
    return arr


def load_f0(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``X.wav.f0.npy`` → ``(f0 float32 [T] Hz, uv float32 [T])`` (as 4.1's loader casts them)."""
    arr = load_npy(path)
    if arr.dtype.hasobject:
        if arr.shape[0] != 2:
            raise _artifact_error(Path(path), f"expected (f0, uv), found an object array of shape {arr.shape}")
        f0, uv = arr[0], arr[1]
    elif arr.ndim == 2 and arr.shape[0] == 2:  # a plain float (2, T) array (other tools) reads the same
        f0, uv = arr
    else:
        raise _artifact_error(Path(path), f"expected (f0, uv), found {arr.dtype} array of shape {arr.shape}")
    try:
        f0 = np.array(f0, dtype=float).astype(np.float32)
        uv = np.array(uv, dtype=float).astype(np.float32)
    except (TypeError, ValueError) as e:
        raise _artifact_error(Path(path), f"f0/uv are not numbers ({e})") from None
    return f0, uv


def load_aug_mel(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """``X.wav.aug_mel.npy`` → ``(mel float32 [T, M], keyshift semitones)``."""
    arr = load_npy(path)
    if not (arr.dtype.hasobject and arr.shape == (2,)):
        raise _artifact_error(Path(path), f"expected (mel, keyshift), found {arr.dtype} array of shape {arr.shape}")
    mel = np.asarray(arr[0], dtype=np.float32)
    return mel, float(arr[1])


def load_float_array(path: str | os.PathLike) -> np.ndarray:
    """``X.wav.vol.npy`` / ``.mel.npy`` / ``.aug_vol.npy`` → float32 array."""
    arr = load_npy(path)
    if arr.dtype.hasobject:
        raise _artifact_error(Path(path), "expected a float array, found an object array")
    return arr.astype(np.float32, copy=False)


def load_soft(path: str | os.PathLike) -> "torch.Tensor":
    """``X.wav.soft.pt`` → float32 ``[1, C, N]`` (weights-only load)."""
    from modules.checkpoint import torch_load

    t = torch_load(path, what="content-feature file (.soft.pt)")
    if not hasattr(t, "dim") or t.dim() != 3:
        raise _artifact_error(Path(path), f"expected a [1, C, N] tensor, found {getattr(t, 'shape', type(t).__name__)}")
    return t.float()


def load_spec(path: str | os.PathLike) -> "torch.Tensor":
    """``X.spec.pt`` → float32 ``[bins, T]`` (weights-only load)."""
    from modules.checkpoint import torch_load

    t = torch_load(path, what="spectrogram file (.spec.pt)")
    if not hasattr(t, "dim") or t.dim() != 2:
        raise _artifact_error(Path(path), f"expected a [bins, T] tensor, found {getattr(t, 'shape', type(t).__name__)}")
    return t.float()


# --- settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MelSettings:
    """The vocoder front end used for ``.mel.npy`` / ``.aug_mel.npy`` (spec §3.3 b)."""

    sampling_rate: int
    num_mels: int
    n_fft: int
    win_size: int
    hop_size: int
    fmin: float
    fmax: float
    source: str = "openvpi defaults"

    @classmethod
    def for_vocoder(cls, vocoder_ckpt: str | os.PathLike) -> "MelSettings":
        """From ``config.json`` beside the vocoder checkpoint, else the published openvpi values."""
        import json

        from modules.errors import ConfigError

        cfg_path = Path(vocoder_ckpt).parent / "config.json"
        if not cfg_path.is_file():
            log.info("vocoder config %s not found: using the openvpi nsf_hifigan_20221211 mel settings "
                     "(44100 Hz, 128 mels, n_fft 2048, win 2048, hop 512, fmin 40, fmax 16000)", cfg_path)
            return cls(**OPENVPI_MEL)
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            return cls(**{k: cfg[k] for k in OPENVPI_MEL}, source=str(cfg_path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{cfg_path}: not a usable NSF-HiFiGAN config ({type(e).__name__}: {e}); it needs "
                              f"the keys {', '.join(OPENVPI_MEL)}") from None


@dataclass(frozen=True)
class ExtractSettings:
    """Everything a worker needs to write the artifacts (picklable; sent to spawned workers)."""

    sampling_rate: int
    hop_length: int
    filter_length: int
    win_length: int
    max_wav_value: float
    speech_encoder: str
    ssl_dim: int
    f0_predictor: str
    want_vol: bool
    use_diff: bool
    mel: MelSettings | None = None
    device: str | None = None
    seed: int = 1234
    encoder_path: str | None = None
    f0_options: dict = field(default_factory=dict)  # extra get_f0_predictor keywords: f0_min, f0_max, f0_repair

    @classmethod
    def from_configs(cls, hps: Any, diff_hps: Any | None, *, f0_predictor: str, use_diff: bool,
                     device: str | None = None, seed: int = 1234, f0_options: dict | None = None) -> "ExtractSettings":
        from modules.errors import ConfigError

        data, model = hps["data"], hps["model"]
        mel = None
        if use_diff:
            if diff_hps is None:
                raise ConfigError("--use_diff needs the diffusion config (configs/diffusion.yaml)")
            mel = MelSettings.for_vocoder(diff_hps["vocoder"]["ckpt"])
            if mel.hop_size * data["sampling_rate"] != data["hop_length"] * mel.sampling_rate:
                raise ConfigError(
                    f"vocoder hop {mel.hop_size} at {mel.sampling_rate} Hz ({mel.source}) does not match the "
                    f"config's hop_length {data['hop_length']} at {data['sampling_rate']} Hz; mels would not "
                    "line up with the other features")
        return cls(
            sampling_rate=int(data["sampling_rate"]), hop_length=int(data["hop_length"]),
            filter_length=int(data["filter_length"]), win_length=int(data["win_length"]),
            max_wav_value=float(data["max_wav_value"]),
            speech_encoder=str(model.get("speech_encoder", "vec768l12")), ssl_dim=int(model.get("ssl_dim", 768)),
            f0_predictor=f0_predictor, want_vol=bool(use_diff or model.get("vol_embedding", False)),
            use_diff=use_diff, mel=mel, device=device, seed=seed, f0_options=dict(f0_options or {}),
        )

    def wanted(self, paths: ArtifactPaths) -> list[Path]:
        out = [paths.soft, paths.f0, paths.spec]
        if self.want_vol:
            out.append(paths.vol)
        if self.use_diff:
            out += [paths.mel, paths.aug_mel, paths.aug_vol]
        return out


class ModelLoadError(SvcError):
    """A model (speech encoder / f0 predictor) could not be loaded: fatal for the whole run."""


def _exists(p: Path) -> bool:
    # A 0-byte file is what a killed 4.1 run (which wrote in place) typically leaves: redo it.
    try:
        return p.stat().st_size > 0
    except OSError:
        return False


# --- the extractor ---------------------------------------------------------------------------------
@dataclass
class FeatureExtractor:
    """Writes the missing artifacts of one wav at a time; models are loaded once, on first need.

    One instance per worker process. ``timings`` accumulates seconds per stage (for benchmarks).
    """

    settings: ExtractSettings
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)
    _encoder: Any = None
    _f0: Any = None
    _mel_stft: Any = None
    _warned_dim: bool = False

    # -- models (lazy: a resumed run with nothing left to do loads nothing) -------------------------
    def encoder(self) -> Any:
        if self._encoder is None:
            import vencoder

            t0 = time.perf_counter()
            try:
                self._encoder = vencoder.get_speech_encoder(self.settings.speech_encoder, device=self.device,
                                                            path=self.settings.encoder_path)
            except SvcError as e:
                raise ModelLoadError(f"cannot load speech encoder '{self.settings.speech_encoder}': {e}") from None
            self._tick("load_encoder", t0)
        return self._encoder

    def f0_predictor(self) -> Any:
        if self._f0 is None:
            from modules.F0Predictor import get_f0_predictor

            t0 = time.perf_counter()
            try:
                self._f0 = get_f0_predictor(self.settings.f0_predictor, hop_length=self.settings.hop_length,
                                            sampling_rate=self.settings.sampling_rate, device=self.device,
                                            threshold=F0_THRESHOLD, **self.settings.f0_options)
            except SvcError as e:
                raise ModelLoadError(f"cannot load f0 predictor '{self.settings.f0_predictor}': {e}") from None
            self._tick("load_f0", t0)
        return self._f0

    def mel_stft(self) -> Any:
        if self._mel_stft is None:
            from modules.mel_processing import STFT

            m = self.settings.mel
            self._mel_stft = STFT(m.sampling_rate, m.num_mels, m.n_fft, m.win_size, m.hop_size, m.fmin, m.fmax)
        return self._mel_stft

    def _tick(self, stage: str, t0: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0

    # -- one file ------------------------------------------------------------------------------------
    def process(self, wav: str | os.PathLike) -> FileOutcome:
        """Write every missing artifact of ``wav``; bad input becomes a ``failed`` outcome.

        :class:`ModelLoadError` (and programming errors) propagate: they concern every file.
        """
        paths = ArtifactPaths.of(wav)
        missing = [p for p in self.settings.wanted(paths) if not _exists(p)]
        if not missing:
            return FileOutcome(str(wav), "skipped", "already preprocessed")
        try:
            self._process(paths, set(missing))
        except ModelLoadError:
            raise
        except CheckpointError as e:  # a model file that loads lazily: fatal for every file alike
            raise ModelLoadError(str(e)) from None
        except SvcError as e:
            msg = str(e)
            prefix = f"{paths.wav}: "
            return FileOutcome(str(wav), "failed", msg[len(prefix):] if msg.startswith(prefix) else msg)
        except (ValueError, RuntimeError) as e:  # numerical trouble in a model on odd audio
            return FileOutcome(str(wav), "failed", f"{type(e).__name__}: {e}")
        return FileOutcome(str(wav), "done")

    def load_wav(self, path: Path) -> np.ndarray:
        """The training view of the file: int16 / max_wav_value as float32 ``[L]`` (4.1's loaders)."""
        import soundfile as sf

        from modules.wavcheck import WavRequirements, check_wav

        s = self.settings
        check_wav(path, WavRequirements(sampling_rate=s.sampling_rate, min_samples=s.win_length)).raise_if_bad()
        data, _ = sf.read(str(path), dtype="int16")
        return data.astype(np.float32) / np.float32(s.max_wav_value)

    def _process(self, paths: ArtifactPaths, missing: set[Path]) -> None:
        import torch

        from modules.audio import resample
        from modules.mel_processing import spectrogram_torch
        from modules.volume import VolumeExtractor

        s = self.settings
        audio = self.load_wav(paths.wav)
        audio_t = torch.from_numpy(audio)[None]  # [1, L]

        if paths.soft in missing:
            enc = self.encoder()
            t0 = time.perf_counter()
            wav16k = resample(audio, s.sampling_rate, ENCODER_SAMPLE_RATE)
            with torch.inference_mode():
                units = enc.encoder(torch.from_numpy(wav16k).to(self.device))
            units = units.detach().float().cpu()
            if not torch.isfinite(units).all():
                raise ValueError("speech encoder produced NaN/inf")
            if units.size(1) != s.ssl_dim and not self._warned_dim:
                log.warning("speech encoder '%s' gives %d channels but the config's ssl_dim is %d; training "
                            "will not fit (re-run preprocess_flist_config.py with this --speech_encoder)",
                            s.speech_encoder, units.size(1), s.ssl_dim)
                self._warned_dim = True
            save_soft(paths.soft, units)
            self._tick("encoder", t0)

        if paths.f0 in missing:
            predictor = self.f0_predictor()
            t0 = time.perf_counter()
            f0, uv = predictor.compute_f0_uv(audio)
            f0 = np.asarray(f0.cpu().numpy() if hasattr(f0, "cpu") else f0)
            uv = np.asarray(uv.cpu().numpy() if hasattr(uv, "cpu") else uv)
            if not np.isfinite(f0).all():
                raise ValueError("f0 predictor produced NaN/inf")
            save_f0(paths.f0, f0, uv)
            self._tick("f0", t0)

        if paths.spec in missing:
            t0 = time.perf_counter()
            spec = spectrogram_torch(audio_t, s.filter_length, s.sampling_rate, s.hop_length, s.win_length,
                                     center=False)
            save_spec(paths.spec, spec.squeeze(0))
            self._tick("spec", t0)

        volume = VolumeExtractor(s.hop_length)
        if paths.vol in missing:
            save_float_array(paths.vol, volume.extract(audio_t))

        if s.use_diff and missing & {paths.mel, paths.aug_mel, paths.aug_vol}:
            t0 = time.perf_counter()
            if paths.mel in missing:
                save_float_array(paths.mel, self.vocoder_mel(audio_t))
            if missing & {paths.aug_mel, paths.aug_vol}:
                vol_shift, keyshift = self.augmentation_draws(paths.wav, audio)
                scaled = audio_t * (10 ** vol_shift)
                if paths.aug_mel in missing:
                    save_aug_mel(paths.aug_mel, self.vocoder_mel(scaled, keyshift=keyshift), keyshift)
                if paths.aug_vol in missing:
                    save_float_array(paths.aug_vol, volume.extract(scaled))
            self._tick("mel", t0)

    def vocoder_mel(self, audio: "torch.Tensor", keyshift: float = 0.0) -> np.ndarray:
        """``[1, L]`` audio at the config rate → float32 ``[T, n_mels]`` (4.1's ``Vocoder.extract``)."""
        import torch

        from modules.audio import sinc_resample

        m = self.settings.mel
        if self.settings.sampling_rate != m.sampling_rate:
            audio = sinc_resample(audio, self.settings.sampling_rate, m.sampling_rate, lowpass_filter_width=128)
        with torch.inference_mode():
            mel = self.mel_stft().get_mel(audio.to(self.device), keyshift=keyshift)  # [1, M, T]
        return mel.transpose(1, 2)[0].float().cpu().numpy()

    def augmentation_draws(self, wav: Path, audio: np.ndarray) -> tuple[float, float]:
        """4.1's volume / key-shift draws (spec §1.3), seeded per file so a re-run draws the same.

        max_amp = max|x| + 1e-5; log10 volume shift ~ U(−1, min(1, log10(1/max_amp)));
        key shift ~ U(−5, 5) semitones.
        """
        rng = random.Random(f"{self.settings.seed}:{wav.parent.name}/{wav.name}")
        max_amp = float(np.abs(audio).max()) + 1e-5
        max_shift = min(1.0, math.log10(1.0 / max_amp))
        log10_vol_shift = rng.uniform(-1.0, max_shift)
        keyshift = rng.uniform(*AUG_KEYSHIFT_RANGE)
        return log10_vol_shift, keyshift
