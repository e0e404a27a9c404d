/**
 * The line protocol between the bench coordinator (bench/run.ts, on Deno) and its load-generator
 * processes (bench/loadgen/client.ts, on Bun). One JSON object per line: commands on the worker's
 * stdin, replies on its stdout, matched by `id`. Types only, so both sides share them.
 *
 * Every pushed message the bench sends is `<tag>|<send time, wall-clock µs>|<padding>`, so a receiver
 * computes send-to-receive latency itself: all load generators run on Bun on one host and read
 * the same clock (performance.timeOrigin + performance.now()).
 */

/** How a client speaks to the server: plain WebSocket frames, or Socket.IO (engine.io v4) packets. */
export type WireMode = "ws" | "sio";

/** Opens `count` connections into the named set, at most `concurrency` handshakes in flight. */
export interface ConnectCommand {
  cmd: "connect";
  set: string;
  count: number;
  /** Every connection uses this uid, or uidPrefix + index from uidStart (one uid each). */
  uid?: string;
  uidPrefix?: string;
  uidStart?: number;
  /** Groups every connection joins at connect time: the token's `groups` claim. */
  groups?: string[];
  /**
   * With uidPrefix: each connection also joins `groupPrefix` + its uid index (uidStart + index),
   * a group of its own beside `groups`, so that the server's group count grows with the sockets.
   */
  groupPrefix?: string;
  /** Destination addresses in 127.0.0.0/8, used round-robin. */
  hosts: string[];
  port: number;
  /** Request path without the token, e.g. "/ws?" or "/socket.io/?EIO=4&transport=websocket&". */
  path: string;
  mode: WireMode;
  secret: string;
  /** Source address to bind in 127.0.0.0/8, so each worker has its own 28k ephemeral ports. */
  localAddress?: string;
  concurrency: number;
  timeoutMs: number;
  /** A handshake not complete after this long fails as "timeout" (ms); default 10,000. */
  handshakeTimeoutMs?: number;
  /**
   * Times a failed handshake is tried again before the connection counts as failed; default 0.
   * Each retry waits a random time below min(retryMaxMs, retryBaseMs × 2^(retries so far)), the
   * full-jitter backoff of deno-pusher's SDK (sdk/client.ts), and keeps its handshake slot meanwhile.
   */
  retries?: number;
  /** First backoff ceiling (ms); default 500, the SDK's MIN_RECONNECT_DELAY_MS. */
  retryBaseMs?: number;
  /** Largest backoff ceiling (ms); default 20,000, the SDK's MAX_RECONNECT_DELAY_MS. */
  retryMaxMs?: number;
  /** When true, the reply carries `openMs`: each successful handshake's time since the start. */
  timings?: boolean;
}

/**
 * Resolves when `expect` messages with `tag` have arrived in this worker, or at the timeout.
 * `forget` drops the tag's latencies afterwards (fan-out rounds); otherwise `collect` takes them.
 */
export interface AwaitCommand {
  cmd: "await";
  tag: string;
  expect: number;
  timeoutMs: number;
  forget: boolean;
}

/** Returns every latency recorded for `tag` (µs) and forgets the tag. */
export interface CollectCommand {
  cmd: "collect";
  tag: string;
}

export interface CloseCommand {
  cmd: "close";
  set: string;
}

export interface StatsCommand {
  cmd: "stats";
}

/**
 * Who one push goes to, and so which call makes it: a uid is `GET /send?uid=&message=` (go-pusher's
 * call), a group is `POST /api/groups/{group}/send` and broadcast is `POST /api/broadcast`, both with
 * the JSON body `{"message"}` (deno-pusher's management API, which every peer implements).
 */
export type Target = { uid: string } | { group: string } | { broadcast: true };

/** One push call to `target`; replies with status and body. */
export interface SendCommand {
  cmd: "send";
  base: string;
  target: Target;
  tag: string;
  payloadBytes: number;
}

/**
 * /send calls over keep-alive HTTP for `durationMs`: open-loop at `rate` per second (calls that
 * would exceed `concurrency` in flight are shed and counted), or closed-loop when rate is 0.
 */
export interface RateCommand {
  cmd: "rate";
  base: string;
  /** Calls go round-robin to uids uidPrefix + uidStart .. uidPrefix + (uidStart + uidCount - 1). */
  uidPrefix: string;
  uidStart: number;
  uidCount: number;
  tag: string;
  rate: number;
  concurrency: number;
  durationMs: number;
  payloadBytes: number;
}

export interface ExitCommand {
  cmd: "exit";
}

export type Command =
  | ConnectCommand
  | AwaitCommand
  | CollectCommand
  | CloseCommand
  | StatsCommand
  | SendCommand
  | RateCommand
  | ExitCommand;

export interface ConnectReply {
  connected: number;
  /** Connections that never opened: every try failed, or the command timed out first. */
  failed: number;
  ms: number;
  /** A sample of failure messages. */
  errors: string[];
  /** Wall-clock time the command started (ms since the epoch, fractional), for lining up workers. */
  startedAtMs?: number;
  /** Time from the start until the last successful handshake (ms); 0 when none succeeded. */
  lastOpenMs?: number;
  /**
   * Failed handshakes by reason, every try counted, retried ones too: "HTTP <status>" for a refusal,
   * "timeout", "reset", "refused" (TCP), "closed" (closed without an answer), or the error's text.
   */
  failures?: Record<string, number>;
  /** Retries made (tries after a connection's first). */
  retried?: number;
  /** With `timings`: each successful handshake's time since the start (ms, 0.1-ms resolution). */
  openMs?: number[];
}

export interface AwaitReply {
  count: number;
  maxUs: number;
  minUs: number;
}

export interface CollectReply {
  count: number;
  latenciesUs: number[];
}

export interface StatsReply {
  open: Record<string, number>;
  closedAfterOpen: number;
  unparsed: number;
  cpuUserMs: number;
  cpuSystemMs: number;
  rssBytes: number;
}

export interface SendReply {
  status: number;
  body: string;
  ms: number;
}

export interface RateReply {
  issued: number;
  accepted: number;
  notFound: number;
  otherStatus: number;
  errors: number;
  shed: number;
  elapsedMs: number;
  errorSample: string[];
}

/** Every reply carries the command's id; `ok: false` replies carry `error` instead of a result. */
export type Reply<T> = { id: number; ok: true } & T | {
  id: number;
  ok: false;
  error: string;
};
