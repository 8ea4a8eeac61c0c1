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
export MPLBACKEND ?= Agg

.PHONY: install book test bench clean

install: $(STAMP)

# The pip on these machines warns about every index it skips: keep the log readable.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip install -q -r requirements-dev.txt -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

book: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . -W -n --keep-going; \
	echo "book built in $$(( $$(date +%s) - start )) s"

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf _build .pytest_cache
