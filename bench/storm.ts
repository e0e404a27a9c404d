/**
 * Issue 16 §2's two scenarios, for any peer, after the scenarios of issue 6 (scenarios.ts):
 *
 * - **Reconnect storm** (`reconnectStorm`): "after a deploy, 19,000 clients come back at once". N
 *   connections, each with its own uid and in group `g` through its token, are opened at the idle
 *   scenario's pace, dropped, and then all reconnect at once: every load generator opens its whole
 *   share with every handshake in flight. It reports how long until every client has its 101, how
 *   long until every client also receives (a send to `g` reaches all N), each failed handshake by
 *   reason, the retries that took, and whether anything but a documented limit refused one.
 * - **A /send costs O(1)** (`sendCost`): /send latency at a fixed open-loop rate to 1,000 receivers,
 *   beside few idle connections and then beside many, where every idle connection has its own uid
 *   and its own group as well as `g`, so that connections, uids and groups all grow together. If a
 *   send's cost did not depend on them, the two levels' latencies would match.
 *
 * Each has a plain-JSON result type for bench/results/*.json and a markdown table over a list of
 * results (several peers, several repeats each: median (min–max) over a peer's repeats).
 *
 *   deno run -A bench/storm.ts --peer "deno-pusher (Deno)"[,<peer>…] [--bun PATH]
 *     [--deno PATH] [--storm 5000] [--idle 1000,5000] [--receivers 1000] [--rate 2000]
 *     [--rate-ms 3000] [--concurrency N] [--retries 5] [--repeats 1] [--deadline-min 10]
 *     [--json PATH]
 *
 * starts each named peer in turn (names as in PEERS of peers.ts; a name that is no peer's exact
 * name picks every peer whose name contains it), runs both scenarios against it (the /send cost
 * first, see runOne), prints both tables (and, with --json, writes the results) and stops every
 * process it started, also on an error, a signal or its deadline. All traffic stays on 127.0.0.0/8.
 */
import { parseArgs } from "node:util";
import { MAX_SOCKETS_PER_LOADGEN } from "./loadgen/pool.ts";
import type { AwaitReply, ConnectCommand, ConnectReply, SendReply } from "./loadgen/protocol.ts";
import {
  PEERS,
  type PeerSpec,
  portFree,
  type RunningPeer,
  start,
  treeCpuMs,
  treeRssBytes,
} from "./peers.ts";
import { MAX_CONNECTIONS_PER_PROCESS, PAYLOAD_BYTES } from "./profiles.ts";
import {
  deliveredOf,
  FANOUT_GROUP,
  type RateResult,
  rateRun,
  Rig,
  SECRET,
  WARMUP_MS,
  WARMUP_RATE,
} from "./scenarios.ts";
import { quantile, spread, spreadText } from "./stats.ts";

/** Handshakes in flight per load generator while a set is opened at the idle scenario's pace. */
const SETUP_CONCURRENCY = 128;
/** Upper bound for opening a set at that pace (ms); scenarios.ts allows a level as long. */
const SETUP_TIMEOUT_MS = 90_000;
/**
 * A storm handshake not answered in this long fails as "timeout" and is retried (ms): deno-pusher's
 * SDK gives a connect 20 s (CONNECT_TIMEOUT_MS in sdk/client.ts). Longer than the idle scenario's
 * 10 s: with thousands of SYNs at once a listen queue overflows, and the kernel's SYN
 * retransmissions (after 1, 3, 7, 15 s) are part of what a storm costs.
 */
const STORM_HANDSHAKE_TIMEOUT_MS = 20_000;
/**
 * Retries per connection after a failed handshake, with the SDK's full-jitter backoff (a random
 * wait below 500 ms doubling to 20 s). The SDK retries for ever; the bench stops after this many,
 * so that a peer that refuses everything ends the storm in about a minute instead of never.
 */
const STORM_RETRIES = 5;
/** Upper bound for the whole storm (ms): 6 tries of 20 s and 15.5 s of backoff fit, with room. */
const STORM_TIMEOUT_MS = 180_000;
/**
 * Pause between the drop and the storm (ms). The load generators have seen every socket close by
 * then; this gives the server's own close handling a moment to finish, as a restarted server
 * would have none left, so that the storm measures the reconnects and not the tail of the drop.
 */
const DROP_SETTLE_MS = 1_000;
/** Sends to `g` tried until one reaches every open connection. */
const RECEIVE_ATTEMPTS = 40;
/** How long one such send may take to reach everyone before the next is tried (ms). */
const RECEIVE_ROUND_TIMEOUT_MS = 3_000;
/**
 * Pause before the next send when the server's answer already says it reached fewer connections
 * than are open (ms): the resolution of "time until every client receives".
 */
const RECEIVE_RETRY_MS = 50;

/** Uid prefix of the storm's connections: r0 … r<N-1>, each in group `g` only. */
const STORM_PREFIX = "r";
const STORM_SET = "storm";
/** Uid prefix of sendCost's receivers (the unicast scenario's shape, its own uids). */
const COST_RECEIVER_PREFIX = "o";
const COST_RECEIVER_SET = "cost-receivers";
/** Uid prefix of sendCost's idle connections; each also joins OWN_GROUP_PREFIX + its index. */
const COST_IDLE_PREFIX = "i";
const COST_IDLE_SET = "cost-idle";
const OWN_GROUP_PREFIX = "g";

/**
 * The handshake refusals a peer documents as limits, by failure reason (see failureReason in
 * loadgen/client.ts). deno-pusher's README: 429 for MAX_CONNECTS_PER_IP (and
 * MAX_CONNECTIONS_PER_UID), 503 for MAX_CONNECTIONS (or shutting down). The other peers document
 * none, so any refusal of theirs counts against them.
 */
export function documentedRefusals(spec: PeerSpec): string[] {
  return spec.role === "product" ? ["HTTP 429", "HTTP 503"] : [];
}

/** What the reconnect storm asks for. */
export interface StormOptions {
  /** Connections that drop and come back: at most the rig's receivers × MAX_SOCKETS_PER_LOADGEN. */
  connections: number;
  /** Handshakes in flight per load generator during the storm; default: its whole share at once. */
  concurrency?: number;
  /** Retries per connection after a failed handshake; default STORM_RETRIES (5). */
  retries?: number;
}

/** One reconnect storm against one peer (plain JSON). */
export interface StormResult {
  peer: string;
  /** Connections asked for. */
  connections: number;
  /** Load generators that held them, each its own share and its own destination address. */
  loadgens: number;
  /** Handshakes in flight per load generator during the storm. */
  concurrency: number;
  /** Retries a connection was allowed, and the backoff they waited. */
  retriesAllowed: number;
  retryPolicy: string;
  /** How the connections were dropped (see reconnectStorm). */
  drop: string;
  /** Connections open before the drop (opened at SETUP_CONCURRENCY per load generator). */
  setupConnected: number;
  /** Failed handshakes while setting up, by reason (retried as in the storm). */
  setupFailures: Record<string, number>;
  /** Connections open after the storm. */
  connected: number;
  /** Connections that never opened again: every try failed, or the storm's bound passed. */
  neverConnected: number;
  /** From the storm's start until the last 101 (ms); null when not every connection came back. */
  connectedMs: number | null;
  /**
   * From the storm's start until the last connection had the first send to `g` that reached every
   * open connection (ms); sends start once all handshakes are done. Null when none reached all.
   */
  receivingMs: number | null;
  /** Sends to `g` made until one reached every open connection (or RECEIVE_ATTEMPTS). */
  receivingSends: number;
  /**
   * How many connections the first of them reached, by the server's answer (`delivered`), made
   * just after the last 101: below `connected` when the server registers sockets after their 101.
   */
  firstSendDelivered: number;
  /** Each connection's time from the storm's start to its 101 (ms): median and 99th percentile. */
  openP50Ms: number;
  openP99Ms: number;
  /** Handshakes answered 101 per second over the storm (connected ÷ connectedMs). */
  connectPerSecond: number;
  /** Failed handshakes by reason ("HTTP 503", "timeout", "reset", …), retried ones included. */
  failures: Record<string, number>;
  /** Retries made over all connections. */
  retries: number;
  /** Reasons this peer documents as a limit (documentedRefusals). */
  documented: string[];
  /** The failures that are not one of them: a non-empty record is a refusal nobody promised. */
  undocumented: Record<string, number>;
  /** Server CPU (ms, its process tree) from the storm's start until every client received. */
  serverCpuMs: number;
  /**
   * Handshakes the kernel dropped from a full listen queue during the storm (see listenDrops): not
   * failures, since the clients' kernels retry them, but the reason for steps of 1 s and 3 s in
   * the time to a 101. Machine-wide, so other programs' drops would count too; NaN when unknown.
   */
  listenDrops: number;
  /** Server RSS after the storm (bytes). */
  rssBytes: number;
  /** The load generators' first failure messages, verbatim. */
  errorSample: string[];
  /** Wall time of the whole scenario (ms): opening, drop, storm, sends and the final close. */
  wallMs: number;
}

/** What the /send cost scenario asks for. */
export interface SendCostOptions {
  /** Receivers, one uid each, that the /send calls go to round-robin (the unicast scenario's 1,000). */
  receivers: number;
  /**
   * Idle connections beside them, ascending (connections are added from one level to the next);
   * receivers + the last level must fit the rig and the peer's 20,000 files (19,000 in all).
   */
  idle: number[];
  /** Open-loop /send rate (calls per second). */
  rate: number;
  /** How long each level's measured run lasts (ms), after a WARMUP_MS warm-up at WARMUP_RATE. */
  durationMs: number;
}

/** /send at one level of idle connections. */
export interface SendCostLevel {
  /** Idle connections asked for, and open. */
  idle: number;
  idleConnected: number;
  /** Groups the idle connections hold between them: one each, and `g`. */
  groups: number;
  /** Whether a send to `g` reached every idle connection before the measurement. */
  idleReceiving: boolean;
  /** Server RSS at this level, before the /send run (bytes). */
  rssBytes: number;
  send: RateResult;
}

/** The /send cost scenario against one peer (plain JSON). */
export interface SendCostResult {
  peer: string;
  receivers: number;
  receiversConnected: number;
  rate: number;
  durationMs: number;
  levels: SendCostLevel[];
  /** The last level's /send latency over the first level's: ×1.00 is O(1). */
  p50Ratio: number;
  p99Ratio: number;
  /** Wall time of the whole scenario (ms), the final close included. */
  wallMs: number;
}

/** Issue 16's settings for each bench profile, and what the coordinator passes for them. */
export const STORM_PROFILES: Record<
  "quick" | "full",
  { storm: StormOptions; sendCost: SendCostOptions }
> = {
  // The quick profile's largest level: its rig already holds 10,000.
  quick: {
    storm: { connections: 10_000 },
    sendCost: {
      receivers: 1_000,
      idle: [1_000, 9_000],
      rate: 2_000,
      durationMs: 3_000,
    },
  },
  full: {
    storm: { connections: MAX_CONNECTIONS_PER_PROCESS },
    sendCost: {
      receivers: 1_000,
      idle: [1_000, MAX_CONNECTIONS_PER_PROCESS - 1_000],
      rate: 2_000,
      durationMs: 5_000,
    },
  },
};

/** Connections a Rig must be built for (its `maxConnections`) to run both scenarios. */
export function connectionsNeeded(
  storm: StormOptions,
  cost: SendCostOptions,
): number {
  return Math.max(
    storm.connections,
    cost.receivers + Math.max(0, ...cost.idle),
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Wall-clock ms since the epoch, fractional; the load generators' clock (see protocol.ts). */
function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/**
 * The kernel's count of handshakes dropped because a listen queue was full (TcpExt ListenDrops in
 * /proc/net/netstat), for the whole network namespace; NaN where it cannot be read. A dropped SYN
 * or final ACK is retried by the client's kernel after 1 s, then 3 s, 7 s: a storm's usual shape.
 */
function listenDrops(): number {
  try {
    const lines = Deno.readTextFileSync("/proc/net/netstat").split("\n")
      .filter((l) => l.startsWith("TcpExt:"));
    const names = lines[0].split(/\s+/);
    return Number(lines[1].split(/\s+/)[names.indexOf("ListenDrops")]);
  } catch {
    return NaN;
  }
}

/** `total` split over `parts` as evenly as can be, the first ones one larger. */
function shares(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

function ensureCapacity(rig: Rig, connections: number, what: string): void {
  const capacity = rig.receivers.length * MAX_SOCKETS_PER_LOADGEN;
  if (connections > capacity) {
    throw new Error(
      `${what} needs ${connections} connections but the rig's ${rig.receivers.length} load ` +
        `generators hold ${capacity}: build the Rig for connectionsNeeded(...)`,
    );
  }
}

/**
 * Opens counts[i] connections on receiver i, uids prefix + (uidStarts[i] + k), into `set`; the
 * rest of the command (concurrency, retries…) is `extra`. Answers each receiver's reply.
 */
function openSet(
  rig: Rig,
  peer: RunningPeer,
  set: string,
  prefix: string,
  counts: number[],
  uidStarts: number[],
  extra:
    & Pick<ConnectCommand, "concurrency" | "timeoutMs">
    & Partial<ConnectCommand>,
): Promise<ConnectReply[]> {
  return Promise.all(rig.receivers.map((g, i) =>
    g.request<ConnectReply>({
      cmd: "connect",
      set,
      count: counts[i],
      uidPrefix: prefix,
      uidStart: uidStarts[i],
      groups: [FANOUT_GROUP],
      hosts: [g.serverAddress],
      port: peer.port,
      path: peer.spec.wsPath,
      mode: peer.spec.wire,
      secret: SECRET,
      ...extra,
    })
  ));
}

/** How sends to `g` went until one reached every open connection (wall-clock ms). */
interface Reach {
  /** Sends made; the last one reached everyone when `lastAtMs` is set. */
  sends: number;
  /** How many connections the first send reached, by the server's own count (NaN without one). */
  firstDelivered: number;
  /** When the send that reached everyone was made, and when its last copy arrived. */
  sentAtMs?: number;
  lastAtMs?: number;
}

/**
 * Sends to group `g` until one send reaches expect[i] connections on every receiver i, at most
 * RECEIVE_ATTEMPTS times. A server may register a socket just after its 101, so this is the bench's
 * only proof that a connection receives.
 */
async function untilAllReceive(
  rig: Rig,
  peer: RunningPeer,
  tagPrefix: string,
  expect: number[],
): Promise<Reach> {
  const total = sum(expect);
  const reach: Reach = { sends: 0, firstDelivered: NaN };
  if (total === 0) return reach;
  for (let k = 0; k < RECEIVE_ATTEMPTS; k++) {
    const tag = `${tagPrefix}${k}`;
    const arrivals = Promise.all(
      rig.receivers.map((g, i) =>
        g.request<AwaitReply>({
          cmd: "await",
          tag,
          expect: expect[i],
          timeoutMs: RECEIVE_ROUND_TIMEOUT_MS,
          forget: true,
        })
      ),
    );
    const sentAtMs = wallMs();
    const sent = await rig.sender.request<SendReply>({
      cmd: "send",
      base: peer.base,
      target: { group: FANOUT_GROUP },
      tag,
      payloadBytes: PAYLOAD_BYTES,
    });
    const delivered = deliveredOf(sent);
    reach.sends = k + 1;
    if (k === 0) reach.firstDelivered = delivered;
    // The server's own count says this send cannot reach everyone: try again without waiting.
    if (delivered < total) {
      arrivals.catch(() => {}); // left to time out in the load generators
      await sleep(RECEIVE_RETRY_MS);
      continue;
    }
    const got = await arrivals;
    if (sum(got.map((r) => r.count)) >= total) {
      reach.sentAtMs = sentAtMs;
      reach.lastAtMs = sentAtMs + Math.max(...got.map((r) => r.maxUs)) / 1000;
      return reach;
    }
  }
  return reach;
}

/** "timeout ×3, HTTP 503 ×1", or "none". */
function counted(byReason: Record<string, number>): string {
  return Object.entries(byReason).map(([k, v]) => `${k} ×${v}`).join(", ") ||
    "none";
}

/** Adds `b` into `a`, reason by reason. */
function addCounts(
  a: Record<string, number>,
  b: Record<string, number> | undefined,
): void {
  for (const [k, v] of Object.entries(b ?? {})) a[k] = (a[k] ?? 0) + v;
}

/**
 * The reconnect storm. `opts.connections` connections of distinct uids r0 … r<N-1>, each in group
 * `g` through its token, are opened at SETUP_CONCURRENCY per load generator (failed ones retried),
 * checked to receive, and dropped from the client side: each load generator closes its sockets
 * (close frame, then FIN) and waits until each has ended, then DROP_SETTLE_MS passes. (The Rig and
 * RunningPeer cannot restart a server in place, and a restart would time its start-up too; to the
 * server the storm looks the same: every client it knew is gone, and all come back at once, as
 * deno-pusher's SDK does at once after a 1001 or 1012 close.) Then every load generator opens its
 * whole share with `opts.concurrency` handshakes in flight (default: all of them); as the SDK, a
 * client gives a handshake STORM_HANDSHAKE_TIMEOUT_MS and retries a failed one after a full-jitter
 * backoff, here at most `opts.retries` times. Once every handshake is done, sends to `g` go out
 * until one reaches every open connection. The set is closed before this returns, also on an error.
 *
 * The rig must hold `opts.connections` (see connectionsNeeded); throws when it cannot.
 */
export async function reconnectStorm(
  rig: Rig,
  peer: RunningPeer,
  opts: StormOptions,
  log: (s: string) => void,
): Promise<StormResult> {
  const n = opts.connections;
  ensureCapacity(rig, n, "the reconnect storm");
  const counts = shares(n, rig.receivers.length);
  const uidStarts = counts.map((_, i) => sum(counts.slice(0, i)));
  const concurrency = opts.concurrency ?? Math.max(...counts);
  const retries = opts.retries ?? STORM_RETRIES;
  const began = performance.now();
  let result: StormResult | undefined;
  try {
    const setup = await openSet(
      rig,
      peer,
      STORM_SET,
      STORM_PREFIX,
      counts,
      uidStarts,
      {
        concurrency: SETUP_CONCURRENCY,
        timeoutMs: SETUP_TIMEOUT_MS,
        retries,
      },
    );
    const setupConnected = sum(setup.map((r) => r.connected));
    const setupFailures: Record<string, number> = {};
    for (const r of setup) addCounts(setupFailures, r.failures);
    const before = await untilAllReceive(
      rig,
      peer,
      "storm-before",
      setup.map((r) => r.connected),
    );
    log(
      `  storm: ${setupConnected} of ${n} open before the drop` +
        (setupConnected < n ? ` (failed: ${counted(setupFailures)})` : "") +
        (before.lastAtMs ? "" : " (a send to g never reached them all)"),
    );
    await rig.close(STORM_SET);
    await sleep(DROP_SETTLE_MS);

    const cpu0 = treeCpuMs(peer.pid);
    const drops0 = listenDrops();
    const startedAt = wallMs();
    const replies = await openSet(
      rig,
      peer,
      STORM_SET,
      STORM_PREFIX,
      counts,
      uidStarts,
      {
        concurrency,
        timeoutMs: STORM_TIMEOUT_MS,
        handshakeTimeoutMs: STORM_HANDSHAKE_TIMEOUT_MS,
        retries,
        timings: true,
      },
    );
    const connected = sum(replies.map((r) => r.connected));
    const drops = listenDrops() - drops0;
    // Each load generator's clock offsets from its own start; line them up on the storm's start.
    const offset = (r: ConnectReply) => (r.startedAtMs ?? startedAt) - startedAt;
    const opens = Float64Array.from(
      replies.flatMap((r) => (r.openMs ?? []).map((ms) => ms + offset(r))),
    ).sort();
    const lastOpen = Math.max(
      0,
      ...replies.map((r) => offset(r) + (r.lastOpenMs ?? 0)),
    );
    const reached = await untilAllReceive(
      rig,
      peer,
      "storm-after",
      replies.map((r) => r.connected),
    );
    const serverCpuMs = treeCpuMs(peer.pid) - cpu0;
    const failures: Record<string, number> = {};
    for (const r of replies) addCounts(failures, r.failures);
    const documented = documentedRefusals(peer.spec);
    const undocumented = Object.fromEntries(
      Object.entries(failures).filter(([reason]) => !documented.includes(reason)),
    );
    const round = (ms: number) => Math.round(ms);
    result = {
      peer: peer.spec.name,
      connections: n,
      loadgens: rig.receivers.length,
      concurrency,
      retriesAllowed: retries,
      retryPolicy: `as deno-pusher's SDK: ${STORM_HANDSHAKE_TIMEOUT_MS / 1000}-s handshake ` +
        "timeout, then a random wait below min(20 s, 0.5 s × 2^retry)",
      drop: "client side: close frame and FIN from every client, then " +
        `${DROP_SETTLE_MS} ms before the storm`,
      setupConnected,
      setupFailures,
      connected,
      neverConnected: n - connected,
      connectedMs: connected === n ? round(lastOpen) : null,
      receivingMs: reached.lastAtMs ? round(reached.lastAtMs - startedAt) : null,
      receivingSends: reached.sends,
      firstSendDelivered: reached.firstDelivered,
      openP50Ms: round(quantile(opens, 0.5)),
      openP99Ms: round(quantile(opens, 0.99)),
      connectPerSecond: lastOpen > 0 ? Math.round(connected / (lastOpen / 1000)) : 0,
      failures,
      retries: sum(replies.map((r) => r.retried ?? 0)),
      documented,
      undocumented,
      serverCpuMs: round(serverCpuMs),
      listenDrops: drops,
      rssBytes: treeRssBytes(peer.pid),
      errorSample: replies.flatMap((r) => r.errors).slice(0, 5),
      wallMs: 0,
    };
    log(
      `  storm: ${connected} of ${n} back in ${result.connectedMs ?? "–"} ms ` +
        `(${result.connectPerSecond}/s, p50 ${result.openP50Ms} p99 ${result.openP99Ms} ms), ` +
        `all receiving at ${result.receivingMs ?? "never"} ms after ${result.receivingSends} ` +
        `send(s) (the first reached ${result.firstSendDelivered}); ` +
        `failed handshakes: ${counted(failures)}, ${result.retries} retries, ` +
        `${drops} listen-queue drops` +
        (result.errorSample.length ? ` (first: ${result.errorSample[0]})` : ""),
    );
  } finally {
    await rig.close(STORM_SET).catch(() => {});
  }
  result.wallMs = Math.round(performance.now() - began);
  log(`  storm: ${(result.wallMs / 1000).toFixed(1)} s in all`);
  return result;
}

/**
 * /send's cost against the number of connections and groups. `opts.receivers` receivers (uids
 * o0 …, one each) stay connected throughout; beside them, idle connections are added level by
 * level (`opts.idle`, ascending), each with its own uid (i0 …) and, through its token's groups
 * claim ["g", "g<k>"], a group of its own as well as `g`, so that a level of M idle connections
 * holds M + 1 groups. At each level, once a send to `g` has reached every idle connection: the
 * unrecorded warm-up (WARMUP_RATE for WARMUP_MS, as the unicast scenario), then open-loop /send at
 * `opts.rate` for `opts.durationMs`, round-robin over the receivers. Both sets are closed before
 * this returns, also on an error.
 *
 * The rig must hold receivers + the last level (see connectionsNeeded); throws when it cannot.
 */
export async function sendCost(
  rig: Rig,
  peer: RunningPeer,
  opts: SendCostOptions,
  log: (s: string) => void,
): Promise<SendCostResult> {
  const levels = [...opts.idle].sort((a, b) => a - b);
  ensureCapacity(
    rig,
    opts.receivers + Math.max(0, ...levels),
    "the /send cost scenario",
  );
  const began = performance.now();
  const result: SendCostResult = {
    peer: peer.spec.name,
    receivers: opts.receivers,
    receiversConnected: 0,
    rate: opts.rate,
    durationMs: opts.durationMs,
    levels: [],
    p50Ratio: NaN,
    p99Ratio: NaN,
    wallMs: 0,
  };
  try {
    const grown = await rig.grow(peer, COST_RECEIVER_SET, opts.receivers, {
      uidPrefix: COST_RECEIVER_PREFIX,
    });
    result.receiversConnected = grown.connected;
    if (grown.connected === 0) {
      throw new Error(
        `no /send receiver connected: ${grown.errors.join("; ")}`,
      );
    }
    // Idle uids are numbered across levels, never reused: i0 … i<last level - 1>.
    const held = rig.receivers.map(() => 0);
    let nextUid = 0;
    for (const level of levels) {
      const adds = shares(Math.max(0, level - sum(held)), rig.receivers.length);
      const uidStarts = adds.map((_, i) => nextUid + sum(adds.slice(0, i)));
      nextUid += sum(adds);
      const replies = await openSet(
        rig,
        peer,
        COST_IDLE_SET,
        COST_IDLE_PREFIX,
        adds,
        uidStarts,
        {
          concurrency: SETUP_CONCURRENCY,
          timeoutMs: SETUP_TIMEOUT_MS,
          groupPrefix: OWN_GROUP_PREFIX,
        },
      );
      replies.forEach((r, i) => held[i] += r.connected);
      const idleConnected = sum(held);
      const reached = await untilAllReceive(
        rig,
        peer,
        `cost-sync${level}_`,
        held,
      );
      const rssBytes = treeRssBytes(peer.pid);
      await rateRun(
        rig,
        peer,
        `cost-warmup${level}`,
        WARMUP_RATE,
        WARMUP_MS,
        opts.receivers,
        COST_RECEIVER_SET,
        COST_RECEIVER_PREFIX,
      );
      const send = await rateRun(
        rig,
        peer,
        `cost${level}`,
        opts.rate,
        opts.durationMs,
        opts.receivers,
        COST_RECEIVER_SET,
        COST_RECEIVER_PREFIX,
      );
      result.levels.push({
        idle: level,
        idleConnected,
        groups: idleConnected + 1,
        idleReceiving: reached.lastAtMs !== undefined,
        rssBytes,
        send,
      });
      log(
        `  /send beside ${idleConnected} idle (${idleConnected + 1} groups` +
          `${reached.lastAtMs ? "" : ", a send to g never reached them all"}): ` +
          `${send.achievedRate}/s of ${opts.rate}, p50 ${send.latency.p50Ms} ` +
          `p99 ${send.latency.p99Ms} p999 ${send.latency.p999Ms} ms, ${send.received}/${send.accepted} received, ` +
          `${send.shed} shed, ${send.notFound + send.otherStatus + send.errors} failed`,
      );
    }
    const first = result.levels[0]?.send.latency;
    const last = result.levels[result.levels.length - 1]?.send.latency;
    if (first && last) {
      result.p50Ratio = last.p50Ms / first.p50Ms;
      result.p99Ratio = last.p99Ms / first.p99Ms;
    }
  } finally {
    await rig.close(COST_RECEIVER_SET).catch(() => {});
    await rig.close(COST_IDLE_SET).catch(() => {});
  }
  result.wallMs = Math.round(performance.now() - began);
  log(`  /send cost: ${(result.wallMs / 1000).toFixed(1)} s in all`);
  return result;
}

// ---- Tables ----

/** A peer's repeats as "median (min–max)" (stats.ts's spreadText); a null is a repeat without one. */
function spreadCell(xs: readonly (number | null)[], digits = 0): string {
  return spreadText(spread(xs.map((x) => x ?? NaN)), digits, xs.length);
}

/** A ratio over repeats, "×1.05 (0.98–1.20)". */
function ratioCell(xs: readonly number[]): string {
  const text = spreadCell(xs, 2);
  return text === "–" ? text : `×${text}`;
}

/** Counts by reason over repeats: "reason: median (min–max)" for each, or "none". */
function reasonsCell(records: readonly Record<string, number>[]): string {
  const reasons = [...new Set(records.flatMap((r) => Object.keys(r)))].sort();
  if (!reasons.length) return "none";
  return reasons.map((k) => `${k}: ${spreadCell(records.map((r) => r[k] ?? 0))}`).join("; ");
}

/** Results grouped by peer, in the order the peers first appear. */
function byPeer<T extends { peer: string }>(
  results: readonly T[],
): [string, T[]][] {
  const groups = new Map<string, T[]>();
  for (const r of results) {
    const list = groups.get(r.peer) ?? [];
    list.push(r);
    groups.set(r.peer, list);
  }
  return [...groups];
}

function markdown(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join(
    "\n",
  );
}

/** "19k" for 19,000, "500" for 500. */
const short = (n: number) => n >= 1000 ? `${n / 1000}k` : String(n);

/**
 * The reconnect storm, one row per peer: each cell the median (min–max) over the peer's repeats.
 * "refused beyond documented limits" lists the failed handshakes that no documented limit of the
 * peer explains (for deno-pusher: anything but 429 and 503).
 */
export function stormTable(results: readonly StormResult[]): string {
  const rows = byPeer(results).map(([peer, runs]) => {
    const first = runs[0];
    const undocumented = reasonsCell(runs.map((r) => r.undocumented));
    return [
      peer,
      String(runs.length),
      `${first.connections.toLocaleString("en-US")} (${first.loadgens} × ` +
      `${first.concurrency.toLocaleString("en-US")} in flight)`,
      spreadCell(runs.map((r) => r.connectedMs)),
      spreadCell(runs.map((r) => r.receivingMs)),
      spreadCell(runs.map((r) => r.firstSendDelivered)),
      `${spreadCell(runs.map((r) => r.openP50Ms))} / ${spreadCell(runs.map((r) => r.openP99Ms))}`,
      spreadCell(runs.map((r) => r.connectPerSecond)),
      reasonsCell(runs.map((r) => r.failures)),
      spreadCell(runs.map((r) => r.retries)),
      spreadCell(runs.map((r) => r.neverConnected)),
      undocumented === "none" ? "none" : `**${undocumented}**`,
      spreadCell(runs.map((r) => r.listenDrops)),
      spreadCell(runs.map((r) => r.serverCpuMs)),
    ];
  });
  return markdown([
    "peer",
    "runs",
    "connections (load generators × handshakes in flight)",
    "all back (101), ms",
    "all receiving, ms",
    "first send after the last 101 reached",
    "each 101 p50 / p99, ms",
    "handshakes/s",
    "failed handshakes by reason",
    "retries",
    "never back",
    "refused beyond documented limits",
    "listen-queue drops",
    "server CPU, ms",
  ], rows);
}

/**
 * The /send cost, one row per peer: /send latency and achieved rate at each level of idle
 * connections side by side, then the last level's p50 and p99 over the first's (the median of each
 * repeat's own ratio, with their min–max). Levels are the first result's.
 */
export function sendCostTable(results: readonly SendCostResult[]): string {
  const levels = results[0]?.levels.map((l) => l.idle) ?? [];
  const rate = results[0]?.rate ?? NaN;
  const rows = byPeer(results).map(([peer, runs]) => {
    const at = (r: SendCostResult, idle: number) => r.levels.find((l) => l.idle === idle)?.send;
    const cells = levels.flatMap((idle) => {
      const sends = runs.map((r) => at(r, idle));
      return [
        spreadCell(sends.map((s) => s?.latency.p50Ms ?? null), 2),
        spreadCell(sends.map((s) => s?.latency.p99Ms ?? null), 2),
        spreadCell(sends.map((s) => s?.latency.p999Ms ?? null), 2),
        spreadCell(sends.map((s) => s?.achievedRate ?? null)),
      ];
    });
    return [
      peer,
      String(runs.length),
      ...cells,
      ratioCell(runs.map((r) => r.p50Ratio)),
      ratioCell(runs.map((r) => r.p99Ratio)),
    ];
  });
  const last = levels[levels.length - 1];
  return markdown([
    "peer",
    "runs",
    ...levels.flatMap((idle) => {
      const at = `${short(idle)} idle`;
      return [
        `${at}: p50 ms`,
        `${at}: p99 ms`,
        `${at}: p999 ms`,
        `${at}: /s of ${rate}`,
      ];
    }),
    `p50 ${short(last)} ÷ ${short(levels[0])}`,
    `p99 ${short(last)} ÷ ${short(levels[0])}`,
  ], rows);
}

// ---- Standalone entry point ----

/** First port tried for peers: above run.ts's (18,181 + 200) and cluster.ts's (18,600 + 200). */
const BASE_PORT = 18_900;
/** Ports tried past BASE_PORT before giving up. */
const PORT_TRIES = 100;

/** Everything the entry point started and has not stopped yet, so an end of any kind stops it. */
const live = { peer: null as RunningPeer | null, rig: null as Rig | null };

async function cleanup(): Promise<void> {
  await Promise.all([live.rig?.stop(), live.peer?.stop()]);
  live.rig = null;
  live.peer = null;
}

function log(s: string): void {
  console.error(s);
}

/** The peers `wanted` names: an exact name, else every peer whose name contains it. */
function choosePeers(wanted: string[]): PeerSpec[] {
  return wanted.flatMap((w) => {
    const exact = PEERS.filter((p) => p.name === w);
    const found = exact.length
      ? exact
      : PEERS.filter((p) => p.name.toLowerCase().includes(w.toLowerCase()));
    if (!found.length) {
      throw new Error(
        `no peer named ${w}; peers: ${PEERS.map((p) => p.name).join(", ")}`,
      );
    }
    return found;
  });
}

/** Starts `spec`, runs both scenarios, and stops what it started; no results for a skip. */
async function runOne(
  spec: PeerSpec,
  tools: { repo: string; deno: string; bun: string },
  storm: StormOptions,
  cost: SendCostOptions,
  deadlineMs: number,
): Promise<{ storm?: StormResult; cost?: SendCostResult }> {
  const port = Array.from({ length: PORT_TRIES }, (_, i) => BASE_PORT + i).find(
    portFree,
  );
  if (port === undefined) {
    throw new Error(`no free port in ${BASE_PORT}..${BASE_PORT + PORT_TRIES}`);
  }
  const dataDir = await Deno.makeTempDir({ prefix: "deno-pusher-storm-" });
  const out: { storm?: StormResult; cost?: SendCostResult } = {};
  try {
    const launch = await spec.launch(tools, port, SECRET, dataDir);
    if ("skip" in launch) {
      log(`${spec.name}: skipped: ${launch.skip}`);
      return out;
    }
    log(`${spec.name}: starting on :${port}`);
    const peer = live.peer = start(spec, port, launch);
    await peer.ready();
    const rig = live.rig = new Rig(
      tools.bun,
      connectionsNeeded(storm, cost),
      deadlineMs,
    );
    // The /send cost first: the storm ends by closing N sockets, and their collection would land
    // in the first level's tail, as scenarios.ts's warm-up notes for the unicast rates.
    try {
      out.cost = await sendCost(rig, peer, cost, log);
    } catch (err) {
      log(
        `${spec.name}: /send cost failed: ${err instanceof Error ? err.message : err}`,
      );
    }
    try {
      out.storm = await reconnectStorm(rig, peer, storm, log);
    } catch (err) {
      log(
        `${spec.name}: reconnect storm failed: ${err instanceof Error ? err.message : err}`,
      );
    }
    if (peer.exited) {
      log(`${spec.name}: exited with ${peer.exited.code}:\n${peer.logTail}`);
    } else if (peer.logTail) {
      log(`${spec.name}: its last output:\n${peer.logTail}`);
    }
  } finally {
    await cleanup();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      peer: { type: "string", multiple: true },
      bun: { type: "string", default: "bun" },
      deno: { type: "string", default: Deno.execPath() },
      storm: { type: "string", default: "5000" },
      idle: { type: "string", default: "1000,5000" },
      receivers: { type: "string", default: "1000" },
      rate: { type: "string", default: "2000" },
      "rate-ms": { type: "string", default: "3000" },
      concurrency: { type: "string" },
      retries: { type: "string" },
      repeats: { type: "string", default: "1" },
      "deadline-min": { type: "string", default: "10" },
      json: { type: "string" },
    },
  });
  const wanted = (values.peer ?? ["deno-pusher (Deno)"]).flatMap((p) => p.split(","))
    .map((p) => p.trim()).filter(Boolean);
  const specs = choosePeers(wanted);
  const storm: StormOptions = {
    connections: Number(values.storm),
    ...(values.concurrency ? { concurrency: Number(values.concurrency) } : {}),
    ...(values.retries ? { retries: Number(values.retries) } : {}),
  };
  const cost: SendCostOptions = {
    receivers: Number(values.receivers),
    idle: values.idle.split(",").map(Number),
    rate: Number(values.rate),
    durationMs: Number(values["rate-ms"]),
  };
  const deadlineMs = Number(values["deadline-min"]) * 60_000;
  const deadline = setTimeout(async () => {
    log(`storm: deadline of ${deadlineMs} ms reached; stopping everything`);
    await cleanup();
    Deno.exit(2);
  }, deadlineMs);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      await cleanup();
      Deno.exit(130);
    });
  }
  const repo = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const tools = { repo, deno: values.deno, bun: values.bun };
  const storms: StormResult[] = [];
  const costs: SendCostResult[] = [];
  const started = performance.now();
  try {
    for (let repeat = 0; repeat < Number(values.repeats); repeat++) {
      for (const spec of specs) {
        const out = await runOne(spec, tools, storm, cost, deadlineMs);
        if (out.storm) storms.push(out.storm);
        if (out.cost) costs.push(out.cost);
      }
    }
  } finally {
    await cleanup();
    clearTimeout(deadline);
  }
  console.log(
    [
      `Reconnect storm (${storm.connections.toLocaleString("en-US")} connections) and /send ` +
      `cost (${cost.receivers.toLocaleString("en-US")} receivers, ${cost.rate}/s for ` +
      `${cost.durationMs / 1000} s beside ${cost.idle.join(", ")} idle), ` +
      `${Math.round((performance.now() - started) / 1000)} s:`,
      "",
      storms.length ? stormTable(storms) : "(no storm result)",
      "",
      costs.length ? sendCostTable(costs) : "(no /send cost result)",
    ].join("\n"),
  );
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify({ storms, costs }, null, 2),
    );
    log(`results written to ${values.json}`);
  }
}

if (import.meta.main) await main();
