/**
 * The attacks of the outside review, told against the program as users run it (main.ts on this
 * runtime, or the executable under `make test-bin`): each must leave the server alive, serving its
 * other clients, with bounded memory and descriptors, on every runtime. Part of the bad-input
 * suite with security_test.ts.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { execFileSync } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { connect as tcpConnect, type Socket as TcpSocket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { DatabaseSync } from "node:sqlite";
import { test, type TestContext } from "node:test";
import {
  connectClient,
  eventually,
  programMetric as metric,
  programToken as token,
  rawUpgrade,
  readToEnd,
  runProgram,
  until,
  within,
  withProgram,
} from "./testkit.ts";

/** Sends `count` messages of `bytes` to `uid` through /send, `inFlight` requests at a time. */
async function burst(port: number, uid: string, count: number, bytes: number, inFlight: number) {
  const body = "x".repeat(bytes - 8);
  let next = 0;
  const statuses: number[] = [];
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < count) {
      const n = next++;
      const res = await fetch(`http://127.0.0.1:${port}/send`, {
        method: "POST",
        body: new URLSearchParams({ uid, message: `${String(n).padStart(7, "0")}:${body}` }),
      });
      statuses[n] = res.status;
      await res.body?.cancel();
    }
  }));
  return statuses;
}

test("a tab reading at full speed gets a burst whole; a tab that stopped reading is cut off with a 4008 it can see", async () => {
  // 20 MiB in 16 KiB messages, 64 requests in flight: more than the loopback buffers of the
  // stopped tab can hold, and a burst that reaches the server faster than one turn of its event
  // loop writes it (the Deno run used to cut the reading tab off after a few dozen messages).
  const count = 1280;
  await withProgram(["--slow-consumer-timeout", "1"], async (port) => {
    const stopped = await rawUpgrade(port, `/ws?token=${await token("fan")}`);
    assert.equal(stopped.status, 101);
    const reading = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("fan")}`);
    const received: string[] = [];
    reading.ws.addEventListener("message", (e) => received.push((e.data as string).slice(0, 7)));

    const statuses = await burst(port, "fan", count, 16 * 1024, 64);
    assert.deepEqual(statuses, statuses.map(() => 200), "every send found the reading tab");
    await eventually(
      () => received.length === count,
      30_000,
      "the reading tab to get every message",
    );
    // Requests in flight together reach the server in any order: each message once is the claim.
    assert.deepEqual(received.toSorted(), received.map((_, i) => String(i).padStart(7, "0")));
    assert.equal(reading.ws.readyState, WebSocket.OPEN);

    // The stopped tab stays more than MAX_QUEUE_BYTES behind for SLOW_CONSUMER_TIMEOUT: cut off.
    await until(async () => await metric(port, "slow_consumers_total") === 1, "the cut");
    const end = await readToEnd(stopped);
    assert.deepEqual(end.close, { code: 4008, reason: "slow consumer" }, "a close frame, last");
    assert.equal(end.frames.at(-1)?.opcode, 8);
    assert.equal(await metric(port, "connections"), 1);
    await reading[Symbol.asyncDispose]();
  });
});

/**
 * A tmpfs of `size` (e.g. "2m") mounted on a new temporary folder, unmounted on dispose; undefined
 * (and the test skipped, loudly) where this machine allows no mount. Under CI=true a machine that
 * cannot mount fails the test instead: CI runs as root, where it can.
 */
function mountTmpfs(t: TestContext, size: string, readOnly = false) {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-tmpfs-"));
  try {
    execFileSync("mount", [
      "-t",
      "tmpfs",
      "-o",
      `size=${size}${readOnly ? ",ro" : ""}`,
      "tmpfs",
      dir,
    ], {
      stdio: "pipe",
    });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const why = `SKIP: cannot mount a tmpfs here (${String(err).split("\n")[0]}); run as root`;
    if (process.env.CI === "true") assert.fail(why);
    console.log(why);
    t.skip(why);
    return undefined;
  }
  return {
    dir,
    [Symbol.dispose]() {
      execFileSync("umount", ["-l", dir], { stdio: "pipe" });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes `path` until the file system is full. */
function fill(path: string): void {
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) appendFileSync(path, chunk);
  } catch (err) {
    if ((err as { code?: string }).code !== "ENOSPC") throw err;
  }
}

/** Rows in the message log at `path`, read by a connection of the test's own. */
function rows(path: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

test("a read-only data directory stops start-up with one line that names it and says why", async (t) => {
  using disk = mountTmpfs(t, "1m", true);
  if (!disk) return;
  const dataDir = join(disk.dir, "data");
  const ran = await runProgram(["--port", "0", "--data-dir", dataDir]);
  assert.equal(ran.code, 1);
  const line = ran.stderr.trim();
  assert.ok(line.includes(`cannot use the data directory ${dataDir}`), line);
  assert.match(line, /read-only file system/);
  assert.equal(line.split("\n").length, 1, line);
});

test("a full disk without history: sends answer 503 once the log cannot write, the log names the file and the cause, and every accepted row lands once there is room", async (t) => {
  using disk = mountTmpfs(t, "4m");
  if (!disk) return;
  const dataDir = join(disk.dir, "data");
  const db = join(dataDir, "messages.db");
  const args = ["--data-dir", dataDir, "--log-flush-ms", "20", "--history-size", "0"];
  await withProgram(args, async (port, started) => {
    const tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("disk")}`);
    const filler = join(disk.dir, "filler");
    fill(filler);
    const message = "m".repeat(8000);
    let accepted = 0;
    let refused: string | undefined;
    // The log's batch fails within LOG_FLUSH_MS of the first message that does not fit; from then
    // on sends are refused rather than promised a record that is not kept.
    for (let i = 0; i < 400 && !refused; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/send?uid=disk&message=${message}`);
      if (res.status === 503) refused = (await res.json()).error;
      else {
        assert.equal(res.status, 200);
        await res.body?.cancel();
        assert.equal((await tab.next()).length, message.length);
        accepted++;
      }
    }
    assert.ok(refused, "a log that cannot write refuses sends");
    assert.match(refused, /^the message log cannot keep messages now: .*messages\.db.*full/);
    await started.printed(/message log: [^\n]*messages\.db: database or disk is full/);
    assert.ok(started.output().includes(`message log: ${db}`), "the line names the file");
    assert.doesNotMatch(started.output(), /cannot rollback/);
    assert.ok(await metric(port, "message_log_write_errors_total") >= 1);
    assert.ok(await metric(port, "message_log_backlog") >= 1);

    rmSync(filler);
    await until(async () => await metric(port, "message_log_backlog") === 0, "the backlog to land");
    assert.equal(rows(db), accepted, "every accepted message is in the log");
    assert.equal(await metric(port, "message_log_dropped_total"), 0);
    const after = await fetch(`http://127.0.0.1:${port}/send?uid=disk&message=after`);
    assert.equal(after.status, 200, "sends are taken again");
    await after.body?.cancel();
    await tab[Symbol.asyncDispose]();
  });
});

test("a full disk with history: sends answer 503 and push nothing, then work again once there is room", async (t) => {
  using disk = mountTmpfs(t, "4m");
  if (!disk) return;
  const dataDir = join(disk.dir, "data");
  await withProgram(["--data-dir", dataDir], async (port) => {
    const tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("disk")}`);
    const send = (message: string) =>
      fetch(`http://127.0.0.1:${port}/send`, {
        method: "POST",
        body: new URLSearchParams({ uid: "disk", message }),
      });
    const filler = join(disk.dir, "filler");
    fill(filler);
    let refused: Response | undefined;
    // The file's free pages take a few messages; then the disk is full.
    for (let i = 0; i < 200 && !refused; i++) {
      const res = await send(`${i}:${"m".repeat(8000)}`);
      if (res.status === 503) refused = res;
      else {
        assert.equal(res.status, 200);
        await res.body?.cancel();
        assert.match(await tab.next(), new RegExp(`^${i}:`));
      }
    }
    assert.ok(refused, "a full disk refuses a send it cannot keep");
    const { error } = await refused.json();
    assert.match(error, /^the history store cannot keep messages now: .*history\.db.*full/);
    rmSync(filler);
    const after = await send("after");
    assert.equal(after.status, 200, await after.text());
    assert.equal(await tab.next(), "after", "the refused one was never pushed");
    await tab[Symbol.asyncDispose]();
  });
});

test("a message log deleted while the server runs is noticed, said, and replaced by a new one", async () => {
  await withProgram(["--log-flush-ms", "20"], async (port, started) => {
    const db = join(started.dir, "data", "messages.db");
    const send = async (text: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/send?uid=nobody&message=${text}`);
      assert.equal(res.status, 404); // an offline uid: logged as offline all the same
      await res.body?.cancel();
    };
    await send("before");
    await eventually(() => existsSync(db) && rows(db) === 1, 10_000, "the first row");
    for (const suffix of ["", "-wal", "-shm"]) rmSync(db + suffix, { force: true });
    await send("after");
    await started.printed(/was deleted or replaced while the server ran/);
    assert.ok(started.output().includes(`message log: ${db} was deleted`), started.output());
    await eventually(() => existsSync(db) && rows(db) === 1, 10_000, "the row in the new file");
    assert.ok(await metric(port, "message_log_write_errors_total") >= 1);
  });
});

/** Descriptors the program holds, read from /proc (Linux). */
function descriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * Opens `count` TCP connections that send nothing (`raw`) or one request each and then hold the
 * connection open (`keepAlive`); resolves once all are connected or refused, with a promise that
 * resolves when the server has closed every one of them.
 */
async function flood(port: number, count: number, kind: "raw" | "keepAlive") {
  const closed: Promise<void>[] = [];
  const sockets: TcpSocket[] = [];
  for (let batch = 0; batch < count; batch += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, count - batch) }, () =>
        new Promise<void>((connected) => {
          const socket = tcpConnect({ host: "127.0.0.1", port }, () => {
            if (kind === "keepAlive") socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            connected();
          });
          sockets.push(socket);
          socket.on("data", () => {}); // read the answer, keep the connection
          socket.on("error", () => connected()); // refused or reset: closed all the same
          closed.push(new Promise((done) => socket.on("close", () => done())));
        })),
    );
  }
  return { sockets, allClosed: Promise.all(closed) };
}

test("connections that never send, and kept-alive ones, cannot use up the descriptors: the server lives and recovers", async () => {
  // 1024 descriptors: MAX_CONNECTIONS=auto is 512 WebSockets.
  await withProgram(["--max-connects-per-ip", "0"], async (port, started) => {
    const pid = started.child.pid!;
    const tabs = [];
    for (let i = 0; i < 300; i++) {
      const held = await token(`held${i}`, { groups: ["herd"] });
      tabs.push(await connectClient(`ws://127.0.0.1:${port}/ws?token=${held}`));
    }
    // 300 + 900 connections: more than the 1024 descriptors allow.
    const raw = await flood(port, 450, "raw");
    const kept = await flood(port, 450, "keepAlive");
    // (Bun lets its descriptors reach the limit and retries the accepts that fail meanwhile; the
    // Deno run closes connections past its TCP cap at once. Either way it must live and recover.)
    // Each idle connection is closed by a timeout of the server's (Bun's own or Deno's
    // HEADERS_TIMEOUT_MS and KEEP_ALIVE_TIMEOUT_MS), or refused at once past the TCP cap.
    // Bun accepts what waits in the listen backlog as descriptors free up, and each then has its
    // own timeout: a few rounds of about 10 s.
    await within(60_000, "the idle connections to be closed", raw.allClosed);
    await within(60_000, "the kept-alive connections to be closed", kept.allClosed);
    assert.equal(started.child.exitCode, null, "still running");
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    const sent = await fetch(`http://127.0.0.1:${port}/api/groups/herd/send`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message: "still" }),
    });
    assert.equal((await sent.json()).delivered, 300, "every tab kept its connection");
    for (const tab of tabs) assert.equal(await tab.next(), "still");
    assert.ok(descriptors(pid) < 300 + 64, `${descriptors(pid)} descriptors after the flood`);
    for (const tab of tabs) await tab[Symbol.asyncDispose]();
  }, { openFiles: 1024 });
});

test("a close the client never answers ends within seconds: its slot is free again", async () => {
  await withProgram(["--max-connections", "2"], async (port) => {
    const silent = [];
    for (let i = 0; i < 2; i++) {
      const raw = await rawUpgrade(port, `/ws?format=json&token=${await token("mute")}`);
      assert.equal(raw.status, 101);
      silent.push(raw);
    }
    const refused = await rawUpgrade(port, `/ws?token=${await token("other")}`);
    assert.equal(refused.status, 503);
    // The server closes both (4009); the clients read nothing and never answer.
    // (They read, so that the end of the stream reaches them, but never send a byte.)
    const closed = silent.map((raw) => new Promise((done) => raw.socket.once("close", done)));
    for (const raw of silent) raw.socket.resume();
    const logout = await fetch(`http://127.0.0.1:${port}/api/uids/mute`, { method: "DELETE" });
    assert.equal((await logout.json()).closed, 2);
    await within(15_000, "the server to drop the silent connections", Promise.all(closed));
    await until(async () => await metric(port, "connections") === 0, "the slots to free");
    const other = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("other")}`);
    await other[Symbol.asyncDispose]();
  });
});

/** One client frame as RFC 6455 builds it: masked (unless told not to), final unless `fin` is false. */
function wsFrame(opcode: number, payload: Buffer, options: { mask?: boolean; fin?: boolean } = {}) {
  const { mask = true, fin = true } = options;
  const length = payload.length < 126
    ? [payload.length]
    : payload.length < 65536
    ? [126, payload.length >> 8, payload.length & 0xff]
    : [
      127,
      ...Array.from(
        { length: 8 },
        (_, i) => Number((BigInt(payload.length) >> BigInt(8 * (7 - i))) & 0xffn),
      ),
    ];
  const head = Buffer.from([
    (fin ? 0x80 : 0) | opcode,
    (mask ? 0x80 : 0) | length[0],
    ...length.slice(1),
  ]);
  if (!mask) return Buffer.concat([head, payload]);
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  return Buffer.concat([head, key, payload.map((b, i) => b ^ key[i % 4])]);
}

const text = (s: string) => Buffer.from(s);

test("hostile frames each get the close code RFC 6455 gives them, and the server serves on", async () => {
  // MAX_FRAMES_PER_SECOND 20 and MAX_FRAME_BYTES 16 KiB, the defaults.
  await withProgram(["--max-connects-per-ip", "0"], async (port) => {
    const bystander = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("calm")}`);
    const cases: [string, Buffer, number][] = [
      ["50 frames in one segment", Buffer.concat(Array(50).fill(wsFrame(1, text("ping")))), 1008],
      ["100 pings in one segment", Buffer.concat(Array(100).fill(wsFrame(9, text("p")))), 1008],
      ["invalid UTF-8 in a text frame", wsFrame(1, Buffer.from([0x68, 0xff, 0xfe, 0x69])), 1007],
      ["a ping of 126 bytes", wsFrame(9, Buffer.alloc(126, 0x61)), 1002],
      ["reserved opcode 3", wsFrame(3, text("x")), 1002],
      ["an unmasked frame", wsFrame(1, text("ping"), { mask: false }), 1002],
      [
        "a message in fragments past MAX_FRAME_BYTES",
        Buffer.concat([
          wsFrame(1, Buffer.alloc(10_000, 0x61), { fin: false }),
          wsFrame(0, Buffer.alloc(10_000, 0x61), { fin: false }),
        ]),
        1009,
      ],
    ];
    for (const [what, bytes, code] of cases) {
      const raw = await rawUpgrade(port, `/ws?token=${await token("hostile")}`);
      assert.equal(raw.status, 101, what);
      raw.socket.write(bytes);
      const end = await readToEnd(raw);
      assert.equal(end.close?.code, code, `${what}: ${JSON.stringify(end.close)}`);
      assert.equal(end.frames.at(-1)?.opcode, 8, `${what}: the close frame comes last`);
      const sent = await fetch(
        `http://127.0.0.1:${port}/send?uid=calm&message=${encodeURIComponent(what)}`,
      );
      assert.equal((await sent.json()).delivered, 1, what);
      assert.equal(await bystander.next(), what);
    }
    await bystander[Symbol.asyncDispose]();
  });
});

test("fragments that never end are cut off at MAX_FRAME_BYTES, however many connections send them", async () => {
  await withProgram(["--max-connects-per-ip", "0"], async (port, started) => {
    const pid = started.child.pid!;
    const rss = () =>
      Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
    const before = rss();
    // 8 connections each try to send 8 MB of a message that never ends: the server must close
    // each at 16 KiB, so the bytes it takes are bounded, whatever the senders send.
    const ends = await Promise.all(Array.from({ length: 8 }, async () => {
      const raw = await rawUpgrade(port, `/ws?token=${await token("frag")}`);
      let ended = false;
      const end = readToEnd(raw, 30_000, () => ended = true);
      const write = (frame: Buffer) =>
        new Promise<void>((written) => raw.socket.write(frame, () => written()));
      await write(wsFrame(1, Buffer.alloc(8_000, 0x61), { fin: false }));
      // One fragment at a time, each once the last has gone, until the server's close comes.
      for (let i = 0; i < 1000 && !ended; i++) {
        await write(wsFrame(0, Buffer.alloc(8_000, 0x61), { fin: false }));
      }
      return await end;
    }));
    for (const end of ends) assert.equal(end.close?.code, 1009);
    assert.ok(rss() - before < 32 * 1024, `RSS grew by ${rss() - before} KiB`);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  });
});

test("memory stays bounded under connect-and-drop churn, whether clients close cleanly or vanish", async () => {
  await withProgram(["--max-connects-per-ip", "0"], async (port, started) => {
    const pid = started.child.pid!;
    const rss = () =>
      Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
    const churnToken = await token("churn");
    let next = 0;
    /** `cycles` connections, 50 at a time: every other one closes cleanly, the rest vanish. */
    const churn = (cycles: number) =>
      Promise.all(Array.from({ length: 50 }, async () => {
        while (next < cycles) {
          const clean = next++ % 2 === 0;
          const raw = await rawUpgrade(port, `/ws?token=${churnToken}`);
          assert.equal(raw.status, 101);
          if (!clean) raw.socket.destroy();
          else {
            raw.socket.write(wsFrame(8, Buffer.from([0x03, 0xe8])));
            await readToEnd(raw);
          }
        }
      }));
    // The first round warms the heap up; the next rounds must not keep what went before (the Deno
    // run used to hold every vanished connection for half IDLE_TIMEOUT, about 6 KB each).
    await churn(5_000);
    const warm = rss();
    await churn(25_000);
    const grown = rss() - warm;
    assert.ok(grown < 64 * 1024, `RSS grew by ${grown} KiB over 20,000 more connections`);
    await until(async () => await metric(port, "connections") === 0, "every connection to go");
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  });
});
