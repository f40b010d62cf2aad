# The README's two commands: `make demo` and `make test`. Both only need Python 3.11, git and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CHECKOV_VENV := $(VENV)/checkov
# uv's version is pinned once, in requirements-services.in (and so in the lock files).
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.lock)
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
# The dataset copy beside the project (CI, this workplace) wins over the UCI download when present.
SHARED_ZIP := $(abspath ../shared/data/dataset_diabetes.zip)
ifeq ($(origin HEALTH_PREDICT_RAW_DATA), undefined)
ifneq ($(wildcard $(SHARED_ZIP)),)
export HEALTH_PREDICT_RAW_DATA := $(SHARED_ZIP)
endif
endif

.PHONY: setup demo test test-fast lint lock clean-local images

setup: $(STAMP)

# checkov pins packaging<24 while ray needs >=24.2, so it gets its own venv inside .venv.
$(STAMP): requirements.lock requirements-checkov.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(BIN)/uv pip sync --quiet --python $(CHECKOV_VENV)/bin/python requirements-checkov.lock
	touch $(STAMP)

# The whole pipeline on the embedded defaults: local data folder, SQLite MLflow store.
demo: setup
	$(BIN)/mlflow run . -e main --env-manager local

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The edit-test loop: everything but the tests marked slow (training, servers, Airflow runs).
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

# Every image (base, services, and the champion's serving image when a champion exists); only
# what changed is rebuilt (content-addressed tags). See steps/deployment/images.py.
images: setup
	$(BIN)/python -m steps.images

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-resolves the pinned lock files from requirements*.in (the services set at the same versions;
# xgboost's GPU-only NCCL stays out of the CPU services image).
lock: setup
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements-services.in \
	  -c requirements.lock --no-emit-package nvidia-nccl-cu12 -o requirements-services.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements-checkov.in -o requirements-checkov.lock

# Removes the local stores that `make demo` creates.
clean-local:
	rm -rf data mlflow.db mlartifacts build airflow_home
