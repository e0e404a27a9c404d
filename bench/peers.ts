/**
 * The servers under test ("peers"): how each is prepared, started, measured and stopped. Every peer
 * speaks the same contract (/ws?token=<HS256 JWT with uid and optional groups>, /send?uid=&message=,
 * POST /api/broadcast and /api/groups/{group}/send with {"message"}, /healthz), so the same load
 * generator drives them all. The coordinator owns every process it starts here.
 */
import { exitWithin } from "./loadgen/pool.ts";
import type { WireMode } from "./loadgen/protocol.ts";

/** Paths and tools the peers are built from. */
export interface Toolchain {
  repo: string;
  deno: string;
  bun: string;
  /**
   * When set, deno-pusher writes a CPU profile (.cpuprofile) here on exit: on Deno with
   * `--cpu-prof`; on Bun with Bun's `--cpu-prof`, running main.ts from source instead of the
   * minified executable so that the profile has our function names.
   */
  cpuProfDir?: string;
}

/** How to run one peer: a command line, or the reason it is skipped on this machine. */
export type Launch =
  | { cmd: string; args: string[]; env: Record<string, string>; cwd: string }
  | { skip: string };

/**
 * What a peer is to the report. `product` is deno-pusher. `ceiling` is its runtime's like-for-like
 * bare ceiling: deno-pusher's structure without the hub (a Set of every socket, Maps uid → sockets
 * and group → sockets, a loop of ws.send), the one per runtime that the targets and the "vs peers"
 * bounds compare with. `native ceiling` is a bare server on a runtime's own fan-out (Bun's topics),
 * shown for reference and in no verdict. `peer` is a server a user might pick instead, which the
 * "ahead"/"behind" verdicts compare with.
 */
export type PeerRole = "product" | "ceiling" | "native ceiling" | "peer";

export interface PeerSpec {
  name: string;
  role: PeerRole;
  runtime: "deno" | "bun" | "go" | "node";
  /** deno-pusher's configuration (product peers only). */
  config?: ProductConfig;
  wire: WireMode;
  /** WebSocket request path up to and including the separator before `token=`. */
  wsPath: string;
  launch(
    t: Toolchain,
    port: number,
    secret: string,
    dataDir: string,
  ): Promise<Launch>;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function which(cmd: string): Promise<string | null> {
  const out = await new Deno.Command("bash", {
    args: ["-c", `command -v ${cmd}`],
    stdout: "piped",
  })
    .output();
  return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
}

const bench = (t: Toolchain) => `${t.repo}/bench`;

/** Node peers need node on PATH and bench/node_modules (installed by `make bench`). */
async function nodePeer(
  t: Toolchain,
  script: string,
  pkg: string,
  port: number,
  secret: string,
) {
  const node = await which("node");
  if (!node) return { skip: "node is not on PATH" };
  if (!await exists(`${bench(t)}/node_modules/${pkg}`)) {
    return {
      skip: `bench/node_modules/${pkg} missing: run npm ci --prefix bench`,
    };
  }
  return {
    cmd: node,
    args: [`${bench(t)}/peers/${script}`],
    env: { PORT: String(port), JWT_SECRET: secret },
    cwd: bench(t),
  };
}

/**
 * deno-pusher's two configurations in the bench, each running every scenario. `default` is what a
 * user runs: the SQLite message log, history (HISTORY_SIZE 1000), the idempotency store, every limit
 * at its default but the two the load generators would hit. `stripped` is the hub alone: no message
 * log, no history, the abuse limits off. Both keep their files in a throwaway data dir.
 */
export type ProductConfig = "stripped" | "default";

/**
 * The stripped configuration's abuse limits, all off. The bench opens thousands of sockets from one
 * address and calls /send tens of thousands of times a second from it, which the defaults (50 new
 * sockets per IP per second, 5,000 requests per second per key or address) refuse by design. The
 * per-uid and per-frame limits are off as they always were, though no scenario reaches them now:
 * every connection has its own uid and sends no frames.
 */
const PRODUCT_LIMITS_OFF: Record<string, string> = {
  MAX_CONNECTIONS_PER_UID: "0",
  MAX_CONNECTS_PER_IP: "0",
  MAX_FRAMES_PER_SECOND: "0",
  MAX_REQUESTS_PER_KEY: "0",
};

/**
 * The default configuration's limits: only what the load generators would hit is raised. They open
 * thousands of sockets from a few addresses (MAX_CONNECTS_PER_IP, 50/s by default), and the /send
 * calls come from one address without an API key (MAX_REQUESTS_PER_KEY, 5,000/s by default, would
 * cap the measured throughput at the limiter's rate instead of the server's). One socket per uid
 * and no client frames keep the per-uid and per-frame limits at their defaults without effect.
 */
const DEFAULT_LIMITS_RAISED: Record<string, string> = {
  MAX_CONNECTS_PER_IP: "0",
  MAX_REQUESTS_PER_KEY: "0",
};

/** What each configuration passes besides port, secret and data dir, for the report. */
export const PRODUCT_CONFIGS: Record<
  ProductConfig,
  { flags: string[]; env: Record<string, string> }
> = {
  stripped: {
    flags: ["--message-logger", "none", "--history-size", "0"],
    env: PRODUCT_LIMITS_OFF,
  },
  default: { flags: [], env: DEFAULT_LIMITS_RAISED },
};

/**
 * deno-pusher's flags in the bench, on either runtime: the configuration's own, and always a
 * throwaway data dir (the default ./data would land in the repo or the bench's cwd).
 */
export function productFlags(
  config: ProductConfig,
  port: number,
  secret: string,
  dataDir: string,
): string[] {
  return [
    "--port",
    String(port),
    "--jwt-secret",
    secret,
    ...PRODUCT_CONFIGS[config].flags,
    "--data-dir",
    dataDir,
  ];
}

/**
 * deno-pusher on `runtime` in `config`: "deno-pusher (Deno)" and "deno-pusher (Bun exe)" stripped
 * (the names the results have always used), with " · default" after them in the default one.
 */
export function productPeer(
  runtime: "deno" | "bun",
  config: ProductConfig,
): PeerSpec {
  const env = PRODUCT_CONFIGS[config].env;
  const suffix = config === "default" ? " · default" : "";
  if (runtime === "deno") {
    return {
      name: `deno-pusher (Deno)${suffix}`,
      role: "product",
      runtime: "deno",
      config,
      wire: "ws",
      wsPath: "/ws?",
      async launch(t, port, secret, dataDir) {
        if (!await exists(`${t.repo}/main.ts`)) {
          return { skip: "main.ts not written yet" };
        }
        return {
          cmd: t.deno,
          args: [
            "run",
            ...(t.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${t.cpuProfDir}`] : []),
            // As `make run`: reading /proc/self/limits (the default connection cap) needs it.
            "--allow-all",
            `${t.repo}/main.ts`,
            ...productFlags(config, port, secret, dataDir),
          ],
          env,
          cwd: t.repo,
        };
      },
    };
  }
  return {
    name: `deno-pusher (Bun exe)${suffix}`,
    role: "product",
    runtime: "bun",
    config,
    wire: "ws",
    wsPath: "/ws?",
    async launch(t, port, secret, dataDir) {
      const flags = productFlags(config, port, secret, dataDir);
      if (t.cpuProfDir) {
        return {
          cmd: t.bun,
          args: [
            "--cpu-prof",
            `--cpu-prof-dir=${t.cpuProfDir}`,
            `${t.repo}/main.ts`,
            ...flags,
          ],
          env,
          cwd: t.repo,
        };
      }
      const exe = `${t.repo}/dist/deno-pusher`;
      if (!await exists(exe)) {
        return {
          skip: "dist/deno-pusher missing: make build failed or skipped",
        };
      }
      return { cmd: exe, args: flags, env, cwd: dataDir };
    },
  };
}

/**
 * The Bun ceiling in one of its two fan-outs (bench/peers/ceiling-bun.ts, FANOUT): `loop` is the
 * like-for-like one, `publish` Bun's native topics.
 */
function bunCeiling(fanout: "loop" | "publish"): PeerSpec {
  return {
    name: fanout === "loop" ? "ceiling (Bun, ws.send loop)" : "ceiling (Bun, publish)",
    role: fanout === "loop" ? "ceiling" : "native ceiling",
    runtime: "bun",
    wire: "ws",
    wsPath: "/ws?",
    launch(t, port, secret) {
      return Promise.resolve({
        cmd: t.bun,
        args: [`${bench(t)}/peers/ceiling-bun.ts`],
        env: { PORT: String(port), JWT_SECRET: secret, FANOUT: fanout },
        cwd: bench(t),
      });
    },
  };
}

/** Every peer, in the order each repeat runs them. */
export const PEERS: PeerSpec[] = [
  productPeer("deno", "stripped"),
  productPeer("deno", "default"),
  productPeer("bun", "stripped"),
  productPeer("bun", "default"),
  {
    // What deno-pusher does on Deno: `node:http` and the `ws` package (runtime/deno.ts says why not
    // Deno.serve), a Set and two Maps, a loop of ws.send: bench/peers/node-ws.mjs, run by Deno.
    name: "ceiling (Deno, node:http + ws)",
    role: "ceiling",
    runtime: "deno",
    wire: "ws",
    wsPath: "/ws?",
    async launch(t, port, secret) {
      if (!await exists(`${bench(t)}/node_modules/ws`)) {
        return {
          skip: "bench/node_modules/ws missing: run npm ci --prefix bench",
        };
      }
      return {
        cmd: t.deno,
        args: ["run", "--allow-all", `${bench(t)}/peers/node-ws.mjs`],
        env: { PORT: String(port), JWT_SECRET: secret },
        cwd: bench(t),
      };
    },
  },
  {
    // Deno's own server: the runtime's limit, which deno-pusher gives up for node:http's controls.
    name: "ceiling (Deno)",
    role: "native ceiling",
    runtime: "deno",
    wire: "ws",
    wsPath: "/ws?",
    launch(t, port, secret) {
      return Promise.resolve({
        cmd: t.deno,
        args: [
          "run",
          "--allow-net",
          "--allow-env",
          `${bench(t)}/peers/ceiling-deno.ts`,
        ],
        env: { PORT: String(port), JWT_SECRET: secret },
        cwd: bench(t),
      });
    },
  },
  bunCeiling("publish"),
  bunCeiling("loop"),
  {
    name: "Go gorilla hub",
    role: "peer",
    runtime: "go",
    wire: "ws",
    wsPath: "/ws?",
    async launch(t, port, secret) {
      const exe = `${bench(t)}/.build/go-hub`;
      const build = await new Deno.Command("bash", {
        args: [`${bench(t)}/peers/go-hub/build.sh`, exe],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      const said = new TextDecoder().decode(build.stdout).trim();
      if (build.code === 3) return { skip: said };
      if (!build.success) {
        return { skip: `go build failed (exit ${build.code}) ${said}` };
      }
      return {
        cmd: exe,
        args: [],
        env: { PORT: String(port), JWT_SECRET: secret },
        cwd: bench(t),
      };
    },
  },
  {
    name: "Node ws hub",
    role: "peer",
    runtime: "node",
    wire: "ws",
    wsPath: "/ws?",
    launch: (t, port, secret) => nodePeer(t, "node-ws.mjs", "ws", port, secret),
  },
  {
    name: "Socket.IO",
    role: "peer",
    runtime: "node",
    wire: "sio",
    wsPath: "/socket.io/?EIO=4&transport=websocket&",
    launch: (t, port, secret) => nodePeer(t, "socketio.mjs", "socket.io", port, secret),
  },
];

/** How long a peer may take from spawn to a 200 from /healthz (ms); Deno may transpile on first run. */
const READY_TIMEOUT_MS = 60_000;
/** Interval between /healthz probes while a peer starts (ms); startup has no other event to await. */
const READY_PROBE_MS = 100;
/** Lines of a peer's output kept for error reports. */
const LOG_TAIL_LINES = 20;

/** A started peer process; `stop` is always safe to call. */
export class RunningPeer {
  private readonly tail: string[] = [];
  private exitedWith: Deno.CommandStatus | null = null;

  constructor(
    readonly spec: PeerSpec,
    readonly port: number,
    readonly child: Deno.ChildProcess,
  ) {
    this.drain(child.stdout);
    this.drain(child.stderr);
    child.status.then((s) => this.exitedWith = s);
  }

  get pid(): number {
    return this.child.pid;
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The peer's last output lines, for reporting why it failed. */
  get logTail(): string {
    return this.tail.join("\n");
  }

  get exited(): Deno.CommandStatus | null {
    return this.exitedWith;
  }

  private async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      for (const line of chunk.split("\n")) {
        if (!line.trim()) continue;
        this.tail.push(line.slice(0, 300));
        if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
      }
    }
  }

  /** Resolves when /healthz answers 200; throws with the peer's output if it exits or times out. */
  async ready(): Promise<number> {
    const started = performance.now();
    while (performance.now() - started < READY_TIMEOUT_MS) {
      if (this.exitedWith) {
        throw new Error(
          `exited with ${this.exitedWith.code} during startup:\n${this.logTail}`,
        );
      }
      try {
        const res = await fetch(`${this.base}/healthz`, {
          signal: AbortSignal.timeout(1_000),
        });
        await res.body?.cancel();
        if (res.status === 200) return performance.now() - started;
      } catch { /* not listening yet */ }
      await new Promise((r) => setTimeout(r, READY_PROBE_MS));
    }
    throw new Error(
      `no 200 from /healthz within ${READY_TIMEOUT_MS} ms:\n${this.logTail}`,
    );
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.exitedWith) return;
    try {
      this.child.kill("SIGTERM");
    } catch { /* already gone */ }
    await exitWithin(this.child, graceMs);
  }
}

/** Starts a launch; the returned peer must be stopped by the caller. */
export function start(
  spec: PeerSpec,
  port: number,
  launch: Exclude<Launch, { skip: string }>,
): RunningPeer {
  const child = new Deno.Command(launch.cmd, {
    args: launch.args,
    env: launch.env,
    cwd: launch.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new RunningPeer(spec, port, child);
}

/** Resident memory (bytes) of a process and all its descendants, from /proc. */
export function treeRssBytes(pid: number): number {
  let total = 0;
  for (const p of descendants(pid)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${p}/status`);
      const kb = Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0);
      total += kb * 1024;
    } catch { /* exited meanwhile */ }
  }
  return total;
}

/** CPU time (ms, user + system) of a process and all its descendants, from /proc. */
export function treeCpuMs(pid: number): number {
  /** Linux reports utime/stime in clock ticks; USER_HZ is 100 on every Linux ABI we run on. */
  const TICKS_PER_S = 100;
  let ticks = 0;
  for (const p of descendants(pid)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${p}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch { /* exited meanwhile */ }
  }
  return ticks * 1000 / TICKS_PER_S;
}

/**
 * Busy CPU time (ms) of the whole machine since boot, every core together, from /proc/stat: all
 * time but idle and iowait. Includes other users of the cores and the kernel's softirq work that
 * no process is charged for.
 */
export function machineBusyMs(): number {
  /** USER_HZ, as for treeCpuMs. */
  const TICKS_PER_S = 100;
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const t = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    const busy = t.slice(0, 8).reduce((a, v) => a + v, 0) - t[3] - t[4];
    return busy * 1000 / TICKS_PER_S;
  } catch {
    return NaN;
  }
}

function descendants(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const task of Deno.readDirSync(`/proc/${out[i]}/task`)) {
        const children = Deno.readTextFileSync(
          `/proc/${out[i]}/task/${task.name}/children`,
        );
        for (const c of children.trim().split(/\s+/)) {
          if (c) out.push(Number(c));
        }
      }
    } catch { /* exited meanwhile */ }
  }
  return out;
}

/** Whether a TCP port is free on all addresses (so a peer can bind 0.0.0.0:port). */
export function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "0.0.0.0", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** The first line `cmd args` prints (its version), or "not found". */
export async function version(
  cmd: string,
  args = ["--version"],
): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return new TextDecoder().decode(out.stdout).split("\n")[0].trim();
  } catch {
    return "not found";
  }
}

/**
 * Replaces the section `name` of docs/BENCHMARKS.md, between its `<!-- bench:<name>:begin -->` and
 * `end` markers, with `md`, laid out by deno fmt (the repo's `deno fmt --check` covers docs/).
 * Answers the file's path; throws when the markers are missing.
 */
export async function updateDocs(name: string, md: string): Promise<string> {
  const repo = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const path = `${repo}/docs/BENCHMARKS.md`;
  const doc = await Deno.readTextFile(path);
  const begin = `<!-- bench:${name}:begin -->`;
  const end = `<!-- bench:${name}:end -->`;
  const a = doc.indexOf(begin);
  const b = doc.indexOf(end);
  if (a < 0 || b < a) {
    throw new Error(`${path} has no ${begin} ... ${end} section`);
  }
  await Deno.writeTextFile(
    path,
    `${doc.slice(0, a + begin.length)}\n\n${md}\n\n${doc.slice(b)}`,
  );
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "--config", `${repo}/deno.json`, path],
  }).output();
  return path;
}
