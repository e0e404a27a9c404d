/** The Deno adapter: `Deno.serve` and `Deno.upgradeWebSocket` mapped onto the runtime contract. */
import {
  HARD_QUEUE_FACTOR,
  HIGH_WATER_BYTES,
  type Listening,
  type Served,
  type ServeOptions,
  type Socket,
  type SocketHandlers,
} from "./contract.ts";

/**
 * The longest wait, in milliseconds, between two checks of a backed-up socket's buffer. Deno has
 * no drain event, so a socket whose client waits for room polls: on the next turn of the event
 * loop while its buffer goes down, and twice as long after each check that finds no progress, up
 * to this, so that a client that stopped reading costs little. Idle sockets run no timer.
 */
export const DRAIN_POLL_MAX_MS = 50;

/** Serves `app` with Deno's HTTP server. */
export function serveDeno(app: Served, options: ServeOptions): Promise<Listening> {
  const server = Deno.serve({
    hostname: options.host,
    port: options.port,
    onListen: () => {}, // main.ts prints its own banner
  }, (request, info) =>
    app.fetch(request, {
      remoteAddress: (info.remoteAddr as Deno.NetAddr).hostname ?? "",
      upgrade: (req, handlers) => upgrade(req, handlers, options),
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
  options: ServeOptions,
): Response | undefined {
  let upgraded: ReturnType<typeof Deno.upgradeWebSocket>;
  try {
    upgraded = Deno.upgradeWebSocket(request, { idleTimeout: options.idleTimeout });
  } catch {
    return undefined; // a malformed handshake: the route answers 400
  }
  const { socket, response } = upgraded;
  socket.binaryType = "arraybuffer";
  // Kept from the events: reading readyState on every send was the largest item of ours in the
  // fan-out profile (docs/BENCHMARKS.md).
  let open = false;
  let closed = false;
  // Deno's buffer goes down only between turns of the event loop, when its writes complete, so a
  // client gets at most one high-water mark's worth per turn. With 64 KiB a busy server (a long
  // turn) would carry a few MB/s to a client that reads at full speed, and a burst would pile up
  // in the client's queue until it was cut off as slow (measured: 128 sends of 16 KiB in flight
  // cut a loopback reader off even at 1 MiB). Deno's buffer takes everything up to the client's
  // hard bound instead; the core still cuts off a client that stays behind.
  const highWater = Math.max(HIGH_WATER_BYTES, options.maxQueueBytes * HARD_QUEUE_FACTOR);
  let poll: ReturnType<typeof setTimeout> | undefined;
  let wait = 0;
  let lastBuffered = Infinity;
  const checkDrained = () => {
    poll = undefined;
    if (!open) return;
    const buffered = socket.bufferedAmount;
    if (buffered < highWater) {
      wait = 0;
      lastBuffered = Infinity;
      handlers.drain();
      return;
    }
    wait = buffered < lastBuffered ? 0 : Math.min(DRAIN_POLL_MAX_MS, Math.max(1, wait * 2));
    lastBuffered = buffered;
    poll = setTimeout(checkDrained, wait);
  };
  const adapted: Socket = {
    highWater,
    send(data) {
      if (!open) throw new Error("socket is not open");
      socket.send(data);
    },
    bufferedAmount: () => socket.bufferedAmount,
    whenDrained() {
      if (open) poll ??= setTimeout(checkDrained, wait);
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
