# Two commands for a fresh machine:  make run  (the offline demo)  and  make test  (everything).
# Each creates .venv and installs what is missing first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run serve test lint typecheck unit browser-deps nginx-deps redis-deps systemd-deps bench clean screenshots

run: $(STAMP)
	$(BIN)/feedstream demo

serve: $(STAMP)
	$(BIN)/feedstream serve --config feeds.example.toml

test: $(STAMP) browser-deps nginx-deps redis-deps systemd-deps lint typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not browser"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright never downloads a browser here).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

# Debian's nginx for tests/test_nginx.py, which runs docs/nginx.conf in front of the server.
nginx-deps:
	@{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx-light >/dev/null; }

# Debian's redis-server for the Redis log backend's tests (tests/log/test_redis.py and the
# contract), each test running its own on a free loopback port, persistence off.
redis-deps:
	@{ command -v redis-server || test -x /usr/bin/redis-server; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# systemd-analyze for tests/cli/test_service_unit.py, which verifies docs/feedstream.service
# (only the tool is used: nothing is started). Where systemd cannot be installed, that test
# says so and skips.
systemd-deps:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null \
	  || echo "systemd-deps: could not install systemd; the unit's verification will be skipped"; }

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Regenerate docs/screenshot-{light,dark}.png with the real server and Debian's Chromium.
screenshots: $(STAMP) browser-deps
	FEEDSTREAM_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser/test_screenshots.py
