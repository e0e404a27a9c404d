/**
 * A real Redis for tests: Debian's redis-server, started by the test on a free port and stopped
 * when it is done, with nothing written to disk. Runtime-neutral, like testkit.ts. The engine's
 * Redis stores and, later, the cluster tests use it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";

/** What a test says, and does, when redis-server is not installed. */
export const REDIS_MISSING = "SKIP: redis-server not found (apt-get install redis-server)";

/** Milliseconds a started redis-server has to answer PING: it takes about 10 ms. */
const READY_MS = 10_000;

/** A redis-server the test started; `stop` (or `await using`) ends it. */
export interface TestRedis extends AsyncDisposable {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Ends the server (SIGTERM) and waits for it to exit; calling it again is harmless. */
  stop(): Promise<void>;
}

/** The redis-server on PATH, or undefined when there is none. */
export function findRedisServer(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const path = join(dir || ".", "redis-server");
    if (existsSync(path)) return path;
  }
  return undefined;
}

/**
 * Registers one test for when redis-server is missing: it prints REDIS_MISSING and is skipped, or
 * fails under CI=true, where every test must run (as launchChromium does for Chromium). `what`
 * says which tests did not run.
 */
export function testWithoutRedis(what: string): void {
  test(`${what}: needs redis-server`, (t) => {
    const why = `${REDIS_MISSING}; ${what} did not run`;
    if (process.env.CI === "true") assert.fail(why);
    console.warn(why);
    t.skip(why);
  });
}

/** A TCP port nobody listens on now, on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Whether a Redis answers PING on `port` now. */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let reply = "";
    socket.setTimeout(1000, () => socket.destroy());
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk;
      if (reply.includes("\r\n")) socket.end();
    });
    // A server with a password answers NOAUTH: it is up all the same.
    socket.on("close", () => resolve(reply.startsWith("+PONG") || reply.startsWith("-NOAUTH")));
    socket.on("error", () => {});
  });
}

/**
 * Starts a redis-server on `port` (default a free one; give a stopped server's port to restart it)
 * and resolves once it answers PING. Without `dir` it keeps nothing (a restart comes back empty);
 * with `dir` it keeps an append-only file there, fsynced at every write (appendfsync always), so a
 * restart on the same `dir` comes back with everything it had answered. With `password`, it
 * refuses clients that do not give it (AUTH); `url` does not carry it.
 * Throws REDIS_MISSING when there is no redis-server on PATH (call findRedisServer first to skip),
 * and an error with the server's output when it does not come up. The server is killed when the
 * test process exits, should the test forget to stop it.
 */
export async function startRedis(
  options: { port?: number; dir?: string; password?: string } = {},
): Promise<TestRedis> {
  const bin = findRedisServer();
  if (!bin) throw new Error(REDIS_MISSING);
  const port = options.port ?? await freePort();
  const child: ChildProcess = spawn(bin, [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    ...(options.dir
      ? ["--dir", options.dir, "--appendonly", "yes", "--appendfsync", "always"]
      : ["--appendonly", "no"]),
    ...(options.password ? ["--requirepass", options.password] : []),
  ], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (chunk) => output += chunk);
  child.stderr?.on("data", (chunk) => output += chunk);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const kill = () => child.kill();
  process.once("exit", kill);
  const stop = async () => {
    process.off("exit", kill);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  const deadline = Date.now() + READY_MS;
  while (!(await pings(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server on port ${port} did not answer PING:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop, [Symbol.asyncDispose]: stop };
}
