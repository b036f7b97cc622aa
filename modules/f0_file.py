"""F0 curve files: the curve a conversion used, as CSV, and the same file read back.

Format (UTF-8, comma separated, one row per synthesizer frame, header first)::

    time_s,f0_hz,voiced
    0.0,220.0,0
    0.011609977324263039,220.0,1
    ...

* ``time_s``: frame start i · hop_length / sampling_rate (seconds), rows consecutive from 0;
* ``f0_hz``: the f0 the synthesizer gets, unvoiced frames included (they carry the
  interpolated value, as the model sees them);
* ``voiced``: 1 or 0.

Numbers are written with Python's shortest round-trip ``repr``, so reading a file this module
wrote gives back exactly the same float64 f0 and float32 voiced flags. Files edited in other
tools are checked row by row (rows are counted like a spreadsheet: the header is row 1); every
problem names its row and the rule it breaks, and a file with another frame rate is refused
rather than silently stretched. A file with the right frame rate but another number of rows
(e.g. from a slightly different cut of the audio) is resampled to the wanted length with a
warning.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from modules.errors import SvcError
from modules.io_utils import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["F0FileError", "HEADER", "F0_FILE_MIN", "F0_FILE_MAX", "format_f0_csv", "parse_f0_csv",
           "read_f0_csv", "resample_curve", "write_f0_csv"]

HEADER = ("time_s", "f0_hz", "voiced")
#: Range a voiced frame must lie in (Hz): wide enough for any voice after a ±24 semitone transposition.
F0_FILE_MIN = 5.0
F0_FILE_MAX = 8000.0
_TIME_TOLERANCE = 0.25  # frames: rounding in other tools' time columns is allowed, not drift
_RATE_TOLERANCE = 0.01  # relative difference of the row spacing that counts as another frame rate
_MAX_LISTED = 10


class F0FileError(SvcError):
    """An F0 curve file is malformed; the message lists each bad row and the rule it breaks."""


def _check_curve(f0: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    uv = np.asarray(uv, dtype=np.float32).reshape(-1)
    if f0.shape != uv.shape:
        raise SvcError(f"f0 curve: f0 has {f0.size} frames but voiced flags {uv.size}")
    if not np.isfinite(f0).all() or (f0 < 0).any():
        raise SvcError("f0 curve: f0 holds NaN, infinite or negative values; nothing written")
    if not np.isin(uv, (0.0, 1.0)).all():
        raise SvcError("f0 curve: voiced flags must be 0 or 1")
    return f0, uv


def format_f0_csv(f0: np.ndarray, uv: np.ndarray, *, hop_length: int, sampling_rate: int) -> str:
    """``f0 [T]`` Hz and ``uv [T]`` (0/1) → the CSV text (header + T rows)."""
    f0, uv = _check_curve(f0, uv)
    period = hop_length / sampling_rate
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for i, (hz, v) in enumerate(zip(f0.tolist(), uv.tolist())):
        w.writerow((repr(i * period), repr(hz), "1" if v else "0"))
    return buf.getvalue()


def write_f0_csv(path: str | os.PathLike, f0: np.ndarray, uv: np.ndarray, *, hop_length: int, sampling_rate: int,
                 overwrite: bool = False) -> Path:
    """Write the curve to ``path`` (temp name, then rename). An existing file is kept and an
    error raised unless ``overwrite``. Returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise SvcError(f"{path}: exists; choose another --f0_out name or delete the file")
    atomic_write_text(path, format_f0_csv(f0, uv, hop_length=hop_length, sampling_rate=sampling_rate))
    return path


def read_f0_csv(path: str | os.PathLike, *, hop_length: int, sampling_rate: int, n_frames: int | None = None,
                f0_min: float = F0_FILE_MIN, f0_max: float = F0_FILE_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Read a curve file → ``(f0 float64 [n] Hz, uv float32 [n])``; see :func:`parse_f0_csv`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise F0FileError(f"{path}: f0 file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise F0FileError(f"{path}: cannot read the f0 file ({e}); it must be a UTF-8 CSV text file") from None
    return parse_f0_csv(text, source=str(path), hop_length=hop_length, sampling_rate=sampling_rate,
                        n_frames=n_frames, f0_min=f0_min, f0_max=f0_max)


def parse_f0_csv(text: str, *, source: str = "f0 file", hop_length: int, sampling_rate: int,
                 n_frames: int | None = None, f0_min: float = F0_FILE_MIN,
                 f0_max: float = F0_FILE_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Parse CSV text (e.g. an upload) → ``(f0 float64 [n] Hz, uv float32 [n])``.

    Rules, each reported with its row: 3 columns (``time_s,f0_hz,voiced``); numbers only; no
    NaN / infinity; no negative value; ``voiced`` 0 or 1; a voiced row's f0 within
    [f0_min, f0_max] Hz (an unvoiced row's within [0, f0_max]); times i · hop / rate (the
    frame rate of the model; another spacing is refused). ``n_frames`` given and different
    from the row count: the curve is resampled to ``n_frames`` with a warning.

    Raises:
        F0FileError: listing up to 10 bad rows and the rule each breaks.
    """
    period = hop_length / sampling_rate
    problems: list[str] = []
    times, hz, flags, rows = [], [], [], []
    lines = list(csv.reader(io.StringIO(text)))
    first_data = 0
    while first_data < len(lines) and not any(c.strip() for c in lines[first_data]):
        first_data += 1
    if first_data < len(lines) and not _is_number(lines[first_data][0]):
        if len(lines[first_data]) != 3:
            problems.append(f"row {first_data + 1}: wrong columns: the header needs 3 columns "
                            f"({','.join(HEADER)}), found {len(lines[first_data])}")
        first_data += 1
    for k in range(first_data, len(lines)):
        fields = [c.strip() for c in lines[k]]
        row = k + 1
        if not any(fields):
            continue  # blank line
        if len(fields) != 3:
            problems.append(f"row {row}: wrong columns: expected 3 ({','.join(HEADER)}, separated by commas), "
                            f"found {len(fields)}")
            continue
        values = []
        for name, field in zip(HEADER, fields):
            try:
                values.append(float(field))
            except ValueError:
                problems.append(f"row {row}: {name} '{field}' is not a number")
                break
        if len(values) != 3:
            continue
        t, f, v = values
        bad = [name for name, x in zip(HEADER, values) if not math.isfinite(x)]
        if bad:
            problems.append(f"row {row}: {', '.join(bad)} is NaN or infinite")
            continue
        if t < 0 or f < 0:
            problems.append(f"row {row}: negative value ({'time_s' if t < 0 else 'f0_hz'} = {t if t < 0 else f:g})")
            continue
        if v not in (0.0, 1.0):
            problems.append(f"row {row}: voiced must be 0 or 1, got {fields[2]}")
            continue
        if (v and not f0_min <= f <= f0_max) or f > f0_max:
            need = f"{f0_min:g}-{f0_max:g} Hz" if v else f"0-{f0_max:g} Hz"
            problems.append(f"row {row}: f0_hz {f:g} Hz is out of range ({'voiced' if v else 'unvoiced'} rows "
                            f"need {need})")
            continue
        times.append(t)
        hz.append(f)
        flags.append(v)
        rows.append(row)
    if not problems:
        problems += _time_problems(np.array(times), rows, period, hop_length, sampling_rate)
    if problems:
        listed = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise F0FileError(f"{source}: {len(problems)} bad row(s):\n  " + "\n  ".join(listed) + more)
    if not hz:
        raise F0FileError(f"{source}: no data rows (expected a header {','.join(HEADER)} and one row per frame)")
    f0 = np.array(hz, dtype=np.float64)
    uv = np.array(flags, dtype=np.float32)
    if n_frames is not None and n_frames != len(f0):
        log.warning("%s: %d rows for %d frames (%.3f s vs %.3f s of audio); resampling the curve to %d frames",
                    source, len(f0), n_frames, len(f0) * period, n_frames * period, n_frames)
        f0, uv = resample_curve(f0, uv, n_frames)
    return f0, uv


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _time_problems(times: np.ndarray, rows: list[int], period: float, hop_length: int,
                   sampling_rate: int) -> list[str]:
    """Rows whose time is not i · period; a different spacing over the file is named as such."""
    if len(times) >= 2:
        step = float(times[-1] - times[0]) / (len(times) - 1)  # mean spacing: robust to rounded times
        if abs(step - period) > _RATE_TOLERANCE * period:
            i = np.arange(len(times))
            first = int(np.argmax(np.abs(times - i * period) > _TIME_TOLERANCE * period))
            return [f"row {rows[first]}: other frame rate: rows are {step * 1000:.3f} ms apart, but this model "
                    f"needs {period * 1000:.3f} ms ({sampling_rate / hop_length:.4f} frames per second: hop "
                    f"{hop_length} at {sampling_rate} Hz); export the curve at that frame rate"]
    out = []
    for i, (t, row) in enumerate(zip(times.tolist(), rows)):
        if abs(t - i * period) > _TIME_TOLERANCE * period:
            out.append(f"row {row}: time_s {t:g} s is not frame {i}'s time {i * period:.6f} s (rows must be "
                       f"consecutive frames, {period * 1000:.3f} ms apart, starting at 0)")
    return out


def resample_curve(f0: np.ndarray, uv: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Stretch a curve ``[T]`` to ``[n_frames]``: f0 linearly, voiced flags by the nearest frame."""
    f0 = np.asarray(f0, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float32)
    if n_frames <= 0 or len(f0) == 0:
        return np.zeros(max(n_frames, 0)), np.zeros(max(n_frames, 0), dtype=np.float32)
    pos = np.arange(n_frames) * (len(f0) / n_frames)  # frame centres map onto the source grid
    pos = np.clip(pos + 0.5 * len(f0) / n_frames - 0.5, 0, len(f0) - 1)
    new_f0 = np.interp(pos, np.arange(len(f0)), f0)
    new_uv = uv[np.clip(np.round(pos).astype(int), 0, len(uv) - 1)]
    return new_f0, new_uv.astype(np.float32)
