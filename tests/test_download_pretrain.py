"""download_pretrain: fetch over HTTP, verify size/SHA-256, unpack releases, fail cleanly."""

import functools
import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

import download_pretrain
from modules.pretrained import PRETRAINED, DownloadError, PretrainedFile, download


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_checksum_and_size(server, tmp_path):
    root, base = server
    data = b"weights" * 1000
    (root / "w.pt").write_bytes(data)
    entry = PretrainedFile("x", "w.pt", f"{base}/w.pt", "test", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    out = download(entry, tmp_path / "pretrain", progress=False)
    assert out.read_bytes() == data


def test_corrupted_file_is_refused_and_nothing_written(server, tmp_path):
    root, base = server
    (root / "w.pt").write_bytes(b"corrupted")
    entry = PretrainedFile("x", "w.pt", f"{base}/w.pt", "test", sha256=hashlib.sha256(b"good").hexdigest())
    dest = tmp_path / "pretrain"
    with pytest.raises(DownloadError, match="SHA-256"):
        download(entry, dest, progress=False)
    assert not any(dest.rglob("*")), "no partial or temporary file may remain"
    wrong_size = PretrainedFile("x", "w.pt", f"{base}/w.pt", "test", size=5)
    with pytest.raises(DownloadError, match="expected 5"):
        download(wrong_size, dest, progress=False)


def test_zip_release_is_unpacked_with_its_config(server, tmp_path):
    root, base = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("nsf_hifigan/model", b"gen")
        zf.writestr("nsf_hifigan/config.json", b"{}")
        zf.writestr("nsf_hifigan/NOTICE.txt", b"n")
    (root / "v.zip").write_bytes(buf.getvalue())
    entry = PretrainedFile("v", "nsf_hifigan/model", f"{base}/v.zip", "voc", archive_member="nsf_hifigan/model")
    out = download(entry, tmp_path / "pretrain", progress=False)
    assert out.read_bytes() == b"gen"
    assert (out.parent / "config.json").read_bytes() == b"{}"


def test_unreachable_server_fails_cleanly(tmp_path):
    entry = PretrainedFile("x", "w.pt", "http://127.0.0.1:9/none.pt", "test")
    with pytest.raises(DownloadError, match="by hand"):
        download(entry, tmp_path, progress=False, timeout=5)
    assert not (tmp_path / "w.pt").exists()


def test_cli_exits_non_zero_when_offline(tmp_path, monkeypatch):
    monkeypatch.setitem(PRETRAINED, "vec768l12", PretrainedFile("vec768l12", "c.pt", "http://127.0.0.1:9/c.pt", "t"))
    assert download_pretrain.main(["vec768l12", "--dir", str(tmp_path), "--timeout", "5"]) == 1
    assert download_pretrain.main(["--list", "--dir", str(tmp_path)]) == 0
    with pytest.raises(SystemExit):
        download_pretrain.main(["no-such-file"])


def test_registry_names_every_41_file():
    files = {e.filename for e in PRETRAINED.values()}
    for name in ["checkpoint_best_legacy_500.pt", "hubert-soft-0d54a1f4.pt", "medium.pt", "large-v2.pt",
                 "chinese-hubert-large-fairseq-ckpt.pt", "DPHuBERT-sp0.75.pth", "WavLM-Base+.pt", "rmvpe.pt",
                 "fcpe.pt", "nsf_hifigan/model", "vec-768-layer-12.onnx", "hubert-soft.onnx"]:
        assert name in files
    for e in PRETRAINED.values():
        assert e.url.startswith("https://")
