/**
 * The hub owns the set of connected clients and decides who receives a message.
 *
 * Invariant: the indexes (client id → client, uid → clients) change only in `#attach` and
 * `#detach`, and a client leaves through `#detach` exactly once, whatever closed it. A uid may have
 * any number of clients; closing one never touches another (go-pusher's second login evicted the
 * first, and the first's close then removed the second).
 */
import { Client, type ClientEvents, CloseCode, type Format, type Socket } from "./client.ts";
import type { DeliveryStatus, MessageLogger } from "./message/logger.ts";
import { Message, PROTOCOL_VERSION } from "./message/message.ts";
import type { Metrics } from "./metrics.ts";

/** Called when a push could not be delivered on a connection; for alerting, never for control. */
export type DeliveryErrorHandler = (
  error: { messageId: number; uid: string; clientId: string; how: "failed" | "dropped" },
) => void;

/** The outcome of a push to a uid. */
export interface SendResult {
  id: number;
  uid: string;
  /** Connections the message was written or queued to. */
  delivered: number;
  /** Connections the uid had; 0 means it was offline. */
  connections: number;
}

/** Hub options; all have working defaults. */
export interface HubOptions {
  logger: MessageLogger;
  metrics: Metrics;
  /** Outbound bytes a connection may fall behind by before it is cut off (4008). */
  maxQueueBytes: number;
  onDeliveryError?: DeliveryErrorHandler;
}

/** The set of connections and the delivery of pushes to them. */
export class Hub {
  readonly #clients = new Map<string, Client>();
  readonly #byUid = new Map<string, Set<Client>>();
  readonly #logger: MessageLogger;
  readonly #metrics: Metrics;
  readonly #maxQueueBytes: number;
  readonly #onDeliveryError: DeliveryErrorHandler;
  readonly #events: ClientEvents;
  #lastId: number;
  /** Frames waiting in client queues, all clients together. */
  #pending = 0;

  constructor(options: HubOptions) {
    this.#logger = options.logger;
    this.#metrics = options.metrics;
    this.#maxQueueBytes = options.maxQueueBytes;
    this.#onDeliveryError = options.onDeliveryError ?? (() => {});
    // Ids increase across restarts even without a stored last id: start from the clock in
    // microseconds (safe integers until the year 2255) or after the last stored id if that is later.
    this.#lastId = Math.max(this.#logger.lastId(), Date.now() * 1000);
    this.#events = this.#clientEvents();
  }

  /** Connections now. */
  get connections(): number {
    return this.#clients.size;
  }

  /** Distinct uids with at least one connection. */
  get users(): number {
    return this.#byUid.size;
  }

  /** Frames queued behind backed-up sockets, counted exactly. */
  get pending(): number {
    return this.#pending;
  }

  /** The client with this id, if connected. */
  client(id: string): Client | undefined {
    return this.#clients.get(id);
  }

  /** How many connections `uid` has. */
  connectionsOf(uid: string): number {
    return this.#byUid.get(uid)?.size ?? 0;
  }

  /**
   * Registers an authenticated socket as a client of `uid`. In the json format the client first
   * gets a `welcome` frame with its id.
   */
  connect(uid: string, format: Format, socket: Socket): Client {
    const client = new Client(uid, format, socket, this.#events, this.#maxQueueBytes);
    this.#attach(client);
    if (format === "json") {
      client.control(JSON.stringify({
        type: "welcome",
        v: PROTOCOL_VERSION,
        client: client.id,
        uid,
        format,
      }));
    }
    return client;
  }

  /** The socket of `client` closed (either side): it leaves the hub. Idempotent. */
  disconnected(client: Client): void {
    this.#detach(client, 1000, "");
  }

  /** Closes `client` with `code` and removes it. Idempotent. */
  close(client: Client, code: number, reason: string): void {
    this.#detach(client, code, reason);
  }

  /** Closes every client with `code`; used at shutdown. */
  closeAll(code: number, reason: string): void {
    for (const client of [...this.#clients.values()]) this.#detach(client, code, reason);
  }

  /**
   * Pushes `data` to every connection of `uid` and logs it. `dataBytes` is its UTF-8 size when
   * the caller already knows it. The work is proportional to the uid's connections, never to all.
   */
  sendToUid(uid: string, data: string, dataBytes?: number): SendResult {
    const id = ++this.#lastId;
    const message = new Message(id, uid, data, Date.now(), dataBytes);
    this.#metrics.messagesAccepted++;
    this.#logger.log({ id, uid, message: data, createdAt: message.ts, status: "accepted" });
    const clients = this.#byUid.get(uid);
    if (!clients) {
      this.#metrics.messagesOffline++;
      this.#settle(message, "offline");
      return { id, uid, delivered: 0, connections: 0 };
    }
    const connections = clients.size;
    // Every recipient counts as outstanding before the first push, so that an early failure cannot
    // settle the message while later recipients have yet to take it.
    message.outstanding = connections;
    let delivered = 0;
    // Copy first: a push can cut a slow client off, which edits the set.
    for (const client of [...clients]) {
      if (client.push(message)) delivered++;
    }
    return { id, uid, delivered, connections };
  }

  #attach(client: Client): void {
    this.#clients.set(client.id, client);
    let set = this.#byUid.get(client.uid);
    if (!set) this.#byUid.set(client.uid, set = new Set());
    set.add(client);
  }

  #detach(client: Client, code: number, reason: string): void {
    if (this.#clients.get(client.id) === client) {
      this.#clients.delete(client.id);
      const set = this.#byUid.get(client.uid);
      set?.delete(client);
      if (set?.size === 0) this.#byUid.delete(client.uid);
    }
    client.close(code, reason);
  }

  #settle(message: Message, status: DeliveryStatus): void {
    if (message.status !== "accepted") return;
    message.status = status;
    this.#logger.setStatus(message.id, status);
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
      },
      lost: (client, message, how) => {
        if (how === "failed") this.#metrics.messagesFailed++;
        else this.#metrics.messagesDropped++;
        message.outstanding--;
        if (message.outstanding === 0 && message.written === 0) this.#settle(message, how);
        this.#onDeliveryError({
          messageId: message.id,
          uid: message.uid,
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
