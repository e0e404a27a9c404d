/**
 * The scenarios of issue 6, run against one started peer with the same load generators:
 * (a) idle connections at increasing counts, (b) broadcast fan-out to those N connections,
 * (d) group fan-out to the same N connections, (c) unicast /send at increasing rates, (e) a soak.
 *
 * Every connection of a level has its own uid and joins one group through its token's `groups`
 * claim. (b) is one `POST /api/broadcast` and (d) one `POST /api/groups/g/send`: each peer has both
 * calls and implements them with its own natural structure (see bench/peers/), so both are a real
 * fan-out everywhere. Their rounds alternate, so noise on the shared cores falls on both alike.
 */
import type { SendCostResult, StormResult } from "./storm.ts";
import type { AwaitReply, CollectReply, ConnectReply, RateReply } from "./loadgen/protocol.ts";
import type { SendReply, StatsReply, Target } from "./loadgen/protocol.ts";
import { LoadGen, MAX_SOCKETS_PER_LOADGEN } from "./loadgen/pool.ts";
import { machineBusyMs, type RunningPeer, treeCpuMs, treeRssBytes } from "./peers.ts";
import { PAYLOAD_BYTES, type Profile } from "./profiles.ts";
import { type LatencySummary, quantile, summarize } from "./stats.ts";

/** Handshakes in flight per load generator: well under the listen backlog (somaxconn 4096). */
const CONNECT_CONCURRENCY = 128;
/** Upper bound for opening one level's connections (ms); at 1k conn/s, 19k take 19 s. */
const CONNECT_TIMEOUT_MS = 90_000;
/**
 * Pause after connecting before reading RSS (ms). Not a synchronisation: there is no event for
 * "the runtime has finished allocating for its new sockets", so memory is read after a fixed settle.
 */
const RSS_SETTLE_MS = 1_000;
/** A fan-out round not complete after this long counts as lost messages (ms). */
const ROUND_TIMEOUT_MS = 10_000;
/**
 * Sync attempts before measuring a level: a server may register a socket just after its 101, so
 * the bench sends until /send reports every connection delivered, with this many tries at most.
 */
const SYNC_ATTEMPTS = 20;
/** Wait between sync attempts (ms); /send's `delivered` count is the only readiness signal. */
const SYNC_RETRY_MS = 100;
/** Open-loop sender's limit on /send calls in flight; more are shed and counted. */
const SEND_CONCURRENCY = 64;
/** The unrecorded /send run before the measured rates: calls per second, and for how long (ms). */
export const WARMUP_RATE = 2_000;
export const WARMUP_MS = 2_000;
/** How long closing a set may take before the next one opens regardless (ms). */
const CLOSE_TIMEOUT_MS = 15_000;
/** How long receivers may lag behind the last answered /send of a rate run (ms). */
const UNICAST_TAIL_TIMEOUT_MS = 3_000;

/** Uid prefix of the level connections: each has its own uid. */
const FANOUT_PREFIX = "f";
/** The group every level connection joins at connect time, for scenario (d). */
export const FANOUT_GROUP = "g";
const UNICAST_PREFIX = "u";
const SOAK_PREFIX = "s";

/** Timed rounds of one kind of fan-out at one level. */
export interface FanoutResult {
  rounds: number;
  complete: number;
  lost: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Mean time the push call took to answer (ms): how long the hub holds the caller. */
  sendAnswerMs: number;
  /** Mean wall time of a round (ms), from the call until the last receiver has it. */
  wallMsPerRound: number;
  /** Server CPU (ms) per round, over all rounds. */
  serverCpuMsPerRound: number;
  /** CPU (ms) per round of every load-generator process together (receivers and sender). */
  loadgenCpuMsPerRound: number;
  /** CPU (ms) per round of the busiest single load-generator process (each runs one JS thread). */
  busiestLoadgenCpuMsPerRound: number;
  /** Busy CPU (ms) per round of the whole machine, every core and process together. */
  machineCpuMsPerRound?: number;
}

export interface LevelResult {
  connections: number;
  connected: number;
  failed: number;
  connectErrors: string[];
  connectPerSecond: number;
  rssBytes: number;
  rssPerConnectionBytes: number;
  /** (b) one `POST /api/broadcast` per round. */
  fanout: FanoutResult | null;
  /** (d) one `POST /api/groups/g/send` per round; every level connection is a member. */
  group?: FanoutResult | null;
}

/** CPU time (ms) spent during one measured stretch, by whom, and its wall time. */
export interface CpuShare {
  wallMs: number;
  serverMs: number;
  /** The /send callers together. */
  sendersMs: number;
  /** The socket holders together. */
  receiversMs: number;
  /** The busiest single load-generator process. */
  busiestLoadgenMs: number;
  /** The whole machine, every process and the kernel (so other users of the cores too). */
  machineMs: number;
}

export interface RateResult {
  targetRate: number;
  achievedRate: number;
  issued: number;
  accepted: number;
  notFound: number;
  otherStatus: number;
  errors: number;
  shed: number;
  received: number;
  latency: LatencySummary;
  /** Server CPU per answered /send (µs): what one call costs the server. */
  serverCpuUsPerSend: number;
  /** Who used the CPU while the calls were made. */
  cpu?: CpuShare;
  errorSample: string[];
}

export interface SoakSample {
  atSeconds: number;
  rssBytes: number;
  achievedRate: number;
  latency: LatencySummary;
}

export interface PeerResult {
  peer: string;
  role: string;
  runtime: string;
  /** deno-pusher's configuration (product peers only); see ProductConfig in peers.ts. */
  config?: string;
  /** Which repeat of the peer this run is (1-based): every peer runs once per repeat, in turns. */
  repeat?: number;
  /** Wall time of the run (ms), from start-up to the peer's and load generators' exit. */
  wallMs?: number;
  skipped?: string;
  error?: string;
  startupMs?: number;
  baselineRssBytes?: number;
  levels: LevelResult[];
  unicast: RateResult[];
  soak?: SoakSample[];
  /** Issue 16's reconnect storm (bench/storm.ts), when the profile runs it. */
  storm?: StormResult;
  /** Issue 16's /send latency beside few and many idle connections (bench/storm.ts). */
  sendCost?: SendCostResult;
  loadgenCpuMs?: number;
  /** Bytes a product peer left in its data dir when it stopped (message log, history and so on). */
  dataDirBytes?: number;
  /** Load-generator processes used: socket holders and /send callers. */
  loadgens?: { receivers: number; senders: number; socketsPerReceiver: number };
}

/** How many load-generator processes a run uses; more than needed shows they are not the limit. */
export interface RigShape {
  /** Most sockets one receiver process holds (at most MAX_SOCKETS_PER_LOADGEN). */
  socketsPerReceiver: number;
  /** /send caller processes; a rate and its in-flight limit are split evenly over them. */
  senders: number;
}

export const DEFAULT_RIG: RigShape = {
  socketsPerReceiver: MAX_SOCKETS_PER_LOADGEN,
  senders: 1,
};

/** A snapshot of CPU time (ms) from /proc, taken with Rig.cpu(). */
export interface CpuSnapshot {
  at: number;
  machine: number;
  server: number;
  senders: number[];
  receivers: number[];
}

/** Load generators sized for `connections`, plus dedicated /send callers. */
export class Rig {
  readonly receivers: LoadGen[];
  readonly senders: LoadGen[];
  /** Connections each receiver holds per set. */
  readonly held = new Map<string, number[]>();
  /** Uid index range [start, end) each receiver was given per set (prefixed uids only). */
  private readonly ranges = new Map<string, [number, number][]>();

  constructor(
    bun: string,
    maxConnections: number,
    deadlineMs: number,
    readonly shape: RigShape = DEFAULT_RIG,
  ) {
    const per = Math.min(
      MAX_SOCKETS_PER_LOADGEN,
      Math.max(1, shape.socketsPerReceiver),
    );
    const n = Math.max(1, Math.ceil(maxConnections / per));
    this.receivers = Array.from(
      { length: n },
      () => new LoadGen(bun, deadlineMs),
    );
    this.senders = Array.from(
      { length: Math.max(1, shape.senders) },
      () => new LoadGen(bun, deadlineMs),
    );
  }

  /** The process that makes single push calls (fan-out rounds). */
  get sender(): LoadGen {
    return this.senders[0];
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.receivers, ...this.senders].map((g) => g.stop()),
    );
  }

  /** CPU time so far (ms) of the peer and of each load generator, from /proc; cheap, synchronous. */
  cpu(peer: RunningPeer): CpuSnapshot {
    return {
      at: performance.now(),
      machine: machineBusyMs(),
      server: treeCpuMs(peer.pid),
      senders: this.senders.map((g) => treeCpuMs(g.pid)),
      receivers: this.receivers.map((g) => treeCpuMs(g.pid)),
    };
  }

  /** Load-generator CPU so far (ms), all processes together. */
  cpuMs(): number {
    return [...this.receivers, ...this.senders].reduce(
      (a, g) => a + treeCpuMs(g.pid),
      0,
    );
  }

  /**
   * Grows set `name` to `total` connections spread evenly over the receivers. `uid` gives them
   * all one uid; otherwise each gets prefix + a global index. Each joins `groups` at connect time.
   */
  async grow(
    peer: RunningPeer,
    name: string,
    total: number,
    uid: { uid: string } | { uidPrefix: string },
    groups?: string[],
  ): Promise<
    { connected: number; failed: number; ms: number; errors: string[] }
  > {
    const held = this.held.get(name) ?? this.receivers.map(() => 0);
    this.held.set(name, held);
    const wants = this.receivers.map((_, i) =>
      Math.floor(total / this.receivers.length) +
      (i < total % this.receivers.length ? 1 : 0)
    );
    // Prefixed uids are contiguous from 0 over the receivers, so a sender can address them all.
    let start = 0;
    const ranges = wants.map((
      want,
    ): [number, number] => [start, start += want]);
    this.ranges.set(name, ranges);
    const started = performance.now();
    const replies = await Promise.all(this.receivers.map((g, i) => {
      const count = Math.max(0, wants[i] - held[i]);
      const uidStart = ranges[i][0] + held[i];
      return g.request<ConnectReply>({
        cmd: "connect",
        set: name,
        count,
        ...("uid" in uid ? { uid: uid.uid } : { uidPrefix: uid.uidPrefix, uidStart }),
        ...(groups ? { groups } : {}),
        hosts: [g.serverAddress],
        port: peer.port,
        path: peer.spec.wsPath,
        mode: peer.spec.wire,
        secret: SECRET,
        concurrency: CONNECT_CONCURRENCY,
        timeoutMs: CONNECT_TIMEOUT_MS,
      }).then((r) => {
        held[i] += r.connected;
        return r;
      });
    }));
    return {
      connected: replies.reduce((a, r) => a + r.connected, 0),
      failed: replies.reduce((a, r) => a + r.failed, 0),
      ms: performance.now() - started,
      errors: replies.flatMap((r) => r.errors).slice(0, 5),
    };
  }

  /**
   * Closes every connection of set `name` and waits (at most CLOSE_TIMEOUT_MS) until the load
   * generators have seen each one end, so that the next set does not overlap it on the server,
   * whose 20,000 files the largest level nearly fills.
   */
  async close(name: string): Promise<void> {
    this.held.delete(name);
    this.ranges.delete(name);
    await Promise.all(
      this.receivers.map((g) => g.request({ cmd: "close", set: name })),
    );
    const until = performance.now() + CLOSE_TIMEOUT_MS;
    while (performance.now() < until) {
      const stats = await Promise.all(
        this.receivers.map((g) => g.request<StatsReply>({ cmd: "stats" })),
      );
      if (stats.every((s) => !s.open[name])) return;
      await sleep(SYNC_RETRY_MS);
    }
  }

  /** Uid ranges of a prefixed set, per receiver: [start, start + count). */
  uidRange(i: number, name: string): [number, number] {
    return this.ranges.get(name)?.[i] ?? [0, 0];
  }
}

/** CPU used between two snapshots of the same rig. */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuShare {
  const diffs = (x: number[], y: number[]) => y.map((v, i) => v - (x[i] ?? 0));
  const senders = diffs(a.senders, b.senders);
  const receivers = diffs(a.receivers, b.receivers);
  const sum = (xs: number[]) => xs.reduce((s, v) => s + v, 0);
  return {
    wallMs: Math.round(b.at - a.at),
    serverMs: Math.round(b.server - a.server),
    sendersMs: Math.round(sum(senders)),
    receiversMs: Math.round(sum(receivers)),
    busiestLoadgenMs: Math.round(Math.max(0, ...senders, ...receivers)),
    machineMs: Math.round(b.machine - a.machine),
  };
}

/**
 * The JWT secret every peer is started with. deno-pusher requires at least 32 characters. Not a
 * secret: every server listens on loopback only for the length of one run.
 */
export const SECRET = "deno-pusher-bench-secret-0123456789abcdef";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function deliveredOf(reply: SendReply): number {
  try {
    return Number(JSON.parse(reply.body).delivered ?? NaN);
  } catch {
    return NaN;
  }
}

/** Sends one fan-out message and waits until every receiver has all of it, or the round times out. */
async function fanoutRound(
  rig: Rig,
  peer: RunningPeer,
  tag: string,
  target: Target,
) {
  const held = rig.held.get("fan") ?? [];
  const arrivals = rig.receivers.map((g, i) =>
    g.request<AwaitReply>({
      cmd: "await",
      tag,
      expect: held[i],
      timeoutMs: ROUND_TIMEOUT_MS,
      forget: true,
    })
  );
  const sent = await rig.sender.request<SendReply>({
    cmd: "send",
    base: peer.base,
    target,
    tag,
    payloadBytes: PAYLOAD_BYTES,
  });
  const got = await Promise.all(arrivals);
  return {
    sent,
    delivered: deliveredOf(sent),
    received: got.reduce((a, r) => a + r.count, 0),
    lastUs: Math.max(...got.map((r) => r.maxUs)),
  };
}

/** Accumulates the timed rounds of one kind of fan-out at one level. */
class FanoutTally {
  private readonly lastUs: number[] = [];
  private complete = 0;
  private lost = 0;
  private answerMs = 0;
  private wallMs = 0;
  private serverMs = 0;
  private loadgenMs = 0;
  private busiestMs = 0;
  private machineMs = 0;
  private rounds = 0;

  constructor(readonly target: Target) {}

  async round(
    rig: Rig,
    peer: RunningPeer,
    tag: string,
    total: number,
  ): Promise<void> {
    const before = rig.cpu(peer);
    const round = await fanoutRound(rig, peer, tag, this.target);
    const used = cpuBetween(before, rig.cpu(peer));
    this.rounds++;
    this.answerMs += round.sent.ms;
    this.wallMs += used.wallMs;
    this.serverMs += used.serverMs;
    this.loadgenMs += used.sendersMs + used.receiversMs;
    this.busiestMs += used.busiestLoadgenMs;
    this.machineMs += used.machineMs;
    if (round.received === total) {
      this.complete++;
      this.lastUs.push(round.lastUs);
    } else this.lost += total - round.received;
  }

  result(): FanoutResult {
    const sorted = Float64Array.from(this.lastUs).sort();
    const per = (ms: number, digits = 10) =>
      Math.round(ms / Math.max(1, this.rounds) * digits) / digits;
    return {
      rounds: this.rounds,
      complete: this.complete,
      lost: this.lost,
      p50Ms: Math.round(quantile(sorted, 0.5)) / 1000,
      p99Ms: Math.round(quantile(sorted, 0.99)) / 1000,
      maxMs: Math.round(sorted[sorted.length - 1] ?? NaN) / 1000,
      sendAnswerMs: per(this.answerMs, 1000),
      wallMsPerRound: per(this.wallMs),
      serverCpuMsPerRound: per(this.serverMs),
      loadgenCpuMsPerRound: per(this.loadgenMs),
      busiestLoadgenCpuMsPerRound: per(this.busiestMs),
      machineCpuMsPerRound: per(this.machineMs),
    };
  }
}

/**
 * Scenarios (a), (b) and (d): connections are added level by level and kept for the next level;
 * at each level, broadcast and group rounds alternate.
 */
export async function idleAndFanout(
  rig: Rig,
  peer: RunningPeer,
  profile: Profile,
  baselineRss: number,
  log: (s: string) => void,
): Promise<LevelResult[]> {
  const results: LevelResult[] = [];
  let previous = 0;
  for (const n of profile.levels) {
    const grown = await rig.grow(peer, "fan", n, { uidPrefix: FANOUT_PREFIX }, [
      FANOUT_GROUP,
    ]);
    const total = (rig.held.get("fan") ?? []).reduce((a, b) => a + b, 0);
    await sleep(RSS_SETTLE_MS);
    const rss = treeRssBytes(peer.pid);
    const level: LevelResult = {
      connections: n,
      connected: total,
      failed: grown.failed,
      connectErrors: grown.errors,
      connectPerSecond: Math.round((total - previous) / (grown.ms / 1000)),
      rssBytes: rss,
      rssPerConnectionBytes: total ? Math.round((rss - baselineRss) / total) : 0,
      fanout: null,
      group: null,
    };
    previous = total;
    results.push(level);
    log(
      `  ${n} conns: ${total} open, ${grown.failed} failed, ${level.connectPerSecond} conn/s, ` +
        `${(level.rssPerConnectionBytes / 1024).toFixed(1)} KB/conn` +
        (grown.errors.length ? ` (errors: ${grown.errors.join("; ")})` : ""),
    );
    if (total === 0) break;
    // Sync: every open connection must be registered, and in the group, before rounds are timed.
    const group: Target = { group: FANOUT_GROUP };
    let synced = false;
    for (let attempt = 0; attempt < SYNC_ATTEMPTS && !synced; attempt++) {
      const round = await fanoutRound(rig, peer, `sync${n}_${attempt}`, group);
      synced = round.received === total;
      if (!synced) await sleep(SYNC_RETRY_MS);
    }
    const broadcast = new FanoutTally({ broadcast: true });
    const grouped = new FanoutTally(group);
    for (let r = 0; r < profile.fanoutRounds; r++) {
      await broadcast.round(rig, peer, `b${n}_${r}`, total);
      await grouped.round(rig, peer, `g${n}_${r}`, total);
    }
    level.fanout = broadcast.result();
    level.group = grouped.result();
    for (
      const [what, f] of [["broadcast", level.fanout], [
        "group",
        level.group,
      ]] as const
    ) {
      log(
        `  ${what} to ${total}: p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms, ` +
          `${f.complete}/${f.rounds} complete; CPU per round: server ${f.serverCpuMsPerRound} ms, ` +
          `load generators ${f.loadgenCpuMsPerRound} ms (busiest ${f.busiestLoadgenCpuMsPerRound})` +
          (synced ? "" : " (never fully synced)"),
      );
    }
  }
  return results;
}

/** How many of `issued` round-robin calls over uids [from, from + count) land in [start, end). */
function shareOf(
  issued: number,
  [from, count]: [number, number],
  [start, end]: [number, number],
): number {
  let n = 0;
  for (
    let uid = Math.max(start, from);
    uid < Math.min(end, from + count);
    uid++
  ) {
    const k = uid - from;
    n += Math.floor(issued / count) + (k < issued % count ? 1 : 0);
  }
  return n;
}

/** Sender k's slice [start, count] of `uidCount` uids, so that senders never share a uid. */
function senderSlice(
  k: number,
  senders: number,
  uidCount: number,
): [number, number] {
  const start = Math.floor(k * uidCount / senders);
  return [start, Math.floor((k + 1) * uidCount / senders) - start];
}

/**
 * One /send rate run against a set of prefixed uids; latencies are collected from every receiver.
 * The rate and the in-flight limit are split evenly over the rig's senders.
 */
export async function rateRun(
  rig: Rig,
  peer: RunningPeer,
  tag: string,
  rate: number,
  durationMs: number,
  uidCount: number,
  setName: string,
  uidPrefix: string,
): Promise<RateResult> {
  const senders = rig.senders.length;
  const slices = rig.senders.map((_, k) => senderSlice(k, senders, uidCount));
  const before = rig.cpu(peer);
  const replies = await Promise.all(
    rig.senders.map((g, k) =>
      g.request<RateReply>({
        cmd: "rate",
        base: peer.base,
        uidPrefix,
        uidStart: slices[k][0],
        uidCount: slices[k][1],
        tag,
        rate: rate / senders,
        concurrency: Math.max(1, Math.round(SEND_CONCURRENCY / senders)),
        durationMs,
        payloadBytes: PAYLOAD_BYTES,
      })
    ),
  );
  const cpu = cpuBetween(before, rig.cpu(peer));
  const sum = (f: (r: RateReply) => number) => replies.reduce((a, r) => a + f(r), 0);
  const r = {
    issued: sum((r) => r.issued),
    accepted: sum((r) => r.accepted),
    notFound: sum((r) => r.notFound),
    otherStatus: sum((r) => r.otherStatus),
    errors: sum((r) => r.errors),
    shed: sum((r) => r.shed),
    elapsedMs: Math.max(...replies.map((r) => r.elapsedMs)),
    errorSample: replies.flatMap((r) => r.errorSample).slice(0, 5),
  };
  // Every accepted call's message must arrive; wait for each receiver's share, bounded.
  await Promise.all(rig.receivers.map((g, i) =>
    g.request<AwaitReply>({
      cmd: "await",
      tag,
      expect: replies.reduce(
        (a, reply, k) => a + shareOf(reply.issued, slices[k], rig.uidRange(i, setName)),
        0,
      ),
      timeoutMs: UNICAST_TAIL_TIMEOUT_MS,
      forget: false,
    })
  ));
  const collected = await Promise.all(
    rig.receivers.map((g) => g.request<CollectReply>({ cmd: "collect", tag })),
  );
  const latencies = collected.flatMap((c) => c.latenciesUs);
  return {
    targetRate: rate,
    achievedRate: Math.round(r.accepted / (r.elapsedMs / 1000)),
    issued: r.issued,
    accepted: r.accepted,
    notFound: r.notFound,
    otherStatus: r.otherStatus,
    errors: r.errors,
    shed: r.shed,
    received: latencies.length,
    latency: summarize(latencies),
    serverCpuUsPerSend: r.accepted ? Math.round(cpu.serverMs * 1000 / r.accepted) : 0,
    cpu,
    errorSample: r.errorSample,
  };
}

/** Scenario (c): unicast receivers with one uid each, then each rate of the profile in turn. */
export async function unicast(
  rig: Rig,
  peer: RunningPeer,
  profile: Profile,
  log: (s: string) => void,
): Promise<RateResult[]> {
  const grown = await rig.grow(peer, "uni", profile.unicastReceivers, {
    uidPrefix: UNICAST_PREFIX,
  });
  if (grown.connected === 0) {
    throw new Error(`no unicast receiver connected: ${grown.errors}`);
  }
  if (grown.failed) {
    log(
      `  unicast receivers: ${grown.failed} failed to connect (${grown.errors.join("; ")})`,
    );
  }
  const uidCount = profile.unicastReceivers;
  // Not recorded: lets the server finish with the level connections just closed (a collector
  // pass over thousands of sockets otherwise lands in the first rate's tail) and warms the path.
  await rateRun(
    rig,
    peer,
    "warmup",
    WARMUP_RATE,
    WARMUP_MS,
    uidCount,
    "uni",
    UNICAST_PREFIX,
  );
  const results: RateResult[] = [];
  for (const rate of profile.rates) {
    const result = await rateRun(
      rig,
      peer,
      `r${rate}`,
      rate,
      profile.rateDurationMs,
      uidCount,
      "uni",
      UNICAST_PREFIX,
    );
    results.push(result);
    log(
      `  /send ${
        rate || "max"
      }/s: ${result.achievedRate}/s achieved, p50 ${result.latency.p50Ms} ` +
        `p99 ${result.latency.p99Ms} p999 ${result.latency.p999Ms} ms, ` +
        `${result.received}/${result.accepted} received, ${result.shed} shed, ` +
        `${result.notFound + result.otherStatus + result.errors} failed`,
    );
  }
  await rig.close("uni");
  return results;
}

/** Scenario (e): steady load for profile.soak.minutes; RSS and latency sampled each interval. */
export async function soak(
  rig: Rig,
  peer: RunningPeer,
  profile: Profile,
  log: (s: string) => void,
): Promise<SoakSample[]> {
  const soak = profile.soak;
  if (!soak) return [];
  await rig.grow(peer, "idle", soak.idleConnections, {
    uidPrefix: SOAK_PREFIX,
  });
  await rig.grow(peer, "uni", profile.unicastReceivers, {
    uidPrefix: UNICAST_PREFIX,
  });
  const samples: SoakSample[] = [];
  const started = performance.now();
  const intervals = Math.ceil(soak.minutes * 60 / soak.sampleSeconds);
  for (let i = 0; i < intervals; i++) {
    const r = await rateRun(
      rig,
      peer,
      `soak${i}`,
      soak.rate,
      soak.sampleSeconds * 1000,
      profile.unicastReceivers,
      "uni",
      UNICAST_PREFIX,
    );
    const sample = {
      atSeconds: Math.round((performance.now() - started) / 1000),
      rssBytes: treeRssBytes(peer.pid),
      achievedRate: r.achievedRate,
      latency: r.latency,
    };
    samples.push(sample);
    log(
      `  soak ${sample.atSeconds}s: RSS ${(sample.rssBytes / 2 ** 20).toFixed(1)} MiB, ` +
        `p50 ${sample.latency.p50Ms} p99 ${sample.latency.p99Ms} ms`,
    );
  }
  await rig.close("uni");
  await rig.close("idle");
  return samples;
}
