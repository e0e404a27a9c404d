/**
 * What the tests share: a real server on a random port, real WebSocket clients, and a raw TCP
 * client for what a browser cannot do (send headers, stop reading). Runtime-neutral: the same
 * tests run under `deno test` and `bun test`.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect, type Socket as TcpSocket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import { DatabaseSync } from "node:sqlite";
import { Authenticator } from "./authenticator.ts";
import { type Config, defaultConfig } from "./config.ts";
import { type Running, start } from "./main.ts";
import { runtimeName } from "./runtime/serve.ts";

/** The secret test servers use (32+ characters, as the config requires). */
export const TEST_SECRET = "test-secret-0123456789abcdef0123456789";

/** A running test server; `await using` stops it and removes its data directory. */
export interface TestServer extends Running, AsyncDisposable {
  config: Config;
  /** `ws://127.0.0.1:<port>` */
  wsUrl: string;
  /** A token for `uid`, signed with the server's secret. */
  token(uid: string, claims?: Record<string, unknown>, ttlSeconds?: number): Promise<string>;
  /**
   * /send and its JSON reply: GET with a query for short messages, as curl users do; POST with a
   * form body past 2000 characters, which no runtime's URL length limit refuses.
   */
  send(uid: string, message: string): Promise<{ status: number; body: Record<string, unknown> }>;
  /** The /metrics sample `name`, or NaN when absent. */
  metric(name: string): Promise<number>;
  /** Calls /api`path` with an optional JSON body; the reply's status and JSON body. */
  // deno-lint-ignore no-explicit-any -- replies have many shapes; each test asserts the ones it reads
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /**
   * Connects in the json format as `uid` with the token claims given, and reads the welcome
   * frame: the socket and the client id the server gave it.
   */
  connectAs(
    uid: string,
    claims?: Record<string, unknown>,
    query?: string,
  ): Promise<{ client: TestClient; id: string }>;
}

/** Starts a server on 127.0.0.1 and a random port, with its own data directory. */
export async function startTestServer(overrides: Partial<Config> = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-test-"));
  const config = defaultConfig({
    host: "127.0.0.1",
    port: 0,
    jwtSecret: TEST_SECRET,
    messageLogger: "none",
    dataDir,
    ...overrides,
  });
  // No checkpointer worker: suites start hundreds of these (e2e_store_test checks the worker).
  const running = await start(config, { checkpointer: false });
  const url = `http://127.0.0.1:${running.port}`;
  return {
    ...running,
    config,
    url,
    wsUrl: `ws://127.0.0.1:${running.port}`,
    token: (uid, claims = {}, ttl = 3600) => running.authenticator.sign(uid, ttl, claims),
    async send(uid, message) {
      const fields = new URLSearchParams({ uid, message });
      const res = message.length > 2000
        ? await fetch(`${url}/send`, { method: "POST", body: fields })
        : await fetch(`${url}/send?${fields}`);
      return { status: res.status, body: await res.json() };
    },
    async metric(name) {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name} `));
      return line ? Number(line.slice(name.length + 1)) : NaN;
    },
    async api(method, path, body) {
      const res = await fetch(`${url}/api${path}`, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    },
    async connectAs(uid, claims = {}, query = "") {
      const token = await running.authenticator.sign(uid, 3600, claims);
      const client = await connectClient(
        `ws://127.0.0.1:${running.port}/ws?format=json&token=${token}${query}`,
      );
      const welcome = await client.nextJson();
      if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${welcome.type}`);
      return { client, id: welcome.client as string };
    },
    async [Symbol.asyncDispose]() {
      await running.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A close as the client saw it. */
export interface Closed {
  code: number;
  reason: string;
}

/** A WebSocket client whose frames can be awaited one by one. */
export interface TestClient extends AsyncDisposable {
  ws: WebSocket;
  /** The next text frame; rejects if the socket closes first or none comes within `ms`. */
  next(ms?: number): Promise<string>;
  /** The next frame, parsed as JSON. */
  nextJson(ms?: number): Promise<Record<string, unknown>>;
  /** Resolves when the socket has closed. */
  closed: Promise<Closed>;
}

/** Opens a WebSocket to `url` and resolves once it is open (rejects if it closes first). */
export function connectClient(url: string): Promise<TestClient> {
  const ws = new WebSocket(url);
  const frames: string[] = [];
  const waiters: { resolve(frame: string): void; reject(err: Error): void }[] = [];
  let closedWith: Closed | undefined;
  const closed = new Promise<Closed>((resolve) => {
    ws.addEventListener("close", (e) => {
      closedWith = { code: e.code, reason: e.reason };
      for (const w of waiters.splice(0)) {
        w.reject(new Error(`socket closed ${e.code} ${e.reason}`));
      }
      resolve(closedWith);
    });
  });
  ws.addEventListener("message", (e) => {
    const data = typeof e.data === "string" ? e.data : `<binary ${String(e.data)}>`;
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(data);
    else frames.push(data);
  });
  const next = (ms = 5000) => {
    if (frames.length > 0) return Promise.resolve(frames.shift()!);
    if (closedWith) {
      return Promise.reject(new Error(`socket closed ${closedWith.code} ${closedWith.reason}`));
    }
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no frame within ${ms} ms`)), ms);
      waiters.push({
        resolve: (f) => (clearTimeout(timer), resolve(f)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  };
  const client: TestClient = {
    ws,
    next,
    nextJson: async (ms) => JSON.parse(await next(ms)),
    closed,
    async [Symbol.asyncDispose]() {
      if (ws.readyState !== WebSocket.CLOSED) ws.close();
      await closed;
    },
  };
  return new Promise((resolve, reject) => {
    ws.addEventListener("open", () => resolve(client), { once: true });
    closed.then((c) => reject(new Error(`socket closed before open: ${c.code} ${c.reason}`)));
  });
}

/**
 * Waits until `condition` holds, checking every few milliseconds; for server-side state that has
 * no event a test can hear (the hub noticing a close). Fails after `ms`.
 */
export async function eventually(condition: () => boolean, ms = 5000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The HTTP answer to a raw upgrade request, and the socket if it was upgraded. */
export interface RawUpgrade {
  status: number;
  head: string;
  body: string;
  socket: TcpSocket;
  /** On 101, the bytes that came after the handshake's head (the start of the first frames). */
  rest: Buffer;
}

/**
 * Sends a WebSocket handshake over plain TCP with any headers, and reads the answer. On 101 the
 * socket is left open and not read any further: a client that has stopped reading.
 */
export function rawUpgrade(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<RawUpgrade> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port }, () => {
      const key = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64");
      const lines = [
        `GET ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        "Upgrade: websocket",
        "Connection: Upgrade",
        `Sec-WebSocket-Key: ${key}`,
        "Sec-WebSocket-Version: 13",
        ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      ];
      socket.write(lines.join("\r\n") + "\r\n\r\n");
    });
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = received.subarray(0, end).toString("latin1");
      const status = Number(head.split(" ")[1]);
      if (status === 101) {
        socket.off("data", onData);
        socket.pause();
        return resolve({ status, head, body: "", socket, rest: received.subarray(end + 4) });
      }
      const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (received.length < end + 4 + length) return;
      socket.off("data", onData);
      socket.destroy();
      resolve({
        status,
        head,
        body: received.subarray(end + 4, end + 4 + length).toString(),
        socket,
        rest: Buffer.alloc(0),
      });
    };
    socket.on("data", onData);
    socket.on("error", reject);
  });
}

/** One frame as the server sent it. */
export interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** What a raw socket read to its end: every frame, and the close frame's code if one came. */
export interface ReadToEnd {
  frames: ServerFrame[];
  /** The close frame's code and reason, or undefined when the stream ended without one. */
  close: { code: number; reason: string } | undefined;
}

/**
 * Reads an upgraded raw socket until the server ends it, parsing the server's (unmasked) frames;
 * answers a close frame as a browser would, and calls `onClose` when it comes. Fails after `ms`.
 */
export function readToEnd(
  raw: RawUpgrade,
  ms = 30_000,
  onClose: () => void = () => {},
): Promise<ReadToEnd> {
  return new Promise((resolve, reject) => {
    let buffer = raw.rest;
    const frames: ServerFrame[] = [];
    let close: ReadToEnd["close"];
    const timer = setTimeout(() => {
      raw.socket.destroy();
      reject(new Error(`the server did not end the stream within ${ms} ms`));
    }, ms);
    const parse = () => {
      for (;;) {
        if (buffer.length < 2) return;
        let length = buffer[1] & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (buffer.length < 4) return;
          length = buffer.readUInt16BE(2);
          offset = 4;
        } else if (length === 127) {
          if (buffer.length < 10) return;
          length = Number(buffer.readBigUInt64BE(2));
          offset = 10;
        }
        if (buffer.length < offset + length) return;
        const frame = {
          opcode: buffer[0] & 0x0f,
          payload: buffer.subarray(offset, offset + length),
        };
        buffer = buffer.subarray(offset + length);
        frames.push(frame);
        if (frame.opcode === 8 && !close) {
          close = frame.payload.length >= 2
            ? { code: frame.payload.readUInt16BE(0), reason: frame.payload.subarray(2).toString() }
            : { code: 1005, reason: "" };
          // Echo the close, masked with a zero key, as RFC 6455 asks of a client.
          raw.socket.write(Buffer.from([0x88, 0x82, 0, 0, 0, 0, ...frame.payload.subarray(0, 2)]));
          onClose();
        }
      }
    };
    raw.socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      parse();
    });
    const end = () => {
      clearTimeout(timer);
      resolve({ frames, close });
    };
    raw.socket.on("end", end);
    raw.socket.on("close", end);
    raw.socket.on("error", () => {}); // a reset after the close: the frames read are the answer
    parse();
    raw.socket.resume();
  });
}

// The program as a user runs it: main.ts on this runtime, or the executable named by
// DENO_PUSHER_BIN (`make test-bin` runs every e2e*_test.ts file that way).

const here = import.meta.dirname ?? ".";

/** The command that starts the server, as `make run` or the installed executable would. */
export function command(args: string[]): [string, string[]] {
  const bin = process.env.DENO_PUSHER_BIN;
  if (bin) return [resolve(bin), args];
  const main = join(here, "main.ts");
  if (runtimeName === "bun") return [process.execPath, [main, ...args]];
  return [process.execPath, ["run", "--allow-all", main, ...args]];
}

export interface Started {
  child: ChildProcess;
  banner: string;
  exited: Promise<number | null>;
  dir: string;
  /** Resolves once the program has printed text matching `pattern` on stdout or stderr. */
  printed(pattern: RegExp): Promise<void>;
  /** Everything the program has printed so far, stdout and stderr interleaved. */
  output(): string;
}

/** Removes the directory startProgram made for a program that has exited. */
function removeProgramDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Starts the server in an empty directory and waits for the banner's last line. */
export async function startProgram(
  args: string[],
  env: Record<string, string> = {},
  options: { openFiles?: number } = {},
): Promise<Started> {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-"));
  let [cmd, argv] = command(args);
  if (options.openFiles !== undefined) {
    // The open-file limit is lowered by the shell, which then becomes the program (same pid).
    argv = ["-c", `ulimit -n ${options.openFiles} && exec "$0" "$@"`, cmd, ...argv];
    cmd = "bash";
  }
  const childEnv: Record<string, string | undefined> = { ...process.env };
  delete childEnv.JWT_SECRET;
  Object.assign(childEnv, env);
  const child = spawn(cmd, argv, { cwd: dir, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let out = "";
  const watchers: { pattern: RegExp; resolve(): void }[] = [];
  const onOutput = (chunk: string) => {
    out += chunk;
    for (const w of [...watchers]) {
      if (w.pattern.test(out)) watchers.splice(watchers.indexOf(w), 1), w.resolve();
    }
  };
  child.stdout!.on("data", onOutput);
  child.stderr!.on("data", onOutput);
  const printed = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      watchers.push({ pattern, resolve });
      onOutput("");
      exited.then((code) =>
        reject(new Error(`exited ${code} before printing ${pattern}:\n${out}`))
      );
    });
  try {
    await printed(env.JWT_SECRET ? /listening on [^\n]*\n/ : /curl "[^\n]*\n/);
  } catch (err) {
    removeProgramDir(dir); // it exited before its banner: nothing of it is left to read
    throw err;
  }
  return { child, banner: out, exited, dir, printed, output: () => out };
}

export async function stopProgram(started: Started): Promise<number | null> {
  // process.kill, not child.kill: Deno's child_process reports any child it signalled itself as
  // killed by that signal (code null), even when the child handled it and exited 0.
  process.kill(started.child.pid!, "SIGTERM");
  const code = await started.exited;
  removeProgramDir(started.dir);
  return code;
}

/**
 * Kills the program with SIGKILL (as a crash would end it), unless it has exited, and removes its
 * directory. Resolves with its exit code (null: killed by a signal).
 */
export async function killProgram(started: Started): Promise<number | null> {
  started.child.kill("SIGKILL"); // by the child, not its pid: nothing once it has exited
  const code = await started.exited;
  removeProgramDir(started.dir);
  return code;
}

export function sh(line: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      "sh",
      ["-c", line],
      (err, stdout, stderr) =>
        err ? reject(new Error(`${line}: ${err.message}\n${stderr}`)) : resolve(stdout),
    )
  );
}

/** The JWT_SECRET of programs started by withProgram. */
export const PROGRAM_SECRET = "program-secret-0123456789abcdef01234";

/** Starts the program on a free port with `args`; the story runs, then the program is stopped. */
export async function withProgram(
  args: string[],
  story: (port: number, started: Started) => Promise<void>,
  options: { openFiles?: number } = {},
): Promise<void> {
  const started = await startProgram(
    ["--port", "0", ...args],
    { JWT_SECRET: PROGRAM_SECRET },
    options,
  );
  try {
    const port = Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]);
    await story(port, started);
  } finally {
    await killProgram(started);
  }
}

/** POSTs `body` as JSON to `path` on the program at `port`; answers the status and the JSON. */
export async function postJson(port: number, path: string, body: Record<string, unknown>) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Sends `head` (request line and headers, without the blank line) and reads one answer. */
export function rawRequest(port: number, head: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port }, () => socket.write(`${head}\r\n\r\n`));
    let received = "";
    socket.on("data", (chunk) => {
      received += chunk;
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/content-length: *(\d+)/i.exec(received.slice(0, end))?.[1] ?? 0);
      if (received.length < end + 4 + length) return;
      socket.destroy();
      resolve({
        status: Number(received.split(" ")[1]),
        body: received.slice(end + 4, end + 4 + length),
      });
    });
    // A runtime that refuses a request itself may answer without a length, or not at all
    // (status 0), and close.
    socket.on(
      "close",
      () =>
        resolve({
          status: Number(received.split(" ")[1] ?? 0),
          body: received.split("\r\n\r\n")[1] ?? "",
        }),
    );
    socket.on("error", reject);
  });
}

/** `promise`, or a failure naming `what` after `ms`: a missing line must fail, not hang. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)
  );
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * A json tab of `uid` with token `claims` on the program at `port`, once welcomed: the socket and
 * the client id the welcome gave it.
 */
export async function programTab(port: number, uid: string, claims: Record<string, unknown> = {}) {
  const client = await connectClient(
    `ws://127.0.0.1:${port}/ws?format=json&token=${await programToken(uid, claims)}`,
  );
  const welcome = await client.nextJson();
  assert.equal(welcome.type, "welcome");
  return { client, id: welcome.client as string };
}

/** Sends `frame` on `client` and answers the next frame it gets. */
export async function ask(client: TestClient, frame: Record<string, unknown>) {
  client.ws.send(JSON.stringify(frame));
  return await client.nextJson();
}

/** A token for `uid` that programs started by withProgram accept. */
export const programToken = async (uid: string, claims: Record<string, unknown> = {}) =>
  (await Authenticator.hmac(PROGRAM_SECRET)).sign(uid, 3600, claims);

/** Polls `check` until it holds: for the program's state, which sends no event. Fails after `ms`. */
export async function until(
  check: () => Promise<boolean>,
  what: string,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A /metrics sample of the program, or NaN. */
export async function programMetric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

/** What one run of the program printed, and its exit code. */
export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the program to its end in an empty directory, with `env` over this process's environment
 * less JWT_SECRET. Killed after 30 s, which fails the test with code null rather than hanging it.
 */
export async function runProgram(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-cli-"));
  const [cmd, argv] = command(args);
  const childEnv: Record<string, string | undefined> = { ...process.env };
  delete childEnv.JWT_SECRET;
  Object.assign(childEnv, env);
  try {
    return await new Promise<Ran>((resolve) =>
      execFile(cmd, argv, { cwd: dir, env: childEnv, timeout: 30_000 }, (err, stdout, stderr) => {
        const code = err ? (err as { code?: unknown }).code : 0;
        resolve({ code: typeof code === "number" ? code : null, stdout, stderr });
      })
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A file's place, `name`, in a `data` folder of a new temporary folder (so that a store that
 * creates its folder is tested doing so). Disposing of it removes the temporary folder with
 * everything in it.
 */
export function temporaryFile(name: string): { path: string } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-store-"));
  return {
    path: join(dir, "data", name),
    [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * A store opened by `open` on a temporary file `name` (see temporaryFile). Disposing of it closes
 * the store and removes the file's folder.
 */
export function storeOnTemporaryFile<S extends { close(): Promise<void> }>(
  name: string,
  open: (path: string) => S,
): { store: S; path: string } & AsyncDisposable {
  const file = temporaryFile(name);
  let store: S;
  try {
    store = open(file.path);
  } catch (err) {
    file[Symbol.dispose]();
    throw err;
  }
  return {
    store,
    path: file.path,
    [Symbol.asyncDispose]: async () => {
      await store.close();
      file[Symbol.dispose]();
    },
  };
}

/** Runs `query` on the file at `path` with a connection of its own, as another process would. */
export function inFile(path: string, query: string): Record<string, unknown>[] {
  const db = new DatabaseSync(path);
  try {
    return db.prepare(query).all().map((row) => ({ ...row }));
  } finally {
    db.close();
  }
}

/** Chromium from Debian's package; the tests never let a tool download a browser. */
export const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
];

/**
 * Debian's Chromium, driven by playwright-core; undefined when it is not installed: then the test
 * says `SKIP: …` loudly (`what` says what was not run), and fails when CI=true, where a skipped
 * browser test would pass unseen.
 */
export async function launchChromium(
  t: { skip(message?: string): void },
  what: string,
): Promise<import("playwright-core").Browser | undefined> {
  if (!existsSync(CHROMIUM)) {
    const why = `SKIP: ${CHROMIUM} is not installed (apt-get install chromium); ${what}`;
    if (process.env.CI === "true") assert.fail(why);
    console.warn(why);
    t.skip(why);
    return undefined;
  }
  const { chromium } = await import("playwright-core");
  return await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
}
