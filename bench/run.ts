/**
 * The benchmark coordinator: starts each peer in turn, drives the scenarios against it with the
 * same load generators, and writes bench/results/ (JSON with machine info, markdown, SVG chart).
 *
 *   deno run -A bench/run.ts [--profile quick|full] [--peers a,b] [--bun PATH] [--docs]
 *     [--levels 1000,10000] [--rounds N] [--rates 2000,0] [--rate-ms MS] [--no-soak] [--cpu-prof]
 *     [--sockets-per-loadgen N] [--senders N] [--shapes 5000:1,2500:2] [--label NAME]
 *     [--durable-repeats N] [--durable-only]
 *
 * After the peers, the profile's durable comparison (issue 11) runs deno-pusher's durable default
 * beside its stripped configuration on both runtimes, /send only, the two alternating in each
 * repeat. `--durable-repeats 0` leaves it out, `--durable-only` runs nothing else; a `--peers`
 * filter that names no deno-pusher peer, or `--shapes`, leaves it out too.
 *
 * Every process it starts is killed before the next peer starts, and the whole run stops itself at
 * the profile's deadline. All traffic stays on 127.0.0.0/8.
 */
import { parseArgs } from "node:util";
import {
  DURABLE_PAIRS,
  PEERS,
  type PeerSpec,
  portFree,
  PRODUCT_CONFIGS,
  type ProductConfig,
  RunningPeer,
  start,
  type Toolchain,
  treeRssBytes,
  updateDocs,
  version,
} from "./peers.ts";
import { DURABLE_FIXED_RATE, type Profile, PROFILES } from "./profiles.ts";
import {
  chart,
  type DurableRun,
  durableSummary,
  durableTable,
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
  WARMUP_MS,
  WARMUP_RATE,
} from "./scenarios.ts";

/** First port tried for peers; away from the server's default 8181 so a dev server can keep it. */
const BASE_PORT = 18_181;
/** Ports tried past BASE_PORT before giving up. */
const PORT_TRIES = 200;
/**
 * Time one durable-comparison run needs at most (ms): start-up, 1,000 connects, the warm-up and the
 * rates, with room to spare. A run that could not finish before the profile's deadline is not
 * started, so the results so far are still written.
 */
const DURABLE_RUN_RESERVE_MS = 40_000;

const repo = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const resultsDir = `${repo}/bench/results`;

function log(s: string): void {
  console.error(s);
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

/** Bytes of every file under `dir` (0 when it is gone): what a peer wrote to its data dir. */
async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) total += await dirBytes(path);
      else if (entry.isFile) total += (await Deno.stat(path)).size;
    }
  } catch { /* gone or unreadable: counts as empty */ }
  return total;
}

/**
 * Starts `spec`, runs the profile's scenarios against it (the idle and fan-out levels unless
 * `profile.levels` is empty, then /send at each rate, then the soak when the profile names the
 * peer) and stops everything it started. A product peer's data dir is measured after it stops.
 */
async function runPeer(
  spec: PeerSpec,
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
    ...(spec.config ? { config: spec.config } : {}),
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
    if (profile.levels.length) {
      result.levels = await idleAndFanout(
        rig,
        peer,
        profile,
        result.baselineRssBytes,
        log,
      );
      await rig.close("fan");
    }
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
    if (spec.role === "product") result.dataDirBytes = await dirBytes(dataDir);
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  return result;
}

/**
 * Issue 11's comparison: each runtime's deno-pusher in the stripped and the durable configuration,
 * /send only, `repeats` times. Within a repeat the two run back to back, and which goes first
 * alternates from one repeat to the next, so that drift in the shared cores' load falls on both.
 */
async function durableComparison(
  profile: Profile,
  tools: Toolchain,
  ports: Set<number>,
  wanted: string[] | undefined,
  repeats: number,
  shape: RigShape,
  endsAt: number,
): Promise<DurableRun | undefined> {
  const durable = profile.durable;
  if (!durable || repeats < 1) return undefined;
  const pairs = DURABLE_PAIRS.filter((p) =>
    !wanted ||
    wanted.some((w) => p.configs.stripped.name.toLowerCase().includes(w))
  );
  if (!pairs.length) return undefined;
  // Only the /send scenario: no levels, no soak; the rates and their length are the comparison's.
  const sendOnly: Profile = {
    ...profile,
    levels: [],
    rates: durable.rates,
    rateDurationMs: durable.rateDurationMs,
    soak: undefined,
  };
  const run: DurableRun = {
    rates: durable.rates,
    fixedRate: DURABLE_FIXED_RATE,
    rateDurationMs: durable.rateDurationMs,
    repeats,
    receivers: profile.unicastReceivers,
    configs: describeConfigs(),
    durationS: 0,
    loadavg: { before: Deno.loadavg()[0], after: NaN },
    runs: [],
    summary: [],
    verdict: "",
  };
  const started = Date.now();
  for (let repeat = 0; repeat < repeats; repeat++) {
    const order: ProductConfig[] = repeat % 2 === 0
      ? ["stripped", "durable"]
      : ["durable", "stripped"];
    for (const pair of pairs) {
      for (const config of order) {
        const spec = pair.configs[config];
        if (Date.now() + DURABLE_RUN_RESERVE_MS > endsAt) {
          run.stoppedEarly = `the profile's deadline was near; stopped before ${spec.name}, ` +
            `repeat ${repeat + 1}`;
          log(`durable comparison: ${run.stoppedEarly}`);
          return finishDurable(run, started);
        }
        log(`durable comparison, repeat ${repeat + 1} of ${repeats}:`);
        const result = await runPeer(spec, sendOnly, tools, ports, shape);
        result.repeat = repeat + 1;
        run.runs.push(result);
      }
    }
  }
  return finishDurable(run, started);
}

function finishDurable(run: DurableRun, started: number): DurableRun {
  run.durationS = Math.round((Date.now() - started) / 1000);
  run.loadavg.after = Deno.loadavg()[0];
  const { summary, verdict } = durableSummary(run);
  run.summary = summary;
  run.verdict = verdict;
  return run;
}

/** Each configuration's settings as the report states them. */
function describeConfigs(): Record<ProductConfig, string> {
  const describe = (c: ProductConfig) => {
    const { flags, env } = PRODUCT_CONFIGS[c];
    const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
    return [
      flags.length ? flags.join(" ") : "no setting flags (defaults)",
      vars,
    ]
      .filter(Boolean).join("; ");
  };
  return { stripped: describe("stripped"), durable: describe("durable") };
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
      // Issue 11's durable comparison: how many repeats (0 leaves it out), or it alone.
      "durable-repeats": { type: "string" },
      "durable-only": { type: "boolean", default: false },
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
  const endsAt = Date.now() + profile.deadlineMs;
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
  for (const spec of values["durable-only"] ? [] : specs) {
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
  if (!values.shapes) {
    run.durable = await durableComparison(
      profile,
      {
        repo,
        bun: values.bun,
        deno: values.deno,
      },
      ports,
      wanted,
      Number(values["durable-repeats"] ?? profile.durable?.repeats ?? 0),
      shape,
      endsAt,
    );
  }
  run.durationS = Math.round((Date.now() - started.getTime()) / 1000);
  clearTimeout(deadline);

  await Deno.mkdir(resultsDir, { recursive: true });
  // A labelled run (e.g. the load-generator check) keeps its own files beside the profile's; so
  // does a run of the durable comparison alone.
  const durableOnly = values["durable-only"];
  const label = values.label ?? (durableOnly ? "durable" : undefined);
  const name = label ? `${profile.name}-${label}` : profile.name;
  const soakSvg = soakChart(run);
  const durable = run.durable
    ? [
      durableSection(run.durable),
      "",
      "<details><summary>every /send run of the durable comparison</summary>",
      "",
      rateTable({
        ...run,
        peers: run.durable.runs.map((p) => ({ ...p, peer: `${p.peer} #${p.repeat}` })),
      }),
      "",
      "</details>",
      "",
    ]
    : [];
  const header = `Profile \`${profile.name}\`${label ? ` (${label})` : ""}, ${run.startedAt}, ` +
    `${run.durationS} s; ${run.machine.cores} cores (${run.machine.cpu}), ` +
    `${Math.round(Number(run.machine.memTotalKiB) / 2 ** 20)} GiB, kernel ${run.machine.kernel}, ` +
    `open files ≤ ${run.machine.openFilesLimit}; Deno ${run.machine.deno}, Bun ${run.machine.bun}, ` +
    `Node ${run.machine.node}, ${run.machine.go}; commit ${run.machine.commit}; ` +
    `load generators: ${loadgenLine(run)}.`;
  const md = durableOnly ? [header, "", ...durable].join("\n") : [
    header,
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
        ...durable,
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
  if (!durableOnly) await Deno.writeTextFile(`${resultsDir}/latest-${name}.svg`, chart(run));
  if (soakSvg) {
    await Deno.writeTextFile(`${resultsDir}/latest-${name}-soak.svg`, soakSvg);
  }
  if (values.docs) log(`updated ${await updateDocs(name, md)}`);
  console.log(md);
}

/** Issue 11's comparison: what ran, its table and its verdict line. */
function durableSection(d: DurableRun): string {
  const receivers = d.receivers.toLocaleString("en-US");
  const rates = d.rates.map((r) => r ? `${r}/s` : "closed-loop max").join(" and ");
  const repeats = `${d.repeats} repeat${d.repeats === 1 ? "" : "s"}`;
  return [
    `**Durable default against stripped** (issue 11): deno-pusher on each runtime in both ` +
    `configurations, the /send scenario only (a fresh process each run: ${receivers} receivers, ` +
    `the ${WARMUP_MS / 1000}-s warm-up at ${WARMUP_RATE}/s, then ${rates}, ` +
    `${d.rateDurationMs / 1000} s each), ${repeats} in which the two configurations run back to ` +
    `back, which one first alternating; each cell is the median (min–max) of the repeats. ` +
    `${d.durationS} s in all; load average ${d.loadavg.before.toFixed(1)} before and ` +
    `${d.loadavg.after.toFixed(1)} after (2 cores).`,
    "",
    `- stripped: ${d.configs.stripped}`,
    `- durable default: ${d.configs.durable}`,
    `- what the sends target: \`GET /send?uid=u<i>&message=…\` round-robin over ${receivers} ` +
    `uids, each held by one connected receiver, in both configurations: every call answers 200 ` +
    `and its message is delivered, written to the message log and kept in history. No call ` +
    `carries an Idempotency-Key, so the idempotency store is open but never written.`,
    ...(d.stoppedEarly ? [`- **stopped early**: ${d.stoppedEarly}`] : []),
    "",
    durableTable(d),
    "",
    d.verdict,
  ].join("\n");
}

/** The load-generator processes the run used, e.g. "3 socket holders (≤ 5000 each) + 1 sender". */
function loadgenLine(run: RunResult): string {
  const l = [...run.peers, ...run.durable?.runs ?? []].find((p) => p.loadgens)?.loadgens;
  return l
    ? `${l.receivers} socket holders (≤ ${l.socketsPerReceiver} sockets each) + ${l.senders} ` +
      `/send caller${l.senders > 1 ? "s" : ""}`
    : "none ran";
}

if (import.meta.main) await main();
