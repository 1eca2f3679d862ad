# Quickstart:  make demo   (set up, then dub generated sample videos with the tiny preset on a local Ray)
#              make test   (set up, then run the whole test suite; it prints the 15 slowest tests)
#              make test-fast (the tests not marked slow, for the inner loop: under 3 minutes)
#              make lint   (ruff lint and format check, import-linter contracts)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-fast lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	command -v ffmpeg >/dev/null || ($(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y ffmpeg)
	command -v chromedriver >/dev/null || ($(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver)  # the report's browser test
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test,lint]'
	touch $@

demo: setup
	$(PY) -m jobs.make_tiny_models --output models/tiny
	$(PY) -m jobs.make_samples --output samples
	$(PY) -m jobs.dub --input samples --output out --config configs/tiny.yaml

test: setup  # two test processes (pytest-xdist), each file's tests in one, the longest files first (conftest.py)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

test-fast: setup
	$(PY) -m pytest -q --durations=15 -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
