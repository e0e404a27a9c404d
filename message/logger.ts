/**
 * Message loggers record every accepted message and how its delivery ended. The send path only
 * hands them records; each logger batches and writes later, so logging never blocks a push.
 */
import { clearImmediate, setImmediate } from "node:timers";

/**
 * Where a message stands. `accepted` is the start; the rest are final:
 * - `delivered`: written to at least one of the target's connections;
 * - `offline`: the target had no connection (an offline uid, an unknown client or group);
 * - `failed`: every write threw;
 * - `dropped`: every connection it was queued on was cut off (slow consumer) or closed first;
 * - `queued`: its uid was offline and the mailbox keeps it (OFFLINE_TTL); it becomes `delivered`
 *   when a connection of the uid is written it, or `expired` when OFFLINE_TTL passes first;
 * - `acked`: a client of its target acknowledged it (`{"type":"ack","id":N}`).
 */
export type DeliveryStatus =
  | "accepted"
  | "delivered"
  | "offline"
  | "failed"
  | "dropped"
  | "queued"
  | "expired"
  | "acked"
  /** Left `accepted` by a run that ended first (a crash); set by the SQLite log when it opens. */
  | "interrupted";

/** One accepted message. */
export interface MessageRecord {
  /** Unique and increasing, also across restarts (see ids.ts). */
  id: number;
  /** The recipient uid when the target is a uid, else null. */
  uid: string | null;
  /** The target as `uid:<uid>`, `client:<id>`, `group:<name>` or `all`. */
  target: string;
  message: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  status: DeliveryStatus;
  /** Connections it was written to so far; 0 when absent. */
  written?: number;
  /** The uids that acked it, with when (ms since the epoch), in the order they did. */
  acks?: [uid: string, at: number][];
}

/**
 * What happened to a record since it was logged: a new status, more connections written, more
 * acks. Changes of one record fold into one (see `fold`).
 */
export interface RecordChange {
  status?: DeliveryStatus;
  /** Connections written to, to add to the record's count. */
  written: number;
  acks: [uid: string, at: number][];
}

/** A message as the log keeps it, for GET /api/messages/{id}. */
export interface LoggedMessage extends Omit<MessageRecord, "written" | "acks"> {
  /** Connections it was written to (a mailed one counts when it is written, too). */
  written: number;
  /** Distinct uids that acked it. */
  acked: number;
  /** Milliseconds since the epoch, of the last change. */
  updatedAt: number;
}

/** What `MessageLogger.latest` is asked for. */
export interface LatestQuery {
  /** Only the records sent to this uid. */
  uid?: string;
  /** Only the records whose id is below this one: the next page after a page that ended there. */
  before?: number;
  /** Most records answered, at least 1. */
  limit: number;
}

/**
 * The status a record moves to when `next` comes after `current`. `acked` is final; `expired`
 * only ends a `queued` one (a mailed message that was written meanwhile stays `delivered`).
 */
export function nextStatus(current: DeliveryStatus, next: DeliveryStatus): DeliveryStatus {
  if (current === "acked") return current;
  if (next === "expired" && current !== "queued") return current;
  return next;
}

/** Called when a logger cannot write; the message itself was still pushed. */
export type LoggerErrorHandler = (err: unknown) => void;

/** How a logger's writes are going, for /metrics. Counters only grow. */
export interface MessageLogStats {
  /** Flushes that the store refused, in part or in whole (each retry counts again). */
  writeErrors: number;
  /** Records and status changes given up because the store refuses them alone (a constraint). */
  rejected: number;
  /** Records and status changes not kept because the backlog was full (MAX_BACKLOG_BYTES). */
  dropped: number;
  /** Records and status changes waiting to be written. */
  backlog: number;
  /** What the backlog holds, estimated in bytes (UTF-16 text plus a fixed cost per entry). */
  backlogBytes: number;
}

/**
 * What the hub needs from a logger. Implementations must not throw from `log`, `setStatus`,
 * `addWritten` or `ack`.
 */
export interface MessageLogger {
  /** Queues a record for writing. */
  log(record: MessageRecord): void;
  /** Queues a status change of a record logged earlier (see `nextStatus`). */
  setStatus(id: number, status: DeliveryStatus): void;
  /** Queues `n` more connections written to, for a record logged earlier. */
  addWritten(id: number, n: number): void;
  /**
   * Queues the ack of record `id` by `uid` at `at` (ms since the epoch): the first ack per uid is
   * kept, and the record's status becomes `acked`.
   */
  ack(id: number, uid: string, at: number): void;
  /**
   * The target (`uid:…`, `group:…`, `client:…`, `all`) of record `id`, whether written yet or
   * waiting; undefined when the log has no such record. A logger that cannot look records up has
   * no `targetOf`, and its server refuses acks.
   */
  targetOf?(id: number): string | undefined;
  /** Record `id` with everything that happened to it so far; undefined when unknown. */
  find?(id: number): LoggedMessage | undefined;
  /**
   * The latest records, newest first, as `find` gives each: at most `limit`, only those to `uid`
   * when it is given (the records whose target is `uid:<uid>`), only those older than id `before`
   * when it is given. A logger that cannot look records up has no `latest`.
   */
  latest?(query: LatestQuery): LoggedMessage[];
  /**
   * Settles as `expired` every `queued` record created before `before` (ms since the epoch): the
   * mailbox's messages whose OFFLINE_TTL passed. Answers them, by id and uid.
   */
  expireQueued?(before: number): { id: number; uid: string }[];
  /** The highest id recorded by earlier runs, or 0. */
  lastId(): number;
  /** Writes everything queued, now. */
  flush(): void;
  /** Flushes and releases the logger's resources. */
  close(): void;
  /** How its writes are going; a logger without this reports nothing to /metrics. */
  stats?(): MessageLogStats;
  /**
   * Why the store refuses writes now (its last failure), or undefined while writes go through:
   * sends answer 503 meanwhile rather than promise a record that is not kept.
   */
  readonly failure?: Error | undefined;
}

/** Logs nothing: MESSAGE_LOGGER=none. */
export class NullLogger implements MessageLogger {
  log(): void {}
  setStatus(): void {}
  addWritten(): void {}
  ack(): void {}
  lastId(): number {
    return 0;
  }
  flush(): void {}
  close(): void {}
}

/**
 * Memory the backlog may hold while the store cannot write: 64 MiB, about 500 messages of the
 * largest size /send takes by default (64 KiB of ASCII is 128 KiB as UTF-16), or some 200 000 short
 * ones. Past it, new records and status changes are dropped and counted (the pushes still go out).
 */
export const MAX_BACKLOG_BYTES = 64 * 1024 * 1024;

/**
 * The longest wait between two tries of a store that keeps failing, in ms: a store that comes back
 * is written to within this long. Tries start LOG_FLUSH_MS apart and double up to it.
 */
export const MAX_RETRY_MS = 10_000;

/**
 * Records and status changes one timed flush writes in one transaction at most: about a
 * millisecond of the event loop. The rest follow at the next turns.
 */
export const WRITE_CHUNK = 64;

/** The first `n` items of `items`. */
function* take<T>(items: Iterable<T>, n: number): Generator<T> {
  if (n <= 0) return;
  let i = 0;
  for (const item of items) {
    yield item;
    if (++i >= n) return;
  }
}

/** Estimated bytes of one entry besides its text: the object, the map slot, the numbers. */
const ENTRY_BYTES = 128;

/**
 * The batch both real loggers share: records and status changes wait here until a timer writes
 * them. A status change of a record that is still waiting just edits that record, so a message that
 * is settled within one batch is written once.
 *
 * Nothing leaves the backlog unwritten except for three reasons, each counted and reported: the
 * store refuses a row alone (`rejected`), the backlog is full (`dropped`), or the logger is closed
 * while the store still cannot write. A batch the store refuses as a whole stays queued and is tried
 * again, LOG_FLUSH_MS later and then twice as long each time, up to MAX_RETRY_MS. When a batch fails
 * because of its data, it is split in halves until the refused rows stand alone, so one bad row
 * costs a few transactions and never holds back the others.
 */
export abstract class BatchingLogger implements MessageLogger {
  #records = new Map<number, MessageRecord>();
  #updates = new Map<number, RecordChange>();
  #bytes = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The next chunk of a flush that had more than WRITE_CHUNK rows to write. */
  #immediate: ReturnType<typeof setImmediate> | undefined;
  /** Flushes in a row that the store refused; sets the next wait. */
  #failures = 0;
  /** Whether the current run of a full backlog has been reported yet. */
  #fullReported = false;
  /** Ids of rejected records, so that a late status change cannot touch another row (oldest out). */
  readonly #rejectedIds = new Set<number>();
  #writeErrors = 0;
  /** See MessageLogger.failure. */
  #failure: Error | undefined;
  #rejected = 0;
  #dropped = 0;

  constructor(
    private readonly flushMs: number,
    private readonly onError: LoggerErrorHandler,
    private readonly maxBacklogBytes: number = MAX_BACKLOG_BYTES,
  ) {}

  /**
   * Writes one batch, all or nothing; records are new rows, updates change rows written by an
   * earlier batch. Throws what the store said.
   */
  protected abstract write(records: MessageRecord[], updates: Map<number, RecordChange>): void;

  /** True when `err` is about the data written, so the same rows can never be written. */
  protected abstract isRowError(err: unknown): boolean;

  abstract lastId(): number;

  log(record: MessageRecord): void {
    const bytes = recordBytes(record);
    if (!this.#fits(bytes)) return;
    this.#records.set(record.id, { ...record });
    this.#bytes += bytes;
    this.#schedule();
  }

  setStatus(id: number, status: DeliveryStatus): void {
    this.#change(id, { status, written: 0, acks: [] }, 0);
  }

  addWritten(id: number, n: number): void {
    if (n > 0) this.#change(id, { written: n, acks: [] }, 0);
  }

  ack(id: number, uid: string, at: number): void {
    this.#change(id, { status: "acked", written: 0, acks: [[uid, at]] }, 2 * uid.length + 16);
  }

  /** The target of a record waiting to be written, if `id` is one. */
  protected waitingTarget(id: number): string | undefined {
    return this.#records.get(id)?.target;
  }

  /**
   * Folds `change` into the record if it waits, or into the change already waiting for it; `bytes`
   * is what the change adds to the backlog besides an entry.
   */
  #change(id: number, change: RecordChange, bytes: number): void {
    const waiting = this.#records.get(id) ?? this.#updates.get(id);
    if (waiting) {
      if (!this.#fits(bytes)) return;
      fold(waiting, change);
      this.#bytes += bytes;
    } else if (this.#rejectedIds.has(id)) return;
    else {
      if (!this.#fits(ENTRY_BYTES + bytes)) return;
      this.#updates.set(id, change);
      this.#bytes += ENTRY_BYTES + bytes;
    }
    this.#schedule();
  }

  get failure(): Error | undefined {
    return this.#failure;
  }

  stats(): MessageLogStats {
    return {
      writeErrors: this.#writeErrors,
      rejected: this.#rejected,
      dropped: this.#dropped,
      backlog: this.#records.size + this.#updates.size,
      backlogBytes: this.#bytes,
    };
  }

  flush(): void {
    this.#flush(Infinity);
  }

  /**
   * Writes at most `limit` records and changes, oldest first, in one transaction; what is left is
   * written at the next turn of the event loop, so a timed flush never holds the loop for more than
   * WRITE_CHUNK rows (a backlog of a thousand rows would stall every connection for tens of ms).
   */
  #flush(limit: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    if (this.#records.size === 0 && this.#updates.size === 0) return;
    const records = [...take(this.#records.values(), limit)];
    const updates = [...take(this.#updates, limit - records.length)];
    const failure = this.#writeSplitting(records, updates);
    if (this.#records.size === 0 && this.#updates.size === 0) this.#fullReported = false;
    if (!failure) {
      this.#failures = 0;
      this.#failure = undefined;
      if (this.#records.size > 0 || this.#updates.size > 0) {
        this.#immediate = setImmediate(() => this.#flush(WRITE_CHUNK));
      }
      return;
    }
    this.#writeErrors++;
    const wait = Math.min(this.flushMs * 2 ** this.#failures, Math.max(MAX_RETRY_MS, this.flushMs));
    this.#failures++;
    this.#timer = setTimeout(() => this.#flush(WRITE_CHUNK), wait);
    this.#failure = new Error(describe(failure.error), { cause: failure.error });
    this.onError(
      new Error(`${describe(failure.error)}; ${this.#waiting()} wait, next try in ${wait} ms`, {
        cause: failure.error,
      }),
    );
  }

  close(): void {
    this.flush();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    if (this.#records.size === 0 && this.#updates.size === 0) return;
    this.onError(new Error(`closing with ${this.#waiting()} unwritten: they are lost`));
    this.#dropped += this.#records.size + this.#updates.size;
    this.#records.clear();
    this.#updates.clear();
    this.#bytes = 0;
  }

  /**
   * Writes the rows given, and takes each written or rejected one out of the backlog. A row error
   * splits the rows in halves, down to single rows, which are rejected. Returns the failure that
   * stopped it when the store itself failed (what is left stays queued), or undefined.
   */
  #writeSplitting(
    records: MessageRecord[],
    updates: [number, RecordChange][],
  ): { error: unknown } | undefined {
    try {
      this.write(records, new Map(updates));
    } catch (error) {
      if (!this.isRowError(error)) return { error };
      if (records.length + updates.length === 1) {
        this.#reject(records[0]?.id ?? updates[0][0], records.length === 1, error);
        return undefined;
      }
      // Halves of records-then-updates; updates never need a record of the same batch.
      const r = Math.min(Math.ceil((records.length + updates.length) / 2), records.length);
      const u = Math.ceil((records.length + updates.length) / 2) - r;
      return this.#writeSplitting(records.slice(0, r), updates.slice(0, u)) ??
        this.#writeSplitting(records.slice(r), updates.slice(u));
    }
    for (const r of records) this.#forget(r.id, true);
    for (const [id] of updates) this.#forget(id, false);
    return undefined;
  }

  #reject(id: number, isRecord: boolean, error: unknown): void {
    this.#forget(id, isRecord);
    this.#rejected++;
    if (isRecord) {
      this.#rejectedIds.add(id);
      if (this.#rejectedIds.size > 1000) {
        this.#rejectedIds.delete(this.#rejectedIds.values().next().value!);
      }
    }
    const what = isRecord ? `record ${id}` : `the status change of record ${id}`;
    this.onError(
      new Error(`${describe(error)}; ${what} can never be written and is dropped`, {
        cause: error,
      }),
    );
  }

  #forget(id: number, isRecord: boolean): void {
    if (isRecord) {
      const record = this.#records.get(id);
      if (record) this.#bytes -= recordBytes(record);
      this.#records.delete(id);
    } else {
      const change = this.#updates.get(id);
      if (change && this.#updates.delete(id)) this.#bytes -= changeBytes(change);
    }
  }

  /** Whether `bytes` more fit in the backlog; counts and reports the drop when not. */
  #fits(bytes: number): boolean {
    if (this.#bytes + bytes <= this.maxBacklogBytes) return true;
    this.#dropped++;
    if (!this.#fullReported) {
      this.#fullReported = true;
      this.onError(
        new Error(
          `the backlog is full (${this.#waiting()}, ${this.maxBacklogBytes} bytes): new records ` +
            `and status changes are dropped until the store takes writes again`,
        ),
      );
    }
    return false;
  }

  #waiting(): string {
    const n = this.#records.size;
    const m = this.#updates.size;
    return `${n} record${n === 1 ? "" : "s"} and ${m} status change${m === 1 ? "" : "s"}`;
  }

  #schedule(): void {
    if (this.#immediate !== undefined) return; // a chunked flush is under way
    this.#timer ??= setTimeout(() => this.#flush(WRITE_CHUNK), this.flushMs);
  }
}

function recordBytes(r: MessageRecord): number {
  return ENTRY_BYTES + 2 * (r.message.length + r.target.length + (r.uid?.length ?? 0)) +
    acksBytes(r.acks);
}

function changeBytes(change: RecordChange): number {
  return ENTRY_BYTES + acksBytes(change.acks);
}

function acksBytes(acks: [string, number][] | undefined): number {
  let bytes = 0;
  for (const [uid] of acks ?? []) bytes += 2 * uid.length + 16;
  return bytes;
}

/** Folds `change` into what waits for the same record: a record, or an earlier change. */
function fold(into: MessageRecord | RecordChange, change: RecordChange): void {
  if (change.status) {
    into.status = into.status ? nextStatus(into.status, change.status) : change.status;
  }
  if (change.written > 0) into.written = (into.written ?? 0) + change.written;
  if (change.acks.length > 0) (into.acks ??= []).push(...change.acks);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
