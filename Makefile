# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install, run the guided walkthrough of every stage (headless: a screenshot per stage + summary.json/md in demo_output/)
#   make test   create .venv if needed, run the whole suite headless (Xvfb)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libgl1 libegl1 libxkbcommon-x11-0 \
            libxcb-cursor0 libfontconfig1 libdbus-1-3 libxcb-image0 libxcb-render-util0 \
            libxcb-shape0 libxcb-randr0 libxcb-xinerama0 libxcb-xkb1 libglib2.0-0

.PHONY: demo test venv sysdeps lint bench-quick docs-figures clean cryodrgn-venv

venv: $(STAMP)

# torch first (the CPU wheel on this machine), then everything else under a constraints
# file that pins torch, so no dependency can pull a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[gui,testing]"
	touch $(STAMP)

# Debian packages headless napari needs (Xvfb + xcb/GL libraries); installed only when
# something is missing and we are root.
sysdeps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null; \
	  else echo "warning: missing Debian packages (not root, not installing):$$missing"; fi; \
	fi

test: $(STAMP) sysdeps
	$(PY) -m pytest -p xvfb tests

demo: $(STAMP) sysdeps
	$(VENV)/bin/cryohet demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

# The GUI benchmarks (embedding_interaction, gui_responsiveness) need a display: without
# one, every benchmark runs under xvfb-run. Files starting with _ are shared helpers.
bench-quick: $(STAMP) sysdeps
	@mkdir -p benchmarks/results
	@run=""; if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ]; then run="xvfb-run -a"; fi; \
	for b in benchmarks/[!_]*.py; do echo "== $$b"; \
	  $$run $(PY) $$b --quick --json benchmarks/results/$$(basename $$b .py)-quick.json || exit 1; done

# Regenerates every screenshot in docs/ (under Xvfb when no display).
docs-figures: $(STAMP) sysdeps
	$(PY) docs/make_figures.py

# cryoDRGN 4.3.x in its own venv (benchmarks/vae_vs_cryodrgn.py), torch pinned to ours:
# torch first, then cryodrgn under the same constraints file.
CRYODRGN_VENV := .venv-cryodrgn
cryodrgn-venv: $(CRYODRGN_VENV)/.installed

$(CRYODRGN_VENV)/.installed: constraints.txt
	$(PYTHON) -m venv $(CRYODRGN_VENV)
	$(CRYODRGN_VENV)/bin/python -m pip install -q --upgrade pip
	$(CRYODRGN_VENV)/bin/python -m pip install -q torch==2.13.0
	$(CRYODRGN_VENV)/bin/python -m pip install -q -c constraints.txt "cryodrgn==4.3.*"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache build dist
