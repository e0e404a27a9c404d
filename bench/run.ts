/**
 * The benchmark coordinator: starts each peer in turn, drives the scenarios against it with the
 * same load generators, and writes bench/results/ (JSON with machine info, markdown, SVG chart).
 *
 *   deno run -A bench/run.ts [--profile quick|full] [--peers a,b] [--bun PATH] [--docs]
 *
 * Every process it starts is killed before the next peer starts, and the whole run stops itself at
 * the profile's deadline. All traffic stays on 127.0.0.0/8.
 */
import { parseArgs } from "node:util";
import { PEERS, portFree, RunningPeer, start, type Toolchain, treeRssBytes } from "./peers.ts";
import { type Profile, PROFILES } from "./profiles.ts";
import { chart, rateTable, type RunResult, table, targets } from "./report.ts";
import { idleAndFanout, type PeerResult, Rig, SECRET, soak, unicast } from "./scenarios.ts";

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
    const rig = live.rig = new Rig(bun, most, profile.deadlineMs);
    const cpu0 = await rig.cpuMs();
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
    result.loadgenCpuMs = Math.round(await rig.cpuMs() - cpu0);
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
    },
  });
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
  for (const spec of specs) {
    run.peers.push(
      await runPeer(spec, profile, {
        repo,
        bun: values.bun,
        deno: values.deno,
        cpuProfDir: values["cpu-prof"] ? `${resultsDir}/profiles` : undefined,
      }, ports),
    );
  }
  run.durationS = Math.round((Date.now() - started.getTime()) / 1000);
  clearTimeout(deadline);

  const md = [
    `Profile \`${profile.name}\`, ${run.startedAt}, ${run.durationS} s; ` +
    `${run.machine.cores} cores (${run.machine.cpu}), Deno ${run.machine.deno}, ` +
    `${run.machine.bun}, ${run.machine.node}, commit ${run.machine.commit}.`,
    "",
    table(run),
    "",
    ...targets(run),
    "",
    "<details><summary>every /send rate</summary>",
    "",
    rateTable(run),
    "",
    "</details>",
    "",
  ].join("\n");
  await Deno.mkdir(resultsDir, { recursive: true });
  const stamp = run.startedAt.replace(/[:.]/g, "-");
  await Deno.writeTextFile(
    `${resultsDir}/${profile.name}-${stamp}.json`,
    JSON.stringify(run, null, 2),
  );
  await Deno.writeTextFile(
    `${resultsDir}/latest-${profile.name}.json`,
    JSON.stringify(run, null, 2),
  );
  await Deno.writeTextFile(`${resultsDir}/latest-${profile.name}.md`, md);
  await Deno.writeTextFile(
    `${resultsDir}/latest-${profile.name}.svg`,
    chart(run),
  );
  if (values.docs) await updateDocs(profile.name, md);
  console.log(md);
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
