/**
 * deno-pusher's client: one WebSocket to the server's `/ws`, in the json format, kept open for as
 * long as the application wants it. It reconnects by itself, resumes after the last message it
 * handed over (so the application sees every kept message once, in id order), refreshes its token
 * before it expires, rejoins its groups, and turns every request frame into a promise settled by
 * the answer carrying its `ref`.
 *
 * No dependencies: the global `WebSocket` of browsers, Deno, Bun and Node 22+. README.md beside
 * this file documents the API; the server's README is the wire contract (frames, close codes).
 *
 * Invariant: the client has at most one socket at a time, and only that socket's events change
 * anything; a socket it has let go of (closed, lost, replaced) is detached at once, so its late
 * events are never heard. Every frame it writes goes through one paced queue (`#pump`).
 */

/** The default first reconnect's ceiling, ms: full jitter waits a random time below it. */
const MIN_RECONNECT_DELAY_MS = 500;
/** The default ceiling the reconnect delay doubles up to, ms. */
const MAX_RECONNECT_DELAY_MS = 20_000;
/** The default time a request waits for its answer, ms, from the call (queueing included). */
const REQUEST_TIMEOUT_MS = 10_000;
/**
 * The default time a socket has to open and be welcomed, ms: a resume replays up to
 * HISTORY_SIZE messages per stream before the welcome's answer, so this is more than the server's
 * AUTH_TIMEOUT (10 s).
 */
const CONNECT_TIMEOUT_MS = 20_000;
/**
 * The default longest lead with which a token is refreshed before its `exp`, ms. A short-lived
 * token is refreshed earlier, a third of its remaining life before `exp` (see `refreshDelay`).
 */
const TOKEN_REFRESH_LEAD_MS = 30_000;
/** The default quiet time after which the client pings the server, ms (0: never). */
const PING_INTERVAL_MS = 25_000;
/** The default time the server has to answer a ping (any frame counts), ms. */
const PONG_TIMEOUT_MS = 10_000;
/** The server's default MAX_FRAMES_PER_SECOND: past it, the server closes with 1008. */
const MAX_FRAMES_PER_SECOND = 20;

/**
 * The close code the client reports when it gave up on a socket itself (no welcome in time, no
 * answer to a ping). The server's own codes are 1xxx and 4001 to 4029, so 4000 is free.
 */
export const CLIENT_CLOSE_CODE = 4000;

/** setTimeout's longest delay, ms: a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** WebSocket.readyState's values (the constants are not on every implementation's instances). */
const CONNECTING = 0;
const OPEN = 1;

/** The close codes after which the client never reconnects (4004 only without `getToken`). */
const TERMINAL_CODES: ReadonlySet<number> = new Set([4001, 4004, 4009]);
/** The close codes after which the client reconnects at once: the server restarts or goes away. */
const IMMEDIATE_CODES: ReadonlySet<number> = new Set([1001, 1012]);

/**
 * The connection's state, as the application shows it: `connecting` until the socket is welcomed
 * and its groups are rejoined, `connected` then, `disconnected` while a reconnect waits (and
 * before `connect()`), `closed` once the client stopped for good (`close()`, or a close code it
 * never reconnects after).
 */
export type State = "connecting" | "connected" | "disconnected" | "closed";

/** Who sent a client's message (`publish` and `send` frames), or holds a lock. */
export interface Sender {
  uid: string;
  client: string;
}

/** A message, as the server pushes it. */
export interface Message {
  /** The message's id: unique, increasing across all streams (the id `/send` answered). */
  id: number;
  data: string;
  /** When the server accepted it, ms since the epoch (the server's clock). */
  ts: number;
  /** The group it was sent to; absent for a message to the uid, the client or everyone. */
  group?: string;
  /** The client that sent it (a `publish` or `send` frame); absent when the backend sent it. */
  from?: Sender;
}

/** A member of a group: one entry per uid, with its token's `info` claim when it has one. */
export interface Member {
  uid: string;
  info?: unknown;
}

/** A lock in a group; `holder.uid` is null for a connection unbound from its uid. */
export interface Lock {
  key: string;
  holder: { uid: string | null; client: string };
  /** When the lock's ttl ends, ms since the epoch; null without a ttl. */
  expiresAt: number | null;
}

/**
 * A join's answer: the group's presence and locks, taken with the join. `members` is null for a
 * group over the server's MAX_PRESENCE_MEMBERS, whose joins and leaves are not told.
 */
export interface Joined {
  group: string;
  members: Member[] | null;
  locks: Lock[];
}

/** A `presence` request's answer. */
export interface Presence {
  group: string;
  members: Member[] | null;
}

/** A `publish` request's answer: the message's id. */
export interface Published {
  id: number;
}

/**
 * A `send` request's answer: the message's id and how many of the uid's connections took it;
 * `queued` when the uid was offline and the server's mailbox (OFFLINE_TTL) keeps it.
 */
export interface Sent {
  id: number;
  delivered: number;
  queued?: true;
}

/** A `lock` request's answer. */
export interface Locked {
  group: string;
  key: string;
  expiresAt: number | null;
}

/** An `unlock` or `leave` request's answer. */
export interface Unlocked {
  group: string;
  key: string;
}

/** The server's first frame on a connection. */
export interface Welcome {
  /** This connection's id (`DELETE /api/clients/{id}` closes it). */
  client: string;
  uid: string;
  /** The protocol version (1); later versions only add. */
  v: number;
  /** After a resume: false when history no longer held all that was missed (see `gap`). */
  recovered?: boolean;
  /** After a resume: how many kept messages follow before the live ones. */
  replayed?: number;
  /** Groups of the token's `groups` claim that were full and not joined. */
  full?: string[];
}

/**
 * What was missed that a resume cannot give: history had trimmed messages after `since`, or the
 * server keeps no history. The application should refetch from its backend.
 */
export interface Gap {
  /** The id the client resumed after. */
  since: number;
  /** How many kept messages the server replays all the same. */
  replayed: number;
}

/** A socket's end, as the client saw it, and what it does next. */
export interface Close {
  /** The close code: the server's (see its README), 1006 for a dropped socket, 4000 the client's. */
  code: number;
  reason: string;
  /** Whether the client will reconnect; false means the state is now `closed`. */
  reconnect: boolean;
  /** When it reconnects: in how many ms. */
  delay?: number;
}

/** A presence event: a uid's first connection joined one of this connection's groups. */
export interface JoinEvent {
  group: string;
  uid: string;
  info?: unknown;
}

/** A presence event: a uid's last connection left one of this connection's groups. */
export interface LeaveEvent {
  group: string;
  uid: string;
}

/** Another connection took a key in one of this connection's groups. */
export interface LockEvent {
  group: string;
  key: string;
  holder: { uid: string | null; client: string };
  expiresAt: number | null;
}

/** A key in one of this connection's groups was released. */
export interface UnlockEvent {
  group: string;
  key: string;
}

/** The events `on` listens to, and the value each listener gets. */
export interface ClientEvents {
  /** A message, once, in increasing id order. */
  message: Message;
  /** The state changed. */
  state: State;
  /** A socket was welcomed (before its groups are rejoined and the state is `connected`). */
  welcome: Welcome;
  /** A resume could not give everything missed. */
  gap: Gap;
  /** A socket ended; `reconnect` says whether another follows. */
  close: Close;
  /** A join's answer: the application's joins and the rejoins after a reconnect. */
  joined: Joined;
  /** Presence: a uid came into a group. */
  join: JoinEvent;
  /** Presence: a uid left a group. */
  leave: LeaveEvent;
  /** A key was locked by another connection. */
  lock: LockEvent;
  /** A key was released. */
  unlock: UnlockEvent;
  /** The server took a refreshed token; `exp` is its expiry, seconds since the epoch. */
  token: { exp: number | null };
  /**
   * Something went wrong outside any request's promise: `getToken` failed (TokenError), a refresh
   * or an ack was refused, a rejoin was refused (RequestRefusedError), or an event listener threw.
   */
  error: Error;
}

/** A listener of event `K`. */
export type Listener<K extends keyof ClientEvents> = (
  value: ClientEvents[K],
) => void;

/** What a WebSocket constructor must be: the global one, or a compatible one (`ws` on Node). */
export type WebSocketConstructor = new (url: string) => WebSocket;

/** The client's settings; only `token` or `getToken` is required. Times are in ms. */
export interface ClientOptions {
  /** The token to connect with (a JWT the backend signed). */
  token?: string;
  /**
   * Fetches a fresh token: called before connecting when there is no token or it is about to
   * expire, and before the token's `exp` to refresh it in-band. With it, a close 4004 (token
   * expired) reconnects with a fresh token instead of stopping.
   */
  getToken?: () => Promise<string> | string;
  /** Sends `{"type":"ack","id"}` for every message once the listeners have had it. Default false. */
  autoAck?: boolean;
  /** Asks for `join`/`leave` events of the token's `groups` claim too (`presence=true`). */
  presence?: boolean;
  /** The id of the last message the application already has: the first connection resumes after it. */
  since?: number;
  /** The first reconnect's ceiling (500); each failure doubles it, up to `maxReconnectDelay`. */
  minReconnectDelay?: number;
  /** The reconnect delay's largest ceiling (20000). */
  maxReconnectDelay?: number;
  /** How long a request waits for its answer, from the call (10000). */
  requestTimeout?: number;
  /** How long a socket has to open and be welcomed before it is given up (20000). */
  connectTimeout?: number;
  /** The longest lead with which a token is refreshed before its `exp` (30000). */
  tokenRefreshLead?: number;
  /** Quiet time after which the client pings (25000); 0 turns the heartbeat off. */
  pingInterval?: number;
  /** How long the server has to answer a ping before the socket is given up (10000). */
  pongTimeout?: number;
  /**
   * The server's MAX_FRAMES_PER_SECOND (20); the client paces its frames below it (see
   * `FramePacer`). 0: no pacing, for a server with no limit.
   */
  maxFramesPerSecond?: number;
  /** The WebSocket constructor (default: the global one). */
  WebSocket?: WebSocketConstructor;
}

/** Every error the client makes: its requests reject with one of the subclasses. */
export class PusherError extends Error {
  override name = "PusherError";
}

/**
 * The server refused a request (an `error` frame answering its `ref`); `message` is the server's
 * words, e.g. `not allowed to join g (the token's subscribe claim)`. Also reported in an `error`
 * event for a refused ack (`request` "ack", `id` the message) and a refused rejoin.
 */
export class RequestRefusedError extends PusherError {
  override name = "RequestRefusedError";
  /** The request's type: `join`, `publish`, `send`, … */
  readonly request: string;
  /** The message id the refusal names: a send to an offline uid (kept all the same), an ack. */
  readonly id?: number;
  constructor(request: string, error: string, id?: number) {
    super(error);
    this.request = request;
    if (id !== undefined) this.id = id;
  }
}

/** No answer came within `requestTimeout`; the request may or may not have been done. */
export class RequestTimeoutError extends PusherError {
  override name = "RequestTimeoutError";
  readonly request: string;
  constructor(request: string, ms: number) {
    super(`${request}: no answer within ${ms} ms`);
    this.request = request;
  }
}

/**
 * The socket ended after the request was written and before its answer: it may or may not have
 * been done. (A request not yet written when a socket ends waits for the next one.)
 */
export class ConnectionLostError extends PusherError {
  override name = "ConnectionLostError";
  readonly request: string;
  readonly code: number;
  readonly reason: string;
  constructor(request: string, code: number, reason: string) {
    super(
      `${request}: the connection closed before the answer (${code}${reason && ` ${reason}`})`,
    );
    this.request = request;
    this.code = code;
    this.reason = reason;
  }
}

/**
 * The client is closed: by `close()`, or by a close code it never reconnects after (`code` and
 * `reason` are then the server's, e.g. 4009 `logged out`). Requests then reject with it.
 */
export class ClientClosedError extends PusherError {
  override name = "ClientClosedError";
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string) {
    super(`the client is closed (${code}${reason && ` ${reason}`})`);
    this.code = code;
    this.reason = reason;
  }
}

/** `getToken` failed or gave no token, or the server refused a refreshed token. */
export class TokenError extends PusherError {
  override name = "TokenError";
}

/** The answer frame type of each request type. */
const ANSWERS = {
  join: "joined",
  leave: "left",
  publish: "ack",
  send: "ack",
  presence: "presence",
  lock: "locked",
  unlock: "unlocked",
} as const;
type RequestType = keyof typeof ANSWERS;

/** A request waiting for its answer. */
interface Pending {
  type: RequestType;
  resolve(answer: Record<string, unknown>): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
  /** Written to the current socket: its end rejects the request. */
  written: boolean;
}

/** A frame waiting for the pacer; `ref` when it is a request's. */
interface Outbound {
  frame: string;
  ref?: number;
}

/**
 * Where the client is (see `State` for the public names). `idle`: before `connect()`. `waiting`:
 * a reconnect is scheduled. `authorizing`: `getToken` runs before a socket. `opening`: the socket
 * opens and waits for its welcome. `rejoining`: welcomed, its groups' joins in flight. `open`:
 * connected. `closed`: stopped for good.
 */
type Phase =
  | { name: "idle" }
  | { name: "waiting"; timer: ReturnType<typeof setTimeout> }
  | { name: "authorizing" }
  | { name: "opening"; socket: Connection }
  | { name: "rejoining"; socket: Connection }
  | { name: "open"; socket: Connection }
  | { name: "closed" };

/** One socket and what lives and dies with it. */
interface Connection {
  ws: WebSocket;
  pacer: FramePacer;
  /** Frames of this socket only (auth, pings, rejoins): written before the application's. */
  control: Outbound[];
  /** The connect timeout, then the heartbeat's next check. */
  timer?: ReturnType<typeof setTimeout>;
  /** The pacer's wait for its next frame. */
  pumpTimer?: ReturnType<typeof setTimeout>;
  /** The token refresh's timer. */
  refreshTimer?: ReturnType<typeof setTimeout>;
  /** A refreshed token sent in an auth frame, whose answer has not come yet. */
  refreshing?: string;
  /** When the last frame came (ms), and when the unanswered ping went, if one did. */
  heard: number;
  pinged?: number;
  /** The `since` its auth frame carried: the last message id handed over before it. */
  since?: number;
  welcome?: Welcome;
}

/**
 * A deno-pusher connection that keeps itself alive. Create it, add listeners with `on`, then
 * `connect()`. Every method may be called in any state; requests made before the client is
 * connected wait for it (within `requestTimeout`).
 */
export class Client {
  readonly #url: string;
  readonly #options: ClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  /** Each event's listeners; a Listener<K> is stored under K only (see `on`). */
  readonly #listeners = new Map<
    keyof ClientEvents,
    Set<(value: never) => void>
  >();
  #phase: Phase = { name: "idle" };
  #state: State = "disconnected";
  /** Bumped whenever a connection attempt is given up, so a late `getToken` is ignored. */
  #attemptId = 0;
  /** Failed attempts since the last welcome: the backoff's exponent. */
  #failures = 0;
  #token: string | undefined;
  /** The id of the last message handed to the application: the next socket resumes after it. */
  #lastId: number | undefined;
  /** Groups joined by `join` and not left: rejoined on every new socket. */
  readonly #groups = new Set<string>();
  readonly #pending = new Map<number, Pending>();
  /** The application's requests and acks, written once the client is connected. */
  #queue: Outbound[] = [];
  #ref = 0;
  /** Why the client closed, for the requests made after. */
  #closedWith: { code: number; reason: string } = {
    code: 1000,
    reason: "not connected",
  };

  /**
   * @param url the server's `/ws` URL (`ws://`, `wss://`, or `http(s)://`, made `ws(s)://`; in a
   *   browser it may be relative to the page). `format`, `auth`, `presence` are set on it and a
   *   `token` or `since` in it is removed: the token and `since` go in the first frame.
   * @throws TypeError without `token` or `getToken`, or with no WebSocket to use.
   */
  constructor(url: string, options: ClientOptions) {
    if (options.token === undefined && options.getToken === undefined) {
      throw new TypeError("Client needs options.token or options.getToken");
    }
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== "function") {
      throw new TypeError(
        "no global WebSocket (Node before 22): pass options.WebSocket, e.g. the ws package's",
      );
    }
    this.#url = socketUrl(url, options.presence === true);
    this.#options = options;
    this.#WebSocket = WebSocketClass;
    this.#token = options.token;
    this.#lastId = options.since;
  }

  /** The connection's state (see State). */
  get state(): State {
    return this.#state;
  }

  /** The current socket's client id, from its welcome; undefined when not welcomed. */
  get id(): string | undefined {
    return this.#welcomed()?.client;
  }

  /** The uid the current socket's token is for; undefined when not welcomed. */
  get uid(): string | undefined {
    return this.#welcomed()?.uid;
  }

  /**
   * The id of the last message handed to the application (or `options.since`): the next socket
   * resumes after it. Keep it to resume a later Client with `since`.
   */
  get lastId(): number | undefined {
    return this.#lastId;
  }

  /** The groups joined with `join` and not left, which every new socket rejoins. */
  get groups(): ReadonlySet<string> {
    return this.#groups;
  }

  /** Calls `listener` on every `event` until the returned function (or `off`) is called. */
  on<K extends keyof ClientEvents>(
    event: K,
    listener: Listener<K>,
  ): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, set = new Set());
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Stops calling `listener` on `event`. */
  off<K extends keyof ClientEvents>(event: K, listener: Listener<K>): void {
    this.#listeners.get(event)?.delete(listener);
  }

  /**
   * Connects, and from then on reconnects until `close()` or a close code it never reconnects
   * after. Does nothing while connecting or connected. After `closed` it starts again, resuming
   * after `lastId`.
   */
  connect(): void {
    const phase = this.#phase;
    if (phase.name === "waiting") clearTimeout(phase.timer);
    else if (phase.name !== "idle" && phase.name !== "closed") return;
    void this.#open();
  }

  /**
   * Closes for good: the socket with 1000, pending and queued requests reject with
   * ClientClosedError, no reconnect follows. `connect()` starts again.
   */
  close(): void {
    if (this.#phase.name === "closed") return;
    const reason = "closed by the client";
    this.#letGo(1000, reason);
    this.#end(1000, reason);
  }

  /**
   * Joins `group` (the token's `subscribe` claim must allow it) and keeps it joined on every new
   * socket until `leave`. Resolves with the group's presence and locks.
   */
  async join(group: string): Promise<Joined> {
    const joined = await this.#request("join", { group }) as unknown as Joined;
    this.#groups.add(group);
    return joined;
  }

  /** Leaves `group`; it is no longer rejoined (from the call on, whatever the answer). */
  async leave(group: string): Promise<void> {
    this.#groups.delete(group);
    await this.#request("leave", { group });
  }

  /**
   * Publishes `data` to `group`, of which this connection must be a member (the `publish` claim
   * must allow it). Every other member gets it; this connection too with `echo`.
   */
  async publish(
    group: string,
    data: string,
    options: { echo?: boolean } = {},
  ): Promise<Published> {
    const fields = options.echo === undefined ? { group, data } : { group, data, ...options };
    const { id } = await this.#request("publish", fields);
    return { id: id as number };
  }

  /**
   * Sends `data` to every connection of `uid` (the `send` claim must allow it). An offline uid
   * rejects with RequestRefusedError `client not found: <uid>` (its `id` is the message's, kept in
   * history), or resolves with `queued` when the server's mailbox keeps it.
   */
  async send(uid: string, data: string): Promise<Sent> {
    const { id, delivered, queued } = await this.#request("send", {
      uid,
      data,
    });
    const sent: Sent = { id: id as number, delivered: delivered as number };
    if (queued === true) sent.queued = true;
    return sent;
  }

  /** Who is in `group`: one entry per uid (a member, or the `subscribe` claim allows the group). */
  async presence(group: string): Promise<Presence> {
    return await this.#request("presence", { group }) as unknown as Presence;
  }

  /**
   * Takes `key` in `group` (a member only), for `ttl` seconds when given (at most a day); taking
   * one's own key again renews it. Another connection's key rejects with RequestRefusedError.
   */
  async lock(
    group: string,
    key: string,
    options: { ttl?: number } = {},
  ): Promise<Locked> {
    const fields = options.ttl === undefined ? { group, key } : { group, key, ttl: options.ttl };
    return await this.#request("lock", fields) as unknown as Locked;
  }

  /** Releases this connection's `key` in `group`. */
  async unlock(group: string, key: string): Promise<Unlocked> {
    return await this.#request("unlock", { group, key }) as unknown as Unlocked;
  }

  /**
   * Acks message `id` (what `autoAck` does for every message): the server records it and answers
   * nothing; a refusal comes as an `error` event (RequestRefusedError, request "ack"). Written
   * once connected; dropped when the client closes first.
   */
  ack(id: number): void {
    if (this.#phase.name === "closed") return;
    this.#queue.push({ frame: JSON.stringify({ type: "ack", id }) });
    this.#pump();
  }

  // The connection's life: open, welcome, rejoin, open; lost, wait, open again; or closed.

  /** The current socket once welcomed. */
  #welcomed(): Welcome | undefined {
    const phase = this.#phase;
    return phase.name === "rejoining" || phase.name === "open" ? phase.socket.welcome : undefined;
  }

  #setState(state: State): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit("state", state);
  }

  /** Opens a socket, after fetching a token when it needs one. */
  async #open(): Promise<void> {
    const attempt = ++this.#attemptId;
    this.#setState("connecting");
    const getToken = this.#options.getToken;
    if (getToken && !this.#tokenFresh()) {
      this.#phase = { name: "authorizing" };
      let token: unknown;
      try {
        token = await getToken();
      } catch (err) {
        token = err instanceof Error ? err : new Error(String(err));
      }
      if (attempt !== this.#attemptId) return; // closed, or connect() again, meanwhile
      if (typeof token !== "string" || token === "") {
        const why = token instanceof Error ? token.message : `it returned ${typeof token}`;
        this.#emit(
          "error",
          new TokenError(`getToken failed: ${why}`, { cause: token }),
        );
        return this.#retry(CLIENT_CLOSE_CODE, "getToken failed", false);
      }
      this.#token = token;
    }
    let ws: WebSocket;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (err) {
      // A malformed URL: no socket will ever open.
      const reason = `cannot open ${this.#url}: ${err instanceof Error ? err.message : err}`;
      return this.#end(CLIENT_CLOSE_CODE, reason);
    }
    const socket: Connection = {
      ws,
      pacer: new FramePacer(
        this.#options.maxFramesPerSecond ?? MAX_FRAMES_PER_SECOND,
      ),
      control: [],
      heard: Date.now(),
    };
    this.#phase = { name: "opening", socket };
    const connectTimeout = this.#options.connectTimeout ?? CONNECT_TIMEOUT_MS;
    socket.timer = setTimeout(
      () =>
        this.#lost(
          socket,
          CLIENT_CLOSE_CODE,
          `no welcome within ${connectTimeout} ms`,
        ),
      connectTimeout,
    );
    ws.onopen = () => {
      socket.since = this.#lastId;
      const auth: Record<string, unknown> = {
        type: "auth",
        token: this.#token,
      };
      if (socket.since !== undefined) auth.since = socket.since;
      socket.control.push({ frame: JSON.stringify(auth) });
      this.#pump();
    };
    ws.onmessage = (event) => this.#received(socket, event.data);
    ws.onclose = (event) => this.#lost(socket, event.code, event.reason);
    // An error is always followed by a close, which says what there is to say.
    ws.onerror = () => {};
  }

  /** Whether the token is known and does not expire within the refresh lead. */
  #tokenFresh(): boolean {
    if (this.#token === undefined) return false;
    const exp = tokenExpiry(this.#token);
    if (exp === undefined) return true;
    return exp * 1000 - Date.now() >
      (this.#options.tokenRefreshLead ?? TOKEN_REFRESH_LEAD_MS);
  }

  /** The socket of the current phase, if any. */
  #socket(): Connection | undefined {
    const phase = this.#phase;
    return "socket" in phase ? phase.socket : undefined;
  }

  /** A frame from `socket`, if it is still the client's. */
  #received(socket: Connection, data: unknown): void {
    if (socket !== this.#socket() || typeof data !== "string") return;
    socket.heard = Date.now();
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not a json frame: nothing the protocol sends
    }
    if (typeof frame !== "object" || frame === null) return;
    const ref = frame.ref;
    if (typeof ref === "number" && this.#pending.has(ref)) {
      return this.#answered(ref, frame);
    }
    switch (frame.type) {
      case "welcome":
        return this.#welcome(socket, frame as unknown as Welcome);
      case "message":
        return this.#message(frame);
      case "auth":
        return this.#refreshed(socket, frame);
      case "error":
        return this.#refused(socket, frame);
      case "join":
      case "leave":
      case "lock":
      case "unlock":
        return this.#emit(frame.type, withoutType(frame) as never);
    }
    // pong, and types of later protocol versions: nothing to do.
  }

  /** The welcome: the socket is the client's; rejoin its groups, then it is connected. */
  #welcome(socket: Connection, welcome: Welcome): void {
    if (this.#phase.name !== "opening") return;
    clearTimeout(socket.timer);
    socket.welcome = welcome;
    this.#failures = 0;
    this.#phase = { name: "rejoining", socket };
    this.#emit("welcome", welcome);
    // Resumed: the server says when history lacked some of what was missed, or has none at all.
    const since = socket.since;
    if (since !== undefined && welcome.recovered !== true) {
      this.#emit("gap", { since, replayed: welcome.replayed ?? 0 });
    }
    if (socket !== this.#socket()) return; // a listener closed it
    this.#heartbeat(socket);
    this.#scheduleRefresh(socket);
    const rejoins = [...this.#groups].map((group) =>
      this.#request("join", { group }, socket).then(
        (answer) => this.#emit("joined", answer as unknown as Joined),
        (err) => {
          // Refused (no longer allowed, the group full): the application must decide; it is out.
          if (err instanceof RequestRefusedError) {
            this.#groups.delete(group);
            this.#emit("error", err);
          }
        },
      )
    );
    Promise.all(rejoins).then(() => {
      if (this.#socket() !== socket || this.#phase.name !== "rejoining") return;
      this.#phase = { name: "open", socket };
      this.#setState("connected");
      this.#pump();
    });
  }

  /** A message: handed over once, in id order; anything at or below `lastId` was handed already. */
  #message(frame: Record<string, unknown>): void {
    const { id, data, ts, group, from } = frame;
    if (typeof id !== "number" || typeof data !== "string") return;
    if (this.#lastId !== undefined && id <= this.#lastId) return;
    this.#lastId = id;
    const message: Message = { id, data, ts: ts as number };
    if (typeof group === "string") message.group = group;
    if (from !== undefined) message.from = from as Sender;
    this.#emit("message", message);
    if (this.#options.autoAck) this.ack(id);
  }

  /** The answer to request `ref`. */
  #answered(ref: number, frame: Record<string, unknown>): void {
    const pending = this.#pending.get(ref)!;
    this.#pending.delete(ref);
    clearTimeout(pending.timer);
    if (frame.type === "error") {
      const id = typeof frame.id === "number" ? frame.id : undefined;
      return pending.reject(
        new RequestRefusedError(pending.type, String(frame.error), id),
      );
    }
    if (frame.type !== ANSWERS[pending.type]) {
      return pending.reject(
        new PusherError(
          `${pending.type}: unexpected answer ${String(frame.type)}`,
        ),
      );
    }
    pending.resolve(withoutType(frame));
  }

  /** An `error` frame without a pending request: an ack's refusal, or the token refresh's. */
  #refused(socket: Connection, frame: Record<string, unknown>): void {
    if (frame.ref !== undefined) return; // the answer to a request given up already (timed out)
    const error = String(frame.error);
    if (typeof frame.id === "number") {
      return this.#emit(
        "error",
        new RequestRefusedError("ack", error, frame.id),
      );
    }
    if (socket.refreshing !== undefined) {
      socket.refreshing = undefined;
      // The old token stays in force until its exp; then 4004, and a reconnect with getToken.
      return this.#emit(
        "error",
        new TokenError(`token refresh refused: ${error}`),
      );
    }
    this.#emit("error", new PusherError(`the server said: ${error}`));
  }

  /** The server took the refreshed token. */
  #refreshed(socket: Connection, frame: Record<string, unknown>): void {
    if (frame.ok !== true || socket.refreshing === undefined) return;
    this.#token = socket.refreshing;
    socket.refreshing = undefined;
    const exp = typeof frame.exp === "number" ? frame.exp : null;
    this.#emit("token", { exp });
    this.#scheduleRefresh(socket);
  }

  /** Fetches a fresh token before the current one's `exp` and sends it in an auth frame. */
  #scheduleRefresh(socket: Connection): void {
    const getToken = this.#options.getToken;
    const exp = this.#token === undefined ? undefined : tokenExpiry(this.#token);
    if (!getToken || exp === undefined) return;
    const lead = this.#options.tokenRefreshLead ?? TOKEN_REFRESH_LEAD_MS;
    clearTimeout(socket.refreshTimer);
    const delay = refreshDelay(exp * 1000 - Date.now(), lead);
    if (delay > MAX_TIMER_MS) {
      // A longer delay would overflow setTimeout, which then fires at once.
      socket.refreshTimer = setTimeout(
        () => this.#scheduleRefresh(socket),
        MAX_TIMER_MS,
      );
      return;
    }
    socket.refreshTimer = setTimeout(async () => {
      let token: unknown;
      try {
        token = await getToken();
      } catch (err) {
        token = err instanceof Error ? err : new Error(String(err));
      }
      if (socket !== this.#socket()) return;
      if (typeof token !== "string" || token === "") {
        const why = token instanceof Error ? token.message : `it returned ${typeof token}`;
        return this.#emit(
          "error",
          new TokenError(`getToken failed: ${why}`, { cause: token }),
        );
      }
      socket.refreshing = token;
      socket.control.push({ frame: JSON.stringify({ type: "auth", token }) });
      this.#pump();
    }, delay);
  }

  /**
   * Pings the server after `pingInterval` without a frame from it, and gives the socket up when
   * nothing comes within `pongTimeout` of the ping: a dead network sends no close.
   */
  #heartbeat(socket: Connection): void {
    const interval = this.#options.pingInterval ?? PING_INTERVAL_MS;
    if (interval <= 0 || socket !== this.#socket()) return;
    const timeout = this.#options.pongTimeout ?? PONG_TIMEOUT_MS;
    const now = Date.now();
    let next: number;
    if (socket.pinged !== undefined && socket.heard < socket.pinged) {
      if (now - socket.pinged >= timeout) {
        return this.#lost(
          socket,
          CLIENT_CLOSE_CODE,
          `no answer to a ping within ${timeout} ms`,
        );
      }
      next = socket.pinged + timeout - now;
    } else if (now - socket.heard >= interval) {
      socket.pinged = now;
      socket.control.push({ frame: JSON.stringify({ type: "ping" }) });
      this.#pump();
      next = timeout;
    } else {
      socket.pinged = undefined;
      next = socket.heard + interval - now;
    }
    clearTimeout(socket.timer);
    socket.timer = setTimeout(() => this.#heartbeat(socket), next);
  }

  /**
   * `socket` ended (its close event, or the client gave it up): requests written to it reject,
   * and the client reconnects or stops, by the close code.
   */
  #lost(socket: Connection, code: number, reason: string): void {
    if (socket !== this.#socket()) return;
    this.#letGo(code, reason);
    const terminal = TERMINAL_CODES.has(code) &&
      !(code === 4004 && this.#options.getToken !== undefined);
    if (terminal) return this.#end(code, reason);
    // A restart, or an expired token with getToken (fetch a new one): come back at once, if this
    // socket had been welcomed; one that never was backs off, so that nothing loops.
    const immediate = socket.welcome !== undefined &&
      (IMMEDIATE_CODES.has(code) || code === 4004);
    this.#retry(code, reason, immediate);
  }

  /** Schedules the next attempt: at once, or after a backoff with full jitter. */
  #retry(code: number, reason: string, immediate: boolean): void {
    const min = this.#options.minReconnectDelay ?? MIN_RECONNECT_DELAY_MS;
    const max = this.#options.maxReconnectDelay ?? MAX_RECONNECT_DELAY_MS;
    const delay = immediate ? 0 : Math.random() * Math.min(max, min * 2 ** this.#failures++);
    const timer = setTimeout(() => void this.#open(), delay);
    this.#phase = { name: "waiting", timer };
    this.#emit("close", { code, reason, reconnect: true, delay });
    // A close listener may have called close() or connect(): then that is the state.
    const phase = this.#phase;
    if (phase.name === "waiting" && phase.timer === timer) {
      this.#setState("disconnected");
    }
  }

  /**
   * Tells the application the client stops for good and why, then stops, unless a close listener
   * called connect() meanwhile.
   */
  #end(code: number, reason: string): void {
    this.#phase = { name: "idle" };
    this.#emit("close", { code, reason, reconnect: false });
    if (this.#phase.name === "idle") this.#stop(code, reason);
  }

  /**
   * Detaches the current socket (its events are no longer heard) and closes it, stops its timers,
   * and rejects the requests written to it; requests not written yet wait for the next socket.
   */
  #letGo(code: number, reason: string): void {
    this.#attemptId++;
    const phase = this.#phase;
    if (phase.name === "waiting") clearTimeout(phase.timer);
    const socket = this.#socket();
    this.#phase = { name: "idle" };
    if (!socket) return;
    const { ws } = socket;
    ws.onopen =
      ws.onmessage =
      ws.onclose =
      ws.onerror =
        null;
    if (ws.readyState === CONNECTING || ws.readyState === OPEN) {
      try {
        // The client's own decision (close(), no welcome, no pong): 1000 or 4000, with its reason.
        ws.close(code === 1000 ? 1000 : CLIENT_CLOSE_CODE, reason);
      } catch {
        // Closing already.
      }
    }
    clearTimeout(socket.timer);
    clearTimeout(socket.pumpTimer);
    clearTimeout(socket.refreshTimer);
    // The socket's own requests (rejoins) die with it, written or not.
    const own = new Set(socket.control.map((outbound) => outbound.ref));
    for (const [ref, pending] of this.#pending) {
      if (!pending.written && !own.has(ref)) continue;
      this.#pending.delete(ref);
      clearTimeout(pending.timer);
      pending.reject(new ConnectionLostError(pending.type, code, reason));
    }
  }

  /** Stops for good: everything still waiting rejects with ClientClosedError. */
  #stop(code: number, reason: string): void {
    this.#phase = { name: "closed" };
    this.#closedWith = { code, reason };
    this.#queue = [];
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new ClientClosedError(code, reason));
    }
    this.#pending.clear();
    this.#setState("closed");
  }

  // Requests and the frames written.

  /**
   * Sends request `type` with `fields` and a fresh `ref`; settles with its answer (without `type`
   * and `ref`). A `socket`'s own request (a rejoin) is written before the application's, to that
   * socket only.
   */
  #request(
    type: RequestType,
    fields: Record<string, unknown>,
    socket?: Connection,
  ): Promise<Record<string, unknown>> {
    if (this.#phase.name === "closed") {
      const { code, reason } = this.#closedWith;
      return Promise.reject(new ClientClosedError(code, reason));
    }
    const ref = ++this.#ref;
    const timeout = this.#options.requestTimeout ?? REQUEST_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new RequestTimeoutError(type, timeout));
      }, timeout);
      this.#pending.set(ref, { type, resolve, reject, timer, written: false });
      const outbound = { frame: JSON.stringify({ type, ...fields, ref }), ref };
      (socket ? socket.control : this.#queue).push(outbound);
      this.#pump();
    });
  }

  /**
   * Writes what waits, as fast as the pacer lets it: the socket's own frames once it is open, the
   * application's once connected. A request given up already (timed out) is not written.
   */
  #pump(): void {
    const socket = this.#socket();
    if (!socket || socket.pumpTimer !== undefined) return;
    const { ws } = socket;
    if (ws.readyState !== OPEN) return;
    for (;;) {
      const queue = socket.control.length > 0
        ? socket.control
        : this.#phase.name === "open"
        ? this.#queue
        : undefined;
      if (!queue || queue.length === 0) return;
      const { ref } = queue[0];
      if (ref !== undefined && !this.#pending.has(ref)) {
        queue.shift();
        continue;
      }
      const wait = socket.pacer.wait();
      if (wait > 0) {
        socket.pumpTimer = setTimeout(() => {
          socket.pumpTimer = undefined;
          this.#pump();
        }, wait);
        return;
      }
      const { frame } = queue.shift()!;
      ws.send(frame);
      if (ref !== undefined) this.#pending.get(ref)!.written = true;
    }
  }

  /** Calls every listener of `event`; one that throws is reported and stops nothing. */
  #emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    const set = this.#listeners.get(event) as Set<Listener<K>> | undefined;
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (err) {
        if (event !== "error" && this.#listeners.get("error")?.size) {
          this.#emit(
            "error",
            err instanceof Error ? err : new Error(String(err)),
          );
        } else {console.error(
            `deno-pusher client: a ${event} listener threw:`,
            err,
          );}
      }
    }
  }
}

/**
 * Paces the client's frames below the server's MAX_FRAMES_PER_SECOND (a token bucket of that rate
 * and burst, per connection, which closes with 1008 past it). Bursts of half the limit at three
 * quarters of its rate leave room for frames the network bunches together on their way.
 */
export class FramePacer {
  readonly #burst: number;
  /** Frames per ms. */
  readonly #rate: number;
  #tokens: number;
  #last = Date.now();

  /** `limit`: the server's frames per second; 0 paces nothing. */
  constructor(limit: number) {
    this.#burst = Math.max(1, Math.floor(limit / 2));
    this.#rate = (limit * 0.75) / 1000;
    this.#tokens = limit > 0 ? this.#burst : Infinity;
  }

  /** 0 when a frame may go now (and takes its place), else the ms to wait before asking again. */
  wait(now = Date.now()): number {
    if (this.#tokens === Infinity) return 0;
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + (now - this.#last) * this.#rate,
    );
    this.#last = now;
    if (this.#tokens >= 1) {
      this.#tokens--;
      return 0;
    }
    return Math.ceil((1 - this.#tokens) / this.#rate);
  }
}

/**
 * The delay before refreshing a token that expires in `remaining` ms: `lead` before its expiry,
 * or a third of its remaining life before, if that is sooner, so that a short-lived token is
 * refreshed in time too.
 */
export function refreshDelay(remaining: number, lead: number): number {
  return Math.max(0, remaining - Math.min(lead, remaining / 3));
}

/** The `exp` claim of a JWT (seconds since the epoch), read without verifying; undefined if none. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes)).exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** The socket URL: `url` made absolute and ws(s), in the json format with an auth frame. */
function socketUrl(url: string, presence: boolean): string {
  const page = (globalThis as { location?: { href?: string } }).location?.href;
  const parsed = new URL(url, page);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  parsed.searchParams.delete("token");
  parsed.searchParams.delete("since");
  parsed.searchParams.set("format", "json");
  parsed.searchParams.set("auth", "frame");
  if (presence) parsed.searchParams.set("presence", "true");
  return parsed.href;
}

/** A frame's fields but `type` and `ref`. */
function withoutType(frame: Record<string, unknown>): Record<string, unknown> {
  const { type: _type, ref: _ref, ...fields } = frame;
  return fields;
}
