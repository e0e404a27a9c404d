/**
 * Turns a run's results into the markdown tables `make bench` prints: every scenario for every peer
 * as the median (min–max) of its repeats; the targets of issues 6 and 16, in tables that say
 * plainly where deno-pusher is behind, and "tie" where the repeats cannot tell; the default
 * configuration against the stripped one (issue 11's figures); the load-generator CPU check; the
 * soak summary; and SVG charts: fan-out latency and memory per connection against N, and the soak.
 * Also the tables of the cluster scenario (bench/cluster.ts), in both configurations.
 */
import type { ClusterCpu, ClusterRun, Topology, TopologyRun } from "./cluster.ts";
import type { ProductConfig } from "./peers.ts";
import type { FanoutResult, LevelResult, PeerResult, RateResult } from "./scenarios.ts";
import { median, type Spread, spread, spreadText, versus } from "./stats.ts";

/** A whole run as written to bench/results/*.json. */
export interface RunResult {
  profile: string;
  startedAt: string;
  durationS: number;
  machine: Record<string, unknown>;
  levels: number[];
  rates: number[];
  /** Runs of each peer asked for, interleaved: every peer once, then every peer again, and so on. */
  repeats: number;
  /** Set when the profile's deadline was near and the coordinator left runs out, saying which. */
  stoppedEarly?: string;
  /**
   * Every run of every peer, in the order they ran. A peer's runs share its name; `repeat` tells
   * them apart.
   */
  peers: PeerResult[];
}

/** Issue 6's bound on deno-pusher against its runtime's like-for-like ceiling (fan-out, /send). */
const CEILING_RATIO = 1.2;
/** Issue 11: the default configuration keeps at least this share of the stripped /send throughput. */
const DEFAULT_THROUGHPUT_SHARE = 0.7;
/** Issue 11: the default configuration's /send p99 at ISSUE11_RATE stays under this (ms). */
const DEFAULT_P99_BOUND_MS = 10;
/** Issue 11's fixed /send rate (calls per second) at which it bounds the p99. */
export const ISSUE11_RATE = 5_000;

const fmt = (n: number | undefined, digits = 1) =>
  n === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits);
const count = (n: number) => n >= 1000 ? `${n / 1000}k` : String(n);
const mib = (bytes: number) => fmt(bytes / 2 ** 20);
const times = (x: number) => `${fmt(x, 2)}×`;

/** The fastest /send run, by achieved rate. */
function bestThroughput(p: PeerResult): RateResult | undefined {
  return [...p.unicast].sort((a, b) => b.achievedRate - a.achievedRate)[0];
}

/** The closed-loop /send run (the best run when there was no closed loop). */
const maxRun = (p: PeerResult) => fixedRun(p, 0) ?? bestThroughput(p);
/** Answered /send calls per second, closed-loop: the /send throughput of every table. */
const sendMax = (p: PeerResult) => maxRun(p)?.achievedRate;

/** The highest fixed rate every measured peer ran (latency is compared there, not at max). */
function latencyRate(run: RunResult): number {
  return Math.max(0, ...run.rates.filter((r) => r > 0));
}

const measured = (p: PeerResult) => !p.skipped && !p.error;
const at = (p: PeerResult, n: number) => p.levels.find((l) => l.connections === n);
const biggest = (run: RunResult) => Math.max(...run.levels);
/** The /send run at `rate` (0: the closed loop). */
const fixedRun = (p: PeerResult, rate: number) => p.unicast.find((u) => u.targetRate === rate);
/** Answered /send calls per second in the closed loop alone. */
const closedLoop = (p: PeerResult) => fixedRun(p, 0)?.achievedRate;

/** One peer over the repeats: every run of it, in the order they ran. */
interface Peer {
  name: string;
  role: string;
  runtime: string;
  config?: string;
  runs: PeerResult[];
  /** The runs that measured something (neither skipped nor failed). */
  ok: PeerResult[];
}

/** The run's peers in the order they first ran, each with all its runs. */
function peersOf(run: RunResult): Peer[] {
  const byName = new Map<string, Peer>();
  for (const p of run.peers) {
    let peer = byName.get(p.peer);
    if (!peer) {
      const { role, runtime, config } = p;
      byName.set(
        p.peer,
        peer = { name: p.peer, role, runtime, config, runs: [], ok: [] },
      );
    }
    peer.runs.push(p);
    if (measured(p)) peer.ok.push(p);
  }
  return [...byName.values()];
}

/** One number of a peer over its measured runs. */
const over = (peer: Peer, get: (p: PeerResult) => number | undefined): Spread =>
  spread(peer.ok.map((p) => get(p) ?? NaN));

/** "median (min–max)" of one number of a peer, marking runs that gave none ("[2 of 3]"). */
const cell = (
  peer: Peer,
  get: (p: PeerResult) => number | undefined,
  digits: number,
) => spreadText(over(peer, get), digits, peer.runs.length);

/**
 * `score(a, b)` for each repeat both peers measured, a from `ours`'s run and b from `theirs`'s run
 * of the same repeat (they ran within one pass over the peers, so under much the same load).
 */
function perRepeat(
  ours: Peer,
  theirs: Peer,
  get: (p: PeerResult) => number | undefined,
  score: (a: number, b: number) => number,
): number[] {
  return ours.ok.flatMap((p) => {
    const q = theirs.ok.find((q) => q.repeat === p.repeat);
    const a = get(p);
    const b = q && get(q);
    return a === undefined || b === undefined ? [] : [score(a, b)].filter(Number.isFinite);
  });
}

type Kind = "fanout" | "group";
const KIND_NAME: Record<Kind, string> = { fanout: "broadcast", group: "group" };

/** One metric with a target: how to read it, and which way is better. */
interface Metric {
  name: string;
  unit: string;
  digits: number;
  get: (p: PeerResult) => number | undefined;
  higherIsBetter: boolean;
  /** Whether issue 6 bounds it against the like-for-like ceiling of the same runtime. */
  ceilingBound: boolean;
}

/** Issue 6's metrics: fan-out p50 of both kinds, /send throughput, memory per connection. */
function metrics(run: RunResult): Metric[] {
  const big = biggest(run);
  const fan = (kind: Kind) => (p: PeerResult) => at(p, big)?.[kind]?.p50Ms;
  return [
    {
      name: `broadcast fan-out p50 @${count(big)}`,
      unit: "ms",
      digits: 1,
      get: fan("fanout"),
      higherIsBetter: false,
      ceilingBound: true,
    },
    {
      name: `group fan-out p50 @${count(big)}`,
      unit: "ms",
      digits: 1,
      get: fan("group"),
      higherIsBetter: false,
      ceilingBound: true,
    },
    {
      name: "/send throughput",
      unit: "req/s",
      digits: 0,
      get: sendMax,
      higherIsBetter: true,
      ceilingBound: true,
    },
    {
      name: `memory per idle connection @${count(big)}`,
      unit: "KB",
      digits: 1,
      get: (p) => {
        const b = at(p, big)?.rssPerConnectionBytes;
        return b === undefined ? undefined : b / 1024;
      },
      higherIsBetter: false,
      ceilingBound: false,
    },
  ];
}

/** The like-for-like ceiling of a peer's runtime (role "ceiling"), when it measured something. */
const ceilingOf = (peers: Peer[], p: Peer) =>
  peers.find((c) => c.role === "ceiling" && c.runtime === p.runtime && c.ok.length);

/** How much worse `ours` is than `other` (> 1 is worse), whichever way the metric points. */
function worseBy(m: Metric, ours: number, other: number): number {
  return m.higherIsBetter ? other / ours : ours / other;
}

/**
 * Where `ours` stands against every peer on one metric: the peers it is behind (their spreads
 * entirely better than its own), the ties (spreads that overlap), and its own ceiling when the
 * medians are past issue 6's bound.
 */
function versusPeers(peers: Peer[], ours: Peer, m: Metric): string {
  const mine = over(ours, m.get);
  if (!mine.n) return "not measured";
  const behind: string[] = [];
  const ties: string[] = [];
  const others = peers.filter((o) => o.role === "peer" && o.ok.length);
  for (const o of others) {
    const theirs = over(o, m.get);
    const v = versus(mine, theirs, m.higherIsBetter);
    if (v === "behind") {
      behind.push(
        `${o.name} ${fmt(theirs.median, m.digits)} (${
          times(worseBy(m, mine.median, theirs.median))
        })`,
      );
    } else if (v === "tie") ties.push(o.name);
  }
  const parts: string[] = [];
  if (behind.length) parts.push(`**BEHIND** ${behind.join(", ")}`);
  if (ties.length) parts.push(`tie with ${ties.join(", ")}`);
  if (!behind.length && others.length) {
    parts.push(ties.length ? "ahead of the rest" : "ahead of every peer");
  }
  const c = ceilingOf(peers, ours);
  if (m.ceilingBound && c) {
    const ratio = worseBy(m, mine.median, over(c, m.get).median);
    if (ratio > CEILING_RATIO) {
      const r = spread(perRepeat(ours, c, m.get, (a, b) => worseBy(m, a, b)));
      parts.push(
        `${c.name} by ${times(ratio)} (> ${CEILING_RATIO}×` +
          (r.n > 1 ? `; repeats ${times(r.min)}–${times(r.max)})` : ")"),
      );
    }
  }
  return parts.join("; ");
}

function markdown(rows: string[][]): string {
  return [rows[0], rows[0].map(() => "---"), ...rows.slice(1)]
    .map((r) => `| ${r.join(" | ")} |`).join("\n");
}

/** Text safe inside a table cell: one line, no pipes. */
const oneLine = (s: string) => s.replace(/\s+/g, " ").replace(/\|/g, "/");

function skippedRow(p: Peer, width: number): string[] {
  const first = p.runs[0];
  return [
    p.name,
    oneLine(`skipped: ${first.skipped ?? first.error}`),
    ...Array(width - 2).fill(""),
  ];
}

const versusCell = (peers: Peer[], p: Peer, m: Metric) =>
  p.role === "product" ? versusPeers(peers, p, m) : "";

/** p50 / p99 of one kind of fan-out at one level, with the rounds that never completed. */
function fanCell(p: Peer, n: number, kind: Kind): string {
  const f = (p: PeerResult) => at(p, n)?.[kind];
  const rounds = p.ok.map(f).filter((x): x is FanoutResult => !!x);
  if (!rounds.length) return "–";
  const incomplete = rounds.reduce((a, x) => a + x.rounds - x.complete, 0);
  return `${cell(p, (q) => f(q)?.p50Ms, 1)} / ${cell(p, (q) => f(q)?.p99Ms, 1)}` +
    (incomplete ? ` (${incomplete} rounds incomplete)` : "");
}

/** (a) idle connections: connect rate and memory per connection at each level. */
export function connectionsTable(run: RunResult): string {
  const peers = peersOf(run);
  const m = metrics(run)[3];
  const head = [
    "peer",
    ...run.levels.map((n) => `conn/s to ${count(n)}`),
    ...run.levels.map((n) => `KB/conn @${count(n)}`),
    `memory @${count(biggest(run))} vs peers`,
  ];
  const rows = [head];
  for (const p of peers) {
    if (!p.ok.length) {
      rows.push(skippedRow(p, head.length));
      continue;
    }
    rows.push([
      p.name,
      ...run.levels.map((n) => {
        const open = Math.min(...p.ok.map((q) => at(q, n)?.connected ?? 0));
        return cell(p, (q) => at(q, n)?.connectPerSecond, 0) +
          (open < n ? ` (${open} open in one run)` : "");
      }),
      ...run.levels.map((n) => {
        const b = (q: PeerResult) => at(q, n)?.rssPerConnectionBytes;
        return cell(p, (q) => b(q) === undefined ? undefined : b(q)! / 1024, 1);
      }),
      versusCell(peers, p, m),
    ]);
  }
  return markdown(rows);
}

/** (b) broadcast and (d) group fan-out: time until the last client has it, at each level. */
export function fanoutTable(run: RunResult): string {
  const peers = peersOf(run);
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
  for (const p of peers) {
    if (!p.ok.length) {
      rows.push(skippedRow(p, head.length));
      continue;
    }
    const cpu = (kind: Kind) => cell(p, (q) => at(q, big)?.[kind]?.serverCpuMsPerRound, 1);
    rows.push([
      p.name,
      ...run.levels.map((n) => fanCell(p, n, "fanout")),
      ...run.levels.map((n) => fanCell(p, n, "group")),
      `${cpu("fanout")} / ${cpu("group")}`,
      versusCell(peers, p, mb),
      versusCell(peers, p, mg),
    ]);
  }
  return markdown(rows);
}

/** (c) unicast /send: closed-loop throughput, latency at the highest fixed rate, CPU per call. */
export function sendTable(run: RunResult): string {
  const peers = peersOf(run);
  const lr = latencyRate(run);
  const m = metrics(run)[2];
  const head = [
    "peer",
    "/send max req/s",
    `p50 @${count(lr)}/s, ms`,
    `p99 @${count(lr)}/s, ms`,
    `p999 @${count(lr)}/s, ms`,
    "server CPU µs per /send at max",
    "throughput vs peers",
  ];
  const rows = [head];
  for (const p of peers) {
    if (!p.ok.length) {
      rows.push(skippedRow(p, head.length));
      continue;
    }
    const latency = (q: "p50Ms" | "p99Ms" | "p999Ms") =>
      cell(p, (r) => fixedRun(r, lr)?.latency[q], 2);
    rows.push([
      p.name,
      cell(p, sendMax, 0),
      latency("p50Ms"),
      latency("p99Ms"),
      latency("p999Ms"),
      cell(p, (r) => maxRun(r)?.serverCpuUsPerSend, 0),
      versusCell(peers, p, m),
    ]);
  }
  return markdown(rows);
}

/** Runs that failed or were skipped while other runs of the same peer measured something. */
function failedRuns(run: RunResult): string[] {
  return peersOf(run).filter((p) => p.ok.length).flatMap((p) =>
    p.runs.filter((r) => !measured(r)).map((r) =>
      `${p.name} #${r.repeat ?? "?"}: ${oneLine(r.skipped ?? r.error ?? "")}`
    )
  );
}

/** Every table of the main result, with a heading line each. */
export function table(run: RunResult): string {
  const failed = failedRuns(run);
  return [
    `Each cell is the median (min–max) of the peer's ${run.repeats} runs ("[2 of 3]" when only ` +
    `some gave a number). A "vs peers" cell says **BEHIND** a peer only when every run of ` +
    `deno-pusher did worse than every run of that peer, and "tie" when the two ranges overlap.`,
    "",
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
    ...(failed.length ? ["", `Runs that failed: ${failed.join("; ")}.`] : []),
  ].join("\n");
}

/** The product peers in `config`, older results (without one) counting as stripped. */
const inConfig = (ours: Peer[], config: string) =>
  ours.filter((p) => (p.config ?? "stripped") === config);

/** Which way a metric's medians point: the best of `ps` by median, if any measured it. */
function bestOf(ps: Peer[], m: Metric): Peer | undefined {
  const sign = m.higherIsBetter ? -1 : 1;
  return ps.filter((p) => over(p, m.get).n)
    .sort((a, b) => sign * (over(a, m.get).median - over(b, m.get).median))[0];
}

/**
 * The verdict of "ahead of `others`" for each configuration, on the better of its two runtimes:
 * "met", "tie with …" when a spread overlaps, "**BEHIND** …" when one is entirely better.
 */
function aheadVerdict(ours: Peer[], others: Peer[], m: Metric): string {
  const configs = [...new Set(ours.map((p) => p.config ?? "stripped"))];
  return configs.map((config) => {
    const best = bestOf(inConfig(ours, config), m);
    if (!best) return `${config}: not measured`;
    const mine = over(best, m.get);
    const behind: string[] = [];
    const ties: string[] = [];
    for (const o of others) {
      const theirs = over(o, m.get);
      const v = versus(mine, theirs, m.higherIsBetter);
      if (v === "behind") {
        behind.push(
          `${o.name} (${times(worseBy(m, mine.median, theirs.median))})`,
        );
      } else if (v === "tie") ties.push(o.name);
    }
    const said = [
      ...(behind.length ? [`**BEHIND** ${behind.join(", ")}`] : []),
      ...(ties.length ? [`tie with ${ties.join(", ")}`] : []),
    ];
    return `${config}: ${said.length ? said.join(", ") : "met"}`;
  }).join("; ");
}

/**
 * Issue 6's targets for deno-pusher, one row each: every product peer's numbers, what they are
 * compared with, and "met", "tie" or "BEHIND" in so many words. The issue asks deno-pusher to be
 * ahead "on one runtime or the other", so each configuration's verdict takes its better runtime.
 */
export function targetTable(run: RunResult): string {
  const peers = peersOf(run);
  const ours = peers.filter((p) => p.role === "product");
  const others = peers.filter((p) => p.role === "peer" && p.ok.length);
  const ms = metrics(run);
  const rows = [[
    "target (issue 6)",
    ...ours.map((p) => p.name),
    "compared with",
    "verdict",
  ]];
  for (const m of ms.filter((m) => m.ceilingBound)) {
    const ratios = ours.map((p) => {
      const c = ceilingOf(peers, p);
      return c ? worseBy(m, over(p, m.get).median, over(c, m.get).median) : NaN;
    });
    const cells = ours.map((p, i) => {
      const c = ceilingOf(peers, p);
      return over(p, m.get).n
        ? `${cell(p, m.get, m.digits)} ${m.unit} = ${times(ratios[i])} ${
          c?.name ?? "its ceiling"
        }'s ` +
          (c ? cell(c, m.get, m.digits) : "–")
        : "not measured";
    });
    const failing = ours.filter((_, i) => !(ratios[i] <= CEILING_RATIO)).map((
      p,
    ) => p.name);
    rows.push([
      `${m.name} within ${CEILING_RATIO}× of the bare ceiling`,
      ...cells,
      "same runtime's like-for-like ceiling (medians)",
      failing.length ? `**missed** on ${failing.join(", ")}` : "met",
    ]);
  }
  const mem = ms[3];
  const go = others.find((p) => p.name === "Go gorilla hub");
  rows.push([
    `${mem.name} below the Go hub's`,
    ...ours.map((p) => `${cell(p, mem.get, 1)} KB`),
    go ? `Go gorilla hub ${cell(go, mem.get, 1)} KB` : "Go gorilla hub did not run",
    go ? aheadVerdict(ours, [go], mem) : "not measured",
  ]);
  for (const m of ms) {
    const top = bestOf(others, m);
    rows.push([
      `${m.name}: ahead of every peer on one runtime or the other`,
      ...ours.map((p) => `${cell(p, m.get, m.digits)} ${m.unit}`),
      top ? `best peer: ${top.name} ${cell(top, m.get, m.digits)} ${m.unit}` : "no peer ran",
      others.length ? aheadVerdict(ours, others, m) : "no peer ran",
    ]);
  }
  return markdown(rows);
}

/** One target of issue 16: a number of the default configuration and its bound. */
interface Target16 {
  name: string;
  unit: string;
  digits: number;
  get: (p: PeerResult) => number | undefined;
  /**
   * The ratio the bound applies to, > 1 when ours is worse: ceiling ÷ ours for rates, ours ÷
   * ceiling for times and memory. Absent for an absolute bound on ours alone (in `unit`).
   */
  ratio?: (ours: number, ceiling: number) => number;
  ratioName?: string;
  bound: number;
}

/** Issue 16: handshakes/s at the largest level within this factor of the ceiling's. */
const CONNECT_BOUND = 1.5;
/** Issue 16: broadcast and group fan-out p50 at the largest level within this factor. */
const FANOUT_BOUND = 1.2;
/** Issue 16: closed-loop /send throughput within this factor. */
const SEND_BOUND = 1.3;
/** Issue 16: memory per idle connection on Deno within this factor of the like-for-like ceiling's. */
const DENO_MEMORY_BOUND = 1.1;
/** Issue 16: memory per idle connection on the Bun executable at most this (KB), absolute. */
const BUN_MEMORY_KB = 4;

function targets16(run: RunResult, runtime: string): Target16[] {
  const big = biggest(run);
  const slower = (ours: number, ceiling: number) => ceiling / ours;
  const longer = (ours: number, ceiling: number) => ours / ceiling;
  const fan = (kind: Kind): Target16 => ({
    name: `${KIND_NAME[kind]} fan-out p50 @${count(big)}`,
    unit: "ms",
    digits: 1,
    get: (p) => at(p, big)?.[kind]?.p50Ms,
    ratio: longer,
    ratioName: "ours ÷ ceiling",
    bound: FANOUT_BOUND,
  });
  const memory = (p: PeerResult) => {
    const b = at(p, big)?.rssPerConnectionBytes;
    return b === undefined ? undefined : b / 1024;
  };
  return [
    {
      name: `connect rate to ${count(big)}`,
      unit: "conn/s",
      digits: 0,
      get: (p) => at(p, big)?.connectPerSecond,
      ratio: slower,
      ratioName: "ceiling ÷ ours",
      bound: CONNECT_BOUND,
    },
    fan("fanout"),
    fan("group"),
    {
      name: "/send closed-loop max",
      unit: "req/s",
      digits: 0,
      get: closedLoop,
      ratio: slower,
      ratioName: "ceiling ÷ ours",
      bound: SEND_BOUND,
    },
    runtime === "bun"
      ? {
        name: `memory per idle connection @${count(big)}`,
        unit: "KB",
        digits: 1,
        get: memory,
        bound: BUN_MEMORY_KB,
      }
      : {
        name: `memory per idle connection @${count(big)}`,
        unit: "KB",
        digits: 1,
        get: memory,
        ratio: longer,
        ratioName: "ours ÷ ceiling",
        bound: DENO_MEMORY_BOUND,
      },
  ];
}

/** The score of each repeat of `ours` against the target (a ratio, or the value itself). */
function scores(t: Target16, ours: Peer, ceiling: Peer | undefined): number[] {
  if (!t.ratio) {
    return ours.ok.map((p) => t.get(p) ?? NaN).filter(Number.isFinite);
  }
  return ceiling ? perRepeat(ours, ceiling, t.get, t.ratio) : [];
}

/** The score of the medians: the ratio of the two medians, or ours alone. */
function medianScore(
  t: Target16,
  ours: Peer,
  ceiling: Peer | undefined,
): number {
  const mine = over(ours, t.get).median;
  if (!t.ratio) return mine;
  return ceiling ? t.ratio(mine, over(ceiling, t.get).median) : NaN;
}

/**
 * "met" or "missed" by whether `ok` holds for the median score, then whether every repeat's own
 * score says the same: "(every repeat)" or "(not every repeat)".
 */
function boundVerdict(
  score: number,
  each: number[],
  ok: (score: number) => boolean,
): string {
  if (!Number.isFinite(score)) return "not measured";
  const met = ok(score);
  const agree = each.every((s) => ok(s) === met);
  return `${met ? "met" : "**missed**"} (${agree ? "every repeat" : "not every repeat"})`;
}

/** A score with its per-repeat range: "1.12× (1.05–1.20×)", or "3.1 KB (2.9–3.3)" for a value. */
function scoreText(t: Target16, score: number, each: number[]): string {
  const s = spread(each);
  const digits = t.ratio ? 2 : t.digits;
  const range = s.n > 1 ? ` (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : "";
  return t.ratio ? `${times(score)}${range}` : `${fmt(score, digits)} ${t.unit}${range}`;
}

/** Runtimes as the targets table names them. */
const RUNTIME_NAME: Record<string, string> = { deno: "Deno", bun: "Bun exe" };

/**
 * Issue 16's targets: deno-pusher's default configuration against its own runtime's like-for-like
 * ceiling (ceiling (Deno, node:http + ws) on Deno, ceiling (Bun, ws.send loop) on the Bun executable), from one
 * run. Each row gives both medians with their spreads, the ratio of the medians, the range of the
 * per-repeat ratios (repeat i's product against repeat i's ceiling), the bound and the verdict;
 * the stripped configuration's ratio stands beside it for reference.
 */
export function targets16Table(run: RunResult): string {
  const peers = peersOf(run);
  const rows = [[
    "target (issue 16)",
    "runtime",
    "default",
    "like-for-like ceiling",
    "ratio of medians (per-repeat min–max)",
    "bound",
    "verdict",
    "stripped, for reference",
  ]];
  for (const runtime of ["deno", "bun"]) {
    const product = (config: string) =>
      peers.find((p) => p.role === "product" && p.runtime === runtime && p.config === config);
    const ours = product("default");
    const stripped = product("stripped");
    const ceiling = peers.find((c) => c.role === "ceiling" && c.runtime === runtime);
    if (!ours) continue;
    for (const t of targets16(run, runtime)) {
      const score = medianScore(t, ours, ceiling);
      const each = scores(t, ours, ceiling);
      const reference = stripped ? medianScore(t, stripped, ceiling) : NaN;
      rows.push([
        t.name,
        RUNTIME_NAME[runtime] ?? runtime,
        `${cell(ours, t.get, t.digits)} ${t.unit}`,
        ceiling ? `${ceiling.name}: ${cell(ceiling, t.get, t.digits)} ${t.unit}` : "did not run",
        Number.isFinite(score) ? scoreText(t, score, each) : "–",
        t.ratio ? `≤ ${t.bound}× (${t.ratioName})` : `≤ ${t.bound} ${t.unit}`,
        boundVerdict(score, each, (s) => s <= t.bound),
        stripped && Number.isFinite(reference)
          ? scoreText(t, reference, scores(t, stripped, ceiling))
          : "–",
      ]);
    }
  }
  return markdown(rows);
}

/**
 * Issue 11's figures from the main run, per runtime: the default configuration's closed-loop /send
 * throughput as a share of the stripped one's (the ratio of the medians, and each repeat's own, the
 * two having run in the same pass), its p99 at ISSUE11_RATE, and its data dir after the run; the
 * verdicts against the issue's two bounds, as in targets16Table.
 */
export function defaultTable(run: RunResult): string {
  const peers = peersOf(run);
  const rate = count(ISSUE11_RATE);
  const p99 = (p: PeerResult) => fixedRun(p, ISSUE11_RATE)?.latency.p99Ms;
  const rows = [[
    "runtime",
    "/send max req/s, stripped",
    "/send max req/s, default",
    "default ÷ stripped (per-repeat min–max)",
    `p99 @${rate}/s ms, stripped`,
    `p99 @${rate}/s ms, default`,
    "default's data dir after, MiB",
    `issue 11: ≥ ${DEFAULT_THROUGHPUT_SHARE * 100}% of stripped / p99 < ${DEFAULT_P99_BOUND_MS} ms`,
  ]];
  for (const runtime of ["deno", "bun"]) {
    const product = (config: string) =>
      peers.find((p) => p.role === "product" && p.runtime === runtime && p.config === config);
    const ours = product("default");
    const stripped = product("stripped");
    if (!ours || !stripped) continue;
    const share = over(ours, closedLoop).median /
      over(stripped, closedLoop).median;
    const shares = perRepeat(ours, stripped, closedLoop, (a, b) => a / b);
    const range = spread(shares);
    const lateness = over(ours, p99);
    const p99s = ours.ok.map((p) => p99(p) ?? NaN).filter(Number.isFinite);
    rows.push([
      RUNTIME_NAME[runtime] ?? runtime,
      cell(stripped, closedLoop, 0),
      cell(ours, closedLoop, 0),
      Number.isFinite(share)
        ? `**×${fmt(share, 2)}**` +
          (range.n > 1 ? ` (×${fmt(range.min, 2)}–×${fmt(range.max, 2)})` : "")
        : "–",
      cell(stripped, p99, 2),
      cell(ours, p99, 2),
      cell(
        ours,
        (p) => p.dataDirBytes === undefined ? undefined : p.dataDirBytes / 2 ** 20,
        1,
      ),
      `${boundVerdict(share, shares, (s) => s >= DEFAULT_THROUGHPUT_SHARE)} / ` +
      (lateness.n
        ? boundVerdict(lateness.median, p99s, (ms) => ms < DEFAULT_P99_BOUND_MS)
        : `not measured (no run at ${rate}/s)`),
    ]);
  }
  return markdown(rows);
}

/** CPU of a stretch in cores (CPU time ÷ wall time). */
const inCores = (ms: number | undefined, wallMs: number | undefined) =>
  ms === undefined || !wallMs ? undefined : ms / wallMs;

/**
 * Is the load generator the limit? For each peer: how much CPU the server, the load generators and
 * the whole machine used while fan-out rounds and closed-loop /send ran, in cores (CPU time / wall
 * time; the machine has 2). A load generator runs one JS thread, so one process near 1.0 would be
 * a limit; "machine" also counts the kernel's loopback work and anyone else on the cores.
 */
export function loadgenTable(run: RunResult): string {
  const big = biggest(run);
  const rows = [[
    "peer",
    `broadcast @${count(big)}: server / load generators / busiest one / machine (cores)`,
    "/send max: server / sender / receivers / busiest one / machine (cores)",
  ]];
  for (const p of peersOf(run).filter((p) => p.ok.length)) {
    const fan = (f: (x: FanoutResult) => number | undefined) => (q: PeerResult) => {
      const x = at(q, big)?.fanout;
      return x ? inCores(f(x), x.wallMsPerRound) : undefined;
    };
    const send = (f: (c: NonNullable<RateResult["cpu"]>) => number) => (q: PeerResult) => {
      const c = maxRun(q)?.cpu;
      return c ? inCores(f(c), c.wallMs) : undefined;
    };
    const cells = (gets: ((q: PeerResult) => number | undefined)[]) =>
      gets.map((g) => cell(p, g, 2)).join(" / ");
    rows.push([
      p.name,
      cells([
        fan((x) => x.serverCpuMsPerRound),
        fan((x) => x.loadgenCpuMsPerRound),
        fan((x) => x.busiestLoadgenCpuMsPerRound),
        fan((x) => x.machineCpuMsPerRound),
      ]),
      cells([
        send((c) => c.serverMs),
        send((c) => c.sendersMs),
        send((c) => c.receiversMs),
        send((c) => c.busiestLoadgenMs),
        send((c) => c.machineMs),
      ]),
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
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
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

/** A peer's colour, the same in every chart of a run: by the order the peers first ran. */
const colourOf = (run: RunResult, name: string) =>
  COLOURS[
    Math.max(0, peersOf(run).findIndex((p) => p.name === name)) % COLOURS.length
  ];

/**
 * Three panels side by side: broadcast p50, group p50 (ms) and KB per connection, against N; each
 * point the median of the peer's runs.
 */
export function chart(run: RunResult): string {
  const peers = peersOf(run).filter((p) => p.ok.some((q) => q.levels.length));
  const seriesOf = (get: (l: LevelResult) => number | undefined): Series[] =>
    peers.map((p) => ({
      colour: colourOf(run, p.name),
      points: run.levels.map((n) =>
        [
          n,
          over(p, (q) => {
            const l = at(q, n);
            return l && get(l);
          }).median,
        ] as [number, number]
      )
        .filter(([, v]) => Number.isFinite(v)),
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
    peers.map((p) => [p.name, colourOf(run, p.name)]),
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
      colour: colourOf(run, p.peer),
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
    soaked.map((p) => [p.peer, colourOf(run, p.peer)]),
  );
}

/**
 * Per-rate detail: one table of every /send run of every peer ("#2" its repeat), with who used the
 * CPU.
 */
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
        `${p.peer}${p.repeat ? ` #${p.repeat}` : ""}`,
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

/** A run's load-generator shape, e.g. "2+1 loadgens": socket holders + /send callers. */
const shapeOf = (p: PeerResult) =>
  p.loadgens ? `${p.loadgens.receivers}+${p.loadgens.senders} loadgens` : "";

/**
 * The load-generator check (`--shapes`): every peer's numbers with each load-generator shape side by
 * side, one row per run ("#2" its repeat), and the second shape's change against the first
 * (medians when a shape ran more than once). Numbers that do not move when the client side gets
 * more processes were not limited by the client side.
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
  for (const peer of peersOf(run)) {
    const runs = peer.ok;
    const nums = runs.map((p) => {
      const l = at(p, big);
      const fixed = fixedRun(p, lr);
      return [
        l?.connectPerSecond,
        l?.fanout?.p50Ms,
        l?.fanout?.p99Ms,
        l?.group?.p50Ms,
        l?.group?.p99Ms,
        sendMax(p),
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
    runs.forEach((p, i) =>
      rows.push([
        peer.name,
        `${shapeOf(p)}${p.repeat ? ` #${p.repeat}` : ""}`,
        ...cells(nums[i]),
      ])
    );
    // With each shape run more than once, the medians per shape are compared.
    const labels = [...new Set(runs.map(shapeOf))];
    if (labels.length === 2) {
      const medians = labels.map((label) =>
        nums[0].map((_, j) =>
          median(
            nums.filter((_, i) => shapeOf(runs[i]) === label).map((v) => v[j] ?? NaN),
          )
        )
      );
      const ratio = medians[1].map((v, j) => v / medians[0][j]);
      const r = (x: number) => `×${fmt(x, 2)}`;
      rows.push([
        peer.name,
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

/** A cluster-scenario run's configuration; results from before the default one ran were stripped. */
const configOf = (r: TopologyRun): ProductConfig => r.config ?? "stripped";

/** A number one cluster-scenario run measured, with the decimals it is shown with. */
interface ClusterMetric {
  get: (r: TopologyRun) => number | undefined;
  digits: number;
}

/**
 * A numeric column of the cluster table: one metric, or two shown as "a / b". A column only a
 * cluster has (Redis, the origin node) shows `single` in a single node's row instead.
 */
interface ClusterColumn {
  title: string;
  metrics: ClusterMetric[];
  single?: string;
  /** Its ratio is the headline of a ratio row. */
  bold?: boolean;
}

const CLUSTER_COLUMNS: ClusterColumn[] = [
  { title: "conn/s", metrics: [{ get: (r) => r.connectPerSecond, digits: 0 }] },
  {
    title: "KB/conn per node",
    metrics: [{ get: (r) => r.rssPerConnectionBytes / 1024, digits: 1 }],
  },
  { title: "broadcast p50 ms", metrics: [{ get: (r) => r.broadcast?.p50Ms, digits: 1 }] },
  { title: "broadcast p99 ms", metrics: [{ get: (r) => r.broadcast?.p99Ms, digits: 1 }] },
  {
    title: "origin node's clients p50 ms",
    metrics: [{ get: (r) => r.broadcast?.originP50Ms, digits: 1 }],
    single: "(same)",
  },
  {
    title: "/send max req/s",
    metrics: [{ get: (r) => r.send?.achievedRate, digits: 0 }],
    bold: true,
  },
  {
    title: "/send p50 / p99 ms",
    metrics: [
      { get: (r) => r.send?.latency.p50Ms, digits: 2 },
      { get: (r) => r.send?.latency.p99Ms, digits: 2 },
    ],
  },
  {
    title: "Redis CPU, broadcast / /send (cores)",
    metrics: [
      { get: (r) => coresOf(r.broadcast?.cpu, (c) => c.redisMs), digits: 2 },
      { get: (r) => coresOf(r.send?.cpu, (c) => c.redisMs), digits: 2 },
    ],
    single: "no Redis",
  },
  {
    title: "nodes' CPU, broadcast / /send (cores)",
    metrics: [
      { get: (r) => coresOf(r.broadcast?.cpu, (c) => c.nodesMs), digits: 2 },
      { get: (r) => coresOf(r.send?.cpu, (c) => c.nodesMs), digits: 2 },
    ],
  },
];

/**
 * `a` ÷ `b` on one metric: the ratio of the medians, then the range of each repeat's own ratio
 * (the two ran in the same repeat), e.g. "×0.62 (×0.55–×0.70)"; "–" when either has no number or
 * shows as 0 (Redis's CPU during broadcasts: a ratio of rounding noise).
 */
function clusterRatio(a: TopologyRun[], b: TopologyRun[], m: ClusterMetric): string {
  const of = (runs: TopologyRun[]) => spread(runs.map((r) => m.get(r) ?? NaN)).median;
  const shownAsZero = (x: number) => Math.abs(x) < 0.5 * 10 ** -m.digits;
  const [x, y] = [of(a), of(b)];
  if (!Number.isFinite(x / y) || shownAsZero(x) || shownAsZero(y)) return "–";
  const perRepeat = spread(a.map((ra) => {
    const rb = b.find((r) => r.repeat === ra.repeat);
    return (m.get(ra) ?? NaN) / (rb ? m.get(rb) ?? NaN : NaN);
  }));
  const range = perRepeat.n > 1 ? ` (×${fmt(perRepeat.min, 2)}–×${fmt(perRepeat.max, 2)})` : "";
  return `×${fmt(x / y, 2)}${range}`;
}

/**
 * Issue 13's cluster scenario, per configuration: the cluster's row, the single node's under it,
 * and cluster ÷ single; then, when both configurations ran, default ÷ stripped per topology.
 * Cells are medians (min–max) over the repeats; a ratio is the ratio of the medians, with the
 * range of each repeat's own ratio after it.
 */
export function clusterTable(run: ClusterRun): string {
  const repeats = run.settings.repeats;
  const rows = [[
    "configuration",
    "topology",
    "connections",
    ...CLUSTER_COLUMNS.map((c) => c.title),
    "problems",
  ]];
  const runsOf = (config: ProductConfig, topology: Topology) =>
    run.runs.filter((r) => configOf(r) === config && r.topology === topology);
  const measured = (runs: TopologyRun[]) =>
    CLUSTER_COLUMNS.map((c) =>
      runs[0].topology === "single" && c.single !== undefined ? c.single : c.metrics
        .map((m) => spreadText(spread(runs.map((r) => m.get(r) ?? NaN)), m.digits, repeats))
        .join(" / ")
    );
  /** `a` ÷ `b` in every column both have: the cluster-only ones when both are clusters. */
  const ratios = (a: TopologyRun[], b: TopologyRun[]) =>
    CLUSTER_COLUMNS.map((c) => {
      if (c.single !== undefined && [a, b].some((runs) => runs[0].topology === "single")) {
        return "";
      }
      const text = c.metrics.map((m) => clusterRatio(a, b, m)).join(" / ");
      return c.bold && text !== "–" ? `**${text}**` : text;
    });

  const configs = [...new Set(run.runs.map(configOf))];
  for (const config of configs) {
    for (const topology of ["cluster", "single"] as const) {
      const runs = runsOf(config, topology);
      if (!runs.length) continue;
      const first = runs[0];
      const asked = first.nodes * first.connectionsPerNode;
      const problems = runs.flatMap((r) =>
        clusterProblems(r).map((p) => oneLine(`#${r.repeat}: ${p}`))
      );
      rows.push([
        config,
        TOPOLOGY_NAME[topology](first),
        `${asked.toLocaleString("en-US")} (${first.nodes} × ${count(first.connectionsPerNode)})`,
        ...measured(runs),
        problems.length ? problems.join("; ") : "none",
      ]);
    }
    const cluster = runsOf(config, "cluster");
    const single = runsOf(config, "single");
    if (cluster.length && single.length) {
      rows.push([config, "**cluster ÷ single**", "", ...ratios(cluster, single), ""]);
    }
  }
  if (configs.includes("default") && configs.includes("stripped")) {
    for (const topology of ["cluster", "single"] as const) {
      const ours = runsOf("default", topology);
      const stripped = runsOf("stripped", topology);
      if (!ours.length || !stripped.length) continue;
      rows.push([
        "**default ÷ stripped**",
        TOPOLOGY_NAME[topology](ours[0]),
        "",
        ...ratios(ours, stripped),
        "",
      ]);
    }
  }
  return markdown(rows);
}

/** Every run of the cluster scenario, in the order they ran, with who used the CPU. */
export function clusterRunsTable(run: ClusterRun): string {
  const rows = [[
    "repeat",
    "configuration",
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
      configOf(r),
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
