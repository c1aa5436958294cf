# vae-sweeps: `make demo` and `make test` work on a fresh machine with Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

# torch: a CPU build where no NVIDIA GPU is visible (small, fast to install), the default
# CUDA build otherwise. Override either, e.g. `make TORCH=torch==2.13.0 TORCH_INDEX=URL`.
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_GPU),yes)
TORCH ?= torch>=2.4
else
TORCH ?= torch==2.13.0
endif
TORCH_INDEX ?=
# postgres: the tests run the local engine on a real PostgreSQL server too.
# dashboard: optuna-dashboard for `make dashboard` (and its test).
EXTRAS ?= dev,mni152,postgres,dashboard

.PHONY: install lint format test demo dashboard bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/shellcheck run_agent.sh .ci/run bench/gpu_check.sh slurm/sweep.sbatch

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest

demo: install
	WANDB_MODE=offline ./run_agent.sh --local sweeps/smoke.yaml --agents 2
	$(BIN)/python -m analysis report outputs/wandb --out reports/smoke

# A local sweep's storage in optuna-dashboard (history, importance, timeline), read live.
# optuna-dashboard takes a journal as its bare file path: journal:PATH loses its prefix.
STORAGE ?= $(or $(SWEEPER_STORAGE),sqlite:///outputs/sweeps.db)
DASHBOARD_PORT ?= 8080
dashboard: install
	$(BIN)/optuna-dashboard "$(patsubst journal:%,%,$(STORAGE))" --host 127.0.0.1 --port $(DASHBOARD_PORT)

bench: install
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/trial_overhead.py
	$(BIN)/python bench/analysis_scale.py
	$(BIN)/python bench/search_quality.py --keep outputs/bench/search_quality_table.json
	$(BIN)/python bench/data_stream.py
	$(BIN)/python bench/data_cache.py
	$(BIN)/python bench/claim_latency.py

clean:
	rm -rf outputs reports logs
