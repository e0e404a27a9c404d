/**
 * The scenarios of issue 6, run against one started peer with the same load generators:
 * (a) idle connections at increasing counts, (b) fan-out to N connections sharing one uid,
 * (c) unicast /send at increasing rates, (e) a soak. (d) group fan-out waits for the group API.
 *
 * Fan-out is measured as N connections of ONE uid and one /send?uid= to it: that is a real fan-out
 * in every hub here (uid -> set of connections), and it needs no API beyond go-pusher's.
 */
import type { AwaitReply, CollectReply, ConnectReply, RateReply } from "./loadgen/protocol.ts";
import type { SendReply, StatsReply } from "./loadgen/protocol.ts";
import { LoadGen, MAX_SOCKETS_PER_LOADGEN } from "./loadgen/pool.ts";
import { type RunningPeer, treeCpuMs, treeRssBytes } from "./peers.ts";
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
/** How long receivers may lag behind the last answered /send of a rate run (ms). */
const UNICAST_TAIL_TIMEOUT_MS = 3_000;

const FANOUT_UID = "fan";
const UNICAST_PREFIX = "u";
const SOAK_PREFIX = "s";

export interface LevelResult {
  connections: number;
  connected: number;
  failed: number;
  connectErrors: string[];
  connectPerSecond: number;
  rssBytes: number;
  rssPerConnectionBytes: number;
  fanout: {
    rounds: number;
    complete: number;
    lost: number;
    p50Ms: number;
    p99Ms: number;
    maxMs: number;
    /** Mean time /send took to answer (ms): how long the hub holds the caller during fan-out. */
    sendAnswerMs: number;
    /** Server CPU (ms) per fan-out round, over all rounds. */
    serverCpuMsPerRound: number;
  } | null;
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
  skipped?: string;
  error?: string;
  startupMs?: number;
  baselineRssBytes?: number;
  levels: LevelResult[];
  unicast: RateResult[];
  soak?: SoakSample[];
  loadgenCpuMs?: number;
}

/** Load generators sized for `connections`, plus one dedicated /send caller. */
export class Rig {
  readonly receivers: LoadGen[];
  readonly sender: LoadGen;
  /** Connections each receiver holds per set. */
  readonly held = new Map<string, number[]>();
  /** Uid index range [start, end) each receiver was given per set (prefixed uids only). */
  private readonly ranges = new Map<string, [number, number][]>();

  constructor(bun: string, maxConnections: number, deadlineMs: number) {
    const n = Math.max(1, Math.ceil(maxConnections / MAX_SOCKETS_PER_LOADGEN));
    this.receivers = Array.from(
      { length: n },
      () => new LoadGen(bun, deadlineMs),
    );
    this.sender = new LoadGen(bun, deadlineMs);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.receivers, this.sender].map((g) => g.stop()));
  }

  /** Load-generator CPU so far (ms), to show whether the client side was saturated. */
  async cpuMs(): Promise<number> {
    const all = await Promise.all(
      [...this.receivers, this.sender].map((g) => g.request<StatsReply>({ cmd: "stats" })),
    );
    return all.reduce((sum, s) => sum + s.cpuUserMs + s.cpuSystemMs, 0);
  }

  /**
   * Grows set `name` to `total` connections spread evenly over the receivers. `uid` gives them
   * all one uid; otherwise each gets prefix + a global index.
   */
  async grow(
    peer: RunningPeer,
    name: string,
    total: number,
    uid: { uid: string } | { uidPrefix: string },
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

  close(name: string): Promise<unknown> {
    this.held.delete(name);
    this.ranges.delete(name);
    return Promise.all(
      this.receivers.map((g) => g.request({ cmd: "close", set: name })),
    );
  }

  /** Uid ranges of a prefixed set, per receiver: [start, start + count). */
  uidRange(i: number, name: string): [number, number] {
    return this.ranges.get(name)?.[i] ?? [0, 0];
  }
}

/**
 * The JWT secret every peer is started with. deno-pusher requires at least 32 characters. Not a
 * secret: every server listens on loopback only for the length of one run.
 */
export const SECRET = "deno-pusher-bench-secret-0123456789abcdef";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function deliveredOf(reply: SendReply): number {
  try {
    return Number(JSON.parse(reply.body).delivered ?? NaN);
  } catch {
    return NaN;
  }
}

/** Sends one fan-out message and waits until every receiver has all of it, or the round times out. */
async function fanoutRound(rig: Rig, peer: RunningPeer, tag: string) {
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
    uid: FANOUT_UID,
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

/** Scenarios (a) and (b): connections are added level by level and kept for the next level. */
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
    const grown = await rig.grow(peer, "fan", n, { uid: FANOUT_UID });
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
    };
    previous = total;
    results.push(level);
    log(
      `  ${n} conns: ${total} open, ${grown.failed} failed, ${level.connectPerSecond} conn/s, ` +
        `${(level.rssPerConnectionBytes / 1024).toFixed(1)} KB/conn` +
        (grown.errors.length ? ` (errors: ${grown.errors.join("; ")})` : ""),
    );
    if (total === 0) break;
    // Sync: every open connection must be registered before rounds are timed.
    let synced = false;
    for (let attempt = 0; attempt < SYNC_ATTEMPTS && !synced; attempt++) {
      const round = await fanoutRound(rig, peer, `sync${n}_${attempt}`);
      synced = round.received === total;
      if (!synced) await sleep(SYNC_RETRY_MS);
    }
    const lastUs: number[] = [];
    let complete = 0;
    let lost = 0;
    let answerMs = 0;
    const cpuBefore = treeCpuMs(peer.pid);
    for (let r = 0; r < profile.fanoutRounds; r++) {
      const round = await fanoutRound(rig, peer, `f${n}_${r}`);
      answerMs += round.sent.ms;
      if (round.received === total) {
        complete++;
        lastUs.push(round.lastUs);
      } else lost += total - round.received;
    }
    const cpuMs = treeCpuMs(peer.pid) - cpuBefore;
    const sorted = Float64Array.from(lastUs).sort();
    level.fanout = {
      rounds: profile.fanoutRounds,
      complete,
      lost,
      p50Ms: Math.round(quantile(sorted, 0.5)) / 1000,
      p99Ms: Math.round(quantile(sorted, 0.99)) / 1000,
      maxMs: Math.round(sorted[sorted.length - 1] ?? NaN) / 1000,
      sendAnswerMs: Math.round(answerMs / profile.fanoutRounds * 1000) / 1000,
      serverCpuMsPerRound: Math.round(cpuMs / profile.fanoutRounds * 10) / 10,
    };
    log(
      `  fan-out to ${total}: p50 ${level.fanout.p50Ms} ms, p99 ${level.fanout.p99Ms} ms, ` +
        `${complete}/${profile.fanoutRounds} complete` +
        (synced ? "" : " (never fully synced)"),
    );
  }
  return results;
}

/** How many of `issued` round-robin calls over `uidCount` uids land in [start, end). */
function shareOf(
  issued: number,
  uidCount: number,
  [start, end]: [number, number],
): number {
  let n = 0;
  for (let uid = start; uid < Math.min(end, uidCount); uid++) {
    n += Math.floor(issued / uidCount) + (uid < issued % uidCount ? 1 : 0);
  }
  return n;
}

/** One /send rate run against set "uni"; latencies are collected from every receiver. */
async function rateRun(
  rig: Rig,
  peer: RunningPeer,
  tag: string,
  rate: number,
  durationMs: number,
  uidCount: number,
  setName: string,
  uidPrefix: string,
): Promise<RateResult> {
  const cpuBefore = treeCpuMs(peer.pid);
  const r = await rig.sender.request<RateReply>({
    cmd: "rate",
    base: peer.base,
    uidPrefix,
    uidCount,
    tag,
    rate,
    concurrency: SEND_CONCURRENCY,
    durationMs,
    payloadBytes: PAYLOAD_BYTES,
  });
  const cpuMs = treeCpuMs(peer.pid) - cpuBefore;
  // Every accepted call's message must arrive; wait for each receiver's share, bounded.
  await Promise.all(rig.receivers.map((g, i) =>
    g.request<AwaitReply>({
      cmd: "await",
      tag,
      expect: shareOf(r.issued, uidCount, rig.uidRange(i, setName)),
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
    serverCpuUsPerSend: r.accepted ? Math.round(cpuMs * 1000 / r.accepted) : 0,
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
  const uidCount = profile.unicastReceivers;
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
