/**
 * The benchmark coordinator: starts each peer in turn, drives the scenarios against it with the
 * same load generators, and writes bench/results/ (JSON with machine info, markdown, SVG chart).
 *
 *   deno run -A bench/run.ts [--profile quick|full] [--peers a,b] [--bun PATH] [--docs]
 *     [--levels 1000,10000] [--rounds N] [--rates 2000,0] [--rate-ms MS] [--no-soak] [--cpu-prof]
 *     [--sockets-per-loadgen N] [--senders N] [--shapes 5000:1,2500:2] [--label NAME]
 *
 * Every process it starts is killed before the next peer starts, and the whole run stops itself at
 * the profile's deadline. All traffic stays on 127.0.0.0/8.
 */
import { parseArgs } from "node:util";
import { PEERS, portFree, RunningPeer, start, type Toolchain, treeRssBytes } from "./peers.ts";
import { type Profile, PROFILES } from "./profiles.ts";
import {
  chart,
  loadgenTable,
  rateTable,
  type RunResult,
  shapeTable,
  soakChart,
  soakTable,
  table,
  targetTable,
} from "./report.ts";
import {
  DEFAULT_RIG,
  idleAndFanout,
  type PeerResult,
  Rig,
  type RigShape,
  SECRET,
  soak,
  unicast,
} from "./scenarios.ts";

/** First port tried for peers; away from the server's default 8181 so a dev server can keep it. */
const BASE_PORT = 18_181;
/** Ports tried past BASE_PORT before giving up. */
const PORT_TRIES = 200;

const repo = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const resultsDir = `${repo}/bench/results`;

function log(s: string): void {
  console.error(s);
}

async function version(cmd: string, args = ["--version"]): Promise<string> {
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

async function machine(bun: string): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const git = await version("git", [
    "-C",
    repo,
    "describe",
    "--always",
    "--dirty",
  ]);
  return {
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown",
    cores: navigator.hardwareConcurrency,
    memTotalKiB: Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0),
    kernel: Deno.osRelease(),
    loadavg: Deno.loadavg(),
    openFilesLimit: await version("bash", ["-c", "ulimit -n"]),
    deno: Deno.version.deno,
    bun: await version(bun),
    node: await version("node"),
    go: await version("go", ["version"]),
    commit: git,
  };
}

function freePort(used: Set<number>): number {
  for (let p = BASE_PORT; p < BASE_PORT + PORT_TRIES; p++) {
    if (!used.has(p) && portFree(p)) {
      used.add(p);
      return p;
    }
  }
  throw new Error(`no free port in ${BASE_PORT}..${BASE_PORT + PORT_TRIES}`);
}

/** Everything started and not yet stopped, so a deadline or signal can end it all. */
const live = { peer: null as RunningPeer | null, rig: null as Rig | null };

async function cleanup(): Promise<void> {
  await Promise.all([live.rig?.stop(), live.peer?.stop()]);
  live.rig = null;
  live.peer = null;
}

async function runPeer(
  spec: typeof PEERS[number],
  profile: Profile,
  tools: Toolchain,
  ports: Set<number>,
  shape: RigShape,
): Promise<PeerResult> {
  const bun = tools.bun;
  const result: PeerResult = {
    peer: spec.name,
    role: spec.role,
    runtime: spec.runtime,
    levels: [],
    unicast: [],
  };
  const port = freePort(ports);
  const dataDir = await Deno.makeTempDir({ prefix: "deno-pusher-bench-" });
  try {
    const launch = await spec.launch(
      tools,
      port,
      SECRET,
      dataDir,
    );
    if ("skip" in launch) {
      result.skipped = launch.skip;
      log(`${spec.name}: skipped: ${launch.skip}`);
      return result;
    }
    log(`${spec.name}: starting on :${port}`);
    const peer = live.peer = start(spec, port, launch);
    result.startupMs = Math.round(await peer.ready());
    result.baselineRssBytes = treeRssBytes(peer.pid);
    const most = Math.max(
      ...profile.levels,
      profile.unicastReceivers + (profile.soak?.idleConnections ?? 0),
    );
    const rig = live.rig = new Rig(bun, most, profile.deadlineMs, shape);
    result.loadgens = {
      receivers: rig.receivers.length,
      senders: rig.senders.length,
      socketsPerReceiver: Math.ceil(most / rig.receivers.length),
    };
    const cpu0 = rig.cpuMs();
    result.levels = await idleAndFanout(
      rig,
      peer,
      profile,
      result.baselineRssBytes,
      log,
    );
    await rig.close("fan");
    result.unicast = await unicast(rig, peer, profile, log);
    if (profile.soak?.peers.includes(spec.name)) {
      result.soak = await soak(rig, peer, profile, log);
    }
    result.loadgenCpuMs = Math.round(rig.cpuMs() - cpu0);
    if (peer.exited) {
      result.error = `exited with ${peer.exited.code}:\n${peer.logTail}`;
    }
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    log(`${spec.name}: failed: ${result.error}`);
  } finally {
    await cleanup();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  return result;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      profile: { type: "string", default: "quick" },
      peers: { type: "string" },
      bun: { type: "string", default: "bun" },
      deno: { type: "string", default: Deno.execPath() },
      docs: { type: "boolean", default: false },
      // Overrides for short development runs.
      levels: { type: "string" },
      rounds: { type: "string" },
      rates: { type: "string" },
      "rate-ms": { type: "string" },
      "no-soak": { type: "boolean", default: false },
      "cpu-prof": { type: "boolean", default: false },
      // The load-generator check: more, smaller processes must not change the numbers.
      "sockets-per-loadgen": { type: "string" },
      senders: { type: "string" },
      // e.g. 5000:1,2500:2: run every peer with each shape (sockets per holder:senders).
      shapes: { type: "string" },
      label: { type: "string" },
    },
  });
  const shape: RigShape = {
    socketsPerReceiver: Number(
      values["sockets-per-loadgen"] ?? DEFAULT_RIG.socketsPerReceiver,
    ),
    senders: Number(values.senders ?? DEFAULT_RIG.senders),
  };
  const chosen = PROFILES[values.profile as Profile["name"]];
  if (!chosen) {
    throw new Error(`unknown profile: ${values.profile} (quick or full)`);
  }
  const numbers = (s: string) => s.split(",").map(Number);
  const profile: Profile = {
    ...chosen,
    ...(values.levels ? { levels: numbers(values.levels) } : {}),
    ...(values.rounds ? { fanoutRounds: Number(values.rounds) } : {}),
    ...(values.rates ? { rates: numbers(values.rates) } : {}),
    ...(values["rate-ms"] ? { rateDurationMs: Number(values["rate-ms"]) } : {}),
    ...(values["no-soak"] ? { soak: undefined } : {}),
  };
  const wanted = values.peers?.split(",").map((s) => s.trim().toLowerCase());
  const specs = PEERS.filter((p) =>
    !wanted || wanted.some((w) => p.name.toLowerCase().includes(w))
  );
  const deadline = setTimeout(async () => {
    log(
      `bench: deadline of ${profile.deadlineMs} ms reached; stopping everything`,
    );
    await cleanup();
    Deno.exit(2);
  }, profile.deadlineMs);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await cleanup();
      Deno.exit(130);
    });
  }

  const started = new Date();
  const run: RunResult = {
    profile: profile.name,
    startedAt: started.toISOString(),
    durationS: 0,
    machine: await machine(values.bun),
    levels: profile.levels,
    rates: profile.rates,
    peers: [],
  };
  const ports = new Set<number>();
  // With --shapes, each peer runs once per load-generator shape, back to back, so that the shapes
  // meet the same noise from the shared cores; the rows are named "<peer> · <shape>".
  const shapes: [string, RigShape][] = values.shapes
    ? values.shapes.split(",").map((s) => {
      const [sockets, senders] = s.split(":").map(Number);
      const most = Math.max(...profile.levels, profile.unicastReceivers);
      return [
        `${Math.ceil(most / sockets)}+${senders} loadgens`,
        { socketsPerReceiver: sockets, senders },
      ];
    })
    : [["", shape]];
  for (const spec of specs) {
    for (const [label, rigShape] of shapes) {
      const result = await runPeer(
        spec,
        profile,
        {
          repo,
          bun: values.bun,
          deno: values.deno,
          cpuProfDir: values["cpu-prof"] ? `${resultsDir}/profiles` : undefined,
        },
        ports,
        rigShape,
      );
      if (label) result.peer = `${result.peer} · ${label}`;
      run.peers.push(result);
    }
  }
  run.durationS = Math.round((Date.now() - started.getTime()) / 1000);
  clearTimeout(deadline);

  await Deno.mkdir(resultsDir, { recursive: true });
  // A labelled run (e.g. the load-generator check) keeps its own files beside the profile's.
  const name = values.label ? `${profile.name}-${values.label}` : profile.name;
  const soakSvg = soakChart(run);
  const md = [
    `Profile \`${profile.name}\`${values.label ? ` (${values.label})` : ""}, ${run.startedAt}, ` +
    `${run.durationS} s; ${run.machine.cores} cores (${run.machine.cpu}), ` +
    `${Math.round(Number(run.machine.memTotalKiB) / 2 ** 20)} GiB, kernel ${run.machine.kernel}, ` +
    `open files ≤ ${run.machine.openFilesLimit}; Deno ${run.machine.deno}, Bun ${run.machine.bun}, ` +
    `Node ${run.machine.node}, ${run.machine.go}; commit ${run.machine.commit}; ` +
    `load generators: ${loadgenLine(run)}.`,
    "",
    ...(values.shapes
      ? [
        "**Load-generator check**: each peer with each load-generator shape, back to back.",
        "",
        shapeTable(run),
        "",
      ]
      : [
        table(run),
        "",
        "**Targets of issue 6** for deno-pusher:",
        "",
        targetTable(run),
        "",
      ]),
    `![fan-out latency and memory per connection against N](../bench/results/latest-${name}.svg)`,
    "",
    ...(soakSvg
      ? [
        "**(e) Soak**: /send at a steady rate to 1,000 receivers beside idle connections.",
        "",
        soakTable(run),
        "",
        `![soak: RSS and p99 over time](../bench/results/latest-${name}-soak.svg)`,
        "",
      ]
      : []),
    "<details><summary>load generators' CPU against the server's</summary>",
    "",
    loadgenTable(run),
    "",
    "</details>",
    "",
    "<details><summary>every /send rate</summary>",
    "",
    rateTable(run),
    "",
    "</details>",
    "",
  ].join("\n");
  const stamp = run.startedAt.replace(/[:.]/g, "-");
  const json = JSON.stringify(run, null, 2);
  await Deno.writeTextFile(`${resultsDir}/${name}-${stamp}.json`, json);
  await Deno.writeTextFile(`${resultsDir}/latest-${name}.json`, json);
  await Deno.writeTextFile(`${resultsDir}/latest-${name}.md`, md);
  await Deno.writeTextFile(`${resultsDir}/latest-${name}.svg`, chart(run));
  if (soakSvg) {
    await Deno.writeTextFile(`${resultsDir}/latest-${name}-soak.svg`, soakSvg);
  }
  if (values.docs) await updateDocs(name, md);
  console.log(md);
}

/** The load-generator processes the run used, e.g. "3 socket holders (≤ 5000 each) + 1 sender". */
function loadgenLine(run: RunResult): string {
  const l = run.peers.find((p) => p.loadgens)?.loadgens;
  return l
    ? `${l.receivers} socket holders (≤ ${l.socketsPerReceiver} sockets each) + ${l.senders} ` +
      `/send caller${l.senders > 1 ? "s" : ""}`
    : "none ran";
}

/** Replaces the profile's section of docs/BENCHMARKS.md between its markers. */
async function updateDocs(name: string, md: string): Promise<void> {
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
    doc.slice(0, a + begin.length) + "\n" + md + doc.slice(b),
  );
  // The repo's `deno fmt --check` covers docs/, so the generated tables are laid out by it.
  const repoConfig = `${repo}/deno.json`;
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "--config", repoConfig, path],
  })
    .output();
  log(`updated ${path}`);
}

if (import.meta.main) await main();
