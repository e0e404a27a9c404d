/**
 * The in-memory history store: each stream's kept publications in an array, oldest first. Nothing
 * outlives the process; it is the store of a server that keeps no files, and of tests.
 */
import { clearInterval, setInterval } from "node:timers";
import {
  checkBounds,
  checkPublication,
  checkRead,
  HISTORY_SWEEP_MS,
  type HistoryBounds,
  type HistoryPage,
  type HistoryStore,
  WrittenMarks,
} from "./history.ts";
import { frozen, type Publication, type StreamName } from "./stream.ts";

/** What a memory store is built from. */
export interface MemoryHistoryOptions extends HistoryBounds {
  /** The clock, in milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /** Milliseconds between sweeps; 0 runs none (call `sweep`). Default HISTORY_SWEEP_MS. */
  sweepMs?: number;
}

/**
 * One stream's kept publications and its trim mark. The kept ones are `items[start..]`, in id
 * order; a trim only moves `start`, and the array is compacted once half of it is trimmed slots.
 * So appends and trims cost O(1) amortised, and a stream holds at most twice its bound.
 */
class Kept {
  items: Publication[] = [];
  start = 0;
  /** The highest id ever trimmed from the stream, 0 when none. */
  trimmed = 0;

  get length(): number {
    return this.items.length - this.start;
  }

  /** The index of the first kept publication with id > since; items.length when there is none. */
  after(since: number): number {
    let lo = this.start;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.items[mid].id <= since) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Keeps `publication` in id order; one it holds already, or trimmed already, changes nothing. */
  add(publication: Publication): void {
    if (publication.id <= this.trimmed) return;
    // A trimmed slot's id is at most `trimmed`, so comparing with one is still right.
    const last = this.items.at(-1);
    if (!last || publication.id > last.id) {
      this.items.push(publication);
      return;
    }
    const i = this.after(publication.id - 1);
    if (this.items[i]?.id !== publication.id) this.items.splice(i, 0, publication);
  }

  /** Trims the oldest kept publication; the stream must hold one. */
  dropOldest(): void {
    this.trimmed = this.items[this.start].id;
    this.start++;
    if (this.start * 2 >= this.items.length) {
      this.items = this.items.slice(this.start);
      this.start = 0;
    }
  }
}

/**
 * Keeps each stream's publications in memory, within its bounds. A stream that was ever trimmed
 * keeps its name and trim mark (a few dozen bytes) for the life of the store: forgetting the mark
 * would let a late reader believe it missed nothing.
 */
export class MemoryHistory implements HistoryStore {
  readonly #streams = new Map<StreamName, Kept>();
  readonly #size: number;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  readonly #marks: WrittenMarks;
  #closed = false;

  /** Throws a RangeError when the bounds are out of range (see HistoryBounds). */
  constructor(options: MemoryHistoryOptions) {
    checkBounds(options);
    this.#size = options.size;
    this.#ttlMs = options.ttl * 1000;
    this.#now = options.now ?? Date.now;
    this.#marks = new WrittenMarks(this.#ttlMs, this.#now);
    const sweepMs = options.sweepMs ?? HISTORY_SWEEP_MS;
    if (sweepMs > 0) {
      this.#sweeper = setInterval(() => this.sweep(), sweepMs);
      // The sweep frees memory; it is no reason to keep a process alive.
      this.#sweeper.unref();
    }
  }

  append(publication: Publication): Promise<void> {
    return Promise.try(() => {
      this.#checkOpen();
      checkPublication(publication);
      const { stream } = publication;
      let kept = this.#streams.get(stream);
      if (!kept) this.#streams.set(stream, kept = new Kept());
      // A copy, frozen: what the caller does with its object later cannot change history.
      kept.add(frozen(publication));
      this.#expire(kept);
      while (kept.length > this.#size) kept.dropOldest();
    });
  }

  read(stream: StreamName, since: number, limit: number): Promise<HistoryPage> {
    return Promise.try(() => {
      this.#checkOpen();
      checkRead(since, limit);
      const kept = this.#streams.get(stream);
      if (!kept) return { publications: [], recovered: true, next: null };
      this.#expire(kept);
      const from = kept.after(since);
      const publications = kept.items.slice(from, from + limit);
      const more = from + limit < kept.items.length;
      return {
        publications,
        recovered: since >= kept.trimmed,
        next: more ? publications[publications.length - 1].id : null,
      };
    });
  }

  wrote(uid: string, id: number): void {
    if (!this.#closed) this.#marks.raise(uid, id);
  }

  writtenThrough(uid: string): number {
    return this.#marks.through(uid);
  }

  /**
   * Trims the expired publications of every stream, and forgets expired written marks; the timer
   * calls it every `sweepMs`.
   */
  sweep(): void {
    const cutoff = this.#now() - this.#ttlMs;
    for (const kept of this.#streams.values()) this.#expire(kept, cutoff);
    this.#marks.forget();
  }

  close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#closed = true;
    return Promise.resolve();
  }

  /** Trims, oldest first, the publications of `kept` older than the ttl. */
  #expire(kept: Kept, cutoff = this.#now() - this.#ttlMs): void {
    while (kept.length > 0 && kept.items[kept.start].ts < cutoff) kept.dropOldest();
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("the memory history store is closed");
  }
}
