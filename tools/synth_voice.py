"""A small synthetic singing dataset for the demo: two "singers" with their own range and timbre.

Each clip is a few sung phrases separated by breaths. A phrase is a walk over a pentatonic scale
inside the singer's range; the pitch glides between notes (short portamento, sometimes a slow
scoop), long notes get vibrato that fades in, and every note is sung on a vowel whose formants
move smoothly into the next one. The voice is additive: harmonics of f0 whose amplitudes follow
a glottal source slope times a vocal-tract envelope (a cascade of second-order resonances at the
vowel's formant frequencies, scaled by the singer's tract length), plus breath noise.

    control track (5 ms frames)          audio (RAW_SR)
    f0, loudness, F1..F4, voicing  ──►   Σ_k A_k(t)·sin(k·φ(t) + θ_k) + breath noise,  φ = 2π∫f0

Nothing here is meant to sound like a person; it gives the pipeline pitch, timbre and speaker
differences that a model can learn in a few hundred steps, without any download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RAW_SR = 32000            # rate of the generated files (Hz); resample.py brings them to 44.1 kHz
CTRL_HZ = 200             # control-track rate (frames per second, 5 ms frames)
HARMONIC_CUTOFF_HZ = 9000.0  # harmonics stop here (rolled off over the last octave); breath noise goes higher
PEAK = 0.8                # peak level of a written clip

# Formant frequencies (Hz) of an average adult tract; a singer's ``formant_scale`` shifts them.
VOWELS: dict[str, tuple[float, float, float, float]] = {
    "a": (750.0, 1200.0, 2600.0, 3400.0),
    "e": (450.0, 1900.0, 2600.0, 3500.0),
    "i": (300.0, 2250.0, 2950.0, 3600.0),
    "o": (480.0, 850.0, 2500.0, 3300.0),
    "u": (330.0, 750.0, 2400.0, 3300.0),
}
FORMANT_BANDWIDTHS = (90.0, 110.0, 160.0, 220.0)   # Hz
PENTATONIC = (0, 2, 4, 7, 9)                        # scale steps in semitones
NOTE_SECONDS = (0.25, 0.35, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class Voice:
    """One synthetic singer."""

    name: str
    low_hz: float             # lowest note of the range
    high_hz: float            # highest note of the range
    formant_scale: float      # >1: shorter vocal tract (brighter), <1: longer
    source_slope: float       # harmonic k has source amplitude k**-source_slope (larger = darker)
    breath: float             # breath-noise level relative to the voiced part
    vibrato_hz: float
    vibrato_semitones: float  # peak deviation

    @property
    def centre_hz(self) -> float:
        return float(np.sqrt(self.low_hz * self.high_hz))


VOICES: tuple[Voice, ...] = (
    Voice("alto", low_hz=196.0, high_hz=523.0, formant_scale=1.15, source_slope=1.0, breath=0.015,
          vibrato_hz=5.6, vibrato_semitones=0.45),
    Voice("baritone", low_hz=98.0, high_hz=262.0, formant_scale=0.9, source_slope=1.3, breath=0.008,
          vibrato_hz=5.0, vibrato_semitones=0.35),
)


def get_voice(name: str) -> Voice:
    for v in VOICES:
        if v.name == name:
            return v
    raise KeyError(f"unknown synthetic voice '{name}'; known: {', '.join(v.name for v in VOICES)}")


def transpose_semitones(source: Voice, target: Voice) -> int:
    """Whole semitones that move ``source``'s range centre to ``target``'s (the demo's ``-t``)."""
    return int(round(12.0 * np.log2(target.centre_hz / source.centre_hz)))


# --- control track --------------------------------------------------------------------------------
@dataclass
class Controls:
    """Per-frame (``CTRL_HZ``) control track of one clip; all arrays have the same length T."""

    f0: np.ndarray        # [T] Hz (meaningful where voiced)
    loudness: np.ndarray  # [T] linear amplitude, 0 in breaths
    formants: np.ndarray  # [T, 4] Hz


def _ramp_between(values: np.ndarray, starts: np.ndarray, ramps: np.ndarray) -> np.ndarray:
    """Piecewise-constant ``values`` (per frame) made continuous by a linear ramp of ``ramps[i]``
    frames ending at each segment start ``starts[i]`` (i ≥ 1). values: [T] or [T, D]."""
    out = values.astype(np.float64).copy()
    for s, n in zip(starts[1:], ramps[1:]):
        n = int(min(n, s))
        if n < 2:
            continue
        a, b = values[s - n - 1] if s - n - 1 >= 0 else values[0], values[s]
        w = np.linspace(0.0, 1.0, n + 1)[1:]
        w = w.reshape((-1,) + (1,) * (values.ndim - 1))
        out[s - n:s] = a + (b - a) * w
    return out


def _phrase(voice: Voice, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sung phrase of ``n_frames`` → (f0 [T], loudness [T], formants [T, 4])."""
    lo, hi = 12 * np.log2(voice.low_hz / 440.0), 12 * np.log2(voice.high_hz / 440.0)  # semitones re A4
    tonic = rng.uniform(lo, hi - 7)
    scale = np.array([tonic + 12 * o + s for o in range(-2, 3) for s in PENTATONIC])
    scale = scale[(scale >= lo) & (scale <= hi)]
    idx = int(rng.integers(len(scale)))
    pitch, vowel_f, starts, glides, vib_ok = [], [], [], [], []
    t = 0
    while t < n_frames:
        length = int(rng.choice(NOTE_SECONDS) * CTRL_HZ * rng.uniform(0.85, 1.15))
        length = min(length, n_frames - t)
        idx = int(np.clip(idx + rng.integers(-2, 3), 0, len(scale) - 1))
        starts.append(t)
        pitch.append(np.full(length, scale[idx]))
        vowel = VOWELS[str(rng.choice(list(VOWELS)))]
        vowel_f.append(np.tile(np.array(vowel) * voice.formant_scale, (length, 1)))
        # mostly a quick portamento (30-60 ms), sometimes a slow scoop (150-250 ms)
        glides.append(int(CTRL_HZ * (rng.uniform(0.15, 0.25) if rng.random() < 0.25 else rng.uniform(0.03, 0.06))))
        vib_ok.append(length >= 0.45 * CTRL_HZ)
        t += length
    starts_a = np.array(starts)
    semis = _ramp_between(np.concatenate(pitch), starts_a, np.array(glides))
    formants = _ramp_between(np.concatenate(vowel_f), starts_a, np.full(len(starts), int(0.06 * CTRL_HZ)))

    # vibrato: fades in from 0.2 s into a long note over 0.25 s; slight rate wobble
    secs = np.arange(n_frames) / CTRL_HZ
    rate = voice.vibrato_hz * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * secs + rng.uniform(0, 6.3)))
    vib_phase = 2 * np.pi * np.cumsum(rate) / CTRL_HZ + rng.uniform(0, 6.3)
    depth = np.zeros(n_frames)
    for s, ok, seg in zip(starts, vib_ok, pitch):
        if ok:
            k = np.arange(len(seg)) / CTRL_HZ
            depth[s:s + len(seg)] = np.clip((k - 0.2) / 0.25, 0.0, 1.0)
    vibrato = voice.vibrato_semitones * depth * np.sin(vib_phase)
    drift = np.cumsum(rng.normal(0.0, 0.01, n_frames))  # slow intonation wander (semitones)
    drift -= np.linspace(drift[0], drift[-1], n_frames)
    f0 = 440.0 * 2.0 ** ((semis + vibrato + drift) / 12.0)

    # loudness: phrase attack/release, a small dip at note changes, tremolo tied to vibrato
    env = np.ones(n_frames)
    att, rel = int(0.04 * CTRL_HZ), int(0.12 * CTRL_HZ)
    env[:att] = np.linspace(0.0, 1.0, att)
    env[-rel:] = np.minimum(env[-rel:], np.linspace(1.0, 0.0, rel))
    for s in starts[1:]:
        env[max(0, s - 3):s + 3] *= 0.8
    accent = np.concatenate([np.full(len(p), rng.uniform(0.7, 1.0)) for p in pitch])
    accent = _ramp_between(accent, starts_a, np.full(len(starts), 4))
    loudness = env * accent * (1 + 0.08 * depth * np.sin(vib_phase))
    return f0, loudness, formants


def make_controls(voice: Voice, seconds: float, rng: np.random.Generator) -> Controls:
    """Control track of ``seconds`` (to a frame): phrases of 1.2–3 s separated by 0.25–0.5 s breaths,
    0.15 s of silence at least at both ends."""
    total = int(seconds * CTRL_HZ)
    lead = int(0.15 * CTRL_HZ)
    f0 = [np.full(lead, voice.low_hz)]
    loud = [np.zeros(lead)]
    form = [np.tile(np.array(VOWELS["a"]) * voice.formant_scale, (lead, 1))]
    used = lead
    while used < total - lead:
        n = int(min(rng.uniform(1.2, 3.0) * CTRL_HZ, total - lead - used))
        if n < int(0.5 * CTRL_HZ):
            break
        p_f0, p_loud, p_form = _phrase(voice, n, rng)
        gap = min(int(rng.uniform(0.25, 0.5) * CTRL_HZ), total - used - n)  # a breath, or the clip's tail
        f0 += [p_f0, np.full(gap, p_f0[-1])]
        loud += [p_loud, np.zeros(gap)]
        form += [p_form, np.tile(p_form[-1], (gap, 1))]
        used += n + gap
    tail = total - used
    f0.append(np.full(tail, f0[-1][-1]))
    loud.append(np.zeros(tail))
    form.append(np.tile(form[-1][-1], (tail, 1)))
    return Controls(np.concatenate(f0), np.concatenate(loud), np.concatenate(form))


# --- synthesis ------------------------------------------------------------------------------------
def tract_gain(freq: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Magnitude of a cascade of second-order resonances (unit gain at 0 Hz).

    freq: [..., K] Hz; formants: [..., 4] Hz (broadcast against ``freq`` on the last axis).
    """
    gain = np.ones_like(freq)
    for i, bw in enumerate(FORMANT_BANDWIDTHS):
        fc = formants[..., i:i + 1]
        gain *= fc ** 2 / np.sqrt((fc ** 2 - freq ** 2) ** 2 + (bw * freq) ** 2)
    return gain


def render(voice: Voice, ctrl: Controls, rng: np.random.Generator, sr: int = RAW_SR) -> np.ndarray:
    """Control track → float32 audio ``[L]`` at ``sr`` (a multiple of ``CTRL_HZ``), peak ``PEAK``.

    Harmonic k is sin(k·φ), built with the Chebyshev recurrence sin(kφ) = 2cos φ·sin((k−1)φ) −
    sin((k−2)φ) (two multiply-adds per sample instead of a sine), and its amplitude is linearly
    interpolated between control frames.
    """
    if sr % CTRL_HZ:
        raise ValueError(f"sample rate {sr} must be a multiple of the control rate {CTRL_HZ}")
    hop = sr // CTRL_HZ
    n_frames = len(ctrl.f0)
    w = np.arange(hop) / hop                                              # [S] position inside a frame
    f0_next = np.append(ctrl.f0[1:], ctrl.f0[-1])
    f0 = (ctrl.f0[:, None] + (f0_next - ctrl.f0)[:, None] * w).ravel()   # [L] Hz
    phase = 2 * np.pi * np.cumsum(f0) / sr
    cutoff = min(HARMONIC_CUTOFF_HZ, 0.45 * sr)
    n_harm = int(cutoff / ctrl.f0.min())
    k = np.arange(1, n_harm + 1)
    freq = ctrl.f0[:, None] * k[None, :]                                  # [T, K] Hz
    rolloff = np.clip(2.0 - 2.0 * freq / cutoff, 0.0, 1.0)               # fade over the last octave
    amp = (k[None, :] ** -voice.source_slope) * tract_gain(freq, ctrl.formants) * rolloff
    amp *= ctrl.loudness[:, None]
    amp_next = np.vstack([amp[1:], amp[-1:]])
    two_cos = 2 * np.cos(phase)
    s_prev, s_cur = np.zeros_like(phase), np.sin(phase)
    y = np.zeros(n_frames * hop)
    a = np.empty((n_frames, hop))
    for i in range(n_harm):
        if amp[:, i].any():
            np.multiply((amp_next[:, i] - amp[:, i])[:, None], w[None, :], out=a)
            a += amp[:, i][:, None]
            y += a.ravel() * s_cur
        s_prev, s_cur = s_cur, two_cos * s_cur - s_prev
    y /= np.max(np.abs(y)) + 1e-9
    # breath noise: brightened white noise following the loudness
    loud_next = np.append(ctrl.loudness[1:], ctrl.loudness[-1])
    loud = (ctrl.loudness[:, None] + (loud_next - ctrl.loudness)[:, None] * w).ravel()
    noise = np.diff(rng.standard_normal(len(y) + 1)) * 0.5
    y += voice.breath * noise * (0.3 + loud)
    y *= PEAK / (np.max(np.abs(y)) + 1e-9)
    return y.astype(np.float32)


def make_clip(voice: Voice, seconds: float, seed: int, sr: int = RAW_SR) -> np.ndarray:
    """One clip of about ``seconds`` of ``voice`` singing, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return render(voice, make_controls(voice, seconds, rng), rng, sr)


def _seed(base: int, voice_index: int, clip: int) -> int:
    return base * 1_000_003 + voice_index * 10_007 + clip


def write_dataset(root: str | os.PathLike, *, clips_per_speaker: int, clip_seconds: float, seed: int = 0,
                  sr: int = RAW_SR, voices: tuple[Voice, ...] = VOICES) -> dict[str, list[Path]]:
    """Write ``root/<voice>/<voice>_<nn>.wav`` (16-bit PCM at ``sr``) → {voice: [paths]}.

    Clip lengths vary by ±20 % around ``clip_seconds``.
    """
    from modules.audio import save_audio

    if clips_per_speaker < 1 or clip_seconds <= 0:
        raise ValueError(f"need at least one clip of positive length, got {clips_per_speaker} × {clip_seconds} s")
    out: dict[str, list[Path]] = {}
    for vi, voice in enumerate(voices):
        folder = Path(root) / voice.name
        folder.mkdir(parents=True, exist_ok=True)
        out[voice.name] = []
        for c in range(clips_per_speaker):
            s = _seed(seed, vi, c)
            length = clip_seconds * np.random.default_rng(s).uniform(0.8, 1.2)
            path = folder / f"{voice.name}_{c:02d}.wav"
            save_audio(path, make_clip(voice, length, s, sr), sr, subtype="PCM_16")
            out[voice.name].append(path)
    return out


HELDOUT_PAUSE_S = 0.5      # silence between the held-out clip's two phrase groups
HELDOUT_TAIL_S = 0.4       # silence at its end


def make_heldout(voice: Voice, seconds: float, *, seed: int = 0, sr: int = RAW_SR) -> np.ndarray:
    """A clip not in the training set (its own seed range): two phrase groups joined by a
    :data:`HELDOUT_PAUSE_S` pause of silence, as between two lines of a song, and
    :data:`HELDOUT_TAIL_S` of silence at the end. 4.1's slicer turns the tail into a silent chunk
    (inference writes zeros there); the pause stays inside a slice (it cuts only silences longer
    than 5 s, or at the ends), so the model converts it like the rest."""
    sung = seconds - HELDOUT_PAUSE_S - HELDOUT_TAIL_S
    first = make_clip(voice, 0.6 * sung, _seed(seed, 999, 0), sr)
    second = make_clip(voice, 0.4 * sung, _seed(seed, 999, 1), sr)
    return np.concatenate([first, np.zeros(int(HELDOUT_PAUSE_S * sr), np.float32), second,
                           np.zeros(int(HELDOUT_TAIL_S * sr), np.float32)])


def write_heldout(path: str | os.PathLike, voice: Voice, seconds: float, *, seed: int = 0, sr: int = RAW_SR) -> Path:
    """:func:`make_heldout` → ``path`` (16-bit PCM at ``sr``)."""
    from modules.audio import save_audio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, make_heldout(voice, seconds, seed=seed, sr=sr), sr, subtype="PCM_16")
    return path
