/**
 * The SQLite idempotency store, on `node:sqlite` (built into Deno and Bun: no dependency), in a file
 * of its own (IDEMPOTENCY_FILE in the data directory), so that a restart keeps the keys.
 *
 * Group commit, as the history store does it: answers wait in a batch, written in one transaction
 * at the next turn of the event loop after the first (setImmediate) or at once at `maxBatchRows`. Every `finish` of a batch resolves when the
 * batch has committed and rejects, naming the file, when it could not; an answer waiting in a batch
 * is found by `begin` already, so a retry that comes before the commit is a duplicate too.
 *
 * WAL mode with synchronous=NORMAL: a committed answer survives the process being killed; a power
 * cut may take back the last commits, and a retry after it pushes again. No busy timeout: a write
 * runs on the event loop, so a file locked by another process fails the batch at once.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { clearImmediate, setImmediate } from "node:timers";
import { closeDatabase, errorMessage, migrate, transaction, walPragmas } from "../sqlite.ts";
import { type KeptAnswer, keyOf, LocalIdempotencyStore } from "./local.ts";
import type { IdempotencyOptions, IdempotencyStats } from "./store.ts";

/** The store's file in the data directory. */
export const IDEMPOTENCY_FILE = "idempotency.db";

/** Answers a batch may hold before it commits without waiting: bounds one commit's hold on the loop. */
export const MAX_BATCH_ROWS = 1000;

/**
 * Expired rows one sweep deletes at most: bounds how long it holds the event loop (some tens of
 * milliseconds). More wait for the next sweep; a busy server deletes them with its batches anyway.
 */
export const SWEEP_ROWS = 10_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS idempotency (
  scope       TEXT    NOT NULL, -- who asked and where, as the caller built it
  key         TEXT    NOT NULL, -- the Idempotency-Key
  fingerprint TEXT    NOT NULL, -- the request that got the answer
  status      INTEGER NOT NULL,
  body        TEXT    NOT NULL, -- the answer's JSON
  created_at  INTEGER NOT NULL, -- when the answer was kept, milliseconds since the epoch
  PRIMARY KEY (scope, key)
);
-- The sweep and the bound find the oldest rows without reading the whole table.
CREATE INDEX IF NOT EXISTS idempotency_created_at ON idempotency (created_at);
`;

/** The schema's version, kept in SQLite's user_version. */
const SCHEMA_VERSION = 1;

/** What a SQLite store is built from. */
export interface SqliteIdempotencyOptions extends IdempotencyOptions {
  /** Answers that make a batch commit at once, 1 or more. Default MAX_BATCH_ROWS. */
  maxBatchRows?: number;
  /** Told when a timed sweep fails (the next one tries again). Default: nothing. */
  onError?: (err: Error) => void;
}

/** How a SQLite store is doing. Counters only grow. */
export interface SqliteIdempotencyStats extends IdempotencyStats {
  /** Batches committed. */
  batches: number;
  /** Batches that could not be committed; each rejected all its finishes. */
  failedBatches: number;
}

/** One answer waiting to be written. */
interface Pending {
  scope: string;
  key: string;
  answer: KeptAnswer;
}

type Statements = Record<
  "find" | "remove" | "insert" | "deleteExpired" | "deleteOldest",
  StatementSync
>;

/**
 * Keeps answers in a SQLite file, created with its folder if missing; reopening it finds the
 * answers that have not expired. The store must be the file's only user. Every error it throws or
 * reports names the file.
 */
export class SqliteIdempotency extends LocalIdempotencyStore {
  readonly #path: string;
  readonly #maxBatchRows: number;
  readonly #db: DatabaseSync;
  readonly #sql: Statements;
  /** Answers of the batch to come, by keyOf; `lookup` finds them before they are written. */
  #pending = new Map<string, Pending>();
  #batch: PromiseWithResolvers<void> | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;
  /** Rows in the table, counted once at open and then kept up to date: the bound needs no count(*). */
  #rows: number;
  #evicted = 0;
  #batches = 0;
  #failedBatches = 0;

  /**
   * Opens (or creates) the store at `path`. Throws a RangeError for options out of range, and an
   * error naming the file when it cannot be opened or its schema is newer than this build's.
   */
  constructor(path: string, options: SqliteIdempotencyOptions) {
    super(`the idempotency file ${path}`, options);
    const maxBatchRows = options.maxBatchRows ?? MAX_BATCH_ROWS;
    if (!Number.isSafeInteger(maxBatchRows) || maxBatchRows < 1) {
      throw new RangeError(`maxBatchRows must be a whole number 1 or more, not ${maxBatchRows}`);
    }
    this.#path = path;
    this.#maxBatchRows = maxBatchRows;
    try {
      if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
      this.#db = new DatabaseSync(path);
    } catch (err) {
      throw new Error(`cannot open the idempotency file ${path}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    try {
      this.#db.exec(walPragmas());
      migrate(this.#db, SCHEMA, SCHEMA_VERSION);
      this.#sql = this.#prepare();
      const { n } = this.#db.prepare("SELECT count(*) AS n FROM idempotency").get() as {
        n: number;
      };
      this.#rows = Number(n);
    } catch (err) {
      this.#db.close();
      throw new Error(`cannot open the idempotency file ${path}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    this.startSweeps(options.sweepMs, options.onError);
  }

  #prepare(): Statements {
    const db = this.#db;
    return {
      find: db.prepare(
        `SELECT fingerprint, status, body, created_at AS createdAt FROM idempotency
         WHERE scope = ? AND key = ? AND created_at > ?`,
      ),
      remove: db.prepare("DELETE FROM idempotency WHERE scope = ? AND key = ?"),
      insert: db.prepare(
        `INSERT INTO idempotency (scope, key, fingerprint, status, body, created_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      deleteExpired: db.prepare(
        `DELETE FROM idempotency WHERE rowid IN (
           SELECT rowid FROM idempotency WHERE created_at <= ? ORDER BY created_at LIMIT ?)`,
      ),
      deleteOldest: db.prepare(
        `DELETE FROM idempotency WHERE rowid IN (
           SELECT rowid FROM idempotency ORDER BY created_at LIMIT ?)`,
      ),
    };
  }

  protected lookup(scope: string, key: string, cutoff: number): KeptAnswer | undefined {
    const pending = this.#pending.get(keyOf(scope, key));
    if (pending) return pending.answer.createdAt > cutoff ? pending.answer : undefined;
    try {
      const row = this.#sql.find.get(scope, key, cutoff) as KeptAnswer | undefined;
      return row && { ...row };
    } catch (err) {
      throw new Error(
        `idempotency file ${this.#path}: cannot look a key up: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  protected keep(scope: string, key: string, answer: KeptAnswer): Promise<void> {
    this.#pending.set(keyOf(scope, key), { scope, key, answer });
    const batch = this.#batch ??= Promise.withResolvers();
    if (this.#pending.size >= this.#maxBatchRows) this.#flush();
    else this.#immediate ??= setImmediate(() => this.#flush());
    return batch.promise;
  }

  protected sweep(cutoff: number): void {
    this.#transaction("sweep expired keys", () => {
      this.#rows -= Number(this.#sql.deleteExpired.run(cutoff, SWEEP_ROWS).changes);
    });
  }

  protected counts(): { keys: number; evicted: number } {
    return { keys: this.#rows + this.#pending.size, evicted: this.#evicted };
  }

  override stats(): SqliteIdempotencyStats {
    return { ...super.stats(), batches: this.#batches, failedBatches: this.#failedBatches };
  }

  protected shutdown(): Promise<void> {
    this.#flush();
    return closeDatabase(this.#db, `idempotency file ${this.#path}`);
  }

  /** Commits the waiting batch, if any, and settles its finishes. */
  #flush(): void {
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    const batch = this.#batch;
    const pending = [...this.#pending.values()];
    this.#batch = undefined;
    // Written or not, they leave the batch: a failed one is forgotten, as FirstRequest says.
    this.#pending = new Map();
    if (!batch) return;
    const before = { rows: this.#rows, evicted: this.#evicted };
    const n = pending.length;
    try {
      this.#transaction(`commit ${n} answer${n === 1 ? "" : "s"}`, () => this.#write(pending));
      this.#batches++;
      batch.resolve();
    } catch (err) {
      // The transaction was rolled back, and the counts with it.
      this.#rows = before.rows;
      this.#evicted = before.evicted;
      this.#failedBatches++;
      batch.reject(err);
    }
  }

  /** Writes a batch's answers, then trims the table to its bound. Runs inside a transaction. */
  #write(pending: Pending[]): void {
    for (const { scope, key, answer } of pending) {
      // An expired answer of the key may still be there, waiting for the sweep.
      this.#rows -= Number(this.#sql.remove.run(scope, key).changes);
      const { fingerprint, status, body, createdAt } = answer;
      this.#sql.insert.run(scope, key, fingerprint, status, body, createdAt);
      this.#rows++;
    }
    const cutoff = this.cutoff();
    // Each batch deletes up to twice as many expired rows as it wrote: on a busy server they go as
    // fast as they come, in work proportional to the batch, and the sweep is left the quiet times.
    this.#rows -= Number(this.#sql.deleteExpired.run(cutoff, 2 * pending.length).changes);
    let excess = this.#rows - this.maxKeys;
    if (excess > 0) {
      // The oldest rows are the expired ones, if any are left; only fresh ones count as evicted.
      const expired = Number(this.#sql.deleteExpired.run(cutoff, excess).changes);
      this.#rows -= expired;
      excess -= expired;
    }
    if (excess > 0) {
      const evicted = Number(this.#sql.deleteOldest.run(excess).changes);
      this.#rows -= evicted;
      this.#evicted += evicted;
    }
  }

  /** Runs `body` in one transaction; throws, naming the file and `what` failed, when it fails. */
  #transaction(what: string, body: () => void): void {
    transaction(this.#db, `idempotency file ${this.#path}`, what, body);
  }
}
