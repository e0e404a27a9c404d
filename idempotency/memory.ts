/**
 * The in-memory idempotency store: answers in a Map, oldest first. Nothing outlives the process; it
 * is the store of a server that keeps no files, and of tests.
 */
import { type KeptAnswer, keyOf, LocalIdempotencyStore } from "./local.ts";
import type { IdempotencyOptions } from "./store.ts";

/**
 * Keeps answers in memory, at most `maxKeys` of them. The Map's order is the order answers were
 * kept, which is their age, so the oldest are found first by both the sweep and the bound.
 */
export class MemoryIdempotency extends LocalIdempotencyStore {
  readonly #answers = new Map<string, KeptAnswer>();
  #evicted = 0;

  /** Throws a RangeError, saying what is allowed, when `options` are out of range. */
  constructor(options: IdempotencyOptions) {
    super("the idempotency store", options);
    this.startSweeps(options.sweepMs);
  }

  protected lookup(scope: string, key: string, cutoff: number): KeptAnswer | undefined {
    const kept = this.#answers.get(keyOf(scope, key));
    return kept && kept.createdAt > cutoff ? kept : undefined;
  }

  protected keep(scope: string, key: string, answer: KeptAnswer): Promise<void> {
    const id = keyOf(scope, key);
    // A Map keeps a replaced entry in its first place; deleting it first puts it last, by its age.
    this.#answers.delete(id);
    this.#answers.set(id, answer);
    if (this.#answers.size > this.maxKeys) {
      const cutoff = this.cutoff();
      for (const [oldest, kept] of this.#answers) {
        if (this.#answers.size <= this.maxKeys) break;
        this.#answers.delete(oldest);
        if (kept.createdAt > cutoff) this.#evicted++;
      }
    }
    return Promise.resolve();
  }

  protected sweep(cutoff: number): void {
    // Oldest first, so the first fresh answer ends the sweep. (After the clock stepped back, an
    // expired one may sit behind it: hidden by lookup, it goes at a later sweep or by the bound.)
    for (const [id, kept] of this.#answers) {
      if (kept.createdAt > cutoff) break;
      this.#answers.delete(id);
    }
  }

  protected counts(): { keys: number; evicted: number } {
    return { keys: this.#answers.size, evicted: this.#evicted };
  }

  protected shutdown(): Promise<void> {
    this.#answers.clear();
    return Promise.resolve();
  }
}
