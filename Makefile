# Everything a fresh machine needs comes from here: Python 3.11+, make and the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SEEDS ?= 20000
JOBS ?= 2

.PHONY: test dev bench soak proto clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests --ignore=tests/bench

bench: $(STAMP)
	$(PY) -m pytest -q tests/bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds

soak: $(STAMP)
	$(PY) -m tests.sim.soak --seeds $(SEEDS) --jobs $(JOBS)

proto: $(STAMP)
	$(PY) -m client.pb._generate

dev: $(STAMP)
	$(PY) -m node.dev $(DEV_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
