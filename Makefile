# Code Actions. `make run` serves on embedded defaults; `make test` runs lint, types and the suite.
# Each target installs what it needs: virtual environments, packages, and Go, Node, iptables and
# ffmpeg (user code's pydub needs it, as in the original image) when missing; `make test` also
# installs Debian's Chromium for the browser test.

PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v python3)
VENV := .venv
RUNTIME := .venv-runtime
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: run test lint typecheck pytest bench deps toolchains browser clean

run: deps
	$(VENV)/bin/codeactions serve

test: deps browser lint typecheck pytest

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: deps
	$(VENV)/bin/mypy

pytest: deps browser
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser test of /docs (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { $(APT) update -q && $(APT) install -y -q chromium; }

bench: deps
	$(VENV)/bin/python bench/bench_runner.py
	$(VENV)/bin/python bench/bench_http.py

deps: $(VENV)/.installed $(RUNTIME)/.installed toolchains

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# User Python code runs on its own interpreter with the original image's libraries.
$(RUNTIME)/.installed: runtime/requirements.txt
	test -x $(RUNTIME)/bin/python || $(PYTHON) -m venv $(RUNTIME)
	$(RUNTIME)/bin/pip install -q --disable-pip-version-check -r runtime/requirements.txt
	touch $@

toolchains:
	@command -v go >/dev/null || command -v /usr/lib/go/bin/go >/dev/null || \
		{ $(APT) update -q && $(APT) install -y -q golang-go; }
	@command -v node >/dev/null || { $(APT) update -q && $(APT) install -y -q nodejs; }
	@command -v iptables >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ $(APT) update -q && $(APT) install -y -q iptables; } || true
	@command -v ffmpeg >/dev/null || { $(APT) update -q && $(APT) install -y -q ffmpeg; }

clean:
	rm -rf $(VENV) $(RUNTIME) .mypy_cache .pytest_cache .ruff_cache
