/**
 * Turns a run's results into the markdown tables `make bench` prints, the target checks of issue 6
 * (a table that says plainly where deno-pusher is behind), issue 11's durable-default comparison,
 * the load-generator CPU check, the soak summary, and SVG charts: fan-out latency and memory per
 * connection against N, and the soak.
 */
import type { ClusterCpu, ClusterRun, Topology, TopologyRun } from "./cluster.ts";
import type { FanoutResult, LevelResult, PeerResult, RateResult } from "./scenarios.ts";
import { median, type Spread, spread } from "./stats.ts";

/** A whole run as written to bench/results/*.json. */
export interface RunResult {
  profile: string;
  startedAt: string;
  durationS: number;
  machine: Record<string, unknown>;
  levels: number[];
  rates: number[];
  peers: PeerResult[];
  /** Issue 11's durable-default comparison, when it ran. */
  durable?: DurableRun;
}

/** Issue 11's comparison as run: every repeat's raw result, and the summary drawn from them. */
export interface DurableRun {
  /** /send rates (calls per second), 0 meaning closed-loop. */
  rates: number[];
  /** The fixed rate whose p99 the issue bounds. */
  fixedRate: number;
  rateDurationMs: number;
  repeats: number;
  /** Unicast receivers, one uid each: what the /send calls target, round-robin. */
  receivers: number;
  /** Each configuration's settings, as the report states them. */
  configs: { stripped: string; durable: string };
  /** Set when the deadline cut the comparison short, saying where. */
  stoppedEarly?: string;
  /** Wall time of the whole comparison (s). */
  durationS: number;
  /**
   * The machine's 1-minute load average when the comparison began and ended: with 2 cores, much
   * above 2 means other work competed with the server and the load generators.
   */
  loadavg: { before: number; after: number };
  /** Every run, in the order they ran; `config` and `repeat` say which it was. */
  runs: PeerResult[];
  summary: DurableSummary[];
  /** The verdict line printed under the table. */
  verdict: string;
}

/** One configuration on one runtime over the repeats: each number's median and min–max. */
export interface DurableSide {
  peer: string;
  /** Answered 200s per second, closed-loop. */
  maxRate: Spread;
  /** Send-to-receive p99 (ms) of the closed loop. */
  maxP99Ms: Spread;
  /** Achieved rate (calls/s) at the fixed rate. */
  fixedRate: Spread;
  /** Send-to-receive p99 (ms) at the fixed rate. */
  fixedP99Ms: Spread;
  /** Calls answered other than 200, or failed, over every rate and repeat. */
  failed: number;
  /** Calls the open-loop sender shed (over its in-flight limit), over every repeat. */
  shed: number;
  /** Accepted messages no receiver had by the end of the run, over every rate and repeat. */
  lost: number;
  /** Bytes left in the data dir after the server stopped. */
  dataDirBytes: Spread;
  /** Runs that failed or were skipped, with why. */
  problems: string[];
}

/** One runtime's comparison and its verdict against issue 11's targets. */
export interface DurableSummary {
  runtime: string;
  stripped: DurableSide;
  durable: DurableSide;
  /** Median durable throughput ÷ median stripped throughput. */
  throughputRatio: number;
  /** Each repeat's durable ÷ stripped throughput (the two ran back to back). */
  pairedThroughputRatio: Spread;
  /** Median durable p99 ÷ median stripped p99, closed-loop and at the fixed rate. */
  maxP99Ratio: number;
  fixedP99Ratio: number;
  /** Whether the durable default keeps DURABLE_THROUGHPUT_TARGET of the stripped throughput. */
  throughputMet: boolean;
  /** Whether the durable default's p99 at the fixed rate is under DURABLE_P99_TARGET_MS. */
  latencyMet: boolean;
}

/** The issue's bound on deno-pusher against its runtime's bare ceiling (fan-out and throughput). */
const CEILING_RATIO = 1.2;
/** Issue 11: the durable default keeps at least this share of the stripped /send throughput. */
export const DURABLE_THROUGHPUT_TARGET = 0.7;
/** Issue 11: the durable default's /send p99 at the fixed rate stays under this (ms). */
export const DURABLE_P99_TARGET_MS = 10;
/**
 * Share of the fixed rate a run must achieve for its p99 to be the p99 at that rate: the open-loop
 * sender sheds calls past its in-flight limit, so a server that cannot keep up is measured at less.
 */
const FIXED_RATE_REACHED = 0.98;

const fmt = (n: number | undefined, digits = 1) =>
  n === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits);
const kb = (bytes: number | undefined) => bytes === undefined ? "–" : fmt(bytes / 1024);
const count = (n: number) => n >= 1000 ? `${n / 1000}k` : String(n);
const mib = (bytes: number) => fmt(bytes / 2 ** 20);

/** The fastest /send run, by achieved rate. */
export function bestThroughput(p: PeerResult): RateResult | undefined {
  return [...p.unicast].sort((a, b) => b.achievedRate - a.achievedRate)[0];
}

/** The highest fixed rate every measured peer ran (latency is compared there, not at max). */
function latencyRate(run: RunResult): number {
  return Math.max(0, ...run.rates.filter((r) => r > 0));
}

const measured = (p: PeerResult) => !p.skipped && !p.error;
const at = (p: PeerResult, n: number) => p.levels.find((l) => l.connections === n);
const biggest = (run: RunResult) => Math.max(...run.levels);

type Kind = "fanout" | "group";
const KIND_NAME: Record<Kind, string> = { fanout: "broadcast", group: "group" };

/** One metric with a target: how to read it, and which way is better. */
interface Metric {
  name: string;
  unit: string;
  get: (p: PeerResult) => number | undefined;
  higherIsBetter: boolean;
  /** Whether the issue bounds it against the bare ceiling of the same runtime. */
  ceilingBound: boolean;
}

function metrics(run: RunResult): Metric[] {
  const big = biggest(run);
  const fan = (kind: Kind) => (p: PeerResult) => at(p, big)?.[kind]?.p50Ms;
  return [
    {
      name: `broadcast fan-out p50 @${count(big)}`,
      unit: "ms",
      get: fan("fanout"),
      higherIsBetter: false,
      ceilingBound: true,
    },
    {
      name: `group fan-out p50 @${count(big)}`,
      unit: "ms",
      get: fan("group"),
      higherIsBetter: false,
      ceilingBound: true,
    },
    {
      name: "/send throughput",
      unit: "req/s",
      get: (p) => bestThroughput(p)?.achievedRate,
      higherIsBetter: true,
      ceilingBound: true,
    },
    {
      name: `memory per idle connection @${count(big)}`,
      unit: "KB",
      get: (p) => {
        const b = at(p, big)?.rssPerConnectionBytes;
        return b === undefined ? undefined : b / 1024;
      },
      higherIsBetter: false,
      ceilingBound: false,
    },
  ];
}

const ceilingOf = (run: RunResult, p: PeerResult) =>
  run.peers.find((c) => c.role === "ceiling" && c.runtime === p.runtime && measured(c));

/** How much worse `ours` is than `other` (> 1 is worse), whichever way the metric points. */
function worseBy(m: Metric, ours: number, other: number): number {
  return m.higherIsBetter ? other / ours : ours / other;
}

/**
 * Who a product row is behind on one metric: every peer that does better, and its own ceiling when
 * past the 1.2× bound. Empty when it is ahead of them all.
 */
function behind(run: RunResult, p: PeerResult, m: Metric): string[] {
  const mine = m.get(p);
  if (p.role !== "product" || mine === undefined || !Number.isFinite(mine)) {
    return [];
  }
  const out: string[] = [];
  for (const o of run.peers.filter((o) => o.role === "peer" && measured(o))) {
    const v = m.get(o);
    if (v !== undefined && worseBy(m, mine, v) > 1) {
      out.push(
        `${o.peer} ${fmt(v, m.unit === "req/s" ? 0 : 1)} (${fmt(worseBy(m, mine, v), 2)}×)`,
      );
    }
  }
  const c = ceilingOf(run, p);
  const cv = c && m.get(c);
  if (
    m.ceilingBound && c && cv !== undefined &&
    worseBy(m, mine, cv) > CEILING_RATIO
  ) {
    out.push(
      `${c.peer} by ${fmt(worseBy(m, mine, cv), 2)}× (> ${CEILING_RATIO}×)`,
    );
  }
  return out;
}

function markdown(rows: string[][]): string {
  return [rows[0], rows[0].map(() => "---"), ...rows.slice(1)]
    .map((r) => `| ${r.join(" | ")} |`).join("\n");
}

function skippedRow(p: PeerResult, width: number): string[] {
  return [
    p.peer,
    `skipped: ${p.skipped ?? p.error}`.replace(/\s+/g, " "),
    ...Array(width - 2)
      .fill(""),
  ];
}

const behindCell = (run: RunResult, p: PeerResult, m: Metric) => {
  if (p.role !== "product") return "";
  const b = behind(run, p, m);
  return b.length ? `**BEHIND** ${b.join(", ")}` : "ahead of every peer";
};

const fanCell = (f: FanoutResult | null | undefined) => {
  if (!f) return "–";
  const lost = f.complete < f.rounds ? ` (${f.rounds - f.complete} incomplete)` : "";
  return `${fmt(f.p50Ms)} / ${fmt(f.p99Ms)}${lost}`;
};

/** (a) idle connections: connect rate and memory per connection at each level. */
export function connectionsTable(run: RunResult): string {
  const m = metrics(run)[3];
  const head = [
    "peer",
    ...run.levels.map((n) => `conn/s to ${count(n)}`),
    ...run.levels.map((n) => `KB/conn @${count(n)}`),
    `memory @${count(biggest(run))} vs peers`,
  ];
  const rows = [head];
  for (const p of run.peers) {
    if (!measured(p)) {
      rows.push(skippedRow(p, head.length));
      continue;
    }
    rows.push([
      p.peer,
      ...run.levels.map((n) => {
        const l = at(p, n);
        if (!l) return "–";
        return `${l.connectPerSecond}${l.connected < n ? ` (${l.connected} open)` : ""}`;
      }),
      ...run.levels.map((n) => kb(at(p, n)?.rssPerConnectionBytes)),
      behindCell(run, p, m),
    ]);
  }
  return markdown(rows);
}

/** (b) broadcast and (d) group fan-out: time until the last client has it, at each level. */
export function fanoutTable(run: RunResult): string {
  const big = biggest(run);
  const [mb, mg] = metrics(run);
  const head = [
    "peer",
    ...run.levels.map((n) => `broadcast ${count(n)}`),
    ...run.levels.map((n) => `group ${count(n)}`),
    `server CPU ms per broadcast / group @${count(big)}`,
    `broadcast @${count(big)} vs peers`,
    `group @${count(big)} vs peers`,
  ];
  const rows = [head];
  for (const p of run.peers) {
    if (!measured(p)) {
      rows.push(skippedRow(p, head.length));
      continue;
    }
    const top = at(p, big);
    rows.push([
      p.peer,
      ...run.levels.map((n) => fanCell(at(p, n)?.fanout)),
      ...run.levels.map((n) => fanCell(at(p, n)?.group)),
      `${fmt(top?.fanout?.serverCpuMsPerRound)} / ${fmt(top?.group?.serverCpuMsPerRound)}`,
      behindCell(run, p, mb),
      behindCell(run, p, mg),
    ]);
  }
  return markdown(rows);
}

/** (c) unicast /send: the best throughput, latency at the highest fixed rate, CPU per call. */
export function sendTable(run: RunResult): string {
  const lr = latencyRate(run);
  const m = metrics(run)[2];
  const head = [
    "peer",
    "/send max req/s",
    `/send @${count(lr)}/s p50 / p99 / p999 ms`,
    "server CPU µs per /send",
    "throughput vs peers",
  ];
  const rows = [head];
  for (const p of run.peers) {
    if (!measured(p)) {
      rows.push(skippedRow(p, head.length));
      continue;
    }
    const best = bestThroughput(p);
    const fixed = p.unicast.find((u) => u.targetRate === lr);
    rows.push([
      p.peer,
      best ? String(best.achievedRate) : "–",
      fixed
        ? `${fmt(fixed.latency.p50Ms, 2)} / ${fmt(fixed.latency.p99Ms, 2)} / ${
          fmt(fixed.latency.p999Ms, 2)
        }`
        : "–",
      best ? String(best.serverCpuUsPerSend) : "–",
      behindCell(run, p, m),
    ]);
  }
  return markdown(rows);
}

/** Every table of the main result, with a heading line each. */
export function table(run: RunResult): string {
  return [
    "**(a) Idle connections**: connect rate (handshakes/s) and server RSS per connection (KB).",
    "",
    connectionsTable(run),
    "",
    "**(b) broadcast and (d) group fan-out** to every connection of the level: time until the " +
    "last client has the message, p50 / p99 ms.",
    "",
    fanoutTable(run),
    "",
    "**(c) Unicast /send** over keep-alive HTTP, 1,000 receivers.",
    "",
    sendTable(run),
  ].join("\n");
}

/**
 * The issue's targets for deno-pusher, one row each: both runtimes' numbers, what they are compared
 * with, and "met" or "BEHIND" in so many words.
 */
export function targetTable(run: RunResult): string {
  const ours = run.peers.filter((p) => p.role === "product");
  const others = run.peers.filter((p) => p.role === "peer" && measured(p));
  const ms = metrics(run);
  const value = (p: PeerResult | undefined, m: Metric) => p && measured(p) ? m.get(p) : undefined;
  const digits = (m: Metric) => m.unit === "req/s" ? 0 : 1;
  const rows = [[
    "target (issue 6)",
    ...ours.map((p) => p.peer),
    "compared with",
    "verdict",
  ]];
  for (const m of ms.filter((m) => m.ceilingBound)) {
    const ratios = ours.map((p) => {
      const c = ceilingOf(run, p);
      const a = value(p, m);
      const b = c && value(c, m);
      return a === undefined || b === undefined ? NaN : worseBy(m, a, b);
    });
    const cells = ours.map((p, i) => {
      const c = ceilingOf(run, p);
      const v = value(p, m);
      return v === undefined
        ? "not measured"
        : `${fmt(v, digits(m))} ${m.unit} = ${fmt(ratios[i], 2)}× ${c?.peer ?? "its ceiling"}'s ${
          fmt(c && value(c, m), digits(m))
        }`;
    });
    const failing = ours.filter((_, i) => !(ratios[i] <= CEILING_RATIO)).map((
      p,
    ) => p.peer);
    rows.push([
      `${m.name} within ${CEILING_RATIO}× of the bare ceiling`,
      ...cells,
      "same runtime's ceiling",
      failing.length ? `**BEHIND** on ${failing.join(", ")}` : "met",
    ]);
  }
  const go = run.peers.find((p) => p.peer === "Go gorilla hub" && measured(p));
  const mem = ms[3];
  const goMem = value(go, mem);
  const ourMem = ours.map((p) => value(p, mem));
  const bestMem = Math.min(...ourMem.map((v) => v ?? Infinity));
  rows.push([
    `${mem.name} below the Go hub's`,
    ...ourMem.map((v) => `${fmt(v)} KB`),
    `Go gorilla hub ${fmt(goMem)} KB`,
    goMem === undefined ? "not measured" : bestMem < goMem ? "met" : "**BEHIND** Go gorilla hub",
  ]);
  for (const m of ms) {
    const mine = ours.map((p) => value(p, m));
    const finite = mine.filter((v): v is number => v !== undefined && Number.isFinite(v));
    const best = m.higherIsBetter ? Math.max(...finite) : Math.min(...finite);
    const beaten = others.filter((o) => {
      const v = value(o, m);
      return v !== undefined && finite.length > 0 && worseBy(m, best, v) >= 1;
    });
    const top = [...others].sort((a, b) =>
      (m.higherIsBetter ? -1 : 1) *
      ((value(a, m) ?? NaN) - (value(b, m) ?? NaN))
    )[0];
    rows.push([
      `${m.name}: ahead of every peer on one runtime or the other`,
      ...mine.map((v) => `${fmt(v, digits(m))} ${m.unit}`),
      top ? `best peer: ${top.peer} ${fmt(value(top, m), digits(m))} ${m.unit}` : "no peer ran",
      !finite.length
        ? "not measured"
        : beaten.length
        ? `**BEHIND** ${
          beaten.map((o) => `${o.peer} (${fmt(worseBy(m, best, value(o, m)!), 2)}×)`).join(", ")
        }`
        : "met",
    ]);
  }
  return markdown(rows);
}

/** The closed-loop run and the run at the fixed rate of one durable-comparison result. */
function durableRates(d: DurableRun, p: PeerResult) {
  return {
    max: p.unicast.find((u) => u.targetRate === 0),
    fixed: p.unicast.find((u) => u.targetRate === d.fixedRate),
  };
}

/** One configuration on one runtime, over its repeats. */
function durableSide(d: DurableRun, runs: PeerResult[]): DurableSide {
  const ok = runs.filter(measured);
  const over = (f: (p: PeerResult) => number | undefined) => spread(ok.map((p) => f(p) ?? NaN));
  const total = (f: (u: RateResult) => number) =>
    ok.reduce((a, p) => a + p.unicast.reduce((b, u) => b + f(u), 0), 0);
  return {
    peer: runs[0]?.peer ?? "–",
    maxRate: over((p) => durableRates(d, p).max?.achievedRate),
    maxP99Ms: over((p) => durableRates(d, p).max?.latency.p99Ms),
    fixedRate: over((p) => durableRates(d, p).fixed?.achievedRate),
    fixedP99Ms: over((p) => durableRates(d, p).fixed?.latency.p99Ms),
    failed: total((u) => u.notFound + u.otherStatus + u.errors),
    shed: total((u) => u.shed),
    lost: total((u) => Math.max(0, u.accepted - u.received)),
    dataDirBytes: spread(runs.map((p) => p.dataDirBytes ?? NaN)),
    problems: runs.filter((p) => !measured(p)).map((p) =>
      `repeat ${p.repeat ?? "?"}: ${p.skipped ?? p.error}`.replace(/\s+/g, " ")
    ),
  };
}

/** A share as a percentage, e.g. 0.734 → "73%". */
const percent = (x: number) => Number.isFinite(x) ? `${Math.round(x * 100)}%` : "–";

/**
 * Issue 11's comparison per runtime (medians over the repeats, and each repeat's own ratio, the two
 * configurations having run back to back), and the verdict line against its two targets.
 */
export function durableSummary(
  d: DurableRun,
): { summary: DurableSummary[]; verdict: string } {
  const runtimes = [...new Set(d.runs.map((p) => p.runtime))];
  const summary = runtimes.map((runtime): DurableSummary => {
    const mine = d.runs.filter((p) => p.runtime === runtime);
    const stripped = durableSide(
      d,
      mine.filter((p) => p.config === "stripped"),
    );
    const durable = durableSide(d, mine.filter((p) => p.config === "durable"));
    const paired = [...new Set(mine.map((p) => p.repeat))].map((repeat) => {
      const rate = (config: string) => {
        const p = mine.find((p) => p.repeat === repeat && p.config === config);
        return p && measured(p) ? durableRates(d, p).max?.achievedRate ?? NaN : NaN;
      };
      return rate("durable") / rate("stripped");
    });
    const throughputRatio = durable.maxRate.median / stripped.maxRate.median;
    return {
      runtime: stripped.peer,
      stripped,
      durable,
      throughputRatio,
      pairedThroughputRatio: spread(paired),
      maxP99Ratio: durable.maxP99Ms.median / stripped.maxP99Ms.median,
      fixedP99Ratio: durable.fixedP99Ms.median / stripped.fixedP99Ms.median,
      throughputMet: throughputRatio >= DURABLE_THROUGHPUT_TARGET,
      latencyMet: durable.fixedP99Ms.median < DURABLE_P99_TARGET_MS,
    };
  });
  const target = percent(DURABLE_THROUGHPUT_TARGET);
  const rate = d.fixedRate.toLocaleString("en-US");
  const verdicts = summary.map((s) => {
    const r = s.pairedThroughputRatio;
    const straddles = r.min < DURABLE_THROUGHPUT_TARGET &&
      r.max >= DURABLE_THROUGHPUT_TARGET;
    const throughput = !Number.isFinite(s.throughputRatio)
      ? "throughput not measured"
      : `throughput ${percent(s.throughputRatio)} of stripped` +
        (r.n > 1
          ? ` (repeats ${percent(r.min)}–${percent(r.max)}` +
            `${straddles ? `, on both sides of ${target}` : ""})`
          : "") +
        `: ${s.throughputMet ? "met" : "**NOT MET**"}`;
    const p99 = s.durable.fixedP99Ms.median;
    const latency = !Number.isFinite(p99)
      ? `p99 at ${rate}/s not measured`
      : `p99 at ${rate}/s ${fmt(p99, 2)} ms: ${s.latencyMet ? "met" : "**NOT MET**"}`;
    return `${s.runtime}: ${throughput}; ${latency}${latencyCaveat(d, s)}.`;
  });
  const failing = summary.filter((s) => !s.throughputMet || !s.latencyMet).map((
    s,
  ) => s.runtime);
  const overall = !summary.length
    ? "not measured (no deno-pusher run)"
    : failing.length
    ? `**NOT MET** on ${failing.join(" and ")}`
    : `met on ${summary.length > 1 ? "both runtimes" : summary[0].runtime}`;
  const verdict = `**Verdict (issue 11: the durable default keeps ≥ ${target} of the stripped ` +
    `/send throughput, with p99 < ${DURABLE_P99_TARGET_MS} ms at ${rate} sends/s)**: ${overall}. ` +
    verdicts.join(" ");
  return { summary, verdict };
}

/**
 * Why a missed p99 target may say more about the machine than about the store: the stripped
 * configuration missed it as well, or the fixed rate was not reached (the sender shed calls).
 */
function latencyCaveat(d: DurableRun, s: DurableSummary): string {
  if (s.latencyMet) return "";
  const notes: string[] = [];
  const stripped = s.stripped.fixedP99Ms.median;
  if (stripped >= DURABLE_P99_TARGET_MS) {
    notes.push(`the stripped configuration missed it too, at ${fmt(stripped, 2)} ms`);
  }
  const reached = Math.min(s.stripped.fixedRate.median, s.durable.fixedRate.median);
  if (reached < d.fixedRate * FIXED_RATE_REACHED) {
    notes.push(`only ${fmt(reached, 0)} of the ${d.fixedRate} calls/s were achieved`);
  }
  return notes.length
    ? ` (but ${notes.join(", and ")}: the machine, more than the store, set this p99)`
    : "";
}

/** "median (min–max)", with how many repeats gave a number when some did not. */
function spreadCell(s: Spread, repeats: number, digits: number): string {
  if (!s.n) return "–";
  const range = s.n > 1 ? ` (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : "";
  return `${fmt(s.median, digits)}${range}${s.n < repeats ? ` [${s.n} of ${repeats}]` : ""}`;
}

/**
 * Issue 11's table: per runtime, the stripped row, the durable default's row under it, and their
 * ratio; medians (min–max) over the repeats.
 */
export function durableTable(d: DurableRun): string {
  const rate = count(d.fixedRate);
  const rows = [[
    "runtime",
    "configuration",
    "/send max req/s",
    "p99 at max, ms",
    `achieved @${rate}/s`,
    `p99 @${rate}/s, ms`,
    "failed / shed / lost",
    "data dir after, MiB",
  ]];
  const ratio = (x: number) => Number.isFinite(x) ? `×${fmt(x, 2)}` : "–";
  for (const s of d.summary) {
    for (
      const [label, side] of [["stripped", s.stripped], [
        "durable default",
        s.durable,
      ]] as const
    ) {
      rows.push([
        s.runtime,
        label + (side.problems.length ? ` (${side.problems.join("; ")})` : ""),
        spreadCell(side.maxRate, d.repeats, 0),
        spreadCell(side.maxP99Ms, d.repeats, 2),
        spreadCell(side.fixedRate, d.repeats, 0),
        spreadCell(side.fixedP99Ms, d.repeats, 2),
        `${side.failed} / ${side.shed} / ${side.lost}`,
        fmt(side.dataDirBytes.median / 2 ** 20),
      ]);
    }
    const r = s.pairedThroughputRatio;
    rows.push([
      s.runtime,
      "**durable ÷ stripped**",
      `**${ratio(s.throughputRatio)}**` +
      (r.n > 1 ? ` (repeats ${ratio(r.min)}–${ratio(r.max)})` : ""),
      ratio(s.maxP99Ratio),
      "",
      ratio(s.fixedP99Ratio),
      "",
      "",
    ]);
  }
  return markdown(rows);
}

/**
 * Is the load generator the limit? For each peer: how much CPU the server, the load generators and
 * the whole machine used while fan-out rounds and closed-loop /send ran, in cores (CPU time / wall
 * time; the machine has 2). A load generator runs one JS thread, so one process near 1.0 would be
 * a limit; "machine" also counts the kernel's loopback work and anyone else on the cores.
 */
export function loadgenTable(run: RunResult): string {
  const big = biggest(run);
  const cores = (ms: number | undefined, wall: number) =>
    ms === undefined ? "–" : fmt(ms / wall, 2);
  const rows = [[
    "peer",
    `broadcast @${count(big)}: server / load generators / busiest one / machine (cores)`,
    "/send max: server / sender / receivers / busiest one / machine (cores)",
  ]];
  for (const p of run.peers.filter(measured)) {
    const f = at(p, big)?.fanout;
    const max = p.unicast.find((u) => u.targetRate === 0) ?? bestThroughput(p);
    const c = max?.cpu;
    rows.push([
      p.peer,
      f
        ? [
          f.serverCpuMsPerRound,
          f.loadgenCpuMsPerRound,
          f.busiestLoadgenCpuMsPerRound,
          f.machineCpuMsPerRound,
        ].map((v) => cores(v, f.wallMsPerRound)).join(" / ")
        : "–",
      c
        ? [
          c.serverMs,
          c.sendersMs,
          c.receiversMs,
          c.busiestLoadgenMs,
          c.machineMs,
        ]
          .map((v) => cores(v, c.wallMs)).join(" / ")
        : "–",
    ]);
  }
  return markdown(rows);
}

/** RSS may grow by at most this share between the soak's first and last minutes to count as flat. */
const SOAK_RSS_TOLERANCE = 0.1;
/** Latency p99 may grow by at most this factor (plus SOAK_LATENCY_SLACK_MS) to count as flat. */
const SOAK_LATENCY_FACTOR = 1.5;
/** Absolute slack for the latency check (ms): sub-millisecond p99s double on a single hiccup. */
const SOAK_LATENCY_SLACK_MS = 1;

/**
 * The soak, per peer that ran it: RSS and latency in its first and last stretch (a quarter of the
 * samples each, at least one), and whether each stayed flat by the rule stated in the table.
 */
export function soakTable(run: RunResult): string {
  const soaked = run.peers.filter((p) => p.soak?.length);
  if (!soaked.length) return "";
  const rows = [[
    "peer",
    "samples",
    "RSS first / last / max MiB",
    "p50 first / last ms",
    "p99 first / last ms",
    "rate achieved (min)",
    "RSS flat?",
    "latency flat?",
  ]];
  for (const p of soaked) {
    const s = p.soak!;
    const k = Math.max(1, Math.floor(s.length / 4));
    const first = s.slice(0, k);
    const last = s.slice(-k);
    const m = (xs: typeof s, f: (x: typeof s[number]) => number) => median(xs.map(f));
    const rss0 = m(first, (x) => x.rssBytes);
    const rss1 = m(last, (x) => x.rssBytes);
    const p99a = m(first, (x) => x.latency.p99Ms);
    const p99b = m(last, (x) => x.latency.p99Ms);
    const rssFlat = rss1 <= rss0 * (1 + SOAK_RSS_TOLERANCE);
    const latFlat = p99b <= p99a * SOAK_LATENCY_FACTOR + SOAK_LATENCY_SLACK_MS;
    rows.push([
      p.peer,
      `${s.length} × ${s[1] ? s[1].atSeconds - s[0].atSeconds : "?"} s`,
      `${mib(rss0)} / ${mib(rss1)} / ${mib(Math.max(...s.map((x) => x.rssBytes)))}`,
      `${fmt(m(first, (x) => x.latency.p50Ms), 2)} / ${fmt(m(last, (x) => x.latency.p50Ms), 2)}`,
      `${fmt(p99a, 2)} / ${fmt(p99b, 2)}`,
      String(Math.min(...s.map((x) => x.achievedRate))),
      rssFlat ? "flat" : `**NOT FLAT** (+${fmt((rss1 / rss0 - 1) * 100)}%)`,
      latFlat ? "flat" : `**NOT FLAT** (p99 ×${fmt(p99b / p99a, 2)})`,
    ]);
  }
  return [
    markdown(rows),
    "",
    `"first" and "last" are medians over the first and last quarter of the samples. Flat means RSS ` +
    `grew by at most ${SOAK_RSS_TOLERANCE * 100}% and p99 by at most ${SOAK_LATENCY_FACTOR}× ` +
    `+ ${SOAK_LATENCY_SLACK_MS} ms between them.`,
  ].join("\n");
}

/** Colours for the chart's lines, one per peer in PEERS order. */
const COLOURS = [
  "#d62728",
  "#ff7f0e",
  "#1f77b4",
  "#17becf",
  "#2ca02c",
  "#9467bd",
  "#8c564b",
];

const W = 460;
const H = 300;
const M = { l: 56, r: 16, t: 30, b: 44 };

interface Series {
  colour: string;
  points: [number, number][];
}

/** One line-chart panel at x offset `ox`; x from 0 to the largest x of any series. */
function panel(
  ox: number,
  title: string,
  xLabel: string,
  xTicks: number[],
  xTickLabel: (x: number) => string,
  series: Series[],
): string {
  const values = series.flatMap((s) => s.points.map(([, v]) => v));
  const yMax = Math.max(1e-9, ...values) * 1.1;
  const xMax = Math.max(
    1e-9,
    ...xTicks,
    ...series.flatMap((s) => s.points.map(([x]) => x)),
  );
  const x = (n: number) => ox + M.l + (n / xMax) * (W - M.l - M.r);
  const y = (v: number) => M.t + (1 - v / yMax) * (H - M.t - M.b);
  const parts = [
    `<text x="${ox + W / 2}" y="18" text-anchor="middle" font-weight="bold">${title}</text>`,
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(xMax)}" y2="${y(0)}" stroke="#333"/>`,
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(0)}" y2="${y(yMax)}" stroke="#333"/>`,
  ];
  for (const n of xTicks) {
    parts.push(
      `<text x="${x(n)}" y="${H - M.b + 16}" text-anchor="middle">${xTickLabel(n)}</text>`,
    );
  }
  for (let i = 0; i <= 4; i++) {
    const v = yMax * i / 4;
    parts.push(
      `<text x="${x(0) - 6}" y="${y(v) + 4}" text-anchor="end">${fmt(v, v < 10 ? 1 : 0)}</text>`,
      `<line x1="${x(0)}" y1="${y(v)}" x2="${x(xMax)}" y2="${y(v)}" stroke="#eee"/>`,
    );
  }
  parts.push(
    `<text x="${ox + W / 2}" y="${H - 8}" text-anchor="middle">${xLabel}</text>`,
  );
  for (const s of series.filter((s) => s.points.length)) {
    parts.push(
      `<polyline fill="none" stroke="${s.colour}" stroke-width="2" points="${
        s.points.map(([n, v]) => `${x(n).toFixed(1)},${y(v).toFixed(1)}`).join(
          " ",
        )
      }"/>`,
      ...s.points.map(([n, v]) =>
        `<circle cx="${x(n).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${s.colour}"/>`
      ),
    );
  }
  return parts.join("\n");
}

function svg(panels: string[], legend: [string, string][]): string {
  const perRow = 4;
  const items = legend.map(([name, colour], i) => {
    const lx = 20 + (i % perRow) * 230;
    const ly = H + 20 + Math.floor(i / perRow) * 18;
    return `<rect x="${lx}" y="${ly - 9}" width="12" height="10" fill="${colour}"/>` +
      `<text x="${lx + 18}" y="${ly}">${name}</text>`;
  });
  const height = H + 30 + Math.ceil(legend.length / perRow) * 18;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${panels.length * W}" ` +
    `height="${height}" font-family="sans-serif" font-size="12">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${panels.join("\n")}\n${
      items.join("\n")
    }\n</svg>\n`;
}

const colourOf = (run: RunResult, p: PeerResult) => COLOURS[run.peers.indexOf(p) % COLOURS.length];

/** Three panels side by side: broadcast p50, group p50 (ms) and KB per connection, against N. */
export function chart(run: RunResult): string {
  const peers = run.peers.filter((p) => p.levels.length);
  const seriesOf = (get: (l: LevelResult) => number | undefined): Series[] =>
    peers.map((p) => ({
      colour: colourOf(run, p),
      points: p.levels.map((l) => [l.connections, get(l)] as [number, number | undefined])
        .filter((pt): pt is [number, number] => pt[1] !== undefined && Number.isFinite(pt[1])),
    }));
  const xl = "connections (N)";
  const fanPanel = (i: number, kind: Kind) =>
    panel(
      i * W,
      `${KIND_NAME[kind]} fan-out: last client has it, p50 (ms)`,
      xl,
      run.levels,
      count,
      seriesOf((l) => l[kind]?.p50Ms),
    );
  return svg(
    [
      fanPanel(0, "fanout"),
      fanPanel(1, "group"),
      panel(
        2 * W,
        "server memory per connection (KB)",
        xl,
        run.levels,
        count,
        seriesOf((l) => l.rssPerConnectionBytes / 1024),
      ),
    ],
    peers.map((p) => [p.peer, colourOf(run, p)]),
  );
}

/** The soak over time: RSS (MiB) and send-to-receive p99 (ms) per sample; null without a soak. */
export function soakChart(run: RunResult): string | null {
  const soaked = run.peers.filter((p) => p.soak?.length);
  if (!soaked.length) return null;
  const seriesOf = (
    get: (s: NonNullable<PeerResult["soak"]>[number]) => number,
  ): Series[] =>
    soaked.map((p) => ({
      colour: colourOf(run, p),
      points: p.soak!.map((s) => [s.atSeconds / 60, get(s)] as [number, number]),
    }));
  const minutes = Math.ceil(
    Math.max(...soaked.flatMap((p) => p.soak!.map((s) => s.atSeconds))) / 60,
  );
  const ticks = Array.from({ length: minutes + 1 }, (_, i) => i).filter((m) =>
    m % Math.max(1, Math.ceil(minutes / 10)) === 0
  );
  const xl = "soak time (min)";
  return svg(
    [
      panel(
        0,
        "soak: server RSS (MiB)",
        xl,
        ticks,
        String,
        seriesOf((s) => s.rssBytes / 2 ** 20),
      ),
      panel(
        W,
        "soak: /send to receive p99 (ms)",
        xl,
        ticks,
        String,
        seriesOf((s) => s.latency.p99Ms),
      ),
    ],
    soaked.map((p) => [p.peer, colourOf(run, p)]),
  );
}

/** Per-rate detail: one table of every /send run of every peer, with who used the CPU. */
export function rateTable(run: RunResult): string {
  const rows = [[
    "peer",
    "target req/s",
    "achieved req/s",
    "p50 ms",
    "p99 ms",
    "p999 ms",
    "received / accepted",
    "shed",
    "failed",
    "cores: server / sender / receivers / machine",
  ]];
  for (const p of run.peers) {
    for (const u of p.unicast) {
      const c = u.cpu;
      rows.push([
        p.peer,
        String(u.targetRate || "max"),
        String(u.achievedRate),
        fmt(u.latency.p50Ms, 2),
        fmt(u.latency.p99Ms, 2),
        fmt(u.latency.p999Ms, 2),
        `${u.received} / ${u.accepted}`,
        String(u.shed),
        String(u.notFound + u.otherStatus + u.errors),
        c
          ? [c.serverMs, c.sendersMs, c.receiversMs, c.machineMs]
            .map((v) => fmt(v / c.wallMs, 2)).join(" / ")
          : "–",
      ]);
    }
  }
  return markdown(rows);
}

/**
 * The load-generator check (`--shapes`): every peer's numbers with each load-generator shape side by
 * side, and the second shape's change against the first (medians when a shape ran more than
 * once). Numbers that do not move when the client side gets more processes were not limited by
 * the client side.
 */
export function shapeTable(run: RunResult): string {
  const big = biggest(run);
  const lr = latencyRate(run);
  const head = [
    "peer",
    "load generators",
    `conn/s to ${count(big)}`,
    `broadcast ${count(big)} p50 / p99 ms`,
    `group ${count(big)} p50 / p99 ms`,
    "/send max req/s",
    `/send @${count(lr)}/s p50 / p99 ms`,
  ];
  const rows = [head];
  const bases = [...new Set(run.peers.map((p) => p.peer.split(" · ")[0]))];
  for (const base of bases) {
    const runs = run.peers.filter((p) => p.peer.split(" · ")[0] === base && measured(p));
    const nums = runs.map((p) => {
      const l = at(p, big);
      const fixed = p.unicast.find((u) => u.targetRate === lr);
      return [
        l?.connectPerSecond,
        l?.fanout?.p50Ms,
        l?.fanout?.p99Ms,
        l?.group?.p50Ms,
        l?.group?.p99Ms,
        bestThroughput(p)?.achievedRate,
        fixed?.latency.p50Ms,
        fixed?.latency.p99Ms,
      ];
    });
    const cells = (v: (number | undefined)[]) => [
      fmt(v[0], 0),
      `${fmt(v[1])} / ${fmt(v[2])}`,
      `${fmt(v[3])} / ${fmt(v[4])}`,
      fmt(v[5], 0),
      `${fmt(v[6], 2)} / ${fmt(v[7], 2)}`,
    ];
    runs.forEach((p, i) => rows.push([base, p.peer.split(" · ")[1] ?? "", ...cells(nums[i])]));
    // With each shape run more than once, the medians per shape are compared.
    const labels = [...new Set(runs.map((p) => p.peer.split(" · ")[1] ?? ""))];
    if (labels.length === 2) {
      const medians = labels.map((label) =>
        nums[0].map((_, j) =>
          median(
            nums.filter((_, i) => runs[i].peer.endsWith(label)).map((v) => v[j] ?? NaN),
          )
        )
      );
      const ratio = medians[1].map((v, j) => v / medians[0][j]);
      const r = (x: number) => `×${fmt(x, 2)}`;
      rows.push([
        base,
        `**${labels[1]} ÷ ${labels[0]}**`,
        r(ratio[0]),
        `${r(ratio[1])} / ${r(ratio[2])}`,
        `${r(ratio[3])} / ${r(ratio[4])}`,
        r(ratio[5]),
        `${r(ratio[6])} / ${r(ratio[7])}`,
      ]);
    }
  }
  return markdown(rows);
}

/** CPU of one stretch in cores (CPU time ÷ wall time); NaN when it did not run. */
const coresOf = (cpu: ClusterCpu | undefined, f: (c: ClusterCpu) => number) =>
  cpu ? f(cpu) / Math.max(1, cpu.wallMs) : NaN;

/** What went wrong in one cluster-scenario run, in words; empty when nothing did. */
function clusterProblems(r: TopologyRun): string[] {
  const out: string[] = [];
  if (r.error) out.push(`error: ${r.error.split("\n")[0]}`);
  if (r.failed) out.push(`${r.failed} connects failed`);
  if (!r.synced && r.syncNote) out.push(`not synced: ${r.syncNote}`);
  const b = r.broadcast;
  if (b && b.complete < b.rounds) {
    out.push(
      `${b.rounds - b.complete} rounds incomplete (${b.lost} messages lost)`,
    );
  }
  if (b?.failedCalls) {
    out.push(`${b.failedCalls} broadcasts answered ${b.failure}`);
  }
  const s = r.send;
  if (s) {
    const failed = s.notFound + s.otherStatus + s.errors;
    if (failed) out.push(`${failed} /send failed (${s.notFound} of them 404)`);
    if (s.received < s.accepted) {
      out.push(`${s.accepted - s.received} sent messages lost`);
    }
  }
  return out;
}

const TOPOLOGY_NAME: Record<Topology, (r: TopologyRun) => string> = {
  cluster: (r) => `${r.nodes} nodes + Redis`,
  single: () => "1 node",
};

/**
 * Issue 13's cluster scenario: the cluster's row, the single node's under it, and their ratio on
 * the numbers both have; medians (min–max) over the repeats.
 */
export function clusterTable(run: ClusterRun): string {
  const repeats = run.settings.repeats;
  const rows = [[
    "topology",
    "connections",
    "conn/s",
    "KB/conn per node",
    "broadcast p50 ms",
    "broadcast p99 ms",
    "origin node's clients p50 ms",
    "/send max req/s",
    "/send p50 / p99 ms",
    "Redis CPU, broadcast / /send (cores)",
    "nodes' CPU, broadcast / /send (cores)",
    "problems",
  ]];
  const medians: Record<Topology, number[]> = { cluster: [], single: [] };
  for (const topology of ["cluster", "single"] as const) {
    const runs = run.runs.filter((r) => r.topology === topology);
    if (!runs.length) continue;
    const over = (f: (r: TopologyRun) => number | undefined) =>
      spread(runs.map((r) => f(r) ?? NaN));
    const cell = (f: (r: TopologyRun) => number | undefined, digits: number) =>
      spreadCell(over(f), repeats, digits);
    const first = runs[0];
    const asked = first.nodes * first.connectionsPerNode;
    const p50 = over((r) => r.broadcast?.p50Ms);
    const p99 = over((r) => r.broadcast?.p99Ms);
    const max = over((r) => r.send?.achievedRate);
    medians[topology] = [p50.median, p99.median, max.median];
    const problems = runs.flatMap((r) =>
      clusterProblems(r).map((p) => `#${r.repeat}: ${p}`.replace(/\s+/g, " ").replace(/\|/g, "/"))
    );
    rows.push([
      TOPOLOGY_NAME[topology](first),
      `${asked.toLocaleString("en-US")} (${first.nodes} × ${count(first.connectionsPerNode)})`,
      cell((r) => r.connectPerSecond, 0),
      cell((r) => r.rssPerConnectionBytes / 1024, 1),
      spreadCell(p50, repeats, 1),
      spreadCell(p99, repeats, 1),
      topology === "cluster" ? cell((r) => r.broadcast?.originP50Ms, 1) : "(same)",
      spreadCell(max, repeats, 0),
      `${cell((r) => r.send?.latency.p50Ms, 2)} / ${cell((r) => r.send?.latency.p99Ms, 2)}`,
      topology === "cluster"
        ? `${cell((r) => coresOf(r.broadcast?.cpu, (c) => c.redisMs), 2)} / ` +
          cell((r) => coresOf(r.send?.cpu, (c) => c.redisMs), 2)
        : "no Redis",
      `${cell((r) => coresOf(r.broadcast?.cpu, (c) => c.nodesMs), 2)} / ` +
      cell((r) => coresOf(r.send?.cpu, (c) => c.nodesMs), 2),
      problems.length ? problems.join("; ") : "none",
    ]);
  }
  if (medians.cluster.length && medians.single.length) {
    const r = medians.cluster.map((v, i) => v / medians.single[i]);
    const ratio = (x: number) => Number.isFinite(x) ? `×${fmt(x, 2)}` : "–";
    rows.push([
      "**cluster ÷ single**",
      "",
      "",
      "",
      ratio(r[0]),
      ratio(r[1]),
      "",
      `**${ratio(r[2])}**`,
      "",
      "",
      "",
      "",
    ]);
  }
  return markdown(rows);
}

/** Every run of the cluster scenario, in the order they ran, with who used the CPU. */
export function clusterRunsTable(run: ClusterRun): string {
  const rows = [[
    "repeat",
    "topology",
    "open / asked",
    "conn/s",
    "broadcast p50 / p99 / origin p50 ms",
    "complete rounds",
    "/send req/s",
    "/send p50 / p99 ms",
    "received / accepted",
    "cores during broadcast: nodes / busiest node / Redis / load generators / machine",
    "cores during /send: nodes / busiest node / Redis / load generators / machine",
  ]];
  const cores = (c: ClusterCpu | undefined) =>
    c
      ? [c.nodesMs, c.busiestNodeMs, c.redisMs, c.loadgensMs, c.machineMs]
        .map((v) => fmt(v / Math.max(1, c.wallMs), 2)).join(" / ")
      : "–";
  for (const r of run.runs) {
    const b = r.broadcast;
    const s = r.send;
    rows.push([
      String(r.repeat),
      TOPOLOGY_NAME[r.topology](r) + (r.error ? " (failed)" : ""),
      `${r.connected} / ${r.nodes * r.connectionsPerNode}`,
      String(r.connectPerSecond),
      b ? `${fmt(b.p50Ms)} / ${fmt(b.p99Ms)} / ${fmt(b.originP50Ms)}` : "–",
      b ? `${b.complete} / ${b.rounds}` : r.synced ? "–" : "not synced",
      s ? String(s.achievedRate) : "–",
      s ? `${fmt(s.latency.p50Ms, 2)} / ${fmt(s.latency.p99Ms, 2)}` : "–",
      s ? `${s.received} / ${s.accepted}` : "–",
      cores(b?.cpu),
      cores(s?.cpu),
    ]);
  }
  return markdown(rows);
}
