/**
 * Black-box: the program as a user starts it, from an empty directory with no configuration, and
 * the README's lines run exactly as printed. Runs `main.ts` on the runtime running the tests, or
 * the compiled executable named by DENO_PUSHER_BIN.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import {
  command,
  connectClient,
  killProgram,
  launchChromium,
  rawUpgrade,
  sh,
  type Started,
  startProgram,
  stopProgram,
} from "./testkit.ts";
import { type DataDirLock, lockDataDir } from "./datadir.ts";

/** The README's port; the README flow is tested on it so that its lines are tested verbatim. */
const README_PORT = 8181;
const here = import.meta.dirname ?? ".";

/**
 * Holds the README's port for one test. Every other test listens on a port the OS picks (never
 * 8181, which is below the ephemeral range), so only another run of these tests could collide:
 * they take turns through a lock (the data directory lock, on a directory of its own). Something
 * else listening on 8181, such as a `make run` left open, fails the test with a message that says
 * so, rather than with a confusing refusal.
 */
async function holdReadmePort(): Promise<Disposable> {
  const dir = join(tmpdir(), `deno-pusher-port-${README_PORT}`);
  const deadline = Date.now() + 120_000;
  let lock: DataDirLock | undefined;
  while (!lock) {
    try {
      lock = lockDataDir(dir);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250)); // another run holds the port
    }
  }
  const listening = await new Promise<boolean>((resolve) => {
    const probe = tcpConnect({ host: "127.0.0.1", port: README_PORT }, () => {
      probe.destroy();
      resolve(true);
    });
    probe.on("error", () => resolve(false));
  });
  if (listening) {
    lock.release();
    assert.fail(
      `port ${README_PORT} is in use: the README's lines are tested on it. Stop what listens ` +
        `there (a \`make run\` left open?) and run the tests again.`,
    );
  }
  return { [Symbol.dispose]: () => lock.release() };
}

test("make run's printed token, browser line and curl line work as printed, as in the README", async () => {
  using _port = await holdReadmePort();
  const started = await startProgram(["--port", String(README_PORT)]);
  try {
    const token = /Dev token for uid 123[^\n]*\n +(\S+)/.exec(started.banner)?.[1];
    assert.ok(token, `no token in:\n${started.banner}`);
    const browserLine = /^ +(const ws = new WebSocket\(.*)$/m.exec(started.banner)![1];
    const curlLine = /^ +(curl .*)$/m.exec(started.banner)![1];

    const readme = readFileSync(join(here, "README.md"), "utf8");
    assert.ok(readme.includes(curlLine), `README lacks the printed line: ${curlLine}`);
    assert.ok(
      readme.includes(browserLine.replace(token, "<token>")),
      `README lacks the printed browser line (with <token>): ${browserLine}`,
    );

    // The browser line, run as written in a WHATWG WebSocket, with console.log captured.
    const logged: unknown[] = [];
    const ws = new Function("console", `${browserLine}; return ws;`)({
      log: (x: unknown) => logged.push(x),
    }) as WebSocket;
    await new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener("close", (e) => reject(new Error(`closed ${e.code} ${e.reason}`)));
    });
    const received = new Promise((resolve) => ws.addEventListener("message", resolve));
    const reply = JSON.parse(await sh(curlLine));
    assert.equal(reply.delivered, 1);
    await received;
    assert.deepEqual(logged, ["Hello"]);

    const closed = new Promise<number>((resolve) =>
      ws.addEventListener("close", (e) => resolve(e.code))
    );
    assert.equal(await stopProgram(started), 0, "SIGTERM exits 0");
    assert.equal(await closed, 1001, "clients are told the server is going away");
  } finally {
    started.child.kill("SIGKILL");
  }
});

test("the README's browser line works as printed in a real browser (Chromium)", async (t) => {
  const browser = await launchChromium(t, "the browser line was not run in a real browser");
  if (!browser) return;
  using _port = await holdReadmePort();
  const started = await startProgram(["--port", String(README_PORT)]);
  try {
    const token = /Dev token for uid 123[^\n]*\n +(\S+)/.exec(started.banner)![1];
    const browserLine = /^ +(const ws = new WebSocket\(.*)$/m.exec(started.banner)![1];
    const curlLine = /^ +(curl .*)$/m.exec(started.banner)![1];
    const readme = readFileSync(join(here, "README.md"), "utf8");
    assert.ok(readme.includes(browserLine.replace(token, "<token>")));

    const page = await browser.newPage();
    await page.goto(`http://localhost:${README_PORT}/`); // as the banner says
    const hello = page.waitForEvent("console", (m) => m.text() === "Hello");
    await page.evaluate(`${browserLine}\nnew Promise((resolve) => ws.onopen = resolve)`);
    const reply = JSON.parse(await sh(curlLine));
    assert.equal(reply.delivered, 1);
    await hello;
    assert.equal(await stopProgram(started), 0);
  } finally {
    await browser.close();
    started.child.kill("SIGKILL");
  }
});

test("the program refuses a bad token with 401, serves metrics, and stops cleanly", async () => {
  const secret = "e2e-secret-0123456789abcdef0123456789";
  const started = await startProgram(["--port", "0", "--message-logger", "sqlite"], {
    JWT_SECRET: secret,
  });
  try {
    const port = Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]);
    assert.doesNotMatch(started.banner, /Dev token/, "no dev token when a secret is set");
    const refused = await rawUpgrade(port, "/ws?token=forged");
    assert.equal(refused.status, 401);
    const { Authenticator } = await import("./authenticator.ts");
    const token = await (await Authenticator.hmac(secret)).sign("e2e");
    await using tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${token}`);
    const reply = await fetch(`http://127.0.0.1:${port}/send?uid=e2e&message=hi`);
    assert.equal(reply.status, 200);
    assert.equal(await tab.next(), "hi");
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^connections 1$/m);
    assert.match(metrics, /^messages_sent_total 1$/m);
    assert.equal(await stopProgram(started), 0);
    assert.equal((await tab.closed).code, 1001);
  } finally {
    started.child.kill("SIGKILL");
  }
});

test("--help lists every setting, --version answers; a bad setting stops start-up with one line naming it", async () => {
  const [cmd, argv] = command(["--help"]);
  const help = await new Promise<string>((resolve, reject) =>
    execFile(cmd, argv, (err, stdout) => err ? reject(err) : resolve(stdout))
  );
  const { SETTINGS } = await import("./config.ts");
  for (const [name, setting] of Object.entries(SETTINGS)) {
    assert.match(help, new RegExp(`--${name} +${setting.env} +default `), name);
  }
  const [vcmd, vargv] = command(["--version"]);
  const version = await new Promise<string>((resolve, reject) =>
    execFile(vcmd, vargv, (err, stdout) => err ? reject(err) : resolve(stdout))
  );
  assert.match(version, /^deno-pusher \d+\.\d+\.\d+ \((deno|bun)\)\n$/);
  const [bad, badArgv] = command(["--max-queue-bytes", "lots"]);
  const failure = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
    execFile(
      bad,
      badArgv,
      (err, _stdout, stderr) =>
        resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stderr }),
    )
  );
  assert.equal(failure.code, 2);
  assert.equal(
    failure.stderr.trim(),
    'deno-pusher: invalid --max-queue-bytes="lots": must be a number',
  );
});

/**
 * Opens a /send request that never finishes its body, and resolves once the server has taken it
 * (it answers `100 Continue`): a request in flight that shutdown must wait for.
 */
function hangingRequest(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port }, () =>
      socket.write(
        "POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n" +
          "Content-Length: 100\r\nExpect: 100-continue\r\n\r\nuid=1",
      ));
    socket.once("data", (data) => {
      if (String(data).startsWith("HTTP/1.1 100")) resolve(socket);
      else reject(new Error(`expected 100 Continue, got ${data}`));
    });
    socket.on("error", () => {}); // the server closes it at exit
  });
}

/**
 * Starts the program with `grace` seconds of SHUTDOWN_GRACE and a request held open, so that
 * shutdown has to wait; `story` signals it and checks what happens.
 */
async function withHeldShutdown(grace: string, story: (s: Started) => Promise<void>) {
  const started = await startProgram(["--port", "0", "--shutdown-grace", grace], {
    JWT_SECRET: "e2e-secret-0123456789abcdef0123456789",
  });
  let request: Socket | undefined;
  try {
    const port = Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]);
    request = await hangingRequest(port);
    await story(started);
  } finally {
    request?.destroy();
    await killProgram(started);
  }
}

test("shutdown waits SHUTDOWN_GRACE for open requests, then exits 0 anyway", async () => {
  await withHeldShutdown("0.5", async (started) => {
    process.kill(started.child.pid!, "SIGTERM");
    await started.printed(/SHUTDOWN_GRACE of 0.5s is over/);
    assert.equal(await started.exited, 0);
  });
});

test("a second signal during shutdown exits at once with 130", async () => {
  await withHeldShutdown("600", async (started) => {
    process.kill(started.child.pid!, "SIGTERM");
    await started.printed(/SIGTERM: closing/);
    process.kill(started.child.pid!, "SIGINT");
    await started.printed(/SIGINT again: exiting now/);
    assert.equal(await started.exited, 130);
  });
});
