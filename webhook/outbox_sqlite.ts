/**
 * The embedded webhook outbox, on `node:sqlite` (built into Deno and Bun: no dependency), in a file
 * of its own (WEBHOOK_FILE in the data directory), so that events not yet delivered survive a
 * restart.
 *
 * Group commit, as the other stores do it: `add` only queues its rows in memory, and they are
 * written in one transaction at the next turn of the event loop (setImmediate), or at once when
 * MAX_BATCH_ROWS wait. Every read first writes what waits, so that it sees every row added. A
 * commit that fails keeps its rows in memory and is tried again COMMIT_RETRY_MS later (within the
 * bound); what is still unwritten when the outbox closes is lost, and reported.
 *
 * WAL mode with synchronous=NORMAL: a committed row survives the process being killed, not a power
 * cut. No busy timeout: a write runs on the event loop, so a file locked by another process fails
 * at once instead of stalling every connection.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { clearImmediate, setImmediate } from "node:timers";
import { closeDatabase, errorMessage, migrate, transaction, walPragmas } from "../sqlite.ts";
import type { WebhookEvent } from "./events.ts";
import {
  count,
  DropBursts,
  MAX_OUTBOX_EVENTS,
  orderKey,
  type Outbox,
  type OutboxOptions,
  type OutboxRow,
  type OutboxStats,
} from "./outbox.ts";

/** The outbox's file in the data directory. */
export const WEBHOOK_FILE = "webhooks.db";

/** Rows a batch may hold before it commits at once: bounds one commit's hold on the loop. */
export const MAX_BATCH_ROWS = 1000;

/**
 * Rows one `expire` deletes at most: bounds how long it holds the event loop (some tens of
 * milliseconds). More go at the next call.
 */
export const EXPIRE_ROWS = 10_000;

/** Milliseconds before a failed commit is tried again: a full or broken disk is not retried hot. */
export const COMMIT_RETRY_MS = 1000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS webhook_outbox (
  seq        INTEGER PRIMARY KEY, -- the order rows were added in
  url        TEXT    NOT NULL,    -- where it goes
  key        TEXT    NOT NULL,    -- its queue there (orderKey: uid:<uid>, group:<name> or '')
  event      TEXT    NOT NULL,    -- the event's JSON, as POSTed
  created_at INTEGER NOT NULL,    -- when the event happened, ms since the epoch
  attempts   INTEGER NOT NULL DEFAULT 0 -- deliveries that failed
);
-- A queue's rows in order, from its head.
CREATE INDEX IF NOT EXISTS webhook_outbox_queue ON webhook_outbox (url, key, seq);
-- expire finds the oldest events without reading the whole table.
CREATE INDEX IF NOT EXISTS webhook_outbox_created_at ON webhook_outbox (created_at);
-- One row per queue that has rows (or had, until the next due read notices): when its head is due.
CREATE TABLE IF NOT EXISTS webhook_queues (
  url     TEXT    NOT NULL,
  key     TEXT    NOT NULL,
  next_at INTEGER NOT NULL, -- ms since the epoch; 0 for a new queue: due at once
  since   INTEGER NOT NULL, -- the seq of the row that opened it: queues due at once go oldest first
  PRIMARY KEY (url, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_queues_due ON webhook_queues (url, next_at, since);
`;

/** The schema's version, kept in SQLite's user_version. */
const SCHEMA_VERSION = 1;

/** A row waiting in memory for the next commit. */
interface PendingRow {
  url: string;
  key: string;
  json: string;
  createdAt: number;
}

type Statements = Record<
  | "insert"
  | "openQueue"
  | "dropOldest"
  | "dueQueues"
  | "queueRows"
  | "closeQueue"
  | "postpone"
  | "resume"
  | "remove"
  | "failed"
  | "expire"
  | "nextDue",
  StatementSync
>;

/**
 * An outbox in a SQLite file, created with its folder if missing; reopening the file finds the
 * rows left in it, with their attempts and their queues' next times. The outbox must be the file's
 * only user. Every error it throws or reports names the file.
 */
export class SqliteOutbox implements Outbox {
  readonly #path: string;
  /** How errors name the file. */
  readonly #file: string;
  readonly #maxEvents: number;
  /** The rows dropped to stay within maxEvents, reported once per burst. */
  readonly #drops: DropBursts;
  readonly #onError: (err: Error) => void;
  readonly #db: DatabaseSync;
  readonly #sql: Statements;
  /** Rows of the next commit, oldest first. */
  #pending: PendingRow[] = [];
  #immediate: ReturnType<typeof setImmediate> | undefined;
  /** Set while a failed commit waits to be tried again; adds then only queue. */
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Rows in the file, counted at open and then kept up to date: the bound needs no count(*). */
  #rows: number;
  #expired = 0;
  /** Whether a commit failed and none succeeded since: its error was reported. */
  #failing = false;
  #closed = false;

  /**
   * Opens (or creates) the outbox at `path` (`:memory:` for one that a restart forgets). Throws a
   * RangeError for options out of range, and an error naming the file when it cannot be opened or
   * its schema is newer than this build's.
   */
  constructor(path: string, options: OutboxOptions = {}) {
    const maxEvents = options.maxEvents ?? MAX_OUTBOX_EVENTS;
    if (!Number.isSafeInteger(maxEvents) || maxEvents < 1) {
      throw new RangeError(`maxEvents must be a whole number 1 or more, not ${maxEvents}`);
    }
    this.#path = path;
    this.#file = `webhook outbox ${path}`;
    this.#maxEvents = maxEvents;
    this.#onError = options.onError ?? (() => {});
    this.#drops = new DropBursts(this.#file, maxEvents, this.#onError);
    try {
      if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
      this.#db = new DatabaseSync(path);
    } catch (err) {
      throw new Error(`cannot open the ${this.#file}: ${errorMessage(err)}`, { cause: err });
    }
    try {
      this.#db.exec(walPragmas());
      migrate(this.#db, SCHEMA, SCHEMA_VERSION);
      this.#sql = this.#prepare();
      const { n } = this.#db.prepare("SELECT count(*) AS n FROM webhook_outbox").get() as {
        n: number;
      };
      this.#rows = Number(n);
    } catch (err) {
      this.#db.close();
      throw new Error(`cannot open the ${this.#file}: ${errorMessage(err)}`, { cause: err });
    }
  }

  #prepare(): Statements {
    const db = this.#db;
    return {
      insert: db.prepare(
        "INSERT INTO webhook_outbox (url, key, event, created_at) VALUES (?, ?, ?, ?)",
      ),
      // A queue that exists keeps its next time: a new row waits behind a failing head.
      // Run right after `insert`, whose row opens the queue.
      openQueue: db.prepare(
        `INSERT INTO webhook_queues (url, key, next_at, since)
         VALUES (?, ?, 0, last_insert_rowid()) ON CONFLICT DO NOTHING`,
      ),
      dropOldest: db.prepare(
        `DELETE FROM webhook_outbox WHERE seq IN (
           SELECT seq FROM webhook_outbox ORDER BY seq LIMIT ?) RETURNING url, key`,
      ),
      dueQueues: db.prepare(
        `SELECT key FROM webhook_queues WHERE url = ? AND next_at <= ?
         ORDER BY next_at, since LIMIT ?`,
      ),
      queueRows: db.prepare(
        `SELECT seq, key, event AS json, created_at AS createdAt, attempts FROM webhook_outbox
         WHERE url = ? AND key = ? ORDER BY seq LIMIT ?`,
      ),
      closeQueue: db.prepare(
        `DELETE FROM webhook_queues WHERE url = ? AND key = ? AND NOT EXISTS (
           SELECT 1 FROM webhook_outbox WHERE url = ? AND key = ?)`,
      ),
      postpone: db.prepare("UPDATE webhook_queues SET next_at = ? WHERE url = ? AND key = ?"),
      resume: db.prepare("UPDATE webhook_queues SET next_at = ? WHERE url = ? AND next_at > ?"),
      remove: db.prepare("DELETE FROM webhook_outbox WHERE seq = ?"),
      failed: db.prepare("UPDATE webhook_outbox SET attempts = attempts + 1 WHERE seq = ?"),
      expire: db.prepare(
        `DELETE FROM webhook_outbox WHERE seq IN (
           SELECT seq FROM webhook_outbox WHERE created_at <= ? ORDER BY created_at LIMIT ?)
         RETURNING url, key`,
      ),
      nextDue: db.prepare("SELECT min(next_at) AS at FROM webhook_queues WHERE url = ?"),
    };
  }

  add(event: WebhookEvent, urls: readonly string[]): void {
    this.#checkOpen();
    if (urls.length === 0) return;
    const json = JSON.stringify(event);
    const key = orderKey(event);
    const createdAt = Number.isSafeInteger(event.ts) ? event.ts : Date.now();
    for (const url of urls) this.#pending.push({ url, key, json, createdAt });
    if (this.#retryTimer !== undefined) this.#boundPending();
    else if (this.#pending.length >= MAX_BATCH_ROWS) this.#flush();
    else this.#immediate ??= setImmediate(() => this.#flush());
  }

  due(url: string, now: number, limit: number): Promise<OutboxRow[]> {
    return this.#read("read the due events", () => {
      const rows: OutboxRow[] = [];
      const queues = this.#sql.dueQueues.all(url, now, limit) as { key: string }[];
      for (const { key } of queues) {
        const found = this.#sql.queueRows.all(url, key, limit - rows.length) as unknown[];
        // Emptied by the bound or by expire: it holds nothing up any more.
        if (found.length === 0) this.#sql.closeQueue.run(url, key, url, key);
        for (const row of found) rows.push({ ...row as OutboxRow });
        if (rows.length >= limit) break;
      }
      return rows;
    });
  }

  delivered(url: string, rows: readonly OutboxRow[], now: number): Promise<void> {
    return this.#write(`remove ${count(rows.length)} delivered`, () => {
      let removed = 0;
      for (const { seq } of rows) removed += Number(this.#sql.remove.run(seq).changes);
      for (const key of new Set(rows.map((row) => row.key))) {
        if (this.#sql.closeQueue.run(url, key, url, key).changes === 0) {
          this.#sql.postpone.run(now, url, key);
        }
      }
      return removed;
    }).then((removed) => {
      this.#rows -= removed;
      this.#drops.settle(this.size());
    });
  }

  retry(
    url: string,
    rows: readonly OutboxRow[],
    nextAt: (attempts: number) => number,
  ): Promise<void> {
    return this.#write(`count a failed delivery of ${count(rows.length)}`, () => {
      /** Each queue's head among `rows`: the row with the lowest seq. */
      const heads = new Map<string, OutboxRow>();
      for (const row of rows) {
        this.#sql.failed.run(row.seq);
        const head = heads.get(row.key);
        if (!head || row.seq < head.seq) heads.set(row.key, row);
      }
      for (const [key, head] of heads) this.#sql.postpone.run(nextAt(head.attempts + 1), url, key);
    });
  }

  resume(url: string, now: number): Promise<number> {
    return this.#write(
      "bring the waiting queues forward",
      () => Number(this.#sql.resume.run(now, url, now).changes),
    );
  }

  expire(cutoff: number): Promise<number> {
    return this.#write("remove expired events", () => {
      const gone = this.#sql.expire.all(cutoff, EXPIRE_ROWS) as { url: string; key: string }[];
      this.#closeQueues(gone);
      return gone.length;
    }).then((n) => {
      this.#rows -= n;
      this.#expired += n;
      this.#drops.settle(this.size());
      return n;
    });
  }

  nextDueAt(url: string): Promise<number | undefined> {
    return this.#read("find the next due event", () => {
      const { at } = this.#sql.nextDue.get(url) as { at: number | null };
      return at ?? undefined;
    });
  }

  size(): number {
    return this.#rows + this.#pending.length;
  }

  stats(): OutboxStats {
    return { rows: this.size(), dropped: this.#drops.dropped, expired: this.#expired };
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#flush();
    clearTimeout(this.#retryTimer);
    this.#closed = true;
    if (this.#pending.length > 0) {
      this.#onError(
        new Error(
          `${this.#file}: ${count(this.#pending.length)} could not be written before it closed, ` +
            `and are lost`,
        ),
      );
      this.#pending = [];
    }
    return closeDatabase(this.#db, this.#file);
  }

  /** Commits the rows waiting, if any, and drops the oldest rows beyond the bound. */
  #flush(): void {
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const rows = this.#pending;
    if (rows.length === 0) return;
    let dropped = 0;
    try {
      transaction(this.#db, this.#file, `add ${count(rows.length)}`, () => {
        for (const { url, key, json, createdAt } of rows) {
          this.#sql.insert.run(url, key, json, createdAt);
          this.#sql.openQueue.run(url, key);
        }
        const over = this.#rows + rows.length - this.#maxEvents;
        if (over > 0) {
          const gone = this.#sql.dropOldest.all(over) as { url: string; key: string }[];
          this.#closeQueues(gone);
          dropped = gone.length;
        }
      });
    } catch (err) {
      if (!this.#failing) this.#onError(err as Error);
      this.#failing = true;
      this.#boundPending();
      if (!this.#closed) this.#retryTimer = setTimeout(() => this.#flush(), COMMIT_RETRY_MS);
      return;
    }
    this.#failing = false;
    this.#pending = [];
    this.#rows += rows.length - dropped;
    if (dropped > 0) this.#drops.drop(dropped);
    this.#drops.settle(this.size());
  }

  /** While commits fail, keeps the rows waiting in memory within the bound, the newest. */
  #boundPending(): void {
    const over = this.#rows + this.#pending.length - this.#maxEvents;
    if (over <= 0) return;
    const n = Math.min(over, this.#pending.length);
    this.#pending.splice(0, n);
    this.#drops.drop(n);
  }

  /** Deletes the queues of `rows` just deleted that have no rows left. In a transaction. */
  #closeQueues(rows: readonly { url: string; key: string }[]): void {
    const seen = new Set<string>();
    for (const { url, key } of rows) {
      const id = JSON.stringify([url, key]);
      if (seen.has(id)) continue;
      seen.add(id);
      this.#sql.closeQueue.run(url, key, url, key);
    }
  }

  /** Runs `body` after the waiting rows are committed; rejects, naming the file, when it fails. */
  #read<T>(what: string, body: () => T): Promise<T> {
    return Promise.try(() => {
      this.#checkOpen();
      this.#flush();
      try {
        return body();
      } catch (err) {
        throw new Error(`${this.#file}: cannot ${what}: ${errorMessage(err)}`, { cause: err });
      }
    });
  }

  /**
   * Runs `body` in one transaction after the waiting rows are committed; rejects, naming the file,
   * when it fails. The caller updates its counts once it resolves: a rolled-back body changed none.
   */
  #write<T>(what: string, body: () => T): Promise<T> {
    return Promise.try(() => {
      this.#checkOpen();
      this.#flush();
      let result: T;
      transaction(this.#db, this.#file, what, () => void (result = body()));
      return result!;
    });
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`the ${this.#file} is closed`);
  }
}
