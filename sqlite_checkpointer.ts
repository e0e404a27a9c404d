/**
 * The checkpointer: a worker that copies the SQLite stores' write-ahead logs into their files, off
 * the event loop. A checkpoint ends with an fsync of the file, which takes milliseconds to tens of
 * them; run by the connection that writes (SQLite's automatic checkpoint, every 1000 pages), it
 * would stall every socket that long. Run here every CHECKPOINT_MS, it keeps each log short, so the
 * writers' own automatic checkpoint, which stays on as the safety net, almost never comes due.
 *
 * Started by `startCheckpoints` (sqlite.ts) with the files' paths; it posts `{path}` for each
 * checkpoint and `{path, error}` for each failure, and is stopped by terminating it.
 */
import { statSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";

/** What the main thread sends: the files to checkpoint, and how often. */
export interface CheckpointOrders {
  paths: string[];
  everyMs: number;
}

/** Milliseconds the checkpointer waits for a lock a writer holds, before it tries again later. */
const BUSY_TIMEOUT_MS = 200;

// deno-lint-ignore no-explicit-any
const worker = self as any;
worker.onmessage = (event: MessageEvent<CheckpointOrders>) => {
  const { paths, everyMs } = event.data;
  /** Each file's connection, and the file it was opened on (`device:inode`). */
  const open = new Map<string, { db: DatabaseSync; file: string }>();
  const close = (path: string) => {
    open.get(path)?.db.close();
    open.delete(path);
  };
  setInterval(() => {
    for (const path of paths) {
      try {
        // Never create a file (its store does), and follow one made again after a deletion.
        const stat = statSync(path, { throwIfNoEntry: false });
        if (!stat) {
          close(path);
          continue;
        }
        const file = `${stat.dev}:${stat.ino}`;
        if (open.get(path)?.file !== file) {
          close(path);
          const db = new DatabaseSync(path);
          db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
          open.set(path, { db, file });
        }
        // PASSIVE: copies what no reader still needs and never blocks a writer.
        open.get(path)!.db.exec("PRAGMA wal_checkpoint(PASSIVE)");
        worker.postMessage({ path });
      } catch (err) {
        close(path);
        worker.postMessage({ path, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }, everyMs);
};
