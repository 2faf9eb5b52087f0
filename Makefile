# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the package metadata changes (idempotent).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python sweeps/loss_weights.py

# Two tests at a time (pytest-xdist): Ray, Train and Tune leave a core idle half the time while they start
# processes and poll. The few tests that take over the machine's Ray (`serial`) run alone afterwards.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25 -m "not serial" tests
	$(BIN)/python -m pytest -q -m serial tests

# The edit loop: unit tests only (no Ray cluster, no S3 server, no sweep), about 2 minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/superfan bench models
	$(BIN)/superfan bench data
	$(BIN)/superfan bench train
	$(BIN)/superfan bench enhance

clean:
	rm -rf $(VENV) .superfan .pytest_cache
