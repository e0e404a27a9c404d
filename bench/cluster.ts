/**
 * The cluster scenario (issue 13 §5): three deno-pusher nodes (the Bun executable) sharing one
 * redis-server on this machine, more than 50,000 WebSocket connections spread over them, against
 * one node alone at the 19,000 connections one process can hold here, in the same run; each in
 * deno-pusher's default configuration (what users run) and in its stripped one (the hub alone).
 *
 *   deno run -A bench/cluster.ts [--bun PATH] [--redis-server PATH] [--configs default,stripped]
 *     [--nodes 3] [--per-node 17000] [--single 19000] [--repeats 3] [--rounds 30]
 *     [--rate-ms 5000] [--deadline-min 40] [--label NAME] [--docs]
 *
 * Every run starts its processes fresh and stops them all before the next one starts: a cluster
 * run starts redis-server and the nodes with REDIS_URL, a single run one node without it. Within
 * one configuration (bench/peers.ts's PRODUCT_CONFIGS) both topologies run the same executable
 * with the same flags. The default configuration's Redis persists as a production one would
 * (REDIS_PERSISTENCE); the stripped one's keeps nothing. Every run measures:
 *
 * - broadcast fan-out: one `POST /api/broadcast` per round, made on each node in turn, timed until
 *   the last of all connections (every node's) has it; p50 and p99 over the rounds;
 * - /send throughput: closed-loop `GET /send?uid=` from one caller process per cluster node (in a
 *   single run they all call the one node), SEND_CONCURRENCY calls in flight together, each caller
 *   round-robin over every connected uid, so that in the cluster two calls in three name a uid
 *   another node holds.
 *
 * While each one runs, the CPU of the nodes, of Redis and of the whole machine is read from /proc.
 * In each repeat every (configuration × topology) pair runs back to back, and every other repeat
 * runs them in the reverse order, so that drift in the shared cores' load falls on all of them;
 * the report gives median (min–max) over the repeats. The load generators are bench/loadgen's,
 * each socket holder connected to one node only.
 *
 * The whole run stops itself at its deadline, and kills every process it started before it exits.
 * All traffic stays on 127.0.0.0/8.
 */
import { parseArgs } from "node:util";
import { exitWithin, LoadGen, MAX_SOCKETS_PER_LOADGEN } from "./loadgen/pool.ts";
import type {
  AwaitReply,
  CollectReply,
  ConnectReply,
  RateReply,
  SendReply,
} from "./loadgen/protocol.ts";
import {
  machineBusyMs,
  portFree,
  PRODUCT_CONFIGS,
  type ProductConfig,
  productPeer,
  type RunningPeer,
  start,
  treeCpuMs,
  treeRssBytes,
  updateDocs,
  version,
} from "./peers.ts";
import { MAX_CONNECTIONS_PER_PROCESS, PAYLOAD_BYTES } from "./profiles.ts";
import { clusterRunsTable, clusterTable } from "./report.ts";
import { SECRET, WARMUP_MS, WARMUP_RATE } from "./scenarios.ts";
import { type LatencySummary, quantile, summarize } from "./stats.ts";

/** First port tried for the nodes; above run.ts's range (18,181 + 200) so both can run at once. */
const NODE_BASE_PORT = 18_600;
/** First port tried for redis-server; away from its default 6379, which a dev Redis may hold. */
const REDIS_BASE_PORT = 16_379;
/** Ports tried past a base port before giving up. */
const PORT_TRIES = 200;

/** Handshakes in flight per socket holder: as scenarios.ts, well under somaxconn (4096). */
const CONNECT_CONCURRENCY = 128;
/**
 * Upper bound for opening a run's connections (ms). Three nodes and twelve holders share 2 cores;
 * at the 3,500-4,100 conn/s they reached together in the first full run, 51,000 took ~14 s.
 */
const CONNECT_TIMEOUT_MS = 180_000;
/** Pause after connecting before reading RSS (ms): a settle, as scenarios.ts's RSS_SETTLE_MS. */
const RSS_SETTLE_MS = 1_000;
/** A broadcast round not complete after this long counts its missing messages as lost (ms). */
const ROUND_TIMEOUT_MS = 10_000;
/**
 * Broadcasts sent before timing, until one reaches every connection: a node may register a socket
 * just after its 101, and a cluster node's subscription to Redis may come after its /healthz.
 */
const SYNC_ATTEMPTS = 5;
/** How long one sync broadcast may take to reach everyone before the next is tried (ms). */
const SYNC_ROUND_TIMEOUT_MS = 3_000;
/** /send calls in flight over all callers together: scenarios.ts's closed loop uses as many. */
const SEND_CONCURRENCY = 64;
/** How long receivers may lag behind the last answered /send of a run (ms). */
const SEND_TAIL_TIMEOUT_MS = 3_000;
/** How long redis-server may take to answer PING after it is spawned (ms). */
const REDIS_READY_TIMEOUT_MS = 10_000;
/** Interval between PINGs while redis-server starts (ms); it has no other readiness signal. */
const REDIS_PROBE_MS = 50;
/**
 * Time one cluster run needs at most (ms): start-up, 51,000 connects, the sync, 30 rounds, the
 * warm-up and the closed loop, and the stop, with room to spare (a run averaged about 40 s on a
 * quiet machine). A run that could not finish before the deadline is not started, so the results
 * so far are still written.
 */
const RUN_RESERVE_MS = 150_000;
/**
 * Default for --deadline-min: the whole run's bound (minutes). The 12 runs of a full run (3
 * repeats × 2 configurations × 2 topologies) take about 9 minutes on a quiet machine and up to
 * twice that with the cores busy; 40 leaves room for that twice over, and for every run to keep
 * its RUN_RESERVE_MS.
 */
const DEADLINE_MIN = 40;

/** Grace a node or Redis gets after SIGTERM before SIGKILL (ms); RunningPeer.stop's default. */
const STOP_GRACE_MS = 3_000;

/**
 * redis-server's persistence flags in each configuration's cluster runs. The default
 * configuration's Redis runs as a user's would in production: README's "Cluster on Redis" asks
 * for `appendonly yes` so that nothing answered 200 is lost across a Redis restart, with
 * `appendfsync everysec` (Redis's default, at most the last second lost in a crash of its
 * machine), as `make run-cluster` (deploy/run-cluster.sh) starts it. The stripped configuration
 * is the hub alone, measured as this scenario always measured it: its Redis persists nothing.
 */
export const REDIS_PERSISTENCE: Record<ProductConfig, string[]> = {
  default: ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
  stripped: ["--save", "", "--appendonly", "no"],
};

/** Uid prefix of the connections: each has its own uid, c0 … c<N-1>. */
const UID_PREFIX = "c";

const repo = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const resultsDir = `${repo}/bench/results`;

function log(s: string): void {
  console.error(s);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One of the two shapes compared: three nodes sharing Redis, or one node alone. */
export type Topology = "cluster" | "single";

/** The topologies, in the order a repeat runs them within one configuration (or its reverse). */
const TOPOLOGIES: Topology[] = ["cluster", "single"];

/** CPU time (ms) used during one measured stretch, by whom, and its wall time. */
export interface ClusterCpu {
  wallMs: number;
  /** Every node together. */
  nodesMs: number;
  /** The busiest single node: a node runs one JS thread, so near wallMs it is the limit. */
  busiestNodeMs: number;
  /** redis-server, utime + stime from /proc/<pid>/stat; 0 in a single run. */
  redisMs: number;
  /** Every load-generator process together (socket holders and callers). */
  loadgensMs: number;
  /** The whole machine, every process and the kernel (so other users of the cores too). */
  machineMs: number;
}

/** The timed broadcast rounds of one run. */
export interface ClusterFanout {
  rounds: number;
  /** Rounds in which every connection had the message before ROUND_TIMEOUT_MS. */
  complete: number;
  /** Messages missing from incomplete rounds, over all rounds. */
  lost: number;
  /** Time until the last connection of every node has it (ms), over complete rounds. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** p50 of the time until the last connection of the node the call was made on has it (ms). */
  originP50Ms: number;
  /** Mean time the broadcast call took to answer (ms). */
  answerMs: number;
  /** Calls answered other than 200, and the first such status and body. */
  failedCalls: number;
  failure?: string;
  /** CPU over all rounds together. */
  cpu: ClusterCpu;
}

/** The closed-loop /send run of one run. */
export interface ClusterSend {
  durationMs: number;
  issued: number;
  accepted: number;
  notFound: number;
  otherStatus: number;
  errors: number;
  /** Answered 200s per second over all callers. */
  achievedRate: number;
  /** Messages the receivers had within SEND_TAIL_TIMEOUT_MS of the last answer. */
  received: number;
  /** Send-to-receive latency of the received messages. */
  latency: LatencySummary;
  cpu: ClusterCpu;
  errorSample: string[];
}

/** One topology in one configuration, run once. */
export interface TopologyRun {
  /**
   * The nodes' configuration (bench/peers.ts's PRODUCT_CONFIGS). Absent in results from before
   * the default configuration ran here: those were all the stripped one.
   */
  config?: ProductConfig;
  topology: Topology;
  /** 1-based repeat it belongs to. */
  repeat: number;
  nodes: number;
  /** Connections asked of each node. */
  connectionsPerNode: number;
  connected: number;
  failed: number;
  connectErrors: string[];
  /** Handshakes per second over all nodes together. */
  connectPerSecond: number;
  /** Each node's (RSS after connecting − RSS at start) / its connections, averaged over nodes. */
  rssPerConnectionBytes: number;
  /** Whether a broadcast reached every connection before the timed rounds; they run only if so. */
  synced: boolean;
  /** Why not, when not. */
  syncNote?: string;
  broadcast?: ClusterFanout;
  send?: ClusterSend;
  error?: string;
  durationS: number;
}

/** One configuration of a run, as the report states it. */
export interface ConfigSetting {
  config: ProductConfig;
  /** The nodes' command line (without port, secret and data dir) and environment. */
  nodes: string;
  /** redis-server's persistence flags in its cluster runs. */
  redis: string;
}

/** A whole run as written to bench/results/cluster-*.json. */
export interface ClusterRun {
  startedAt: string;
  durationS: number;
  machine: Record<string, unknown>;
  /** What was asked: nodes, connections, rounds, the /send run's length, the load generators. */
  settings: {
    nodes: number;
    perNode: number;
    single: number;
    repeats: number;
    rounds: number;
    rateDurationMs: number;
    holdersPerNode: number;
    holdersSingle: number;
    callers: number;
    /** Every configuration's nodes and Redis as the report states them, in one line. */
    config: string;
    /**
     * Each configuration measured, in the order of --configs: its nodes' command line and
     * environment, and its redis-server's persistence flags. Absent in results from before the
     * default configuration ran here (then `config` is the stripped one's nodes).
     */
    configs?: ConfigSetting[];
  };
  /** The 1-minute load average when the run began and ended (2 cores: much above 2 is crowded). */
  loadavg: { before: number; after: number };
  /** Set when the deadline cut the run short, saying where. */
  stoppedEarly?: string;
  runs: TopologyRun[];
}

/**
 * A redis-server started for one cluster run, its files (if its persistence flags write any) in a
 * throwaway dir; `stop` is always safe.
 */
export class RedisServer {
  private readonly tail: string[] = [];
  private exited = false;

  private constructor(readonly port: number, private readonly child: Deno.ChildProcess) {
    this.drain(child.stdout);
    this.drain(child.stderr);
    child.status.then(() => this.exited = true);
  }

  /**
   * Spawns redis-server on `port` with `dir` as its working dir and `persistence` (one of
   * REDIS_PERSISTENCE); resolves when it answers PING.
   */
  static async start(
    cmd: string,
    port: number,
    dir: string,
    persistence: string[],
  ): Promise<RedisServer> {
    const child = new Deno.Command(cmd, {
      args: [
        ...["--port", String(port), "--bind", "127.0.0.1"],
        ...persistence,
        ...["--dir", dir, "--loglevel", "warning"],
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const redis = new RedisServer(port, child);
    const until = performance.now() + REDIS_READY_TIMEOUT_MS;
    while (performance.now() < until) {
      if (redis.exited) {
        throw new Error(`redis-server exited during start-up:\n${redis.tail.join("\n")}`);
      }
      if (await redis.ping()) return redis;
      await sleep(REDIS_PROBE_MS);
    }
    await redis.stop();
    throw new Error(`redis-server did not answer PING within ${REDIS_READY_TIMEOUT_MS} ms`);
  }

  get pid(): number {
    return this.child.pid;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      this.tail.push(...chunk.split("\n").filter((l) => l.trim()));
      this.tail.splice(0, Math.max(0, this.tail.length - 10));
    }
  }

  /** Whether Redis answers PING with +PONG on a fresh connection. */
  private async ping(): Promise<boolean> {
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buf = new Uint8Array(16);
      const n = await conn.read(buf);
      return n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG");
    } catch {
      return false;
    } finally {
      conn?.close();
    }
  }

  /** SIGTERM, then SIGKILL after STOP_GRACE_MS; resolves when the process is gone. */
  async stop(): Promise<void> {
    if (this.exited) return;
    try {
      this.child.kill("SIGTERM");
    } catch { /* already gone */ }
    await exitWithin(this.child, STOP_GRACE_MS);
  }
}

/** CPU time so far (ms) of each part, from /proc; cheap and synchronous. */
interface CpuSnapshot {
  at: number;
  machine: number;
  nodes: number[];
  redis: number;
  loadgens: number;
}

function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): ClusterCpu {
  const nodes = b.nodes.map((v, i) => v - a.nodes[i]);
  return {
    wallMs: Math.round(b.at - a.at),
    nodesMs: Math.round(nodes.reduce((s, v) => s + v, 0)),
    busiestNodeMs: Math.round(Math.max(0, ...nodes)),
    redisMs: Math.round(b.redis - a.redis),
    loadgensMs: Math.round(b.loadgens - a.loadgens),
    machineMs: Math.round(b.machine - a.machine),
  };
}

/** A load-generator process holding connections to one node, and the uids it was given. */
interface Holder {
  gen: LoadGen;
  /** Index of the node its connections go to. */
  node: number;
  /** Uid indexes [start, end) it connects. */
  range: [number, number];
  /** Connections it holds open. */
  held: number;
}

/**
 * The load generators of one run: socket holders, each connected to one node, at most
 * MAX_SOCKETS_PER_LOADGEN sockets each; and the /send callers, caller k calling node k modulo the
 * node count. Uids are contiguous per holder, and the holders alternate over the nodes.
 */
class ClusterRig {
  readonly holders: Holder[] = [];
  readonly callers: LoadGen[];

  constructor(
    bun: string,
    readonly nodes: RunningPeer[],
    perNode: number,
    callers: number,
    deadlineMs: number,
    private readonly redisPid?: number,
  ) {
    const holdersPerNode = Math.ceil(perNode / MAX_SOCKETS_PER_LOADGEN);
    const perHolder = Math.ceil(perNode / holdersPerNode);
    let next = 0;
    for (let j = 0; j < holdersPerNode; j++) {
      const count = Math.min(perHolder, perNode - j * perHolder);
      for (let node = 0; node < nodes.length; node++) {
        const gen = new LoadGen(bun, deadlineMs);
        this.holders.push({ gen, node, range: [next, next += count], held: 0 });
      }
    }
    this.callers = Array.from({ length: callers }, () => new LoadGen(bun, deadlineMs));
  }

  /** Uids in all: c0 … c<total-1>. */
  get total(): number {
    return this.holders.reduce((a, h) => a + h.range[1] - h.range[0], 0);
  }

  /** Connections open on node `node`, or on every node. */
  held(node?: number): number {
    return this.holders.filter((h) => node === undefined || h.node === node)
      .reduce((a, h) => a + h.held, 0);
  }

  /** Opens every holder's connections at once; resolves when all have connected or failed. */
  async connect(): Promise<{ connected: number; failed: number; ms: number; errors: string[] }> {
    const started = performance.now();
    const replies = await Promise.all(this.holders.map(async (h) => {
      const node = this.nodes[h.node];
      const reply = await h.gen.request<ConnectReply>({
        cmd: "connect",
        set: "c",
        count: h.range[1] - h.range[0],
        uidPrefix: UID_PREFIX,
        uidStart: h.range[0],
        hosts: [h.gen.serverAddress],
        port: node.port,
        path: node.spec.wsPath,
        mode: node.spec.wire,
        secret: SECRET,
        concurrency: CONNECT_CONCURRENCY,
        timeoutMs: CONNECT_TIMEOUT_MS,
      });
      h.held = reply.connected;
      return reply;
    }));
    return {
      connected: replies.reduce((a, r) => a + r.connected, 0),
      failed: replies.reduce((a, r) => a + r.failed, 0),
      ms: performance.now() - started,
      errors: replies.flatMap((r) => r.errors).slice(0, 5),
    };
  }

  /**
   * One `POST /api/broadcast` on node `origin`, made by that node's caller; waits until every
   * holder has all of it, or `timeoutMs`. Latencies are the last arrival's, over all connections
   * and over the origin node's own.
   */
  async broadcast(origin: number, tag: string, timeoutMs: number) {
    const arrivals = this.holders.map((h) =>
      h.gen.request<AwaitReply>({ cmd: "await", tag, expect: h.held, timeoutMs, forget: true })
    );
    const sent = await this.callers[origin % this.callers.length].request<SendReply>({
      cmd: "send",
      base: this.nodes[origin].base,
      target: { broadcast: true },
      tag,
      payloadBytes: PAYLOAD_BYTES,
    });
    const got = await Promise.all(arrivals);
    const on = (node: number) => got.filter((_, i) => this.holders[i].node === node);
    const lastOf = (replies: AwaitReply[]) => Math.max(0, ...replies.map((r) => r.maxUs));
    return {
      sent,
      received: got.reduce((a, r) => a + r.count, 0),
      byNode: this.nodes.map((_, n) => on(n).reduce((a, r) => a + r.count, 0)),
      lastUs: lastOf(got),
      originLastUs: lastOf(on(origin)),
    };
  }

  /**
   * /send from every caller at once for `durationMs`, each at `rate` / callers per second (0:
   * closed loop) with its share of SEND_CONCURRENCY, round-robin over all uids; then waits for
   * the receivers' share of what was issued and collects the latencies.
   */
  async send(tag: string, rate: number, durationMs: number) {
    const n = this.callers.length;
    const total = this.total;
    const replies = await Promise.all(this.callers.map((g, k) =>
      g.request<RateReply>({
        cmd: "rate",
        base: this.nodes[k % this.nodes.length].base,
        uidPrefix: UID_PREFIX,
        uidStart: 0,
        uidCount: total,
        tag,
        rate: rate / n,
        concurrency: Math.max(1, Math.round(SEND_CONCURRENCY / n)),
        durationMs,
        payloadBytes: PAYLOAD_BYTES,
      })
    ));
    await Promise.all(this.holders.map((h) =>
      h.gen.request<AwaitReply>({
        cmd: "await",
        tag,
        expect: replies.reduce((a, r) => a + shareOf(r.issued, total, h.range), 0),
        timeoutMs: SEND_TAIL_TIMEOUT_MS,
        forget: false,
      })
    ));
    const collected = await Promise.all(
      this.holders.map((h) => h.gen.request<CollectReply>({ cmd: "collect", tag })),
    );
    return { replies, latenciesUs: collected.flatMap((c) => c.latenciesUs) };
  }

  cpu(): CpuSnapshot {
    return {
      at: performance.now(),
      machine: machineBusyMs(),
      nodes: this.nodes.map((p) => treeCpuMs(p.pid)),
      // utime + stime of /proc/<pid>/stat: redis-server has no child processes.
      redis: this.redisPid === undefined ? 0 : treeCpuMs(this.redisPid),
      loadgens: this.loadgens().reduce((a, g) => a + treeCpuMs(g.pid), 0),
    };
  }

  private loadgens(): LoadGen[] {
    return [...this.holders.map((h) => h.gen), ...this.callers];
  }

  async stop(): Promise<void> {
    await Promise.all(this.loadgens().map((g) => g.stop()));
  }
}

/** How many of `issued` round-robin calls over uids [0, uidCount) name a uid in [start, end). */
function shareOf(issued: number, uidCount: number, [start, end]: [number, number]): number {
  const laps = Math.floor(issued / uidCount);
  const rest = issued % uidCount;
  return (end - start) * laps + Math.max(0, Math.min(end, rest) - start);
}

/** Everything started and not yet stopped, so that the deadline or a signal can end it all. */
const live = {
  rig: null as ClusterRig | null,
  nodes: [] as RunningPeer[],
  redis: null as RedisServer | null,
};

/** Stops the load generators first (their sockets close), then the nodes, then Redis. */
async function cleanup(): Promise<void> {
  const { rig, nodes, redis } = live;
  live.rig = null;
  live.nodes = [];
  live.redis = null;
  await rig?.stop();
  await Promise.all(nodes.map((n) => n.stop(STOP_GRACE_MS)));
  await redis?.stop();
}

function freePort(base: number, used: Set<number>): number {
  for (let p = base; p < base + PORT_TRIES; p++) {
    if (!used.has(p) && portFree(p)) {
      used.add(p);
      return p;
    }
  }
  throw new Error(`no free port in ${base}..${base + PORT_TRIES}`);
}

/** What every run of the comparison shares. */
interface Plan {
  bun: string;
  redisServer: string;
  nodes: number;
  perNode: number;
  single: number;
  rounds: number;
  rateDurationMs: number;
  /** When (Date.now()) the whole run must be over. */
  endsAt: number;
}

/**
 * Runs `topology` once in `config`: starts Redis (cluster only) and the nodes, connects, syncs,
 * times the broadcast rounds, runs the /send warm-up and closed loop, and stops everything it
 * started.
 */
async function runTopology(
  config: ProductConfig,
  topology: Topology,
  repeat: number,
  plan: Plan,
  ports: Set<number>,
): Promise<TopologyRun> {
  const started = performance.now();
  const nodeCount = topology === "cluster" ? plan.nodes : 1;
  const perNode = topology === "cluster" ? plan.perNode : plan.single;
  const result: TopologyRun = {
    config,
    topology,
    repeat,
    nodes: nodeCount,
    connectionsPerNode: perNode,
    connected: 0,
    failed: 0,
    connectErrors: [],
    connectPerSecond: 0,
    rssPerConnectionBytes: 0,
    synced: false,
    durationS: 0,
  };
  const dirs: string[] = [];
  const tempDir = async (prefix: string) => {
    const dir = await Deno.makeTempDir({ prefix });
    dirs.push(dir);
    return dir;
  };
  const name = `${config}, ` +
    `${topology === "cluster" ? `cluster of ${nodeCount}` : "single node"}, repeat ${repeat}`;
  try {
    if (topology === "cluster") {
      const port = freePort(REDIS_BASE_PORT, ports);
      const dir = await tempDir("deno-pusher-bench-redis-");
      live.redis = await RedisServer.start(plan.redisServer, port, dir, REDIS_PERSISTENCE[config]);
    }
    const spec = productPeer("bun", config);
    const tools = { repo, bun: plan.bun, deno: Deno.execPath() };
    for (let i = 0; i < nodeCount; i++) {
      const port = freePort(NODE_BASE_PORT, ports);
      const dataDir = await tempDir("deno-pusher-bench-node-");
      const launch = await spec.launch(tools, port, SECRET, dataDir);
      if ("skip" in launch) throw new Error(`cannot start a node: ${launch.skip}`);
      const env = live.redis ? { ...launch.env, REDIS_URL: live.redis.url } : launch.env;
      const node = { ...spec, name: `${spec.name} node ${i + 1}` };
      live.nodes.push(start(node, port, { ...launch, env }));
    }
    const nodes = live.nodes;
    await Promise.all(nodes.map((n) => n.ready()));
    const baseline = nodes.map((n) => treeRssBytes(n.pid));
    log(
      `${name}: nodes on :${nodes.map((n) => n.port).join(", :")}` +
        (live.redis ? `, ${live.redis.url}` : ""),
    );

    const deadlineMs = Math.max(1, plan.endsAt - Date.now());
    const rig = live.rig = new ClusterRig(
      plan.bun,
      nodes,
      perNode,
      plan.nodes,
      deadlineMs,
      live.redis?.pid,
    );
    const grown = await rig.connect();
    result.connected = grown.connected;
    result.failed = grown.failed;
    result.connectErrors = grown.errors;
    result.connectPerSecond = Math.round(grown.connected / (grown.ms / 1000));
    await sleep(RSS_SETTLE_MS);
    const perConnection = nodes.map((n, i) => (treeRssBytes(n.pid) - baseline[i]) / rig.held(i));
    result.rssPerConnectionBytes = Math.round(
      perConnection.reduce((a, v) => a + v, 0) / nodes.length,
    );
    log(
      `  ${grown.connected} open of ${nodeCount} × ${perNode}, ${grown.failed} failed, ` +
        `${result.connectPerSecond} conn/s, ${(result.rssPerConnectionBytes / 1024).toFixed(1)} ` +
        `KB/conn` + (grown.errors.length ? ` (errors: ${grown.errors.join("; ")})` : ""),
    );
    if (grown.connected === 0) throw new Error(`no connection opened: ${grown.errors}`);

    const total = rig.held();
    const sync = await syncBroadcast(rig, total);
    result.synced = sync.synced;
    if (!sync.synced) {
      result.syncNote = sync.note;
      log(`  not synced: ${sync.note}; the timed broadcast rounds are left out`);
    } else {
      const b = result.broadcast = await broadcastRounds(rig, total, plan.rounds);
      log(
        `  broadcast to ${total}: p50 ${b.p50Ms} ms, p99 ${b.p99Ms} ms (origin node's own p50 ` +
          `${b.originP50Ms} ms), ${b.complete}/${b.rounds} complete; cores: Redis ` +
          `${cores(b.cpu.redisMs, b.cpu.wallMs)}, nodes ${cores(b.cpu.nodesMs, b.cpu.wallMs)}`,
      );
    }

    // Not recorded: warms the /send path on every node, as scenarios.ts's unicast does.
    await rig.send("warmup", WARMUP_RATE, WARMUP_MS);
    const s = result.send = await closedLoop(rig, plan.rateDurationMs);
    log(
      `  /send max: ${s.achievedRate}/s, p50 ${s.latency.p50Ms} p99 ${s.latency.p99Ms} ms, ` +
        `${s.received}/${s.accepted} received, ${s.notFound} not found, ` +
        `${s.otherStatus + s.errors} failed; cores: Redis ${cores(s.cpu.redisMs, s.cpu.wallMs)}, ` +
        `nodes ${cores(s.cpu.nodesMs, s.cpu.wallMs)}` +
        (s.errorSample.length ? ` (${s.errorSample.join("; ")})` : ""),
    );
    const died = nodes.find((n) => n.exited);
    if (died) {
      result.error = `${died.spec.name} exited with ${died.exited?.code}:\n${died.logTail}`;
    }
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    log(`${name}: failed: ${result.error}`);
  } finally {
    await cleanup();
    await Promise.all(dirs.map((d) => Deno.remove(d, { recursive: true }).catch(() => {})));
  }
  result.durationS = Math.round((performance.now() - started) / 1000);
  return result;
}

/** CPU time as cores (a share of wall time), e.g. "0.42". */
function cores(ms: number, wallMs: number): string {
  return (ms / Math.max(1, wallMs)).toFixed(2);
}

/**
 * Broadcasts from each node in turn until one reaches every connection, SYNC_ATTEMPTS at most.
 * When none does, says how far the last one got on each node: a cluster whose broadcasts stay on
 * their own node has no working REDIS_URL.
 */
async function syncBroadcast(
  rig: ClusterRig,
  total: number,
): Promise<{ synced: boolean; note?: string }> {
  let note = "";
  for (let attempt = 0; attempt < SYNC_ATTEMPTS; attempt++) {
    const origin = attempt % rig.nodes.length;
    const round = await rig.broadcast(origin, `sync${attempt}`, SYNC_ROUND_TIMEOUT_MS);
    if (round.received === total) return { synced: true };
    const perNode = round.byNode.map((got, n) => `${got} of ${rig.held(n)}`).join(", ");
    note = `a broadcast made on node ${origin + 1} (answered ${round.sent.status}) reached ` +
      `${round.received} of ${total} connections (per node: ${perNode})`;
  }
  return { synced: false, note };
}

/** The timed broadcast rounds, each made on the next node in turn; CPU over all of them. */
async function broadcastRounds(
  rig: ClusterRig,
  total: number,
  rounds: number,
): Promise<ClusterFanout> {
  const lastUs: number[] = [];
  const originUs: number[] = [];
  let lost = 0;
  let answerMs = 0;
  let failedCalls = 0;
  let failure: string | undefined;
  const before = rig.cpu();
  for (let r = 0; r < rounds; r++) {
    const round = await rig.broadcast(r % rig.nodes.length, `b${r}`, ROUND_TIMEOUT_MS);
    answerMs += round.sent.ms;
    if (round.sent.status !== 200) {
      failedCalls++;
      failure ??= `${round.sent.status} ${round.sent.body.slice(0, 200)}`;
    }
    if (round.received === total) {
      lastUs.push(round.lastUs);
      originUs.push(round.originLastUs);
    } else lost += total - round.received;
  }
  const cpu = cpuBetween(before, rig.cpu());
  const sorted = Float64Array.from(lastUs).sort();
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    rounds,
    complete: lastUs.length,
    lost,
    p50Ms: ms(quantile(sorted, 0.5)),
    p99Ms: ms(quantile(sorted, 0.99)),
    maxMs: ms(sorted[sorted.length - 1] ?? NaN),
    originP50Ms: ms(quantile(Float64Array.from(originUs).sort(), 0.5)),
    answerMs: Math.round(answerMs / Math.max(1, rounds) * 1000) / 1000,
    failedCalls,
    ...(failure ? { failure } : {}),
    cpu,
  };
}

/** The measured closed-loop /send run, with the CPU read around it. */
async function closedLoop(rig: ClusterRig, durationMs: number): Promise<ClusterSend> {
  const before = rig.cpu();
  const { replies, latenciesUs } = await rig.send("max", 0, durationMs);
  // Read after the receivers' bounded tail wait too: a node's deliveries to its own sockets, and
  // Redis's to the other nodes, may outlast the answers by a little.
  const cpu = cpuBetween(before, rig.cpu());
  const sum = (f: (r: RateReply) => number) => replies.reduce((a, r) => a + f(r), 0);
  const elapsedMs = Math.max(...replies.map((r) => r.elapsedMs));
  const accepted = sum((r) => r.accepted);
  return {
    durationMs,
    issued: sum((r) => r.issued),
    accepted,
    notFound: sum((r) => r.notFound),
    otherStatus: sum((r) => r.otherStatus),
    errors: sum((r) => r.errors),
    achievedRate: Math.round(accepted / (elapsedMs / 1000)),
    received: latenciesUs.length,
    latency: summarize(latenciesUs),
    cpu,
    errorSample: replies.flatMap((r) => r.errorSample).slice(0, 5),
  };
}

async function machine(plan: Plan): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  return {
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown",
    cores: navigator.hardwareConcurrency,
    memTotalKiB: Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0),
    kernel: Deno.osRelease(),
    openFilesLimit: await version("bash", ["-c", "ulimit -n"]),
    deno: Deno.version.deno,
    bun: await version(plan.bun),
    redis: `Redis ${(await version(plan.redisServer)).match(/v=(\S+)/)?.[1] ?? "not found"}`,
    // Where Redis's append-only file and the nodes' data dirs go (Deno.makeTempDir's dir): on a
    // tmpfs an fsync would cost nothing.
    tempFs: (await version("findmnt", [
      ...["--noheadings", "--output", "FSTYPE", "--target"],
      Deno.env.get("TMPDIR") ?? "/tmp",
    ])) || "an unknown filesystem",
    commit: await version("git", ["-C", repo, "describe", "--always", "--dirty"]),
  };
}

/** What each configuration is, in a few words, for the report's header. */
const CONFIG_MEANING: Record<ProductConfig, string> = {
  default:
    "what users run: the SQLite message log, history, idempotency keys, every limit at its " +
    "default but two; in the cluster, history, message ids and idempotency keys are in Redis",
  stripped: "the hub alone: no message log, no history, the abuse limits off",
};

/** `config`'s nodes (command line and environment) and Redis, as the report states them. */
function describeConfig(config: ProductConfig): ConfigSetting {
  const { flags, env } = PRODUCT_CONFIGS[config];
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
  const redis = REDIS_PERSISTENCE[config].map((a) => a === "" ? "''" : a).join(" ");
  return {
    config,
    nodes: `\`${["dist/deno-pusher", ...flags].join(" ")}\`, ${vars}`,
    redis: `\`redis-server ${redis}\``,
  };
}

/** What ran and how, above the tables. */
function header(run: ClusterRun): string {
  const m = run.machine;
  const s = run.settings;
  const n = (x: number) => x.toLocaleString("en-US");
  const holders = (k: number) => `${k} socket holder${k === 1 ? "" : "s"}`;
  const configs = s.configs ?? [];
  const pairs = configs.length * TOPOLOGIES.length;
  return [
    `Cluster scenario (issue 13 §5), ${run.startedAt}, ${run.durationS} s; ${m.cores} cores ` +
    `(${m.cpu}), ${Math.round(Number(m.memTotalKiB) / 2 ** 20)} GiB, kernel ${m.kernel}, open ` +
    `files ≤ ${m.openFilesLimit}; Bun ${m.bun}, ${m.redis}; commit ${m.commit}; load average ` +
    `${run.loadavg.before.toFixed(1)} before and ${run.loadavg.after.toFixed(1)} after (2 cores).`,
    "",
    `- cluster: ${s.nodes} nodes × ${n(s.perNode)} connections (${n(s.nodes * s.perNode)}) and ` +
    `one redis-server; ${holders(s.holdersPerNode)} per node`,
    `- single: 1 node × ${n(s.single)} connections, no REDIS_URL; ${holders(s.holdersSingle)}`,
    ...configs.map((c) =>
      `- ${c.config} (${CONFIG_MEANING[c.config]}): nodes ${c.nodes}; Redis ${c.redis}`
    ),
    `- every node: its own port, the same --jwt-secret, its own throwaway --data-dir (on ` +
    `${m.tempFs}, as Redis's dir); cluster nodes also REDIS_URL`,
    `- broadcast: ${s.rounds} timed rounds of \`POST /api/broadcast\`, made on each node in turn; ` +
    `time until the last of all connections has it`,
    `- /send: ${s.callers} callers (one per cluster node; all on the one node in a single run), ` +
    `${SEND_CONCURRENCY} calls in flight together, closed loop for ${s.rateDurationMs / 1000} s ` +
    `after a ${WARMUP_MS / 1000}-s warm-up at ${WARMUP_RATE}/s, round-robin over every ` +
    `connected uid`,
    `- Redis CPU: utime + stime of /proc/<pid>/stat before and after each measurement, over its ` +
    `wall time (1.00 is one core)`,
    `- ${s.repeats} repeat${s.repeats === 1 ? "" : "s"}; in each, the ${pairs} (configuration × ` +
    `topology) pairs back to back, every other repeat in the reverse order; each cell is the ` +
    `median (min–max) of the repeats`,
    ...(run.stoppedEarly ? [`- **stopped early**: ${run.stoppedEarly}`] : []),
  ].join("\n");
}

/** --configs: names from PRODUCT_CONFIGS, comma-separated, each once, in the order given. */
export function parseConfigs(list: string): ProductConfig[] {
  const known = Object.keys(PRODUCT_CONFIGS) as ProductConfig[];
  const names = list.split(",").map((c) => c.trim()).filter((c) => c);
  const unknown = names.filter((c) => !known.includes(c as ProductConfig));
  if (unknown.length || !names.length || new Set(names).size < names.length) {
    throw new Error(
      `--configs ${list}: give one or more of ${known.join(", ")}, comma-separated, each once`,
    );
  }
  return names as ProductConfig[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      bun: { type: "string", default: "bun" },
      "redis-server": { type: "string", default: "redis-server" },
      configs: { type: "string", default: "default,stripped" },
      nodes: { type: "string", default: "3" },
      "per-node": { type: "string", default: "17000" },
      single: { type: "string", default: String(MAX_CONNECTIONS_PER_PROCESS) },
      repeats: { type: "string", default: "3" },
      rounds: { type: "string", default: "30" },
      "rate-ms": { type: "string", default: "5000" },
      "deadline-min": { type: "string", default: String(DEADLINE_MIN) },
      label: { type: "string" },
      docs: { type: "boolean", default: false },
    },
  });
  const deadlineMs = Number(values["deadline-min"]) * 60_000;
  const plan: Plan = {
    bun: values.bun,
    redisServer: values["redis-server"],
    nodes: Number(values.nodes),
    perNode: Number(values["per-node"]),
    single: Number(values.single),
    rounds: Number(values.rounds),
    rateDurationMs: Number(values["rate-ms"]),
    endsAt: Date.now() + deadlineMs,
  };
  const repeats = Number(values.repeats);
  for (const [k, v] of Object.entries({ ...plan, repeats, deadlineMs })) {
    if (typeof v === "number" && !(v > 0)) throw new Error(`${k} must be a positive number`);
  }
  const configs = parseConfigs(values.configs);
  if (Math.max(plan.perNode, plan.single) > MAX_CONNECTIONS_PER_PROCESS) {
    throw new Error(
      `a node holds at most ${MAX_CONNECTIONS_PER_PROCESS} connections here (20,000 open files)`,
    );
  }
  if ((await version(plan.redisServer)) === "not found") {
    throw new Error(
      `${plan.redisServer} not found: install it (apt-get install -y redis-server) or name it ` +
        `with --redis-server PATH`,
    );
  }
  const deadline = setTimeout(async () => {
    log(`bench-cluster: deadline of ${deadlineMs} ms reached; stopping everything`);
    await cleanup();
    Deno.exit(2);
  }, deadlineMs);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await cleanup();
      Deno.exit(130);
    });
  }

  const holders = (perNode: number) => Math.ceil(perNode / MAX_SOCKETS_PER_LOADGEN);
  const described = configs.map(describeConfig);
  const started = new Date();
  const run: ClusterRun = {
    startedAt: started.toISOString(),
    durationS: 0,
    machine: await machine(plan),
    settings: {
      nodes: plan.nodes,
      perNode: plan.perNode,
      single: plan.single,
      repeats,
      rounds: plan.rounds,
      rateDurationMs: plan.rateDurationMs,
      holdersPerNode: holders(plan.perNode),
      holdersSingle: holders(plan.single),
      callers: plan.nodes,
      config: described.map((c) => `${c.config}: ${c.nodes}; Redis ${c.redis}`).join(" · "),
      configs: described,
    },
    loadavg: { before: Deno.loadavg()[0], after: NaN },
    runs: [],
  };
  const ports = new Set<number>();
  const pairs = configs.flatMap((config) => TOPOLOGIES.map((topology) => ({ config, topology })));
  repeats: for (let repeat = 1; repeat <= repeats; repeat++) {
    const order = repeat % 2 === 1 ? pairs : pairs.toReversed();
    for (const { config, topology } of order) {
      if (Date.now() + RUN_RESERVE_MS > plan.endsAt) {
        run.stoppedEarly = `the deadline was near; stopped before the ${config} ${topology} ` +
          `run of repeat ${repeat}`;
        log(`bench-cluster: ${run.stoppedEarly}`);
        break repeats;
      }
      run.runs.push(await runTopology(config, topology, repeat, plan, ports));
    }
  }
  run.durationS = Math.round((Date.now() - started.getTime()) / 1000);
  run.loadavg.after = Deno.loadavg()[0];
  clearTimeout(deadline);

  const md = [
    header(run),
    "",
    clusterTable(run),
    "",
    "<details><summary>every run of the cluster scenario</summary>",
    "",
    clusterRunsTable(run),
    "",
    "</details>",
  ].join("\n");
  const name = values.label ? `cluster-${values.label}` : "cluster";
  const stamp = run.startedAt.replace(/[:.]/g, "-");
  const json = JSON.stringify(run, null, 2);
  await Deno.mkdir(resultsDir, { recursive: true });
  await Deno.writeTextFile(`${resultsDir}/${name}-${stamp}.json`, json);
  await Deno.writeTextFile(`${resultsDir}/latest-${name}.json`, json);
  await Deno.writeTextFile(`${resultsDir}/latest-${name}.md`, md);
  if (values.docs) log(`updated ${await updateDocs(name, md)}`);
  console.log(md);
}

if (import.meta.main) await main();
