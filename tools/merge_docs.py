"""Rebuild docs/compatibility.md and docs/benchmarks.md from their per-area fragments.

Each area keeps its own text in ``docs/compat/<area>.md`` and ``docs/bench/<area>.md``; the merged
file keeps its hand-written head (everything above the ``<!-- merged sections below -->`` marker)
and appends the fragments in pipeline order, headings shifted so each fragment's top level is ``##``.

    .venv/bin/python tools/merge_docs.py [--check]

``--check`` exits 1 if a merged file is out of date instead of writing it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- merged sections below -->"
# Pipeline order; fragments not named here follow alphabetically.
ORDER = ["preprocess", "encoders", "f0", "synth", "train", "diffusion", "cluster", "infer", "onnx", "webui",
         "realtime", "demo"]
TARGETS = {"compat": "compatibility.md", "bench": "benchmarks.md"}


def merged_text(folder: Path, target: Path) -> str:
    head = target.read_text(encoding="utf-8").split(MARKER)[0].rstrip() + "\n\n" + MARKER + "\n"
    fragments = sorted(folder.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER),
                                                           p.stem))
    parts = [head]
    for frag in fragments:
        text = frag.read_text(encoding="utf-8").strip()
        # shift headings (outside fenced code) so that the fragment's top level becomes "##"
        lines, fenced, levels = text.splitlines(), False, []
        is_heading = []
        for line in lines:
            if line.startswith("```"):
                fenced = not fenced
            m = None if fenced else re.match(r"(#{1,6}) ", line)
            is_heading.append(m is not None)
            if m:
                levels.append(len(m.group(1)))
        shift = 2 - min(levels) if levels else 0
        out = []
        for line, heading in zip(lines, is_heading):
            if heading:
                hashes = len(line) - len(line.lstrip("#"))
                line = "#" * max(1, min(6, hashes + shift)) + line[hashes:]
            out.append(line)
        parts.append("\n" + "\n".join(out) + "\n")
    return "".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether the merged files are current")
    args = ap.parse_args()
    stale = []
    for sub, name in TARGETS.items():
        target = ROOT / "docs" / name
        text = merged_text(ROOT / "docs" / sub, target)
        if target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not args.check:
                tmp = target.with_suffix(".md.tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(target)
    for t in stale:
        print(f"{'out of date' if args.check else 'rewrote'}: {t.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
