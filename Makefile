# incident-harness: reproduce Kubernetes incidents on local kind clusters, keep them fixed.
# `make` (or `make help`) lists the targets.

SHELL := bash
.DEFAULT_GOAL := help
PY ?= python3
# CLUSTER: empty = the profile's own cluster (faithful: incident-harness, fast: incident-harness-fast).
# The suite runs on the fast profile (the plugin's default); cluster, reproduce and doctor on PROFILE.
CLUSTER ?=
PROFILE ?= faithful
SCENARIO ?= scenarios/arm64-on-amd64.yaml
PYTEST_ARGS ?=
# pytest-xdist workers, all on the one shared cluster (a namespace per test; see harness.plugin).
# Measured on 2 cores (tests/e2e/test_outcomes_e2e.py + test_verdicts.py, 18 tests, fast profile):
# load average about 3: serial 298 s, -n 2 177 s, -n 4 148 s; load 10-30 from other work:
# serial 306 s, -n 2 221 s, -n 4 216 s.
JOBS ?= 4
ifneq ($(CLUSTER),)
export HARNESS_CLUSTER := $(CLUSTER)
endif

.PHONY: help setup node-image node-image-if-needed cluster test test-unit test-e2e reproduce doctor lint bench soak clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'
	@echo "  variables: CLUSTER=$(or $(CLUSTER),(the profile's)) PROFILE=$(PROFILE) JOBS=$(JOBS) SCENARIO=$(SCENARIO) PY=$(PY)"

setup: ## install and start what is missing: Docker engine, kind, buildx, build tools, Python deps
	@hermetic/setup-host.sh
	@$(PY) -m pip install -q -e '.[dev]'

node-image: setup ## build the registry-free kind node image (Debian packages + Go modules; cached)
	$(PY) -m hermetic.node_image

node-image-if-needed: setup ## use kindest/node when a registry answers, else build the registry-free image
	@$(PY) -m hermetic.node_image --if-needed

cluster: node-image-if-needed ## create (or reuse) the kind cluster CLUSTER and print how to use kubectl with it
	$(PY) -m harness cluster create $(if $(CLUSTER),--name $(CLUSTER)) --profile $(PROFILE)

test: setup node-image-if-needed ## the whole suite: unit tests, e2e tests and every scenario file on a real kind cluster (kept)
	$(PY) -m pytest tests/unit tests/e2e scenarios --harness-keep-cluster --harness-strict-predictions -n $(JOBS) $(PYTEST_ARGS)

test-unit: ## unit tests only (no cluster, no Docker engine); two xdist workers: 35 s instead of 51 s on 2 cores
	$(PY) -m pytest tests/unit -q -n 2 $(PYTEST_ARGS)

test-e2e: setup node-image-if-needed ## e2e tests on a real kind cluster (created or reused, kept for reuse)
	$(PY) -m pytest tests/e2e scenarios --harness-keep-cluster -n $(JOBS) $(PYTEST_ARGS)

reproduce: setup node-image-if-needed ## reproduce SCENARIO end to end: incident, fix, verdict and reports
	$(PY) -m harness reproduce $(SCENARIO) --profile $(PROFILE) $(if $(CLUSTER),--cluster-name $(CLUSTER))

doctor: ## tools, engine, node platform, emulation state: can the incident reproduce here?
	$(PY) -m harness doctor --profile $(PROFILE) $(if $(CLUSTER),--cluster-name $(CLUSTER))

lint: ## ruff, ruff format --check, mypy --strict, actionlint
	scripts/lint.sh

bench: setup node-image-if-needed ## time to verdict against the floor and a naive baseline (table + JSON)
	$(PY) scripts/bench.py

soak: setup node-image-if-needed ## reliability: 20 runs in a row, interrupts, faults, gc
	$(PY) scripts/soak.py

clean: ## delete the harness's clusters, containers, images and caches (nothing else)
	$(PY) -m harness gc --all --yes
