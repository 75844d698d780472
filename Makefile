# Quick start: `make demo` (install, run every sample drop through the graph) and `make test`.
# Everything is installed into .venv; state lives under data/ (ignored by git).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TINY_CLIP := data/models/tiny-clip.pt
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

# CLIP weights: CLIP_MODEL if set; else the official ViT-B/32 if it is in clip's cache; else the repo's
# tiny checkpoint (trained locally in about a minute), because ViT-B/32 cannot be downloaded offline.
export CLIP_MODEL ?= $(if $(wildcard $(HOME)/.cache/clip/ViT-B-32.pt),ViT-B/32,$(CURDIR)/$(TINY_CLIP))

# The tests start their own PostgreSQL cluster (Debian package), Milvus server (pip package `milvus`), S3 and
# GCS servers (pip packages `moto[server]`, `gcp-storage-emulator`), and drive Chromium (Debian packages).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo ui serve test test-fast test-servers clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(TINY_CLIP): | install
	$(BIN)/drop-studio make-checkpoint --out $@

demo: install $(if $(filter $(CURDIR)/$(TINY_CLIP),$(CLIP_MODEL)),$(TINY_CLIP))
	@echo "CLIP_MODEL=$(CLIP_MODEL)"
	$(BIN)/drop-studio run
	@echo; echo '== a search by name: drop-studio search martini --top-k 3'
	@$(BIN)/drop-studio search martini --top-k 3
	@echo; echo '== a search by SKU: drop-studio search SG-312 --top-k 3'
	@$(BIN)/drop-studio search SG-312 --top-k 3
	@echo; echo '== filtered by category: drop-studio search "a red apple" --category apples --top-k 3'
	@$(BIN)/drop-studio search "a red apple" --category apples --top-k 3
	@echo
	@echo "Open the Dagster UI on these runs:  make ui   (then http://127.0.0.1:3000)"
	@echo "Search the pictures in a browser:   make serve   (then http://127.0.0.1:8787)"

ui: install
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

serve: install
	$(BIN)/drop-studio serve

test-servers:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (Debian package postgresql) for the Dagster-on-PostgreSQL test"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing Chromium and its driver (Debian packages chromium, chromium-driver) for the search page test"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Three workers, a test file to each at a time: module-scoped servers (Milvus, PostgreSQL, S3, the page) stay
# in one worker; most tests wait on processes they started, so on 2 cores a third worker still gains (10 min
# against 12 on two).
test: install test-servers
	$(BIN)/python -m pytest -n 3 --dist loadfile

# The rules, in about 2.5 minutes on 2 cores: every test but those that start a server, `dagster dev` or a
# browser (marked `services`) and the six that kill a run or build a world over several models or releases
# (marked `slow`); `make test` runs them all. Three workers (on 2 cores a third uses the time the others wait on
# Milvus Lite, Gemini's test server and subprocesses); a worker that runs out of tests takes some of another's
# (`worksteal`), and the tests that took longest last time go out first (tests/conftest.py).
test-fast: install
	$(BIN)/python -m pytest -n 3 --dist worksteal -m "not services and not slow"

clean:
	rm -rf data/artifacts data/milvus.db data/milvus.db.lock data/milvus-campaigns.db data/milvus-campaigns.db.lock data/milvus*.db.shared.json data/dagster_home data/publish
