# Benchmarks (issues 6 and 16). Included by the top-level Makefile; uses its $(DENO), $(BUN) and
# `deps`. Ten peers (deno-pusher stripped and in its default configuration on Deno and as the Bun
# executable, the Deno ceiling, both Bun ceilings, Go, Node ws, Socket.IO), each run 3 times,
# interleaved, a fresh process each time. `make bench` is the quick pass: one run takes about 25 s
# on a quiet 2-core machine (up to twice that when the cores are busy), so the 30 runs take about
# 12 minutes (bounded at 30); it prints the markdown tables. `make bench-full` runs every scenario
# at up to 19,000 connections (about 110 s a run) and the 10-minute soak of each deno-pusher peer,
# about 100 minutes in all (bounded at 150), and rewrites the tables in docs/BENCHMARKS.md.
# Results: bench/results/latest-<profile>.{json,md,svg}. BENCH_ARGS passes extra flags to run.ts,
# e.g. BENCH_ARGS='--peers ceiling,go' to run some peers only, '--repeats 1' for one pass. `make
# bench-cluster` is issue 13's cluster scenario (three nodes and Redis against one node, about 5
# minutes; see below).

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

# The load-generator check: deno-pusher (stripped, on both runtimes) and the Go hub run with the
# default load generators (socket holders of <= 5,000 sockets and one /send caller) and, right
# after, with about twice as many processes (<= 2,500 sockets each, two callers sharing the same 64
# calls in flight). If the load generators were the limit, the second shape would move the numbers.
# Each shape runs twice (2 repeats), in turns, and the medians are compared. About 5 minutes.
# Writes bench/results/latest-quick-loadgen-check.{md,json} and its section of docs/BENCHMARKS.md.
LOADGEN_CHECK_ARGS ?= --peers 'deno-pusher (Deno),deno-pusher (Bun exe),go' --levels 10000 \
  --rounds 30 --rates 8000,0 --rate-ms 3000
.PHONY: bench-loadgen-check
bench-loadgen-check: bench-deps
	nice -n 5 $(DENO) run --allow-all bench/run.ts --profile quick --bun $(BUN) --deno $(DENO) \
	  --shapes 5000:1,2500:2 --repeats 2 --label loadgen-check --docs $(LOADGEN_CHECK_ARGS)

# The cluster scenario (issue 13 §5, bench/cluster.ts): three dist/deno-pusher nodes sharing one
# redis-server (from PATH; `apt-get install redis-server`) with 17,000 connections each, against
# one node alone with 19,000, same executable and flags; broadcast fan-out and closed-loop /send,
# with Redis's CPU, in 3 interleaved repeats. About 5 minutes, bounded by --deadline-min (40).
# Writes bench/results/latest-cluster.{md,json} and the Cluster section of docs/BENCHMARKS.md.
# CLUSTER_ARGS passes extra flags, e.g. CLUSTER_ARGS='--per-node 1000 --single 1000 --repeats 1
# --rounds 5 --rate-ms 1000 --label dev' for a short run that leaves the docs alone.
CLUSTER_ARGS ?=
.PHONY: bench-cluster
bench-cluster: deps
	@$(MAKE) --no-print-directory build
	nice -n 5 $(DENO) run --allow-all bench/cluster.ts --bun $(BUN) $(if $(CLUSTER_ARGS),$(CLUSTER_ARGS),--docs)
