/**
 * The hub owns the connected clients and decides who receives a message.
 *
 * Invariant: the indexes (client id → client, uid → clients, group → members) change only in
 * `#attach`, `#detach`, `#setUid`, `#join` and `#leave`, and a client leaves through `#detach`
 * exactly once, whatever closed it. `#detach` leaves every group and the uid index first, so no
 * index ever holds a closed client, and an emptied uid or group is removed, never left behind
 * (gateway-websocket leaked both). A uid may have any number of clients; closing one never touches
 * another (go-pusher's second login evicted the first, and the first's close removed the second).
 */
import type { CapacityStore } from "./capacities.ts";
import { SmallSet } from "./smallset.ts";
import type { Identity } from "./authenticator.ts";
import { Client, type ClientEvents, CloseCode, type Format, type Socket } from "./client.ts";
import { countFrom, type IdSource } from "./message/ids.ts";
import type {
  DeliveryStatus,
  LatestQuery,
  LoggedMessage,
  MessageLogger,
} from "./message/logger.ts";
import { Message, PROTOCOL_VERSION, type Target, targetKey } from "./message/message.ts";
import type { Metrics } from "./metrics.ts";
import { permissionsOf } from "./permissions.ts";
import { DEFAULT_MAX_LOCKS_PER_CONNECTION, type Lock, Locks } from "./locks.ts";
import type { Broker, Origin } from "./engine/broker.ts";
import { webhookEvent, type WebhookSink, type WebhookType } from "./webhook/events.ts";
import { UidHooks } from "./webhook/uids.ts";
import type {
  ClusterCounts,
  LockTaken,
  PresenceChange,
  PresenceEvent,
  PresenceRegistry,
  PresentClient,
} from "./engine/presence.ts";
import { MemoryBroker } from "./engine/broker_memory.ts";
import type { HistoryPage, HistoryStore } from "./engine/history.ts";
import { Resume, type ResumeOutcome } from "./engine/resume.ts";
import {
  ALL_STREAM,
  groupStream,
  type Publication,
  type Sender,
  type StreamName,
  uidStream,
} from "./engine/stream.ts";

/** Called when a push could not be delivered on a connection; for alerting, never for control. */
export type DeliveryErrorHandler = (
  error: { messageId: number; target: string; clientId: string; how: "failed" | "dropped" },
) => void;

/**
 * The outcome of a push. In a cluster, the connections of other nodes count as the presence
 * registry listed them when the message was published: they were handed it through the broker,
 * and their own nodes write it.
 */
export interface SendResult {
  id: number;
  /** Connections the message was written or queued to. */
  delivered: number;
  /** Connections the target had; 0 means it was offline (or unknown). */
  connections: number;
  /** True when the target was an offline uid and the mailbox keeps it for its next connection. */
  queued?: true;
}

/** One uid of a group's presence: the uid, and the token `info` of one of its connections there. */
export interface Member {
  uid: string;
  info: unknown;
}

/** A group's members, counted per uid so that presence knows a uid's first and last connection. */
interface Group {
  members: Set<Client>;
  /** The members that asked for presence events: an event costs one frame per watcher. */
  watchers: Set<Client>;
  /** uid → how many of its connections are members. Unbound clients are not counted. */
  uids: Map<string, number>;
}

/**
 * Presence events are sent in groups of at most this many members unless told otherwise: past it,
 * every join and leave would cost a frame per watcher, and a reconnect storm into the group N².
 */
export const DEFAULT_MAX_PRESENCE_MEMBERS = 1000; // MAX_PRESENCE_MEMBERS's default in config.ts

/** How long a connection may stay behind unless told otherwise (SLOW_CONSUMER_TIMEOUT's default). */
export const DEFAULT_SLOW_CONSUMER_TIMEOUT_MS = 5000;

/** What a hub is built from; the optional ones have working defaults. */
export interface HubOptions {
  logger: MessageLogger;
  metrics: Metrics;
  /** Outbound bytes a connection may fall behind by for up to `slowConsumerTimeout` (4008 then). */
  maxQueueBytes: number;
  /**
   * Milliseconds a connection may stay more than `maxQueueBytes` behind before it is cut off
   * (4008); 0 cuts it off at once. Default DEFAULT_SLOW_CONSUMER_TIMEOUT_MS.
   */
  slowConsumerTimeout?: number;
  /**
   * Members (connections) a group may have and still send join and leave events; a larger group
   * sends none, so that one join costs at most this many frames. 0: no limit. Default
   * DEFAULT_MAX_PRESENCE_MEMBERS.
   */
  maxPresenceMembers?: number;
  onDeliveryError?: DeliveryErrorHandler;
  /** Where message ids come from; by default, in memory, on from `logger.lastId()`. */
  ids?: IdSource;
  /**
   * Where the messages of uids, groups and everyone are kept, for clients that resume with `since`
   * (HISTORY_SIZE); none keeps nothing. A send is pushed once the store has kept it.
   */
  history?: HistoryStore;
  /**
   * What assigns ids to the messages of streams, has `history` keep them and carries them to the
   * hub (engine/broker.ts); by default a MemoryBroker on `ids` and `history`, for one process. A
   * cluster's broker (engine/broker_redis.ts) carries the other nodes' messages too; it must keep
   * them in the same `history`, and hand the hub every publication in increasing id order.
   */
  broker?: Broker;
  /**
   * Milliseconds a message to an offline uid waits in the mailbox for the uid's next connection
   * (OFFLINE_TTL); 0, the default, keeps no mailbox. Needs `history`, which keeps the messages.
   */
  offlineTtl?: number;
  /** Members (connections) a group may have unless its settings say otherwise; 0: no bound. */
  maxGroupMembers?: number;
  /**
   * Where a single node keeps the groups' own bounds set through the API (capacities.ts), and
   * what it had kept (its `load()`, read by the caller at the start); none keeps them in memory
   * only. A cluster keeps them in `presence`.
   */
  capacities?: { store: CapacityStore; kept: ReadonlyMap<string, number> };
  /** Keys one connection may lock at once (DEFAULT_MAX_LOCKS_PER_CONNECTION); 0: no bound. */
  maxLocksPerConnection?: number;
  /**
   * The cluster's presence registry (engine/presence.ts), told of every change to the indexes;
   * none for a single node. With one, the hub is a node of a cluster named `presence.node`: its
   * `broker` must be the cluster's, tell it the origin of each publication (broker.ts's Origin)
   * and have `publishToClient`, and a send's counts are the cluster's (see SendResult).
   */
  presence?: PresenceRegistry;
  /**
   * Where webhook events go (webhook/events.ts; WEBHOOK_URL): connects and disconnects, joins and
   * leaves, groups created and vacated, clients' own messages, undelivered and acked messages,
   * and uids online and offline (debounced by `offlineDelay`). None: nothing is made.
   */
  webhooks?: WebhookSink;
  /** Milliseconds a uid stays online after its last connection closed (WEBHOOK_OFFLINE_DELAY). */
  offlineDelay?: number;
}

/** A lock as frames and the API show it. */
export interface LockView {
  key: string;
  holder: { uid: string | null; client: string };
  /** Milliseconds since the epoch; null when it lasts until released. */
  expiresAt: number | null;
}

/** Why a `join` was refused: the group holds its maximum of members. */
export const GROUP_FULL = "group is full";

/** Thrown by a send when the history store could not keep the message: nothing was pushed. */
export class StoreUnavailableError extends Error {}

/** One page of a list, and where the next one starts (null at the end). */
export interface Page<T> {
  items: T[];
  total: number;
  next: number | null;
}

function page<T>(source: Iterable<T>, total: number, offset: number, limit: number): Page<T> {
  const items: T[] = [];
  let i = 0;
  for (const item of source) {
    if (i++ < offset) continue;
    if (items.length === limit) break;
    items.push(item);
  }
  return { items, total, next: offset + items.length < total ? offset + items.length : null };
}

/** The set of connections and the delivery of pushes to them. */
export class Hub {
  readonly #clients = new Map<string, Client>();
  readonly #byUid = new Map<string, SmallSet<Client>>();
  readonly #groups = new Map<string, Group>();
  readonly #logger: MessageLogger;
  readonly #metrics: Metrics;
  readonly #maxQueueBytes: number;
  readonly #slowConsumerTimeout: number;
  readonly #maxPresenceMembers: number;
  readonly #onDeliveryError: DeliveryErrorHandler;
  readonly #events: ClientEvents;
  readonly #ids: IdSource;
  readonly #history: HistoryStore | undefined;
  /** See HubOptions.offlineTtl; 0 when there is no mailbox. */
  readonly #offlineTtl: number;
  /** Assigns ids to the messages of streams, has them kept, then hands them to `#deliver`. */
  readonly #broker: Broker;
  /** The id of the last publication the broker handed the hub: where a resume's replay ends. */
  #horizon = 0;
  /** What `#deliver` found for each publication, for the send that is waiting for it. */
  readonly #results = new Map<number, SendResult>();
  /** Clients replaying history: live messages go through their resume until it has flushed. */
  readonly #resuming = new Map<Client, Resume>();
  /**
   * The message behind each live publication handed to a resume, so that what a resume passes on
   * later shares its frames instead of being encoded again for every resuming client.
   */
  readonly #liveMessages = new WeakMap<Publication, Message>();
  /** Frames waiting in client queues, all clients together. */
  #pending = 0;
  readonly #maxGroupMembers: number;
  /** Per-group bounds set through the API, over MAX_GROUP_MEMBERS, as kept (see `setCapacity`). */
  readonly #capacities: Map<string, number>;
  /** Where a single node keeps #capacities across restarts; none in a cluster (the registry). */
  readonly #capacityStore: CapacityStore | undefined;
  readonly #locks: Locks;
  readonly #maxLocksPerConnection: number;
  /** In a cluster, the expiry of the locks this node's connections took with a ttl. */
  readonly #lockTimers = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #registry: PresenceRegistry | undefined;
  readonly #webhooks: WebhookSink | undefined;
  readonly #uidHooks: UidHooks | undefined;
  /**
   * group → its connections that joined by socket and wait for the cluster's snapshot, with the
   * presence frames that came meanwhile (see joinBySocket).
   */
  readonly #joining = new Map<string, Map<Client, string[]>>();
  /** This node's name in a cluster; undefined for a single node. */
  readonly #node: string | undefined;

  constructor(options: HubOptions) {
    this.#logger = options.logger;
    this.#metrics = options.metrics;
    this.#maxQueueBytes = options.maxQueueBytes;
    this.#slowConsumerTimeout = options.slowConsumerTimeout ?? DEFAULT_SLOW_CONSUMER_TIMEOUT_MS;
    this.#maxPresenceMembers = options.maxPresenceMembers ?? DEFAULT_MAX_PRESENCE_MEMBERS;
    this.#onDeliveryError = options.onDeliveryError ?? (() => {});
    this.#ids = options.ids ?? countFrom(this.#logger.lastId());
    this.#events = this.#clientEvents();
    this.#history = options.history;
    this.#offlineTtl = options.history ? options.offlineTtl ?? 0 : 0;
    this.#maxGroupMembers = options.maxGroupMembers ?? 0;
    this.#registry = options.presence;
    const capacities = options.presence ? undefined : options.capacities;
    this.#capacityStore = capacities?.store;
    this.#capacities = new Map(capacities?.kept);
    this.#webhooks = options.webhooks;
    // In a cluster, the registry tells who is online and which groups exist (`clusterChanged`).
    this.#uidHooks = options.webhooks && !options.presence
      ? new UidHooks(options.webhooks, options.offlineDelay)
      : undefined;
    this.#node = options.presence?.node;
    this.#maxLocksPerConnection = options.maxLocksPerConnection ??
      DEFAULT_MAX_LOCKS_PER_CONNECTION;
    this.#locks = new Locks(
      this.#maxLocksPerConnection,
      (lock) => this.#released([lock]),
    );
    // Every id of an earlier run is at or below where the ids start: all of it was kept before this
    // hub was made, so a resume from any of it reads history (engine/resume.ts's horizon).
    this.#horizon = this.#ids.last;
    this.#broker = options.broker ?? new MemoryBroker({ ids: this.#ids, history: this.#history });
    this.#broker.subscribe((publication, origin) => this.#deliver(publication, origin));
  }

  /**
   * Every id up to `id` is kept in history or was handed to this hub already: a cluster's node
   * tells it, once its broker is subscribed, the cluster's last id, so that a resume from any
   * earlier id reads history (engine/resume.ts's horizon). Never lowers the horizon.
   */
  caughtUp(id: number): void {
    this.#horizon = Math.max(this.#horizon, id);
  }

  /** This node's connections, with their uids and groups: what the presence registry lists. */
  *present(): Iterable<PresentClient> {
    for (const client of this.#clients.values()) {
      yield { id: client.id, uid: client.uid, info: client.info, groups: [...client.groups] };
    }
  }

  /** Whether this hub is a node of a cluster (it has a presence registry). */
  get clustered(): boolean {
    return this.#registry !== undefined;
  }

  /** Whether messages are kept for clients that resume (HISTORY_SIZE > 0). */
  get keepsHistory(): boolean {
    return this.#history !== undefined;
  }

  /** Whether a message to an offline uid waits for its next connection (OFFLINE_TTL > 0). */
  get queuesOffline(): boolean {
    return this.#offlineTtl > 0;
  }

  /**
   * A page of what `stream` keeps after message `since`, oldest first (see engine/history.ts);
   * undefined when no history is kept.
   */
  history(stream: StreamName, since: number, limit: number): Promise<HistoryPage> | undefined {
    return this.#history?.read(stream, since, limit);
  }

  /**
   * Message `id` as the message log keeps it, with its status and counts; undefined when the log
   * has no such message, null when the log cannot be read (MESSAGE_LOGGER other than sqlite).
   * Throws what the log's store threw.
   */
  message(id: number): LoggedMessage | undefined | null {
    return this.#logger.find ? this.#logger.find(id) : null;
  }

  /**
   * The latest messages of this node's log, newest first (see MessageLogger.latest); null when the
   * log cannot be read. Throws what the log's store threw.
   */
  messages(query: LatestQuery): LoggedMessage[] | null {
    return this.#logger.latest ? this.#logger.latest(query) : null;
  }

  /** Connections now. */
  get connections(): number {
    return this.#clients.size;
  }

  /** Distinct uids with at least one connection. */
  get users(): number {
    return this.#byUid.size;
  }

  /** Groups with at least one member. */
  get groupCount(): number {
    return this.#groups.size;
  }

  /** Frames queued behind backed-up sockets, counted exactly. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * The counts of the whole cluster, every node's connections together; this node's alone when it
   * is no cluster's. Rejects with StoreUnavailableError when the presence registry cannot answer.
   */
  counts(): Promise<ClusterCounts> {
    if (!this.#registry) {
      return Promise.resolve({
        nodes: 1,
        connections: this.#clients.size,
        uids: this.#byUid.size,
        groups: this.#groups.size,
      });
    }
    return this.#registryAnswer(this.#registry.counts());
  }

  /** How many connections `uid` has in the whole cluster; rejects as `counts`. */
  connectionsAnywhere(uid: string): Promise<number> {
    if (!this.#registry) return Promise.resolve(this.connectionsOf(uid));
    return this.#registryAnswer(this.#registry.connectionsOf(uid));
  }

  async #registryAnswer<T>(answer: Promise<T>): Promise<T> {
    try {
      return await answer;
    } catch (err) {
      throw new StoreUnavailableError(
        `the cluster's presence cannot be read now: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
  }

  /** The client with this id, if connected. */
  client(id: string): Client | undefined {
    return this.#clients.get(id);
  }

  /** How many connections `uid` has. */
  connectionsOf(uid: string): number {
    return this.#byUid.get(uid)?.size ?? 0;
  }

  /** A page of connected clients, in connection order. */
  clients(offset: number, limit: number): Page<Client> {
    return page(this.#clients.values(), this.#clients.size, offset, limit);
  }

  /** A page of online uids, in order of their first current connection. */
  uids(offset: number, limit: number): Page<string> {
    return page(this.#byUid.keys(), this.#byUid.size, offset, limit);
  }

  /** A page of `uid`'s clients; undefined when the uid is offline. */
  clientsOf(uid: string, offset: number, limit: number): Page<Client> | undefined {
    const set = this.#byUid.get(uid);
    return set && page(set, set.size, offset, limit);
  }

  /** A page of group names. */
  groups(offset: number, limit: number): Page<string> {
    return page(this.#groups.keys(), this.#groups.size, offset, limit);
  }

  /** A page of a group's members; undefined for an unknown group. */
  members(group: string, offset: number, limit: number): Page<Client> | undefined {
    const g = this.#groups.get(group);
    return g && page(g.members, g.members.size, offset, limit);
  }

  /** A group's member count and distinct uid count; undefined for an unknown group. */
  groupSize(group: string): { members: number; uids: number } | undefined {
    const g = this.#groups.get(group);
    return g && { members: g.members.size, uids: g.uids.size };
  }

  /**
   * Registers an authenticated socket. In the json format the client first gets a `welcome`
   * frame with its id; then it joins the identity's groups.
   */
  connect(
    identity: Identity,
    format: Format,
    socket: Socket,
    presence = false,
    since?: number,
  ): Client {
    const client = new Client({
      uid: identity.uid,
      format,
      socket,
      events: this.#events,
      maxQueueBytes: this.#maxQueueBytes,
      slowConsumerTimeout: this.#slowConsumerTimeout,
      info: identity.info,
      presence,
      permissions: permissionsOf(identity.permissions),
    });
    this.#attach(client);
    // A group of the token that is full is not joined, and the welcome says so.
    const groups: string[] = [];
    const full: string[] = [];
    for (const name of new Set(identity.groups ?? [])) {
      (this.#hasRoom(name, 1) ? groups : full).push(name);
    }
    const welcome = (resumed?: ResumeOutcome) => {
      if (format !== "json") return;
      client.control(JSON.stringify({
        type: "welcome",
        v: PROTOCOL_VERSION,
        client: client.id,
        uid: identity.uid,
        format,
        ...resumed,
        ...(full.length > 0 ? { full } : {}),
      }));
    };
    if (since !== undefined && this.#history) {
      const streams: StreamName[] = [ALL_STREAM, ...groups.map(groupStream)];
      streams.push(uidStream(identity.uid));
      this.#resume(client, since, streams, welcome);
    } else if (this.#offlineTtl > 0) {
      // The mailbox: what its uid was sent and none of its sockets was written, within OFFLINE_TTL.
      const uid = identity.uid;
      const mark = this.#history!.writtenThrough(uid);
      // A cluster's other nodes may have written the uid more since: their marks are in Redis.
      const shared = this.#history!.sharedMark?.(uid);
      this.#resume(client, mark, [uidStream(uid)], () => welcome(), true, shared);
    } else welcome();
    for (const group of groups) this.#join(client, group);
    return client;
  }

  /**
   * Replays to `client` what `streams` were sent after `since`, then its live messages, with no
   * gap and no repeat at the seam (engine/resume.ts): from now on its live messages wait in the
   * resume until the replay is out. The welcome, told what the resume found, goes first.
   *
   * A resume with `since` replays the connection's uid, its groups and everyone. The mailbox is a
   * resume too, of the uid's stream only, from the uid's written mark; it passes on only what is
   * younger than OFFLINE_TTL (older ones have expired), and settles what it writes `delivered`.
   */
  #resume(
    client: Client,
    since: number,
    streams: StreamName[],
    welcome: (resumed: ResumeOutcome) => void,
    mailbox = false,
    sharedMark?: Promise<number>,
  ): void {
    const horizon = this.#horizon;
    const expired = Date.now() - this.#offlineTtl;
    /** The mailbox mails nothing at or below it: `since`, or the cluster's mark once read. */
    let written = since;
    const resume = new Resume({
      streams,
      since,
      horizon,
      history: this.#history!,
      deliver: (publication) => {
        if (!mailbox || publication.id > horizon) client.push(this.#replayed(publication));
        else if (publication.ts >= expired && publication.id > written) {
          client.push(this.#replayed(publication, true));
        }
      },
    });
    this.#resuming.set(client, resume);
    const marked = sharedMark?.then(
      (mark) => void (written = Math.max(written, mark)),
      (err) =>
        console.error(
          `mailbox of client ${client.id}: ${err.message}; mailing from this node's mark`,
        ),
    );
    Promise.all([
      resume.read().catch(() => ({ recovered: false, replayed: 0 })),
      marked,
    ]).then(([outcome]) => {
      if (client.closed || this.#resuming.get(client) !== resume) return;
      welcome(outcome);
      resume.flush();
      this.#resuming.delete(client);
      // Presence events start after the welcome, which comes first; they are not kept, so the
      // ones of the replay's moment are not told (GET /api/groups/{group}/members tells all).
      if (client.presence) {
        for (const name of client.groups) this.#groups.get(name)?.watchers.add(client);
      }
    }).catch((err) => {
      // Never an unhandled rejection (it would end a Deno process): the client is closed instead.
      console.error(`resume of client ${client.id}: ${err}`);
      this.close(client, 1011, "resume failed");
    });
  }

  /**
   * The message a resume passes on to one client: a live one shares the frames of the message
   * every other connection got; one read back from history is built for it (its log row is long
   * settled either way).
   */
  #replayed(publication: Publication, mailed = false): Message {
    const live = this.#liveMessages.get(publication);
    if (live) return live.resent();
    const message = new Message(
      publication.id,
      targetOf(publication.stream),
      publication.data,
      publication.ts,
      undefined,
      publication.from,
    )
      .resent();
    message.mailed = mailed;
    return message;
  }

  /** The socket of `client` closed (either side): it leaves the hub. Idempotent. */
  /**
   * The socket of `client` closed (either side), with `code` and `reason` as the runtime saw them:
   * it leaves the hub. Idempotent.
   */
  disconnected(client: Client, code = 1000, reason = ""): void {
    this.#detach(client, code, reason);
  }

  /** Tells the webhooks, when there are any, of an event of `type` with `fields`. */
  #hook(type: WebhookType, fields: Record<string, unknown>): void {
    this.#webhooks?.emit(webhookEvent(type, fields));
  }

  /** Message `id` to `uid` left the mailbox unsent (OFFLINE_TTL passed): the webhooks are told. */
  expired(id: number, uid: string): void {
    const target = targetKey({ uid });
    this.#hook("message.undelivered", { messageId: id, target, status: "expired", uid });
  }

  /**
   * A change of the cluster's presence, from its registry: a uid online or offline, a group
   * created or vacated, once for the whole cluster. The webhooks are told.
   */
  clusterChanged(change: PresenceChange, name: string): void {
    this.#hook(change, change.startsWith("uid.") ? { uid: name } : { group: name });
  }

  /** Tells now the uids' `uid.offline` still waiting for WEBHOOK_OFFLINE_DELAY (shutdown). */
  flushWebhooks(): void {
    this.#uidHooks?.flush();
  }

  /** Closes `client` with `code` and removes it. Idempotent. */
  close(client: Client, code: number, reason: string): void {
    this.#detach(client, code, reason);
  }

  /** Closes every connection of `uid` (logout); returns how many. */
  closeUid(uid: string, code: number, reason: string): number {
    const set = this.#byUid.get(uid);
    if (!set) return 0;
    const clients = [...set];
    for (const client of clients) this.#detach(client, code, reason);
    return clients.length;
  }

  /** Closes every client with `code`; used at shutdown. */
  closeAll(code: number, reason: string): void {
    for (const client of [...this.#clients.values()]) this.#detach(client, code, reason);
  }

  /** Binds `client` to `uid` (or unbinds it with undefined), keeping its groups. */
  bind(client: Client, uid: string | undefined): void {
    if (client.uid === uid || client.closed) return;
    // Leaving and rejoining each group keeps the presence counts, and their events, right.
    const groups = [...client.groups];
    for (const group of groups) this.#leave(client, group);
    this.#setUid(client, uid);
    this.#registry?.bound(client.id, uid);
    for (const group of groups) this.#join(client, group);
  }

  /** Adds `client` to `group`, creating the group. Idempotent. */
  join(client: Client, group: string): void {
    if (!client.closed) this.#join(client, group);
  }

  /**
   * `client` joins `group` by itself (a `join` frame) and hears the group's `join` and `leave`
   * events from now on. `answer` is given the group's presence taken with the join, its own uid
   * included (members null when the group is over MAX_PRESENCE_MEMBERS, whose presence is not
   * told: see `#presence`), before any event after it, so that no event falls between the snapshot
   * and the events after it. On one node the snapshot is taken in the same tick as the join; in a
   * cluster it is read from the registry after the join, and the events that come meanwhile wait
   * for the answer (one may repeat what the snapshot shows, none is lost). Resolves with
   * GROUP_FULL, and no answer, when the group holds its maximum; rejects with
   * StoreUnavailableError when the registry cannot answer (the client stays a member).
   */
  async joinBySocket(
    client: Client,
    name: string,
    answer: (joined: { members: Member[] | null; locks: LockView[] }) => void,
  ): Promise<typeof GROUP_FULL | undefined> {
    if (client.closed) return;
    if (!client.groups.has(name)) {
      // Awaited only for a cluster's bounded group: on one node the join happens in this call, so
      // a socket's join and a leave right after it are done in the order they came.
      const room = this.#registry && this.capacity(name) > 0
        ? await this.#hasRoomAnywhere(name)
        : this.#hasRoom(name, 1);
      if (!room) return GROUP_FULL;
      if (client.closed) return;
    }
    this.#join(client, name);
    if (!this.#registry) {
      this.#groups.get(name)!.watchers.add(client);
      const locks = this.#locks.of(name).map(lockView);
      answer({ members: this.#snapshot(this.#groups.get(name)!), locks });
      return;
    }
    const waiting: string[] = [];
    let joining = this.#joining.get(name);
    if (!joining) this.#joining.set(name, joining = new Map());
    joining.set(client, waiting);
    let members: Member[] | null, locks: LockView[];
    try {
      members = await this.#clusterPresence(name);
      locks = await this.#registryAnswer(this.#registry.locks(name));
    } finally {
      joining.delete(client);
      if (joining.size === 0 && this.#joining.get(name) === joining) this.#joining.delete(name);
    }
    if (client.closed) return;
    answer({ members, locks });
    const group = this.#groups.get(name);
    if (!group?.members.has(client)) return; // it left meanwhile: no events for it any more
    for (const frame of waiting) client.control(frame);
    group.watchers.add(client);
  }

  /** The cluster's presence of `name`, or null over MAX_PRESENCE_MEMBERS; rejects as `counts`. */
  async #clusterPresence(name: string): Promise<Member[] | null> {
    const { members, size } = await this.#registryAnswer(this.#registry!.presence(name));
    const cap = this.#maxPresenceMembers;
    return cap > 0 && size > cap ? null : members;
  }

  /**
   * A presence event of the cluster (engine/presence.ts), from the registry: this node's watchers
   * of its group are told, but the connection it is about. Nothing when the group is over
   * MAX_PRESENCE_MEMBERS (counted in presence_events_suppressed_total).
   */
  told(event: PresenceEvent): void {
    if (event.type === "capacity") {
      if (event.maxMembers === null || event.maxMembers === undefined) {
        this.#capacities.delete(event.group);
      } else this.#capacities.set(event.group, event.maxMembers);
      return;
    }
    const group = this.#groups.get(event.group);
    const joining = this.#joining.get(event.group);
    if (event.type === "lock" || event.type === "unlock") {
      // Every member hears of locks, watcher or not; one that waits for its `joined` after it.
      const { type, group: name, key, holder, expiresAt } = event;
      const frame = JSON.stringify(
        type === "lock"
          ? { type, group: name, key, holder, expiresAt }
          : { type, group: name, key },
      );
      for (const member of group?.members ?? []) {
        if (member.id === event.client) continue;
        const waiting = joining?.get(member);
        if (waiting) waiting.push(frame);
        else member.control(frame);
      }
      return;
    }
    if (!group?.watchers.size && !joining) return;
    const cap = this.#maxPresenceMembers;
    if (cap > 0 && (event.size ?? 0) > cap) {
      this.#metrics.presenceSuppressed++;
      return;
    }
    const { type, group: name, uid, info } = event;
    const frame = JSON.stringify(
      type === "join" ? { type, group: name, uid, info: info ?? null } : { type, group: name, uid },
    );
    for (const watcher of group?.watchers ?? []) {
      if (watcher.id !== event.client) watcher.control(frame);
    }
    for (const [client, waiting] of joining ?? []) {
      if (client.id !== event.client) waiting.push(frame);
    }
  }

  /** Whether one more connection fits in `group`, counting every node's members. */
  async #hasRoomAnywhere(group: string): Promise<boolean> {
    return (await this.roomAnywhere(group, 1)).room;
  }

  /**
   * Whether `newcomers` more connections fit in `group`, counting every node's members in a
   * cluster, and how many members it has now. Rejects as `counts`.
   */
  async roomAnywhere(
    group: string,
    newcomers: number,
  ): Promise<{ room: boolean; members: number }> {
    const members = this.#registry
      ? await this.#registryAnswer(this.#registry.membersOf(group))
      : this.#groups.get(group)?.members.size ?? 0;
    const cap = this.capacity(group);
    return { room: cap === 0 || members + newcomers <= cap, members };
  }

  /**
   * Members (connections) `group` may have: its own bound set through the API, else
   * MAX_GROUP_MEMBERS; 0 for no bound.
   */
  capacity(group: string): number {
    return this.#capacities.get(group) ?? this.#maxGroupMembers;
  }

  /** Whether `group` has a bound of its own (set through the API). */
  hasOwnCapacity(group: string): boolean {
    return this.#capacities.has(group);
  }

  /**
   * Sets `group`'s own bound (0: none), or with null goes back to MAX_GROUP_MEMBERS; on every node
   * of a cluster (kept in its registry), else in HubOptions.capacities. Rejects with
   * StoreUnavailableError when the registry or the store cannot keep it (nothing changed then).
   */
  async setCapacity(group: string, maxMembers: number | null): Promise<void> {
    if (this.#registry) {
      await this.#registryAnswer(this.#registry.setCapacity(group, maxMembers));
    } else if (this.#capacityStore) {
      const next = new Map(this.#capacities);
      if (maxMembers === null) next.delete(group);
      else next.set(group, maxMembers);
      try {
        this.#capacityStore.save(next);
      } catch (err) {
        throw new StoreUnavailableError((err as Error).message, { cause: err });
      }
    }
    // Only once it is kept: a bound the store does not have would be gone after a restart.
    if (maxMembers === null) this.#capacities.delete(group);
    else this.#capacities.set(group, maxMembers);
  }

  /**
   * Takes the cluster's group capacities from its registry (a node does when it joins; the
   * `capacity` events keep them after). Rejects as `setCapacity`.
   */
  async loadCapacities(): Promise<void> {
    if (!this.#registry) return;
    const capacities = await this.#registryAnswer(this.#registry.capacities());
    for (const [group, max] of capacities) this.#capacities.set(group, max);
  }

  /** Whether `newcomers` more connections fit in `group`. */
  #hasRoom(group: string, newcomers: number): boolean {
    const cap = this.capacity(group);
    return cap === 0 || (this.#groups.get(group)?.members.size ?? 0) + newcomers <= cap;
  }

  /**
   * Whether `clients` may all join `group` now: those not yet in it fit under its capacity. The API
   * asks before it joins them, so a join is all or nothing.
   */
  hasRoomFor(clients: readonly Client[], group: string): boolean {
    return this.#hasRoom(group, clients.filter((c) => !c.groups.has(group)).length);
  }

  /**
   * `client` locks `key` in `group`, of which it must be a member, for `ttl` seconds (none: until
   * it unlocks, leaves or closes). The other members are told (`lock` event), on every node of a
   * cluster, where the lock is the cluster's. Answers the lock, or why not, in words for the
   * client; rejects with StoreUnavailableError when the registry cannot answer.
   */
  async lock(client: Client, group: string, key: string, ttl?: number): Promise<LockView | string> {
    if (!client.groups.has(group)) return `not a member of ${group}: join it first`;
    const max = this.#maxLocksPerConnection;
    let taken: LockTaken;
    if (this.#registry) {
      const ttlMs = ttl === undefined ? undefined : ttl * 1000;
      taken = await this.#registryAnswer(
        this.#registry.lock(client.id, client.uid, group, key, ttlMs, max),
      );
      if ("taken" in taken && ttlMs !== undefined) this.#expireLater(group, key, ttlMs);
    } else {
      const local = this.#locks.take(client, group, key, ttl);
      taken = "heldBy" in local
        ? { heldBy: lockView(this.#locks.get(group, key)!) }
        : "tooMany" in local
        ? local
        : { taken: lockView(local) };
      if ("taken" in taken) {
        this.#tellMembers(group, { type: "lock", group, ...taken.taken }, client);
      }
    }
    if ("heldBy" in taken) {
      const by = taken.heldBy.holder;
      return `${key} in ${group} is locked by ${
        by.uid ?? "an unbound connection"
      } (client ${by.client})`;
    }
    if ("tooMany" in taken) {
      return `this connection holds ${taken.tooMany} locks already (MAX_LOCKS_PER_CONNECTION)`;
    }
    return taken.taken;
  }

  /** In a cluster, the holder's node releases a lock whose ttl passed (the registry checks it). */
  #expireLater(group: string, key: string, ttlMs: number): void {
    const name = JSON.stringify([group, key]);
    clearTimeout(this.#lockTimers.get(name));
    this.#lockTimers.set(
      name,
      setTimeout(() => {
        this.#lockTimers.delete(name);
        this.#registry!.expire(group, key).catch((err) =>
          console.error(`lock ${key} in ${group}: not expired: ${err.message}`)
        );
      }, ttlMs),
    );
  }

  /**
   * `client` releases its lock on `key` in `group`; the other members are told. Why not, or "";
   * rejects as `lock`.
   */
  async unlock(client: Client, group: string, key: string): Promise<string> {
    if (this.#registry) {
      const released = await this.#registryAnswer(this.#registry.unlock(client.id, group, key));
      if (released === 0) return `${key} in ${group} is not locked`;
      if (released < 0) return `${key} in ${group} is locked by another connection`;
      return "";
    }
    const lock = this.#locks.get(group, key);
    if (!lock) return `${key} in ${group} is not locked`;
    if (lock.holder !== client) return `${key} in ${group} is locked by another connection`;
    this.#locks.release(group, key);
    this.#tellMembers(group, { type: "unlock", group, key }, client);
    return "";
  }

  /** The locks of `group` (in a cluster, every node's), oldest first; rejects as `lock`. */
  async locks(group: string): Promise<LockView[]> {
    if (this.#registry) return await this.#registryAnswer(this.#registry.locks(group));
    return this.#locks.of(group).map(lockView);
  }

  /**
   * Breaks the lock on `key` in `group` (the API), wherever it is held; every member is told.
   * False when none; rejects as `lock`.
   */
  async breakLock(group: string, key: string): Promise<boolean> {
    if (this.#registry) {
      return await this.#registryAnswer(this.#registry.unlock(undefined, group, key)) === 1;
    }
    const lock = this.#locks.release(group, key);
    if (lock) this.#released([lock]);
    return lock !== undefined;
  }

  /** Tells every member of the locks' group of their release. */
  #released(locks: Lock[]): void {
    for (const { group, key } of locks) this.#tellMembers(group, { type: "unlock", group, key });
  }

  /** One frame to every member of `group` but `except`, encoded once. */
  #tellMembers(group: string, event: Record<string, unknown>, except?: Client): void {
    const members = this.#groups.get(group)?.members;
    if (!members) return;
    const frame = JSON.stringify(event);
    for (const member of members) if (member !== except) member.control(frame);
  }

  /**
   * The presence of `group`: one entry per uid with a connection in it (unbound connections are
   * not shown); [] for a group without members, null when it is over MAX_PRESENCE_MEMBERS.
   */
  async presence(name: string): Promise<Member[] | null> {
    if (this.#registry) return await this.#clusterPresence(name);
    const group = this.#groups.get(name);
    return group ? this.#snapshot(group) : [];
  }

  #snapshot(group: Group): Member[] | null {
    const cap = this.#maxPresenceMembers;
    if (cap > 0 && group.members.size > cap) return null;
    const members = new Map<string, Member>();
    for (const client of group.members) {
      const uid = client.uid;
      if (uid !== undefined && !members.has(uid)) members.set(uid, { uid, info: client.info });
    }
    return [...members.values()];
  }

  /** Removes `client` from `group`; an emptied group disappears. Idempotent. */
  leave(client: Client, group: string): void {
    this.#leave(client, group);
  }

  /** Removes every member of `group`; returns how many there were, or undefined if unknown. */
  dissolve(group: string): number | undefined {
    const g = this.#groups.get(group);
    if (!g) return undefined;
    const members = [...g.members];
    for (const client of members) this.#leave(client, group);
    return members.length;
  }

  /**
   * Pushes `data` to every connection of `uid` and logs it, once the history store (if any) has
   * kept it. The work is proportional to the uid's connections, never to all. Rejects with
   * StoreUnavailableError when the store could not keep it; nothing was pushed then.
   */
  sendToUid(uid: string, data: string): Promise<SendResult> {
    return this.#publishStream(uidStream(uid), data);
  }

  /**
   * Pushes to one connection; not kept (a client id dies with its socket). It goes through the
   * broker all the same, in id order behind the sends before it (and in a cluster to whichever
   * node has the connection); rejects as sendToUid does.
   */
  async sendToClient(id: string, data: string): Promise<SendResult> {
    this.#checkLog();
    return await this.#published(() => this.#broker.publishToClient(id, data));
  }

  /** Pushes to every member of `group`, once kept (see sendToUid). */
  sendToGroup(group: string, data: string): Promise<SendResult> {
    return this.#publishStream(groupStream(group), data);
  }

  /** Pushes to every connection, once kept (see sendToUid). */
  broadcast(data: string): Promise<SendResult> {
    return this.#publishStream(ALL_STREAM, data);
  }

  /**
   * Throws StoreUnavailableError while the message log refuses writes: a send would be pushed,
   * but its record would wait in memory with no promise of being kept.
   */
  #checkLog(): void {
    const failure = this.#logger.failure;
    if (failure) {
      throw new StoreUnavailableError(
        `the message log cannot keep messages now: ${failure.message}`,
        { cause: failure },
      );
    }
  }

  /**
   * A client's ack of message `id`, which it was sent: the message log records the first ack per
   * uid and the status `acked`. Answers why it is refused, or undefined; never throws.
   */
  ack(client: Client, id: unknown): string | undefined {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 1) {
      return "ack needs id: the id of a message (a whole number)";
    }
    if (!this.#logger.targetOf) {
      return "acks are not recorded: the message log is off (MESSAGE_LOGGER=sqlite records them)";
    }
    let target: string | undefined;
    try {
      target = this.#logger.targetOf(id);
    } catch (err) {
      console.error(`ack of message ${id}: ${err instanceof Error ? err.message : err}`);
      return "the message log cannot be read now; ack again later";
    }
    if (target === undefined) return `unknown message id: ${id}`;
    const uid = client.uid;
    const addressed = target === "all" || target === `client:${client.id}` ||
      (uid !== undefined && target === `uid:${uid}`) ||
      (target.startsWith("group:") && client.groups.has(target.slice(6)));
    if (!addressed) return `message ${id} was not sent to this connection`;
    if (uid === undefined) return "this connection has no uid to ack as";
    this.#logger.ack(id, uid, Date.now());
    this.#metrics.messagesAcked++;
    this.#hook("message.acked", { messageId: id, uid, client: client.id });
    return undefined;
  }

  /**
   * A client's own message to `group` (a `publish` frame), from `from`: every member gets it with
   * `from`, the sending connection only when `from.echo`. The caller has checked that it may.
   * Rejects as sendToGroup does.
   */
  async publishFrom(from: Sender, group: string, data: string): Promise<SendResult> {
    const result = await this.#publishStream(groupStream(group), data, from);
    const { uid, client } = from;
    this.#hook("message.client", { messageId: result.id, uid, client, group, data });
    return result;
  }

  /**
   * A client's own message to `uid` (a `send` frame), from `from`: every connection of `uid` gets it
   * with `from`, but the sending one itself (unless `from.echo`). Rejects as sendToUid does.
   */
  async sendFrom(from: Sender, uid: string, data: string): Promise<SendResult> {
    const result = await this.#publishStream(uidStream(uid), data, from);
    const { uid: sender, client } = from;
    this.#hook("message.client", { messageId: result.id, uid: sender, client, to: uid, data });
    return result;
  }

  async #publishStream(stream: StreamName, data: string, from?: Sender): Promise<SendResult> {
    this.#checkLog();
    return await this.#published(() => this.#broker.publish(stream, data, from));
  }

  /** What `#deliver` found for the publication `publishing` made, once it is delivered here. */
  async #published(publishing: () => Promise<Publication>): Promise<SendResult> {
    let publication: Publication;
    try {
      publication = await publishing();
    } catch (err) {
      throw new StoreUnavailableError(
        `the history store cannot keep messages now: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
    const result = this.#results.get(publication.id);
    this.#results.delete(publication.id);
    // Not delivered here: a cluster's broker lost its subscription meanwhile (it went to the
    // other nodes, and is in history for this node's clients to resume).
    return result ?? { id: publication.id, delivered: 0, connections: 0 };
  }

  /**
   * A publication the broker hands over, in id order: push it to its stream's connections here. In
   * a cluster, another node's publication for none of this node's connections is no business of
   * this node, and the counts of one of this node's own add the other nodes' (see SendResult).
   */
  #deliver(publication: Publication, origin?: Origin): void {
    this.#horizon = publication.id;
    const target = targetOf(publication.stream);
    let recipients: Iterable<Client> | undefined, here: number;
    if ("uid" in target) {
      const set = this.#byUid.get(target.uid);
      [recipients, here] = [set, set?.size ?? 0];
    } else if ("group" in target) {
      const members = this.#groups.get(target.group)?.members;
      [recipients, here] = [members, members?.size ?? 0];
    } else if ("client" in target) {
      const client = this.#clients.get(target.client);
      [recipients, here] = [client && [client], client ? 1 : 0];
    } else [recipients, here] = [this.#clients.values(), this.#clients.size];
    const { id, data, ts, from } = publication;
    const mine = origin === undefined || origin.node === this.#node;
    const elsewhere = origin ? Math.max(0, origin.reach - here) : 0;
    if (here === 0 && (!mine || elsewhere > 0)) {
      // Other nodes' connections take it, and their logs record it.
      if (mine) this.#results.set(id, { id, delivered: elsewhere, connections: elsewhere });
      return;
    }
    const result = this.#publish(target, recipients, id, data, ts, from);
    if (!mine) return;
    result.delivered += elsewhere;
    result.connections += elsewhere;
    this.#results.set(id, result);
  }

  /**
   * Pushes message `id` to `recipients`, and logs it. A client's own message (`from`) skips the
   * connection it came from, unless it asked for an echo.
   */
  #publish(
    target: Target,
    recipients: Iterable<Client> | undefined,
    id: number,
    data: string,
    ts: number,
    from?: Sender,
  ): SendResult {
    const message = new Message(id, target, data, ts, undefined, from);
    this.#metrics.messagesAccepted++;
    this.#logger.log({
      id,
      uid: "uid" in target ? target.uid : null,
      target: targetKey(target),
      message: data,
      createdAt: message.ts,
      status: "accepted",
    });
    // Copy first: a push can cut a slow client off, which edits the indexes.
    let clients = recipients ? [...recipients] : [];
    if (from && !from.echo) clients = clients.filter((c) => c.id !== from.client);
    if (clients.length === 0) {
      if (this.#offlineTtl > 0 && "uid" in target) {
        this.#metrics.messagesQueued++;
        this.#settle(message, "queued");
        return { id, delivered: 0, connections: 0, queued: true };
      }
      this.#metrics.messagesOffline++;
      this.#settle(message, "offline");
      return { id, delivered: 0, connections: 0 };
    }
    // Every recipient counts as outstanding before the first push, so that an early failure cannot
    // settle the message while later recipients have yet to take it.
    message.outstanding = clients.length;
    let delivered = 0;
    let publication: Publication | undefined; // one for every resuming client
    for (const client of clients) {
      const resume = this.#resuming.get(client);
      // A message to one client id is kept nowhere, so it has no place in a replay: it goes out
      // at once, before the replayed ones.
      if (!resume || "client" in target) {
        if (client.push(message)) delivered++;
        continue;
      }
      // Replaying: the resume passes it on after the replay, in order. Counted as taken.
      if (!publication) {
        publication = { id, stream: streamOf(target), data, ts: message.ts };
        this.#liveMessages.set(publication, message);
      }
      resume.live(publication);
      message.outstanding--;
      delivered++;
    }
    if (message.outstanding === 0 && message.written === 0 && delivered > 0) {
      this.#settle(message, "delivered");
    }
    this.#logWritten(message);
    return { id, delivered, connections: clients.length };
  }

  #attach(client: Client): void {
    this.#clients.set(client.id, client);
    // Before its uid's `uid.online`, which it causes.
    this.#hook("client.connect", { client: client.id, uid: client.uid, format: client.format });
    this.#setUid(client, client.uid, true);
    this.#registry?.connected(client.id, client.uid, client.info);
  }

  #detach(client: Client, code: number, reason: string): void {
    this.#resuming.get(client)?.cancel();
    this.#resuming.delete(client);
    if (this.#clients.get(client.id) === client) {
      // The registry drops the connection with its uid and groups in one step.
      for (const group of [...client.groups]) this.#leave(client, group, false);
      const uid = client.uid;
      this.#setUid(client, undefined);
      this.#clients.delete(client.id);
      this.#registry?.disconnected(client.id);
      this.#hook("client.disconnect", { client: client.id, uid, code, reason });
    }
    client.close(code, reason);
  }

  /** Moves `client` in the uid index from its uid to `uid`; `fresh` when it was never indexed. */
  #setUid(client: Client, uid: string | undefined, fresh = false): void {
    const old = client.uid;
    if (!fresh && old !== undefined) {
      const set = this.#byUid.get(old);
      set?.delete(client);
      if (set?.size === 0) {
        this.#byUid.delete(old);
        this.#uidHooks?.down(old);
      }
    }
    client.uid = uid;
    if (uid !== undefined) {
      let set = this.#byUid.get(uid);
      if (!set) {
        this.#byUid.set(uid, set = new SmallSet());
        this.#uidHooks?.up(uid);
      }
      set.add(client);
    }
  }

  #join(client: Client, name: string): void {
    if (client.groups.has(name)) return;
    let group = this.#groups.get(name);
    if (!group) {
      this.#groups.set(name, group = { members: new Set(), watchers: new Set(), uids: new Map() });
      if (!this.#registry) this.#hook("group.created", { group: name });
    }
    this.#hook("group.join", { group: name, client: client.id, uid: client.uid });
    group.members.add(client);
    this.#registry?.joined(client.id, name);
    // A resuming client watches only once its welcome is out (see #resume).
    if (client.presence && !this.#resuming.has(client)) group.watchers.add(client);
    client.groups.add(name);
    const uid = client.uid;
    if (uid === undefined) return;
    const count = (group.uids.get(uid) ?? 0) + 1;
    group.uids.set(uid, count);
    // In a cluster the registry tells every node's watchers (`told`), counting every node's members.
    if (count === 1 && !this.#registry) {
      this.#presence(group, group.members.size, {
        type: "join",
        group: name,
        uid,
        info: client.info,
      });
    }
  }

  /** `registered`: false when the registry is told of the whole connection's leaving instead. */
  #leave(client: Client, name: string, registered = true): void {
    const group = this.#groups.get(name);
    if (!group || !group.members.delete(client)) return;
    if (registered) this.#registry?.left(client.id, name);
    group.watchers.delete(client);
    client.groups.delete(name);
    // Its locks go with it; the members that stay are told.
    this.#released(this.#locks.releaseMember(client, name));
    const uid = client.uid;
    if (uid !== undefined) {
      const count = group.uids.get(uid)! - 1;
      if (count > 0) group.uids.set(uid, count);
      else {
        group.uids.delete(uid);
        // Sized as before the leave, so a member whose join went unannounced leaves unannounced.
        if (!this.#registry) {
          this.#presence(group, group.members.size + 1, { type: "leave", group: name, uid });
        }
      }
    }
    this.#hook("group.leave", { group: name, client: client.id, uid: client.uid });
    if (group.members.size === 0) {
      this.#groups.delete(name);
      if (!this.#registry) this.#hook("group.vacated", { group: name });
    }
  }

  /**
   * Tells the group's watchers, encoded once for all of them; nothing when the group's `size` is
   * over MAX_PRESENCE_MEMBERS (counted in presence_events_suppressed_total).
   */
  #presence(group: Group, size: number, event: Record<string, unknown>): void {
    if (group.watchers.size === 0) return;
    const cap = this.#maxPresenceMembers;
    if (cap > 0 && size > cap) {
      this.#metrics.presenceSuppressed++;
      return;
    }
    const frame = JSON.stringify(event);
    for (const watcher of group.watchers) watcher.control(frame);
  }

  /** Once no connection holds `message` any more, logs how many it was written to. */
  #logWritten(message: Message): void {
    if (message.outstanding > 0 || message.written === 0 || message.writtenLogged) return;
    message.writtenLogged = true;
    this.#logger.addWritten(message.id, message.written);
  }

  #settle(message: Message, status: DeliveryStatus): void {
    if (message.status !== "accepted") return;
    message.status = status;
    this.#logger.setStatus(message.id, status);
    if (status === "failed" || status === "dropped") {
      const { id, target } = message;
      // The uid, group or client id it was for, as the other events name them.
      const to = "all" in target ? {} : target;
      const fields = { messageId: id, target: targetKey(target), status, ...to };
      this.#hook("message.undelivered", fields);
    }
  }

  #clientEvents(): ClientEvents {
    return {
      pending: (delta) => {
        this.#pending += delta;
      },
      sent: (message) => {
        this.#metrics.messagesSent++;
        message.outstanding--;
        message.written++;
        this.#settle(message, "delivered");
        if (this.#offlineTtl > 0 && "uid" in message.target) {
          this.#history!.wrote(message.target.uid, message.id);
          // Out of the mailbox at last: its row said `queued` until now.
          if (message.mailed) this.#logger.setStatus(message.id, "delivered");
        }
        this.#logWritten(message);
      },
      lost: (client, message, how) => {
        if (how === "failed") this.#metrics.messagesFailed++;
        else this.#metrics.messagesDropped++;
        message.outstanding--;
        if (message.outstanding === 0 && message.written === 0) this.#settle(message, how);
        this.#logWritten(message);
        this.#onDeliveryError({
          messageId: message.id,
          target: targetKey(message.target),
          clientId: client.id,
          how,
        });
      },
      slow: (client) => {
        this.#metrics.slowConsumers++;
        this.close(client, CloseCode.slowConsumer.code, CloseCode.slowConsumer.reason);
      },
    };
  }
}

/** The target a stream's messages are for. */
function targetOf(stream: StreamName): Target {
  if (stream === ALL_STREAM) return { all: true };
  if (stream.startsWith("uid:")) return { uid: stream.slice(4) };
  if (stream.startsWith("client:")) return { client: stream.slice(7) };
  return { group: stream.slice(6) };
}

/** The stream a target's messages belong to; never called for a single client's. */
function streamOf(target: Target): StreamName {
  if ("uid" in target) return uidStream(target.uid);
  if ("group" in target) return groupStream(target.group);
  return ALL_STREAM;
}

/** A lock as frames and the API show it. */
function lockView({ key, holder, expiresAt }: Lock): LockView {
  return { key, holder: { uid: holder.uid ?? null, client: holder.id }, expiresAt };
}
