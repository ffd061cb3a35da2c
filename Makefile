PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: serve test test-slow lint bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Run the broker on 5672 (AMQP) / 15672 (management) with data in ./data
serve: $(STAMP)
	$(VENV)/bin/smartbroker serve --data-dir ./data

## Run the test suite (in parallel on all cores); tests marked slow are left out
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadscope -q -m "not slow"

## The long runs marked slow (cluster partitions and --workers with Kafka)
test-slow: $(STAMP)
	$(PY) -m pytest -n auto --dist loadscope -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check smartbroker tests benchmarks

clean:
	rm -rf $(VENV) data build *.egg-info
