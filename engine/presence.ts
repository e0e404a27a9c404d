/**
 * Presence: who is connected, told to whoever must answer for a cluster. The hub owns its node's
 * indexes (uid → connections, group → members); a presence registry is the cluster-wide copy
 * every node writes its part of, and reads the whole of. One interface with one implementation per
 * backend, as the broker and the history store have: a single node needs none (its hub's indexes
 * are the whole truth), a cluster has presence_redis.ts.
 *
 * Writes are told, not awaited: the hub's indexes change at once, and the registry follows in the
 * order it was told. A registry that lost writes (its backend was down) puts its node's part right
 * by itself, from `snapshot`, once it can write again.
 */

/** One connection of this node as the registry keeps it. */
export interface PresentClient {
  /** The client id. */
  id: string;
  /** Its uid; none for a connection that is not bound. */
  uid?: string;
  /** Its token's `info` claim, shown in the presence of its groups; any JSON value. */
  info?: unknown;
  /** The groups it is a member of. */
  groups: Iterable<string>;
}

/** The cluster's counts, every node's connections together. */
export interface ClusterCounts {
  /** Nodes whose heartbeat is current. */
  nodes: number;
  /** Connections. */
  connections: number;
  /** Distinct uids with at least one connection. */
  uids: number;
  /** Groups with at least one member. */
  groups: number;
}

/** The cluster-wide copy of every node's connections. */
export interface PresenceRegistry {
  /** This node's name in the cluster: unique among the nodes sharing the registry. */
  readonly node: string;
  /**
   * A connection opened on this node, with its uid (none when unbound), its token's `info`, and
   * no groups yet.
   */
  connected(client: string, uid: string | undefined, info: unknown): void;
  /** A connection of this node closed: its uid and groups count it no more. */
  disconnected(client: string): void;
  /** A connection of this node took `uid` (none: unbound), keeping its groups. */
  bound(client: string, uid: string | undefined): void;
  /** A connection of this node joined `group`. */
  joined(client: string, group: string): void;
  /** A connection of this node left `group`. */
  left(client: string, group: string): void;
  /** The cluster's counts; rejects when the backend cannot answer now. */
  counts(): Promise<ClusterCounts>;
  /** Connections `uid` has in the whole cluster; rejects as `counts`. */
  connectionsOf(uid: string): Promise<number>;
  /** Members (connections) `group` has in the whole cluster; rejects as `counts`. */
  membersOf(group: string): Promise<number>;
  /**
   * The presence of `group` in the whole cluster, read after every change this node told before
   * the call: one entry per uid with a connection in it, with that uid's `info`, and the group's
   * members (connections). Rejects as `counts`.
   */
  presence(group: string): Promise<{ members: { uid: string; info: unknown }[]; size: number }>;
  /**
   * `client` (of `uid`) of this node takes `key` in `group` for `ttlMs` (none: until released),
   * or renews it when it holds it; refused when another connection holds it or `client` holds
   * `max` keys already (0: no bound). Every node's members of the group are told (a `lock` event).
   * Rejects as `counts`. The caller checks that the client is a member of the group.
   */
  lock(
    client: string,
    uid: string | undefined,
    group: string,
    key: string,
    ttlMs: number | undefined,
    max: number,
  ): Promise<LockTaken>;
  /**
   * Releases `key` in `group` if `client` holds it (none: whoever does, the API's break); the
   * members are told. Answers 1 released, 0 not locked, -1 held by another connection.
   */
  unlock(client: string | undefined, group: string, key: string): Promise<number>;
  /** Releases `key` in `group` if its ttl has passed (its holder's node calls it at the time). */
  expire(group: string, key: string): Promise<void>;
  /** The locks of `group`, on every node, oldest first. */
  locks(group: string): Promise<HeldLock[]>;
  /**
   * Sets the most members (connections) `group` may have, on every node (null: back to
   * MAX_GROUP_MEMBERS); every node is told (a `capacity` event). Rejects as `counts`.
   */
  setCapacity(group: string, maxMembers: number | null): Promise<void>;
  /** Every group's capacity set through `setCapacity`; rejects as `counts`. */
  capacities(): Promise<Map<string, number>>;
}

/** A change of the cluster's presence that webhooks report (RedisPresenceOptions.onChange). */
export type PresenceChange = "uid.online" | "uid.offline" | "group.created" | "group.vacated";

/** A lock as frames and the API show it. */
export interface HeldLock {
  key: string;
  holder: { uid: string | null; client: string };
  /** Milliseconds since the epoch; null when it lasts until released. */
  expiresAt: number | null;
}

/** What a `lock` got: the lock, the lock another connection holds, or the bound it reached. */
export type LockTaken = { taken: HeldLock } | { heldBy: HeldLock } | { tooMany: number };

/**
 * A uid's first connection in a group, cluster-wide, joined it, or its last one left: what the
 * group's watchers on every node are told (hub.ts's presence events).
 */
export interface PresenceEvent {
  type: "join" | "leave" | "lock" | "unlock" | "capacity";
  group: string;
  /** join and leave only. */
  uid?: string;
  /** The `info` of the joining connection; join only. */
  info?: unknown;
  /** The key locked or unlocked; lock and unlock only. */
  key?: string;
  /** lock only. */
  holder?: { uid: string | null; client: string };
  /** lock only. */
  expiresAt?: number | null;
  /** capacity only: the group's own bound, or null for MAX_GROUP_MEMBERS. */
  maxMembers?: number | null;
  /** The connection whose join, leave, lock or unlock it was: it is not told its own. */
  client: string;
  /** The group's members (connections), cluster-wide, after a join and before a leave; only those. */
  size?: number;
}
