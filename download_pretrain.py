"""Download the official pretrained files of so-vits-svc 4.1 into pretrain/ and verify them.

Usage:
    python download_pretrain.py --list
    python download_pretrain.py vec768l12 rmvpe nsf-hifigan
    python download_pretrain.py --all
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("download_pretrain")


def main(argv: list[str] | None = None) -> int:
    from modules.pretrained import PRETRAINED, DownloadError, download, expected_path
    from modules.runtime import add_threads_argument, configure_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"files to fetch, by name: {', '.join(PRETRAINED)}")
    parser.add_argument("--all", action="store_true", help="fetch every known file")
    parser.add_argument("--list", action="store_true", help="list the known files, where they go and whether they are present")
    parser.add_argument("--dir", default=None, help="destination folder (default: pretrain/)")
    parser.add_argument("--force", action="store_true", help="download again even if the file exists")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    add_threads_argument(parser)  # every script takes it (issue 24); hashing and downloads use no torch threads
    args = parser.parse_args(argv)
    configure_threads(args.threads, interactive=False)

    if args.list:
        for key, e in PRETRAINED.items():
            path = expected_path(key) if args.dir is None else __import__("pathlib").Path(args.dir) / e.filename
            state = "present" if path.is_file() else "missing"
            print(f"{key:18s} {state:8s} {path}  <- {e.url}")
        return 0
    names = list(PRETRAINED) if args.all else args.names
    if not names:
        parser.error("name at least one file (or --all / --list)")
    unknown = [n for n in names if n not in PRETRAINED]
    if unknown:
        parser.error(f"unknown name(s) {', '.join(unknown)}; known: {', '.join(PRETRAINED)}")
    failed = 0
    seen = set()
    for name in names:
        entry = PRETRAINED[name]
        if entry.filename in seen:
            continue
        seen.add(entry.filename)
        try:
            path = download(entry, args.dir, timeout=args.timeout, force=args.force)
            log.info("%s: ok -> %s", name, path)
        except DownloadError as e:
            log.error("%s: %s", name, e)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    from modules.cli import run_main

    sys.exit(run_main(main))
