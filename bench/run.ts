/**
 * The benchmark coordinator: starts each peer in turn, drives the scenarios against it with the
 * same load generators, and writes bench/results/ (JSON with machine info, markdown, SVG chart).
 *
 *   deno run -A bench/run.ts [--profile quick|full] [--peers a,b] [--bun PATH] [--docs]
 *     [--repeats N] [--levels 1000,10000] [--rounds N] [--rates 2000,0] [--rate-ms MS] [--no-soak] [--storm]
 *     [--cpu-prof] [--sockets-per-loadgen N] [--senders N] [--shapes 5000:1,2500:2] [--label NAME]
 *
 * Every peer runs `--repeats` times (the profile's, 3), interleaved: every peer once, in PEERS
 * order, then every peer again, each run a fresh process with a fresh data dir. The report gives
 * the median (min–max) of the repeats and calls a difference only where the ranges do not overlap.
 *
 * Every process it starts is killed before the next run starts. A run that could not finish before
 * the profile's deadline is not started, so the results so far are still written; at the deadline
 * itself the whole run stops. All traffic stays on 127.0.0.0/8.
 */
import {
  connectionsNeeded,
  reconnectStorm,
  sendCost,
  sendCostTable,
  STORM_PROFILES,
  stormTable,
} from "./storm.ts";
import { parseArgs } from "node:util";
import {
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
import { type Profile, PROFILES } from "./profiles.ts";
import {
  chart,
  defaultTable,
  ISSUE11_RATE,
  loadgenTable,
  rateTable,
  type RunResult,
  shapeTable,
  soakChart,
  soakTable,
  table,
  targets16Table,
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
 * Time the first run is assumed to need (ms), before any has finished: start-up, the quick
 * profile's scenarios and the stops, with room to spare. A run that could not finish before the
 * profile's deadline is not started.
 */
const FIRST_RUN_RESERVE_MS = 60_000;
/** Later runs are assumed to take this many times the longest run so far, its soak left out. */
const RUN_RESERVE_FACTOR = 1.25;

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

/** The longest run of each peer so far (ms), its fixed-length steps left out: see reserveMs. */
const usualMs = new Map<string, number>();

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

/** What a scenario step works with: one started peer, the load generators, the run's result. */
interface StepContext {
  rig: Rig;
  peer: RunningPeer;
  profile: Profile;
  /** The run's result so far; the step adds its part. */
  result: PeerResult;
}

/**
 * One scenario of a peer's run. A run starts the peer once and runs each step whose `when` holds,
 * in order, against the same process and load generators; each step closes the connections it
 * opened. A new scenario is a new entry in STEPS, with its result a new field of PeerResult.
 */
interface ScenarioStep {
  name: string;
  /** Most connections the step holds at once, so that the rig has the socket holders for it. */
  connections(profile: Profile): number;
  /** Whether it runs for `spec` in `repeat` (1-based); absent: on every peer in every repeat. */
  when?(spec: PeerSpec, repeat: number, profile: Profile): boolean;
  /**
   * How long it takes (ms), for a step that runs in some runs only and has a fixed length: the
   * deadline check adds it to the run's usual length, learned from the runs so far without it.
   */
  fixedMs?(profile: Profile): number;
  run(ctx: StepContext): Promise<void>;
}

const STEPS: ScenarioStep[] = [
  {
    name: "(a) idle connections, (b) broadcast and (d) group fan-out",
    connections: (profile) => Math.max(0, ...profile.levels),
    when: (_spec, _repeat, profile) => profile.levels.length > 0,
    async run({ rig, peer, profile, result }) {
      result.levels = await idleAndFanout(
        rig,
        peer,
        profile,
        result.baselineRssBytes ?? 0,
        log,
      );
      await rig.close("fan");
    },
  },
  {
    name: "(c) unicast /send",
    connections: (profile) => profile.unicastReceivers,
    async run({ rig, peer, profile, result }) {
      result.unicast = await unicast(rig, peer, profile, log);
    },
  },
  {
    name: "(g) /send latency beside few and many idle connections",
    connections: (profile) => {
      const { storm, sendCost } = STORM_PROFILES[profile.name];
      return connectionsNeeded(storm, sendCost);
    },
    when: (spec, _repeat, profile) => profile.storm && stormPeer(spec),
    async run({ rig, peer, profile, result }) {
      result.sendCost = await sendCost(
        rig,
        peer,
        STORM_PROFILES[profile.name].sendCost,
        log,
      );
    },
  },
  {
    // After (g): the storm ends by closing every socket, whose clean-up would land in (g)'s tail.
    name: "(h) reconnect storm",
    connections: (profile) => STORM_PROFILES[profile.name].storm.connections,
    when: (spec, _repeat, profile) => profile.storm && stormPeer(spec),
    async run({ rig, peer, profile, result }) {
      result.storm = await reconnectStorm(
        rig,
        peer,
        STORM_PROFILES[profile.name].storm,
        log,
      );
    },
  },
  {
    name: "(e) soak",
    connections: (profile) => profile.unicastReceivers + (profile.soak?.idleConnections ?? 0),
    // Once per peer it names: its stability over minutes does not need repeating.
    when: (spec, repeat, profile) => repeat === 1 && !!profile.soak?.peers.includes(spec.name),
    fixedMs: (profile) => (profile.soak?.minutes ?? 0) * 60_000,
    async run({ rig, peer, profile, result }) {
      result.soak = await soak(rig, peer, profile, log);
    },
  },
];

/**
 * Who runs issue 16's storm and /send-cost steps: what its targets compare, deno-pusher's default
 * configuration and the like-for-like ceilings (each step takes a minute or two at 19,000).
 */
const stormPeer = (spec: PeerSpec) =>
  spec.role === "ceiling" || (spec.role === "product" && spec.config === "default");

/** The steps that run for `spec` in `repeat`. */
const stepsFor = (spec: PeerSpec, repeat: number, profile: Profile) =>
  STEPS.filter((s) => !s.when || s.when(spec, repeat, profile));

/**
 * Starts `spec`, runs its steps for this repeat against it (see STEPS) and stops everything it
 * started. A product peer's data dir is measured after it stops, then removed.
 */
async function runPeer(
  spec: PeerSpec,
  repeat: number,
  profile: Profile,
  tools: Toolchain,
  ports: Set<number>,
  shape: RigShape,
): Promise<PeerResult> {
  const began = performance.now();
  let fixedStepsMs = 0;
  const result: PeerResult = {
    peer: spec.name,
    role: spec.role,
    runtime: spec.runtime,
    ...(spec.config ? { config: spec.config } : {}),
    repeat,
    levels: [],
    unicast: [],
  };
  const port = freePort(ports);
  const dataDir = await Deno.makeTempDir({ prefix: "deno-pusher-bench-" });
  try {
    const launch = await spec.launch(tools, port, SECRET, dataDir);
    if ("skip" in launch) {
      result.skipped = launch.skip;
      log(`${spec.name}: skipped: ${launch.skip}`);
      return result;
    }
    log(`${spec.name} (repeat ${repeat}): starting on :${port}`);
    const peer = live.peer = start(spec, port, launch);
    result.startupMs = Math.round(await peer.ready());
    result.baselineRssBytes = treeRssBytes(peer.pid);
    const steps = stepsFor(spec, repeat, profile);
    const most = Math.max(1, ...steps.map((s) => s.connections(profile)));
    const rig = live.rig = new Rig(tools.bun, most, profile.deadlineMs, shape);
    result.loadgens = {
      receivers: rig.receivers.length,
      senders: rig.senders.length,
      socketsPerReceiver: Math.ceil(most / rig.receivers.length),
    };
    const cpu0 = rig.cpuMs();
    for (const step of steps) {
      const stepBegan = performance.now();
      await step.run({ rig, peer, profile, result });
      if (step.fixedMs) fixedStepsMs += performance.now() - stepBegan;
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
    result.wallMs = Math.round(performance.now() - began);
    if (!result.skipped) {
      const usual = result.wallMs - fixedStepsMs;
      usualMs.set(spec.name, Math.max(usual, usualMs.get(spec.name) ?? 0));
    }
  }
  return result;
}

/**
 * How long a run of `spec` in `repeat` may take (ms): RUN_RESERVE_FACTOR × the longest run of the
 * same peer so far (of any peer before it has run), fixed-length steps left out, plus those of its
 * steps that run this time.
 */
function reserveMs(spec: PeerSpec, repeat: number, profile: Profile): number {
  const longest = usualMs.get(spec.name) ?? Math.max(0, ...usualMs.values());
  const fixed = stepsFor(spec, repeat, profile).reduce(
    (a, s) => a + (s.fixedMs?.(profile) ?? 0),
    0,
  );
  return (longest ? longest * RUN_RESERVE_FACTOR : FIRST_RUN_RESERVE_MS) +
    fixed;
}

/** Each configuration's settings as the report states them. */
function describeConfig(config: ProductConfig): string {
  const { flags, env } = PRODUCT_CONFIGS[config];
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
  return [
    flags.length ? `\`${flags.join(" ")}\`` : "no setting flags (defaults)",
    vars && `\`${vars}\``,
  ]
    .filter(Boolean).join("; ");
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
      repeats: { type: "string" },
      // Overrides for short development runs.
      levels: { type: "string" },
      rounds: { type: "string" },
      rates: { type: "string" },
      "rate-ms": { type: "string" },
      "no-soak": { type: "boolean", default: false },
      // Issue 16's storm and /send-cost scenarios on a quick run too (the full profile has them).
      storm: { type: "boolean", default: false },
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
    ...(values.storm ? { storm: true } : {}),
    ...(values.repeats ? { repeats: Number(values.repeats) } : {}),
  };
  if (!(profile.repeats >= 1)) {
    throw new Error(`--repeats must be at least 1: ${values.repeats}`);
  }
  // A --peers entry that is a whole peer name picks that peer alone (so "deno-pusher (Deno)"
  // leaves its default configuration out); any other entry picks every name containing it.
  const wanted = values.peers?.split(",").map((s) => s.trim().toLowerCase());
  const names = new Set(PEERS.map((p) => p.name.toLowerCase()));
  const picks = (name: string, w: string) => names.has(w) ? name === w : name.includes(w);
  const specs = PEERS.filter((p) => !wanted || wanted.some((w) => picks(p.name.toLowerCase(), w)));
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
    repeats: profile.repeats,
    peers: [],
  };
  const ports = new Set<number>();
  const tools: Toolchain = {
    repo,
    bun: values.bun,
    deno: values.deno,
    cpuProfDir: values["cpu-prof"] ? `${resultsDir}/profiles` : undefined,
  };
  // With --shapes, each peer runs once per load-generator shape, back to back, in every repeat,
  // so that the shapes meet the same noise from the shared cores.
  const shapes: RigShape[] = values.shapes
    ? values.shapes.split(",").map((s) => {
      const [socketsPerReceiver, senders] = s.split(":").map(Number);
      return { socketsPerReceiver, senders };
    })
    : [shape];
  // A peer this machine cannot run (its toolchain is missing) is tried in the first repeat only.
  const skipped = new Set<string>();
  runs: for (let repeat = 1; repeat <= profile.repeats; repeat++) {
    for (const spec of specs.filter((s) => !skipped.has(s.name))) {
      for (const rigShape of shapes) {
        if (Date.now() + reserveMs(spec, repeat, profile) > endsAt) {
          run.stoppedEarly = `the profile's deadline was near; stopped before ${spec.name}, ` +
            `repeat ${repeat} of ${profile.repeats}`;
          log(`bench: ${run.stoppedEarly}`);
          break runs;
        }
        const result = await runPeer(
          spec,
          repeat,
          profile,
          tools,
          ports,
          rigShape,
        );
        if (result.skipped) skipped.add(spec.name);
        run.peers.push(result);
      }
    }
  }
  run.durationS = Math.round((Date.now() - started.getTime()) / 1000);
  clearTimeout(deadline);

  await Deno.mkdir(resultsDir, { recursive: true });
  // A labelled run (e.g. the load-generator check) keeps its own files beside the profile's.
  const label = values.label;
  const name = label ? `${profile.name}-${label}` : profile.name;
  const soakSvg = soakChart(run);
  const md = [
    header(run, label),
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
        ...targets16Section(run),
        ...defaultSection(run),
      ]),
    `![fan-out latency and memory per connection against N](../bench/results/latest-${name}.svg)`,
    "",
    ...(soakSvg
      ? [
        "**(e) Soak**: /send at a steady rate to 1,000 receivers beside idle connections, once " +
        "per peer, after its first repeat.",
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
    "<details><summary>every /send run of every repeat</summary>",
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
  if (values.docs) log(`updated ${await updateDocs(name, md)}`);
  console.log(md);
}

/** The run's first line: profile, repeats, machine, toolchains, commit and load generators. */
function header(run: RunResult, label: string | undefined): string {
  const m = run.machine;
  const repeats = `${run.repeats} repeat${run.repeats === 1 ? "" : "s"} of every peer, interleaved`;
  return `Profile \`${run.profile}\`${label ? ` (${label})` : ""}, ${run.startedAt}, ` +
    `${run.durationS} s, ${repeats}; ${m.cores} cores (${m.cpu}), ` +
    `${Math.round(Number(m.memTotalKiB) / 2 ** 20)} GiB, kernel ${m.kernel}, ` +
    `open files ≤ ${m.openFilesLimit}; Deno ${m.deno}, Bun ${m.bun}, ` +
    `Node ${m.node}, ${m.go}; commit ${m.commit}; ` +
    `load generators: ${loadgenLine(run)}.` +
    (run.stoppedEarly ? ` **Stopped early**: ${run.stoppedEarly}.` : "");
}

/** Issue 16's targets: what they compare, and the table. */
function targets16Section(run: RunResult): string[] {
  return [
    "**Targets of issue 16**: deno-pusher's default configuration against its own runtime's " +
    "like-for-like ceiling (`ceiling (Deno, node:http + ws)` on Deno, the server deno-pusher runs " +
    "on there; `ceiling (Bun, ws.send loop)` on the Bun executable), from this run. The verdict comes from the ratio of the medians; " +
    "\"(every repeat)\" says that each repeat's own ratio (repeat i's deno-pusher against repeat " +
    "i's ceiling) agrees with it. The stripped configuration's ratio is there for reference.",
    "",
    targets16Table(run),
    "",
    ...stormSections(run),
  ];
}

/** Issue 16's reconnect storm and /send-cost tables, when the run had them. */
function stormSections(run: RunResult): string[] {
  const costs = run.peers.flatMap((p) => p.sendCost ? [p.sendCost] : []);
  const storms = run.peers.flatMap((p) => p.storm ? [p.storm] : []);
  return [
    ...(costs.length
      ? [
        "**(g) A /send costs O(1)**: /send latency beside few and many idle connections, each " +
        "idle one in its own group as well as `g`.",
        "",
        sendCostTable(costs),
        "",
      ]
      : []),
    ...(storms.length
      ? [
        "**(h) Reconnect storm**: every connection dropped, then all reconnect at once.",
        "",
        stormTable(storms),
        "",
      ]
      : []),
  ];
}

/** Issue 11's figures, now from the main run: what the two configurations are, and the table. */
function defaultSection(run: RunResult): string[] {
  const rate = ISSUE11_RATE.toLocaleString("en-US");
  return [
    `**Default against stripped** (issue 11's figures): deno-pusher's /send closed-loop ` +
    `throughput and p99 at ${rate}/s in the two configurations, from the scenario (c) runs ` +
    `above (after the ${WARMUP_MS / 1000}-s warm-up at ${WARMUP_RATE}/s, every call to one of ` +
    `the 1,000 connected uids, so each is delivered and, in the default configuration, logged and ` +
    `kept in history; no call carries an Idempotency-Key).`,
    "",
    `- stripped: ${describeConfig("stripped")}`,
    `- default: ${describeConfig("default")}`,
    "",
    defaultTable(run),
    "",
  ];
}

/** The load-generator processes the run used, e.g. "3 socket holders (≤ 5000 each) + 1 sender". */
function loadgenLine(run: RunResult): string {
  const l = run.peers.find((p) => p.loadgens)?.loadgens;
  return l
    ? `${l.receivers} socket holders (≤ ${l.socketsPerReceiver} sockets each) + ${l.senders} ` +
      `/send caller${l.senders > 1 ? "s" : ""}`
    : "none ran";
}

if (import.meta.main) await main();
