# The two commands a new user runs: `make demo` (set up, prepare the bundled data, run the pipeline,
# say where to look) and `make test`. Everything installs into .venv from the pinned set.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: install demo results test lint lock bench server clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

demo: install
	mlflow run . -e prepare --env-manager local --experiment-name genre-digits
	mlflow run . -e baseline --env-manager local --experiment-name genre-digits -P model=rf
	mlflow run . -e baseline --env-manager local --experiment-name genre-digits -P model=svm
	mlflow run . -e train --env-manager local --experiment-name genre-digits
	mlflow run . -e tune --env-manager local --experiment-name genre-digits
	@echo
	@$(BIN)/genre demo-end --experiment genre-digits  # the UI address of the runs; predict with the train run's model

# The bundled-data suite (experiments/suites/digits.yaml) and its results page, docs/results.md.
results: install
	mlflow run . -e suite --env-manager local --experiment-name genre-suite-digits
	$(BIN)/genre report --experiment genre-suite-digits --output docs/results.md

# A local MLflow tracking server (SQLite + proxied artifacts) on http://127.0.0.1:5000.
server: install
	$(BIN)/genre server

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check genre tests benchmarks
	$(BIN)/ruff format --check genre tests benchmarks

# Speed and memory measurements (results in docs/benchmarks.md), in a venv of their own that adds PyTorch CPU
# for the throughput comparison (it also upgrades setuptools, which the main venv keeps pinned).
bench:
	test -d .venv-bench || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	.venv-bench/bin/python benchmarks/prepare.py
	.venv-bench/bin/python benchmarks/predict.py
	.venv-bench/bin/python benchmarks/serving.py
	.venv-bench/bin/python benchmarks/iterator_memory.py
	.venv-bench/bin/python benchmarks/train_throughput.py --wait-idle 120
	.venv-bench/bin/python benchmarks/finetune_speed.py --wait-idle 120
	.venv-bench/bin/python benchmarks/pruning.py --seeds 0,1,2,3,4
	.venv-bench/bin/python benchmarks/distributed.py

# Regenerate requirements.lock after changing a pin in pyproject.toml.
lock:
	rm -rf /tmp/genre-lock && $(PYTHON) -m venv /tmp/genre-lock
	/tmp/genre-lock/bin/python -m pip install --quiet '.[dev]'
	/tmp/genre-lock/bin/python -m pip freeze --exclude genre > requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info
