/**
 * The SQLite history store, on `node:sqlite` (built into Deno and Bun: no dependency).
 *
 * Group commit: appends wait in a batch, and the batch is written in one transaction at the next
 * turn of the event loop after its first append (setImmediate: every request read in the same
 * turn joins it, and a busy server's batches grow while a commit holds the loop), or at once when
 * it holds `maxBatchRows`. Every append of a batch resolves when
 * the batch has committed and rejects, naming the file, when it could not; nothing is dropped
 * silently. No retry happens here: the caller learns of the failure and decides (answer 503).
 * Each batch trims the streams it wrote to by size in the same transaction, so a trim mark never
 * moves without the rows that moved it. Rows past HISTORY_TTL are hidden from reads at once and
 * deleted by the sweep.
 *
 * WAL mode with synchronous=NORMAL: a committed batch survives the process being killed, but a
 * power cut or an operating system crash may take back the last commits, since the log is synced to
 * disk only at checkpoints. No busy timeout: a write runs on the event loop, so a file locked by
 * another process fails the batch at once instead of stalling every connection.
 */
import { mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { clearImmediate, clearInterval, setImmediate, setInterval } from "node:timers";
import {
  checkBounds,
  checkPublication,
  checkRead,
  HISTORY_SWEEP_MS,
  type HistoryBounds,
  type HistoryPage,
  type HistoryStore,
  MARK_FLUSH_MS,
  WrittenMarks,
} from "./history.ts";
import { frozen, type Publication, type StreamName } from "./stream.ts";
import { closeDatabase, errorMessage, migrate, transaction, walPragmas } from "../sqlite.ts";

/**
 * Appends a batch may hold before it is committed without waiting for the next turn: bounds the memory
 * of a batch and how long one commit holds the event loop (a few milliseconds for short messages).
 */
export const MAX_BATCH_ROWS = 1000;

/**
 * Streams one sweep trims at most, in one transaction: bounds how long it holds the event loop.
 * What is left goes at the next sweep, or at the stream's next append.
 */
export const SWEEP_STREAMS = 1000;

/** Streams whose state is kept in memory at most: about 100 bytes each. */
export const MAX_CACHED_STATES = 100_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS history (
  stream TEXT    NOT NULL, -- uid:<uid>, group:<name> or all
  id     INTEGER NOT NULL, -- the message id, increasing across all streams
  data   TEXT    NOT NULL,
  ts     INTEGER NOT NULL, -- milliseconds since the epoch
  from_uid    TEXT,        -- who sent it over its socket (a client's publish or send), else NULL
  from_client TEXT,
  PRIMARY KEY (stream, id)
);
-- The sweep finds expired rows without reading the whole table.
CREATE INDEX IF NOT EXISTS history_ts ON history (ts);
-- What the whole file answers for: ids at or below floor were never kept in it (it was made, or
-- made again after a deletion, when they had been handed out already).
CREATE TABLE IF NOT EXISTS history_file (
  floor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history_streams (
  stream  TEXT    PRIMARY KEY,
  kept    INTEGER NOT NULL, -- rows of the stream in history: a size trim needs no count(*)
  trimmed INTEGER NOT NULL  -- the trim mark: the highest id ever trimmed, 0 when none
);
-- The mailbox's written marks (HistoryStore.wrote), one per uid, forgotten after HISTORY_TTL.
CREATE TABLE IF NOT EXISTS history_marks (
  uid TEXT    PRIMARY KEY,
  id  INTEGER NOT NULL, -- the highest id of uid:<uid> written to one of its sockets
  at  INTEGER NOT NULL  -- when it was noted, milliseconds since the epoch
);
`;

/**
 * The schema's version, kept in SQLite's user_version. 3 added history_marks; 4 the sender columns
 * (`upgrade` adds them to an older file's table).
 */
const SCHEMA_VERSION = 4;

/** Adds to a file of an older schema what SCHEMA cannot add (columns of an existing table). */
function upgrade(db: DatabaseSync): void {
  const { user_version: found } = db.prepare("PRAGMA user_version").get() as {
    user_version: number;
  };
  if (found > 0 && found < 4) {
    // migrate() then makes what else is missing and records the version.
    db.exec(`ALTER TABLE history ADD COLUMN from_uid TEXT;
      ALTER TABLE history ADD COLUMN from_client TEXT;`);
  }
}

/** What a SQLite store is built from. */
export interface SqliteHistoryOptions extends HistoryBounds {
  /** The clock, in milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /** Milliseconds between sweeps; 0 runs none (call `sweep`). Default HISTORY_SWEEP_MS. */
  sweepMs?: number;
  /** Appends that make a batch commit at once, 1 or more. Default MAX_BATCH_ROWS. */
  maxBatchRows?: number;
  /**
   * Told when a timed sweep fails (it is tried again at the next one), and when the file was found
   * deleted or replaced and made again. Default: nothing.
   */
  onError?: (err: Error) => void;
  /**
   * The last message id handed out before this store opened: a file made now holds nothing at or
   * below it, so a reader from an older id is told recovered=false. Default 0.
   */
  floor?: number;
}

/** How the store's writes are going. Counters only grow. */
export interface SqliteHistoryStats {
  /** Batches committed. */
  batches: number;
  /** Batches that could not be committed; each rejected all its appends. */
  failedBatches: number;
}

/** A stream's row in history_streams. */
interface StreamState {
  kept: number;
  trimmed: number;
}

/** The store's statements, prepared once. */
type Statements = Record<
  | "insert"
  | "state"
  | "saveState"
  | "highestThrough"
  | "deleteThrough"
  | "nthOldest"
  | "firstFresh"
  | "page"
  | "expiredStreams"
  | "saveMark"
  | "forgetMarks",
  StatementSync
>;

/** Appends waiting for one commit, and the promise they all answer with. */
interface Batch {
  rows: Publication[];
  done: PromiseWithResolvers<void>;
}

/**
 * Keeps each stream's publications in a SQLite file, created with its folder if missing; reopening
 * the file finds what was kept, trim marks included. The store must be the file's only writer.
 * Every error it reports names the file.
 */
export class SqliteHistory implements HistoryStore {
  readonly #path: string;
  readonly #size: number;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #maxBatchRows: number;
  readonly #onError: (err: Error) => void;
  #db!: DatabaseSync;
  #sql!: Statements;
  /** See SqliteHistoryOptions.floor; as the file keeps it. */
  #floor = 0;
  /** The open file as `device:inode`, to notice it deleted or replaced. */
  #file: string | undefined;
  /** The highest id appended since the store opened: the floor of a file made again. */
  #lastAppended = 0;
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  #batch: Batch | undefined;
  /**
   * The state of streams as the file has it after the last commit: a stream's next append needs no
   * read. Cleared when it reaches MAX_CACHED_STATES, and when the file is made again.
   */
  readonly #states = new Map<StreamName, StreamState>();
  readonly #marks: WrittenMarks;
  /** Uids whose mark moved since the last commit. */
  #dirtyMarks = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;
  #closed = false;
  readonly #stats: SqliteHistoryStats = { batches: 0, failedBatches: 0 };

  /**
   * Opens (or creates) the store at `path`. Throws a RangeError for bounds out of range, and an
   * error naming the file when it cannot be opened or its schema is newer than this build's.
   */
  constructor(path: string, options: SqliteHistoryOptions) {
    checkBounds(options);
    const maxBatchRows = options.maxBatchRows ?? MAX_BATCH_ROWS;
    if (!Number.isSafeInteger(maxBatchRows) || maxBatchRows < 1) {
      throw new RangeError(`maxBatchRows must be a whole number 1 or more, not ${maxBatchRows}`);
    }
    this.#path = path;
    this.#size = options.size;
    this.#ttlMs = options.ttl * 1000;
    this.#now = options.now ?? Date.now;
    this.#maxBatchRows = maxBatchRows;
    this.#onError = options.onError ?? (() => {});
    this.#marks = new WrittenMarks(this.#ttlMs, this.#now);
    this.#open(options.floor ?? 0);
    const sweepMs = options.sweepMs ?? HISTORY_SWEEP_MS;
    if (sweepMs > 0) {
      this.#sweeper = setInterval(() => {
        try {
          this.sweep();
        } catch (err) {
          this.#onError(err as Error);
        }
      }, sweepMs);
      // The sweep frees disk space; it is no reason to keep a process alive.
      this.#sweeper.unref();
    }
  }

  /** Opens the file (creating it, and its folder), recording `floor` if it is new. */
  #open(floor: number): void {
    const path = this.#path;
    try {
      if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
      this.#db = new DatabaseSync(path);
    } catch (err) {
      throw new Error(`cannot open the history file ${path}: ${errorMessage(err)}`, { cause: err });
    }
    try {
      this.#db.exec(walPragmas());
      upgrade(this.#db);
      migrate(this.#db, SCHEMA, SCHEMA_VERSION);
      this.#sql = this.#prepare();
      const row = this.#db.prepare("SELECT floor FROM history_file").get() as
        | { floor: number }
        | undefined;
      if (row) this.#floor = row.floor;
      else {
        this.#db.prepare("INSERT INTO history_file (floor) VALUES (?)").run(floor);
        this.#floor = floor;
      }
      const marks = this.#db.prepare("SELECT uid, id, at FROM history_marks WHERE at >= ?")
        .all(this.#now() - this.#ttlMs) as { uid: string; id: number; at: number }[];
      for (const { uid, id, at } of marks) this.#marks.load(uid, { id, at });
      this.#file = this.#identity();
    } catch (err) {
      this.#db.close();
      throw new Error(`cannot open the history file ${path}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** The file at the store's path as `device:inode`, or undefined if there is none. */
  #identity(): string | undefined {
    if (this.#path === ":memory:") return ":memory:";
    const stat = statSync(this.#path, { throwIfNoEntry: false });
    return stat && `${stat.dev}:${stat.ino}`;
  }

  /**
   * Makes the file again when it was deleted or replaced since it was opened: SQLite would go on
   * writing into the deleted file, where nobody finds it after a restart. The new file holds
   * nothing at or below the last id appended, and says so (recovered=false to readers from there).
   */
  #checkFile(): void {
    if (this.#identity() === this.#file) return;
    try {
      this.#db.close();
    } catch {
      // Closed already.
    }
    this.#states.clear();
    this.#open(Math.max(this.#floor, this.#lastAppended));
    // The new file lacks the marks this store still knows.
    this.#dirtyMarks = new Set(this.#marks.uids());
    this.#onError(
      new Error(
        `history file ${this.#path} was deleted or replaced while the server ran; a new one was ` +
          `made, and clients resuming from before it are told recovered=false`,
      ),
    );
  }

  #prepare(): Statements {
    const db = this.#db;
    return {
      insert: db.prepare(
        `INSERT OR IGNORE INTO history (stream, id, data, ts, from_uid, from_client)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      state: db.prepare("SELECT kept, trimmed FROM history_streams WHERE stream = ?"),
      saveState: db.prepare(
        `INSERT INTO history_streams (stream, kept, trimmed) VALUES (?, ?, ?)
         ON CONFLICT (stream) DO UPDATE SET kept = excluded.kept, trimmed = excluded.trimmed`,
      ),
      highestThrough: db.prepare(
        "SELECT max(id) AS id FROM history WHERE stream = ? AND id <= ?",
      ),
      deleteThrough: db.prepare("DELETE FROM history WHERE stream = ? AND id <= ?"),
      nthOldest: db.prepare(
        "SELECT id FROM history WHERE stream = ? ORDER BY id LIMIT 1 OFFSET ?",
      ),
      // Walks the stream from its oldest row and stops at the first one young enough.
      firstFresh: db.prepare(
        "SELECT id FROM history WHERE stream = ? AND ts >= ? ORDER BY id LIMIT 1",
      ),
      page: db.prepare(
        `SELECT id, data, ts, from_uid, from_client FROM history
         WHERE stream = ? AND id > ? ORDER BY id LIMIT ?`,
      ),
      // Without INDEXED BY, SQLite answers DISTINCT by reading the whole primary key in order.
      expiredStreams: db.prepare(
        "SELECT DISTINCT stream FROM history INDEXED BY history_ts WHERE ts < ? LIMIT ?",
      ),
      saveMark: db.prepare(
        `INSERT INTO history_marks (uid, id, at) VALUES (?, ?, ?)
         ON CONFLICT (uid) DO UPDATE SET id = max(id, excluded.id), at = excluded.at`,
      ),
      forgetMarks: db.prepare("DELETE FROM history_marks WHERE at < ?"),
    };
  }

  append(publication: Publication): Promise<void> {
    try {
      this.#checkOpen();
      checkPublication(publication);
    } catch (err) {
      return Promise.reject(err);
    }
    const batch = this.#batch ??= { rows: [], done: Promise.withResolvers() };
    batch.rows.push(frozen(publication));
    if (batch.rows.length >= this.#maxBatchRows) this.#flush();
    else this.#immediate ??= setImmediate(() => this.#flush());
    return batch.done.promise;
  }

  read(stream: StreamName, since: number, limit: number): Promise<HistoryPage> {
    return Promise.try(() => {
      this.#checkOpen();
      checkRead(since, limit);
      // Commits the appends called so far, so that a read sees them (a failure rejects them).
      this.#flush();
      try {
        const expired = this.#newestExpired(stream);
        const mark = Math.max(this.#stateOf(stream).trimmed, expired, this.#floor);
        const rows = this.#sql.page.all(stream, Math.max(since, mark), limit + 1) as {
          id: number;
          data: string;
          ts: number;
          from_uid: string | null;
          from_client: string | null;
        }[];
        const publications = rows.slice(0, limit).map(({ id, data, ts, from_uid, from_client }) =>
          frozen({
            id,
            stream,
            data,
            ts,
            from: from_uid === null ? undefined : { uid: from_uid, client: from_client ?? "" },
          })
        );
        return {
          publications,
          recovered: since >= mark,
          next: rows.length > limit ? publications[limit - 1].id : null,
        };
      } catch (err) {
        throw new Error(`history file ${this.#path}: cannot read ${stream}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    });
  }

  wrote(uid: string, id: number): void {
    if (this.#closed || !this.#marks.raise(uid, id)) return;
    this.#dirtyMarks.add(uid);
    this.#timer ??= setTimeout(() => this.#flush(), MARK_FLUSH_MS);
  }

  writtenThrough(uid: string): number {
    return this.#marks.through(uid);
  }

  /**
   * Trims the expired publications of up to SWEEP_STREAMS streams in one transaction, and forgets
   * expired written marks; the timer calls it every `sweepMs`. Throws, naming the file, when the
   * transaction fails.
   */
  sweep(): void {
    this.#checkOpen();
    const cutoff = this.#now() - this.#ttlMs;
    if (this.#marks.forget() > 0) {
      this.#transaction("forget expired marks", () => this.#sql.forgetMarks.run(cutoff));
    }
    const streams = this.#sql.expiredStreams.all(cutoff, SWEEP_STREAMS) as { stream: string }[];
    if (streams.length === 0) return;
    const states = new Map<StreamName, StreamState>();
    this.#transaction(`trim ${streams.length} streams by age`, () => {
      for (const { stream } of streams) {
        const expired = this.#newestExpired(stream);
        if (expired === 0) continue; // what expired there follows a younger row (see HistoryBounds)
        const state = this.#stateOf(stream);
        this.#deleteThrough(stream, expired, state);
        this.#sql.saveState.run(stream, state.kept, state.trimmed);
        states.set(stream, state);
      }
    });
    this.#saved(states);
  }

  /** How the writes are going, for /metrics and tests. */
  stats(): SqliteHistoryStats {
    return { ...this.#stats };
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#flush();
    clearInterval(this.#sweeper);
    this.#closed = true;
    clearTimeout(this.#timer); // marks that could not be written are lost: mailed again later
    return closeDatabase(this.#db, `history file ${this.#path}`);
  }

  /**
   * Commits the waiting batch, if any, with the marks that moved, and settles its appends. Marks
   * that could not be written wait for the next commit.
   */
  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    const batch = this.#batch;
    this.#batch = undefined;
    const marks = this.#dirtyMarks;
    if (!batch && marks.size === 0) return;
    this.#dirtyMarks = new Set();
    const n = batch?.rows.length ?? 0;
    let states: Map<StreamName, StreamState> | undefined;
    try {
      this.#checkFile();
      this.#transaction(`commit ${n} append${n === 1 ? "" : "s"}`, () => {
        if (batch) states = this.#write(batch.rows);
        for (const uid of marks) {
          const mark = this.#marks.get(uid);
          if (mark) this.#sql.saveMark.run(uid, mark.id, mark.at);
        }
      });
      if (states) this.#saved(states);
      for (const row of batch?.rows ?? []) {
        this.#lastAppended = Math.max(this.#lastAppended, row.id);
      }
      if (batch) this.#stats.batches++;
      batch?.done.resolve();
    } catch (err) {
      for (const uid of marks) this.#dirtyMarks.add(uid);
      if (this.#dirtyMarks.size > 0 && !this.#closed) {
        this.#timer ??= setTimeout(() => this.#flush(), MARK_FLUSH_MS);
      }
      if (batch) {
        this.#stats.failedBatches++;
        batch.done.reject(err);
      } else this.#onError(err as Error);
    }
  }

  /**
   * Inserts a batch's rows and trims each stream they went to by size. Runs inside a transaction;
   * answers the states it wrote, for the cache once committed. Expired rows are left to the sweep:
   * a read hides them already, and looking for them here would cost every append two more
   * statements.
   */
  #write(rows: Publication[]): Map<StreamName, StreamState> {
    const streams = new Map<StreamName, StreamState>();
    for (const { id, stream, data, ts, from } of rows) {
      let state = streams.get(stream);
      if (!state) streams.set(stream, state = this.#stateOf(stream));
      // At or below the mark, it was trimmed already: keeping it again would hide that.
      if (id > state.trimmed) {
        state.kept += Number(
          this.#sql.insert.run(stream, id, data, ts, from?.uid ?? null, from?.client ?? null)
            .changes,
        );
      }
    }
    for (const [stream, state] of streams) {
      if (state.kept > this.#size) {
        // The newest row beyond `size`; it and every older one go.
        const row = this.#sql.nthOldest.get(stream, state.kept - this.#size - 1) as { id: number };
        this.#deleteThrough(stream, row.id, state);
      }
      this.#sql.saveState.run(stream, state.kept, state.trimmed);
    }
    return streams;
  }

  /**
   * Deletes the rows of `stream` with id <= `id`, which is one of its rows, and raises the mark to
   * it. Runs inside a transaction.
   */
  #deleteThrough(stream: StreamName, id: number, state: StreamState): void {
    state.kept -= Number(this.#sql.deleteThrough.run(stream, id).changes);
    state.trimmed = Math.max(state.trimmed, id);
  }

  /**
   * The newest id of the run of expired rows at the oldest end of `stream`: those rows are trimmed
   * by age, whether or not deleted yet. 0 when the oldest row is young enough, or there is none.
   */
  #newestExpired(stream: StreamName): number {
    const fresh = this.#sql.firstFresh.get(stream, this.#now() - this.#ttlMs) as
      | { id: number }
      | undefined;
    const through = fresh ? fresh.id - 1 : Number.MAX_SAFE_INTEGER;
    const row = this.#sql.highestThrough.get(stream, through) as { id: number | null };
    return row.id ?? 0;
  }

  /** A copy of `stream`'s state, from the cache or the file; `#saved` puts it back once committed. */
  #stateOf(stream: StreamName): StreamState {
    const cached = this.#states.get(stream);
    if (cached) return { ...cached };
    const row = this.#sql.state.get(stream) as StreamState | undefined;
    return { kept: row?.kept ?? 0, trimmed: row?.trimmed ?? 0 };
  }

  /** Caches the states a committed transaction wrote. */
  #saved(states: Iterable<[StreamName, StreamState]>): void {
    for (const [stream, state] of states) {
      if (this.#states.size >= MAX_CACHED_STATES) this.#states.clear();
      this.#states.set(stream, state);
    }
  }

  /** Runs `body` in one transaction; throws, naming the file and `what` failed, when it fails. */
  #transaction(what: string, body: () => void): void {
    transaction(this.#db, `history file ${this.#path}`, what, body);
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`the history file ${this.#path} is closed`);
  }
}
