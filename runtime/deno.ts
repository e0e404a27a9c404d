/**
 * The Deno adapter: Deno's `node:http` server with the `ws` package, mapped onto the runtime
 * contract.
 *
 * Why not `Deno.serve` and `Deno.upgradeWebSocket`: on Deno 2.9 they offer no control that a server
 * exposed to the internet needs (measured, and kept in SECURITY.md). `Deno.serve` has no header or
 * keep-alive timeout and no connection limit, and running out of descriptors ends its listener or
 * the process (denoland/deno#3515, #10148); a WebSocket whose client never answers the server's
 * close keeps its descriptor for good, and there is no way to drop it; inbound messages are bounded
 * only at 64 MiB, fragments included, and malformed frames end the connection without a close code.
 * `node:http` has the timeouts and `maxConnections`, and `ws` bounds messages (fragments included),
 * validates frames with the close codes RFC 6455 asks for, reports pings, and can `terminate()`.
 */
import { Buffer } from "node:buffer";
import { createServer, type IncomingMessage } from "node:http";
import type { Socket as TcpSocket } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { WebSocketServer } from "ws";
import {
  HIGH_WATER_BYTES,
  type Listening,
  type RuntimeEnv,
  type Served,
  type ServeOptions,
  type Socket,
  type SocketHandlers,
} from "./contract.ts";

/**
 * Milliseconds a client may take to send a request's headers, then its whole request; past them
 * the connection is closed (408). A connection that never sends a request is closed after the
 * first: that is what frees the descriptors of raw connections that only connect.
 */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;
/** Milliseconds an idle keep-alive connection is kept between requests. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** How often, in milliseconds, the server looks for connections past those timeouts. */
const TIMEOUT_CHECK_MS = 1_000;
/**
 * Milliseconds a client has to answer the server's close frame; then its connection is dropped,
 * so that a client that never answers cannot keep a descriptor and a slot.
 */
export const CLOSE_TIMEOUT_MS = 5_000;

/** The parts of the `ws` socket this adapter uses (the package ships no types). */
interface WsSocket {
  readonly bufferedAmount: number;
  send(data: Buffer, options: { binary: false }): void;
  ping(): void;
  close(code: number, reason: string): void;
  terminate(): void;
  on(event: "message", listener: (data: Buffer, isBinary: boolean) => void): void;
  on(event: "close", listener: (code: number, reason: Buffer) => void): void;
  on(event: "ping" | "pong", listener: () => void): void;
  on(event: "error", listener: (err: Error & { code?: string }) => void): void;
}
interface WsServer {
  handleUpgrade(
    request: IncomingMessage,
    socket: TcpSocket,
    head: Buffer,
    callback: (ws: WsSocket) => void,
  ): void;
}

/** Serves `app` with Deno's `node:http` server; WebSockets through `ws`. */
export function serveDeno(app: Served, options: ServeOptions): Promise<Listening> {
  const wss = new (WebSocketServer as unknown as new (options: object) => WsServer)({
    noServer: true,
    maxPayload: options.maxFrameBytes,
    perMessageDeflate: false,
    closeTimeout: CLOSE_TIMEOUT_MS,
  });
  const heartbeat = new Heartbeat(options.idleTimeout * 1000);
  const server = createServer({
    headersTimeout: HEADERS_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: TIMEOUT_CHECK_MS,
  });
  // Past it new connections are closed at once: the process never runs out of descriptors.
  if (options.maxTcpConnections !== undefined) server.maxConnections = options.maxTcpConnections;

  const listener = getRequestListener(
    (request, bindings) =>
      app.fetch(request, {
        remoteAddress: bindings.incoming.socket.remoteAddress ?? "",
        // A request that reaches here is not an upgrade (node:http sends those to "upgrade").
        upgrade: () => undefined,
      }),
    { overrideGlobalObjects: false },
  );
  // Every HTTP connection, and whether it is answering a request: a stop ends the others at once
  // (kept alive, or never used: a client may open one and send nothing) and each busy one as soon
  // as its answer is out. Upgraded connections leave it; the core closes WebSockets itself.
  const connections = new Map<TcpSocket, boolean>();
  let stopping = false;
  server.on("connection", (tcp: TcpSocket) => {
    connections.set(tcp, false);
    tcp.once("close", () => connections.delete(tcp));
  });
  server.on("request", (incoming, outgoing) => {
    const tcp = incoming.socket as TcpSocket;
    connections.set(tcp, true);
    outgoing.once("finish", () => {
      connections.set(tcp, false);
      if (stopping) tcp.end();
      // A request body the route did not read (a refusal answered before it) would keep the
      // connection from its next request: read it to its end and drop it.
      else if (!incoming.readableEnded) incoming.resume();
    });
    listener(incoming, outgoing);
  });

  server.on("upgrade", async (incoming: IncomingMessage, tcp: TcpSocket, head: Buffer) => {
    connections.delete(tcp);
    tcp.on("error", () => {}); // a reset before the upgrade ends: nothing to tell anyone
    let upgraded = false;
    const env: RuntimeEnv = {
      remoteAddress: tcp.remoteAddress ?? "",
      upgrade(_request, handlers) {
        // handleUpgrade calls back at once, or answers 400 itself for a handshake it refuses.
        wss.handleUpgrade(incoming, tcp, head, (ws) => {
          upgraded = true;
          adopt(ws, handlers, heartbeat);
        });
        return upgraded ? new Response(null) : undefined;
      },
    };
    try {
      const response = await app.fetch(toRequest(incoming), env);
      if (!upgraded) await writeRefusal(tcp, response);
    } catch {
      // A handshake the app could not even read (a header Fetch refuses): drop the connection.
      if (!upgraded) tcp.destroy();
    }
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: options.port, host: options.host, reusePort: options.reusePort }, () => {
      server.off("error", reject);
      // The listener goes on after a failed accept; say why, rather than end the process.
      server.on("error", (err) => console.error(`http server: ${err.message}`));
      const finished = new Promise<void>((done) => server.once("close", () => done()));
      resolve({
        port: (server.address() as { port: number }).port,
        stop: () =>
          new Promise<void>((done) => {
            heartbeat.stop();
            stopping = true;
            server.close(() => done());
            for (const [tcp, busy] of connections) if (!busy) tcp.destroy();
          }),
        finished,
      });
    });
  });
}

/** The handshake request as a Fetch Request, for the app's /ws route. */
function toRequest(incoming: IncomingMessage): Request {
  const headers = new Headers();
  for (let i = 0; i < incoming.rawHeaders.length; i += 2) {
    headers.append(incoming.rawHeaders[i], incoming.rawHeaders[i + 1]);
  }
  const host = incoming.headers.host ?? "localhost";
  return new Request(new URL(incoming.url ?? "/", `http://${host}`), {
    method: incoming.method,
    headers,
  });
}

/** Answers a refused handshake on its raw socket, then closes it. */
async function writeRefusal(tcp: TcpSocket, response: Response): Promise<void> {
  if (tcp.destroyed) return;
  const body = Buffer.from(await response.arrayBuffer());
  const lines = [`HTTP/1.1 ${response.status} ${response.statusText || "Refused"}`];
  response.headers.forEach((value, name) => {
    if (name !== "content-length" && name !== "connection") lines.push(`${name}: ${value}`);
  });
  lines.push(`content-length: ${body.length}`, "connection: close", "", "");
  tcp.end(Buffer.concat([Buffer.from(lines.join("\r\n"), "latin1"), body]));
}

/**
 * Pings every socket once per half IDLE_TIMEOUT, and drops one that has not answered the ping
 * before: `ws` sends no pings of its own. One timer for all sockets.
 */
class Heartbeat {
  readonly #alive = new Map<WsSocket, boolean>();
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(idleMs: number) {
    this.#timer = setInterval(() => {
      for (const [ws, alive] of this.#alive) {
        if (!alive) ws.terminate();
        else {
          this.#alive.set(ws, false);
          ws.ping();
        }
      }
    }, Math.max(500, idleMs / 2));
    // Not a reason to keep the process alive on its own.
    (this.#timer as { unref?: () => void }).unref?.();
  }

  add(ws: WsSocket): void {
    this.#alive.set(ws, true);
    ws.on("pong", () => this.#alive.has(ws) && this.#alive.set(ws, true));
  }

  delete(ws: WsSocket): void {
    this.#alive.delete(ws);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/**
 * `text` as UTF-8, encoded once for a whole fan-out: the hub hands the same frame string to every
 * recipient in turn, and `ws` would encode a string again for each of them.
 */
let lastText: string | undefined;
let lastBytes = Buffer.alloc(0);
function utf8(text: string): Buffer {
  if (text !== lastText) {
    lastText = text;
    lastBytes = Buffer.from(text);
  }
  return lastBytes;
}

/**
 * The close code `ws` sent for a protocol error, from its documented error codes: a message too
 * big 1009, too many fragments 1008, text that is not UTF-8 1007, any other broken frame 1002.
 */
function protocolCloseCode(err: Error & { code?: string }): number {
  switch (err.code) {
    case "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH":
    case "WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH":
      return 1009;
    case "WS_ERR_TOO_MANY_BUFFERED_PARTS":
      return 1008;
    case "WS_ERR_INVALID_UTF8":
      return 1007;
    default:
      return 1002;
  }
}

/** Wires one upgraded `ws` socket to the core's handlers. */
function adopt(ws: WsSocket, handlers: SocketHandlers, heartbeat: Heartbeat): void {
  const tcp = (ws as unknown as { _socket: TcpSocket })._socket;
  let open = true;
  let drainAsked = false;
  const onDrain = () => {
    drainAsked = false;
    if (open) handlers.drain();
  };
  const socket: Socket = {
    send(data) {
      if (!open) throw new Error("socket is not open");
      ws.send(utf8(data), { binary: false });
    },
    bufferedAmount: () => ws.bufferedAmount,
    whenDrained() {
      if (!open || drainAsked) return;
      drainAsked = true;
      // The TCP socket's drain comes once its write buffer has emptied; a buffer already below
      // the mark is answered once the client's own call has returned, never from inside it.
      if (ws.bufferedAmount < HIGH_WATER_BYTES) queueMicrotask(onDrain);
      else tcp.once("drain", onDrain);
    },
    close(code, reason) {
      if (!open) return;
      open = false;
      ws.close(code, reason); // `ws` drops the connection if the client does not answer in time
    },
  };
  // The core hears of the end once: at a protocol error, or when the socket has closed.
  let gone = false;
  const leave = (code: number, reason: string) => {
    open = false;
    if (gone) return;
    gone = true;
    heartbeat.delete(ws);
    handlers.close(code, reason);
  };
  heartbeat.add(ws);
  ws.on("error", (err) => {
    // A protocol error (1002, 1007, 1008, 1009): `ws` has sent the close frame and would read and
    // drop whatever else the client sends until CLOSE_TIMEOUT_MS. Nothing more is read from a
    // client that broke the protocol (after `ws` resumes the socket, on the next tick): what it
    // sends waits in the kernel's buffer and TCP holds the rest back, so it costs no memory here.
    setImmediate(() => tcp.pause());
    // The client leaves the hub now, not when its descriptor goes: nothing sent meanwhile is
    // counted as delivered to a socket that no longer reads.
    leave(protocolCloseCode(err), err.message);
  });
  ws.on(
    "message",
    (data, isBinary) => handlers.message(isBinary ? new Uint8Array(data) : data.toString()),
  );
  ws.on("ping", () => handlers.ping());
  ws.on("close", (code, reason) => leave(code, reason.toString()));
  handlers.open(socket);
}
