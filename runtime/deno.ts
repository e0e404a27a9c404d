/** The Deno adapter: `Deno.serve` and `Deno.upgradeWebSocket` mapped onto the runtime contract. */
import {
  HIGH_WATER_BYTES,
  type Listening,
  type Served,
  type ServeOptions,
  type Socket,
  type SocketHandlers,
} from "./contract.ts";

/**
 * Milliseconds between checks of a backed-up socket's buffer: Deno has no drain event, so a socket
 * whose client waits for room polls. Idle sockets run no timer.
 */
export const DRAIN_POLL_MS = 5;

/** Serves `app` with Deno's HTTP server. */
export function serveDeno(app: Served, options: ServeOptions): Promise<Listening> {
  const server = Deno.serve({
    hostname: options.host,
    port: options.port,
    onListen: () => {}, // main.ts prints its own banner
  }, (request, info) =>
    app.fetch(request, {
      remoteAddress: (info.remoteAddr as Deno.NetAddr).hostname ?? "",
      upgrade: (req, handlers) => upgrade(req, handlers, options.idleTimeout),
    }));
  return Promise.resolve({
    port: server.addr.port,
    stop: () => server.shutdown(),
    finished: server.finished,
  });
}

function upgrade(
  request: Request,
  handlers: SocketHandlers,
  idleTimeout: number,
): Response | undefined {
  let upgraded: ReturnType<typeof Deno.upgradeWebSocket>;
  try {
    upgraded = Deno.upgradeWebSocket(request, { idleTimeout });
  } catch {
    return undefined; // a malformed handshake: the route answers 400
  }
  const { socket, response } = upgraded;
  socket.binaryType = "arraybuffer";
  // Kept from the events: reading readyState on every send was the largest item of ours in the
  // fan-out profile (docs/BENCHMARKS.md).
  let open = false;
  let closed = false;
  let poll: ReturnType<typeof setTimeout> | undefined;
  const checkDrained = () => {
    poll = undefined;
    if (!open) return;
    if (socket.bufferedAmount < HIGH_WATER_BYTES) handlers.drain();
    else poll = setTimeout(checkDrained, DRAIN_POLL_MS);
  };
  const adapted: Socket = {
    send(data) {
      if (!open) throw new Error("socket is not open");
      socket.send(data);
    },
    bufferedAmount: () => socket.bufferedAmount,
    whenDrained() {
      if (open) poll ??= setTimeout(checkDrained, DRAIN_POLL_MS);
    },
    close(code, reason) {
      open = false;
      clearTimeout(poll);
      socket.close(code, reason);
    },
  };
  socket.onopen = () => {
    open = true;
    handlers.open(adapted);
  };
  socket.onmessage = (event) =>
    handlers.message(
      typeof event.data === "string" ? event.data : new Uint8Array(event.data as ArrayBuffer),
    );
  socket.onclose = (event) => {
    open = false;
    clearTimeout(poll);
    if (closed) return;
    closed = true;
    handlers.close(event.code, event.reason);
  };
  return response;
}
