"""Registry of the pretrained files so-vits-svc 4.1 uses: where each goes and where it comes from.

Every loader asks :func:`require` for its file; a missing file raises one message that says
exactly what to download, from where, and where to put it. ``download_pretrain.py`` reads the
same table. Paths are relative to the project root (the working directory), as in 4.1, unless
the ``SVC_PRETRAIN_DIR`` environment variable points elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modules.errors import MissingPretrainedError


@dataclass(frozen=True)
class PretrainedFile:
    key: str                 # registry key (encoder / predictor / vocoder name)
    filename: str            # path under pretrain/
    url: str                 # official source (or the mirror 4.1's README names)
    description: str
    sha256: str | None = None  # where published
    size: int | None = None    # bytes, where known
    archive_member: str | None = None  # file inside a zip release to extract


PRETRAINED: dict[str, PretrainedFile] = {f.key: f for f in [
    PretrainedFile("vec768l12", "checkpoint_best_legacy_500.pt",
                   "https://huggingface.co/lj1995/VoiceConversionWebUI/resolve/main/hubert_base.pt",
                   "ContentVec legacy checkpoint (fairseq HuBERT-base); RVC's hubert_base.pt renamed works too"),
    PretrainedFile("vec256l9", "checkpoint_best_legacy_500.pt",
                   "https://huggingface.co/lj1995/VoiceConversionWebUI/resolve/main/hubert_base.pt",
                   "ContentVec legacy checkpoint (fairseq HuBERT-base); RVC's hubert_base.pt renamed works too"),
    PretrainedFile("hubertsoft", "hubert-soft-0d54a1f4.pt",
                   "https://github.com/bshall/hubert/releases/download/v0.1/hubert-soft-0d54a1f4.pt",
                   "HuBERT-Soft (bshall/hubert)"),
    PretrainedFile("whisper-ppg", "medium.pt",
                   "https://openaipublic.azureedge.net/main/whisper/models/345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1/medium.pt",
                   "OpenAI Whisper medium", sha256="345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1"),
    PretrainedFile("whisper-ppg-large", "large-v2.pt",
                   "https://openaipublic.azureedge.net/main/whisper/models/81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524/large-v2.pt",
                   "OpenAI Whisper large-v2", sha256="81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524"),
    PretrainedFile("cnhubertlarge", "chinese-hubert-large-fairseq-ckpt.pt",
                   "https://huggingface.co/TencentGameMate/chinese-hubert-large/resolve/main/chinese-hubert-large-fairseq-ckpt.pt",
                   "TencentGameMate chinese-hubert-large (fairseq)"),
    PretrainedFile("dphubert", "DPHuBERT-sp0.75.pth",
                   "https://huggingface.co/pyf98/DPHuBERT/resolve/main/DPHuBERT-sp0.75.pth",
                   "DPHuBERT sparsity 0.75"),
    PretrainedFile("wavlmbase+", "WavLM-Base+.pt",
                   "https://valle.blob.core.windows.net/share/wavlm/WavLM-Base+.pt",
                   "Microsoft WavLM Base+"),
    PretrainedFile("vec256l9-onnx", "vec-256-layer-9.onnx",
                   "https://huggingface.co/NaruseMioShirakana/MoeSS-SUBModel/resolve/main/vec-256-layer-9.onnx",
                   "ContentVec layer 9 + projection, ONNX (MoeSS)"),
    PretrainedFile("vec256l12-onnx", "vec-256-layer-12.onnx",
                   "https://huggingface.co/NaruseMioShirakana/MoeSS-SUBModel/resolve/main/vec-256-layer-12.onnx",
                   "ContentVec layer 12 + projection, ONNX (MoeSS)"),
    PretrainedFile("vec768l9-onnx", "vec-768-layer-9.onnx",
                   "https://huggingface.co/NaruseMioShirakana/MoeSS-SUBModel/resolve/main/vec-768-layer-9.onnx",
                   "ContentVec layer 9, ONNX (MoeSS)"),
    PretrainedFile("vec768l12-onnx", "vec-768-layer-12.onnx",
                   "https://huggingface.co/NaruseMioShirakana/MoeSS-SUBModel/resolve/main/vec-768-layer-12.onnx",
                   "ContentVec layer 12, ONNX (MoeSS)"),
    PretrainedFile("hubertsoft-onnx", "hubert-soft.onnx",
                   "https://huggingface.co/NaruseMioShirakana/MoeSS-SUBModel/resolve/main/hubert-soft.onnx",
                   "HuBERT-Soft, ONNX (MoeSS)"),
    PretrainedFile("rmvpe", "rmvpe.pt",
                   "https://github.com/yxlllc/RMVPE/releases/download/230917/rmvpe.zip",
                   "RMVPE pitch model (extract model.pt from the zip and rename it rmvpe.pt)",
                   archive_member="model.pt"),
    PretrainedFile("fcpe", "fcpe.pt",
                   "https://huggingface.co/datasets/ylzz1997/rmvpe_pretrain_model/resolve/main/fcpe.pt",
                   "FCPE pitch model (4.1 format); without it the weights shipped in the torchfcpe wheel are used"),
    PretrainedFile("nsf-hifigan", "nsf_hifigan/model",
                   "https://github.com/openvpi/vocoders/releases/download/nsf-hifigan-v1/nsf_hifigan_20221211.zip",
                   "openvpi NSF-HiFiGAN 44.1 kHz vocoder (unzip into pretrain/nsf_hifigan/: model + config.json)",
                   archive_member="nsf_hifigan/model"),
]}


def pretrain_dir() -> Path:
    return Path(os.environ.get("SVC_PRETRAIN_DIR", "pretrain"))


def expected_path(key: str) -> Path:
    """Where the file for registry ``key`` is expected."""
    return pretrain_dir() / PRETRAINED[key].filename


# Registry keys that are speech encoders (the rest are pitch models and the vocoder).
SPEECH_ENCODER_KEYS = frozenset(PRETRAINED) - {"rmvpe", "fcpe", "nsf-hifigan"}

OFFLINE_NOTE = ("Without internet: `make demo` (python demo.py) runs every step on synthetic singing with a "
                "random stand-in encoder it writes itself, which shows the pipeline working, not voice quality. "
                "Its file (demo_out/pretrain/) is marked as random weights inside, so copied here it still makes "
                "every stage warn.")


def missing_message(key: str, path: str | os.PathLike | None = None) -> str:
    entry = PRETRAINED[key]
    where = Path(path) if path is not None else expected_path(key)
    msg = (f"{where}: {entry.description} not found. Download it from {entry.url} and put it at {where} "
           f"(or run: python download_pretrain.py {key}).")
    return f"{msg} {OFFLINE_NOTE}" if key in SPEECH_ENCODER_KEYS else msg


def require(key: str, path: str | os.PathLike | None = None) -> Path:
    """Return the path of registry entry ``key`` (or the explicit ``path``) if it exists, else raise."""
    if key not in PRETRAINED:
        raise KeyError(f"no pretrained file registered under '{key}'")
    p = Path(path) if path is not None else expected_path(key)
    if not p.is_file():
        raise MissingPretrainedError(missing_message(key, p))
    return p


# --- downloading ---------------------------------------------------------------------------------
class DownloadError(MissingPretrainedError):
    """A download failed (network, size or checksum); nothing was written under the final name."""


def _fetch(url: str, dest, *, timeout: float, progress: bool) -> None:
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {url}: {reason}") from None


def sha256_of(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(entry: PretrainedFile, dest_dir: str | os.PathLike | None = None, *, url: str | None = None,
             timeout: float = 60.0, progress: bool = True, force: bool = False) -> Path:
    """Fetch ``entry`` into ``dest_dir`` (default ``pretrain/``), verify size and SHA-256, rename into place.

    Zip releases (RMVPE, NSF-HiFiGAN) are unpacked: ``archive_member`` becomes ``filename``, and
    for NSF-HiFiGAN its ``config.json`` is extracted beside it. On any failure nothing is left
    under the final name and :class:`DownloadError` says what happened and what to do by hand.
    """
    import tempfile
    import zipfile

    from modules.io_utils import atomic_path

    dest_dir = Path(dest_dir) if dest_dir is not None else pretrain_dir()
    target = dest_dir / entry.filename
    if target.is_file() and not force:
        return target
    url = url or entry.url
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmpdir:
        raw = Path(tmpdir) / "download"
        try:
            _fetch(url, raw, timeout=timeout, progress=progress)
        except DownloadError as e:
            raise DownloadError(f"{e}. Download it by hand and put it at {target}.") from None
        if entry.size is not None and raw.stat().st_size != entry.size:
            raise DownloadError(f"{url}: got {raw.stat().st_size} bytes, expected {entry.size}; the download is "
                                f"incomplete or the file changed. Nothing was written to {target}.")
        if entry.sha256 is not None:
            digest = sha256_of(raw)
            if digest != entry.sha256:
                raise DownloadError(f"{url}: SHA-256 {digest} does not match the published {entry.sha256}; "
                                    f"the file is corrupted or not the official one. Nothing was written to {target}.")
        if entry.archive_member is None:
            with atomic_path(target) as tmp:
                os.replace(raw, tmp)
            return target
        try:
            with zipfile.ZipFile(raw) as zf:
                names = zf.namelist()
                member = next((n for n in names if n == entry.archive_member or n.endswith("/" + entry.archive_member)), None)
                if member is None:
                    raise DownloadError(f"{url}: archive has no '{entry.archive_member}' (it holds {names[:10]})")
                extras = []
                if Path(entry.filename).parent != Path("."):
                    # a folder release (nsf_hifigan/model + config.json): take its siblings too
                    prefix = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
                    extras = [n for n in names if n.startswith(prefix) and n != member and not n.endswith("/")]
                for name in extras:
                    with atomic_path(target.parent / Path(name).name) as tmp:
                        tmp.write_bytes(zf.read(name))
                with atomic_path(target) as tmp:
                    tmp.write_bytes(zf.read(member))
        except zipfile.BadZipFile:
            raise DownloadError(f"{url}: not a valid zip archive; nothing was written to {target}") from None
    return target
