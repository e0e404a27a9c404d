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
