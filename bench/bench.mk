# Benchmarks (issue 6). Included by the top-level Makefile; uses its $(DENO), $(BUN) and `deps`.
# `make bench` is the quick pass (< 5 min, prints a markdown table); `make bench-full` runs every
# scenario, including the 10-minute soak, and rewrites the tables in docs/BENCHMARKS.md.
# Results: bench/results/latest-<profile>.{json,md,svg}. BENCH_ARGS passes extra flags to run.ts,
# e.g. BENCH_ARGS='--peers ceiling,go' to run some peers only.

.PHONY: bench bench-full bench-deps

bench/node_modules/.installed: bench/package.json bench/package-lock.json
	npm ci --no-audit --no-fund --prefix bench
	@touch $@

# The peers' own dependencies (ws, socket.io) and the compiled executable when the server exists.
bench-deps: deps bench/node_modules/.installed
	@if [ -f main.ts ]; then $(MAKE) --no-print-directory build; \
	else echo "bench: main.ts missing, deno-pusher peers will be skipped"; fi

bench: bench-deps
	nice -n 5 $(DENO) run --allow-all bench/run.ts --profile quick --bun $(BUN) --deno $(DENO) $(BENCH_ARGS)

bench-full: bench-deps
	nice -n 5 $(DENO) run --allow-all bench/run.ts --profile full --bun $(BUN) --deno $(DENO) --docs $(BENCH_ARGS)
