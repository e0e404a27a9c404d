/**
 * What the memory and SQLite stores share: the requests in progress. They live in this process's
 * memory, which is right while one process owns the data directory (datadir.ts makes sure of it);
 * a store shared by several servers (Redis) must claim keys in the shared backend instead, and is
 * not built on this.
 *
 * A consequence worth knowing: a claim is not written down. A crash after a send pushed but before
 * its answer was committed (until the next turn of the event loop, one batch) forgets the key, and a retry after the
 * restart pushes again. Writing claims down would not help: after a crash, a claim without an
 * answer cannot say whether the send pushed, so a retry could only be refused for ever.
 */
import { clearInterval, setInterval } from "node:timers";
import {
  type Begun,
  checkOptions,
  type FirstRequest,
  idempotencyKeyProblem,
  type IdempotencyOptions,
  type IdempotencyStats,
  type IdempotencyStore,
  type IdempotentAnswer,
  MAX_KEYS,
  SWEEP_MS,
  WAIT_MS,
} from "./store.ts";

/** An answer as a store keeps it. */
export interface KeptAnswer {
  /** The fingerprint of the request that got it. */
  fingerprint: string;
  status: number;
  /** The body as JSON text. */
  body: string;
  /** When `finish` was called, in milliseconds since the epoch (the store's clock). */
  createdAt: number;
}

/** A request in progress, and the promise its waiters wait on. */
interface Claim {
  fingerprint: string;
  /** Resolves when the request finishes or is abandoned, or the store closes. */
  released: PromiseWithResolvers<void>;
}

/**
 * One key of one scope as a single string. A key holds no control character, so everything after
 * the last NUL is the key, whatever the scope holds: two pairs never make the same string.
 */
export const keyOf = (scope: string, key: string) => `${scope}\u0000${key}`;

/**
 * A store whose claims are this process's. Subclasses keep the answers: they look them up and keep
 * them synchronously, so that nothing runs between `begin`'s look-up and its claim, and two
 * requests cannot both find the key free.
 */
export abstract class LocalIdempotencyStore implements IdempotencyStore {
  /** The TTL, in milliseconds. */
  protected readonly ttlMs: number;
  /** The store's clock, in milliseconds since the epoch. */
  protected readonly now: () => number;
  /** The bound on kept answers. */
  protected readonly maxKeys: number;
  readonly #waitMs: number;
  /** The store as errors name it ("the idempotency file <path>"). */
  readonly #what: string;
  readonly #claims = new Map<string, Claim>();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  /** Throws a RangeError, saying what is allowed, when `options` are out of range. */
  constructor(what: string, options: IdempotencyOptions) {
    checkOptions(options);
    this.#what = what;
    this.ttlMs = options.ttl * 1000;
    this.now = options.now ?? Date.now;
    this.maxKeys = options.maxKeys ?? MAX_KEYS;
    this.#waitMs = options.waitMs ?? WAIT_MS;
  }

  /**
   * The answer kept for `key` in `scope` by a `finish` after `cutoff` (milliseconds since the
   * epoch), kept answers not yet written included; undefined when there is none. Throws, naming the
   * store, when it cannot read.
   */
  protected abstract lookup(scope: string, key: string, cutoff: number): KeptAnswer | undefined;

  /**
   * Keeps `answer`, replacing any expired one of the key; `lookup` must find it as soon as this
   * returns. The promise settles as `FirstRequest.finish` says; it never throws.
   */
  protected abstract keep(scope: string, key: string, answer: KeptAnswer): Promise<void>;

  /** Frees the answers kept at or before `cutoff` (or some of them, to bound the work). */
  protected abstract sweep(cutoff: number): void;

  /** Answers kept and answers evicted, as `stats` reports them. */
  protected abstract counts(): { keys: number; evicted: number };

  /** Writes what is pending and releases the store's resources; the store is closed already. */
  protected abstract shutdown(): Promise<void>;

  /** Answers kept at or before this instant have expired. */
  protected cutoff(): number {
    return this.now() - this.ttlMs;
  }

  /**
   * Sweeps every `sweepMs` (default SWEEP_MS; 0 runs none), telling `onError` when a sweep fails
   * (the next one tries again). Subclasses call it last in their constructor.
   */
  protected startSweeps(sweepMs = SWEEP_MS, onError: (err: Error) => void = () => {}): void {
    if (sweepMs === 0) return;
    this.#sweeper = setInterval(() => {
      try {
        this.sweep(this.cutoff());
      } catch (err) {
        onError(err as Error);
      }
    }, sweepMs);
    // A sweep frees space; it is no reason to keep a process alive.
    this.#sweeper.unref();
  }

  /** Runs the sweep now, as the timer would; for tests. Throws what the sweep threw. */
  sweepNow(): void {
    this.#checkOpen();
    this.sweep(this.cutoff());
  }

  async begin(scope: string, key: string, fingerprint: string): Promise<Begun> {
    const problem = idempotencyKeyProblem(key);
    if (problem) throw new RangeError(problem);
    const id = keyOf(scope, key);
    const deadline = performance.now() + this.#waitMs;
    for (;;) {
      this.#checkOpen();
      const claim = this.#claims.get(id);
      if (claim) {
        if (claim.fingerprint !== fingerprint) return { kind: "reused" };
        if (!await within(claim.released.promise, deadline - performance.now())) {
          return { kind: "in-progress" };
        }
        // Finished, abandoned or closed: look again. The first waiter to get here may claim it.
        continue;
      }
      const kept = this.lookup(scope, key, this.cutoff());
      if (kept) {
        if (kept.fingerprint !== fingerprint) return { kind: "reused" };
        return { kind: "duplicate", answer: { status: kept.status, body: JSON.parse(kept.body) } };
      }
      return this.#claim(id, scope, key, fingerprint);
    }
  }

  stats(): IdempotencyStats {
    return { ...this.counts(), inProgress: this.#claims.size };
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#sweeper);
    // Waiters wake, find the store closed and reject.
    for (const claim of this.#claims.values()) claim.released.resolve();
    this.#claims.clear();
    return this.shutdown();
  }

  /** Claims the key for a first request; nothing may run between the look-up and this. */
  #claim(id: string, scope: string, key: string, fingerprint: string): FirstRequest {
    const claim: Claim = { fingerprint, released: Promise.withResolvers() };
    this.#claims.set(id, claim);
    let open = true;
    const release = () => {
      if (!open) return;
      open = false;
      // After a close, the key may be claimed by nobody, or by a later store's request: leave it.
      if (this.#claims.get(id) === claim) this.#claims.delete(id);
      claim.released.resolve();
    };
    return {
      kind: "first",
      finish: (answer: IdempotentAnswer) => {
        if (!open) {
          return Promise.reject(
            new Error(`Idempotency-Key ${key}: finish was called after finish or abandon`),
          );
        }
        let kept: KeptAnswer;
        try {
          this.#checkOpen();
          kept = { fingerprint, ...encodeAnswer(answer), createdAt: this.now() };
        } catch (err) {
          release();
          return Promise.reject(err);
        }
        // Kept first, released second: a waiter that wakes finds the answer, not a free key.
        const written = this.keep(scope, key, kept);
        release();
        return written;
      },
      abandon: release,
      [Symbol.dispose]: release,
    };
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`${this.#what} is closed`);
  }
}

/**
 * The answer's status and its body as JSON, as every store keeps them; throws a TypeError naming
 * what is wrong.
 */
export function encodeAnswer({ status, body }: IdempotentAnswer): { status: number; body: string } {
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new TypeError(`an answer's status must be a whole number from 100 to 599, not ${status}`);
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(body);
  } catch (err) {
    throw new TypeError(`an answer's body must be JSON: ${(err as Error).message}`, { cause: err });
  }
  if (json === undefined) throw new TypeError(`an answer's body must be JSON, not ${typeof body}`);
  return { status, body: json };
}

/** Whether `promise` settles within `ms` milliseconds (at once when `ms` is 0 or less). */
async function within(promise: Promise<void>, ms: number): Promise<boolean> {
  if (ms <= 0) return false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
