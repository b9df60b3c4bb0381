# `make demo`, `make test` and `make test-slow` each set up everything they need on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export LOCKTUNE_NPM_PREFIX := $(CURDIR)/.deps/npm
export LOCKTUNE_CACHE := $(CURDIR)/.cache/locktune

.PHONY: setup data demo test test-slow results study report clean gpu-check demo-device-check

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) data

data:
	@PY=$(PY) bash scripts/install-data.sh

demo: setup
	$(PY) -m locktune demo

# `make test`: every test but those marked `slow` (under 15 minutes on a 2-core CPU), with its 15 slowest listed
# so that a test growing past a minute shows and can be marked.  `make test-slow`: the `slow` ones (several
# processes, whole ablation grids, wheel installs, soaks); CI runs both, one after the other.
test: setup
	$(PY) -m pytest -m "not slow" --durations=15 tests

test-slow: setup
	$(PY) -m pytest -m slow --durations=15 tests

# CI, after the tests: the demo end to end on the CPU and on the second device kind the tests use (fakegpu:
# CPU kernels behind a device that refuses misplaced tensors), shortened; their numbers must agree.  Through the
# gradient cache (train.chunk_size): its dropout masks are seeded per (step, row) on both generators, which on
# fakegpu is the CPU's algorithm, so both runs draw the same masks; the unchunked step draws MiniLM's dropout
# from each device's own running stream, and a CPU and a device run then differ from the first loss.
DEVICE_CHECK := train.steps=60 train.chunk_size=32 eval.max_images_per_benchmark=300 eval.plots=false
demo-device-check: setup
	$(PY) -m locktune demo --device cpu $(DEVICE_CHECK) run_dir=runs/demo-check-cpu
	$(PY) -m locktune demo --device fakegpu $(DEVICE_CHECK) run_dir=runs/demo-check-fakegpu
	$(PY) scripts/compare_results.py runs/demo-check-cpu/results.json runs/demo-check-fakegpu/results.json --tolerance 0.01

# The paper's findings on the built-in data -> RESULTS.md: every design-2 grid of configs/studies/, in this order
# (later grids reuse the records of identical runs in earlier ones).  Each grid's minutes on this 2-core CPU, as
# the sum of its runs' own timings (RESULTS.md prints each): round 3, 2026-12-05/06: towers-r3 124 (49.6 re-timed on a faster host),
# towers-scratch 62, text-locked 66, text-towers 51, image-towers 23, head-r3 20, loss-batch 69, multilingual-r3 74,
# schedules-r3 33 (an afternoon the host ran 2x faster); before round 3, 2026-11-29: towers-v2 0 after towers-r3
# (66 alone), equal-compute 41, data-size 64, loss-v2 82, beyond-lit 64: 771 minutes (12.8 hours) in all.
# Finished arms are kept, so a killed run continues where it stopped.  `make study` runs the design-2
# tower-settings study alone (docs/studies/towers-v2.md).
STUDIES := towers_r3 towers_scratch text_locked text_towers image_towers head loss_batch multilingual schedules towers equal_compute data_size loss beyond_lit
results: setup
	$(PY) -m locktune ablate $(foreach g,$(STUDIES),studies/$(g).yaml) --results RESULTS.md
study: setup
	$(PY) -m locktune ablate studies/towers.yaml
# RESULTS.md rewritten from the records, no training: the grids with records under OUT (e.g. a study just run
# with --out runs/studies) and, for the others, the records committed in results/.
OUT ?= runs/studies
report: setup
	$(PY) -m locktune ablate --report-only --out $(OUT) $(foreach g,$(STUDIES),studies/$(g).yaml) --results RESULTS.md

# On a bare GPU machine (torch with CUDA installed, no network; run benchmarks/gpu_wheels.sh beforehand where PyPI
# is reachable): installs the fetched wheels, runs the `cuda` tests and the GPU benchmarks, writes
# results/gpu-check/<time>/gpu_check.json and gpu_check.log, all within 8 minutes.  GPU_CHECK_ALLOW_CPU=1: the same
# on CPU with tiny sizes (a smoke run).  GPU_CHECK_ARGS=--out-dir DIR to choose the folder.
gpu-check:
	timeout -k 10 480 $(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .cache runs
