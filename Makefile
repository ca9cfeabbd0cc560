# IsoEdge: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint setup-demo setup-test bench bench-ingest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# System packages (apt-get, when missing and we are root): the demo needs a broker; the tests
# also need Chromium (web console end-to-end test), systemd-analyze (unit file checks),
# PostgreSQL for the central ingest (its tests, and `make demo DEMO_ARGS=--fleet`),
# pdftotext/pdftoppm (poppler-utils: the QC report tests read the PDFs) and fuse3 (libfuse3 for
# the power-cut and slow-disk file system of the fault tests).
setup-demo: $(STAMP)
	@bash .ci/system-packages.sh mosquitto $(if $(findstring --fleet,$(DEMO_ARGS)),postgresql)

setup-test: $(STAMP)
	@bash .ci/system-packages.sh mosquitto chromium systemd postgresql poppler-utils fuse3

demo: setup-demo
	$(VENV)/bin/isoedge demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check agent drivers simulators central tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) .ci/i18n_catalogs.py check

# The suite runs in parallel (pytest-xdist), three workers per core: much of it waits on
# subprocesses, brokers and servers rather than computing (docs/benchmarks.md: 2-core runs with
# 4, 6 and 8 workers). Every test has its own free ports,
# temporary directories and PostgreSQL database; tests sharing an expensive module fixture
# carry an `xdist_group` mark and run on one worker (--dist loadgroup). PYTEST_WORKERS=0:
# serially; PYTEST_WORKERS=auto: one per core.
PYTEST_WORKERS ?= $(shell echo $$(( 3 * $$(nproc 2>/dev/null || echo 1) )))
test: setup-test lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: setup-demo
	$(PY) bench/throughput.py

bench-ingest: $(STAMP)
	@bash .ci/system-packages.sh mosquitto postgresql
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .isoedge-demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
