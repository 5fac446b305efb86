# Healing Guard — the two commands a new user needs:
#   make demo   bring the whole mesh up on loopback and heal the sample failures end to end
#   make test   run the test suite (unit + integration with real etcd, Envoy and services)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all install gen up down status demo test unit integration test-reliability lint contracts bench clean model \
	real-ci-eval

all: test

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP) $(VENV)/bin/hg

# The operator's client: .venv/bin/hg runs bin/hg (python -m deploy.hg with this venv).
$(VENV)/bin/hg: bin/hg | $(STAMP)
	ln -sf ../../bin/hg $@

gen: $(STAMP)
	$(PY) scripts/generate_contracts.py

up: gen
	$(PY) -m deploy.mesh up

down:
	@if [ -x $(PY) ]; then $(PY) -m deploy.mesh down; else echo "nothing was running"; fi

status:
	@if [ -x $(PY) ]; then $(PY) -m deploy.mesh status; else echo "nothing is running"; fi

demo: up
	$(PY) -m deploy.heal_examples

test: gen
	$(PY) -m pytest -q

unit: gen
	$(PY) -m pytest -q tests/unit

integration: gen
	$(PY) -m pytest -q tests/integration tests/e2e

# Hostile input, killed processes, a full disk and a soak against a supervised mesh
# (tests/reliability; figures in bench/results/reliability.json). Budgets: FUZZ calls per
# RPC (200), SOAK_SECONDS (60). The long run: make test-reliability FUZZ=10000 SOAK_SECONDS=600
FUZZ ?= 200
SOAK_SECONDS ?= 60
test-reliability: gen
	FUZZ=$(FUZZ) SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q -s tests/reliability

# The detector's model artefact (services/detector/models/), trained on data/real_ci; committed.
model: $(STAMP)
	$(PY) -m bench.build_model

# Leave-one-source-out accuracy on real CI logs (bench/results/real_ci_eval.json).
real-ci-eval: $(STAMP)
	$(PY) data/real_ci/materialise_local.py
	$(PY) -m bench.real_ci_eval

lint: gen   # import-linter reads the generated healing_guard package
	$(VENV)/bin/ruff check .   # gate: every rule selected in pyproject.toml (E, F, W, I, B, UP)
	$(VENV)/bin/mypy           # gate: type hints in services/ (settings in pyproject.toml)
	$(VENV)/bin/lint-imports   # gate: the boundaries ([tool.importlinter] contracts in pyproject.toml)

contracts: $(STAMP)
	$(VENV)/bin/buf lint
	scripts/check_breaking.sh

clean: down
	rm -rf .run healing_guard
