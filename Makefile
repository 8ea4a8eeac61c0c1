# Two entry points (README): `make book` builds the book, `make test` runs every check.
# Both create .venv and install everything on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
# Everything the library caches (the embedded backbone, embeddings, the embedded grid) stays inside the checkout,
# so a fresh clone builds from nothing and `make clean-cache` starts over.
export SAE_TUTORIAL_CACHE ?= $(CURDIR)/.cache/sae_tutorial
export MPLBACKEND ?= Agg

.PHONY: install book test bench clean clean-cache system vendor-js home student colab-rehearsal gpu-check test-order

install: $(STAMP)

# The pip on these machines warns about every index it skips: keep the log readable.
$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip install -q -r requirements-dev.txt -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

# `make book` re-executes every notebook and rebuilds every page (an incremental build would keep outputs made
# by older library code). MPLBACKEND is unset for it: with Agg the kernels would drop every figure.
# It prints each notebook's execution time (from myst-nb's log, kept in _build/book.log) and the total.
BOOK_STAMP := _build/.book-built
BOOK_SOURCES := _config.yml _toc.yml $(shell find book notebooks sae_tutorial -type f ! -name '*.pyc')

book: system
	@rm -f $(BOOK_STAMP)
	@$(MAKE) --no-print-directory $(BOOK_STAMP)

# `make test` rebuilds the book only when a source is newer than the last successful build.
# Chapter 4 reads the embedded grid's results: `reproduce` runs first, cached by the grid's config hash under
# $$SAE_TUTORIAL_CACHE/reproduce/ (a rerun with an unchanged grid only reads the table back).
$(BOOK_STAMP): $(STAMP) $(BOOK_SOURCES)
	@mkdir -p _build; start=$$(date +%s); \
	$(PY) -m sae_tutorial reproduce --preset embedded --jobs 2 --no-progress > _build/reproduce.log 2>&1 \
	  || { tail -n 30 _build/reproduce.log; exit 1; }; \
	grid=$$(date +%s); echo "reproduce (embedded grid, cached): $$(( grid - start )) s"; \
	env -u MPLBACKEND $(VENV)/bin/jupyter-book build . -W -n --keep-going --all 2>&1 | tee _build/book.log; \
	echo "notebooks executed (seconds):"; \
	sed -n 's|^$(CURDIR)/\(.*\): Executed notebook in \([0-9.]*\) seconds.*|  \2  \1|p' _build/book.log; \
	echo "book built in $$(( $$(date +%s) - start )) s"
	@touch $@

test: $(STAMP) system $(BOOK_STAMP)
	$(PY) -m pytest tests
	@$(MAKE) --no-print-directory colab-rehearsal

# Order independence: the suite once in a random order (pytest-randomly, its seed printed) and once in reverse
# (pytest-reverse). Not part of `make test`; both plugins are installed on demand and removed afterwards, so the
# ordinary runs keep their file order.
test-order: $(STAMP) system $(BOOK_STAMP)
	$(PY) -m pip install -q pytest-randomly pytest-reverse
	$(PY) -m pytest tests -p randomly -p no:reverse || { $(PY) -m pip uninstall -q -y pytest-randomly pytest-reverse; exit 1; }
	$(PY) -m pytest tests -p no:randomly --reverse || { $(PY) -m pip uninstall -q -y pytest-randomly pytest-reverse; exit 1; }
	$(PY) -m pip uninstall -q -y pytest-randomly pytest-reverse

# Part of `make test`, after pytest: every chapter's colab-mode cells, executed offline on the CPU in a fresh venv
# that holds only torch, torchvision and ipykernel (hard-linked from .venv, no second download) plus the chapters'
# own install line (pointed at this checkout): sae_tutorial/rehearsal.py. The one knob, SAE_TUTORIAL_SHRINK
# (st.book.shrink), divides the chapters' sizes. The embedded default's caches are hard-linked from the book build's
# cache when it has them. Report: _build/colab-rehearsal/report.md.
REHEARSAL_SHRINK ?= 8
colab-rehearsal: $(STAMP)
	$(PY) -m sae_tutorial.rehearsal --shrink $(REHEARSAL_SHRINK) \
	  $(if $(wildcard $(SAE_TUTORIAL_CACHE)/embeddings),--seed-cache $(SAE_TUTORIAL_CACHE))

# On a lent GPU machine (no network, no .venv: its own python3 holds torch): benchmarks/gpu_check.py, ≤ 8 minutes.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) benchmarks/gpu_check.py

# Debian packages the checks need, installed when missing (as root; otherwise a hint): chromium for
# tests/test_book.py, dataset-fashion-mnist for the embedded default (offline Fashion-MNIST).
DEBIAN_PACKAGES := chromium dataset-fashion-mnist
system:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "make system: not root (or no apt-get), not installing:" $$missing; \
	  echo "  install them with: sudo apt-get install" $$missing; fi

# book/static/ holds, committed, the front-end code the book serves itself so that pages render offline: the
# ipywidgets renderer, its AMD loader and MathJax (myst-nb and Sphinx would load them from CDNs). This target
# refreshes them from the npm registry at these versions; modern browsers need only the woff2 icon fonts.
NPM_PACKAGES := @jupyter-widgets/html-manager@1.0.15 requirejs@2.3.8 mathjax@3.2.2
vendor-js:
	rm -rf book/static/widgets book/static/mathjax
	mkdir -p book/static/widgets book/static/mathjax
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; cd $$tmp; \
	for package in $(NPM_PACKAGES); do \
	  mkdir -p $${package%@*}; tar xzf "$$(npm pack --silent $$package)" -C $${package%@*} --strip-components=1; \
	done; \
	cp @jupyter-widgets/html-manager/dist/{embed-amd.js,*.woff2} requirejs/require.js $(CURDIR)/book/static/widgets/; \
	cd mathjax/es5 && cp --parents tex-mml-chtml.js output/chtml/fonts/woff-v2/* input/tex/extensions/*.js \
	  $(CURDIR)/book/static/mathjax/

# The project's home is `repository:` in _config.yml; this rewrites every install line, Colab link and badge from it.
home: $(STAMP)
	$(PY) -m sae_tutorial.home

# The student notebooks (student/*.ipynb: every exercise's answer a stub) and their solutions
# (student/solutions/*.md), generated from the chapters' cells tagged `exercise` (sae_tutorial/course.py). They are
# committed, so that their Colab links work; tests/test_course.py fails when they are out of date.
student: $(STAMP)
	$(PY) -m sae_tutorial.course

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_embed.py

clean:
	rm -rf _build .pytest_cache

clean-cache:
	rm -rf .cache/sae_tutorial
