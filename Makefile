# IsoEdge: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint setup mosquitto bench clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) mosquitto

# Installs mosquitto with apt-get when it is missing and we are root; otherwise says what to do.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = "0" ]; then \
		echo "installing mosquitto (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
		systemctl disable --now mosquitto >/dev/null 2>&1 || true; \
	else \
		echo "mosquitto is missing: run 'sudo apt-get install mosquitto' (or pass --broker to use another)"; \
	fi

demo: setup
	$(VENV)/bin/isoedge demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check agent drivers simulators tests bench
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .isoedge-demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
