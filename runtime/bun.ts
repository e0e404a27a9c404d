/**
 * The Bun adapter: `Bun.serve` with its websocket handlers mapped onto the runtime contract. Bun's
 * `send` result and `getBufferedAmount` give the same backpressure signal as Deno's bufferedAmount,
 * and its drain event answers `whenDrained` without polling.
 */
import {
  HARD_QUEUE_FACTOR,
  HIGH_WATER_BYTES,
  type Listening,
  type Served,
  type ServeOptions,
  type Socket,
  type SocketHandlers,
} from "./contract.ts";

/** The parts of Bun's API this adapter uses (Bun's own types are not loaded under Deno). */
interface BunSocket {
  data: SocketHandlers;
  send(data: string): number;
  getBufferedAmount(): number;
  close(code?: number, reason?: string): void;
}
interface BunServer {
  port: number;
  upgrade(request: Request, options: { data: SocketHandlers }): boolean;
  requestIP(request: Request): { address: string } | null;
  stop(closeActive?: boolean): Promise<void>;
}
interface BunRuntime {
  serve(options: {
    hostname: string;
    port: number;
    reusePort: boolean;
    fetch(
      request: Request,
      server: BunServer,
    ): Response | Promise<Response | undefined> | undefined;
    websocket: {
      idleTimeout: number;
      maxPayloadLength: number;
      backpressureLimit: number;
      closeOnBackpressureLimit: boolean;
      sendPings: boolean;
      open(ws: BunSocket): void;
      message(ws: BunSocket, message: string | Uint8Array): void;
      ping(ws: BunSocket): void;
      close(ws: BunSocket, code: number, reason: string): void;
      drain(ws: BunSocket): void;
    };
  }): BunServer;
}

/**
 * A Bun socket as the core sees it. A class: every open socket holds one, and its methods on the
 * prototype cost a connection nothing, where closures would cost it four functions.
 */
class BunSocketAdapter implements Socket {
  readonly #ws: BunSocket;

  constructor(ws: BunSocket) {
    this.#ws = ws;
  }

  send(data: string): void {
    // 0: Bun dropped the frame (socket closed); -1: queued behind backpressure, still sent.
    if (this.#ws.send(data) === 0) throw new Error("socket is not open");
  }

  bufferedAmount(): number {
    return this.#ws.getBufferedAmount();
  }

  /**
   * A client asks only when the buffer is past HIGH_WATER_BYTES, that is while a send was queued
   * behind backpressure (-1); Bun fires drain for it, which calls the handlers' drain.
   */
  whenDrained(): void {}

  close(code: number, reason: string): void {
    this.#ws.close(code, reason);
  }
}

/** Bun's idleTimeout is capped at 960 seconds. */
const BUN_MAX_IDLE_SECONDS = 960;

/** Serves `app` with Bun's HTTP server. */
export function serveBun(app: Served, options: ServeOptions): Promise<Listening> {
  const bun = (globalThis as unknown as { Bun: BunRuntime }).Bun;
  let resolveFinished: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);
  const server = bun.serve({
    hostname: options.host,
    port: options.port,
    reusePort: options.reusePort ?? false,
    async fetch(request, server) {
      let upgraded = false;
      const response = await app.fetch(request, {
        remoteAddress: server.requestIP(request)?.address ?? "",
        upgrade(req, handlers) {
          upgraded = server.upgrade(req, { data: handlers });
          // Refused (a malformed handshake): the route answers 400.
          return upgraded ? new Response(null) : undefined;
        },
      });
      // After an upgrade Bun has answered 101 itself and expects no response.
      return upgraded ? undefined : response;
    },
    websocket: {
      idleTimeout: Math.min(options.idleTimeout, BUN_MAX_IDLE_SECONDS),
      // Bun closes with 1009 itself past this; the core checks the same bound on Deno.
      maxPayloadLength: options.maxFrameBytes,
      // The core cuts slow clients off; Bun must not decide first, nor drop a frame (send() 0)
      // of a socket that is still open. The core hands Bun at most HIGH_WATER_BYTES and one more
      // frame before frames wait in its own queue, and no frame is longer than its hard bound.
      backpressureLimit: HIGH_WATER_BYTES + options.maxQueueBytes * HARD_QUEUE_FACTOR,
      closeOnBackpressureLimit: false,
      sendPings: true,
      open: (ws) => ws.data.open(new BunSocketAdapter(ws)),
      message: (ws, message) => ws.data.message(message),
      ping: (ws) => ws.data.ping(),
      close: (ws, code, reason) => ws.data.close(code, reason),
      drain: (ws) => ws.data.drain(),
    },
  });
  return Promise.resolve({
    port: server.port,
    stop: async () => {
      // Like Deno's shutdown: stop accepting, let open requests finish (main.ts bounds the wait).
      await server.stop(false);
      resolveFinished();
    },
    finished,
  });
}
