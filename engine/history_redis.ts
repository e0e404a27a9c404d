/**
 * The Redis history store, on ioredis: the history of a cluster of servers, kept where all of them
 * can read it. It answers the same contract as the memory and SQLite stores (history_contract.ts).
 *
 * Keys, all under `prefix` (default "deno-pusher:") so that several deployments share a Redis:
 *   history:stream:<stream>  sorted set: the stream's kept publications, scored by id; a member
 *                            is the publication's JSON, {"id","ts","data","from"} in that order,
 *                            so a script reads its ts without decoding the rest
 *   history:trimmed          hash: stream → its trim mark (the highest id ever trimmed)
 *   history:oldest           sorted set: stream → the ts of its oldest kept publication, so the
 *                            sweep finds what expired without reading every stream
 *   history:floor            what this Redis answers for: ids at or below it were never kept here
 *   history:marks            hash: uid → its written mark (HistoryStore.wrote)
 *   history:marks-at         sorted set: uid → when its mark was noted, so the sweep forgets them
 *
 * Every change is one Lua script (sent once per connection, then by its SHA), so a trim mark never
 * moves without the rows that moved it, and an append, its size trim and its age trim are one
 * step. Appends are not batched here: ioredis pipelines whatever is called in the same turn of the
 * event loop into one write, and each append resolves when Redis has answered its own script.
 * All commands go down one connection in call order, so a read sees every append called before
 * it. Expired publications are trimmed by the stream's next append or read, and by the sweep.
 *
 * Redis loses what it held when it restarts without persistence (or is flushed): the floor key is
 * gone then, and the next script sets it again to the highest id this store was handed, so that a
 * reader from before is told recovered=false, never a false true. How durable an acknowledged
 * append is, is Redis's own setting (appendonly, appendfsync): this store asks for nothing more.
 *
 * For one Redis (or a primary with replicas), not Redis Cluster: the sweep's script touches stream
 * keys it computes, and every script touches the shared keys beside a stream's, which Cluster would
 * put in other hash slots.
 */
import { Redis } from "ioredis";
import { errorMessage } from "../sqlite.ts";
import { clearInterval, setInterval } from "node:timers";
import {
  checkBounds,
  checkPublication,
  checkRead,
  HISTORY_SWEEP_MS,
  type HistoryBounds,
  type HistoryPage,
  type HistoryStore,
  MARK_FLUSH_MS,
  WrittenMarks,
} from "./history.ts";
import { frozen, type Publication, type StreamName } from "./stream.ts";
import { connectionOptions, DEFAULT_PREFIX, quit, redactedUrl, reportErrors } from "./redis.ts";

export { DEFAULT_PREFIX };

/**
 * Streams one sweep trims at most, and expired marks it forgets at most, in one script: bounds how
 * long it holds Redis. What is left goes at the next sweep, or at the stream's next append or read.
 */
export const SWEEP_STREAMS = 1000;

/** Written marks one script saves at most. */
const MARKS_PER_SCRIPT = 1000;

/** What a Redis store is built from. */
export interface RedisHistoryOptions extends HistoryBounds {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every key; give each deployment sharing a Redis its own. Default DEFAULT_PREFIX. */
  prefix?: string;
  /** The clock, in milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /** Milliseconds between sweeps; 0 runs none (call `sweep`). Default HISTORY_SWEEP_MS. */
  sweepMs?: number;
  /**
   * Told, naming the Redis, when the connection fails (it is tried again on its own), when a
   * timed sweep fails, and when written marks could not be saved or loaded. Default: nothing.
   */
  onError?: (err: Error) => void;
  /**
   * The last message id handed out before this store opened: a Redis that holds no history yet
   * holds nothing at or below it, so a reader from an older id is told recovered=false. Default 0.
   */
  floor?: number;
}

/**
 * Lua the scripts share. A number goes to Redis with %.17g: Lua's own conversion keeps 14 digits,
 * and ids and times have up to 16.
 */
const LUA_COMMON = `
local function num(n) return string.format('%.17g', n) end
local function tsOf(member)
  return tonumber(string.match(member, '^{"id":%d+,"ts":([^,]+),'))
end
-- Trims from the oldest the publications of key with ts < cutoff; answers the new trim mark.
local function expire(key, cutoff, trimmed)
  while true do
    local rows = redis.call('ZRANGE', key, 0, 99, 'WITHSCORES')
    local n = 0
    for i = 1, #rows, 2 do
      if tsOf(rows[i]) >= cutoff then break end
      n = n + 1
      trimmed = math.max(trimmed, tonumber(rows[i + 1]))
    end
    if n > 0 then redis.call('ZREMRANGEBYRANK', key, 0, n - 1) end
    if n < 100 then return trimmed end
  end
end
-- Saves the stream's trim mark if it moved, and its oldest publication's ts in the sweep's index.
local function save(key, trimmedKey, oldestKey, stream, before, trimmed)
  if trimmed > before then redis.call('HSET', trimmedKey, stream, num(trimmed)) end
  local first = redis.call('ZRANGE', key, 0, 0)
  if #first == 0 then
    redis.call('ZREM', oldestKey, stream)
  else
    redis.call('ZADD', oldestKey, num(tsOf(first[1])), stream)
  end
end
-- The floor, set to fallback first if this Redis lost it (or never had it).
local function floorOf(floorKey, fallback)
  redis.call('SET', floorKey, fallback, 'NX')
  return tonumber(redis.call('GET', floorKey))
end
`;

/**
 * Lua defining `historyAppend(keys, args, id)`, the append of one publication: `keys` the stream's
 * keys (stream, trimmed, oldest, floor), `args` the stream name, size, cutoff (ms), fallback floor
 * and the member without its id (RedisHistory.appendStep). Keeps the publication unless the stream
 * holds its id or it is at or below the mark or the floor, then trims the stream by age and by
 * size. A function, so that a script that assigns the id itself (broker_redis.ts) appends in the
 * same step, and this file stays the only one that knows the layout.
 */
export const HISTORY_APPEND_LUA = LUA_COMMON + `
local function historyAppend(keys, args, id)
  local key, trimmedKey, oldestKey, floorKey = keys[1], keys[2], keys[3], keys[4]
  local stream, size, cutoff = args[1], tonumber(args[2]), tonumber(args[3])
  local floor = floorOf(floorKey, args[4])
  local before = tonumber(redis.call('HGET', trimmedKey, stream) or '0')
  local score = num(id)
  if id > math.max(before, floor) and #redis.call('ZRANGE', key, score, score, 'BYSCORE') == 0 then
    redis.call('ZADD', key, score, '{"id":' .. score .. ',' .. string.sub(args[5], 2))
  end
  local trimmed = expire(key, cutoff, before)
  local n = redis.call('ZCARD', key)
  if n > size then
    local gone = redis.call('ZRANGE', key, n - size - 1, n - size - 1, 'WITHSCORES')
    trimmed = math.max(trimmed, tonumber(gone[2]))
    redis.call('ZREMRANGEBYRANK', key, 0, n - size - 1)
  end
  save(key, trimmedKey, oldestKey, stream, before, trimmed)
end
`;

/** KEYS: as historyAppend's. ARGV: historyAppend's args, then the id. */
const APPEND_LUA = HISTORY_APPEND_LUA + `
historyAppend(KEYS, ARGV, tonumber(ARGV[6]))
return 1
`;

/**
 * KEYS: stream, trimmed, oldest, floor. ARGV: stream name, cutoff (ms), fallback floor, since,
 * limit. Trims the stream by age, then answers {mark, members}: the highest id nothing is known
 * at or below (trim mark or floor), and up to limit + 1 members above both it and since.
 */
const READ_LUA = LUA_COMMON + `
local key, trimmedKey, oldestKey, floorKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stream, cutoff = ARGV[1], tonumber(ARGV[2])
local floor = floorOf(floorKey, ARGV[3])
local before = tonumber(redis.call('HGET', trimmedKey, stream) or '0')
local trimmed = expire(key, cutoff, before)
if trimmed > before then save(key, trimmedKey, oldestKey, stream, before, trimmed) end
local mark = math.max(trimmed, floor)
local from = math.max(tonumber(ARGV[4]), mark)
local rows = redis.call('ZRANGE', key, '(' .. num(from), '+inf', 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[5]) + 1)
return {num(mark), rows}
`;

/**
 * KEYS: trimmed, oldest, marks, marks-at. ARGV: the stream keys' prefix, cutoff (ms), how many at
 * most. Trims the streams whose oldest publication expired, and forgets the marks noted before the
 * cutoff; answers how many streams it trimmed.
 */
const SWEEP_LUA = LUA_COMMON + `
local trimmedKey, oldestKey, marksKey, marksAtKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff, most = tonumber(ARGV[2]), tonumber(ARGV[3])
local streams = redis.call('ZRANGE', oldestKey, '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', 0, most)
for _, stream in ipairs(streams) do
  local key = ARGV[1] .. stream
  local before = tonumber(redis.call('HGET', trimmedKey, stream) or '0')
  save(key, trimmedKey, oldestKey, stream, before, expire(key, cutoff, before))
end
local uids = redis.call('ZRANGE', marksAtKey, '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', 0, most)
if #uids > 0 then
  redis.call('HDEL', marksKey, unpack(uids))
  redis.call('ZREM', marksAtKey, unpack(uids))
end
return #streams
`;

/** KEYS: marks, marks-at. ARGV: uid, id, at, … Raises each uid's mark to id, noted at `at`. */
const SAVE_MARKS_LUA = `
for i = 1, #ARGV, 3 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > old then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
end
return 1
`;

/** KEYS: marks, marks-at. ARGV: cutoff (ms). Answers uid, id, at, … of the marks not older. */
const LOAD_MARKS_LUA = `
local rows = redis.call('ZRANGE', KEYS[2], ARGV[1], '+inf', 'BYSCORE', 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  local id = redis.call('HGET', KEYS[1], rows[i])
  if id then
    out[#out + 1] = rows[i]
    out[#out + 1] = id
    out[#out + 1] = rows[i + 1]
  end
end
return out
`;

/** The scripts as ioredis's defineCommand makes them: each resolves with the script's answer. */
interface Scripts {
  historyAppend(...args: string[]): Promise<number>;
  historyRead(...args: string[]): Promise<[string, string[]]>;
  historySweep(...args: string[]): Promise<number>;
  historySaveMarks(...args: string[]): Promise<number>;
  historyLoadMarks(...args: string[]): Promise<string[]>;
}

/** A publication as a member of its stream's sorted set; see the file's header. */
interface Stored {
  id: number;
  ts: number;
  data: string;
  from?: { uid: string; client: string };
}

/**
 * Keeps each stream's publications in Redis, within its bounds; a store opened later on the same
 * Redis and prefix finds them, trim marks and written marks included. The store must be the only
 * writer of its prefix. The constructor connects in the background: calls made before the
 * connection is up wait for it (within REDIS_RETRIES_PER_COMMAND reconnections). Every error it
 * reports names the Redis URL, never its password.
 */
export class RedisHistory implements HistoryStore {
  readonly #redis: Redis & Scripts;
  /** The URL without its password. */
  readonly #name: string;
  readonly #size: number;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #floor: number;
  readonly #onError: (err: Error) => void;
  readonly #keys: Record<"trimmed" | "oldest" | "floor" | "marks" | "marksAt", string>;
  /** Where the stream keys start: the prefix and `history:stream:`. */
  readonly #streamPrefix: string;
  /** The highest id ever handed to `append`: the floor of a Redis found to have lost its data. */
  #highest = 0;
  readonly #marks: WrittenMarks;
  /** Uids whose mark moved since the last save. */
  #dirtyMarks = new Set<string>();
  #markTimer: ReturnType<typeof setTimeout> | undefined;
  /** The marks saved but not acknowledged yet: `close` waits for them. */
  #savingMarks: Promise<void> = Promise.resolve();
  /** Loading the marks a previous store saved; `close` waits for it. */
  readonly #loadingMarks: Promise<void>;
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  /**
   * Throws a RangeError for bounds out of range, and a TypeError when `url` is not a redis:// or
   * rediss:// URL. Does not wait for the connection: see the class.
   */
  constructor(options: RedisHistoryOptions) {
    checkBounds(options);
    this.#name = redactedUrl(options.url);
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#size = options.size;
    this.#ttlMs = options.ttl * 1000;
    this.#now = options.now ?? Date.now;
    this.#floor = options.floor ?? 0;
    this.#onError = options.onError ?? (() => {});
    this.#marks = new WrittenMarks(this.#ttlMs, this.#now);
    this.#streamPrefix = `${prefix}history:stream:`;
    this.#keys = {
      trimmed: `${prefix}history:trimmed`,
      oldest: `${prefix}history:oldest`,
      floor: `${prefix}history:floor`,
      marks: `${prefix}history:marks`,
      marksAt: `${prefix}history:marks-at`,
    };
    const redis = new Redis(options.url, connectionOptions("deno-pusher-history"));
    redis.defineCommand("historyAppend", { numberOfKeys: 4, lua: APPEND_LUA });
    redis.defineCommand("historyRead", { numberOfKeys: 4, lua: READ_LUA });
    redis.defineCommand("historySweep", { numberOfKeys: 4, lua: SWEEP_LUA });
    redis.defineCommand("historySaveMarks", { numberOfKeys: 2, lua: SAVE_MARKS_LUA });
    redis.defineCommand("historyLoadMarks", {
      numberOfKeys: 2,
      lua: LOAD_MARKS_LUA,
      readOnly: true,
    });
    this.#redis = redis as Redis & Scripts;
    reportErrors(redis, this.#name, this.#onError);
    this.#loadingMarks = this.#loadMarks();
    const sweepMs = options.sweepMs ?? HISTORY_SWEEP_MS;
    if (sweepMs > 0) {
      this.#sweeper = setInterval(() => this.sweep().catch(this.#onError), sweepMs);
      // The sweep frees Redis's memory; it is no reason to keep a process alive.
      this.#sweeper.unref();
    }
  }

  append(publication: Publication): Promise<void> {
    try {
      this.#checkOpen();
      checkPublication(publication);
    } catch (err) {
      return Promise.reject(err);
    }
    const { id, stream } = publication;
    const { keys, args } = this.appendStep(publication, 0);
    this.#highest = Math.max(this.#highest, id);
    return this.#redis.historyAppend(...keys, ...args, String(id)).then(
      () => {},
      (err) => {
        throw this.#error(`cannot append ${id} to ${stream}`, err);
      },
    );
  }

  /**
   * The keys and arguments of HISTORY_APPEND_LUA's `historyAppend` for `publication`, whose id the
   * caller's script assigns (broker_redis.ts); `highest` is the highest id the caller has seen, so
   * that a Redis found to have lost its data is given a floor at or above it. Throws when the store
   * is closed.
   */
  appendStep(
    publication: Omit<Publication, "id">,
    highest: number,
  ): { keys: string[]; args: string[] } {
    this.#checkOpen();
    this.#highest = Math.max(this.#highest, highest);
    const { stream, data, ts, from } = publication;
    // The member without its id: historyAppend puts `{"id":<id>,` in front of the rest.
    const rest: Omit<Stored, "id"> = from
      ? { ts, data, from: { uid: from.uid, client: from.client } }
      : { ts, data };
    return {
      keys: this.#streamKeys(stream),
      args: [
        stream,
        String(this.#size),
        String(this.#now() - this.#ttlMs),
        String(Math.max(this.#floor, this.#highest)),
        JSON.stringify(rest),
      ],
    };
  }

  read(stream: StreamName, since: number, limit: number): Promise<HistoryPage> {
    try {
      this.#checkOpen();
      checkRead(since, limit);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#redis.historyRead(
      ...this.#streamKeys(stream),
      stream,
      String(this.#now() - this.#ttlMs),
      String(Math.max(this.#floor, this.#highest)),
      String(since),
      String(limit),
    ).then(([mark, members]) => {
      const publications = members.slice(0, limit).map((member) => {
        const { id, ts, data, from } = JSON.parse(member) as Stored;
        return frozen({ id, stream, data, ts, from });
      });
      return {
        publications,
        recovered: since >= Number(mark),
        next: members.length > limit ? publications[limit - 1].id : null,
      };
    }, (err) => {
      throw this.#error(`cannot read ${stream}`, err);
    });
  }

  wrote(uid: string, id: number): void {
    if (this.#closed || !this.#marks.raise(uid, id)) return;
    this.#dirtyMarks.add(uid);
    this.#markTimer ??= setTimeout(() => this.#saveMarks(), MARK_FLUSH_MS);
  }

  writtenThrough(uid: string): number {
    return this.#marks.through(uid);
  }

  async sharedMark(uid: string): Promise<number> {
    let id: string | null, at: string | null;
    try {
      [id, at] = await Promise.all([
        this.#redis.hget(this.#keys.marks, uid),
        this.#redis.zscore(this.#keys.marksAt, uid),
      ]);
    } catch (err) {
      throw this.#error(`cannot read the written mark of ${uid}`, err);
    }
    const mark = { id: Number(id ?? 0), at: Number(at ?? 0) };
    if (
      mark.id > 0 && mark.at >= this.#now() - this.#ttlMs &&
      (this.#marks.get(uid)?.id ?? 0) < mark.id
    ) {
      this.#marks.load(uid, mark);
    }
    return this.#marks.through(uid);
  }

  /**
   * Trims the expired publications of up to SWEEP_STREAMS streams, and forgets expired written
   * marks, in one script; the timer calls it every `sweepMs`. Its commands are sent at once, so a
   * read called after it sees its effect. Resolves with how many streams it trimmed; rejects,
   * naming the Redis, when the script failed.
   */
  sweep(): Promise<number> {
    try {
      this.#checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    this.#marks.forget();
    const cutoff = this.#now() - this.#ttlMs;
    const { trimmed, oldest, marks, marksAt } = this.#keys;
    return this.#redis.historySweep(
      trimmed,
      oldest,
      marks,
      marksAt,
      this.#streamPrefix,
      String(cutoff),
      String(SWEEP_STREAMS),
    ).catch((err) => {
      throw this.#error("cannot sweep", err);
    });
  }

  close(): Promise<void> {
    return this.#closing ??= this.#close();
  }

  async #close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#saveMarks();
    this.#closed = true;
    await Promise.allSettled([this.#loadingMarks, this.#savingMarks]);
    await quit(this.#redis);
  }

  /** The keys a stream's scripts name, in their KEYS order. */
  #streamKeys(stream: StreamName): [string, string, string, string] {
    const { trimmed, oldest, floor } = this.#keys;
    return [this.#streamPrefix + stream, trimmed, oldest, floor];
  }

  /** Saves the marks that moved since the last save; one that fails is tried again later. */
  #saveMarks(): void {
    clearTimeout(this.#markTimer);
    this.#markTimer = undefined;
    if (this.#dirtyMarks.size === 0 || this.#closed) return;
    const uids = [...this.#dirtyMarks];
    this.#dirtyMarks = new Set();
    const saves: Promise<unknown>[] = [];
    for (let i = 0; i < uids.length; i += MARKS_PER_SCRIPT) {
      const args: string[] = [];
      for (const uid of uids.slice(i, i + MARKS_PER_SCRIPT)) {
        const mark = this.#marks.get(uid);
        if (mark) args.push(uid, String(mark.id), String(mark.at));
      }
      if (args.length > 0) {
        saves.push(this.#redis.historySaveMarks(this.#keys.marks, this.#keys.marksAt, ...args));
      }
    }
    this.#savingMarks = Promise.all(saves).then(() => {}, (err) => {
      for (const uid of uids) this.#dirtyMarks.add(uid);
      if (!this.#closed) this.#markTimer ??= setTimeout(() => this.#saveMarks(), MARK_FLUSH_MS);
      this.#onError(this.#error(`cannot save the written marks of ${uids.length} uids`, err));
    });
  }

  /** Loads the marks a store on this prefix saved, keeping those noted here since it opened. */
  async #loadMarks(): Promise<void> {
    try {
      const cutoff = this.#now() - this.#ttlMs;
      const rows = await this.#redis.historyLoadMarks(
        this.#keys.marks,
        this.#keys.marksAt,
        String(cutoff),
      );
      for (let i = 0; i < rows.length; i += 3) {
        const uid = rows[i];
        const mark = { id: Number(rows[i + 1]), at: Number(rows[i + 2]) };
        if ((this.#marks.get(uid)?.id ?? 0) < mark.id) this.#marks.load(uid, mark);
      }
    } catch (err) {
      if (!this.#closed) this.#onError(this.#error("cannot load the written marks", err));
    }
  }

  /** An error naming the Redis and what failed. */
  #error(what: string, err: unknown): Error {
    return new Error(`redis ${this.#name}: ${what}: ${errorMessage(err)}`, { cause: err });
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`the Redis history store on ${this.#name} is closed`);
  }
}
