"""Dynamic speaker mixing (``-usm``, spec §10.7): the ``spkmix.py`` track and its weight matrix.

``spkmix.py`` is a data file: it defines ``spk_mix_map = {speaker_id: [[t0, t1, v0, v1], ...]}``
with times as fractions of the song (0…1) and a weight ramping linearly from v0 to v1 inside each
segment. It is read with :mod:`ast` (never imported or executed) and validated with messages that
name the speaker and segment at fault.

The weight matrix ``[n_speakers, frames]`` is built exactly as 4.1 builds it (so a song mixed by
4.1 sounds the same here): per speaker the segments are laid out on a frame budget, then every
frame is normalised to sum 1 (frames where all weights are 0 get 1/n each).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from modules.errors import ConfigError

SpkMixMap = dict[int, list[list[float]]]


def load_spk_mix_map(path: str | os.PathLike = "spkmix.py") -> SpkMixMap:
    """Read ``spk_mix_map`` from a ``spkmix.py`` data file without executing it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: speaker-mix file not found (it defines spk_mix_map; see spkmix.py in the "
                          "project root for the format)")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"{path}: line {e.lineno}: not valid Python syntax ({e.msg})") from None
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "spk_mix_map" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise ConfigError(f"{path}: line {node.lineno}: spk_mix_map must be a literal dict of numbers "
                                  "(no variables, calls or expressions)") from None
    if value is None:
        raise ConfigError(f"{path}: defines no 'spk_mix_map = {{...}}'")
    return check_spk_mix_map(value, source=str(path))


def check_spk_mix_map(mix: Any, n_speakers: int | None = None, *, source: str = "spk_mix_map") -> SpkMixMap:
    """Validate the structure of a mix map; with ``n_speakers`` also that it fits the model.

    Rules (4.1's, made explicit): keys are speaker ids 0…n−1, every speaker present; each value is
    a list of ``[t0, t1, v0, v1]`` with 0 ≤ t0 < t1 ≤ 1, the first t0 = 0, each t0 = the previous
    t1, the last t1 = 1, and weights v0, v1 ≥ 0.
    """
    if not isinstance(mix, Mapping) or not mix:
        raise ConfigError(f"{source}: spk_mix_map must be a non-empty dict {{speaker_id: [[t0, t1, v0, v1], ...]}}")
    out: SpkMixMap = {}
    for key, segments in mix.items():
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise ConfigError(f"{source}: key {key!r} is not a speaker id (keys are the integer ids 0, 1, ... of "
                              "the config's 'spk' map, not names)")
        where = f"{source}: speaker {key}"
        if not isinstance(segments, Sequence) or isinstance(segments, str) or not segments:
            raise ConfigError(f"{where}: needs a non-empty list of [t0, t1, v0, v1] segments "
                              "(an unused speaker is [[0., 1., 0., 0.]])")
        clean = []
        for j, seg in enumerate(segments):
            if (not isinstance(seg, Sequence) or isinstance(seg, str) or len(seg) != 4
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in seg)):
                raise ConfigError(f"{where}, segment {j}: {seg!r} is not [t0, t1, v0, v1] (four numbers)")
            t0, t1, v0, v1 = (float(x) for x in seg)
            if v0 < 0 or v1 < 0:
                raise ConfigError(f"{where}, segment {j}: weights must be ≥ 0, got {v0}, {v1}")
            if not 0.0 <= t0 < t1 <= 1.0:
                raise ConfigError(f"{where}, segment {j}: times must satisfy 0 ≤ t0 < t1 ≤ 1, got {t0}, {t1}")
            if j == 0 and t0 != 0.0:
                raise ConfigError(f"{where}: the first segment must start at 0, not {t0}")
            if j > 0 and t0 != clean[-1][1]:
                raise ConfigError(f"{where}, segment {j}: starts at {t0} but the previous one ends at {clean[-1][1]}; "
                                  "each segment must start where the previous one ends")
            clean.append([t0, t1, v0, v1])
        if clean[-1][1] != 1.0:
            raise ConfigError(f"{where}: the last segment must end at 1, not {clean[-1][1]}")
        out[key] = clean
    if n_speakers is not None:
        wanted = set(range(n_speakers))
        missing = sorted(wanted - set(out))
        extra = sorted(set(out) - wanted)
        if extra:
            raise ConfigError(f"{source}: speaker ids {extra} do not exist; the model has {n_speakers} speakers "
                              f"(ids 0..{n_speakers - 1})")
        if missing:
            raise ConfigError(f"{source}: speaker ids {missing} are missing; every speaker of the model needs an entry "
                              "(an unused speaker is [[0., 1., 0., 0.]])")
    return out


def mix_weights(mix: SpkMixMap, n_frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-frame speaker weights ``[n_speakers, n_frames]``, each column summing to 1.

    Segment bounds are ``int(n_frames · t)``; inside a segment the weight is
    ``arange(v0, v1, (v1 − v0)/len)`` (constant when v0 = v1), reflect-padded by one frame when the
    float arithmetic yields one value too few: the same numbers as 4.1.
    """
    n_spk = len(mix)
    weights = torch.zeros(n_spk, n_frames, device=device)
    for i in range(n_spk):
        for j, (t0, t1, v0, v1) in enumerate(mix[i]):
            begin, end = int(n_frames * t0), int(n_frames * t1)
            length = end - begin
            if length <= 0:
                raise ConfigError(f"spk_mix_map: speaker {i}, segment {j} ({t0}..{t1}) is shorter than one frame of "
                                  f"this song ({n_frames} frames); make it longer")
            step = (v1 - v0) / length
            if step == 0.0:
                values = torch.zeros(length, device=device) + v0
            else:
                values = torch.arange(v0, v1, step, device=device)
            if len(values) < length:
                values = torch.nn.functional.pad(values[None], [0, length - len(values)], mode="reflect")[0]
            weights[i, begin:end] = values[:length]
    total = weights.sum(dim=0)
    empty = total == 0
    weights[:, empty] = 1.0 / n_spk
    total[empty] = 1.0
    return weights / total
