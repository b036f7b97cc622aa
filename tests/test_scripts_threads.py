"""Every script takes ``--threads`` and applies it through ``modules.runtime`` (issue 24).

Fast: the scripts are only asked for ``--help`` (in one subprocess, which must not import torch
for it: heavy imports belong inside ``main()`` after parsing) and handed a bad count.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTERACTIVE = {"webUI.py", "gui.py", "train.py", "train_diff.py"}  # wait policy PASSIVE by default


def _scripts() -> list[Path]:
    """Top-level scripts (a ``main()``) and the one script inside a package folder."""
    found = [p for p in sorted(ROOT.glob("*.py")) if "\ndef main(" in p.read_text(encoding="utf-8")]
    return found + [ROOT / "cluster" / "train_cluster.py"]


SCRIPTS = _scripts()
HELP = """
import contextlib, importlib.util, io, json, sys
sys.path.insert(0, {root!r})
result = {{}}
for path in {paths!r}:
    spec = importlib.util.spec_from_file_location("_script_" + path.replace("/", "_")[:-3], {root!r} + "/" + path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            mod.main(["--help"])
    except SystemExit:
        pass
    result[path] = {{"threads": "--threads" in out.getvalue(), "torch": "torch" in sys.modules}}
print(json.dumps(result))
"""


def test_the_script_list_is_complete():
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"resample.py", "preprocess_flist_config.py", "preprocess_hubert_f0.py", "train.py", "train_diff.py",
            "train_index.py", "cluster/train_cluster.py", "inference_main.py", "webUI.py", "gui.py",
            "compress_model.py", "onnx_export.py", "model_mix.py", "export_model.py", "evaluate.py",
            "check_dataset.py", "slice_audio.py", "demo.py", "download_pretrain.py"} <= names
    assert "spkmix.py" not in names  # data, not a script


def test_every_script_help_lists_threads_without_importing_torch():
    paths = [p.relative_to(ROOT).as_posix() for p in SCRIPTS]
    out = subprocess.run([sys.executable, "-c", HELP.format(root=str(ROOT), paths=paths)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) == set(paths)
    assert [p for p, r in result.items() if not r["threads"]] == []
    # the first script whose --help imported torch (every later one would be masked by it)
    assert next((p for p, r in result.items() if r["torch"]), None) is None


def _main_calls(path: Path) -> dict[str, ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    return {n.func.id: n for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_main_applies_threads_through_the_runtime_module(path):
    calls = _main_calls(path)
    call = calls.get("configure_threads") or calls.get("apply_inference_profile")
    assert call is not None, f"{path.name}: main() neither calls configure_threads nor apply_inference_profile"
    text = path.read_text(encoding="utf-8")
    assert "set_num_threads" not in text  # only modules.runtime sets the pools
    if call.func.id == "configure_threads":
        interactive = call.args[1] if len(call.args) > 1 else next(k.value for k in call.keywords
                                                                    if k.arg == "interactive")
    else:
        interactive = next(k.value for k in call.keywords if k.arg == "interactive")
    assert isinstance(interactive, ast.Constant)
    assert interactive.value is (path.name in INTERACTIVE), path.name


# minimal arguments that get each script past argparse (nothing is read before --threads is checked)
BAD_THREADS_ARGS = {
    "resample.py": [], "preprocess_flist_config.py": [], "preprocess_hubert_f0.py": [],
    "train.py": ["-m", "x"], "train_diff.py": ["-c", "missing.yaml"], "train_index.py": [],
    "train_cluster.py": [], "compress_model.py": ["-i", "missing.pth"], "onnx_export.py": [],
    "model_mix.py": ["-m", "missing.pth"], "export_model.py": ["-m", "missing.pth"],
    "evaluate.py": ["--source", "a.wav", "--converted", "b.wav"], "check_dataset.py": [], "slice_audio.py": [],
    "demo.py": ["--quick"], "download_pretrain.py": ["--list"],
}


@pytest.mark.parametrize("name", sorted(BAD_THREADS_ARGS))
def test_a_bad_thread_count_is_a_clear_error(name, tmp_path, monkeypatch):
    from modules.errors import SvcError

    monkeypatch.chdir(tmp_path)  # nothing may be written, and relative defaults point nowhere
    path = next(p for p in SCRIPTS if p.name == name)
    spec = importlib.util.spec_from_file_location(f"_bad_threads_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = BAD_THREADS_ARGS[name] + ["--threads", "0"]
    if name == "demo.py":
        args += ["--out", str(tmp_path / "demo")]
    with pytest.raises(SvcError, match="--threads"):
        mod.main(args)
    assert list(tmp_path.iterdir()) == []
