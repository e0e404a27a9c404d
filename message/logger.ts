/**
 * Message loggers record every accepted message and how its delivery ended. The send path only
 * hands them records; each logger batches and writes later, so logging never blocks a push.
 */

/**
 * Where a message stands. `accepted` is the start; the rest are final:
 * - `delivered`: written to at least one of the target's connections;
 * - `offline`: the target had no connection (an offline uid, an unknown client or group);
 * - `failed`: every write threw;
 * - `dropped`: every connection it was queued on was cut off (slow consumer) or closed first.
 */
export type DeliveryStatus = "accepted" | "delivered" | "offline" | "failed" | "dropped";

/** One accepted message. */
export interface MessageRecord {
  /** Unique and increasing, also across restarts when the logger keeps state (SQLite). */
  id: number;
  /** The recipient uid when the target is a uid, else null. */
  uid: string | null;
  /** The target as `uid:<uid>`, `client:<id>`, `group:<name>` or `all`. */
  target: string;
  message: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  status: DeliveryStatus;
}

/** Called when a logger cannot write; the message itself was still pushed. */
export type LoggerErrorHandler = (err: unknown) => void;

/** What the hub needs from a logger. Implementations must not throw from `log` or `setStatus`. */
export interface MessageLogger {
  /** Queues a record for writing. */
  log(record: MessageRecord): void;
  /** Queues a status change of a record logged earlier. */
  setStatus(id: number, status: DeliveryStatus): void;
  /** The highest id recorded by earlier runs, or 0. */
  lastId(): number;
  /** Writes everything queued, now. */
  flush(): void;
  /** Flushes and releases the logger's resources. */
  close(): void;
}

/** Logs nothing: MESSAGE_LOGGER=none. */
export class NullLogger implements MessageLogger {
  log(): void {}
  setStatus(): void {}
  lastId(): number {
    return 0;
  }
  flush(): void {}
  close(): void {}
}

/**
 * The batch both real loggers share: records and status changes wait here until a timer writes
 * them. A status change of a record that is still waiting just edits that record, so a message that
 * is settled within one batch is written once.
 */
export abstract class BatchingLogger implements MessageLogger {
  #records = new Map<number, MessageRecord>();
  #updates = new Map<number, DeliveryStatus>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly flushMs: number,
    private readonly onError: LoggerErrorHandler,
  ) {}

  /** Writes one batch; records are new rows, updates change rows written by an earlier batch. */
  protected abstract write(records: MessageRecord[], updates: Map<number, DeliveryStatus>): void;

  abstract lastId(): number;

  log(record: MessageRecord): void {
    this.#records.set(record.id, { ...record });
    this.#schedule();
  }

  setStatus(id: number, status: DeliveryStatus): void {
    const waiting = this.#records.get(id);
    if (waiting) waiting.status = status;
    else this.#updates.set(id, status);
    this.#schedule();
  }

  flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#records.size === 0 && this.#updates.size === 0) return;
    const records = [...this.#records.values()];
    const updates = this.#updates;
    this.#records = new Map();
    this.#updates = new Map();
    try {
      this.write(records, updates);
    } catch (err) {
      this.onError(err);
    }
  }

  close(): void {
    this.flush();
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => this.flush(), this.flushMs);
  }
}
