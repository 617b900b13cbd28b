# The README's two commands. Both bootstrap .venv from pyproject.toml on a fresh
# machine (Python >= 3.11 and make are all that is needed).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test lint bench venv browser

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x "$(PY)" ]; then \
		for candidate in $${PYTHON:-} python3.13 python3.12 python3.11 python3; do \
			if command -v "$$candidate" >/dev/null 2>&1 && "$$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
				echo "agentflow | creating $(VENV) with $$candidate"; \
				"$$candidate" -m venv $(VENV); break; \
			fi; \
		done; \
		[ -x "$(PY)" ] || { echo "agentflow | Python >= 3.11 is required"; exit 1; }; \
	fi; \
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip; \
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,quality]'; \
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

run: $(STAMP)
	@$(PY) -m agentflow.server.run

test: $(STAMP) browser
	@$(PY) -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

# The browser tests drive the system's Chromium (never a browser Playwright downloads).
# As root on Debian/Ubuntu it is installed once; otherwise those tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "agentflow | installing Chromium for the browser tests (apt-get, once)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			>/tmp/agentflow-chromium-install.log 2>&1 \
			|| echo "agentflow | Chromium install failed (see /tmp/agentflow-chromium-install.log); browser tests will skip"; \
	fi

# Exactly the gates `make test` runs (tests/test_tooling.py): ruff check, ruff format --check,
# lint-imports, mypy and the 80-line function limit. No Django or services are needed.
lint: $(STAMP)
	@$(PY) -m pytest -q -p no:django -p no:cacheprovider tests/test_tooling.py

bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,quality,bench]'
	$(PY) bench/kernel_overhead.py
