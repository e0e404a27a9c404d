/**
 * The data directory belongs to one server at a time: two would hand out the same message ids and
 * write the same log. The lock is a file holding the owner's pid, which works the same on Deno, on
 * Bun and in the compiled executable (neither `node:fs` offers flock on both).
 */
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";

/** The lock's file in the data directory; it holds the owner's pid and a newline. */
export const LOCK_FILE = "deno-pusher.lock";

/**
 * Directories this process holds. A lock naming our own pid is ours only if listed here: a
 * container restarted after a kill -9 often gets the same pid as the process that left the lock.
 */
const held = new Set<string>();

/** A held data directory. */
export interface DataDirLock {
  /** The directory, as an absolute path. */
  readonly dir: string;
  /** Removes the lock file (if it is still ours). Idempotent. */
  release(): void;
}

/**
 * Takes the data directory `dir`, creating it if missing. A lock left by a process that no longer
 * runs (killed, crashed) is taken over. Throws, naming the directory, when another live process
 * holds it or the directory cannot be written.
 *
 * The lock file appears whole or not at all: the pid is written to a file of our own first, which is
 * then hard-linked to the lock's name, and a link never replaces an existing file. (Two processes
 * taking over the same stale lock in the same instant could both get it: a lock file cannot close
 * that window without an OS lock, which the runtimes do not share.)
 */
export function lockDataDir(dir: string): DataDirLock {
  const path = resolve(dir);
  const lockFile = join(path, LOCK_FILE);
  if (held.has(path)) throw inUse(path, lockFile, process.pid);
  const mine = join(path, `${LOCK_FILE}.${process.pid}`);
  try {
    mkdirSync(path, { recursive: true });
    writeFileSync(mine, `${process.pid}\n`);
  } catch (err) {
    throw new Error(`cannot use the data directory ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    // Two tries: a second only after taking a stale lock away; losing that race means someone
    // else took it over first.
    for (let attempt = 1;; attempt++) {
      try {
        linkSync(mine, lockFile);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== "EEXIST") {
          throw new Error(`cannot lock the data directory ${path}: ${(err as Error).message}`, {
            cause: err,
          });
        }
      }
      const owner = readPid(lockFile);
      if (attempt === 2 || (owner !== undefined && owner !== process.pid && isAlive(owner))) {
        throw inUse(path, lockFile, owner);
      }
      removeIfThere(lockFile); // its process is gone
    }
  } finally {
    removeIfThere(mine);
  }
  held.add(path);
  let released = false;
  return {
    dir: path,
    release() {
      if (released) return;
      released = true;
      held.delete(path);
      if (readPid(lockFile) === process.pid) removeIfThere(lockFile);
    },
  };
}

function inUse(dir: string, lockFile: string, pid: number | undefined): Error {
  return new Error(
    `the data directory ${dir} is in use by another deno-pusher (pid ${pid ?? "unknown"}, ` +
      `lock file ${lockFile}): stop that one, or give this one its own --data-dir`,
  );
}

/** The pid in a lock file, or undefined when the file is gone or holds something else. */
function readPid(lockFile: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(lockFile, "utf8");
  } catch {
    return undefined; // gone: its owner released it in the meantime
  }
  return /^\d+\n$/.test(text) ? Number(text) : undefined;
}

/** Whether a process with this pid runs (EPERM: it runs, as another user). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === "EPERM";
  }
}

function removeIfThere(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as { code?: string }).code !== "ENOENT") throw err;
  }
}

/**
 * Replaces `file` with `text` so that a crash at any point leaves the old text or the new one
 * whole: written to `<file>.tmp`, synced, then renamed over it, and the directory synced so that
 * the rename too outlives a power cut (the new text is on disk when this returns). Throws what the
 * file system threw.
 */
export function writeDurably(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  syncing(openSync(tmp, "w"), (fd) => writeSync(fd, text));
  renameSync(tmp, file);
  syncing(openSync(dirname(file), "r"), () => {});
}

/** Runs `write` on `fd`, then syncs and closes it (closed whatever happens). */
function syncing(fd: number, write: (fd: number) => void): void {
  try {
    write(fd);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
