/**
 * The Redis idempotency store, on ioredis: the keys of a cluster of servers, kept where all of them
 * can see them, so that a retry that lands on another node than the first request is still a
 * duplicate. It answers the same contract as the memory and SQLite stores (contract.ts).
 *
 * Keys, all under `prefix` (default "deno-pusher:") so that several deployments share a Redis:
 *   idempotency:key:<scope>\0<key>  hash, one per key of a scope (scoped as local.ts's keyOf):
 *                                   while a request runs, {fingerprint, token} (its claim, which
 *                                   expires after `claimMs`: PX); once it finished, {fingerprint,
 *                                   status, body, createdAt} (its answer, which expires after
 *                                   IDEMPOTENCY_TTL: PX)
 *   idempotency:index               sorted set: the `<scope>\0<key>` of every kept answer, scored by
 *                                   its createdAt, so the bound (maxKeys) and the sweep find the
 *                                   oldest without reading every key
 *   idempotency:evicted             how many unexpired answers the bound dropped, ever
 *
 * Every step is one Lua script (sent once per connection, then by its SHA), so two nodes can never
 * both claim a key: `begin` looks the key up and claims it in one step, `finish` replaces the
 * claim by the answer only if the claim is still its own, `abandon` deletes only its own claim.
 *
 * How a waiter learns the answer: by polling. A `begin` that finds the key claimed looks again
 * after POLL_MIN_MS, doubling up to POLL_MAX_MS, until `waitMs` has passed; a request of this node
 * that finishes or is abandoned wakes this node's waiters at once. So a twin on another node gets
 * its answer within POLL_MAX_MS of the `finish`, at the cost of at most a few dozen small scripts
 * per waiter: retries of one key are rare, and the wait is bounded, which keyspace notifications
 * or a pub/sub channel (a second connection per node, and a server setting) would not simplify.
 *
 * A node that dies mid-request leaves its claim behind; it expires after `claimMs` (CLAIM_MS),
 * and then a retry runs. The answer's TTL is Redis's own (PX), counted from `finish`; the answer
 * also carries its createdAt, and one older than the store's clock allows is treated as gone, so
 * a test's clock (and a node whose clock is ahead) sees it expire as the other stores do.
 *
 * For one Redis (or a primary with replicas), not Redis Cluster: the scripts touch the shared
 * index beside a key's hash, and the bound deletes hashes it computes from the index.
 */
import { Redis } from "ioredis";
import { errorMessage } from "../sqlite.ts";
import {
  connectionOptions,
  DEFAULT_PREFIX,
  quit,
  redactedUrl,
  reportErrors,
} from "../engine/redis.ts";
import { randomUUID } from "node:crypto";
import { clearInterval, setInterval } from "node:timers";
import { encodeAnswer, keyOf } from "./local.ts";
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

/**
 * Milliseconds a claim lives in Redis when its node neither finishes nor abandons it (the node
 * died). A send answers in milliseconds and WAIT_MS already calls one that runs 5 s stuck; a
 * minute leaves room for a broker that retries, and a crashed node's keys come free within it.
 * A request that finishes later than this finds its claim lapsed, and its `finish` rejects.
 */
export const CLAIM_MS = 60_000;

/** Milliseconds a waiter first waits before it looks again at a key in progress on another node. */
export const POLL_MIN_MS = 5;

/**
 * Milliseconds a waiter waits at most between two looks (the back-off doubles from POLL_MIN_MS up
 * to it): how late a twin on another node learns of a `finish`. A waiter makes about
 * WAIT_MS / POLL_MAX_MS + 5 looks, some fifty, before it is answered in-progress.
 */
export const POLL_MAX_MS = 100;

/** Expired answers a sweep deletes at most in one script: bounds how long it holds Redis. */
export const SWEEP_KEYS = 10_000;

/** Answers one `finish` deletes at most, expired or evicted: bounds how long it holds Redis. */
const DROPS_PER_FINISH = 1000;

/** What a Redis store is built from. */
export interface RedisIdempotencyOptions extends IdempotencyOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every key; every node of a deployment uses the same. Default DEFAULT_PREFIX. */
  prefix?: string;
  /** Milliseconds a dead node's claim lives, more than 0. Default CLAIM_MS. */
  claimMs?: number;
  /**
   * Told, naming the Redis, when the connection fails (it is tried again on its own), when a timed
   * sweep fails and when an abandon could not reach Redis (the claim expires after `claimMs`).
   * Default: nothing.
   */
  onError?: (err: Error) => void;
}

/** Lua the scripts share: drops index members and their answers. */
const LUA_COMMON = `
local function drop(index, prefix, members)
  for _, m in ipairs(members) do
    redis.call('DEL', prefix .. m)
    redis.call('ZREM', index, m)
  end
  return #members
end
local function counts(index, evicted)
  return redis.call('ZCARD', index), tonumber(redis.call('GET', evicted) or '0')
end
`;

/**
 * KEYS: hash, index, evicted. ARGV: member, fingerprint, token, cutoff (ms), claimMs. Answers
 * {kind, keys, evicted[, status, body]}: "reused" or "in-progress" for a claim, "reused" or
 * "duplicate" for an answer kept after cutoff, else "first" once the key is claimed for token.
 */
const BEGIN_LUA = LUA_COMMON + `
local h = redis.call('HMGET', KEYS[1], 'fingerprint', 'token', 'status', 'body', 'createdAt')
local keys, evicted = counts(KEYS[2], KEYS[3])
if h[1] then
  if h[2] then
    if h[1] ~= ARGV[2] then return {'reused', keys, evicted} end
    return {'in-progress', keys, evicted}
  end
  if tonumber(h[5]) > tonumber(ARGV[4]) then
    if h[1] ~= ARGV[2] then return {'reused', keys, evicted} end
    return {'duplicate', keys, evicted, h[3], h[4]}
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'token', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
keys, evicted = counts(KEYS[2], KEYS[3])
return {'first', keys, evicted}
`;

/**
 * KEYS: hash, index, evicted. ARGV: member, token, fingerprint, status, body, createdAt, ttl (ms),
 * cutoff (ms), maxKeys, the hash keys' prefix. Replaces the claim of token (or, when it lapsed and
 * nobody took the key, nothing) by the answer, then trims the index: expired answers first, then
 * the oldest past maxKeys, counted as evicted. Answers {kept (1 or 0), keys, evicted}.
 */
const FINISH_LUA = LUA_COMMON + `
local holder = redis.call('HGET', KEYS[1], 'token')
if (holder and holder ~= ARGV[2]) or (not holder and redis.call('EXISTS', KEYS[1]) == 1) then
  local keys, evicted = counts(KEYS[2], KEYS[3])
  return {0, keys, evicted}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[3], 'status', ARGV[4], 'body', ARGV[5],
  'createdAt', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
local most = ${DROPS_PER_FINISH}
-- Up to two expired ones at each finish: a busy server frees them as fast as they come.
local dropped = drop(KEYS[2], ARGV[10],
  redis.call('ZRANGE', KEYS[2], '-inf', ARGV[8], 'BYSCORE', 'LIMIT', 0, 2))
local excess = math.min(redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[9]), most - dropped)
if excess > 0 then
  excess = excess - drop(KEYS[2], ARGV[10],
    redis.call('ZRANGE', KEYS[2], '-inf', ARGV[8], 'BYSCORE', 'LIMIT', 0, excess))
end
if excess > 0 then
  redis.call('INCRBY', KEYS[3],
    drop(KEYS[2], ARGV[10], redis.call('ZRANGE', KEYS[2], 0, excess - 1)))
end
local keys, evicted = counts(KEYS[2], KEYS[3])
return {1, keys, evicted}
`;

/** KEYS: hash. ARGV: token. Deletes the claim if it is still token's. */
const ABANDON_LUA = `
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`;

/**
 * KEYS: index, evicted. ARGV: cutoff (ms), the hash keys' prefix, how many at most. Deletes the
 * answers kept at or before cutoff; answers {keys, evicted}.
 */
const SWEEP_LUA = LUA_COMMON + `
drop(KEYS[1], ARGV[2], redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[3])))
local keys, evicted = counts(KEYS[1], KEYS[2])
return {keys, evicted}
`;

/** The scripts as ioredis's defineCommand makes them. */
interface Scripts {
  idempotencyBegin(...args: string[]): Promise<[string, number, number, string?, string?]>;
  idempotencyFinish(...args: string[]): Promise<[number, number, number]>;
  idempotencyAbandon(...args: string[]): Promise<number>;
  idempotencySweep(...args: string[]): Promise<[number, number]>;
}

/**
 * Keeps the keys in Redis, shared by every store on the same Redis and prefix: each such store
 * stands for a node, and what one claims or answers, the others see. The constructor connects in
 * the background; calls made before the connection is up wait for it (within
 * REDIS_RETRIES_PER_COMMAND reconnections), and while Redis is down `begin` and `finish` reject,
 * naming the Redis URL (never its password), so that the server answers 503.
 *
 * `stats()` is this node's view: `inProgress` counts this node's requests; `keys` and `evicted`
 * are the cluster's, as Redis reported them at this node's last call.
 */
export class RedisIdempotency implements IdempotencyStore {
  readonly #redis: Redis & Scripts;
  /** The URL without its password. */
  readonly #name: string;
  readonly #ttlMs: number;
  readonly #claimMs: number;
  readonly #maxKeys: number;
  readonly #waitMs: number;
  readonly #now: () => number;
  readonly #onError: (err: Error) => void;
  /** Where the hash keys start: the prefix and `idempotency:key:`. */
  readonly #keyPrefix: string;
  readonly #index: string;
  readonly #evictedKey: string;
  /** This node's requests in progress: their keyOf and their tokens, for `close` to release. */
  readonly #claims = new Map<string, string>();
  /** This node's waiters by keyOf: each wakes to look again at once. */
  readonly #waiters = new Map<string, Set<() => void>>();
  /**
   * Finishes and releases sent and not answered yet: `close` waits for them, since QUIT does not
   * queue behind commands that ioredis is still gathering into a pipeline.
   */
  readonly #writing = new Set<Promise<unknown>>();
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  #keys = 0;
  #evicted = 0;
  #closed = false;
  #closing: Promise<void> | undefined;

  /**
   * Throws a RangeError for options out of range, and a TypeError when `url` is not a redis:// or
   * rediss:// URL. Does not wait for the connection: see the class.
   */
  constructor(options: RedisIdempotencyOptions) {
    checkOptions(options);
    const claimMs = options.claimMs ?? CLAIM_MS;
    if (!Number.isSafeInteger(claimMs) || claimMs < 1) {
      throw new RangeError(`idempotency claimMs must be a whole number 1 or more, not ${claimMs}`);
    }
    this.#name = redactedUrl(options.url);
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#ttlMs = Math.max(1, Math.round(options.ttl * 1000));
    this.#claimMs = claimMs;
    this.#maxKeys = options.maxKeys ?? MAX_KEYS;
    this.#waitMs = options.waitMs ?? WAIT_MS;
    this.#now = options.now ?? Date.now;
    this.#onError = options.onError ?? (() => {});
    this.#keyPrefix = `${prefix}idempotency:key:`;
    this.#index = `${prefix}idempotency:index`;
    this.#evictedKey = `${prefix}idempotency:evicted`;
    const redis = new Redis(options.url, connectionOptions("deno-pusher-idempotency"));
    redis.defineCommand("idempotencyBegin", { numberOfKeys: 3, lua: BEGIN_LUA });
    redis.defineCommand("idempotencyFinish", { numberOfKeys: 3, lua: FINISH_LUA });
    redis.defineCommand("idempotencyAbandon", { numberOfKeys: 1, lua: ABANDON_LUA });
    redis.defineCommand("idempotencySweep", { numberOfKeys: 2, lua: SWEEP_LUA });
    this.#redis = redis as Redis & Scripts;
    reportErrors(redis, this.#name, this.#onError);
    const sweepMs = options.sweepMs ?? SWEEP_MS;
    if (sweepMs > 0) {
      this.#sweeper = setInterval(() => this.sweep().catch(this.#onError), sweepMs);
      // A sweep frees Redis's memory; it is no reason to keep a process alive.
      this.#sweeper.unref();
    }
  }

  async begin(scope: string, key: string, fingerprint: string): Promise<Begun> {
    const problem = idempotencyKeyProblem(key);
    if (problem) throw new RangeError(problem);
    const id = keyOf(scope, key);
    const deadline = performance.now() + this.#waitMs;
    let pause = POLL_MIN_MS;
    for (;;) {
      await this.#rejectIfClosed();
      const token = randomUUID();
      let found: Awaited<ReturnType<Scripts["idempotencyBegin"]>>;
      try {
        found = await this.#redis.idempotencyBegin(
          this.#keyPrefix + id,
          this.#index,
          this.#evictedKey,
          id,
          fingerprint,
          token,
          String(this.#now() - this.#ttlMs),
          String(this.#claimMs),
        );
      } catch (err) {
        await this.#rejectIfClosed();
        throw this.#error(`cannot look Idempotency-Key ${key} up`, err);
      }
      const [kind, keys, evicted, status, body] = found;
      this.#counted(keys, evicted);
      if (kind === "first") {
        if (this.#closed) {
          // Closed while the claim was on its way: give it back.
          this.#release(id, token);
          await this.#rejectIfClosed();
        }
        return this.#claim(id, key, fingerprint, token);
      }
      await this.#rejectIfClosed();
      if (kind === "duplicate") {
        return { kind, answer: { status: Number(status), body: JSON.parse(body!) } };
      }
      if (kind === "reused") return { kind };
      const left = deadline - performance.now();
      if (left <= 0) return { kind: "in-progress" };
      await this.#sleep(id, Math.min(pause, left));
      pause = Math.min(pause * 2, POLL_MAX_MS);
    }
  }

  stats(): IdempotencyStats {
    return { keys: this.#keys, inProgress: this.#claims.size, evicted: this.#evicted };
  }

  /**
   * Deletes up to SWEEP_KEYS expired answers in one script; the timer calls it every `sweepMs`.
   * Resolves once Redis has answered (stats are up to date then); rejects, naming the Redis, when
   * the script failed.
   */
  async sweep(): Promise<void> {
    this.#checkOpen();
    try {
      const [keys, evicted] = await this.#redis.idempotencySweep(
        this.#index,
        this.#evictedKey,
        String(this.#now() - this.#ttlMs),
        this.#keyPrefix,
        String(SWEEP_KEYS),
      );
      this.#counted(keys, evicted);
    } catch (err) {
      throw this.#error("cannot sweep expired keys", err);
    }
  }

  /**
   * Resolves once Redis has answered every command this store sent before the call: a PING down
   * the same connection, which Redis answers in order. For tests that must know what reached Redis.
   */
  async roundTrip(): Promise<void> {
    await this.#redis.ping();
  }

  close(): Promise<void> {
    return this.#closing ??= this.#close();
  }

  async #close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    // Waiters wake, find the store closed and reject once it is.
    for (const wakers of this.#waiters.values()) for (const wake of wakers) wake();
    // This node's requests will not finish: let the other nodes have their keys now.
    for (const [id, token] of this.#claims) this.#release(id, token);
    this.#claims.clear();
    await Promise.allSettled(this.#writing);
    await quit(this.#redis);
  }

  /** The first request of `id`, which holds its claim under `token`. */
  #claim(id: string, key: string, fingerprint: string, token: string): FirstRequest {
    this.#claims.set(id, token);
    let open = true;
    /** Forgets the claim here and wakes this node's waiters; the caller tells Redis. */
    const settle = () => {
      open = false;
      if (this.#claims.get(id) === token) this.#claims.delete(id);
      for (const wake of this.#waiters.get(id) ?? []) wake();
    };
    const abandon = () => {
      if (!open) return;
      const closed = this.#closed;
      settle();
      // After a close, `close` gave the claim back already.
      if (!closed) this.#release(id, token);
    };
    return {
      kind: "first",
      finish: async (answer: IdempotentAnswer) => {
        if (!open) {
          throw new Error(`Idempotency-Key ${key}: finish was called after finish or abandon`);
        }
        let encoded: { status: number; body: string };
        try {
          this.#checkOpen();
          encoded = encodeAnswer(answer);
        } catch (err) {
          abandon();
          throw err;
        }
        open = false;
        // Sent before the waiters wake, so their next look, down the same connection, finds it.
        const kept = this.#track(this.#redis.idempotencyFinish(
          this.#keyPrefix + id,
          this.#index,
          this.#evictedKey,
          id,
          token,
          fingerprint,
          String(encoded.status),
          encoded.body,
          String(this.#now()),
          String(this.#ttlMs),
          String(this.#now() - this.#ttlMs),
          String(this.#maxKeys),
          this.#keyPrefix,
        ));
        settle();
        let done: number;
        try {
          const [ok, keys, evicted] = await kept;
          this.#counted(keys, evicted);
          done = ok;
        } catch (err) {
          // Not kept: give the key back, so that a retry runs (if Redis is reachable again).
          this.#release(id, token);
          throw this.#error(`cannot keep the answer of Idempotency-Key ${key}`, err);
        }
        if (done !== 1) {
          throw this.#error(
            `cannot keep the answer of Idempotency-Key ${key}`,
            `its claim lapsed after ${this.#claimMs} ms and another request took the key`,
          );
        }
      },
      abandon,
      [Symbol.dispose]: abandon,
    };
  }

  /** Deletes the claim of `token` in Redis, telling onError when it cannot. */
  #release(id: string, token: string): void {
    this.#track(this.#redis.idempotencyAbandon(this.#keyPrefix + id, token)).catch((err) => {
      this.#onError(
        this.#error(`cannot release a key; it frees itself within ${this.#claimMs} ms`, err),
      );
    });
  }

  /** `command`, which `close` waits for until Redis has answered it. */
  #track<T>(command: Promise<T>): Promise<T> {
    this.#writing.add(command);
    const done = () => void this.#writing.delete(command);
    command.then(done, done);
    return command;
  }

  /** Waits `ms`, or less when a request of this node with `id` settles or the store closes. */
  #sleep(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let wakers = this.#waiters.get(id);
      if (!wakers) this.#waiters.set(id, wakers = new Set());
      const wake = () => {
        clearTimeout(timer);
        wakers.delete(wake);
        if (wakers.size === 0 && this.#waiters.get(id) === wakers) this.#waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      wakers.add(wake);
    });
  }

  /** Notes the counts Redis reported. */
  #counted(keys: number, evicted: number): void {
    this.#keys = Number(keys);
    this.#evicted = Math.max(this.#evicted, Number(evicted));
  }

  /** An error naming the Redis and what failed. */
  #error(what: string, err: unknown): Error {
    return new Error(`redis ${this.#name}: ${what}: ${errorMessage(err)}`, { cause: err });
  }

  /**
   * Rejects, as `#checkOpen` throws, once the store is closed: a waiter that finds it closing
   * rejects when `close` has finished, not before.
   */
  async #rejectIfClosed(): Promise<void> {
    if (!this.#closed) return;
    await this.#closing?.catch(() => {});
    this.#checkOpen();
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`the Redis idempotency store on ${this.#name} is closed`);
  }
}
