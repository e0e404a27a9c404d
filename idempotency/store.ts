/**
 * The idempotency key store: what lets a backend retry a send safely. A send that carries an
 * `Idempotency-Key` header asks the store first; the first request with a key runs and its answer
 * is kept, and a retry with the same key within IDEMPOTENCY_TTL gets that answer again instead of
 * pushing a second time. One interface, one implementation per backend (memory.ts, sqlite.ts,
 * redis.ts), as the history store is split.
 *
 * What a key is tied to: a scope, which the caller builds from who is asking and where (the API
 * key's digest and the route, or "loopback" and the route), so two backends never see each other's
 * answers; and a fingerprint of the request, so a key sent again with a different request is
 * refused instead of answered with what another request got.
 */

/** The answer a send gave, kept to be given again. */
export interface IdempotentAnswer {
  /** The HTTP status, 100 to 599. */
  status: number;
  /** The JSON body. It is kept as JSON text, so a duplicate gets a copy, not the same object. */
  body: unknown;
}

/**
 * The first request with its key: it runs the send, then calls exactly one of `finish` (it has an
 * answer to keep) or `abandon` (it pushed nothing, or failed: a retry must run again). Disposing of
 * it (`using`) abandons it unless one of them was called, so a handler that throws cannot leave its
 * key in progress for ever.
 */
export interface FirstRequest extends Disposable {
  kind: "first";
  /**
   * Keeps `answer` for the key and releases the requests waiting on it, which get it as
   * duplicates at once. Resolves once it is as durable as the store makes anything (committed, for
   * SQLite). Rejects, naming the store's file, when it could not be kept: the key is then released
   * as by `abandon`, and the caller should still give this request its answer (the send happened)
   * and report the error. Rejects with a TypeError when the status is not a whole number from 100
   * to 599 or the body is not JSON, and with an Error when called a second time or after `abandon`.
   */
  finish(answer: IdempotentAnswer): Promise<void>;
  /** Releases the key without an answer: the next request with it runs. Calling it again is a no-op. */
  abandon(): void;
}

/**
 * What `begin` found:
 * - `first`: nobody has this key; run the send and finish or abandon.
 * - `duplicate`: a request with it finished within the TTL; give `answer` again, pushing nothing.
 * - `in-progress`: a request with it is still running after the store waited `waitMs` for it
 *   (answer 409 and let the client retry later).
 * - `reused`: the key belongs to a request with another fingerprint, finished or running (answer
 *   422: the client reused a key for a new request).
 */
export type Begun =
  | FirstRequest
  | { kind: "duplicate"; answer: IdempotentAnswer }
  | { kind: "in-progress" }
  | { kind: "reused" };

/** How a store is doing, for /metrics and tests. */
export interface IdempotencyStats {
  /** Answers kept, including expired ones not swept yet. */
  keys: number;
  /** Requests begun and neither finished nor abandoned yet. */
  inProgress: number;
  /** Answers dropped before their TTL because the store held MAX_KEYS. Only grows. */
  evicted: number;
}

/**
 * Where the answers to idempotent requests are kept. Two requests with the same scope and key never
 * both get `first` while either is in progress, and a finished answer is found by every `begin`
 * after `finish` was called, for the TTL (counted from `finish`), unless the bound on kept keys
 * evicted it first (the oldest go first; see IdempotencyOptions.maxKeys).
 */
export interface IdempotencyStore {
  /**
   * Looks `key` up in `scope`. When a request with it is in progress, waits up to `waitMs` (see
   * IdempotencyOptions) for it to finish or be abandoned; an abandoned one lets exactly one waiter
   * become `first`. `fingerprint` identifies the request (a digest of its target and body, say) and
   * is compared exactly. Rejects with a RangeError when `key` is not a valid Idempotency-Key (see
   * `idempotencyKeyProblem`), with an Error naming the file when the store cannot be read, and
   * with an Error once the store is closed (waiters included).
   */
  begin(scope: string, key: string, fingerprint: string): Promise<Begun>;

  /** How the store is doing. */
  stats(): IdempotencyStats;

  /**
   * Writes what is pending, then releases the store's resources and timers. Requests waiting in
   * `begin` reject; a `finish` after it rejects. `close` itself resolves, or rejects naming the file
   * when it cannot be closed.
   */
  close(): Promise<void>;
}

/** What every store is built from. */
export interface IdempotencyOptions {
  /** Seconds an answer is kept after `finish` (IDEMPOTENCY_TTL): more than 0. */
  ttl: number;
  /**
   * Answers kept at most, 1 or more; default MAX_KEYS. When a new answer would pass it, the oldest
   * are dropped, expired ones first: a retry of a dropped key runs again, as after its TTL, and
   * each drop of an unexpired answer is counted in `stats().evicted`. Sends are never refused for
   * it: a busy server keeps its newest answers, which are the ones retries ask for.
   */
  maxKeys?: number;
  /** Milliseconds `begin` waits for a request in progress, 0 or more; default WAIT_MS. */
  waitMs?: number;
  /** The clock for the TTL, in milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /** Milliseconds between sweeps of expired answers; 0 runs none. Default SWEEP_MS. */
  sweepMs?: number;
}

/** IDEMPOTENCY_TTL's default, in seconds: ten minutes, longer than any sane retry loop. */
export const IDEMPOTENCY_TTL = 600;

/**
 * Answers a store keeps by default. An answer costs a few hundred bytes (the longest key is 256
 * characters, a send's body about 100), so 100 000 of them are some 50 MB in memory at worst; they
 * hold every key of 166 idempotent sends a second for the whole default TTL. Raise it for more.
 */
export const MAX_KEYS = 100_000;

/**
 * Milliseconds a request waits for another with its key that is still in progress. A send answers
 * in milliseconds; one still running after 5 s is stuck (a failing disk), and its twin is better
 * told 409 and let go than left holding a connection. Waiting at all is kinder than a 409 at once:
 * a client that timed out and retried gets the first request's answer instead of an error.
 */
export const WAIT_MS = 5_000;

/** Milliseconds between sweeps: expired answers are hidden at once and freed within TTL plus this. */
export const SWEEP_MS = 60_000;

/** The longest Idempotency-Key, in characters. */
export const MAX_KEY_LENGTH = 256;

/** A valid Idempotency-Key: 1 to MAX_KEY_LENGTH printable ASCII characters, no spaces. */
export const IDEMPOTENCY_KEY = new RegExp(`^[\\x21-\\x7e]{1,${MAX_KEY_LENGTH}}$`);

/**
 * Why `key` cannot be an Idempotency-Key, as a sentence for the client; undefined when it can.
 * Printable ASCII only, because an HTTP header carries nothing else reliably and a UUID or a
 * hash fits in it.
 */
export function idempotencyKeyProblem(key: string): string | undefined {
  if (IDEMPOTENCY_KEY.test(key)) return undefined;
  if (key.length === 0) {
    return `Idempotency-Key is empty: send 1 to ${MAX_KEY_LENGTH} characters, a UUID say`;
  }
  if (key.length > MAX_KEY_LENGTH) {
    return `Idempotency-Key is ${key.length} characters long; the limit is ${MAX_KEY_LENGTH}`;
  }
  return "Idempotency-Key may hold only printable ASCII characters without spaces " +
    "(0x21 to 0x7E), a UUID say";
}

/** Throws a RangeError, saying what is allowed, when `options` cannot be a store's options. */
export function checkOptions(options: IdempotencyOptions): void {
  const { ttl, maxKeys = MAX_KEYS, waitMs = WAIT_MS, sweepMs = SWEEP_MS } = options;
  if (!(ttl > 0) || !Number.isFinite(ttl)) {
    throw new RangeError(`idempotency ttl must be a number of seconds above 0, not ${ttl}`);
  }
  if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
    throw new RangeError(`idempotency maxKeys must be a whole number 1 or more, not ${maxKeys}`);
  }
  if (!(waitMs >= 0) || !Number.isFinite(waitMs)) {
    throw new RangeError(`idempotency waitMs must be milliseconds, 0 or more, not ${waitMs}`);
  }
  if (!(sweepMs >= 0) || !Number.isFinite(sweepMs)) {
    throw new RangeError(`idempotency sweepMs must be milliseconds, 0 or more, not ${sweepMs}`);
  }
}
