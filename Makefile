# Code Actions. `make run` serves on embedded defaults; `make test` runs lint, types and the suite.
# Each target installs what it needs: virtual environments, packages, and Go, Node, iptables and
# ffmpeg (user code's pydub needs it, as in the original image) when missing, and the console's
# npm packages (locked) to build it; `make test` also installs Debian's Chromium for the browser tests.

PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v python3)
VENV := .venv
RUNTIME := .venv-runtime
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: run test lint typecheck pytest bench deps toolchains browser console screenshots clean

run: deps console
	$(VENV)/bin/codeactions serve

test: deps browser console lint typecheck pytest

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: deps
	$(VENV)/bin/mypy

pytest: deps browser console
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser tests of /docs and /console (Playwright drives it; no browser
# download).
browser:
	@command -v chromium >/dev/null || { $(APT) update -q && $(APT) install -y -q chromium; }

# Pictures of the console's pages, from a service seeded with sample codes, runs and secrets.
screenshots: deps browser console
	$(VENV)/bin/python bench/console_screenshots.py

bench: deps
	$(VENV)/bin/python bench/bench_runner.py
	$(VENV)/bin/python bench/bench_http.py

# The console (console/): npm packages from the lock file, a strict type check, and a Vite build into
# the package, which serves it at /console. Rebuilt only when its sources change.
CONSOLE_DIST := src/codeactions/console/dist/index.html
CONSOLE_SOURCES := $(shell find console/src -type f 2>/dev/null) console/index.html \
	console/vite.config.ts console/tsconfig.json

console: $(CONSOLE_DIST)

$(CONSOLE_DIST): console/node_modules/.installed $(CONSOLE_SOURCES)
	cd console && node_modules/.bin/tsc --noEmit && node_modules/.bin/vite build --logLevel warn

console/node_modules/.installed: console/package.json console/package-lock.json | toolchains
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

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
	rm -rf $(VENV) $(RUNTIME) .mypy_cache .pytest_cache .ruff_cache console/node_modules \
		src/codeactions/console/dist
