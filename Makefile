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

# --- operator ---------------------------------------------------------------------------------
.PHONY: crds
crds: ## Regenerate crds/ from the Rust types (`l3 crdgen`)
	$(CARGO) run --locked --quiet -- crdgen > crds/latencypolicies.l3.dev.yaml
