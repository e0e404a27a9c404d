/**
 * What the SQLite stores (the message log, the history) share: rolling back a failed transaction
 * without hiding what failed it.
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
