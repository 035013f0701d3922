# Two commands set up and run everything on a fresh machine with only Python 3.10+:
#   make book   build the book (chapters executed in quick mode) into _build/html
#   make test   run every test: package tests, every notebook (nbval), the book build, and
#               the browser check of the built pages (installs Debian's chromium if missing)
# Both create .venv on first use. If the Python you start from already has a torch
# (a CUDA build, say), the venv sees it and keeps it; otherwise torch is pinned to
# the CPU-friendly $(TORCH) so that pip does not pull gigabytes of CUDA packages.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Chapters always run at quick scale here; widgets render as static figures
# (a built page has no kernel behind it); headless plotting.
RUN_ENV = SPECTRAL_LAB_MODE=quick SPECTRAL_LAB_STATIC=1 MPLBACKEND=Agg PYTHONHASHSEED=0

.PHONY: book test browser-check browser-deps install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "Using the torch of $(PYTHON) (venv with system site packages)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[book,test]"
	@touch $@

# The execution cache is keyed by run mode and by the package's contents (tools/book_config.py).
# SEED: a folder of notebooks nbval has just executed, put into that cache first (see conftest.py).
SEED ?=
book: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going \
	  --config "$$($(RUN_ENV) $(PY) tools/book_config.py $(if $(SEED),--seed-cache $(SEED)))"

# Lint and format check first (seconds); then the package tests and every notebook, spread over
# the machine's cores (one file per worker, so a notebook's cells share one kernel); nbval keeps
# what it executed, so the book build renders the chapters without executing them again.
EXECUTED = _build/nbval
test: $(STAMP) browser-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	rm -rf $(EXECUTED)
	$(RUN_ENV) SPECTRAL_LAB_KEEP_EXECUTED=$(EXECUTED) $(PY) -m pytest -n auto --dist loadfile
	$(MAKE) --no-print-directory book SEED=$(EXECUTED)
	$(MAKE) --no-print-directory browser-check

# Every page of the built book in headless Chromium: title, figures, no error cells; screenshots
# in _build/screenshots/ (CI artifacts). Chromium comes from Debian's packages, installed here
# when missing (as root), since a browser cannot come from PyPI without a download.
browser-check: $(STAMP) browser-deps
	SE_OFFLINE=true $(PY) -m pytest -m browser tests/test_browser.py

browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium and chromium-driver for the browser check"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "The browser check needs Debian's chromium and chromium-driver:" \
	         "sudo apt-get install chromium chromium-driver" >&2; \
	    exit 1; \
	  fi; \
	fi

clean:
	rm -rf _build
