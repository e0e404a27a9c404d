/**
 * Message ids: unique and increasing for the life of a data directory, whatever the clock does and
 * whichever logger keeps (or does not keep) the messages.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { writeDurably } from "../datadir.ts";

/** Where message ids come from. */
export interface IdSource {
  /** A safe integer greater than every id it returned before. */
  next(): number;
  /**
   * The last id handed out; before the first, the one ids start after, which is at or above every
   * id an earlier run handed out.
   */
  readonly last: number;
}

/** Counts on from `start`, in memory only: for a hub whose ids need not outlive the process. */
export function countFrom(start: number): IdSource {
  let last = start;
  return {
    next: () => ++last,
    get last() {
      return last;
    },
  };
}

/** The high-water mark's file in the data directory. */
export const IDS_FILE = "message-ids";

/**
 * Ids reserved per write of the mark: one write (with an fsync) per million messages, and at most a
 * million ids skipped by a restart, a second of the clock's microseconds (see MessageIds).
 */
export const ID_BLOCK = 1_000_000;

export interface MessageIdsOptions {
  /** An id known to be taken already (the logger's last stored id); ids start after it. */
  floor?: number;
  /** The clock, in ms since the epoch; tests step it back. */
  now?: () => number;
  /** Ids reserved per write (ID_BLOCK). */
  block?: number;
}

/**
 * Ids that survive restarts and crashes. The file `<dir>/message-ids` holds the highest id that may
 * have been handed out; before an id past it is handed out, the mark moves a block ahead, written
 * durably (datadir.ts's writeDurably: a synced temporary file renamed over the old one, the
 * directory synced), so a crash or a power cut at any point leaves a whole mark at or above every
 * id used. A new run starts after the mark, the floor and the clock in
 * microseconds, whichever is highest: ids still read as a time when the clock is right, and never
 * repeat when it is not. Holds only while one process owns the directory (see datadir.ts).
 */
export class MessageIds implements IdSource {
  readonly #file: string;
  readonly #block: number;
  #last: number;
  /** The mark on disk: every id up to it may be handed out. */
  #reserved: number;

  /** Reads the mark and reserves the first block; throws, naming the file, when it cannot. */
  constructor(dir: string, options: MessageIdsOptions = {}) {
    this.#file = join(dir, IDS_FILE);
    this.#block = options.block ?? ID_BLOCK;
    const now = options.now ?? Date.now;
    this.#last = Math.max(readMark(this.#file), options.floor ?? 0, Math.floor(now()) * 1000);
    this.#reserved = this.#last;
    this.#reserve();
  }

  next(): number {
    if (this.#last >= this.#reserved) this.#reserve();
    return ++this.#last;
  }

  /** The last id handed out; before the first, the one the ids start after. */
  get last(): number {
    return this.#last;
  }

  #reserve(): void {
    const mark = this.#last + this.#block;
    if (!Number.isSafeInteger(mark)) {
      throw new Error(`${this.#file}: message ids are exhausted (${this.#last})`);
    }
    try {
      writeDurably(this.#file, `${mark}\n`);
    } catch (err) {
      throw new Error(`cannot write the message id mark ${this.#file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.#reserved = mark;
  }
}

/** The mark in `file`, or 0 when there is none yet. */
function readMark(file: string): number {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return 0;
    throw new Error(`cannot read the message id mark ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!/^\d+\n?$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new Error(
      `${file} should hold the highest message id used, a whole number, but holds ` +
        `${
          JSON.stringify(text.slice(0, 40))
        }: write there a number at least as high as the last id used`,
    );
  }
  return Number(text);
}
