/**
 * What one deno-pusher node keeps per connection, with REDIS_URL and without: a profile, not a
 * benchmark. bench/cluster.ts reads RSS a second after the connections opened, and a node with
 * REDIS_URL measured twice the RSS per connection of one without (docs/BENCHMARKS.md, Cluster);
 * RSS also holds what the burst of handshakes left for the collector. This runs the server in a
 * Bun process that can be asked (bench/heap_server.ts), opens `--conns` connections from socket
 * holders (bench/loadgen), and reads, before and after, RSS without a collection (what the bench
 * sees), RSS after a full collection, and the collected heap by object type; the difference per
 * connection is printed for each variant, and the object types that grew most.
 *
 *   deno run -A bench/heap.ts [--bun PATH] [--redis-server PATH] [--conns 17000] [--configs default]
 *
 * Each variant runs in turn, a fresh process each: `redis` (REDIS_URL to a redis-server started
 * here, with its configuration's persistence, as bench/cluster.ts starts it) and `alone`. Bounded:
 * every process stops by itself after --deadline-min (10). Writes nothing but its output.
 */
import { parseArgs } from "node:util";
import { parseConfigs, REDIS_PERSISTENCE, RedisServer } from "./cluster.ts";
import type { HeapMeasure } from "./heap_server.ts";
import { exitWithin, LoadGen, MAX_SOCKETS_PER_LOADGEN } from "./loadgen/pool.ts";
import type { ConnectReply } from "./loadgen/protocol.ts";
import { portFree, PRODUCT_CONFIGS, type ProductConfig, productFlags } from "./peers.ts";

const SECRET = "heap-profile-secret-heap-profile-secret";
/** Handshakes in flight per socket holder, as bench/cluster.ts. */
const CONNECT_CONCURRENCY = 128;
/** Pause after connecting before the first reading (ms), as bench/cluster.ts's RSS_SETTLE_MS. */
const SETTLE_MS = 1_000;
/** Object types listed: those whose count grew most. */
const TOP_TYPES = 15;

/** One variant's readings, before and after the connections opened. */
interface Variant {
  name: string;
  connected: number;
  before: HeapMeasure;
  after: HeapMeasure;
}

/** The server in its Bun process, answering `measure` (bench/heap_server.ts). */
class HeapServer {
  private readonly lines: AsyncIterator<string>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(private readonly child: Deno.ChildProcess) {
    this.writer = child.stdin.getWriter();
    this.lines = lineReader(child.stdout);
  }

  static async start(bun: string, args: string[], env: Record<string, string>) {
    const child = new Deno.Command(bun, {
      args: [new URL("./heap_server.ts", import.meta.url).pathname, ...args],
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const server = new HeapServer(child);
    for (;;) {
      const line = await server.next();
      if (line === "listening") return server;
    }
  }

  async next(): Promise<string> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error("heap_server.ts exited");
    return value;
  }

  async measure(): Promise<HeapMeasure> {
    await this.writer.write(new TextEncoder().encode("measure\n"));
    for (;;) {
      const line = await this.next();
      if (line.startsWith("{")) return JSON.parse(line);
    }
  }

  async stop(): Promise<void> {
    await this.writer.close().catch(() => {});
    await exitWithin(this.child, 5_000);
  }
}

async function* lineReader(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let nl;
    while ((nl = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, nl);
      rest = rest.slice(nl + 1);
    }
  }
}

function freePort(from: number): number {
  for (let port = from; port < from + 1000; port++) if (portFree(port)) return port;
  throw new Error(`no free port in ${from}..${from + 999}`);
}

async function runVariant(
  name: string,
  config: ProductConfig,
  opts: { bun: string; redisServer: string; conns: number; deadlineMs: number },
): Promise<Variant> {
  const dir = await Deno.makeTempDir({ prefix: "deno-pusher-heap-" });
  const port = freePort(21_000);
  let redis: RedisServer | undefined;
  let server: HeapServer | undefined;
  const gens: LoadGen[] = [];
  try {
    const env: Record<string, string> = { ...PRODUCT_CONFIGS[config].env };
    if (name === "redis") {
      redis = await RedisServer.start(
        opts.redisServer,
        freePort(port + 1),
        dir,
        REDIS_PERSISTENCE[config],
      );
      env.REDIS_URL = redis.url;
    }
    server = await HeapServer.start(
      opts.bun,
      productFlags(config, port, SECRET, `${dir}/data`),
      env,
    );
    const before = await server.measure();
    const holders = Math.ceil(opts.conns / MAX_SOCKETS_PER_LOADGEN);
    const per = Math.ceil(opts.conns / holders);
    for (let i = 0; i < holders; i++) gens.push(new LoadGen(opts.bun, opts.deadlineMs));
    const replies = await Promise.all(gens.map((gen, i) =>
      gen.request<ConnectReply>({
        cmd: "connect",
        set: "c",
        count: Math.min(per, opts.conns - i * per),
        uidPrefix: "c",
        uidStart: i * per,
        hosts: [gen.serverAddress],
        port,
        path: "/ws?",
        mode: "ws",
        secret: SECRET,
        concurrency: CONNECT_CONCURRENCY,
        timeoutMs: 180_000,
      })
    ));
    const connected = replies.reduce((a, r) => a + r.connected, 0);
    const failed = replies.reduce((a, r) => a + r.failed, 0);
    if (failed > 0) console.error(`${name}: ${failed} failed: ${replies[0].errors.join("; ")}`);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const after = await server.measure();
    return { name, connected, before, after };
  } finally {
    await Promise.all(gens.map((gen) => gen.stop()));
    await server?.stop();
    await redis?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function report(config: ProductConfig, variants: Variant[]): string {
  const kb = (bytes: number, n: number) => (bytes / n / 1024).toFixed(2);
  const out = [
    `### ${config} configuration`,
    "",
    "| variant | connections | RSS, no collection (KB/conn) | RSS after a full collection | heap after it | extra memory (outside the heap) | objects per connection |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const { name, connected: n, before: b, after: a } of variants) {
    out.push(
      `| ${name} | ${n} | ${kb(a.rssBefore - b.rssBefore, n)} | ${
        kb(a.rssAfter - b.rssAfter, n)
      } | ` +
        `${kb(a.heapSize - b.heapSize, n)} | ${kb(a.extraMemorySize - b.extraMemorySize, n)} | ` +
        `${((a.objectCount - b.objectCount) / n).toFixed(1)} |`,
    );
  }
  const types = new Set(variants.flatMap((v) => Object.keys(v.after.objectTypeCounts)));
  const growth = (v: Variant, type: string) =>
    ((v.after.objectTypeCounts[type] ?? 0) - (v.before.objectTypeCounts[type] ?? 0)) / v.connected;
  const ranked = [...types].sort((x, y) =>
    Math.max(...variants.map((v) => Math.abs(growth(v, y)))) -
    Math.max(...variants.map((v) => Math.abs(growth(v, x))))
  ).slice(0, TOP_TYPES);
  out.push(
    "",
    `Object types that grew most, per connection (after a full collection):`,
    "",
    `| type | ${variants.map((v) => v.name).join(" | ")} |`,
    `| --- | ${variants.map(() => "---:").join(" | ")} |`,
    ...ranked.map((type) =>
      `| ${type} | ${variants.map((v) => growth(v, type).toFixed(2)).join(" | ")} |`
    ),
  );
  return out.join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      bun: { type: "string", default: "bun" },
      "redis-server": { type: "string", default: "redis-server" },
      conns: { type: "string", default: "17000" },
      configs: { type: "string", default: "default" },
      "deadline-min": { type: "string", default: "10" },
    },
    strict: true,
  });
  const conns = Number(values.conns);
  if (!Number.isInteger(conns) || conns < 1 || conns > 18_000) {
    throw new Error(`--conns must be an integer from 1 to 18000, not ${values.conns}`);
  }
  const configs = parseConfigs(values.configs);
  const deadlineMs = Number(values["deadline-min"]) * 60_000;
  const stop = setTimeout(() => {
    console.error(`heap: past --deadline-min (${values["deadline-min"]}); stopping`);
    Deno.exit(1);
  }, deadlineMs);
  const opts = { bun: values.bun, redisServer: values["redis-server"], conns, deadlineMs };
  try {
    await new Deno.Command(opts.redisServer, { args: ["--version"], stdout: "null" }).output();
  } catch {
    throw new Error(
      `${opts.redisServer} cannot be run (apt-get install redis-server, or --redis-server PATH)`,
    );
  }
  for (const config of configs) {
    const variants = [];
    for (const name of ["redis", "alone"]) {
      console.error(`heap: ${config}, ${name}: ${conns} connections`);
      variants.push(await runVariant(name, config, opts));
    }
    console.log(report(config, variants) + "\n");
  }
  clearTimeout(stop);
}

if (import.meta.main) await main();
