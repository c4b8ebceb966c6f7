# kitap — two commands on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SUDO    := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test chaos bench lint clean

setup: $(STAMP) system-packages

# The virtualenv is rebuilt when pyproject.toml (the pinned dependencies) changes.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Mosquitto from the OS packages when it is missing (the demo and the tests run
# their own broker on a free port, never the system one on 1883).
system-packages:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
		echo "installing mosquitto from the OS packages"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto; \
	fi
	@# Chromium for the browser tests: Playwright drives the OS's own (its browser
	@# download needs the internet, which a build machine or a branch may not have).
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium from the OS packages"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; \
	fi

# `make demo` runs until Ctrl-C; `make demo DURATION=30` stops by itself with a summary.
demo: setup
	$(BIN)/kitap demo $(if $(DURATION),--duration $(DURATION))

test: setup
	$(BIN)/pytest -m "not slow" -q $(PYTEST_ARGS)

# The long chaos run (`make test` runs a bounded one); CHAOS_SECONDS to change it.
CHAOS_SECONDS ?= 600
chaos: setup
	$(BIN)/kitap chaos --duration $(CHAOS_SECONDS)

# The figures against their targets (docs/performance.md): the city at 1/20 in a
# minute or two; `make bench FULL=1` at full size (about half an hour).
bench: setup
	$(BIN)/python -m bench.run $(if $(FULL),--full)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy protocol

clean:
	rm -rf $(VENV) .demo .pytest_cache *.egg-info
