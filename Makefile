# Two entry points: `make app` (the main job) and `make test` (the suite). Both create .venv
# and install what they need on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# The torch builds this workplace's machines install from local disk, by architecture.
ifeq ($(shell uname -m),aarch64)
TORCH ?= "torch==2.9.1" "torchvision==0.24.1"
else
TORCH ?= "torch==2.14.1" "torchvision==0.29.1"
endif

.PHONY: app test lint bench install clean bundled-model

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(VENV)/bin/pneumo app

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# Reproduce the bundled model (about 75 minutes on 2 cores); nothing selected on the test split.
PNEUMO_DATA ?= ../shared/data/chest_xray
bundled-model: $(STAMP)
	$(VENV)/bin/pneumo train --mode finetune --backbone tf_efficientnet_lite0 --epochs 8 \
		--lr 0.0001 --class-balance sampler --data $(PNEUMO_DATA) --output runs/lite0-lpft
	$(VENV)/bin/pneumo train --mode finetune --backbone tf_efficientnet_lite0 --epochs 8 \
		--lr 0.0001 --class-balance sampler --seed 1 --split-seed 0 \
		--start-weights runs/lite0-lpft/checkpoints/start.safetensors \
		--data $(PNEUMO_DATA) --output runs/lite0-lpft-s1
	$(VENV)/bin/pneumo variants runs/lite0-lpft --soup runs/lite0-lpft-s1
	$(VENV)/bin/pneumo variants runs/lite0-lpft --soup runs/lite0-lpft-s1 \
		--export "uniform soup of 2 runs (EMA weights)"
	$(VENV)/bin/pneumo bundle runs/lite0-lpft --dest models/default
