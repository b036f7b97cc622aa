"""docs/compatibility.md and docs/benchmarks.md are merged from docs/compat/ and docs/bench/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_merged_docs_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "merge_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"run tools/merge_docs.py: {proc.stdout}{proc.stderr}"


def test_every_fragment_is_in_the_merged_file():
    for sub, name in (("compat", "compatibility.md"), ("bench", "benchmarks.md")):
        merged = (ROOT / "docs" / name).read_text(encoding="utf-8")
        for frag in (ROOT / "docs" / sub).glob("*.md"):
            first = frag.read_text(encoding="utf-8").strip().splitlines()[0].lstrip("#").strip()
            assert f"## {first}\n" in merged, f"{frag.name} missing from {name}"
