/**
 * The Redis presence registry, on ioredis: every node's connections, kept where every node of a
 * cluster can count them (see presence.ts).
 *
 * Keys, under `prefix` (default "deno-pusher:", as the broker's and the history's):
 *   presence:nodes                sorted set: node → when its heartbeat lapses (Redis's clock, ms)
 *   presence:node:<node>          hash: client id → its uid ("" unbound), one per node
 *   presence:client-groups:<id>   set: the groups of one connection
 *   presence:clients              hash: client id → its node
 *   presence:uids                 hash: uid → connections, cluster-wide
 *   presence:groups               hash: group → members (connections), cluster-wide
 *   presence:connections          connections, cluster-wide
 *   presence:jwt                  hash: node → the fingerprint of its token settings
 *   presence:infos                hash: client id → its token's `info` (JSON), when it has one
 *   presence:group-uids:<group>   hash: uid → its connections in the group, cluster-wide
 *   presence:group-info:<group>   hash: uid → the `info` of one of them (the group's presence)
 *   presence:locks:<group>        hash: key → its lock {"key","holder":{"uid","client"},"expiresAt",
 *                                 "node","at"} (expiresAt and at in Redis's ms; expiresAt null: held
 *                                 until released)
 *   presence:client-locks:<id>    set: the [group, key] (JSON) one connection holds
 *   presence:capacities           hash: group → the most members it may have, set through the API
 *   presence:events               channel: a uid's first connection joined a group, or its last
 *                                 left: {"type":"join"|"leave","group","uid","info","client","size"};
 *                                 a lock was taken, {"type":"lock","group","key","holder",
 *                                 "expiresAt","client"}, or released, {"type":"unlock","group","key",
 *                                 "client"} ("client" is the connection that did it, "" for none);
 *                                 a group's capacity was set, {"type":"capacity","group",
 *                                 "maxMembers"} (null: back to MAX_GROUP_MEMBERS)
 *
 * Every change is one Lua script, so the counts always equal what the node hashes hold. A node
 * beats every HEARTBEAT_MS; the beat pushes its lapse NODE_TTL_MS ahead and removes every node
 * whose lapse passed, with its connections, groups and counts: a node killed with -9 is gone from
 * the counts within NODE_TTL_MS plus one beat of a live node. The clock is Redis's (TIME), so the
 * nodes' clocks need not agree.
 *
 * Writes are sent in order on one connection and not awaited (presence.ts). One that fails, or a
 * beat that finds this node removed (it could not beat for NODE_TTL_MS), puts the node's part right
 * at the next beat: the node's entries are dropped and written again from the hub's snapshot, in one
 * go, ahead of any later write. So after Redis restarts, even empty, each node's part is back within
 * one beat of its reconnection.
 *
 * For one Redis (or a primary with replicas), not Redis Cluster: scripts touch keys they compute.
 */
import { Redis } from "ioredis";
import type {
  ClusterCounts,
  HeldLock,
  LockTaken,
  PresenceChange,
  PresenceEvent,
  PresenceRegistry,
  PresentClient,
} from "./presence.ts";
import { connectionOptions, DEFAULT_PREFIX, quit, redactedUrl, reportErrors } from "./redis.ts";

/** Milliseconds between two heartbeats of a node: several beats fit in NODE_TTL_MS. */
export const HEARTBEAT_MS = 2_000;

/**
 * Milliseconds a node stays in the registry after its last heartbeat: a node that stops beating
 * (killed, cut off) and its connections disappear from every count after this. Five HEARTBEAT_MS,
 * so that a slow beat or two (a busy event loop, a Redis failover) removes nobody.
 */
export const NODE_TTL_MS = 10_000;

/**
 * Lua defining `reachOf(prefix, stream)`: the connections the registry lists for a stream now (a
 * uid's, a group's members, every connection for `all`, 1 or 0 for `client:<id>`). The broker's
 * publish runs it in the same step, so a send learns who in the cluster can take it.
 */
export const REACH_LUA = `
local function reachOf(p, stream)
  if stream == 'all' then return tonumber(redis.call('GET', p .. 'presence:connections') or '0') end
  local kind, name = string.match(stream, '^(%a+):(.*)$')
  if kind == 'uid' then return tonumber(redis.call('HGET', p .. 'presence:uids', name) or '0') end
  if kind == 'group' then
    return tonumber(redis.call('HGET', p .. 'presence:groups', name) or '0')
  end
  if kind == 'client' then return redis.call('HEXISTS', p .. 'presence:clients', name) end
  return 0
end
`;

/**
 * ARGV: prefix, op, node, then the op's: client [uid | group], or the TTL and the fingerprint (beat,
 * reset; these answer whether the node was listed anew, and the nodes of another fingerprint).
 */
const PRESENCE_LUA = `
local p, op, node = ARGV[1], ARGV[2], ARGV[3]
local nodes, clients = p .. 'presence:nodes', p .. 'presence:clients'
local uids, groups, total = p .. 'presence:uids', p .. 'presence:groups', p .. 'presence:connections'
local jwt, infos, events = p .. 'presence:jwt', p .. 'presence:infos', p .. 'presence:events'
local leaving = p .. 'presence:leaving'
local function nodeKey(n) return p .. 'presence:node:' .. n end
local function groupsKey(c) return p .. 'presence:client-groups:' .. c end
local function num(n) return string.format('%d', n) end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- What the cluster's presence went through in this step, for the webhooks: kind, name, kind, …
local out, quiet = {}, false
local function tell(kind, name)
  if not quiet then
    table.insert(out, kind)
    table.insert(out, name)
  end
end
local function dec(hash, field)
  if redis.call('HINCRBY', hash, field, -1) <= 0 then
    redis.call('HDEL', hash, field)
    return true
  end
  return false
end
-- A uid's first connection anywhere: online, unless it was leaving (back within the delay).
local function uidUp(uid)
  if redis.call('HINCRBY', uids, uid, 1) == 1 and redis.call('HDEL', leaving, uid) == 0 then
    tell('uid.online', uid)
  end
end
-- Its last one: leaving from now; offline once the delay passed without its coming back.
local function uidDown(uid)
  if dec(uids, uid) then
    redis.call('HSET', leaving, uid, num(now()))
    tell('uid.down', uid)
  end
end
-- A uid's first connection in group g came (delta 1), or its last went (-1): told on the channel.
local function present(g, uid, c, delta)
  if uid == '' then return end
  local counts, info = p .. 'presence:group-uids:' .. g, p .. 'presence:group-info:' .. g
  local n = redis.call('HINCRBY', counts, uid, delta)
  local size = tonumber(redis.call('HGET', groups, g) or '0')
  local head = '{"group":' .. cjson.encode(g) .. ',"uid":' .. cjson.encode(uid) ..
    ',"client":' .. cjson.encode(c)
  if delta > 0 and n == 1 then
    local i = redis.call('HGET', infos, c) or 'null'
    redis.call('HSET', info, uid, i)
    if not quiet then
      redis.call('PUBLISH', events, head .. ',"type":"join","info":' .. i .. ',"size":' .. size .. '}')
    end
  elseif delta < 0 and n <= 0 then
    redis.call('HDEL', counts, uid)
    redis.call('HDEL', info, uid)
    if not quiet then
      redis.call('PUBLISH', events, head .. ',"type":"leave","size":' .. (size + 1) .. '}')
    end
  end
end
local function locksKey(g) return p .. 'presence:locks:' .. g end
local function heldKey(c) return p .. 'presence:client-locks:' .. c end
-- Releases the lock on k in g, held by holder; by tells who did it ('' for nobody).
local function unlock(g, k, holder, by)
  redis.call('HDEL', locksKey(g), k)
  redis.call('SREM', heldKey(holder), cjson.encode({g, k}))
  redis.call('PUBLISH', events, '{"type":"unlock","group":' .. cjson.encode(g) .. ',"key":' ..
    cjson.encode(k) .. ',"client":' .. cjson.encode(by) .. '}')
end
local function leave(c, g, uid)
  if redis.call('SREM', groupsKey(c), g) == 1 then
    -- Its locks in the group go with it; the members who stay are told.
    for _, m in ipairs(redis.call('SMEMBERS', heldKey(c))) do
      local held = cjson.decode(m)
      if held[1] == g then unlock(g, held[2], c, '') end
    end
    if dec(groups, g) then tell('group.vacated', g) end
    present(g, uid, c, -1)
  end
end
local function remove(n, c)
  local uid = redis.call('HGET', nodeKey(n), c)
  if not uid then return end
  if uid ~= '' then uidDown(uid) end
  for _, g in ipairs(redis.call('SMEMBERS', groupsKey(c))) do leave(c, g, uid) end
  redis.call('DEL', groupsKey(c))
  redis.call('DEL', heldKey(c))
  redis.call('HDEL', infos, c)
  redis.call('HDEL', nodeKey(n), c)
  redis.call('HDEL', clients, c)
  if redis.call('DECR', total) <= 0 then redis.call('DEL', total) end
end
local function reap(n)
  for _, c in ipairs(redis.call('HKEYS', nodeKey(n))) do remove(n, c) end
  redis.call('DEL', nodeKey(n))
  redis.call('ZREM', nodes, n)
  redis.call('HDEL', jwt, n)
end
if op == 'beat' or op == 'reset' then
  -- ARGV: the TTL, the fingerprint, and the age (ms) after which a uid still leaving is told
  -- offline by whoever beats (its own node died before it could).
  local t = now()
  if op == 'reset' then
    -- This node's part is written again right after, quietly: it changed nothing for anyone.
    quiet = true
    reap(node)
    quiet = false
  end
  local fresh = redis.call('ZADD', nodes, t + tonumber(ARGV[4]), node)
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', t)) do reap(n) end
  if ARGV[4] == '0' then return {fresh, {}, 0, out} end
  local stale = redis.call('HGETALL', leaving)
  for i = 1, #stale, 2 do
    if t - tonumber(stale[i + 1]) >= tonumber(ARGV[6]) and redis.call('HEXISTS', uids, stale[i]) == 0 then
      redis.call('HDEL', leaving, stale[i])
      tell('uid.offline', stale[i])
    end
  end
  redis.call('HSET', jwt, node, ARGV[5])
  local others = {}
  local all = redis.call('HGETALL', jwt)
  for i = 1, #all, 2 do
    if all[i + 1] ~= ARGV[5] then table.insert(others, all[i]) end
  end
  return {fresh, others, redis.call('ZCARD', nodes), out}
end
if op == 'offline' then
  -- ARGV: uid, the delay (ms). Told offline if it is still leaving, and has been for the delay.
  local uid, since = ARGV[4], redis.call('HGET', leaving, ARGV[4])
  if since and now() - tonumber(since) >= tonumber(ARGV[5]) - 100 and
      redis.call('HEXISTS', uids, uid) == 0 then
    redis.call('HDEL', leaving, uid)
    return 1
  end
  return 0
end
local c = ARGV[4]
if op == 'lock' then
  -- ARGV: client, group, key, ttl ms ('' none), uid ('' none), most locks per connection (0 none).
  -- Answers {1, lock} when taken (or renewed), {0, lock} when another holds it, {2, max} when the
  -- connection holds its most already.
  local g, k, t = ARGV[5], ARGV[6], now()
  local current = redis.call('HGET', locksKey(g), k)
  local at = t
  if current then
    local l = cjson.decode(current)
    local live = l.expiresAt == cjson.null or l.expiresAt > t
    if l.holder.client ~= c and live then return {0, current} end
    if l.holder.client ~= c then unlock(g, k, l.holder.client, '') else at = l.at end
  end
  local member = cjson.encode({g, k})
  local max = tonumber(ARGV[9])
  if max > 0 and redis.call('SISMEMBER', heldKey(c), member) == 0 and
      redis.call('SCARD', heldKey(c)) >= max then
    return {2, ARGV[9]}
  end
  local expires = ARGV[7] == '' and 'null' or num(t + tonumber(ARGV[7]))
  local holder = '{"uid":' .. (ARGV[8] == '' and 'null' or cjson.encode(ARGV[8])) ..
    ',"client":' .. cjson.encode(c) .. '}'
  local lock = '{"key":' .. cjson.encode(k) .. ',"holder":' .. holder .. ',"expiresAt":' ..
    expires .. ',"node":' .. cjson.encode(node) .. ',"at":' .. num(at) .. '}'
  redis.call('HSET', locksKey(g), k, lock)
  redis.call('SADD', heldKey(c), member)
  redis.call('PUBLISH', events, '{"type":"lock","group":' .. cjson.encode(g) .. ',"key":' ..
    cjson.encode(k) .. ',"holder":' .. holder .. ',"expiresAt":' .. expires .. ',"client":' ..
    cjson.encode(c) .. '}')
  return {1, lock}
elseif op == 'unlock' then
  -- ARGV: client ('' to break whoever holds it), group, key, 'expired' to release it only if its
  -- ttl has passed. Answers 1 released, 0 not locked, -1 held by another connection (or not
  -- expired).
  local g, k = ARGV[5], ARGV[6]
  local current = redis.call('HGET', locksKey(g), k)
  if not current then return 0 end
  local l = cjson.decode(current)
  if ARGV[7] == 'expired' then
    if l.expiresAt == cjson.null or l.expiresAt > now() then return -1 end
    unlock(g, k, l.holder.client, '')
    return 1
  end
  if c ~= '' and l.holder.client ~= c then return -1 end
  unlock(g, k, l.holder.client, c)
  return 1
end
if op == 'capacity' then
  -- ARGV: '', group, the bound ('' for none of its own).
  local key = p .. 'presence:capacities'
  if ARGV[6] == '' then redis.call('HDEL', key, ARGV[5]) else redis.call('HSET', key, ARGV[5], ARGV[6]) end
  redis.call('PUBLISH', events, '{"type":"capacity","group":' .. cjson.encode(ARGV[5]) ..
    ',"maxMembers":' .. (ARGV[6] == '' and 'null' or ARGV[6]) .. ',"client":""}')
  return 1
end
-- add: client, uid, info, 'quiet'? (a snapshot's rewrite); join: client, group, 'quiet'?
if op == 'add' then
  quiet = ARGV[7] == 'quiet'
  if redis.call('HSETNX', nodeKey(node), c, ARGV[5]) == 0 then return out end
  if ARGV[6] ~= '' then redis.call('HSET', infos, c, ARGV[6]) end
  redis.call('HSET', clients, c, node)
  redis.call('INCR', total)
  if ARGV[5] ~= '' then uidUp(ARGV[5]) end
elseif op == 'remove' then
  remove(node, c)
elseif op == 'bind' then
  local old = redis.call('HGET', nodeKey(node), c)
  if not old then return out end
  if old ~= '' then uidDown(old) end
  redis.call('HSET', nodeKey(node), c, ARGV[5])
  if ARGV[5] ~= '' then uidUp(ARGV[5]) end
elseif op == 'join' then
  quiet = ARGV[6] == 'quiet'
  local uid = redis.call('HGET', nodeKey(node), c)
  if not uid then return out end
  if redis.call('SADD', groupsKey(c), ARGV[5]) == 1 then
    if redis.call('HINCRBY', groups, ARGV[5], 1) == 1 then tell('group.created', ARGV[5]) end
    present(ARGV[5], uid, c, 1)
  end
elseif op == 'leave' then
  local uid = redis.call('HGET', nodeKey(node), c)
  if uid then leave(c, ARGV[5], uid) end
end
return out
`;

/** ARGV: prefix. Answers nodes whose heartbeat is current, connections, uids, groups. */
const COUNTS_LUA = `
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {
  redis.call('ZCOUNT', p .. 'presence:nodes', '(' .. now, '+inf'),
  tonumber(redis.call('GET', p .. 'presence:connections') or '0'),
  redis.call('HLEN', p .. 'presence:uids'),
  redis.call('HLEN', p .. 'presence:groups'),
}
`;

interface Scripts {
  presence(
    ...args: string[]
  ): Promise<number | string[] | [number, string[], number, string[]] | [number, string]>;
  presenceCounts(prefix: string): Promise<number[]>;
}

/** What a Redis presence registry is built from. */
export interface RedisPresenceOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every key; the same on every node of a deployment. Default DEFAULT_PREFIX. */
  prefix?: string;
  /** This node's name, unique in the cluster (two nodes of one name would count as one). */
  node: string;
  /**
   * Every connection of this node now, with its uid and groups: what the registry writes again
   * when it has to put its part right (see the file's comment). Called at most once per beat.
   */
  snapshot: () => Iterable<PresentClient>;
  /**
   * The fingerprint of this node's token settings (JWT_ALG, its key, issuer, audience), never the
   * secret itself: nodes that would check tokens differently have different ones. Default "".
   */
  fingerprint?: string;
  /**
   * Told the nodes whose fingerprint differs from this node's, when that list changes (so once,
   * not at every beat); [] once they agree again. Default: nothing.
   */
  onMismatch?: (nodes: string[]) => void;
  /**
   * Told every presence event of the cluster (every node's, this one's included), in the order
   * Redis ran the changes. Default: nothing.
   */
  onEvent?: (event: PresenceEvent) => void;
  /**
   * Told each change of the cluster's presence that webhooks report, whichever node's connection
   * caused it, once for the cluster: a uid's first connection anywhere (`uid.online`), its last
   * one gone for `offlineDelayMs` (`uid.offline`), a group's first member anywhere
   * (`group.created`) and its last (`group.vacated`). Default: nothing.
   */
  onChange?: (change: PresenceChange, name: string) => void;
  /** Milliseconds a uid stays online after its last connection (WEBHOOK_OFFLINE_DELAY). Default 5 s. */
  offlineDelayMs?: number;
  /** Milliseconds between heartbeats; tests shorten it. Default HEARTBEAT_MS. */
  heartbeatMs?: number;
  /** Milliseconds a silent node stays listed; more than `heartbeatMs`. Default NODE_TTL_MS. */
  nodeTtlMs?: number;
  /**
   * Told, naming the Redis (never its password), when the connection fails (it is tried again on
   * its own) and when a write or a beat failed (put right at a later beat). Default: nothing.
   */
  onError?: (err: Error) => void;
}

/**
 * A node's part of the cluster's presence, on a shared Redis. Invariant: every write is sent on
 * the one connection in the order the hub told it, after any re-write of the node's part that was
 * due, so Redis applies them in the hub's order.
 */
export class RedisPresence implements PresenceRegistry {
  readonly node: string;
  readonly #redis: Redis & Scripts;
  /** Subscribed to presence:events when there is an `onEvent`. */
  readonly #subscriber: Redis | undefined;
  readonly #name: string;
  readonly #prefix: string;
  readonly #snapshot: () => Iterable<PresentClient>;
  readonly #nodeTtlMs: number;
  readonly #onError: (err: Error) => void;
  readonly #fingerprint: string;
  readonly #onChange: (change: PresenceChange, name: string) => void;
  readonly #offlineDelayMs: number;
  readonly #heartbeatMs: number;
  /** uid → the timer that asks whether it is offline (see `#changed`). */
  readonly #leaving = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #onMismatch: (nodes: string[]) => void;
  #nodes = 0;
  /** The nodes of another fingerprint at the last beat, sorted and joined. */
  #mismatched = "";
  readonly #beat: ReturnType<typeof setInterval>;
  /** True when the node's part in Redis may be wrong: rewritten at the next beat. */
  #stale = true;
  #closed = false;

  /** Throws a TypeError when `url` is not a redis:// or rediss:// URL. Connects in the background. */
  constructor(options: RedisPresenceOptions) {
    this.#name = redactedUrl(options.url);
    this.node = options.node;
    this.#prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#snapshot = options.snapshot;
    const heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    this.#nodeTtlMs = options.nodeTtlMs ?? NODE_TTL_MS;
    if (!(this.#nodeTtlMs > heartbeatMs)) {
      throw new RangeError(
        `a node's TTL (${this.#nodeTtlMs} ms) must be longer than its heartbeat (${heartbeatMs} ms)`,
      );
    }
    this.#onError = options.onError ?? (() => {});
    this.#fingerprint = options.fingerprint ?? "";
    this.#onChange = options.onChange ?? (() => {});
    this.#offlineDelayMs = options.offlineDelayMs ?? 5_000;
    this.#heartbeatMs = heartbeatMs;
    this.#onMismatch = options.onMismatch ?? (() => {});
    const redis = new Redis(options.url, connectionOptions("deno-pusher-presence"));
    redis.defineCommand("presence", { numberOfKeys: 0, lua: PRESENCE_LUA });
    redis.defineCommand("presenceCounts", { numberOfKeys: 0, lua: COUNTS_LUA, readOnly: true });
    this.#redis = redis as Redis & Scripts;
    reportErrors(redis, this.#name, this.#onError);
    redis.on("ready", () => {
      // Whatever was written before the connection broke may be lost (a Redis that restarted).
      this.#stale = true;
      this.beat().catch(() => {});
    });
    const onEvent = options.onEvent;
    if (onEvent) {
      const channel = `${this.#prefix}presence:events`;
      const subscriber = new Redis(options.url, {
        ...connectionOptions("deno-pusher-presence-events"),
        enableAutoPipelining: false,
      });
      subscriber.on("error", () => {}); // the command connection reports the same causes
      subscriber.on("ready", () => void subscriber.subscribe(channel).catch(() => {}));
      subscriber.on("message", (from: string, message: string) => {
        if (from !== channel) return;
        try {
          onEvent(JSON.parse(message) as PresenceEvent);
        } catch (err) {
          this.#onError(this.#failed("a presence event could not be told", err));
        }
      });
      this.#subscriber = subscriber;
    }
    this.#beat = setInterval(() => this.beat().catch(() => {}), heartbeatMs);
    this.#beat.unref();
  }

  /** The nodes listed at this node's last beat, itself included; 0 before the first. */
  get nodes(): number {
    return this.#nodes;
  }

  connected(client: string, uid: string | undefined, info: unknown): void {
    this.#write("add", client, uid ?? "", infoJson(info));
  }

  disconnected(client: string): void {
    this.#write("remove", client);
  }

  bound(client: string, uid: string | undefined): void {
    this.#write("bind", client, uid ?? "");
  }

  joined(client: string, group: string): void {
    this.#write("join", client, group);
  }

  left(client: string, group: string): void {
    this.#write("leave", client, group);
  }

  async counts(): Promise<ClusterCounts> {
    const [nodes, connections, uids, groups] = await this.#read(
      "count",
      this.#redis.presenceCounts(this.#prefix),
    );
    return { nodes, connections, uids, groups };
  }

  async presence(
    group: string,
  ): Promise<{ members: { uid: string; info: unknown }[]; size: number }> {
    const [size, infos] = await this.#read(
      group,
      Promise.all([
        this.#redis.hget(`${this.#prefix}presence:groups`, group),
        this.#redis.hgetall(`${this.#prefix}presence:group-info:${group}`),
      ]),
    );
    const members = Object.entries(infos).map(([uid, info]) => ({ uid, info: JSON.parse(info) }));
    return { members, size: Number(size ?? 0) };
  }

  async lock(
    client: string,
    uid: string | undefined,
    group: string,
    key: string,
    ttlMs: number | undefined,
    max: number,
  ): Promise<LockTaken> {
    const [outcome, value] = await this.#read(
      `${key} in ${group}`,
      this.#send(
        "lock",
        client,
        group,
        key,
        ttlMs === undefined ? "" : String(Math.round(ttlMs)),
        uid ?? "",
        String(max),
      ),
    ) as [number, string];
    if (outcome === 2) return { tooMany: Number(value) };
    const lock = heldLock(value);
    return outcome === 1 ? { taken: lock } : { heldBy: lock };
  }

  async unlock(client: string | undefined, group: string, key: string): Promise<number> {
    return await this.#read(
      `${key} in ${group}`,
      this.#send("unlock", client ?? "", group, key, ""),
    ) as number;
  }

  async expire(group: string, key: string): Promise<void> {
    await this.#read(`${key} in ${group}`, this.#send("unlock", "", group, key, "expired"));
  }

  async locks(group: string): Promise<HeldLock[]> {
    const all = await this.#read(
      `the locks of ${group}`,
      this.#redis.hgetall(`${this.#prefix}presence:locks:${group}`),
    );
    return Object.values(all).map((json) => JSON.parse(json) as HeldLock & { at: number })
      .sort((a, b) => a.at - b.at).map(({ key, holder, expiresAt }) => ({
        key,
        holder,
        expiresAt,
      }));
  }

  async setCapacity(group: string, maxMembers: number | null): Promise<void> {
    await this.#read(
      `the capacity of ${group}`,
      this.#send("capacity", "", group, maxMembers === null ? "" : String(maxMembers)),
    );
  }

  async capacities(): Promise<Map<string, number>> {
    const all = await this.#read(
      "the groups' capacities",
      this.#redis.hgetall(`${this.#prefix}presence:capacities`),
    );
    return new Map(Object.entries(all).map(([group, max]) => [group, Number(max)]));
  }

  async connectionsOf(uid: string): Promise<number> {
    return Number(await this.#read(uid, this.#redis.hget(`${this.#prefix}presence:uids`, uid)));
  }

  async membersOf(group: string): Promise<number> {
    return Number(
      await this.#read(group, this.#redis.hget(`${this.#prefix}presence:groups`, group)),
    );
  }

  /**
   * Beats: keeps this node listed for NODE_TTL_MS more, and removes the nodes that stopped beating.
   * When this node's part may be wrong, or the beat finds the node was removed, writes the part
   * again from the snapshot first. The timer calls it; tests call it to beat now. Rejects, naming
   * the Redis, when the beat failed (the next one tries again).
   */
  async beat(): Promise<void> {
    if (this.#closed) return;
    const op = this.#stale ? "reset" : "beat";
    // A uid still leaving this long after its last connection went is told offline by whoever
    // beats: its own node, which would have told it, died meanwhile.
    const staleLeaving = String(this.#offlineDelayMs + 2 * this.#heartbeatMs);
    const sent: Promise<unknown>[] = [
      this.#send(op, String(this.#nodeTtlMs), this.#fingerprint, staleLeaving),
    ];
    if (this.#stale) {
      this.#stale = false;
      // Quietly: the cluster's presence did not change, only Redis's copy of it.
      for (const { id, uid, info, groups } of this.#snapshot()) {
        sent.push(this.#send("add", id, uid ?? "", infoJson(info), "quiet"));
        for (const group of groups) sent.push(this.#send("join", id, group, "quiet"));
      }
    }
    try {
      const [[fresh, others, nodes, changes]] = await Promise.all(sent) as [
        [number, string[], number, string[]],
      ];
      this.#nodes = nodes;
      this.#changed(changes);
      const mismatched = [...others].sort().join(",");
      if (mismatched !== this.#mismatched) {
        this.#mismatched = mismatched;
        this.#onMismatch(others);
      }
      // Listed anew by a beat: the others had removed this node, and its part with it.
      if (op === "beat" && fresh === 1) {
        this.#stale = true;
        await this.beat();
      }
    } catch (err) {
      this.#stale = true;
      throw this.#failed("cannot beat", err);
    }
  }

  /** Leaves the cluster: removes this node's part from Redis at once, then closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#beat);
    // Going away: the uids this node saw leave are told offline now, if they have not come back.
    const leaving = [...this.#leaving.keys()];
    for (const timer of this.#leaving.values()) clearTimeout(timer);
    this.#leaving.clear();
    await Promise.all(leaving.map((uid) =>
      this.#send("offline", uid, "0").then(
        (gone) => gone === 1 && this.#onChange("uid.offline", uid),
        () => {}, // Redis is down: another node's beat tells it
      )
    ));
    this.#subscriber?.disconnect();
    if (this.#redis.status === "ready") {
      // Out of the registry now; when Redis is down, the others remove it after NODE_TTL_MS.
      await this.#redis.presence(this.#prefix, "reset", this.node, "0", this.#fingerprint)
        .catch(() => {});
    }
    await quit(this.#redis);
  }

  #send(
    op: string,
    ...args: string[]
  ): Promise<number | string[] | [number, string[], number, string[]] | [number, string]> {
    return this.#redis.presence(this.#prefix, op, this.node, ...args);
  }

  #write(op: string, client: string, ...args: string[]): void {
    if (this.#closed) return;
    this.#send(op, client, ...args).then((changes) => this.#changed(changes), (err) => {
      this.#stale = true;
      this.#onError(this.#failed(`cannot ${op} client ${client}`, err));
    });
  }

  /**
   * What a step changed in the cluster's presence (kind, name, kind, name…): told to
   * `onChange`, but a uid's going down, which is told `uid.offline` only if it has not come back
   * after the offline delay (the `offline` step decides, in Redis).
   */
  #changed(changes: unknown): void {
    if (!Array.isArray(changes)) return;
    for (let i = 0; i + 1 < changes.length; i += 2) {
      const [kind, name] = [String(changes[i]), String(changes[i + 1])];
      if (kind !== "uid.down") {
        this.#onChange(kind as PresenceChange, name);
        continue;
      }
      clearTimeout(this.#leaving.get(name));
      this.#leaving.set(
        name,
        setTimeout(() => {
          this.#leaving.delete(name);
          if (this.#closed) return;
          this.#send("offline", name, String(this.#offlineDelayMs)).then(
            (gone) => gone === 1 && this.#onChange("uid.offline", name),
            (err) => this.#onError(this.#failed(`cannot tell ${name} offline`, err)),
          );
        }, this.#offlineDelayMs),
      );
    }
  }

  async #read<T>(what: string, answer: Promise<T>): Promise<T> {
    try {
      return await answer;
    } catch (err) {
      throw this.#failed(`cannot read the presence of ${what}`, err);
    }
  }

  #failed(what: string, err: unknown): Error {
    const message = err instanceof Error ? err.message : String(err);
    return new Error(`redis ${this.#name}: ${what}: ${message}`, { cause: err });
  }
}

/** A token's `info` as the registry keeps it: JSON, or "" for none. */
function infoJson(info: unknown): string {
  return info === undefined || info === null ? "" : JSON.stringify(info);
}

/** A lock as the registry keeps it, as frames and the API show it. */
function heldLock(json: string): HeldLock {
  const { key, holder, expiresAt } = JSON.parse(json) as HeldLock;
  return { key, holder, expiresAt };
}
