"""slice_audio.py (issue 22): the project's slicer over a dataset; speaker folders kept, hard
maximum length respected, input folder untouched, bad input by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_helpers import SR, long_recording, speech
from inference.slicer import Slicer
from modules.errors import ConfigError
from preprocess_helpers import write
from preprocessing.slicing import SliceOptions, slice_dataset


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_max_length_splits_at_the_quietest_frame():
    # 20 s of speech without a pause long enough to cut at, and one clear dip at 9 s
    y = speech(20.0, seed=3)
    y[int(9.0 * SR):int(9.2 * SR)] *= 0.01
    sl = Slicer(SR, threshold=-40, min_length=5000, min_interval=300, hop_size=10, max_sil_kept=500,
                max_length=15000)
    chunks = sl.slice(y)
    assert [c.silent for c in chunks] == [False, False]
    assert chunks[0].start == 0 and chunks[-1].end == len(y) and chunks[0].end == chunks[1].start
    assert 9.0 * SR <= chunks[0].end <= 9.2 * SR  # inside the dip
    # without max_length (inference's default) the same input stays one chunk
    assert len(Slicer(SR, -40, 5000, 300, 10, 500).slice(y)) == 1


@pytest.mark.parametrize("seconds", [31.0, 47.0])
def test_every_piece_respects_max_length(seconds):
    y = speech(seconds, seed=int(seconds))
    sl = Slicer(SR, threshold=-40, min_length=5000, min_interval=300, hop_size=10, max_sil_kept=500,
                max_length=15000)
    chunks = sl.slice(y)
    lengths = [len(c) / SR for c in chunks]
    assert sum(len(c) for c in chunks) == len(y)
    assert max(lengths) <= 15.0 + 1e-9 and min(lengths) >= 5.0 - 0.02


def test_slice_dataset_keeps_speakers_and_limits_length(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "sliced"
    y, _ = long_recording(70, SR, seed=1)
    write(src / "alice" / "song 名前.wav", y, SR, "PCM_24")
    y2, _ = long_recording(45, 32000, seed=2)
    write(src / "bob" / "take.flac", np.stack([y2, 0.8 * y2], 1), 32000)
    write(src / "bob" / "phrase.wav", speech(33.0, 22050, seed=4), 22050, "PCM_16")  # no pause: hard splits
    (src / "bob" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (src / "bob" / "notes.txt").write_text("hi")
    (src / "bob" / "empty.wav").write_bytes(b"")
    full = write(src / "bob" / "cut.wav", speech(6.0, seed=9), SR, "PCM_16").read_bytes()
    (src / "bob" / "cut.wav").write_bytes(full[: len(full) // 2])
    before = _snapshot(src)
    summary = slice_dataset(src, out, progress=False)
    assert _snapshot(src) == before
    status = {Path(o.path).name: (o.status, o.reason) for o in summary.outcomes}
    assert status["empty.wav"] == ("failed", "empty file (0 bytes)")
    assert status["cut.wav"][0] == "failed" and "truncated" in status["cut.wav"][1]
    assert status[".DS_Store"][0] == status["notes.txt"][0] == "skipped"
    assert {status[n][0] for n in ("song 名前.wav", "take.flac", "phrase.wav")} == {"done"}
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert {m.split("/")[0] for m in made} == {"alice", "bob"}
    assert not [m for m in made if "/." in m]  # no temporaries left
    for wav in out.rglob("*.wav"):
        info = sf.info(str(wav))
        assert 0.3 <= info.duration <= 15.0 + 1e-6, wav
    alice = sorted((out / "alice").iterdir())
    assert alice[0].name == "song 名前_0.wav" and len(alice) >= 70 // 9
    assert {sf.info(str(p)).subtype for p in alice} == {"PCM_24"}
    takes = sorted((out / "bob").glob("take_*.wav"))
    assert takes and all(sf.info(str(p)).channels == 2 and sf.info(str(p)).samplerate == 32000 for p in takes)
    assert len(list((out / "bob").glob("phrase_*.wav"))) == 3  # 33 s → 3 pieces of 5-15 s
    # a second run overwrites nothing and says so
    again = slice_dataset(src, out, progress=False)
    assert {o.status for o in again.outcomes if Path(o.path).name == "take.flac"} == {"skipped"}


def test_bad_options_and_output_inside_input(tmp_path):
    with pytest.raises(ConfigError, match="max_length"):
        SliceOptions(max_length_ms=1000)
    with pytest.raises(ConfigError, match="min_length"):
        SliceOptions(min_length_ms=100)
    write(tmp_path / "raw" / "a" / "x.wav", speech(1.0), SR, "PCM_16")
    with pytest.raises(ConfigError, match="inside the input folder"):
        slice_dataset(tmp_path / "raw", tmp_path / "raw" / "sliced", progress=False)
    assert not (tmp_path / "raw" / "sliced").exists()


def test_slice_audio_cli(tmp_path, monkeypatch):
    import slice_audio

    from modules.cli import run_main

    y, _ = long_recording(20, SR, seed=5)
    write(tmp_path / "dataset_raw" / "spk" / "long.wav", y, SR, "PCM_16")
    monkeypatch.chdir(tmp_path)
    assert run_main(slice_audio.main, ["--max_length", "8000", "--min_length", "3000"]) == 0
    clips = sorted(Path("dataset_raw_sliced/spk").glob("long_*.wav"))
    assert clips and max(sf.info(str(c)).duration for c in clips) <= 8.0 + 1e-6
    assert run_main(slice_audio.main, ["--min_interval", "5"]) == 2  # a pause shorter than the 10 ms hop
