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

# Reproduce the bundled model (issue 17's recipe: zero head, trained batch norm, EMA, operating
# point at 97% validation sensitivity; about 45 minutes on 2 cores); nothing selected on the test split.
PNEUMO_DATA ?= ../shared/data/chest_xray
BUNDLED_BACKBONE ?= tf_efficientnet_lite0
bundled-model: $(STAMP)
	$(VENV)/bin/pneumo train --mode finetune --backbone $(BUNDLED_BACKBONE) --epochs 8 \
		--lr 0.0001 --head-init zero --train-bn --seed 0 --split-seed 0 \
		--data $(PNEUMO_DATA) --output runs/bundled-$(BUNDLED_BACKBONE)
	$(VENV)/bin/pneumo variants runs/bundled-$(BUNDLED_BACKBONE)
	$(VENV)/bin/pneumo bundle runs/bundled-$(BUNDLED_BACKBONE) --dest models/default
