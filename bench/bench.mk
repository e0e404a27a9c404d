# Benchmarks (issues 6, 13 and 16). Included by the top-level Makefile; uses its $(DENO), $(BUN)
# and `deps`. Eleven peers (deno-pusher stripped and in its default configuration on Deno and as the
# Bun executable, both Deno ceilings, both Bun ceilings, Go, Node ws, Socket.IO), each run 3 times,
# interleaved, a fresh process each time. `make bench` is the quick pass: one run takes about 25 s
# on a quiet 2-core machine (up to twice that when the cores are busy), so the 33 runs take about
# 12-17 minutes (bounded at 30); it prints the markdown tables. Then it runs the cluster scenario
# (below, about 9 minutes) and prints its tables too, rewriting no docs: about 25 minutes in all.
# `make bench-full` runs every scenario at up to 19,000 connections (about 110 s a run) and the
# 10-minute soak of each deno-pusher peer, about 100 minutes (bounded at 150), then the cluster
# scenario, and rewrites both sections of docs/BENCHMARKS.md: about 2 hours in all. Without
# redis-server on PATH both skip the cluster scenario with a SKIP line and succeed.
# Results: bench/results/latest-<profile>.{json,md,svg} and latest-cluster.{json,md}. BENCH_ARGS
# passes extra flags to run.ts, e.g. BENCH_ARGS='--peers ceiling,go' to run some peers only,
# '--repeats 1' for one pass; CLUSTER_ARGS adds flags to the cluster step's (see bench-cluster);
# BENCH_CLUSTER=0 leaves the cluster step out (default 1: it runs).

.PHONY: bench bench-full bench-deps

bench/node_modules/.installed: bench/package.json bench/package-lock.json
	npm ci --no-audit --no-fund --prefix bench
	@touch $@

# The peers' own dependencies (ws, socket.io) and the compiled executable when the server exists.
bench-deps: deps bench/node_modules/.installed
	@if [ -f main.ts ]; then $(MAKE) --no-print-directory build; \
	else echo "bench: main.ts missing, deno-pusher peers will be skipped"; fi

bench: bench-cluster-setting bench-deps
	nice -n 5 $(DENO) run --allow-all bench/run.ts --profile quick --bun $(BUN) --deno $(DENO) $(BENCH_ARGS)
	$(call cluster_step,$(CLUSTER_ARGS))

bench-full: bench-cluster-setting bench-deps
	nice -n 5 $(DENO) run --allow-all bench/run.ts --profile full --bun $(BUN) --deno $(DENO) --docs $(BENCH_ARGS)
	$(call cluster_step,--docs $(CLUSTER_ARGS))

# The cluster scenario as the last step of `make bench` and `make bench-full`, with the flags in
# $(1); dist/deno-pusher is built by bench-deps. Without redis-server on PATH it says so loudly and
# succeeds, so that the rest of the bench still stands. BENCH_CLUSTER=0 leaves it out; any value
# other than 0 or 1 is refused before anything runs.
BENCH_CLUSTER ?= 1
.PHONY: bench-cluster-setting
bench-cluster-setting:
	@case "$(BENCH_CLUSTER)" in 0|1) ;; *) echo "BENCH_CLUSTER must be 0 (leave the cluster \
	scenario out) or 1 (run it), not '$(BENCH_CLUSTER)'" >&2; exit 2;; esac
define cluster_step
@if [ "$(BENCH_CLUSTER)" = 0 ]; then \
  echo "cluster scenario left out (BENCH_CLUSTER=0)"; \
elif command -v redis-server >/dev/null; then \
  set -x; nice -n 5 $(DENO) run --allow-all bench/cluster.ts --bun $(BUN) $(1); \
else \
  echo; echo "**************************************************************************"; \
  echo "SKIP: cluster scenario: redis-server not on PATH (apt-get install redis-server)"; \
  echo "**************************************************************************"; echo; \
fi
endef

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
# with Redis's CPU. Both in deno-pusher's default configuration (its Redis with appendonly yes,
# appendfsync everysec, as a production one) and in the stripped one (its Redis without
# persistence): 3 repeats of the 4 (configuration × topology) pairs, 12 runs of about 40 s, so
# about 9 minutes on a quiet machine, bounded by --deadline-min (40). Standalone it writes
# bench/results/latest-cluster.{md,json} and the Cluster section of docs/BENCHMARKS.md. CLUSTER_ARGS
# replaces that --docs with other flags, e.g. CLUSTER_ARGS='--per-node 1000 --single 1000
# --repeats 1 --rounds 5 --rate-ms 1000 --label dev' for a short run (4 runs, under a minute) that
# leaves the docs alone, or '--configs default' for one configuration only.
CLUSTER_ARGS ?=
.PHONY: bench-cluster
bench-cluster: deps
	@$(MAKE) --no-print-directory build
	nice -n 5 $(DENO) run --allow-all bench/cluster.ts --bun $(BUN) $(if $(CLUSTER_ARGS),$(CLUSTER_ARGS),--docs)

# What one node keeps per connection with REDIS_URL and without (bench/heap.ts): the server in a
# Bun process asked for a full collection and its heap by object type, 17,000 connections, the
# default and the stripped configuration. About 20 s; needs redis-server; prints its tables
# and writes nothing. HEAP_ARGS adds flags, e.g. HEAP_ARGS='--conns 5000 --configs default'.
HEAP_ARGS ?=
.PHONY: bench-heap
bench-heap: bench-deps
	nice -n 5 $(DENO) run --allow-all bench/heap.ts --bun $(BUN) --configs default,stripped $(HEAP_ARGS)
