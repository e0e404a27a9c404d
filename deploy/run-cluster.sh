#!/usr/bin/env bash
# `make run-cluster`: a local cluster to try deno-pusher's REDIS_URL with. Starts redis-server
# (from PATH) on REDIS_PORT and three nodes on 8181, 8182 and 8183 that share one JWT_SECRET and
# that Redis, prints a token and the lines to try it, and stops everything on Ctrl-C (or
# `make stop-cluster` from another shell). State: ./data/cluster/ (Redis's append-only file, each
# node's data directory and log, the shared secret, the pids).
# Usage: deploy/run-cluster.sh <deno>, from the repository's root. The environment may move it:
# REDIS_PORT (6390), CLUSTER_PORTS ("8181 8182 8183"), CLUSTER_DIR (data/cluster).
set -euo pipefail
DENO=${1:?usage: run-cluster.sh <deno>}
REDIS_PORT=${REDIS_PORT:-6390}
read -r -a PORTS <<<"${CLUSTER_PORTS:-8181 8182 8183}"
DIR=${CLUSTER_DIR:-data/cluster}
mkdir -p "$DIR"

if ! command -v redis-server >/dev/null; then
  echo "run-cluster: redis-server is not on PATH; install it (Debian: apt-get install redis-server)" >&2
  exit 1
fi
if [ ! -s "$DIR/jwt-secret" ]; then
  "$DENO" eval 'console.log(crypto.randomUUID().replaceAll("-", "") + crypto.randomUUID().replaceAll("-", ""))' >"$DIR/jwt-secret"
  chmod 600 "$DIR/jwt-secret"
fi
export JWT_SECRET; JWT_SECRET=$(cat "$DIR/jwt-secret")
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export EXAMPLES=${EXAMPLES:-true}

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run-cluster: stopping the nodes and Redis"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$DIR/pids"
}
trap stop INT TERM EXIT

# Redis with appendonly and fsync every second: a send answered 200 survives Redis's restart
# (README: Cluster on Redis).
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$(cd "$DIR" && pwd)" --appendonly yes \
  --appendfsync everysec --save '' >"$DIR/redis.log" 2>&1 &
pids+=($!)
for port in "${PORTS[@]}"; do
  "$DENO" run --allow-all main.ts --port "$port" --node-name "node-$port" \
    --data-dir "$DIR/node-$port" >"$DIR/node-$port.log" 2>&1 &
  pids+=($!)
done
echo "${pids[*]}" >"$DIR/pids"

for port in "${PORTS[@]}"; do
  for _ in $(seq 1 300); do
    if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then continue 2; fi
    sleep 0.1
  done
  echo "run-cluster: node on $port is not ready after 30 s; its log, $DIR/node-$port.log:" >&2
  tail -20 "$DIR/node-$port.log" >&2
  exit 1
done

token=$("$DENO" run --allow-all main.ts token --uid 123 --ttl 24h)
p0=${PORTS[0]} p1=${PORTS[1]} p2=${PORTS[2]}
cat <<INFO
deno-pusher cluster: ${#PORTS[@]} nodes on Redis $REDIS_URL (logs and data in $DIR/)
$(for port in "${PORTS[@]}"; do echo "  node-$port  http://localhost:$port"; done)
JWT_SECRET (shared by the nodes) is in $DIR/jwt-secret. Token for uid 123, valid 24 hours:
  $token
Connect to one node (in a browser's console on http://localhost:$p0/):
  const ws = new WebSocket("ws://localhost:$p0/ws?token=$token"); ws.onmessage = (e) => console.log(e.data);
Send through another, and count from a third:
  curl "http://localhost:$p1/send?uid=123&message=Hello"
  curl "http://localhost:$p2/api/uids/count"
Stop all of it with Ctrl-C here, or \`make stop-cluster\` from another shell.
INFO
wait -n "${pids[@]}" || true
echo "run-cluster: a node or Redis ended (stopped, or see $DIR/*.log)" >&2
