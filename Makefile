# so-vits-svc 4.1 (faithful reimplementation) — common commands.
# `make demo` and `make test` set the environment up first when it is missing (or when the files it
# was built from changed), so on a fresh machine those two commands are all you need.
PY := .venv/bin/python
# Written by scripts/setup.sh after a successful run; make re-runs the set-up when any of these is newer.
STAMP := .venv/.setup-done
SETUP_INPUTS := scripts/setup.sh requirements.txt requirements-nodeps.txt constraints.txt packages-debian.txt

.PHONY: setup test bench demo clean-venv

setup:            ## (re)create .venv and install everything (Debian packages too); always runs
	bash scripts/setup.sh

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh

test: $(STAMP)    ## run the test suite (CPU only); sets up first if needed
	$(PY) -m pytest -q

bench: $(STAMP)   ## run every benchmark script (slow; see docs/benchmarks.md)
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf .venv

demo: $(STAMP)    ## end-to-end demo on synthetic singing (CPU, no downloads; writes demo_out/); sets up first if needed
	$(PY) demo.py --out demo_out
