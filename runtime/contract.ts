/**
 * The runtime contract: what the core asks of a runtime, and what a runtime calls in the core.
 * Each adapter (deno.ts, bun.ts) implements it in a few dozen lines; hub.ts, client.ts,
 * connection.ts and server.ts see only these types and never ask which runtime they run on.
 */

/**
 * Bytes the runtime may buffer for a socket before further frames wait in the client's own queue;
 * an adapter's `whenDrained` answers once the buffer has fallen below it. Both adapters write to
 * the kernel as soon as they can and hear when their buffer drains, so it grows only while the
 * network is behind, and this much is plenty.
 */
export const HIGH_WATER_BYTES = 64 * 1024;

/**
 * A connection is cut off at once when it falls this many times MAX_QUEUE_BYTES behind: the bound
 * on a connection's memory, whatever SLOW_CONSUMER_TIMEOUT would still allow.
 */
export const HARD_QUEUE_FACTOR = 4;

/** One upgraded socket, as the core sees it. */
export interface Socket {
  /** Writes one text frame, or hands it to the runtime's buffer. May throw if the socket died. */
  send(data: string): void;
  /** Bytes the runtime holds for this socket that the network has not taken yet. */
  bufferedAmount(): number;
  /**
   * Asks for one call of the handlers' `drain` once the buffer holds fewer than HIGH_WATER_BYTES.
   * Idempotent while a call is due; no call comes after the socket closed.
   */
  whenDrained(): void;
  /** Sends a close frame with `code` and `reason` (at most 123 bytes of UTF-8); idempotent. */
  close(code: number, reason: string): void;
}

/** What an adapter calls as one socket's life goes on; the core builds one set per socket. */
export interface SocketHandlers {
  /** The upgrade completed. Called at most once, before any other handler. */
  open(socket: Socket): void;
  /** A text frame arrives as a string, a binary one as bytes. */
  message(data: string | Uint8Array): void;
  /** A ping arrived; the runtime answers it, the core counts it against the frame rate. */
  ping(): void;
  /**
   * The socket closed, whichever side closed it. Called exactly once for every set of handlers
   * the adapter accepted from `upgrade`, even when the socket never opened.
   */
  close(code: number, reason: string): void;
  /** The buffer fell below HIGH_WATER_BYTES after `whenDrained`. */
  drain(): void;
}

/** The per-request bridge to the runtime, passed as Hono's `env` by the adapter. */
export interface RuntimeEnv {
  /**
   * Turns `request` into a WebSocket whose life `handlers` follow, and returns the response the
   * route hands back; returns undefined (and never calls `handlers`) when the runtime refused
   * the handshake.
   */
  upgrade(request: Request, handlers: SocketHandlers): Response | undefined;
  /**
   * The client's IP address, as text: the peer's, or behind a trusted proxy the one its
   * X-Forwarded-For names (the first middleware resolves it).
   */
  remoteAddress: string;
}

/** What an adapter serves: the app's fetch, given the runtime bridge of each request. */
export interface Served {
  fetch(request: Request, env: RuntimeEnv): Response | Promise<Response>;
}

/** Where and how to listen. */
export interface ServeOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Seconds without a pong before a socket is closed. */
  idleTimeout: number;
  /**
   * Largest inbound message, in bytes (a fragmented one counted whole); the runtime closes with
   * 1009 past it.
   */
  maxFrameBytes: number;
  /**
   * Most TCP connections open at once, of every kind (WebSockets, HTTP, connections that have sent
   * nothing yet); past it a new connection is closed at once. Undefined: no limit. The runtime
   * keeps it where it has the control (Deno; Bun refuses connections itself at the limit).
   */
  maxTcpConnections?: number;
  /**
   * Outbound bytes a socket may fall behind by (MAX_QUEUE_BYTES); the core cuts it off (4008)
   * past HARD_QUEUE_FACTOR times this, or after SLOW_CONSUMER_TIMEOUT over it.
   */
  maxQueueBytes: number;
  /**
   * Lets other processes listen on the same host and port (SO_REUSEPORT; Linux), the kernel
   * spreading new connections over them: several cluster nodes on one machine without a proxy.
   */
  reusePort?: boolean;
}

/** A listening server. */
export interface Listening {
  port: number;
  /** Stops accepting and closes the listener; resolves when it is closed. */
  stop(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}
