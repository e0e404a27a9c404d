/**
 * A/B of two builds of deno-pusher on the same machine, in turns (A B A B …), each a fresh process
 * in its default configuration (as bench/peers.ts runs it) with a fresh data dir: the before/after
 * pairs of docs/BENCHMARKS.md come from this. Per run it reports the connect rate to `--connections`
 * sockets (one uid each), the RSS per idle connection, and closed-loop /send throughput (64 calls in
 * flight, round-robin over the connected uids) for `--ms`, with the server's CPU time per handshake and
 * per /send (its /proc times: steadier than rates when the load generator shares the cores).
 *
 *   deno run --allow-all bench/ab.ts --a <cmd> --b <cmd> [--repeats 3] [--connections 1000]
 *     [--ms 8000] [--stripped] [--bun bun]
 *
 * A command is an executable (`dist/deno-pusher` of each build) or a quoted command line such as
 * "bun /path/to/main.ts". Bounded: every run ends within its own time, load generators included.
 */
import { parseArgs } from "node:util";
import { LoadGen } from "./loadgen/pool.ts";
import type { ConnectReply, RateReply } from "./loadgen/protocol.ts";
import {
  type PeerSpec,
  PRODUCT_CONFIGS,
  type ProductConfig,
  productFlags,
  RunningPeer,
  start,
  treeCpuMs,
  treeRssBytes,
} from "./peers.ts";
import { median } from "./stats.ts";

const SECRET = "ab-secret-ab-secret-ab-secret-32";
const CONCURRENCY = 64;
const PAYLOAD_BYTES = 64;
const HANDSHAKES_IN_FLIGHT = 200;

interface RunResult {
  connectPerS: number;
  kbPerConn: number;
  sendPerS: number;
  /** The server's CPU time per answered /send (µs): steadier than the rate on a shared machine. */
  sendCpuUs: number;
  /** The server's CPU time per handshake (µs). */
  connectCpuUs: number;
}

/** A port nothing listens on now, from the kernel's ephemeral range. */
function freePort(): number {
  const l = Deno.listen({ port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** `command` (an executable, or a command line) as the product peer it stands for in bench/peers.ts. */
function launched(
  command: string,
  config: ProductConfig,
  port: number,
  dataDir: string,
): RunningPeer {
  const [cmd, ...pre] = command.split(" ");
  const spec: PeerSpec = {
    name: command,
    role: "product",
    runtime: "bun",
    config,
    wire: "ws",
    wsPath: "/ws?",
    launch: () => Promise.reject(new Error("started by bench/ab.ts")),
  };
  return start(spec, port, {
    cmd,
    args: [...pre, ...productFlags(config, port, SECRET, dataDir)],
    env: PRODUCT_CONFIGS[config].env,
    cwd: dataDir,
  });
}

async function runOnce(
  command: string,
  config: ProductConfig,
  connections: number,
  ms: number,
  bun: string,
): Promise<RunResult> {
  const port = freePort();
  const dataDir = await Deno.makeTempDir({ prefix: "ab-" });
  const server = launched(command, config, port, dataDir);
  const gen = new LoadGen(bun, 60_000 + ms);
  try {
    await server.ready();
    const rssBefore = treeRssBytes(server.pid);
    const cpuBefore = treeCpuMs(server.pid);
    const connected = await gen.request<ConnectReply>({
      cmd: "connect",
      set: "a",
      count: connections,
      uidPrefix: "u",
      uidStart: 0,
      hosts: [gen.serverAddress],
      port,
      path: "/ws?",
      mode: "ws",
      secret: SECRET,
      concurrency: HANDSHAKES_IN_FLIGHT,
      timeoutMs: 30_000,
    });
    if (connected.connected !== connections) {
      throw new Error(
        `connected ${connected.connected} of ${connections}: ${connected.errors}`,
      );
    }
    const rssAfter = treeRssBytes(server.pid);
    const cpuConnected = treeCpuMs(server.pid);
    const rate = (durationMs: number) =>
      gen.request<RateReply>({
        cmd: "rate",
        base: `http://${gen.serverAddress}:${port}`,
        uidPrefix: "u",
        uidStart: 0,
        uidCount: connections,
        tag: "ab",
        rate: 0,
        concurrency: CONCURRENCY,
        durationMs,
        payloadBytes: PAYLOAD_BYTES,
      });
    let sendPerS = 0;
    let sendCpuUs = 0;
    if (ms > 0) { // --ms 0: handshakes only, e.g. for a profile of them
      await rate(1_000); // warm-up, not recorded
      const cpuWarm = treeCpuMs(server.pid);
      const sent = await rate(ms);
      const cpuSent = treeCpuMs(server.pid);
      if (sent.errors || sent.otherStatus) {
        throw new Error(
          `/send: ${sent.errors} errors, ${sent.otherStatus} other: ${sent.errorSample}`,
        );
      }
      sendPerS = sent.accepted / (sent.elapsedMs / 1000);
      sendCpuUs = (cpuSent - cpuWarm) * 1000 / sent.accepted;
    }
    return {
      connectPerS: connections / (connected.ms / 1000),
      kbPerConn: (rssAfter - rssBefore) / connections / 1024,
      sendPerS,
      sendCpuUs,
      connectCpuUs: (cpuConnected - cpuBefore) * 1000 / connections,
    };
  } finally {
    await gen.stop();
    await server.stop(10_000); // SIGTERM first: a --cpu-prof run writes its profile on the way out
    await Deno.remove(dataDir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      a: { type: "string" },
      b: { type: "string" },
      repeats: { type: "string", default: "3" },
      connections: { type: "string", default: "1000" },
      ms: { type: "string", default: "8000" },
      stripped: { type: "boolean", default: false },
      bun: { type: "string", default: "bun" },
    },
  });
  if (!values.a || !values.b) throw new Error("--a and --b are required");
  const config: ProductConfig = values.stripped ? "stripped" : "default";
  const builds = { A: values.a, B: values.b };
  const results: Record<string, RunResult[]> = { A: [], B: [] };
  for (let i = 0; i < Number(values.repeats); i++) {
    for (const [name, command] of Object.entries(builds)) {
      const r = await runOnce(
        command,
        config,
        Number(values.connections),
        Number(values.ms),
        values.bun,
      );
      results[name].push(r);
      console.log(
        `${name} #${i + 1}: connect ${r.connectPerS.toFixed(0)}/s, ` +
          `${r.kbPerConn.toFixed(2)} KB/conn, /send ${r.sendPerS.toFixed(0)}/s, ` +
          `CPU ${r.connectCpuUs.toFixed(1)} µs/handshake, ${r.sendCpuUs.toFixed(1)} µs/send`,
      );
    }
  }
  for (const [name, rs] of Object.entries(results)) {
    const show = (f: (r: RunResult) => number, digits: number) => {
      const xs = rs.map(f);
      return `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${
        Math.max(...xs).toFixed(digits)
      })`;
    };
    console.log(
      `${name} ${builds[name as "A" | "B"]}: connect ${show((r) => r.connectPerS, 0)}/s, ` +
        `${show((r) => r.kbPerConn, 2)} KB/conn, /send ${show((r) => r.sendPerS, 0)}/s, CPU ` +
        `${show((r) => r.connectCpuUs, 1)} µs/handshake, ${show((r) => r.sendCpuUs, 1)} µs/send`,
    );
  }
}
