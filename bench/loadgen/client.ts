/**
 * A load-generator process: holds up to a few thousand WebSocket clients and/or issues /send calls,
 * driven by JSON lines on stdin (see protocol.ts). Runs on Bun (`bun bench/loadgen/client.ts
 * <deadline ms>`) and exits by itself at the deadline or when stdin closes.
 *
 * The WebSocket client is written on raw TCP (node:net) rather than a library so that it costs the
 * machine as little as possible, can bind a source address in 127.0.0.0/8, and speaks both plain
 * frames and Socket.IO's engine.io packets with the same code path. Frames from the server are
 * parsed in place; the client only ever writes tiny control frames (pong, close, engine.io pings).
 */
import net from "node:net";
import process from "node:process";
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";
import type {
  AwaitCommand,
  AwaitReply,
  CollectReply,
  Command,
  ConnectCommand,
  ConnectReply,
  RateCommand,
  RateReply,
  SendCommand,
  SendReply,
  StatsReply,
  Target,
  WireMode,
} from "./protocol.ts";

/** A handshake that has not completed in this long is counted as failed (ms), unless told. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default backoff of a retried handshake (ms): the SDK's MIN_ and MAX_RECONNECT_DELAY_MS. */
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 20_000;
/** Longest failure reason kept as a key when the error is none of the known kinds (chars). */
const REASON_CHARS = 40;
/** How many failure messages a reply samples; the rest are only counted. */
const ERROR_SAMPLE = 5;
/** Token lifetime (s): longer than any bench run, so no token expires mid-run. */
const TOKEN_LIFETIME_S = 24 * 3600;
/** Pacing tick of the open-loop sender (ms); 1 ms keeps bursts at rate/1000 calls. */
const PACE_TICK_MS = 1;
/** How long a rate run waits for in-flight calls after its duration ends (ms). */
const DRAIN_TIMEOUT_MS = 5_000;
/** Fixed Sec-WebSocket-Key: the bench trusts loopback servers and skips checking the accept hash. */
const WS_KEY = "ZGVuby1wdXNoZXItYmVuYw==";

/**
 * Wall-clock microseconds, comparable across processes on this host: performance.timeOrigin carries
 * sub-millisecond precision on Bun. (Bun's process.hrtime counts from process start, so it is not.)
 */
function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function b64url(text: string): string {
  return Buffer.from(text).toString("base64url");
}

const JWT_HEADER = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));

/** An HS256 JWT with the string `uid` claim the servers require, and groups to join if any. */
export function signToken(
  uid: string,
  secret: string,
  groups?: string[],
): string {
  const iat = Math.floor(Date.now() / 1000);
  const body = b64url(
    JSON.stringify({
      uid,
      iat,
      exp: iat + TOKEN_LIFETIME_S,
      ...(groups ? { groups } : {}),
    }),
  );
  const sig = createHmac("sha256", secret).update(`${JWT_HEADER}.${body}`)
    .digest("base64url");
  return `${JWT_HEADER}.${body}.${sig}`;
}

/** A client frame: FIN, masked with an all-zero key (legal, and leaves the payload as it is). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  if (payload.length > 125) {
    throw new Error(`control payload too long: ${payload.length} bytes`);
  }
  const frame = Buffer.alloc(6 + payload.length);
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | payload.length;
  payload.copy(frame, 6);
  return frame;
}

/** A pushed message: `<tag>|<µs>|` padded with dots to payloadBytes. */
export function benchMessage(tag: string, payloadBytes: number): string {
  const head = `${tag}|${nowUs()}|`;
  return head.length >= payloadBytes ? head : head + ".".repeat(payloadBytes - head.length);
}

interface TagState {
  count: number;
  latenciesUs: number[];
  waiter?: { expect: number; resolve: () => void };
}

const tags = new Map<string, TagState>();
const sets = new Map<string, Set<Conn>>();
let closedAfterOpen = 0;
let unparsed = 0;

function tagState(tag: string): TagState {
  let state = tags.get(tag);
  if (!state) tags.set(tag, state = { count: 0, latenciesUs: [] });
  return state;
}

function record(text: string): void {
  const bar = text.indexOf("|");
  const bar2 = bar < 0 ? -1 : text.indexOf("|", bar + 1);
  if (bar2 < 0) {
    unparsed++;
    return;
  }
  const latency = nowUs() - Number(text.slice(bar + 1, bar2));
  const state = tagState(text.slice(0, bar));
  state.count++;
  state.latenciesUs.push(latency);
  if (state.waiter && state.count >= state.waiter.expect) {
    state.waiter.resolve();
  }
}

/** The byte pipe under one client. */
interface Transport {
  write(bytes: Uint8Array): void;
  end(): void;
  destroy(): void;
}

/** What a transport reports; `close` is called exactly once, also after a failed connect. */
interface TransportEvents {
  connect(): void;
  data(chunk: Buffer): void;
  error(message: string): void;
  close(): void;
}

interface Endpoint {
  host: string;
  port: number;
  localAddress?: string;
}

/** node:net: portable, and the only one here that can bind a source address. */
function netTransport(to: Endpoint, ev: TransportEvents): Transport {
  const s = net.connect({
    host: to.host,
    port: to.port,
    localAddress: to.localAddress,
  });
  s.setNoDelay(true);
  s.on("connect", ev.connect);
  s.on("data", ev.data);
  s.on("error", (err: Error) => ev.error(err.message));
  s.on("close", ev.close);
  return {
    write: (b) => s.write(b),
    end: () => s.end(),
    destroy: () => s.destroy(),
  };
}

/** The part of Bun's native socket API used here, declared so that Deno can type-check this file. */
interface BunSocket {
  write(data: Uint8Array): number;
  end(): void;
  terminate(): void;
}
interface BunHandlers {
  open(s: BunSocket): void;
  data(s: BunSocket, chunk: Buffer): void;
  drain(s: BunSocket): void;
  close(s: BunSocket): void;
  error(s: BunSocket, err: Error): void;
  connectError(s: BunSocket, err: Error): void;
}
interface BunRuntime {
  connect(
    opts: { hostname: string; port: number; socket: BunHandlers },
  ): Promise<BunSocket>;
}
const bunRuntime = (globalThis as { Bun?: BunRuntime }).Bun;

/**
 * Bun.connect: about half the CPU per received frame of node:net on Bun, which matters because
 * the load generator shares the machine with the server. Cannot bind a source address, so the
 * coordinator spreads these over destination addresses instead.
 */
function bunTransport(to: Endpoint, ev: TransportEvents): Transport {
  let sock: BunSocket | null = null;
  let queue: Buffer | null = null;
  let ending = false;
  let destroyed = false;
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      ev.close();
    }
  };
  const flush = () => {
    if (!sock || !queue) return;
    const n = sock.write(queue);
    queue = n < queue.length ? queue.subarray(n) : null;
    if (!queue && ending) sock.end();
  };
  bunRuntime!.connect({
    hostname: to.host,
    port: to.port,
    socket: {
      open(s) {
        sock = s;
        if (destroyed) s.terminate();
        else ev.connect();
      },
      data: (_s, chunk) => ev.data(chunk),
      drain: flush,
      close,
      error: (_s, err) => ev.error(err.message),
      connectError(_s, err) {
        ev.error(err.message);
        close();
      },
    },
  }).catch((err) => {
    ev.error(String(err));
    close();
  });
  return {
    write(b) {
      if (!sock || destroyed) return;
      queue = queue ? Buffer.concat([queue, b]) : Buffer.from(b);
      flush();
    },
    end() {
      ending = true;
      if (sock && !queue) sock.end();
    },
    destroy() {
      destroyed = true;
      sock?.terminate();
    },
  };
}

/** Bun's native sockets when on Bun and no source address is asked for; node:net otherwise. */
function transport(to: Endpoint, ev: TransportEvents): Transport {
  return bunRuntime && !to.localAddress ? bunTransport(to, ev) : netTransport(to, ev);
}

/**
 * One keep-alive HTTP/1.1 connection with at most one request in flight, written on the same raw
 * transport as the WebSocket clients: fetch() cost the sender about as much CPU per /send as the
 * server spent answering it, CPU the shared cores then lacked. It parses only what the servers'
 * push calls answer: a status line, and a body framed by Content-Length or chunked.
 */
class HttpConn {
  private socket: Transport | null = null;
  private generation = 0;
  private connected = false;
  private unsent: Buffer | null = null;
  private buf: Buffer | null = null;
  private pending: {
    resolve: (status: number) => void;
    reject: (e: Error) => void;
  } | null = null;

  constructor(private readonly to: Endpoint) {}

  /** Sends one request (its full head) and resolves with the response's status code. */
  request(head: string): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.pending) return reject(new Error("request already in flight"));
      this.pending = { resolve, reject };
      const bytes = Buffer.from(head, "latin1");
      if (!this.socket) this.open();
      if (this.connected) this.socket!.write(bytes);
      else this.unsent = bytes;
    });
  }

  close(): void {
    this.socket?.end();
    this.socket = null;
  }

  private open(): void {
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this.connected = false;
    this.buf = null;
    this.socket = transport(this.to, {
      connect: () => {
        if (!current()) return;
        this.connected = true;
        if (this.unsent) this.socket?.write(this.unsent);
        this.unsent = null;
      },
      data: (chunk) => current() && this.onData(chunk),
      error: (message) => current() && this.fail(new Error(message)),
      close: () => {
        if (!current()) return;
        this.socket = null;
        this.fail(new Error("connection closed before the response"));
      },
    });
  }

  private fail(err: Error): void {
    const p = this.pending;
    this.pending = null;
    this.unsent = null;
    this.socket?.destroy();
    this.socket = null;
    this.generation++;
    p?.reject(err);
  }

  private onData(chunk: Buffer): void {
    const data = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = data;
    const end = data.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = data.toString("latin1", 0, end).toLowerCase();
    const length = /\r\ncontent-length:\s*(\d+)/.exec(head);
    let size = end + 4;
    if (length) size += Number(length[1]);
    else if (/\r\ntransfer-encoding:\s*chunked/.test(head)) {
      // The last chunk is "0\r\n\r\n"; starting at end + 2 also finds it right after the head.
      const last = data.indexOf("\r\n0\r\n\r\n", end + 2);
      if (last < 0) return;
      size = last + 7;
    }
    if (data.length < size) return;
    this.buf = null;
    const p = this.pending;
    this.pending = null;
    if (/\r\nconnection:\s*close/.test(head)) {
      this.generation++;
      this.socket?.destroy();
      this.socket = null;
    }
    p?.resolve(Number(head.slice(9, 12)));
  }
}

/** Keep-alive connections to one server, one per call in flight, opened as needed. */
class HttpPool {
  private readonly idle: HttpConn[] = [];
  private readonly all: HttpConn[] = [];
  private readonly to: Endpoint;
  private readonly hostHeader: string;

  constructor(base: string) {
    const url = new URL(base);
    this.to = { host: url.hostname, port: Number(url.port || 80) };
    this.hostHeader = url.host;
  }

  /** One GET; resolves with the status code. */
  async get(path: string): Promise<number> {
    let conn = this.idle.pop();
    if (!conn) this.all.push(conn = new HttpConn(this.to));
    try {
      return await conn.request(
        `GET ${path} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n\r\n`,
      );
    } finally {
      this.idle.push(conn);
    }
  }

  close(): void {
    for (const c of this.all) c.close();
  }
}

/** One WebSocket client; it is the only reader and the only writer of its socket. */
class Conn {
  private buf: Buffer | null = null;
  private upgraded = false;
  private open = false;
  private failed = false;
  private fragments: Buffer[] = [];
  private readonly timer: ReturnType<typeof setTimeout>;
  readonly socket: Transport;

  constructor(
    readonly set: Set<Conn>,
    readonly mode: WireMode,
    opts: {
      host: string;
      port: number;
      localAddress?: string;
      request: string;
      handshakeTimeoutMs?: number;
    },
    private readonly onOpen: () => void,
    private readonly onFail: (why: string) => void,
  ) {
    this.timer = setTimeout(
      () => this.fail("handshake timeout"),
      opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
    );
    const events: TransportEvents = {
      connect: () => this.socket.write(Buffer.from(opts.request, "latin1")),
      data: (chunk) => this.onData(chunk),
      error: (message) => this.fail(message),
      close: () => {
        clearTimeout(this.timer);
        if (this.open) {
          this.open = false;
          this.set.delete(this);
          closedAfterOpen++;
        } else this.fail("closed before open");
      },
    };
    this.socket = transport(opts, events);
  }

  private fail(why: string): void {
    if (this.open || this.failed) return;
    this.failed = true;
    clearTimeout(this.timer);
    this.socket.destroy();
    this.onFail(why);
  }

  private opened(): void {
    if (this.open || this.failed) return;
    this.open = true;
    clearTimeout(this.timer);
    this.set.add(this);
    this.onOpen();
  }

  close(): void {
    this.socket.write(clientFrame(0x8, Buffer.alloc(0)));
    this.socket.end();
  }

  private onData(chunk: Buffer): void {
    let data = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = null;
    if (!this.upgraded) {
      const end = data.indexOf("\r\n\r\n");
      if (end < 0) {
        this.buf = data;
        return;
      }
      const head = data.toString("latin1", 0, end);
      if (!head.startsWith("HTTP/1.1 101")) {
        this.fail(`handshake: ${head.split("\r\n")[0]}`);
        return;
      }
      this.upgraded = true;
      if (this.mode === "ws") this.opened();
      data = data.subarray(end + 4);
    }
    let off = 0;
    while (data.length - off >= 2) {
      const b0 = data[off];
      const b1 = data[off + 1];
      let len = b1 & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (data.length - off < 4) break;
        len = data.readUInt16BE(off + 2);
        hdr = 4;
      } else if (len === 127) {
        if (data.length - off < 10) break;
        len = Number(data.readBigUInt64BE(off + 2));
        hdr = 10;
      }
      if (b1 & 0x80) hdr += 4; // servers must not mask; tolerate it by skipping the key
      if (data.length - off < hdr + len) break;
      this.onFrame(
        b0 & 0x0f,
        (b0 & 0x80) !== 0,
        data.subarray(off + hdr, off + hdr + len),
      );
      off += hdr + len;
    }
    if (off < data.length) this.buf = Buffer.from(data.subarray(off));
  }

  private onFrame(opcode: number, fin: boolean, payload: Buffer): void {
    if (opcode === 0x0 || !fin) {
      this.fragments.push(Buffer.from(payload));
      if (!fin) return;
      payload = Buffer.concat(this.fragments);
      this.fragments = [];
    }
    if (opcode === 0x9) this.socket.write(clientFrame(0xa, payload));
    else if (opcode === 0x8) {
      this.socket.write(clientFrame(0x8, payload.subarray(0, 2)));
      this.socket.end();
    } else if (opcode !== 0xa) this.onText(payload.toString());
  }

  private send(text: string): void {
    this.socket.write(clientFrame(0x1, Buffer.from(text)));
  }

  private onText(text: string): void {
    if (this.mode === "ws") return record(text);
    // engine.io v4 packet type, then socket.io packet type for "4" (message).
    if (text.startsWith("42")) {
      const event = JSON.parse(text.slice(2));
      if (Array.isArray(event) && typeof event[1] === "string") {
        record(event[1]);
      } else unparsed++;
    } else if (text === "2") this.send("3");
    else if (text.startsWith("0")) this.send("40");
    else if (text.startsWith("40")) this.opened();
    else if (text.startsWith("44")) {
      this.fail(`socket.io connect_error: ${text.slice(2)}`);
    } else unparsed++;
  }
}

/**
 * What kind of failure `why` (a Conn's failure message) is, as ConnectReply.failures counts it:
 * "HTTP <status>" for a refused handshake, else "timeout", "reset", "refused", "closed", or the
 * message itself, shortened.
 */
export function failureReason(why: string): string {
  const status = /^handshake: HTTP\/1\.[01] (\d{3})/.exec(why);
  if (status) return `HTTP ${status[1]}`;
  const text = why.toLowerCase();
  if (text.includes("timeout") || text.includes("timed out")) return "timeout";
  if (text.includes("reset")) return "reset";
  if (text.includes("refused")) return "refused";
  if (text === "closed before open") return "closed";
  return why.slice(0, REASON_CHARS);
}

function connect(cmd: ConnectCommand): Promise<ConnectReply> {
  let set = sets.get(cmd.set);
  if (!set) sets.set(cmd.set, set = new Set());
  const connSet = set;
  const started = performance.now();
  const retries = cmd.retries ?? 0;
  const retryBaseMs = cmd.retryBaseMs ?? RETRY_BASE_MS;
  const retryMaxMs = cmd.retryMaxMs ?? RETRY_MAX_MS;
  /** Failed tries so far of each connection (index), for its backoff and its retry budget. */
  const tries: number[] = new Array(cmd.count).fill(0);
  const failures: Record<string, number> = {};
  const openMs: number[] = [];
  let next = 0;
  let connected = 0;
  let failed = 0;
  let retried = 0;
  let lastOpenMs = 0;
  const errors: string[] = [];
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({
        connected,
        failed,
        ms: performance.now() - started,
        errors,
        startedAtMs: performance.timeOrigin + started,
        lastOpenMs,
        failures,
        retried,
        ...(cmd.timings ? { openMs } : {}),
      });
    };
    const timer = setTimeout(finish, cmd.timeoutMs);
    const settle = () => {
      if (connected + failed === cmd.count) finish();
      else if (!done) launch();
    };
    const open = (index: number) => {
      const uid = cmd.uid ?? `${cmd.uidPrefix}${(cmd.uidStart ?? 0) + index}`;
      const host = cmd.hosts[index % cmd.hosts.length];
      const groups = cmd.groupPrefix !== undefined && cmd.uid === undefined
        ? [
          ...cmd.groups ?? [],
          `${cmd.groupPrefix}${(cmd.uidStart ?? 0) + index}`,
        ]
        : cmd.groups;
      const token = signToken(uid, cmd.secret, groups);
      const request = `GET ${cmd.path}token=${token} HTTP/1.1\r\n` +
        `Host: ${host}:${cmd.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
      new Conn(
        connSet,
        cmd.mode,
        {
          host,
          port: cmd.port,
          localAddress: cmd.localAddress,
          request,
          handshakeTimeoutMs: cmd.handshakeTimeoutMs,
        },
        () => {
          connected++;
          lastOpenMs = performance.now() - started;
          if (cmd.timings) openMs.push(Math.round(lastOpenMs * 10) / 10);
          settle();
        },
        (why) => {
          const reason = failureReason(why);
          failures[reason] = (failures[reason] ?? 0) + 1;
          if (errors.length < ERROR_SAMPLE) errors.push(why);
          if (tries[index] < retries && !done) {
            const ceiling = Math.min(
              retryMaxMs,
              retryBaseMs * 2 ** tries[index],
            );
            tries[index]++;
            retried++;
            setTimeout(
              () => done ? lost() : open(index),
              Math.random() * ceiling,
            );
            return;
          }
          lost();
        },
      );
    };
    const lost = () => {
      failed++;
      settle();
    };
    const launch = () => {
      if (next < cmd.count) open(next++);
    };
    if (cmd.count === 0) finish();
    for (let i = 0; i < Math.min(cmd.concurrency, cmd.count); i++) launch();
  });
}

function awaitTag(cmd: AwaitCommand): Promise<AwaitReply> {
  const { tag, expect, timeoutMs } = cmd;
  const state = tagState(tag);
  const reply = (): AwaitReply => {
    state.waiter = undefined;
    if (cmd.forget) tags.delete(tag);
    let maxUs = 0;
    let minUs = Infinity;
    for (const l of state.latenciesUs) {
      if (l > maxUs) maxUs = l;
      if (l < minUs) minUs = l;
    }
    return { count: state.count, maxUs, minUs: state.count ? minUs : 0 };
  };
  if (state.count >= expect) return Promise.resolve(reply());
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(reply()), timeoutMs);
    state.waiter = {
      expect,
      resolve: () => {
        clearTimeout(timer);
        resolve(reply());
      },
    };
  });
}

/** The call that pushes `message` to `target` (see Target in protocol.ts). */
function pushRequest(base: string, target: Target, message: string): Request {
  if ("uid" in target) {
    return new Request(
      `${base}/send?uid=${encodeURIComponent(target.uid)}&message=${encodeURIComponent(message)}`,
    );
  }
  const path = "group" in target
    ? `/api/groups/${encodeURIComponent(target.group)}/send`
    : "/api/broadcast";
  return new Request(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ message }),
  });
}

async function sendOne(cmd: SendCommand): Promise<SendReply> {
  const started = performance.now();
  const message = benchMessage(cmd.tag, cmd.payloadBytes);
  const res = await fetch(pushRequest(cmd.base, cmd.target, message));
  const body = await res.text();
  return { status: res.status, body, ms: performance.now() - started };
}

function rate(cmd: RateCommand): Promise<RateReply> {
  const r: RateReply = {
    issued: 0,
    accepted: 0,
    notFound: 0,
    otherStatus: 0,
    errors: 0,
    shed: 0,
    elapsedMs: 0,
    errorSample: [],
  };
  let inflight = 0;
  const pool = new HttpPool(cmd.base);
  const started = performance.now();
  const one = async () => {
    const uid = `${cmd.uidPrefix}${cmd.uidStart + r.issued % cmd.uidCount}`;
    r.issued++;
    inflight++;
    try {
      const message = benchMessage(cmd.tag, cmd.payloadBytes);
      const status = await pool.get(
        `/send?uid=${uid}&message=${encodeURIComponent(message)}`,
      );
      if (status === 200) r.accepted++;
      else if (status === 404) r.notFound++;
      else r.otherStatus++;
    } catch (err) {
      r.errors++;
      if (r.errorSample.length < ERROR_SAMPLE) r.errorSample.push(String(err));
    } finally {
      inflight--;
    }
  };
  return new Promise((resolve) => {
    const end = () => {
      r.elapsedMs = performance.now() - started;
      const drainBy = performance.now() + DRAIN_TIMEOUT_MS;
      const drain = setInterval(() => {
        if (inflight === 0 || performance.now() > drainBy) {
          clearInterval(drain);
          pool.close();
          resolve(r);
        }
      }, PACE_TICK_MS);
    };
    if (cmd.rate === 0) {
      // Closed loop: `concurrency` callers, each issuing its next call when the last returns.
      const until = started + cmd.durationMs;
      const loop = async () => {
        while (performance.now() < until) await one();
      };
      Promise.all(Array.from({ length: cmd.concurrency }, loop)).then(end);
      return;
    }
    const pace = setInterval(() => {
      const elapsed = performance.now() - started;
      const due = Math.floor(
        Math.min(elapsed, cmd.durationMs) * cmd.rate / 1000,
      );
      while (r.issued + r.shed < due && inflight < cmd.concurrency) void one();
      if (r.issued + r.shed < due) r.shed += due - r.issued - r.shed;
      if (elapsed >= cmd.durationMs) {
        clearInterval(pace);
        end();
      }
    }, PACE_TICK_MS);
  });
}

function stats(): StatsReply {
  const open: Record<string, number> = {};
  for (const [name, set] of sets) open[name] = set.size;
  const cpu = process.cpuUsage();
  return {
    open,
    closedAfterOpen,
    unparsed,
    cpuUserMs: cpu.user / 1000,
    cpuSystemMs: cpu.system / 1000,
    rssBytes: process.memoryUsage().rss,
  };
}

async function handle(command: Command): Promise<unknown> {
  switch (command.cmd) {
    case "connect":
      return await connect(command);
    case "await":
      return await awaitTag(command);
    case "collect": {
      const state = tags.get(command.tag);
      tags.delete(command.tag);
      return {
        count: state?.count ?? 0,
        latenciesUs: state?.latenciesUs ?? [],
      } satisfies CollectReply;
    }
    case "close": {
      for (const conn of sets.get(command.set) ?? []) conn.close();
      return {};
    }
    case "stats":
      return stats();
    case "send":
      return await sendOne(command);
    case "rate":
      return await rate(command);
    case "exit":
      setTimeout(() => process.exit(0), 0);
      return {};
  }
}

function main(): void {
  const deadlineMs = Number(process.argv[2] ?? 0);
  if (!(deadlineMs > 0)) throw new Error("usage: client.ts <deadline ms>");
  setTimeout(() => {
    console.error(
      `load generator: deadline of ${deadlineMs} ms reached, exiting`,
    );
    process.exit(2);
  }, deadlineMs);
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line: string) => {
    if (!line.trim()) return;
    const { id, ...command } = JSON.parse(line) as Command & { id: number };
    handle(command as Command).then(
      (result) =>
        process.stdout.write(
          JSON.stringify({ id, ok: true, ...result as object }) + "\n",
        ),
      (err) =>
        process.stdout.write(
          JSON.stringify({ id, ok: false, error: String(err) }) + "\n",
        ),
    );
  });
  lines.on("close", () => process.exit(0));
}

if (import.meta.main) main();
