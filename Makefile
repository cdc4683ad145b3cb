# The two commands a new user needs: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs (torch first, pinned: the CPU wheel).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-venv

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[baselines,notebooks,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m interp patch --task ioi --json --out results/demo --overwrite
	@echo "Demo outputs (replaced on each run of make demo): results/demo/patch_ioi.{png,json} (exact grid), results/demo/patch_ioi_atp.{png,json} (attribution patching)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The suite runs on WORKERS processes (pytest-xdist), one core each (tests/conftest.py).
WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal

bench: $(STAMP)
	$(PY) bench/bench_dii.py
