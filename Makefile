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

# --- sim (l3 simulate) ---
.PHONY: demo evaluate

demo: ## Main job: simulate the embedded hotel-reservation scenario with every policy (no cluster needed)
	$(CARGO) run --locked --release --quiet -- simulate --scenario hotel-reservation

evaluate: ## Every built-in scenario x every policy x 3 seeds -> docs/evaluation.md (the sim bench runs in `make bench`)
	$(CARGO) build --locked --release --quiet
	time $(CARGO) run --locked --release --quiet -- simulate --evaluate --seeds 3 > docs/evaluation.md.tmp
	mv docs/evaluation.md.tmp docs/evaluation.md
