# Two entry points for a fresh machine: `make demo` and `make test`.
# Each one creates .venv and installs what it needs by itself.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test pins lint typecheck pytest venv clean owui-smoke services owui-lib

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes (the stamp carries its hash).
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m orpipe.bench run demo

# Our ranges must accept Open WebUI 0.12.4's pinned versions (resolve only, install nothing).
pins: $(STAMP)
	$(PY) -m pip install --quiet --dry-run --ignore-installed \
		-c tests/owui-0.12.4-pins.txt '.[bench]'

lint: $(STAMP)
	$(VENV)/bin/ruff check engine actors adapters bench tests

# mypy cannot follow setuptools' editable import hook, so it reads the package
# through links laid out as it is installed: .typecheck/orpipe/engine -> engine/, ...
typecheck: $(STAMP)
	mkdir -p .typecheck/orpipe
	for d in engine actors adapters bench; do ln -sfn ../../$$d .typecheck/orpipe/$$d; done
	$(VENV)/bin/mypy

# PostgreSQL and redis-server for the persistence tests (installed or started if missing).
services:
	bash tests/services.sh

# Open WebUI 0.12.4's own file, user and storage code for the intake tests: the wheel
# without its dependencies (torch and the RAG stack are not needed), then the pinned
# subset those modules import.
OWUI_STAMP := $(VENV)/.owui-lib-$(shell cat tests/owui-storage-requirements.txt | sha1sum | cut -c1-12)
$(OWUI_STAMP): $(STAMP) tests/owui-storage-requirements.txt
	$(PY) -m pip install --quiet --no-deps open-webui==0.12.4
	$(PY) -m pip install --quiet -r tests/owui-storage-requirements.txt
	rm -f $(VENV)/.owui-lib-*
	touch $(OWUI_STAMP)

owui-lib: $(OWUI_STAMP)

pytest: $(STAMP) $(OWUI_STAMP) services
	$(PY) -m pytest

test: pins lint typecheck pytest

# By hand, not in CI: the Function inside a real Open WebUI 0.12.4, in a virtualenv
# outside the repository (OWUI_VENV=... to choose where; created on first use).
OWUI_VENV ?= $(HOME)/.cache/orpipe-owui-venv
owui-smoke: $(STAMP)
	$(PY) -m orpipe.bench.owui_smoke --venv $(OWUI_VENV)
	$(PY) -m orpipe.bench.owui_smoke --venv $(OWUI_VENV) --workers 2

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache .hypothesis
