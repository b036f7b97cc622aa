"""`make demo` / `make test` on a fresh clone: the set-up runs first when `.venv` is missing or stale.

Checked with `make -n` (print, do not run) in a temporary copy of the files the Makefile reads, with
a fake `.venv` stamp: the logic is tested, not a second full install (CI covers that).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP_INPUTS = ["scripts/setup.sh", "requirements.txt", "requirements-nodeps.txt", "constraints.txt",
                "packages-debian.txt"]
SETUP = "bash scripts/setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A copy of the Makefile and its set-up inputs, all dated an hour ago, without `.venv`."""
    for rel in ["Makefile", *SETUP_INPUTS]:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dst)
        _age(dst, 3600)
    return tmp_path


def _age(path: Path, seconds: float) -> None:
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def _dry_run(clone: Path, target: str) -> list[str]:
    # Under `make test` the variables of the outer make would turn this into a sub-make that
    # prints "Entering directory" lines; run it as a user's top-level make instead.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "-n", target], cwd=clone, capture_output=True, text=True, check=True, env=env)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def _stamp(clone: Path) -> Path:
    stamp = clone / ".venv" / ".setup-done"
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text("")
    return stamp


@pytest.mark.parametrize("target, command", [("test", ".venv/bin/python -m pytest -q"),
                                             ("demo", ".venv/bin/python demo.py --out demo_out")])
def test_fresh_clone_sets_up_first(clone, target, command):
    assert _dry_run(clone, target) == [SETUP, command]


@pytest.mark.parametrize("target, command", [("test", ".venv/bin/python -m pytest -q"),
                                             ("demo", ".venv/bin/python demo.py --out demo_out")])
def test_set_up_environment_is_not_redone(clone, target, command):
    _stamp(clone)
    assert _dry_run(clone, target) == [command]


def test_changed_requirements_redo_the_set_up(clone):
    _stamp(clone)
    _age(clone / ".venv" / ".setup-done", 60)       # the set-up ran a minute ago ...
    (clone / "requirements.txt").touch()            # ... and requirements.txt changed since
    assert _dry_run(clone, "test")[0] == SETUP


def test_setup_target_always_runs(clone):
    _stamp(clone)
    assert _dry_run(clone, "setup") == [SETUP]


def test_setup_script_writes_the_stamp_last():
    lines = [ln.strip() for ln in (ROOT / "scripts" / "setup.sh").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == "touch .venv/.setup-done"   # only a run that got this far (set -e) counts as done
    assert "set -euo pipefail" in lines


def test_readme_first_block_and_ci_agree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in first.splitlines() if ln.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    # CI runs the README's set-up-and-test command, nothing else
    assert ci == ["make test"] and "make test" in commands
