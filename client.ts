/**
 * A client is one WebSocket connection: it owns the socket's write side, a bounded
 * queue in front of it, and the frame format the connection asked for.
 *
 * Concurrency invariant: every write to the socket goes through `Client.#write`, in queue order, and
 * the queue (with the socket's own buffer) never holds more than HARD_QUEUE_FACTOR × MAX_QUEUE_BYTES
 * before the client is cut off. While its queue waits, the runtime adapter owes it one `drain` call
 * (Socket.whenDrained), so at most one wait is ever outstanding; the client's only timer runs while
 * it is more than MAX_QUEUE_BYTES behind, to cut it off if it stays there.
 */
import { SmallSet } from "./smallset.ts";
import { type Message, utf8Length } from "./message/message.ts";
import { HARD_QUEUE_FACTOR, HIGH_WATER_BYTES, type Socket } from "./runtime/contract.ts";
import { type Permissions, permissionsOf } from "./permissions.ts";

export { HARD_QUEUE_FACTOR, HIGH_WATER_BYTES, type Socket };

/** How pushes are framed for a connection, chosen with `?format=` when it connects. */
export type Format = "text" | "json";

/**
 * Close codes the server sends, with the reason text that goes with each. Documented in the
 * README; clients may branch on them.
 */
export const CloseCode = {
  /** Server shutting down or restarting; reconnect. */
  goingAway: { code: 1001, reason: "server going away" },
  /** A binary frame arrived; the protocol is text only. */
  unsupportedData: { code: 1003, reason: "binary frames are not accepted" },
  /** An inbound frame was over MAX_FRAME_BYTES. */
  tooBig: { code: 1009, reason: "frame too large" },
  /** The auth frame carried a token that did not verify (the reason says why). */
  authFailed: { code: 4001, reason: "authentication failed" },
  /** No auth frame within AUTH_TIMEOUT seconds. */
  authTimeout: { code: 4002, reason: "authentication timeout" },
  /** The first frame of an ?auth=frame socket was not a valid auth frame. */
  authExpected: { code: 4003, reason: "expected an auth frame" },
  /** Closed through the API (DELETE /api/clients/{id}, or a uid's logout). */
  closedByServer: { code: 4009, reason: "closed by server" },
  /** More frames per second than MAX_FRAMES_PER_SECOND (1008: policy violation). */
  tooManyFrames: { code: 1008, reason: "too many frames" },
  /** The token expired and no fresh one came in an auth frame. */
  tokenExpired: { code: 4004, reason: "token expired" },
  /** The uid already had MAX_CONNECTIONS_PER_UID connections (auth-frame sockets; others get 429). */
  tooManyForUid: { code: 4029, reason: "too many connections for this uid" },
  /**
   * The connection stayed more than MAX_QUEUE_BYTES behind for SLOW_CONSUMER_TIMEOUT seconds, or
   * fell HARD_QUEUE_FACTOR times that behind.
   */
  slowConsumer: { code: 4008, reason: "slow consumer" },
} as const;

/** A close frame's reason may hold at most 123 bytes of UTF-8 (RFC 6455, 5.5). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** `reason`, cut to fit a close frame; runtimes throw on a longer one. */
export function closeReason(reason: string): string {
  let cut = reason;
  while (utf8Length(cut) > MAX_CLOSE_REASON_BYTES) cut = cut.slice(0, -1);
  return cut;
}

/** What the hub learns from a client's queue, so its gauges and message statuses stay exact. */
export interface ClientEvents {
  /** A frame entered (+1) or left (-1) a queue. */
  pending(delta: 1 | -1): void;
  /** A push was written to the socket. */
  sent(message: Message): void;
  /** A push could not be written: the socket threw, or the frame was dropped from the queue. */
  lost(client: Client, message: Message, how: "failed" | "dropped"): void;
  /** The client was cut off as a slow consumer and must leave the hub. */
  slow(client: Client): void;
}

interface Queued {
  frame: string;
  bytes: number;
  message?: Message;
}

/** What a client is made of; the hub builds it once the connection is authenticated. */
export interface ClientOptions {
  uid: string;
  format: Format;
  socket: Socket;
  events: ClientEvents;
  /** Outbound bytes the client may fall behind by for up to `slowConsumerTimeout`. */
  maxQueueBytes: number;
  /**
   * Milliseconds the client may stay more than `maxQueueBytes` behind before it is cut off; 0 cuts
   * it off as soon as it is.
   */
  slowConsumerTimeout: number;
  /** The token's `info` claim, shown in group member lists; any JSON value. */
  info?: unknown;
  /** Whether it asked for presence events (join/leave) of its groups; json format only. */
  presence?: boolean;
  /** What it may ask over its socket (its token's claims); by default nothing. */
  permissions?: Permissions;
}

/**
 * The queue of every client with nothing queued, nearly all of them: shared and frozen, and
 * replaced by an array of the client's own before its first frame waits.
 */
const NO_QUEUE: Queued[] = Object.freeze([]) as unknown as Queued[];

/** One connection. */
export class Client {
  /** Crypto-random, unique per connection. */
  readonly id = crypto.randomUUID();
  /**
   * The uid this connection belongs to, or undefined once unbound. Only the hub changes it, together
   * with its uid index (bind and unbind).
   */
  uid: string | undefined;
  /** The groups it is a member of. Only the hub changes it, together with its group index. */
  readonly groups = new SmallSet<string>();
  readonly format: Format;
  readonly info: unknown;
  readonly presence: boolean;
  /** What it may ask over its socket; a refreshed token replaces them (connection.ts). */
  permissions: Permissions;
  /** Milliseconds since the epoch. */
  readonly connectedAt = Date.now();
  private readonly socket: Socket;
  private readonly events: ClientEvents;
  private readonly maxQueueBytes: number;
  private readonly slowConsumerTimeout: number;
  /** Frames waiting for the socket, from `#head` on: shifting an array is O(n), an index is not. */
  #queue: Queued[] = NO_QUEUE;
  #head = 0;
  #queuedBytes = 0;
  /**
   * An upper bound on the runtime's buffer for this socket: its last reading plus every byte
   * written since. Reading the real value is a call into the runtime per push, so it is read only
   * when this bound reaches HIGH_WATER_BYTES: about once per 64 KiB written.
   */
  #bufferedBound = 0;
  #closed = false;
  /** Since when (ms since the epoch) it has been more than maxQueueBytes behind, if it is. */
  #behindSince: number | undefined;
  #behindTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ClientOptions) {
    this.uid = options.uid;
    this.format = options.format;
    this.socket = options.socket;
    this.events = options.events;
    this.maxQueueBytes = options.maxQueueBytes;
    this.slowConsumerTimeout = options.slowConsumerTimeout;
    this.info = options.info;
    this.presence = options.presence ?? false;
    this.permissions = options.permissions ?? permissionsOf();
  }

  /** Whether the client has been closed or cut off; a closed client writes nothing more. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Pushes a message in this client's format. Returns false when the client could not take it
   * (closed, the write threw, or it was cut off as slow because of it).
   */
  push(message: Message): boolean {
    if (this.#closed) {
      this.events.lost(this, message, "dropped");
      return false;
    }
    const frame = this.format === "json" ? message.json : message.text;
    return this.#enqueue({ frame: frame.data, bytes: frame.bytes, message });
  }

  /** Sends a control frame (welcome, pong) in order with the pushes. */
  control(data: string): boolean {
    return this.#enqueue({ frame: data, bytes: utf8Length(data) });
  }

  /** Writes what the socket can take now; the runtime adapter calls it when the buffer drained. */
  drain(): void {
    while (this.#head < this.#queue.length && !this.#closed) {
      if (!this.#socketHasRoom()) {
        this.socket.whenDrained();
        return;
      }
      const item = this.#queue[this.#head++];
      this.#queuedBytes -= item.bytes;
      this.events.pending(-1);
      this.#write(item);
    }
    this.#queue = NO_QUEUE;
    this.#head = 0;
  }

  /**
   * Closes the socket with `code` and drops what is still queued. Idempotent; the hub calls it
   * when the client leaves, whatever the reason.
   */
  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const item of this.#queue.slice(this.#head)) {
      this.events.pending(-1);
      if (item.message) this.events.lost(this, item.message, "dropped");
    }
    this.#queue = NO_QUEUE;
    this.#head = 0;
    this.#queuedBytes = 0;
    clearTimeout(this.#behindTimer);
    try {
      this.socket.close(code, closeReason(reason));
    } catch {
      // The socket is already gone; nothing is left to tell the peer.
    }
  }

  #enqueue(item: Queued): boolean {
    if (this.#closed) return false;
    if (this.#head === this.#queue.length && this.#socketHasRoom()) return this.#write(item);
    if (this.#queue === NO_QUEUE) this.#queue = [];
    this.#queue.push(item);
    this.#queuedBytes += item.bytes;
    this.events.pending(1);
    if (this.#tooFarBehind()) {
      this.events.slow(this);
      return false;
    }
    // The first frame to wait asks for a drain call; the later ones wait for the same call.
    if (this.#queue.length - this.#head === 1) this.socket.whenDrained();
    return true;
  }

  /** Outbound bytes waiting for this connection: its queue and the socket's own buffer. */
  get queuedBytes(): number {
    return this.#queuedBytes + this.socket.bufferedAmount();
  }

  /**
   * Whether the client must be cut off as slow: past the hard bound, or more than maxQueueBytes
   * behind for slowConsumerTimeout. A client that reads at full speed can fall behind for a moment
   * (a burst arrives faster than one turn of the event loop writes it); only one that stays behind
   * is slow. The first time it falls behind starts the timer that checks again when its time is up.
   */
  #tooFarBehind(): boolean {
    const backlog = this.queuedBytes;
    if (backlog <= this.maxQueueBytes) {
      this.#behindSince = undefined;
      return false;
    }
    if (backlog > this.maxQueueBytes * HARD_QUEUE_FACTOR) return true;
    const now = Date.now();
    this.#behindSince ??= now;
    if (now - this.#behindSince >= this.slowConsumerTimeout) return true;
    this.#behindTimer ??= setTimeout(() => {
      this.#behindTimer = undefined;
      if (!this.#closed && this.#tooFarBehind()) this.events.slow(this);
    }, this.#behindSince + this.slowConsumerTimeout - now);
    return false;
  }

  /** Whether the runtime's buffer is below HIGH_WATER_BYTES; reads it only when it may not be. */
  #socketHasRoom(): boolean {
    if (this.#bufferedBound < HIGH_WATER_BYTES) return true;
    this.#bufferedBound = this.socket.bufferedAmount();
    return this.#bufferedBound < HIGH_WATER_BYTES;
  }

  #write(item: Queued): boolean {
    try {
      this.socket.send(item.frame);
    } catch {
      if (item.message) this.events.lost(this, item.message, "failed");
      return false;
    }
    this.#bufferedBound += item.bytes;
    if (item.message) this.events.sent(item.message);
    return true;
  }
}
