# Two entry points: `make app` (the main job) and `make test` (the suite). Both create .venv
# and install what they need on first use: `make app` only what serving needs (no torch: the
# model ships its ONNX graph), `make test` the rest on top (torch, training, test tools).
VENV ?= .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.installed-app
DEV_STAMP := $(VENV)/.installed-dev
# Not --quiet: a first install takes minutes, and pip's "Collecting ..." lines show it moving.
PIP := $(PY) -m pip install --disable-pip-version-check
# The torch builds this workplace's machines install from local disk, by architecture.
ifeq ($(shell uname -m),aarch64)
TORCH ?= "torch==2.9.1" "torchvision==0.24.1"
else
TORCH ?= "torch==2.14.1" "torchvision==0.29.1"
endif

.PHONY: app test lint bench install clean bundled-model

# Serving: the web app, OpenVINO and ONNX Runtime (the core dependencies), no torch.
$(APP_STAMP): pyproject.toml
	@echo "==> [1/2] virtual environment $(VENV)"
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "==> [2/2] pneumo with the web app and the OpenVINO engine (no torch: serving runs the shipped ONNX graph)"
	$(PIP) -e ".[app,openvino]"
	touch $(APP_STAMP)
	@echo "==> installed in $(VENV) ($$(du -sh $(VENV) | cut -f1)); later runs skip this until pyproject.toml changes"

# Everything: torch first (the build TORCH names), then every extra and the test tools. It
# holds all the app needs, so it marks the app's part installed too.
$(DEV_STAMP): pyproject.toml
	@echo "==> [1/3] virtual environment $(VENV)"
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "==> [2/3] torch (the largest part: a few minutes on a first install)"
	$(PIP) $(TORCH)
	@echo "==> [3/3] pneumo with every extra: training, OpenVINO, Ray, Streamlit, test tools"
	$(PIP) -e ".[dev]"
	touch $(DEV_STAMP) $(APP_STAMP)
	@echo "==> installed in $(VENV) ($$(du -sh $(VENV) | cut -f1)); later runs skip this until pyproject.toml changes"

install: $(DEV_STAMP)

app: $(APP_STAMP)
	$(VENV)/bin/pneumo app

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest

bench: $(DEV_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# Reproduce the bundled model from its recipe, configs/bundled-lite2.toml (issue 17's: zero head,
# trained batch norm, EMA, operating point at 97% validation sensitivity; about 75 minutes on 2
# cores, 45 with BUNDLED_BACKBONE=tf_efficientnet_lite0); nothing selected on the test split.
PNEUMO_DATA ?= ../shared/data/chest_xray
BUNDLED_BACKBONE ?= tf_efficientnet_lite2
bundled-model: $(DEV_STAMP)
	$(VENV)/bin/pneumo train --config configs/bundled-lite2.toml --backbone $(BUNDLED_BACKBONE) \
		--data $(PNEUMO_DATA) --output runs/bundled-$(BUNDLED_BACKBONE)
	$(VENV)/bin/pneumo variants runs/bundled-$(BUNDLED_BACKBONE)
	$(VENV)/bin/pneumo bundle runs/bundled-$(BUNDLED_BACKBONE) --dest models/default
