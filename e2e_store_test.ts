/**
 * Black-box: one program per data directory. A second one on the same directory stops at start-up
 * with a message naming it; after the first is killed with SIGKILL, the next one takes its stale lock
 * over and its ids go on. Runs `main.ts` on the runtime running the tests, or the compiled
 * executable named by DENO_PUSHER_BIN.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SqliteLogger } from "./message/sqlite.ts";
import { DatabaseSync } from "node:sqlite";
import {
  inFile,
  killProgram,
  programMetric,
  runProgram,
  startProgram,
  stopProgram,
  until,
  withProgram,
} from "./testkit.ts";

const SECRET = "e2e-secret-0123456789abcdef0123456789";

/** /send's reply id for an offline uid (404 with the id). */
async function send(banner: string): Promise<number> {
  const port = Number(/listening on [^:]+:(\d+)/.exec(banner)![1]);
  return (await (await fetch(`http://127.0.0.1:${port}/send?uid=nobody&message=hi`)).json()).id;
}

test("a second program on a data directory in use is refused; after kill -9 the next takes over", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-data-"));
  const env = { DATA_DIR: dataDir, JWT_SECRET: SECRET };
  const args = ["--port", "0", "--message-logger", "none"];
  const first = await startProgram(args, env);
  try {
    const before = await send(first.banner);
    const refused = await runProgram(args, env);
    assert.equal(refused.code, 1);
    assert.ok(
      refused.stderr.includes(
        `the data directory ${dataDir} is in use by another deno-pusher (pid ${first.child.pid}, ` +
          `lock file ${join(dataDir, "deno-pusher.lock")}): stop that one, or give this one its ` +
          `own --data-dir`,
      ),
      refused.stderr,
    );
    assert.ok(before < await send(first.banner), "the first one still serves");

    await killProgram(first);
    assert.equal(readFileSync(join(dataDir, "deno-pusher.lock"), "utf8"), `${first.child.pid}\n`);
    const next = await startProgram(args, env);
    const after = await send(next.banner);
    assert.ok(after > before, `id ${after} after ${before}`);
    assert.ok(Number(readFileSync(join(dataDir, "message-ids"), "utf8")) >= after);
    assert.equal(await stopProgram(next), 0);
    assert.equal(existsSync(join(dataDir, "deno-pusher.lock")), false, "a clean stop unlocks");
  } finally {
    await killProgram(first);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("messages a killed run left accepted are marked interrupted at the next start, which says so", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-data-"));
  try {
    // What a run killed between accepting two messages and settling them leaves in its log.
    const dead = new SqliteLogger(join(dataDir, "messages.db"), 60_000, (e) => assert.fail(`${e}`));
    for (const id of [1, 2]) {
      dead.log({
        id,
        uid: "u",
        target: "uid:u",
        message: `m${id}`,
        createdAt: Date.now(),
        status: "accepted",
      });
    }
    dead.flush();
    const started = await startProgram([], { DATA_DIR: dataDir, JWT_SECRET: SECRET });
    try {
      await started.printed(/message log: 2 message\(s\) the last run left accepted/);
    } finally {
      await stopProgram(started);
    }
    dead.close();
    assert.deepEqual(inFile(join(dataDir, "messages.db"), "SELECT id, status FROM messages"), [
      { id: 1, status: "interrupted" },
      { id: 2, status: "interrupted" },
    ]);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("while the message log cannot write, sends answer 503 with no id; once it can, they go on and nothing accepted was lost", async () => {
  await withProgram(["--log-flush-ms", "20"], async (port, started) => {
    const url = `http://127.0.0.1:${port}`;
    const send = async (message: string) => {
      const res = await fetch(`${url}/send?uid=nobody&message=${message}`);
      return { status: res.status, body: await res.json() };
    };
    const accepted = await send("before");
    assert.equal(accepted.status, 404, "an offline uid, logged all the same");
    // Another process holds the log's write lock, as a backup tool or a stray sqlite3 shell can.
    const holder = new DatabaseSync(join(started.dir, "data", "messages.db"));
    holder.exec("BEGIN IMMEDIATE");
    let refused: { status: number; body: { error?: string; id?: number } } | undefined;
    const ids: number[] = [];
    try {
      await until(async () => {
        const res = await send("probe");
        if (res.body.id !== undefined) ids.push(res.body.id);
        if (res.status === 503) refused = res;
        return res.status === 503;
      }, "a 503 while the log is locked");
    } finally {
      holder.exec("ROLLBACK");
      holder.close();
    }
    assert.match(refused!.body.error!, /^the message log cannot keep messages now: .*locked/);
    assert.equal(refused!.body.id, undefined, "a refused send was given no id");
    await until(async () => (await send("after")).status === 404, "sends accepted again");
    // Every send that was answered with an id is in the log.
    for (const id of [accepted.body.id, ...ids]) {
      const res = await fetch(`${url}/api/messages/${id}`);
      assert.equal(res.status, 200, `message ${id} is in the log`);
      assert.equal((await res.json()).status, "offline");
    }
  });
});

test("the SQLite files are checkpointed off the event loop, by a worker the program (and the executable) carries", async () => {
  await withProgram([], async (port, started) => {
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/send?uid=nobody&message=m${i}`);
      await res.body?.cancel();
    }
    await until(
      async () => await programMetric(port, "sqlite_checkpoints_total") >= 6,
      "checkpoints by the worker",
    );
    assert.equal(await programMetric(port, "sqlite_checkpoint_errors_total"), 0);
    assert.doesNotMatch(started.output(), /checkpoint/);
  });
});
