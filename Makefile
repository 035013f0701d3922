# Two commands set up and run everything on a fresh machine with only Python 3.10+:
#   make book   build the book (chapters executed in quick mode) into _build/html
#   make test   run every test: package tests, every notebook (nbval), the book build, the
#               browser check of the built pages (installs Debian's chromium if missing), the
#               student edition (no solution in it) and the PDF (every chapter in it)
# Both create .venv on first use. If the Python you start from already has a torch
# (a CUDA build, say), the venv sees it and keeps it; otherwise pip installs $(TORCH),
# first from a wheel it finds without any index (pip's configured find-links; torch's own
# dependencies then come with the package), else from $(TORCH_INDEX): PyTorch's CPU-only
# wheels, because torch from PyPI on Linux pulls gigabytes of CUDA libraries. A CUDA build:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu126   (or TORCH_INDEX= for PyPI's)
# on a new .venv (rm -rf .venv first), or start from a Python that has one: make PYTHON=...
#   make book EDITION=student   the student edition: exercises without solutions (_build/student/)
#   make student-check          build it and check that it holds no solution
#   make pdf                    the whole book as one PDF (_build/pdf/book.pdf)
#   make figures                every figure of the last build as PNG, per chapter (_build/figures/)
#   make student-notebooks      chapters with exercises as TODO cells (_build/student-notebooks/)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
EDITION ?= instructor
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Chapters always run at quick scale here; widgets render as static figures
# (a built page has no kernel behind it); headless plotting.
RUN_ENV = SPECTRAL_LAB_MODE=quick SPECTRAL_LAB_STATIC=1 MPLBACKEND=Agg PYTHONHASHSEED=0

.PHONY: book test browser-check browser-deps install clean pdf figures student-notebooks \
        student-check

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
	$(PY) -c "import torch" 2>/dev/null \
	  || $(PY) -m pip install --quiet --no-index --no-deps "$(TORCH)" 2>/dev/null \
	  || $(PY) -m pip install --quiet --timeout 20 --retries 1 \
	       $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[book,test]"
	@touch $@

# The execution cache is keyed by run mode and by the package's contents (tools/book_config.py);
# both editions share it. SEED: a folder of notebooks nbval has just executed, put into that cache
# first (see conftest.py). The instructor edition goes to _build/html, the student edition (no
# solutions) to _build/student/_build/html.
BOOK_OUT = $(if $(filter student,$(EDITION)),--path-output _build/student,)
SEED ?=
book: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going $(BOOK_OUT) \
	  --config "$$($(RUN_ENV) $(PY) tools/book_config.py --edition $(EDITION) \
	  $(if $(SEED),--seed-cache $(SEED)))"

# The whole book on one HTML page (the same execution cache), printed by headless Chromium.
pdf: $(STAMP) browser-deps
	$(RUN_ENV) $(VENV)/bin/jupyter-book build . --builder singlehtml \
	  -W -n --keep-going --config "$$($(RUN_ENV) $(PY) tools/book_config.py --edition $(EDITION))"
	$(PY) tools/book_pdf.py _build/singlehtml/index.html _build/pdf/book.pdf
	SE_OFFLINE=true $(PY) -m pytest -m browser tests/test_browser.py -k pdf

# The student edition, and the check that it holds no solution (needs `make book` for the
# instructor edition it is compared with).
student-check: $(STAMP)
	$(MAKE) --no-print-directory book EDITION=student
	$(PY) -m pytest -m browser tests/test_browser.py -k student_edition

figures: $(STAMP)
	$(PY) tools/figure_pack.py _build/html _build/figures

student-notebooks: $(STAMP)
	$(PY) tools/student_notebooks.py _build/student-notebooks

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
	$(MAKE) --no-print-directory student-check
	$(MAKE) --no-print-directory pdf

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
	rm -rf _build build
