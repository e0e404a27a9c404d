/**
 * The SQLite logger, on `node:sqlite` (built into Deno and Bun: no dependency). WAL mode, one
 * transaction per batch. No busy timeout: a write runs on the event loop, so a locked file fails
 * at once and the batch is tried again later (see BatchingLogger).
 */
import { mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import {
  BatchingLogger,
  type DeliveryStatus,
  type LatestQuery,
  type LoggedMessage,
  type MessageRecord,
  type RecordChange,
} from "./logger.ts";
import { errorMessage, rollback, walPragmas } from "../sqlite.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id         INTEGER PRIMARY KEY,
  uid        TEXT,             -- the recipient uid, when the target is a uid
  target     TEXT    NOT NULL, -- uid:<uid>, client:<id>, group:<name> or all
  message    TEXT    NOT NULL,
  created_at INTEGER NOT NULL, -- milliseconds since the epoch
  status     TEXT    NOT NULL
    CHECK (status IN ('accepted', 'delivered', 'offline', 'failed', 'dropped', 'interrupted',
                      'queued', 'expired', 'acked')),
  written    INTEGER NOT NULL DEFAULT 0, -- connections it was written to
  acked      INTEGER NOT NULL DEFAULT 0, -- distinct uids that acked it (rows of acks)
  updated_at INTEGER NOT NULL  -- milliseconds since the epoch
);
CREATE INDEX IF NOT EXISTS messages_uid_id ON messages (uid, id);
-- The rows still accepted: few at any time, and what a start after a crash looks for.
CREATE INDEX IF NOT EXISTS messages_accepted ON messages (id) WHERE status = 'accepted';
-- The mailbox's rows: what the expiry looks for.
CREATE INDEX IF NOT EXISTS messages_queued ON messages (created_at) WHERE status = 'queued';
-- The first ack of each uid for each message.
CREATE TABLE IF NOT EXISTS acks (
  id       INTEGER NOT NULL, -- the message
  uid      TEXT    NOT NULL,
  acked_at INTEGER NOT NULL, -- milliseconds since the epoch
  PRIMARY KEY (id, uid)
) WITHOUT ROWID;
`;

/** The schema's version, kept in SQLite's user_version. */
const SCHEMA_VERSION = 3;

/**
 * Brings a database to SCHEMA_VERSION by rebuilding the table once: SQLite cannot change a CHECK
 * constraint in place. Version 0 with a table is the first schema, which had a NOT NULL uid and no
 * target: its rows are all uid messages and move over as such. Version 1 lacked the `interrupted`
 * status; version 2 the mailbox's and the acks' statuses, the written and acked counts and the
 * acks table.
 */
function migrate(db: DatabaseSync): void {
  const { user_version: version } = db.prepare("PRAGMA user_version").get() as {
    user_version: number;
  };
  if (version === SCHEMA_VERSION) return;
  if (version > SCHEMA_VERSION) {
    throw new Error(`message log schema ${version} is newer than this build (${SCHEMA_VERSION})`);
  }
  const old = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
    .get();
  const target = version === 0 ? "'uid:' || uid" : "target";
  db.exec("BEGIN");
  try {
    if (old) {
      // The indexes go with the renamed table, under their names: drop them so they are made anew.
      db.exec(`ALTER TABLE messages RENAME TO messages_old;
        DROP INDEX IF EXISTS messages_uid_id; DROP INDEX IF EXISTS messages_accepted;`);
    }
    db.exec(SCHEMA);
    if (old) {
      db.exec(`INSERT INTO messages (id, uid, target, message, created_at, status, updated_at)
        SELECT id, uid, ${target}, message, created_at, status, updated_at FROM messages_old;
        DROP TABLE messages_old;`);
    }
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
  } catch (err) {
    throw rollback(db, err);
  }
}

/** The columns `loggedMessage` reads, in the order of the table. */
const COLUMNS = "id, uid, target, message, created_at, status, written, acked, updated_at";

/** A row of COLUMNS as the log's readers see it. */
function loggedMessage(row: Record<string, unknown>): LoggedMessage {
  return {
    id: Number(row.id),
    uid: row.uid as string | null,
    target: row.target as string,
    message: row.message as string,
    createdAt: Number(row.created_at),
    status: row.status as DeliveryStatus,
    written: Number(row.written),
    acked: Number(row.acked),
    updatedAt: Number(row.updated_at),
  };
}

/** SQLite's primary result codes for a row it will never take: TOOBIG, CONSTRAINT, MISMATCH. */
const ROW_ERRORS = new Set([18, 19, 20]);

/**
 * Keeps every message and its status in a SQLite file, created with its folder if missing. Every
 * error it throws or reports names the file.
 */
export class SqliteLogger extends BatchingLogger {
  /** The connection; protected so that a test can set SQLite's own limits on it (max_page_count). */
  protected db!: DatabaseSync;
  readonly #path: string;
  #insert!: StatementSync;
  #update!: StatementSync;
  #insertAck!: StatementSync;
  #countAck!: StatementSync;
  #find!: StatementSync;
  /** The latest rows below an id (any id, when none is given), all of them or one uid's. */
  #latest!: StatementSync;
  #latestOfUid!: StatementSync;
  #target!: StatementSync;
  #expire!: StatementSync;
  /** The open file's identity (device and inode), to notice it deleted or replaced under us. */
  #file: string | undefined;
  readonly #lastId: number;
  /**
   * Messages the last run left `accepted` (it ended before their delivery was settled: a crash, a
   * kill -9), marked `interrupted` when this logger opened the file.
   */
  readonly interrupted: number;

  /** Opens (or creates) the log at `path`; throws, naming the file, when it cannot. */
  constructor(
    path: string,
    flushMs: number,
    onError: (err: unknown) => void,
    maxBacklogBytes?: number,
  ) {
    super(flushMs, onError, maxBacklogBytes);
    this.#path = path;
    try {
      this.#open();
      const row = this.db.prepare("SELECT max(id) AS id FROM messages").get() as {
        id: number | null;
      };
      this.#lastId = Number(row.id ?? 0);
      this.interrupted = Number(
        this.db.prepare(
          "UPDATE messages SET status = 'interrupted', updated_at = ? WHERE status = 'accepted'",
        ).run(Date.now()).changes,
      );
    } catch (err) {
      throw new Error(`message log ${path}: ${errorMessage(err)}`, { cause: err });
    }
  }

  #open(): void {
    if (this.#path !== ":memory:") mkdirSync(dirname(this.#path), { recursive: true });
    this.db = new DatabaseSync(this.#path);
    this.db.exec(walPragmas());
    migrate(this.db);
    this.#insert = this.db.prepare(
      `INSERT INTO messages (id, uid, target, message, created_at, status, written, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    // The status moves as nextStatus() says: acked is final, expired ends only a queued row.
    this.#update = this.db.prepare(
      `UPDATE messages SET
         status = CASE WHEN ?1 IS NULL OR status = 'acked' OR (?1 = 'expired' AND status <> 'queued')
                  THEN status ELSE ?1 END,
         written = written + ?2, updated_at = ?3
       WHERE id = ?4`,
    );
    this.#insertAck = this.db.prepare(
      `INSERT OR IGNORE INTO acks (id, uid, acked_at)
       SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?1)`,
    );
    this.#countAck = this.db.prepare(
      "UPDATE messages SET acked = acked + 1, status = 'acked', updated_at = ? WHERE id = ?",
    );
    this.#find = this.db.prepare(`SELECT ${COLUMNS} FROM messages WHERE id = ?`);
    // Two statements, so that each has its own plan: the primary key backwards, or the
    // (uid, id) index backwards; neither sorts.
    this.#latest = this.db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?`,
    );
    this.#latestOfUid = this.db.prepare(
      `SELECT ${COLUMNS} FROM messages WHERE uid = ? AND id < ? ORDER BY id DESC LIMIT ?`,
    );
    this.#target = this.db.prepare("SELECT target FROM messages WHERE id = ?");
    this.#expire = this.db.prepare(
      `UPDATE messages SET status = 'expired', updated_at = ?
       WHERE status = 'queued' AND created_at < ? RETURNING id, uid`,
    );
    this.#file = this.#identity();
  }

  /** The file at the log's path as `device:inode`, or undefined if there is none. */
  #identity(): string | undefined {
    if (this.#path === ":memory:") return ":memory:";
    const stat = statSync(this.#path, { throwIfNoEntry: false });
    return stat && `${stat.dev}:${stat.ino}`;
  }

  lastId(): number {
    return this.#lastId;
  }

  /**
   * Throws when the file was deleted or replaced since it was opened, after opening a new one at
   * the path: SQLite would go on writing into the deleted file, where nobody can read the rows.
   * The batch then waits and goes to the new file; statuses of messages kept in the old one change
   * no row there.
   */
  #checkFile(): void {
    if (this.#identity() === this.#file) return;
    try {
      this.db.close();
    } catch {
      // Closed already, by an earlier check that could not open a new file.
    }
    try {
      this.#open();
    } catch (err) {
      throw new Error(
        `${this.#path} was deleted or replaced while the server ran, and a new message log ` +
          `cannot be created there: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    throw new Error(
      `${this.#path} was deleted or replaced while the server ran; a new message log was ` +
        `created there, and what was kept in the old file is not in it`,
    );
  }

  protected write(records: MessageRecord[], updates: Map<number, RecordChange>): void {
    this.#checkFile();
    const now = Date.now();
    const ack = (id: number, [uid, at]: [string, number]) => {
      if (this.#insertAck.run(id, uid, at).changes > 0) this.#countAck.run(now, id);
    };
    try {
      this.db.exec("BEGIN");
      for (const r of records) {
        this.#insert.run(
          r.id,
          r.uid,
          r.target,
          r.message,
          r.createdAt,
          r.status,
          r.written ?? 0,
          now,
        );
        for (const a of r.acks ?? []) ack(r.id, a);
      }
      for (const [id, { status, written, acks }] of updates) {
        this.#update.run(status ?? null, written, now, id);
        for (const a of acks) ack(id, a);
      }
      this.db.exec("COMMIT");
    } catch (err) {
      const cause = rollback(this.db, err);
      throw new Error(`${this.#path}: ${errorMessage(cause)}`, { cause });
    }
  }

  targetOf(id: number): string | undefined {
    const waiting = this.waitingTarget(id);
    if (waiting !== undefined) return waiting;
    try {
      return (this.#target.get(id) as { target: string } | undefined)?.target;
    } catch (err) {
      throw new Error(`message log ${this.#path}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Writes what waits first, so the answer has every change so far. */
  find(id: number): LoggedMessage | undefined {
    this.flush();
    let row;
    try {
      row = this.#find.get(id) as Record<string, unknown> | undefined;
    } catch (err) {
      throw new Error(`message log ${this.#path}: ${errorMessage(err)}`, { cause: err });
    }
    return row && loggedMessage(row);
  }

  /** Writes what waits first, so the answer has every message and change so far. */
  latest({ uid, before, limit }: LatestQuery): LoggedMessage[] {
    this.flush();
    const below = before ?? Number.MAX_SAFE_INTEGER;
    let rows;
    try {
      rows = uid === undefined
        ? this.#latest.all(below, limit)
        : this.#latestOfUid.all(uid, below, limit);
    } catch (err) {
      throw new Error(`message log ${this.#path}: ${errorMessage(err)}`, { cause: err });
    }
    return rows.map((row) => loggedMessage(row as Record<string, unknown>));
  }

  expireQueued(before: number): { id: number; uid: string }[] {
    this.flush();
    try {
      return (this.#expire.all(Date.now(), before) as { id: number | bigint; uid: string }[])
        .map(({ id, uid }) => ({ id: Number(id), uid }));
    } catch (err) {
      throw new Error(
        `message log ${this.#path}: cannot expire the mailbox: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  protected isRowError(err: unknown): boolean {
    // write() wraps SQLite's error; its errcode is the extended code, whose low byte is the primary.
    for (
      let e = err as { cause?: unknown; errcode?: unknown } | undefined;
      e;
      e = e.cause as typeof e
    ) {
      if (typeof e.errcode === "number") return ROW_ERRORS.has(e.errcode & 0xff);
    }
    return false;
  }

  override close(): void {
    super.close();
    try {
      this.db.close();
    } catch {
      // Closed already: its file was deleted and no new one could be opened.
    }
  }
}
