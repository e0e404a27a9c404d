/**
 * A real Redis for tests: Debian's redis-server, started by the test on a free port and stopped
 * when it is done, with nothing written to disk. Runtime-neutral, like testkit.ts. The engine's
 * Redis stores and, later, the cluster tests use it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
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
  /**
   * With `tls`: `rediss://localhost:<tlsPort>`, served with a certificate signed by `caFile`'s CA,
   * which no runtime trusts unless told (NODE_EXTRA_CA_CERTS=caFile).
   */
  tlsUrl?: string;
  /** With `tls`: the PEM file of the CA that signed the server's certificate. */
  caFile?: string;
  /** Ends the server (SIGTERM) and waits for it to exit; calling it again is harmless. */
  stop(): Promise<void>;
}

/** `cmd`'s path on PATH, or undefined when there is none. */
function onPath(cmd: string): string | undefined {
  return (process.env.PATH ?? "").split(":").map((dir) => join(dir || ".", cmd)).find(existsSync);
}

/** The redis-server on PATH, or undefined when there is none. */
export function findRedisServer(): string | undefined {
  return onPath("redis-server");
}

/**
 * Registers one test for when redis-server is missing: it prints REDIS_MISSING and is skipped, or
 * fails under CI=true, where every test must run (as launchChromium does for Chromium). `what`
 * says which tests did not run.
 */
export function testWithoutRedis(what: string): void {
  testWithout("redis-server", REDIS_MISSING, what);
}

/**
 * Registers one test for when `tool` is missing: it prints `missing` and is skipped, or fails
 * under CI=true. `what` says which tests did not run.
 */
export function testWithout(tool: string, missing: string, what: string): void {
  test(`${what}: needs ${tool}`, (t) => {
    const why = `${missing}; ${what} did not run`;
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

/** What a test says, and does, when openssl is not installed (it makes the TLS certificates). */
export const OPENSSL_MISSING = "SKIP: openssl not found (apt-get install openssl)";

/** Whether the TLS tests can run: openssl makes their certificates. */
export const canMakeCertificates = () => onPath("openssl") !== undefined;

/**
 * A throwaway CA and a certificate it signed for localhost and 127.0.0.1 (P-256, valid 2 days),
 * made by openssl in a new directory: ca.crt, server.crt, server.key.
 */
function makeCertificates(): { dir: string; ca: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-redis-tls-"));
  // Each line is one openssl command, its arguments split on spaces (no path here has one).
  const openssl = (line: string) =>
    execFileSync("openssl", line.replaceAll("$", `${dir}/`).split(" "), { stdio: "pipe" });
  const key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  writeFileSync(join(dir, "san.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  openssl(`req -x509 ${key} -days 2 -subj /CN=deno-pusher-test-CA -keyout $ca.key -out $ca.crt`);
  openssl(`req ${key} -subj /CN=localhost -keyout $server.key -out $server.csr`);
  openssl(
    "x509 -req -in $server.csr -CA $ca.crt -CAkey $ca.key -CAcreateserial -days 2 " +
      "-extfile $san.cnf -out $server.crt",
  );
  const at = (name: string) => join(dir, name);
  return { dir, ca: at("ca.crt"), cert: at("server.crt"), key: at("server.key") };
}

/** One command to the Redis on `port`, inline; answers the reply's first line without its type. */
export function redisCommand(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(`${line}\r\n`));
    let reply = "";
    socket.on("data", (chunk) => {
      reply += chunk;
      const lines = reply.split("\r\n");
      // A bulk string comes as "$<length>" then the value; "$-1" is none.
      if (lines[0].startsWith("$-1")) resolve(""), socket.end();
      else if (lines[0].startsWith("$") && lines.length > 2) resolve(lines[1]), socket.end();
      else if (!lines[0].startsWith("$") && lines.length > 1) {
        resolve(lines[0].slice(1)), socket.end();
      }
    });
    socket.on("error", reject);
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
 * refuses clients that do not give it (AUTH); `url` does not carry it. With `tls`, it also serves
 * TLS on a port of its own (`tlsUrl`), with a certificate from a throwaway CA (`caFile`; openssl
 * makes both, see canMakeCertificates); `url` stays plain for the test's own checks.
 * Throws REDIS_MISSING when there is no redis-server on PATH (call findRedisServer first to skip),
 * and an error with the server's output when it does not come up. The server is killed when the
 * test process exits, should the test forget to stop it.
 */
export async function startRedis(
  options: { port?: number; dir?: string; password?: string; tls?: boolean } = {},
): Promise<TestRedis> {
  const bin = findRedisServer();
  if (!bin) throw new Error(REDIS_MISSING);
  const port = options.port ?? await freePort();
  const certs = options.tls ? makeCertificates() : undefined;
  const tlsPort = certs ? await freePort() : undefined;
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
    ...(certs
      ? [
        ...["--tls-port", String(tlsPort), "--tls-cert-file", certs.cert],
        ...[
          "--tls-key-file",
          certs.key,
          "--tls-ca-cert-file",
          certs.ca,
          "--tls-auth-clients",
          "no",
        ],
      ]
      : []),
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
    if (certs) rmSync(certs.dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + READY_MS;
  while (!(await pings(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server on port ${port} did not answer PING:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    ...(certs ? { tlsUrl: `rediss://localhost:${tlsPort}`, caFile: certs.ca } : {}),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
