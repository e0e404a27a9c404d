/**
 * What the SQLite stores (the message log, the history, the idempotency keys) share: a schema
 * kept at a version, and transactions whose failure names the file and never hides its cause.
 */
import type { DatabaseSync } from "node:sqlite";

/**
 * Rolls back what is left of a failed transaction and returns the error to report: the one that
 * failed it. SQLite has already rolled back after some errors (a full disk, an I/O error), and a
 * ROLLBACK then fails with "no transaction is active", which must not hide the cause.
 */
export function rollback(db: DatabaseSync, err: unknown): unknown {
  if (!db.isTransaction) return err;
  try {
    db.exec("ROLLBACK");
    return err;
  } catch (rollbackErr) {
    return new Error(
      `${errorMessage(err)} (and the rollback failed: ${errorMessage(rollbackErr)})`,
      { cause: err },
    );
  }
}

/** An error's message, or the thrown value as text. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs `body` in one transaction on `db`. When it fails, rolls back and throws
 * `<file>: cannot <what>: <cause>`, `file` being how the store names itself (`history file
 * /var/lib/deno-pusher/history.db`).
 */
export function transaction(db: DatabaseSync, file: string, what: string, body: () => void): void {
  try {
    db.exec("BEGIN");
    body();
    db.exec("COMMIT");
  } catch (err) {
    const cause = rollback(db, err);
    throw new Error(`${file}: cannot ${what}: ${errorMessage(cause)}`, { cause });
  }
}

/**
 * Creates what a new file lacks by running `schema` (statements that are no-ops where their
 * objects exist), and records `version` in SQLite's user_version. Throws when the file's schema is
 * newer than this build's: a file written by a newer deno-pusher is never changed by an older one.
 */
export function migrate(db: DatabaseSync, schema: string, version: number): void {
  const { user_version: found } = db.prepare("PRAGMA user_version").get() as {
    user_version: number;
  };
  if (found > version) {
    throw new Error(
      `its schema ${found} is newer than this build's (${version}): run the newer ` +
        `deno-pusher that wrote it`,
    );
  }
  if (found === version) return;
  db.exec(`${schema} PRAGMA user_version = ${version};`);
}

/**
 * Closes `db`; resolves, or rejects with `cannot close the <file>: <cause>` (`file` as the store
 * names itself, `history file /var/lib/deno-pusher/history.db`).
 */
export function closeDatabase(db: DatabaseSync, file: string): Promise<void> {
  try {
    db.close();
  } catch (err) {
    return Promise.reject(
      new Error(`cannot close the ${file}: ${errorMessage(err)}`, { cause: err }),
    );
  }
  return Promise.resolve();
}

/**
 * Milliseconds between two checkpoints of the stores' write-ahead logs by the checkpointer
 * (sqlite_checkpointer.ts): at thousands of sends a second a log then holds some hundreds of pages,
 * well under the 1000 at which the writing connection would checkpoint on the event loop.
 */
export const CHECKPOINT_MS = 100;

/**
 * WAL pages after which a writing connection checkpoints by itself (SQLite's automatic checkpoint)
 * while the checkpointer runs: only a safety net, for a checkpointer that stopped or fell behind,
 * since a checkpoint on the event loop is what the checkpointer is there to avoid. 10,000 pages of
 * 4 KiB: a log of 40 MiB at most. Without a checkpointer SQLite's default of 1000 stays.
 */
export const SAFETY_CHECKPOINT_PAGES = 10_000;

/**
 * Bytes a write-ahead log is cut back to when it starts over after a checkpoint: a burst that grew
 * it does not keep the disk space for ever. 4 MiB.
 */
export const WAL_SIZE_LIMIT = 4 * 1024 * 1024;

/** Whether a checkpointer was started in this process; see walPragmas. */
let checkpointerStarted = false;

/**
 * What every store runs on its connection when it opens its file: WAL with synchronous=NORMAL (a
 * commit survives the process being killed, not a power cut), the automatic checkpoint left to
 * SQLite, or pushed back to SAFETY_CHECKPOINT_PAGES once `startCheckpoints` runs (call it first),
 * and the log cut back to WAL_SIZE_LIMIT when it starts over.
 */
export function walPragmas(): string {
  const pages = checkpointerStarted ? SAFETY_CHECKPOINT_PAGES : 1000;
  return `PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; ` +
    `PRAGMA wal_autocheckpoint = ${pages}; PRAGMA journal_size_limit = ${WAL_SIZE_LIMIT};`;
}

/** A running checkpointer. */
export interface Checkpoints {
  stop(): void;
}

/**
 * Starts the checkpointer worker on the SQLite files at `paths`, which may not exist yet (each is
 * checkpointed once its store has made it): call it before opening the stores, so that they leave
 * checkpoints to it (walPragmas). Its failures go to `onError`; when no worker can start, answers
 * undefined after telling `onError`, and the writers checkpoint by themselves as before (a slower
 * tail, never a wrong answer). A worker that fails later leaves SAFETY_CHECKPOINT_PAGES as the
 * bound.
 */
export function startCheckpoints(
  paths: string[],
  onError: (err: Error) => void,
  onCheckpoint: () => void = () => {},
): Checkpoints | undefined {
  let worker: Worker;
  try {
    worker = new Worker(new URL("./sqlite_checkpointer.ts", import.meta.url).href, {
      type: "module",
    });
  } catch (err) {
    onError(
      new Error(`checkpoints run on the event loop: no worker could start: ${errorMessage(err)}`),
    );
    return undefined;
  }
  worker.onmessage = (event: MessageEvent<{ path: string; error?: string }>) => {
    const { path, error } = event.data;
    if (error === undefined) onCheckpoint();
    else onError(new Error(`cannot checkpoint ${path}: ${error}`));
  };
  worker.onerror = (event: ErrorEvent) => {
    event.preventDefault();
    onError(new Error(`checkpoints run on the event loop: the worker failed: ${event.message}`));
  };
  worker.postMessage({ paths, everyMs: CHECKPOINT_MS });
  checkpointerStarted = true;
  return { stop: () => worker.terminate() };
}
