# lkserver: `make run` starts a development server, `make test` runs every test.
# Both set up what they need on a fresh machine (venv, Python and npm packages, Debian packages).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
SYS_STAMP := .lkserver-sysdeps

.PHONY: run test install node-deps system-deps agents-deps bench lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

run: install
	$(VENV)/bin/lkserver serve --dev

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_STAMP)

system-deps:
	./scripts/install-system-deps.sh

# the agents tests' own venv (tests/agents/requirements-agents.txt): built here, with the network,
# because the suite runs in a network namespace that has none
agents-deps: install
	$(PY) tests/agents/agentsfix.py

# the suite runs in a private network namespace: WebRTC clients need a non-loopback interface
# (scripts/in-netns.sh); everything else is unaffected by it. Two lanes at once (realtime and
# the rest), then the shaped-link tests alone (scripts/run-tests.sh); PYTEST_ARGS go to each.
test: install node-deps system-deps agents-deps
	./scripts/in-netns.sh ./scripts/run-tests.sh $(PY) -q -ra $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache
