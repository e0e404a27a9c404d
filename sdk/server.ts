/**
 * The backend SDK: a typed client for deno-pusher's `/send` and `/api`, for the server side of an
 * application (never a browser: it holds an API key). One module, no dependencies, only the global
 * `fetch`: it runs on Deno, Bun and Node 22+.
 *
 * Each method is named after its operation's `operationId` in `GET /api/openapi.json`, and
 * `OPERATIONS` says which method and path each one calls; sdk/server_test.ts checks that table, and
 * the requests the methods really make, against the document.
 *
 * Retries: a send is retried on a network error, a 503 or a 429, with the same `Idempotency-Key`
 * each time (the caller's, or a fresh `crypto.randomUUID()`), so the server pushes it at most once;
 * a GET is retried on the same failures; PUT and DELETE never are. Every failure the server answers
 * is thrown as a `DenoPusherError` whose `message` is the server's own `{"error"}`.
 */

/** Where the OpenAPI document's `servers` entry puts the management API, under the base URL. */
export const API_PREFIX = "/api";

/** One operation of /api: what the SDK sends, as the OpenAPI document declares it. */
export interface Operation {
  method: "GET" | "POST" | "PUT" | "DELETE";
  /** The document's templated path, under API_PREFIX: `/uids/{uid}/send`. */
  path: string;
  /**
   * A send: it carries an Idempotency-Key and is retried like a GET, since the key makes a retry
   * safe.
   */
  send?: true;
}

/** Every /api operation the SDK implements, keyed by the document's operationId. */
export const OPERATIONS = {
  broadcast: { method: "POST", path: "/broadcast", send: true },
  publishBatch: { method: "POST", path: "/batch", send: true },
  listClients: { method: "GET", path: "/clients" },
  countClients: { method: "GET", path: "/clients/count" },
  getClient: { method: "GET", path: "/clients/{id}" },
  closeClient: { method: "DELETE", path: "/clients/{id}" },
  isClientOnline: { method: "GET", path: "/clients/{id}/online" },
  sendToClient: { method: "POST", path: "/clients/{id}/send", send: true },
  bindUid: { method: "PUT", path: "/clients/{id}/uid" },
  unbindUid: { method: "DELETE", path: "/clients/{id}/uid" },
  listUids: { method: "GET", path: "/uids" },
  countUids: { method: "GET", path: "/uids/count" },
  isUidOnline: { method: "GET", path: "/uids/{uid}/online" },
  listUidClients: { method: "GET", path: "/uids/{uid}/clients" },
  sendToUid: { method: "POST", path: "/uids/{uid}/send", send: true },
  disconnectUid: { method: "DELETE", path: "/uids/{uid}" },
  uidHistory: { method: "GET", path: "/uids/{uid}/history" },
  listGroups: { method: "GET", path: "/groups" },
  countGroups: { method: "GET", path: "/groups/count" },
  sendToGroup: { method: "POST", path: "/groups/{group}/send", send: true },
  listGroupMembers: { method: "GET", path: "/groups/{group}/members" },
  countGroupMembers: { method: "GET", path: "/groups/{group}/members/count" },
  dissolveGroup: { method: "DELETE", path: "/groups/{group}" },
  joinGroupByClient: { method: "PUT", path: "/groups/{group}/clients/{id}" },
  leaveGroupByClient: { method: "DELETE", path: "/groups/{group}/clients/{id}" },
  joinGroupByUid: { method: "PUT", path: "/groups/{group}/uids/{uid}" },
  leaveGroupByUid: { method: "DELETE", path: "/groups/{group}/uids/{uid}" },
  getGroupSettings: { method: "GET", path: "/groups/{group}/settings" },
  setGroupSettings: { method: "PUT", path: "/groups/{group}/settings" },
  listGroupLocks: { method: "GET", path: "/groups/{group}/locks" },
  breakGroupLock: { method: "DELETE", path: "/groups/{group}/locks/{key}" },
  groupHistory: { method: "GET", path: "/groups/{group}/history" },
  broadcastHistory: { method: "GET", path: "/broadcast/history" },
  listMessages: { method: "GET", path: "/messages" },
  getMessage: { method: "GET", path: "/messages/{id}" },
} as const satisfies Record<string, Operation>;

/** An operationId of /api. */
export type OperationId = keyof typeof OPERATIONS;

/**
 * go-pusher's `/send`, outside /api and the OpenAPI document: the SDK's method `send`. It takes
 * the same Idempotency-Key as the /api sends.
 */
export const SEND_ROUTE = {
  method: "POST",
  path: "/send",
  send: true,
} as const satisfies Operation;

// ---- What the server answers: each type is the JSON body exactly, field for field. ----

/** A send's answer when the target had connections (or, for a group with history, none). */
export interface Delivered {
  /** The message's id: unique and increasing, also across restarts. */
  id: number;
  /** Connections the message was written or queued to. */
  delivered: number;
  /** Connections the target had. */
  connections: number;
  queued?: never;
  /** Present when this is the first answer again, to a retry with the same Idempotency-Key. */
  duplicate?: true;
}

/**
 * A send to an offline uid that the mailbox keeps for its next connection (OFFLINE_TTL > 0): the
 * server's 202. A success: the message will be delivered when the uid connects.
 */
export interface Queued {
  id: number;
  delivered: 0;
  connections: 0;
  queued: true;
  duplicate?: true;
}

/** What a send to a uid answers: delivered now, or queued for later (202). */
export type SendResult = Delivered | Queued;

/** `/send`'s answer (go-pusher's shape: the uid, and no `connections`). */
export type UidSendResult =
  | { id: number; uid: string; delivered: number; queued?: never; duplicate?: true }
  | { id: number; uid: string; delivered: 0; queued: true; duplicate?: true };

/** One message of a batch, with exactly one target. */
export type BatchItem =
  & { message: string }
  & ({ uid: string } | { client: string } | { group: string } | { broadcast: true });

/** One batch item's answer: a send result (`connections: 0` when offline), or why it was refused. */
export type BatchItemResult = SendResult | { error: string };

/** `publishBatch`'s answer: one result per message, in order. */
export interface BatchResult {
  results: BatchItemResult[];
  duplicate?: true;
}

/** A list's page: `next` is the `offset` of the next page, or null at the end. */
export interface Page<T> {
  items: T[];
  total: number;
  next: number | null;
}

/** Which page of a list: `offset` from 0 (default 0), `limit` 1 to 1000 (default 100). */
export interface PageQuery {
  offset?: number;
  limit?: number;
}

/** A connection. */
export interface ClientInfo {
  id: string;
  /** null once unbound. */
  uid: string | null;
  groups: string[];
  /** The token's `info` claim; null when the token had none. */
  info: unknown;
  format: "text" | "json";
  /** ms since the epoch. */
  connectedAt: number;
  /** Outbound bytes waiting for it now: its queue and its socket's buffer. */
  queuedBytes: number;
}

export interface Count {
  count: number;
}

export interface Closed {
  closed: number;
}

export interface ClientOnline {
  id: string;
  online: boolean;
}

export interface UidOnline {
  uid: string;
  online: boolean;
  connections: number;
}

/** A member of a group: one connection. */
export interface Member {
  client: string;
  uid: string | null;
  /** The token's `info` claim; null when the token had none. */
  info: unknown;
}

export interface MemberCount {
  members: number;
  uids: number;
}

/** A join's, leave's or dissolve's answer: the group's members now, and how many changed. */
export interface Membership {
  group: string;
  members: number;
  changed: number;
}

export interface GroupSettings {
  group: string;
  /** Connections the group may hold; 0: no limit. */
  maxMembers: number;
  /** true when set for this group; false when it is the server's MAX_GROUP_MEMBERS. */
  own: boolean;
  members: number;
}

export interface Lock {
  key: string;
  holder: { uid: string | null; client: string };
  /** ms since the epoch; null until released. */
  expiresAt: number | null;
}

export interface Locks {
  items: Lock[];
}

export interface LockBroken {
  group: string;
  key: string;
  released: true;
}

/** Which part of a stream's history: after message `since` (default 0), `limit` 1 to 1000. */
export interface HistoryQuery {
  since?: number;
  limit?: number;
}

export interface HistoryItem {
  id: number;
  data: string;
  /** When it was accepted, ms since the epoch. */
  ts: number;
  /** Who sent it over its socket; absent for a backend's message. */
  from?: { uid: string; client: string };
}

export interface HistoryPage {
  items: HistoryItem[];
  /** false when some of the stream's messages after `since` were trimmed. */
  recovered: boolean;
  /** The `since` of the next page, or null at the end. */
  next: number | null;
}

export type MessageStatus =
  | "accepted"
  | "delivered"
  | "offline"
  | "failed"
  | "dropped"
  | "interrupted"
  | "queued"
  | "expired"
  | "acked";

/** A message as the message log keeps it (MESSAGE_LOGGER=sqlite). */
export interface LoggedMessage {
  id: number;
  /** `uid:<uid>`, `group:<name>`, `client:<id>` or `all`. */
  target: string;
  uid: string | null;
  message: string;
  status: MessageStatus;
  /** Connections it was written to. */
  written: number;
  /** Distinct uids that acked it. */
  acked: number;
  ts: number;
  updated: number;
}

/** Which of the log's messages: `uid`'s only, older than id `before`, `limit` 1 to 1000 (100). */
export interface MessageQuery {
  uid?: string;
  before?: number;
  limit?: number;
}

/** A page of the message log, newest first: `next` is the `before` of the older page, or null. */
export interface MessagePage {
  items: LoggedMessage[];
  next: number | null;
}

/** The server's error body: `issues` on a 400, `id` (and `uid` on /send) on a send's 404. */
export interface ErrorBody {
  error: string;
  issues?: unknown[];
  id?: number;
  uid?: string;
  duplicate?: true;
}

// ---- Errors ----

/**
 * What went wrong, for a `switch`: `invalid` 400, `unauthorized` 401 or 403, `not_found` 404,
 * `offline` a send's 404 (the message was made, with an `id`, but its target had no connection),
 * `conflict` 409, `key_reused` 422, `too_large` 413, `rate_limited` 429, `unavailable` 503,
 * `network` no answer (status 0), `http` any other status.
 */
export type ErrorKind =
  | "invalid"
  | "unauthorized"
  | "not_found"
  | "offline"
  | "conflict"
  | "key_reused"
  | "too_large"
  | "rate_limited"
  | "unavailable"
  | "network"
  | "http";

/** A call that failed. `message` is the server's `{"error"}` as it said it. */
export class DenoPusherError extends Error {
  override name = "DenoPusherError";
  readonly kind: ErrorKind;
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** The operationId called (or `send`), and its method and URL. */
  readonly operation: string;
  readonly method: string;
  readonly url: string;
  /** The server's error body, when it sent JSON. */
  readonly body?: ErrorBody;

  /** The server's Retry-After, in seconds, when it sent one (a 429 always does). */
  readonly retryAfter?: number;

  constructor(message: string, init: ErrorInit) {
    super(message, { cause: init.cause });
    this.kind = init.kind;
    this.status = init.status;
    this.operation = init.request.operation;
    this.method = init.request.method;
    this.url = init.request.url;
    this.body = init.body;
    this.retryAfter = init.retryAfter;
  }
}

/** What a DenoPusherError is made of. */
export interface ErrorInit {
  kind: ErrorKind;
  status: number;
  request: { operation: string; method: string; url: string };
  body?: ErrorBody;
  retryAfter?: number;
  cause?: unknown;
}

/** 400: a parameter or the body failed validation; `issues` are zod's, as the server sent them. */
export class InvalidRequestError extends DenoPusherError {
  override name = "InvalidRequestError";
  get issues(): unknown[] | undefined {
    return this.body?.issues;
  }
}

/** 401 (no key, or a wrong one) or 403 (no API_KEYS set, and the caller is off loopback). */
export class UnauthorizedError extends DenoPusherError {
  override name = "UnauthorizedError";
}

/** 404: no such client, group, lock or message, or no history or log is kept. */
export class NotFoundError extends DenoPusherError {
  override name = "NotFoundError";
}

/**
 * A send's 404: its target had no connection. The message was made all the same: it has an `id`,
 * is in the message log and, for a uid, in its history.
 */
export class OfflineError extends NotFoundError {
  override name = "OfflineError";
  /** The message's id. */
  readonly id: number;
  constructor(message: string, init: ErrorInit & { body: ErrorBody & { id: number } }) {
    super(message, init);
    this.id = init.body.id;
  }
  /** The uid, on /send's 404. */
  get uid(): string | undefined {
    return this.body?.uid;
  }
}

/** 409: the group is full, or a request with this Idempotency-Key is still running. */
export class ConflictError extends DenoPusherError {
  override name = "ConflictError";
}

/** 422: this Idempotency-Key was sent before with another request; use a new key. */
export class KeyReusedError extends DenoPusherError {
  override name = "KeyReusedError";
}

/** 413: the message is over MAX_MESSAGE_BYTES, or the body over the request limit. */
export class TooLargeError extends DenoPusherError {
  override name = "TooLargeError";
}

/** 429: over MAX_REQUESTS_PER_KEY; `retryAfter` says how many seconds to wait. */
export class RateLimitedError extends DenoPusherError {
  override name = "RateLimitedError";
}

/** 503: the server cannot keep the message now (a full disk, a locked file); nothing was pushed. */
export class UnavailableError extends DenoPusherError {
  override name = "UnavailableError";
}

/** No answer: the connection failed, or none came within `timeoutMs`. `cause` says which. */
export class NetworkError extends DenoPusherError {
  override name = "NetworkError";
}

// ---- The client ----

/** How failed calls are retried. */
export interface RetryPolicy {
  /** Tries in all, the first included; 1 turns retries off. */
  attempts: number;
  /** The backoff before the nth retry is random in [0, min(maxDelayMs, baseDelayMs × 2^(n-1))). */
  baseDelayMs: number;
  /** Longest wait between tries, in ms; a Retry-After longer than this is not waited for. */
  maxDelayMs: number;
}

/** Defaults: 5 tries over about 1.5 s of backoff, never a wait over 10 s. */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 10_000 };

/** Per try, in ms: longer than the 5 s the server waits for a key's first request to finish. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** Told before each retry, for logs and metrics. */
export interface RetryEvent {
  operation: string;
  /** The try that failed, from 1. */
  attempt: number;
  /** How long the client waits before the next try, in ms. */
  delayMs: number;
  /** The failure being retried. */
  error: DenoPusherError;
  /** The send's Idempotency-Key, reused by the next try. */
  idempotencyKey?: string;
}

export interface DenoPusherOptions {
  /** One of the server's API_KEYS, sent as `Authorization: Bearer <key>`; none on loopback. */
  apiKey?: string;
  retry?: Partial<RetryPolicy>;
  /** Most ms one try waits for its answer (DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  onRetry?: (event: RetryEvent) => void;
  /** The fetch to call (to log, or to go through an agent); the global one by default. */
  fetch?: Fetch;
}

/** The part of `fetch` the SDK calls. */
export type Fetch = (url: URL, init: RequestInit) => Promise<Response>;

/** Options of one call. */
export interface CallOptions {
  /** Aborts the call, retries and waits included; the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of one send. */
export interface SendOptions extends CallOptions {
  /**
   * 1–256 printable ASCII characters without spaces (a UUID, an order id): a send repeated with
   * the same key within IDEMPOTENCY_TTL is answered again, with `duplicate: true`, and not pushed.
   * A fresh `crypto.randomUUID()` when absent, so that the client's own retries are safe.
   */
  idempotencyKey?: string;
}

/** A method for each operationId: the compiler checks that none is missing. */
type Operations = { [K in OperationId]: (...args: never[]) => Promise<unknown> };

/** The parts of one request. */
interface Call {
  params?: Record<string, string | number>;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
}

/**
 * A client for one deno-pusher server. Stateless between calls: one instance may serve every
 * request of a process, concurrently.
 */
export class DenoPusher implements Operations {
  readonly baseUrl: string;
  readonly #apiKey?: string;
  readonly #retry: RetryPolicy;
  readonly #timeoutMs: number;
  readonly #onRetry?: (event: RetryEvent) => void;
  readonly #fetch: Fetch;

  /** `baseUrl` is the server's root (`http://localhost:8181`), with any prefix a proxy adds. */
  constructor(baseUrl: string | URL, options: DenoPusherOptions = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.#apiKey = options.apiKey;
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#onRetry = options.onRetry;
    this.#fetch = options.fetch ?? ((url, init) => fetch(url, init));
  }

  // ---- Sends ----

  /**
   * `POST /send`: go-pusher's send to every connection of `uid`. Throws OfflineError when the uid
   * has no connection (and no mailbox keeps it); with the mailbox on, answers `queued: true`.
   */
  send(uid: string, message: string, options?: SendOptions): Promise<UidSendResult> {
    return this.#request("send", SEND_ROUTE, { body: { uid, message } }, options);
  }

  /** Sends to every connection of `uid`; OfflineError when it has none, unless queued. */
  sendToUid(uid: string, message: string, options?: SendOptions): Promise<SendResult> {
    return this.#call("sendToUid", { params: { uid }, body: { message } }, options);
  }

  /** Sends to one connection; OfflineError when it is not online. */
  sendToClient(id: string, message: string, options?: SendOptions): Promise<Delivered> {
    return this.#call("sendToClient", { params: { id }, body: { message } }, options);
  }

  /**
   * Sends to every member of `group`. Without members: OfflineError when the server keeps no
   * history, else `connections: 0` (members that resume get it).
   */
  sendToGroup(group: string, message: string, options?: SendOptions): Promise<Delivered> {
    return this.#call("sendToGroup", { params: { group }, body: { message } }, options);
  }

  /** Sends to every connection. */
  broadcast(message: string, options?: SendOptions): Promise<Delivered> {
    return this.#call("broadcast", { body: { message } }, options);
  }

  /**
   * Sends many messages in one request (at most the server's MAX_BATCH); each is answered on its
   * own, in order, and an offline target is `connections: 0`, not an error.
   */
  publishBatch(messages: BatchItem[], options?: SendOptions): Promise<BatchResult> {
    return this.#call("publishBatch", { body: { messages } }, options);
  }

  // ---- Clients (connections) ----

  listClients(page?: PageQuery, options?: CallOptions): Promise<Page<ClientInfo>> {
    return this.#call("listClients", { query: { ...page } }, options);
  }

  countClients(options?: CallOptions): Promise<Count> {
    return this.#call("countClients", {}, options);
  }

  /** A connection; NotFoundError when it is not online. */
  getClient(id: string, options?: CallOptions): Promise<ClientInfo> {
    return this.#call("getClient", { params: { id } }, options);
  }

  isClientOnline(id: string, options?: CallOptions): Promise<ClientOnline> {
    return this.#call("isClientOnline", { params: { id } }, options);
  }

  /** Closes a connection with close code 4009; NotFoundError when it is not online. */
  closeClient(id: string, options?: CallOptions): Promise<Closed> {
    return this.#call("closeClient", { params: { id } }, options);
  }

  /** Rebinds a connection to `uid` (it keeps its groups); NotFoundError when not online. */
  bindUid(id: string, uid: string, options?: CallOptions): Promise<ClientInfo> {
    return this.#call("bindUid", { params: { id }, body: { uid } }, options);
  }

  /** Unbinds a connection's uid: it stays connected with `uid: null`. */
  unbindUid(id: string, options?: CallOptions): Promise<ClientInfo> {
    return this.#call("unbindUid", { params: { id } }, options);
  }

  // ---- Uids ----

  listUids(page?: PageQuery, options?: CallOptions): Promise<Page<string>> {
    return this.#call("listUids", { query: { ...page } }, options);
  }

  countUids(options?: CallOptions): Promise<Count> {
    return this.#call("countUids", {}, options);
  }

  isUidOnline(uid: string, options?: CallOptions): Promise<UidOnline> {
    return this.#call("isUidOnline", { params: { uid } }, options);
  }

  /** The uid's connections; an empty page when it is offline. */
  listUidClients(uid: string, page?: PageQuery, options?: CallOptions): Promise<Page<ClientInfo>> {
    return this.#call("listUidClients", { params: { uid }, query: { ...page } }, options);
  }

  /** Logs a uid out: closes each of its connections with 4009 `logged out`. */
  disconnectUid(uid: string, options?: CallOptions): Promise<Closed> {
    return this.#call("disconnectUid", { params: { uid } }, options);
  }

  /** What was sent to `uid`, as kept; NotFoundError when the server keeps no history. */
  uidHistory(uid: string, range?: HistoryQuery, options?: CallOptions): Promise<HistoryPage> {
    return this.#call("uidHistory", { params: { uid }, query: { ...range } }, options);
  }

  // ---- Groups ----

  listGroups(page?: PageQuery, options?: CallOptions): Promise<Page<string>> {
    return this.#call("listGroups", { query: { ...page } }, options);
  }

  countGroups(options?: CallOptions): Promise<Count> {
    return this.#call("countGroups", {}, options);
  }

  /** NotFoundError when the group has no members. */
  listGroupMembers(group: string, page?: PageQuery, options?: CallOptions): Promise<Page<Member>> {
    return this.#call("listGroupMembers", { params: { group }, query: { ...page } }, options);
  }

  /** NotFoundError when the group has no members. */
  countGroupMembers(group: string, options?: CallOptions): Promise<MemberCount> {
    return this.#call("countGroupMembers", { params: { group } }, options);
  }

  /** Every member leaves; NotFoundError when the group has none. */
  dissolveGroup(group: string, options?: CallOptions): Promise<Membership> {
    return this.#call("dissolveGroup", { params: { group } }, options);
  }

  /** Idempotent; NotFoundError when the client is not online, ConflictError when it is full. */
  joinGroupByClient(group: string, id: string, options?: CallOptions): Promise<Membership> {
    return this.#call("joinGroupByClient", { params: { group, id } }, options);
  }

  /** Idempotent; NotFoundError when the client is not online. */
  leaveGroupByClient(group: string, id: string, options?: CallOptions): Promise<Membership> {
    return this.#call("leaveGroupByClient", { params: { group, id } }, options);
  }

  /** Every connection of `uid` joins, or none does: ConflictError when they do not all fit. */
  joinGroupByUid(group: string, uid: string, options?: CallOptions): Promise<Membership> {
    return this.#call("joinGroupByUid", { params: { group, uid } }, options);
  }

  /** Idempotent. */
  leaveGroupByUid(group: string, uid: string, options?: CallOptions): Promise<Membership> {
    return this.#call("leaveGroupByUid", { params: { group, uid } }, options);
  }

  getGroupSettings(group: string, options?: CallOptions): Promise<GroupSettings> {
    return this.#call("getGroupSettings", { params: { group } }, options);
  }

  /** Bounds the group's connections (0: no bound; null: the server's MAX_GROUP_MEMBERS again). */
  setGroupSettings(
    group: string,
    maxMembers: number | null,
    options?: CallOptions,
  ): Promise<GroupSettings> {
    return this.#call("setGroupSettings", { params: { group }, body: { maxMembers } }, options);
  }

  /** The keys locked in the group, oldest first. */
  listGroupLocks(group: string, options?: CallOptions): Promise<Locks> {
    return this.#call("listGroupLocks", { params: { group } }, options);
  }

  /** Breaks a lock (members get `unlock`); NotFoundError when the key is not locked. */
  breakGroupLock(group: string, key: string, options?: CallOptions): Promise<LockBroken> {
    return this.#call("breakGroupLock", { params: { group, key } }, options);
  }

  /** What was sent to `group`, as kept; NotFoundError when the server keeps no history. */
  groupHistory(group: string, range?: HistoryQuery, options?: CallOptions): Promise<HistoryPage> {
    return this.#call("groupHistory", { params: { group }, query: { ...range } }, options);
  }

  /** What was broadcast, as kept; NotFoundError when the server keeps no history. */
  broadcastHistory(range?: HistoryQuery, options?: CallOptions): Promise<HistoryPage> {
    return this.#call("broadcastHistory", { query: { ...range } }, options);
  }

  // ---- Messages ----

  /** The latest messages of the log, newest first; NotFoundError when no readable log is kept. */
  listMessages(query?: MessageQuery, options?: CallOptions): Promise<MessagePage> {
    return this.#call("listMessages", { query: { ...query } }, options);
  }

  /** A message's fate; NotFoundError when unknown or when no readable log is kept. */
  getMessage(id: number, options?: CallOptions): Promise<LoggedMessage> {
    return this.#call("getMessage", { params: { id } }, options);
  }

  // ---- The one path every call takes ----

  #call<T>(id: OperationId, call: Call, options?: SendOptions): Promise<T> {
    const operation: Operation = OPERATIONS[id];
    return this.#request(id, { ...operation, path: API_PREFIX + operation.path }, call, options);
  }

  /** Sends `call` to `route`, retrying what is safe to retry; the 2xx body, or a thrown error. */
  async #request<T>(name: string, route: Operation, call: Call, options: SendOptions = {}) {
    const path = route.path.replace(/\{(\w+)\}/g, (_, param: string) => {
      const value = call.params?.[param];
      if (value === undefined) throw new TypeError(`${name}: ${param} is required`);
      return encodeURIComponent(value);
    });
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.#apiKey !== undefined) headers.authorization = `Bearer ${this.#apiKey}`;
    if (call.body !== undefined) headers["content-type"] = "application/json";
    const idempotencyKey = route.send ? options.idempotencyKey ?? crypto.randomUUID() : undefined;
    if (idempotencyKey !== undefined) headers["idempotency-key"] = idempotencyKey;
    const init: RequestInit = {
      method: route.method,
      headers,
      body: call.body === undefined ? undefined : JSON.stringify(call.body),
    };
    const request = { operation: name, method: route.method, url: url.href };
    const retries = route.send || route.method === "GET";
    const { signal } = options;

    for (let attempt = 1;; attempt++) {
      signal?.throwIfAborted();
      let error: DenoPusherError;
      try {
        const { status, headers, body } = await this.#try(url, init, signal);
        if (status >= 200 && status < 300) return body as T;
        error = errorFor(status, headers, body, request);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        const why = err instanceof Error ? err.message : String(err);
        error = new NetworkError(`${route.method} ${url.href} got no answer: ${why}`, {
          kind: "network",
          status: 0,
          request,
          cause: err,
        });
      }
      // A 409 to a retry of a send is the key's first try, still running: its answer will come.
      const transient = error.kind === "network" || error.kind === "unavailable" ||
        error.kind === "rate_limited" || (route.send && attempt > 1 && error.kind === "conflict");
      const delayMs = retries && transient && attempt < this.#retry.attempts
        ? this.#delay(error, attempt)
        : undefined;
      if (delayMs === undefined) throw error;
      this.#onRetry?.({ operation: name, attempt, delayMs, error, idempotencyKey });
      await sleep(delayMs, signal);
    }
  }

  /** One try: the status, headers and body (JSON, or text when it is not), within the timeout. */
  async #try(url: URL, init: RequestInit, signal?: AbortSignal) {
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new Error(`no answer within ${this.#timeoutMs} ms (timeoutMs)`)),
      this.#timeoutMs,
    );
    const onAbort = () => timeout.abort(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const res = await this.#fetch(url, { ...init, signal: timeout.signal });
      const text = await res.text();
      let body: unknown = text;
      if (res.headers.get("content-type")?.includes("json")) {
        try {
          body = JSON.parse(text);
        } catch {
          // Kept as text: the error below quotes it.
        }
      }
      return { status: res.status, headers: res.headers, body };
    } catch (err) {
      throw timeout.signal.aborted && !signal?.aborted ? timeout.signal.reason : err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The wait before retrying `error`, in ms, or undefined when a Retry-After is too long. */
  #delay(error: DenoPusherError, attempt: number): number | undefined {
    const { baseDelayMs, maxDelayMs } = this.#retry;
    if (error.retryAfter !== undefined) {
      const after = error.retryAfter * 1000;
      return after <= maxDelayMs ? after : undefined;
    }
    return Math.random() * Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  }
}

/** The typed error for an answer of `status` that is not a success. */
function errorFor(
  status: number,
  headers: Headers,
  body: unknown,
  request: ErrorInit["request"],
): DenoPusherError {
  const json = isErrorBody(body) ? body : undefined;
  const quoted = typeof body === "string" && body ? `: ${body.slice(0, 200)}` : "";
  const message = json?.error ?? `${request.method} ${request.url} answered ${status}${quoted}`;
  const init = { status, request, body: json, retryAfter: retryAfter(headers.get("retry-after")) };
  switch (status) {
    case 400:
      return new InvalidRequestError(message, { ...init, kind: "invalid" });
    case 401:
    case 403:
      return new UnauthorizedError(message, { ...init, kind: "unauthorized" });
    case 404:
      return typeof json?.id === "number"
        ? new OfflineError(message, { ...init, body: { ...json, id: json.id }, kind: "offline" })
        : new NotFoundError(message, { ...init, kind: "not_found" });
    case 409:
      return new ConflictError(message, { ...init, kind: "conflict" });
    case 413:
      return new TooLargeError(message, { ...init, kind: "too_large" });
    case 422:
      return new KeyReusedError(message, { ...init, kind: "key_reused" });
    case 429:
      return new RateLimitedError(message, { ...init, kind: "rate_limited" });
    case 503:
      return new UnavailableError(message, { ...init, kind: "unavailable" });
    default:
      return new DenoPusherError(message, { ...init, kind: "http" });
  }
}

function isErrorBody(body: unknown): body is ErrorBody {
  return typeof body === "object" && body !== null && typeof (body as ErrorBody).error === "string";
}

/** A Retry-After header (seconds, or an HTTP date) in seconds from now; undefined when absent. */
function retryAfter(header: string | null): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
