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
DENO_FLAGS := --allow-net --allow-env --allow-read --allow-write --allow-sys

.PHONY: help run test test-deno test-bun lint fmt check build build-deno clean

help:
	@echo "make run      start the server on :8181 (SQLite under ./data, prints a dev token)"
	@echo "make test     run the whole suite (fmt, lint, type check, tests on Deno and Bun)"
	@echo "make build    compile dist/deno-pusher with bun build --compile"
	@echo "make bench    quick side-by-side benchmark"

$(TOOLS_BIN)/deno:
	npm install --no-audit --no-fund --prefix .tools deno@$(DENO_VERSION)

$(TOOLS_BIN)/bun:
	npm install --no-audit --no-fund --prefix .tools bun@$(BUN_VERSION)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: $(DENO) $(BUN) node_modules/.installed

run: deps
	$(DENO) run $(DENO_FLAGS) main.ts $(ARGS)

lint: deps
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check **/*.ts *.ts

fmt: deps
	$(DENO) fmt

test-deno: deps
	$(DENO) test $(DENO_FLAGS) --allow-run 2>&1 | tee .tools/test-deno.log

test-bun: deps
	$(BUN) test 2>&1 | tee .tools/test-bun.log

test: lint test-deno test-bun
	@deno_line=$$(grep -E '^(ok|FAILED) \|' .tools/test-deno.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g'); \
	bun_pass=$$(grep -E '^ *[0-9]+ pass' .tools/test-bun.log | tail -1 | awk '{print $$1}'); \
	bun_fail=$$(grep -E '^ *[0-9]+ fail' .tools/test-bun.log | tail -1 | awk '{print $$1}'); \
	deno_pass=$$(echo "$$deno_line" | sed -E 's/.*\| ([0-9]+) passed.*/\1/'); \
	deno_fail=$$(echo "$$deno_line" | sed -E 's/.*\| ([0-9]+) failed.*/\1/'); \
	echo "deno: $$deno_pass passed, $$deno_fail failed; bun: $$bun_pass passed, $$bun_fail failed"; \
	echo "$$((deno_pass + bun_pass)) passed, $$((deno_fail + bun_fail)) failed"

build: deps
	$(BUN) build --compile --minify --sourcemap main.ts --outfile dist/deno-pusher

build-deno: deps
	$(DENO) compile $(DENO_FLAGS) --output dist/deno-pusher-deno main.ts

clean:
	rm -rf dist .tools node_modules

-include bench/bench.mk
