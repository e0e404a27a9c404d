/**
 * The webhook outbox on Redis, on ioredis: for a cluster (REDIS_URL), one outbox shared by every
 * node, so that a node that dies leaves its undelivered events for the others to deliver. It keeps
 * the contract of outbox.ts, and adds a lease for the nodes' deliverers, which all read it.
 *
 * The lease: several nodes' deliverers ask `due` for the same URL. `due` claims each queue it
 * answers rows of, for LEASE_MS after its `now`, by pushing the queue's due time to then: no other
 * `due` (of this node or another) answers its rows meanwhile, so two nodes never POST one queue at
 * once and its order holds. `delivered` and `retry` end the lease (the queue comes due at `now`,
 * or at its backoff). A node that dies, or an answer that is never recorded, leaves its queues
 * claimed until the lease ends; then any node delivers them (again: delivery is at least once, as
 * it is after a restart of the embedded outbox). An answer recorded after its lease ended, when
 * another node has claimed the queue since, removes the rows it delivered but leaves that node's
 * lease alone. `close` ends this node's leases at once. The times are the callers' clocks: the
 * nodes' must agree to well within LEASE_MS (NTP does).
 *
 * Writes: `add` only queues its rows in memory; they go to Redis in one script at the next turn of
 * the event loop (or at once when MAX_BATCH_ROWS wait), one write at a time, so a queue's rows get
 * their places in the order they were added. A write that fails (Redis down) keeps its rows in
 * memory, within the bound, and is tried again WRITE_RETRY_MS later; what is still unwritten when
 * the outbox closes is lost, and reported. A queue's order is the order its rows reach Redis: the
 * events of one uid that two nodes add at the same moment have none between them. Every read is
 * sent after the rows added before it, down the same connection, so it sees them. A write that
 * timed out but reached Redis is written again: its events may be delivered twice, which a
 * receiver that drops an `id` it saw already ignores.
 *
 * Keys, all under `prefix` (default "deno-pusher:") and `webhooks:`, so that several deployments
 * share a Redis:
 *   seq                   counter: the last row's seq; started from the clock (ms × 1000) when
 *                         missing, so that a Redis that lost its data never reuses a seq a node
 *                         may still hold
 *   row:<seq>             hash: url, key (its queue), event (the JSON as POSTed), at (createdAt),
 *                         attempts (absent until the first failure)
 *   rows                  sorted set: every seq, scored by itself: the count, and the oldest for
 *                         the bound
 *   created               sorted set: every seq, scored by its createdAt, for `expire`
 *   queue:<n>:<url><key>  sorted set: a queue's seqs, scored by themselves (n: the URL's length)
 *   queues:<url>          hash: key → the queue's member in due:<url>
 *   due:<url>             sorted set: the URL's queues, scored by when the head is due (0 for a
 *                         new queue; a lease's end while claimed); a member is the seq that opened
 *                         the queue, zero-padded, then `:` and the key, so that queues due at the
 *                         same time go oldest first
 *   leases:<url>          hash: key → the token of the outbox that claimed the queue last
 *
 * Every step is one Lua script (sent once per connection, then by its SHA). For one Redis (or a
 * primary with replicas), not Redis Cluster: the scripts touch keys they compute.
 *
 * Counts: `size()` and `stats().rows` are the cluster's rows, as Redis reported them at this
 * node's last answer, plus this node's rows not written yet. `dropped` and `expired` count what
 * this node's own writes and `expire` calls removed, so that the nodes' metrics add up. The bound,
 * maxEvents, is the cluster's: give every node the same.
 */
import { randomUUID } from "node:crypto";
import { clearImmediate, setImmediate } from "node:timers";
import { Redis } from "ioredis";
import {
  connectionOptions,
  DEFAULT_PREFIX,
  quit,
  redactedUrl,
  reportErrors,
} from "../engine/redis.ts";
import { errorMessage } from "../sqlite.ts";
import type { WebhookEvent } from "./events.ts";
import {
  count,
  DropBursts,
  MAX_OUTBOX_EVENTS,
  orderKey,
  type Outbox,
  type OutboxOptions,
  type OutboxRow,
  type OutboxStats,
} from "./outbox.ts";

/**
 * Milliseconds a queue stays claimed by the `due` that answered its rows: more than the
 * deliverer's DEFAULT_TIMEOUT_MS (10 s) plus the time to record the answer, so that a slow receiver
 * does not see the same queue from two nodes. How late a dead node's events go out, at most.
 */
export const LEASE_MS = 30_000;

/** Rows one write sends at most: bounds one script's hold on Redis (some milliseconds). */
export const MAX_BATCH_ROWS = 1000;

/** Rows one `expire` removes at most: bounds one script's hold on Redis. More go at the next. */
export const EXPIRE_ROWS = 10_000;

/**
 * Queues one step of `resume` looks at: bounds one script's hold on Redis, as EXPIRE_ROWS does;
 * `resume` takes as many steps as the URL has queues waiting.
 */
export const RESUME_QUEUES = 1000;

/** Milliseconds before a failed write is tried again: a Redis that is down is not retried hot. */
export const WRITE_RETRY_MS = 1000;

/** What a Redis outbox is built from. */
export interface RedisOutboxOptions extends OutboxOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every key; every node of a deployment uses the same. Default DEFAULT_PREFIX. */
  prefix?: string;
}

/**
 * Lua the scripts share. ARGV[1] is always the keys' prefix (ending `webhooks:`). A number goes
 * to Redis with %.17g: Lua's own conversion keeps 14 digits, and seqs have 16.
 */
const LUA_COMMON = `
local P = ARGV[1]
local function num(n) return string.format('%.17g', n) end
local function queueKey(url, key) return P .. 'queue:' .. #url .. ':' .. url .. key end
-- Deletes the queue of url and key if it has no rows left; answers whether it did.
local function closeIfEmpty(url, key)
  if redis.call('EXISTS', queueKey(url, key)) == 1 then return false end
  local m = redis.call('HGET', P .. 'queues:' .. url, key)
  if m then
    redis.call('ZREM', P .. 'due:' .. url, m)
    redis.call('HDEL', P .. 'queues:' .. url, key)
  end
  redis.call('HDEL', P .. 'leases:' .. url, key)
  return true
end
-- Removes row seq, and its queue if it was the last; answers whether it was there.
local function removeRow(seq)
  local row = redis.call('HMGET', P .. 'row:' .. seq, 'url', 'key')
  if not row[1] then return false end
  redis.call('DEL', P .. 'row:' .. seq)
  redis.call('ZREM', P .. 'rows', seq)
  redis.call('ZREM', P .. 'created', seq)
  redis.call('ZREM', queueKey(row[1], row[2]), seq)
  closeIfEmpty(row[1], row[2])
  return true
end
-- Ends the lease of token on the queue, which comes due at 'at'; a lease of another is left.
local function release(url, key, at, token)
  local leases = P .. 'leases:' .. url
  local holder = redis.call('HGET', leases, key)
  if holder and holder ~= token then return false end
  local m = redis.call('HGET', P .. 'queues:' .. url, key)
  if m then redis.call('ZADD', P .. 'due:' .. url, at, m) end
  redis.call('HDEL', leases, key)
  return true
end
`;

/**
 * ARGV: prefix, maxEvents, the seq to start from, then url, key, event, createdAt of each row.
 * Adds the rows, opening their queues (due at once), then drops the oldest rows past maxEvents.
 * Answers {dropped, rows}.
 */
const ADD_LUA = LUA_COMMON + `
if redis.call('EXISTS', P .. 'seq') == 0 then redis.call('SET', P .. 'seq', ARGV[3]) end
for i = 4, #ARGV, 4 do
  local url, key, at = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  local seq = num(redis.call('INCR', P .. 'seq'))
  redis.call('HSET', P .. 'row:' .. seq, 'url', url, 'key', key, 'event', ARGV[i + 2], 'at', at)
  redis.call('ZADD', P .. 'rows', seq, seq)
  redis.call('ZADD', P .. 'created', at, seq)
  redis.call('ZADD', queueKey(url, key), seq, seq)
  if redis.call('HEXISTS', P .. 'queues:' .. url, key) == 0 then
    -- A queue that exists keeps its due time: a new row waits behind a failing head.
    local m = string.rep('0', 17 - #seq) .. seq .. ':' .. key
    redis.call('HSET', P .. 'queues:' .. url, key, m)
    redis.call('ZADD', P .. 'due:' .. url, 0, m)
  end
end
local dropped = 0
local over = redis.call('ZCARD', P .. 'rows') - tonumber(ARGV[2])
if over > 0 then
  for _, seq in ipairs(redis.call('ZRANGE', P .. 'rows', 0, over - 1)) do
    removeRow(seq)
    dropped = dropped + 1
  end
end
return {dropped, redis.call('ZCARD', P .. 'rows')}
`;

/**
 * ARGV: prefix, url, now, limit, the lease's end, token. Answers seq, key, event, createdAt,
 * attempts of up to limit rows of the queues due at now, due the longest first, each from its
 * head; claims each queue it answers rows of until the lease's end, for token.
 */
const DUE_LUA = LUA_COMMON + `
local url, limit = ARGV[2], tonumber(ARGV[4])
local due = P .. 'due:' .. url
local out, n = {}, 0
for _, m in ipairs(redis.call('ZRANGE', due, '-inf', ARGV[3], 'BYSCORE', 'LIMIT', 0, limit)) do
  local key = string.sub(m, 19)
  local seqs = redis.call('ZRANGE', queueKey(url, key), 0, limit - n - 1)
  for _, seq in ipairs(seqs) do
    local row = redis.call('HMGET', P .. 'row:' .. seq, 'event', 'at', 'attempts')
    if row[1] then
      out[#out + 1] = seq
      out[#out + 1] = key
      out[#out + 1] = row[1]
      out[#out + 1] = row[2]
      out[#out + 1] = row[3] or '0'
      n = n + 1
    else
      -- Its row was evicted (a Redis with a maxmemory policy that evicts): forget it.
      redis.call('ZREM', queueKey(url, key), seq)
      redis.call('ZREM', P .. 'rows', seq)
      redis.call('ZREM', P .. 'created', seq)
    end
  end
  if redis.call('EXISTS', queueKey(url, key)) == 0 then
    closeIfEmpty(url, key)
  else
    redis.call('ZADD', due, ARGV[5], m)
    redis.call('HSET', P .. 'leases:' .. url, key, ARGV[6])
  end
  if n >= limit then break end
end
return out
`;

/**
 * ARGV: prefix, url, now, token, then seq, key of each row. Removes the rows of url; each queue
 * with rows left comes due at now, unless another outbox has claimed it since. Answers
 * {removed, rows}.
 */
const DELIVERED_LUA = LUA_COMMON + `
local url, now, token = ARGV[2], ARGV[3], ARGV[4]
local removed, keys = 0, {}
for i = 5, #ARGV, 2 do
  if redis.call('HGET', P .. 'row:' .. ARGV[i], 'url') == url and removeRow(ARGV[i]) then
    removed = removed + 1
  end
  keys[ARGV[i + 1]] = true
end
for key in pairs(keys) do
  if not closeIfEmpty(url, key) then release(url, key, now, token) end
end
return {removed, redis.call('ZCARD', P .. 'rows')}
`;

/**
 * ARGV: prefix, url, token, the number of rows, their seqs, then key, next time of each queue.
 * Counts a failed delivery of each row whose queue token still holds (or nobody does), and sets
 * those queues' due times. Answers the rows.
 */
const RETRY_LUA = LUA_COMMON + `
local url, token, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
local mine = {}
for i = 5 + n, #ARGV, 2 do
  if release(url, ARGV[i], ARGV[i + 1], token) then mine[ARGV[i]] = true end
end
for i = 5, 4 + n do
  local row = redis.call('HMGET', P .. 'row:' .. ARGV[i], 'url', 'key')
  if row[1] == url and mine[row[2]] then
    redis.call('HINCRBY', P .. 'row:' .. ARGV[i], 'attempts', 1)
  end
end
return redis.call('ZCARD', P .. 'rows')
`;

/**
 * ARGV: prefix, url, now, token, then keys. Ends token's leases on those queues of url: they come
 * due at now. Answers 1.
 */
const RELEASE_LUA = LUA_COMMON + `
for i = 5, #ARGV do release(ARGV[2], ARGV[i], ARGV[3], ARGV[4]) end
return 1
`;

/**
 * ARGV: prefix, url, now, how many at most, how many to pass over first. Of url's queues due after
 * now, in order of their due times, brings those nobody has claimed (no lease) forward to now.
 * Answers {brought forward, looked at}: the leased ones stay where they were, so the caller's next
 * call passes over them.
 */
const RESUME_LUA = LUA_COMMON + `
local due, leases = P .. 'due:' .. ARGV[2], P .. 'leases:' .. ARGV[2]
local waiting = redis.call('ZRANGE', due, '(' .. ARGV[3], '+inf', 'BYSCORE', 'LIMIT',
  tonumber(ARGV[5]), tonumber(ARGV[4]))
local brought = 0
for _, m in ipairs(waiting) do
  if redis.call('HEXISTS', leases, string.sub(m, 19)) == 0 then
    redis.call('ZADD', due, ARGV[3], m)
    brought = brought + 1
  end
end
return {brought, #waiting}
`;

/**
 * ARGV: prefix, cutoff (ms), how many at most. Removes the rows created at or before cutoff, the
 * oldest first. Answers {removed, rows}.
 */
const EXPIRE_LUA = LUA_COMMON + `
local seqs = redis.call('ZRANGE', P .. 'created', '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[3]))
for _, seq in ipairs(seqs) do removeRow(seq) end
return {#seqs, redis.call('ZCARD', P .. 'rows')}
`;

/** The scripts as ioredis's defineCommand makes them: each resolves with the script's answer. */
interface Scripts {
  webhooksAdd(...args: string[]): Promise<[number, number]>;
  webhooksDue(...args: string[]): Promise<string[]>;
  webhooksDelivered(...args: string[]): Promise<[number, number]>;
  webhooksRetry(...args: string[]): Promise<number>;
  webhooksRelease(...args: string[]): Promise<number>;
  webhooksResume(...args: string[]): Promise<[number, number]>;
  webhooksExpire(...args: string[]): Promise<[number, number]>;
}

/** A row waiting in memory for its write. */
interface PendingRow {
  /** Its place among the rows this outbox was given, from 1: `written` waits by it. */
  ordinal: number;
  url: string;
  key: string;
  json: string;
  createdAt: number;
}

/**
 * An outbox in Redis, shared by every RedisOutbox on the same Redis and prefix: each stands for a
 * node, and what one adds, the others deliver. One deliverer per outbox, as the contract says; the
 * lease (see the file's header) keeps the nodes' deliverers off each other's queues. The
 * constructor connects in the background; while Redis is down, `add` keeps its rows in memory (see
 * the file's header) and the other methods reject, naming the Redis URL (never its password).
 */
export class RedisOutbox implements Outbox {
  readonly #redis: Redis & Scripts;
  /** How errors name the outbox: its Redis URL, without the password. */
  readonly #name: string;
  /** Where its keys start: the prefix and `webhooks:`. */
  readonly #keys: string;
  /** Names this outbox's leases. */
  readonly #token = randomUUID();
  readonly #maxEvents: number;
  /** The rows dropped to stay within maxEvents, reported once per burst. */
  readonly #drops: DropBursts;
  readonly #onError: (err: Error) => void;
  /** Rows of the next write, oldest first. */
  #pending: PendingRow[] = [];
  /** Rows of the write in flight. */
  #sending: PendingRow[] = [];
  /** The write in flight; settles once its answer is handled, and never rejects. */
  #writing: Promise<void> | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;
  /** Set while a failed write waits to be tried again; adds then only queue. */
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** The ordinal of the last row `add` queued. */
  #added = 0;
  /** `written` calls waiting, each for the rows through its ordinal. */
  #waiters: { through: number; resolve: () => void }[] = [];
  /** Rows in Redis, as its last answer counted them. */
  #rows = 0;
  /** The queues this outbox holds leases on, by URL: `close` ends them. */
  readonly #leases = new Map<string, Set<string>>();
  #expired = 0;
  /** Whether a write failed and none succeeded since: its error was reported. */
  #failing = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  /**
   * Throws a RangeError for options out of range, and a TypeError when `url` is not a redis:// or
   * rediss:// URL. Does not wait for the connection: see the class.
   */
  constructor(options: RedisOutboxOptions) {
    const maxEvents = options.maxEvents ?? MAX_OUTBOX_EVENTS;
    if (!Number.isSafeInteger(maxEvents) || maxEvents < 1) {
      throw new RangeError(`maxEvents must be a whole number 1 or more, not ${maxEvents}`);
    }
    this.#name = `webhook outbox on ${redactedUrl(options.url)}`;
    this.#keys = `${options.prefix ?? DEFAULT_PREFIX}webhooks:`;
    this.#maxEvents = maxEvents;
    this.#onError = options.onError ?? (() => {});
    this.#drops = new DropBursts(this.#name, maxEvents, this.#onError);
    const redis = new Redis(options.url, connectionOptions("deno-pusher-webhooks"));
    redis.defineCommand("webhooksAdd", { numberOfKeys: 0, lua: ADD_LUA });
    redis.defineCommand("webhooksDue", { numberOfKeys: 0, lua: DUE_LUA });
    redis.defineCommand("webhooksDelivered", { numberOfKeys: 0, lua: DELIVERED_LUA });
    redis.defineCommand("webhooksRetry", { numberOfKeys: 0, lua: RETRY_LUA });
    redis.defineCommand("webhooksRelease", { numberOfKeys: 0, lua: RELEASE_LUA });
    redis.defineCommand("webhooksResume", { numberOfKeys: 0, lua: RESUME_LUA });
    redis.defineCommand("webhooksExpire", { numberOfKeys: 0, lua: EXPIRE_LUA });
    this.#redis = redis as Redis & Scripts;
    reportErrors(redis, redactedUrl(options.url), this.#onError);
    // The first command on the connection, so answered before any script: what size starts from.
    redis.zcard(`${this.#keys}rows`).then((n) => void (this.#rows = n), () => {});
  }

  add(event: WebhookEvent, urls: readonly string[]): void {
    this.#checkOpen();
    if (urls.length === 0) return;
    const json = JSON.stringify(event);
    const key = orderKey(event);
    const createdAt = Number.isSafeInteger(event.ts) ? event.ts : Date.now();
    for (const url of urls) {
      this.#pending.push({ ordinal: ++this.#added, url, key, json, createdAt });
    }
    if (this.#retryTimer !== undefined) this.#boundPending();
    else if (this.#pending.length >= MAX_BATCH_ROWS) this.#flush();
    else this.#immediate ??= setImmediate(() => this.#flush());
  }

  due(url: string, now: number, limit: number): Promise<OutboxRow[]> {
    return this.#call("read the due events", async () => {
      const flat = await this.#redis.webhooksDue(
        this.#keys,
        url,
        String(now),
        String(limit),
        String(now + LEASE_MS),
        this.#token,
      );
      const rows: OutboxRow[] = [];
      for (let i = 0; i < flat.length; i += 5) {
        rows.push({
          seq: Number(flat[i]),
          key: flat[i + 1],
          json: flat[i + 2],
          createdAt: Number(flat[i + 3]),
          attempts: Number(flat[i + 4]),
        });
        this.#leased(url, flat[i + 1], true);
      }
      return rows;
    });
  }

  delivered(url: string, rows: readonly OutboxRow[], now: number): Promise<void> {
    return this.#call(`remove ${count(rows.length)} delivered`, async () => {
      if (rows.length === 0) return;
      const args = [this.#keys, url, String(now), this.#token];
      for (const row of rows) args.push(String(row.seq), row.key);
      const [, total] = await this.#redis.webhooksDelivered(...args);
      for (const row of rows) this.#leased(url, row.key, false);
      this.#rows = Number(total);
      this.#drops.settle(this.size());
    });
  }

  retry(
    url: string,
    rows: readonly OutboxRow[],
    nextAt: (attempts: number) => number,
  ): Promise<void> {
    return this.#call(`count a failed delivery of ${count(rows.length)}`, async () => {
      if (rows.length === 0) return;
      /** Each queue's head among `rows`: the row with the lowest seq. */
      const heads = new Map<string, OutboxRow>();
      for (const row of rows) {
        const head = heads.get(row.key);
        if (!head || row.seq < head.seq) heads.set(row.key, row);
      }
      const args = [this.#keys, url, this.#token, String(rows.length)];
      for (const row of rows) args.push(String(row.seq));
      for (const [key, head] of heads) args.push(key, String(nextAt(head.attempts + 1)));
      this.#rows = Number(await this.#redis.webhooksRetry(...args));
      for (const key of heads.keys()) this.#leased(url, key, false);
    });
  }

  resume(url: string, now: number): Promise<number> {
    return this.#call("bring the waiting queues forward", async () => {
      let brought = 0;
      let passed = 0;
      for (;;) {
        const [n, seen] = (await this.#redis.webhooksResume(
          this.#keys,
          url,
          String(now),
          String(RESUME_QUEUES),
          String(passed),
        )).map(Number);
        brought += n;
        passed += seen - n;
        if (seen < RESUME_QUEUES) return brought;
      }
    });
  }

  expire(cutoff: number): Promise<number> {
    return this.#call("remove expired events", async () => {
      const [n, total] = await this.#redis.webhooksExpire(
        this.#keys,
        String(cutoff),
        String(EXPIRE_ROWS),
      );
      this.#rows = Number(total);
      this.#expired += Number(n);
      this.#drops.settle(this.size());
      return Number(n);
    });
  }

  nextDueAt(url: string): Promise<number | undefined> {
    return this.#call("find the next due event", async () => {
      const [, score] = await this.#redis.zrange(`${this.#keys}due:${url}`, "0", "0", "WITHSCORES");
      return score === undefined ? undefined : Number(score);
    });
  }

  size(): number {
    return this.#rows + this.#sending.length + this.#pending.length;
  }

  stats(): OutboxStats {
    return { rows: this.size(), dropped: this.#drops.dropped, expired: this.#expired };
  }

  /**
   * Resolves once every row added before the call is in Redis (waiting through the retries while
   * Redis is down), dropped for the bound, or lost when the outbox closed. Never rejects. It does
   * not hurry the writes: for tests, and for a caller that must know its events are shared.
   */
  written(): Promise<void> {
    const through = this.#added;
    if (this.#settledThrough() >= through) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ through, resolve }));
  }

  /**
   * Writes what `add` was given, ends this outbox's leases (its queues come due at once, for the
   * other nodes), and hangs up. Rows that cannot be written are lost, and reported; never rejects.
   */
  close(): Promise<void> {
    return this.#closing ??= this.#close();
  }

  /**
   * Hangs up at once, as a node that dies would: rows not written yet are lost, unreported, and
   * its leases hold until they end. For tests, and a process that must stop now.
   */
  disconnect(): void {
    this.#closed = true;
    this.#closing ??= Promise.resolve();
    this.#stopTimers();
    this.#pending = [];
    this.#redis.disconnect();
    this.#wakeWaiters(true);
  }

  async #close(): Promise<void> {
    this.#closed = true;
    // Write what waits, batch after batch, until it is all written or a write fails.
    for (;;) {
      this.#flush();
      if (this.#writing === undefined) break;
      await this.#writing;
      if (this.#failing) break;
    }
    this.#stopTimers();
    if (this.#pending.length > 0) {
      this.#onError(
        new Error(
          `${this.#name}: ${count(this.#pending.length)} could not be written before it closed, ` +
            `and are lost`,
        ),
      );
      this.#pending = [];
    }
    this.#wakeWaiters(true);
    const now = String(Date.now());
    const releases = [...this.#leases].map(([url, keys]) =>
      this.#redis.webhooksRelease(this.#keys, url, now, this.#token, ...keys)
    );
    this.#leases.clear();
    const failed = (await Promise.allSettled(releases)).find((r) => r.status === "rejected");
    if (failed) {
      this.#onError(
        this.#error(
          `cannot hand its queues over; the other nodes take them within ${LEASE_MS} ms`,
          (failed as PromiseRejectedResult).reason,
        ),
      );
    }
    await quit(this.#redis);
  }

  /** Sends the rows waiting, if any and no write is in flight. */
  #flush(): void {
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    if (this.#writing !== undefined || this.#pending.length === 0) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const rows = this.#pending.splice(0, MAX_BATCH_ROWS);
    this.#sending = rows;
    const args = [this.#keys, String(this.#maxEvents), String(Date.now() * 1000)];
    for (const { url, key, json, createdAt } of rows) args.push(url, key, json, String(createdAt));
    this.#writing = this.#redis.webhooksAdd(...args).then(([dropped, total]) => {
      this.#sending = [];
      this.#writing = undefined;
      this.#failing = false;
      this.#rows = Number(total);
      if (dropped > 0) this.#drops.drop(Number(dropped));
      this.#drops.settle(this.size());
      this.#wakeWaiters();
      // Rows that came while it was in flight waited already.
      if (this.#pending.length > 0 && !this.#closed) this.#flush();
    }, (err) => {
      this.#pending = rows.concat(this.#pending);
      this.#sending = [];
      this.#writing = undefined;
      if (!this.#failing) {
        this.#onError(
          this.#error(
            `cannot add ${count(rows.length)}; they are kept in memory (the newest ` +
              `${this.#maxEvents} at most) and tried again every ${WRITE_RETRY_MS} ms`,
            err,
          ),
        );
      }
      this.#failing = true;
      this.#boundPending();
      if (!this.#closed) this.#retryTimer = setTimeout(() => this.#flush(), WRITE_RETRY_MS);
    });
  }

  /** While writes fail, keeps the rows waiting in memory within the bound, the newest. */
  #boundPending(): void {
    const over = this.size() - this.#maxEvents;
    if (over <= 0) return;
    const n = Math.min(over, this.#pending.length);
    this.#pending.splice(0, n);
    this.#drops.drop(n);
    this.#wakeWaiters();
  }

  /** The ordinal through which every row added is written, dropped or lost. */
  #settledThrough(): number {
    const first = this.#sending[0] ?? this.#pending[0];
    return first === undefined ? this.#added : first.ordinal - 1;
  }

  /** Resolves the `written` calls whose rows are settled; all of them when `all`. */
  #wakeWaiters(all = false): void {
    const through = all ? Infinity : this.#settledThrough();
    const waiting = this.#waiters;
    this.#waiters = waiting.filter((w) => w.through > through);
    for (const w of waiting) if (w.through <= through) w.resolve();
  }

  /** Notes that this outbox holds, or no longer holds, the lease on url's queue `key`. */
  #leased(url: string, key: string, held: boolean): void {
    let keys = this.#leases.get(url);
    if (held) {
      if (!keys) this.#leases.set(url, keys = new Set());
      keys.add(key);
    } else if (keys) {
      keys.delete(key);
      if (keys.size === 0) this.#leases.delete(url);
    }
  }

  #stopTimers(): void {
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  /**
   * Runs `body` once the rows added before are sent (so that Redis, which answers one connection
   * in order, sees them first); rejects, naming the outbox, when it fails.
   */
  async #call<T>(what: string, body: () => Promise<T>): Promise<T> {
    this.#checkOpen();
    // Rows added while a write was in flight go in the next one, which must precede `body`.
    if (this.#writing !== undefined) await this.#writing;
    this.#checkOpen();
    this.#flush();
    try {
      return await body();
    } catch (err) {
      throw this.#error(`cannot ${what}`, err);
    }
  }

  /** An error naming the outbox and what failed. */
  #error(what: string, err: unknown): Error {
    return new Error(`${this.#name}: ${what}: ${errorMessage(err)}`, { cause: err });
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`the ${this.#name} is closed`);
  }
}
