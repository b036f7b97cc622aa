# so-vits-svc 4.1 (faithful reimplementation) — common commands.
PY := .venv/bin/python

.PHONY: setup test bench demo clean-venv

setup:            ## create .venv and install everything (Debian packages too)
	bash scripts/setup.sh

test:             ## run the test suite (CPU only)
	$(PY) -m pytest -q

bench:            ## run every benchmark script (slow; see docs/benchmarks.md)
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf .venv

demo:             ## end-to-end demo on synthetic singing (CPU, no downloads; writes demo_out/)
	$(PY) demo.py --out demo_out
