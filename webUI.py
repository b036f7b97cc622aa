"""The web UI: ``python webUI.py`` then open http://127.0.0.1:7860 (4.1's ``webUI.py``).

Load a model (upload, or a folder under ``trained/``), drop in a song, convert, listen and
download; the "Tools" tab mixes and compresses models. Results go to ``results/``. The server
listens on 127.0.0.1 only unless ``--host`` says otherwise; ``--share`` (a public Gradio link)
is off by default.
"""

from __future__ import annotations

import argparse
import sys

from modules.cli import run_main

DEFAULT_PORT = 7860  # 4.1's port


def build_parser() -> argparse.ArgumentParser:
    from modules.runtime import add_threads_argument

    p = argparse.ArgumentParser(description="so-vits-svc 4.1 web UI (Gradio)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the whole network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true", default=False,
                   help="also publish a temporary public link through Gradio's share servers (off by default)")
    add_threads_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from modules.errors import SvcError

    if not 0 < args.port < 65536:
        raise SvcError(f"--port must be in 1..65535, got {args.port}")
    from modules.runtime import apply_inference_profile

    # Interactive: OpenMP threads sleep between regions, so other load does not stall the page.
    # The huge-page re-exec repeats this process's command line: only when main() runs it.
    # Parallel slices as inference_main.py (one intra-op thread each: no waits at OpenMP barriers).
    profile = apply_inference_profile(threads=args.threads, interactive=True, reexec=argv is None, slice_workers=None)
    from webui.app import build_app, launch

    launch(build_app(on_slice_done=profile.on_slice_done, slice_workers=profile.slice_workers,
                     set_threads=profile.set_threads, slice_threads=profile.slice_threads),
           host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
