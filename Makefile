# Two commands for a newcomer: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck pytest bench soak system-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Debian's mosquitto is the broker the tests and the demo start privately on loopback.
system-deps:
	@if [ ! -x /usr/sbin/mosquitto ]; then \
		echo "installing Debian's mosquitto"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	fi

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

pytest: venv system-deps
	$(BIN)/pytest -n 4

test: system-deps venv lint typecheck pytest

demo: system-deps venv
	$(BIN)/stimd demo

bench: system-deps venv
	$(BIN)/python -m bench

soak: system-deps venv
	$(BIN)/pytest --soak -m soak

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
