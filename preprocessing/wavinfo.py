"""Cheap checks on audio files before the expensive work: truncation and the training format.

libsndfile reads a WAV whose data chunk was cut short (an interrupted copy, a full disk)
without complaint and returns fewer samples than the header promises; such a clip is nearly
always damaged, so it is reported instead of silently trained on.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

# WAV writers that stream (ffmpeg to a pipe, some recorders) leave these placeholder sizes.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def wav_truncation(path: str | os.PathLike) -> str | None:
    """Return a reason string if the RIFF/WAVE file's data chunk is shorter than declared.

    Returns None for complete files, for non-RIFF files (FLAC, MP3 ... are checked by their
    decoder) and for streamed WAVs whose header holds a placeholder size.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk_id, chunk_size = struct.unpack(endian + "4sI", f.read(8))
                if chunk_id == b"data":
                    if chunk_size in _UNKNOWN_SIZES:
                        return None
                    available = size - (pos + 8)
                    if available < chunk_size:
                        return (f"truncated: the WAV header declares {chunk_size} bytes of audio but the file "
                                f"holds {available}; copy or export the file again")
                    return None
                pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    return None
