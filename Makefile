# deno-pusher. `make run` starts the server, `make test` runs the whole suite.
# Deno and Bun are used from PATH when there; otherwise the pinned versions are installed with npm
# into .tools/ (npm is the only registry this needs).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

DENO_VERSION := 2.9.6
BUN_VERSION := 1.4.5
TOOLS_BIN := $(CURDIR)/.tools/node_modules/.bin
DENO ?= $(or $(shell command -v deno 2>/dev/null),$(TOOLS_BIN)/deno)
BUN ?= $(or $(shell command -v bun 2>/dev/null),$(TOOLS_BIN)/bun)
# --allow-all: Deno grants reading /proc/self/limits (the open-file limit that sets the default
# connection cap) to nothing less.
DENO_FLAGS := --allow-all

.PHONY: help deps run run-cluster stop-cluster sdk test test-deno test-bun test-bin lint fmt build build-deno clean

help:
	@echo "make run      start the server on :8181 (SQLite under ./data, prints a dev token)"
	@echo "make run-cluster  three nodes on 8181-8183 and a redis-server (REDIS_URL); Ctrl-C stops"
	@echo "make test     run the whole suite (fmt, lint, type check, tests on Deno and Bun)"
	@echo "make build    compile dist/deno-pusher with bun build --compile"
	@echo "make sdk      rebuild sdk/bundle.ts (what GET /sdk/deno-pusher.js serves) from sdk/client.ts"
	@echo "make bench    quick side-by-side benchmark, then the cluster scenario (~25 minutes)"
	@echo "             (BENCH_CLUSTER=0: without the cluster scenario, ~15 minutes)"

$(TOOLS_BIN)/deno:
	@mkdir -p .tools
	npm install --no-audit --no-fund --prefix .tools deno@$(DENO_VERSION)

$(TOOLS_BIN)/bun:
	@mkdir -p .tools
	npm install --no-audit --no-fund --prefix .tools bun@$(BUN_VERSION)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: $(DENO) $(BUN) node_modules/.installed

run: deps
	EXAMPLES=$${EXAMPLES:-true} $(DENO) run $(DENO_FLAGS) main.ts $(ARGS)

# The browser build of the client SDK, embedded in sdk/bundle.ts (sdk/build.ts says more); the
# suite fails (sdk/bundle_test.ts) when sdk/client.ts changed and this was not run.
sdk: deps
	$(DENO) run --allow-all sdk/build.ts $(BUN)

# A local cluster: redis-server from PATH and three nodes (deploy/run-cluster.sh says more).
run-cluster: deps
	deploy/run-cluster.sh $(DENO)

stop-cluster:
	@if [ -f data/cluster/pids ]; then kill $$(cat data/cluster/pids) 2>/dev/null || true; 	  rm -f data/cluster/pids; echo "stopped"; else echo "no cluster is running"; fi

lint: deps
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check

fmt: deps
	$(DENO) fmt

# Each suite's log goes to .tools/ so that `make test` can end with one "N passed, N failed" line.
# Tests run with --allow-all: they spawn the server and Chromium, which reads /proc.
test-deno: deps
	$(DENO) test --allow-all 2>&1 | tee .tools/test-deno.log

# DENO: the README's Deno webhook verifier is run with it (the pinned one may not be on PATH).
test-bun: deps
	DENO=$(DENO) $(BUN) test --timeout 60000 2>&1 | tee .tools/test-bun.log

# The black-box suites (e2e*_test.ts) against the compiled executable.
test-bin: build
	DENO_PUSHER_BIN=dist/deno-pusher $(DENO) test --allow-all e2e*_test.ts 2>&1 \
	  | tee .tools/test-bin.log

test:
	@mkdir -p .tools
	@rc=0; for t in lint test-deno test-bun test-bin; do $(MAKE) --no-print-directory $$t || rc=1; done; \
	strip() { sed 's/\x1b\[[0-9;]*m//g' "$$1" 2>/dev/null; }; \
	p=0; f=0; \
	for log in .tools/test-deno.log .tools/test-bin.log; do \
	  line=$$(strip $$log | grep -E '^(ok|FAILED) \|' | tail -1); \
	  p=$$((p + $$(echo "$$line" | sed -nE 's/.*\| ([0-9]+) passed.*/\1/p' | grep . || echo 0))); \
	  f=$$((f + $$(echo "$$line" | sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' | grep . || echo 0))); \
	done; \
	p=$$((p + $$(strip .tools/test-bun.log | sed -nE 's/^ *([0-9]+) pass$$/\1/p' | tail -1 | grep . || echo 0))); \
	f=$$((f + $$(strip .tools/test-bun.log | sed -nE 's/^ *([0-9]+) fail$$/\1/p' | tail -1 | grep . || echo 0))); \
	if [ $$rc -ne 0 ] && [ $$f -eq 0 ]; then f=1; echo "a step failed before its tests ran (see above)"; fi; \
	echo "$$p passed, $$f failed"; \
	exit $$rc

build: deps
	$(BUN) build --compile --minify --sourcemap main.ts sqlite_checkpointer.ts --outfile dist/deno-pusher

build-deno: deps
	$(DENO) compile $(DENO_FLAGS) --output dist/deno-pusher-deno main.ts

clean:
	rm -rf dist .tools node_modules

-include bench/bench.mk
