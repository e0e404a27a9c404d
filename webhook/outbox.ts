/**
 * The webhook outbox: where events wait until a receiver has answered 2xx. One row per event and
 * destination URL. Each URL's rows form queues, one per order key (orderKey: the event's uid), and
 * a queue is delivered in the order its rows were added: its head blocks the rows behind it while
 * it fails, and only its own; other queues go on. A queue's head comes due at its `nextAt`, which
 * a failure pushes back (the deliverer's backoff).
 *
 * The embedded implementation is outbox_sqlite.ts (a file in the data directory, so that a restart
 * keeps what was not delivered); a cluster's is outbox_redis.ts, shared by every node, whose `due`
 * also leases the queues it answers (LEASE_MS) so that two nodes never POST one queue at once.
 */
import type { WebhookEvent } from "./events.ts";

/** OutboxOptions.maxEvents's default: rows kept at most, some tens of MiB of small events. */
export const MAX_OUTBOX_EVENTS = 100_000;

/** One event waiting for one URL, as `due` answers it. */
export interface OutboxRow {
  /** Its place in the outbox: rows added later have higher ones. */
  seq: number;
  /** Its queue (orderKey of the event). */
  key: string;
  /** The event as JSON, exactly as it is POSTed. */
  json: string;
  /** When the event happened (its `ts`), ms since the epoch: its age counts from there. */
  createdAt: number;
  /** Deliveries of this row that failed so far. */
  attempts: number;
}

/** How an outbox is doing. Counters only grow. */
export interface OutboxStats {
  /** Rows waiting, written or about to be. */
  rows: number;
  /** Rows dropped, the oldest first, to keep the outbox within maxEvents. */
  dropped: number;
  /** Rows `expire` removed. */
  expired: number;
}

/**
 * The outbox's contract. `add` is synchronous and cheap, so that a caller never waits on it; the
 * other methods may reach a disk or a network. Every error names the outbox's file or server.
 * Used by one deliverer at a time, which never has two requests in flight for one URL.
 */
export interface Outbox {
  /**
   * Adds `event` once per URL of `urls`, behind the rows of its queue there; written soon after
   * (the embedded one commits at the next turn of the event loop). Beyond its bound the oldest rows
   * go. Throws, naming the outbox, when it is closed, and a TypeError when the event cannot be
   * turned into JSON (a BigInt, a cycle): nothing is added then.
   */
  add(event: WebhookEvent, urls: readonly string[]): void;
  /**
   * Up to `limit` rows for `url` whose queue's head is due at `now` (ms since the epoch): queues
   * due the longest first, and each queue's rows from its head, in order, without a gap.
   */
  due(url: string, now: number, limit: number): Promise<OutboxRow[]>;
  /**
   * Removes `rows` of `url`, which its receiver accepted. A queue with rows left behind them comes
   * due at `now`, behind the queues waiting already: one busy uid does not hold up the others.
   */
  delivered(url: string, rows: readonly OutboxRow[], now: number): Promise<void>;
  /**
   * Counts a failed delivery of `rows` of `url`, and sets each of their queues' next time to
   * `nextAt(attempts)`, `attempts` being the new count of the queue's head (1 after its first
   * failure).
   */
  retry(
    url: string,
    rows: readonly OutboxRow[],
    nextAt: (attempts: number) => number,
  ): Promise<void>;
  /**
   * `url`'s receiver accepts again after it was down: every queue of `url` waiting for a retry
   * (due after `now`) comes due at `now`, its rows keeping their counts of failures, so that what
   * waited on the backoff goes now rather than at each queue's own time. A queue that another
   * outbox has claimed (the Redis lease) keeps its time. Answers how many queues came due.
   */
  resume(url: string, now: number): Promise<number>;
  /**
   * Removes rows of any URL whose event happened at or before `cutoff` (ms since the epoch), the
   * oldest first, some thousands at a time; answers how many went.
   */
  expire(cutoff: number): Promise<number>;
  /** When the first of `url`'s queues comes due, ms since the epoch; undefined when it has none. */
  nextDueAt(url: string): Promise<number | undefined>;
  /** Rows waiting, of every URL. */
  size(): number;
  stats(): OutboxStats;
  /** Writes what `add` was given and closes; rejects, naming the outbox, when it cannot. */
  close(): Promise<void>;
}

/** What an outbox is built from. */
export interface OutboxOptions {
  /**
   * Rows kept at most, 1 or more (an event to two URLs is two rows); past it the oldest are
   * dropped. Default MAX_OUTBOX_EVENTS.
   */
  maxEvents?: number;
  /**
   * Told when rows start being dropped to keep the bound (once per burst), and when a write
   * fails (once until one succeeds). Default: nothing.
   */
  onError?: (err: Error) => void;
}

/**
 * The queue an event waits in: its uid's, so that a uid's events arrive in order; for an event
 * without a uid, its group's; else one queue for all the others.
 */
export function orderKey(event: WebhookEvent): string {
  if (typeof event.uid === "string") return `uid:${event.uid}`;
  if (typeof event.group === "string") return `group:${event.group}`;
  return "";
}

/**
 * A drop burst ends when the outbox is back under this share of maxEvents: the next drop is
 * reported again. Below 1, so that a full outbox that delivers and drops by turns reports once.
 */
const BURST_END = 0.9;

/**
 * The rows an outbox drops, the oldest first, to stay within its bound: counted, and reported
 * once per burst (not once per row), naming the outbox.
 */
export class DropBursts {
  /** Rows dropped, ever. */
  dropped = 0;
  /** Whether a burst was reported and has not ended. */
  #dropping = false;

  constructor(
    private readonly name: string,
    private readonly maxEvents: number,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Counts `n` rows dropped, and reports it if no burst is reported already. */
  drop(n: number): void {
    this.dropped += n;
    if (this.#dropping) return;
    this.#dropping = true;
    this.onError(
      new Error(
        `${this.name} is full (${this.maxEvents} events): dropped the oldest ${count(n)}, ` +
          `which no receiver will get; further drops are counted, not logged, until it is back ` +
          `under ${Math.floor(this.maxEvents * BURST_END)}`,
      ),
    );
  }

  /** Ends the burst when the outbox, now holding `size` rows, is back under BURST_END. */
  settle(size: number): void {
    if (this.#dropping && size < this.maxEvents * BURST_END) this.#dropping = false;
  }
}

/** "1 event", "3 events". */
export function count(n: number): string {
  return `${n} event${n === 1 ? "" : "s"}`;
}
