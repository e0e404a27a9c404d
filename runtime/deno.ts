/** The Deno adapter: `Deno.serve` and `Deno.upgradeWebSocket` mapped onto the core's Socket. */
import type { Socket } from "../client.ts";
import type { SocketHandlers } from "../connection.ts";
import type { App } from "../server.ts";
import type { Listening, ServeOptions } from "./serve.ts";

/** Serves `app` with Deno's HTTP server. */
export function serveDeno(app: App, options: ServeOptions): Promise<Listening> {
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

function upgrade(request: Request, handlers: SocketHandlers, idleTimeout: number): Response {
  const { socket, response } = Deno.upgradeWebSocket(request, { idleTimeout });
  socket.binaryType = "arraybuffer";
  // Kept from the events: reading readyState on every send was the largest item of ours in the
  // fan-out profile (docs/BENCHMARKS.md).
  let open = false;
  const adapted: Socket = {
    send(data) {
      if (!open) throw new Error("socket is not open");
      socket.send(data);
    },
    bufferedAmount: () => socket.bufferedAmount,
    close(code, reason) {
      open = false;
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
    handlers.close(event.code, event.reason);
  };
  return response;
}
