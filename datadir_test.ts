/**
 * One server per data directory: a second is refused with a message naming the directory, and a
 * lock left by a process that is gone is taken over.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { LOCK_FILE, lockDataDir } from "./datadir.ts";
import { start } from "./main.ts";
import { startTestServer } from "./testkit.ts";

function withDir(story: (dir: string) => void | Promise<void>) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "deno-pusher-datadir-"));
    try {
      await story(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test("a second server on the same data directory is refused, naming it; once the first stops, it starts", async () => {
  await using first = await startTestServer({ messageLogger: "sqlite" });
  const dir = first.config.dataDir;
  await assert.rejects(start(first.config), {
    message: `the data directory ${dir} is in use by another deno-pusher (pid ${process.pid}, ` +
      `lock file ${join(dir, LOCK_FILE)}): stop that one, or give this one its own --data-dir`,
  });
  assert.equal(
    typeof (await first.send("u", "still served")).body.id,
    "number",
    "the first goes on",
  );
  await first.stop();
  assert.equal(existsSync(join(dir, LOCK_FILE)), false, "stop releases the lock");
  const second = await start(first.config);
  await second.stop();
});

test(
  "a lock left by a process that is gone is taken over",
  withDir((dir) => {
    const gone = spawnSync(process.execPath, ["--version"]).pid; // ran, exited, reaped
    writeFileSync(join(dir, LOCK_FILE), `${gone}\n`);
    const lock = lockDataDir(dir);
    assert.equal(readFileSync(join(dir, LOCK_FILE), "utf8"), `${process.pid}\n`);
    lock.release();
    assert.equal(existsSync(join(dir, LOCK_FILE)), false);
  }),
);

test(
  "a lock naming this process's pid that it does not hold is stale (a container restarted with the same pid)",
  withDir((dir) => {
    writeFileSync(join(dir, LOCK_FILE), `${process.pid}\n`);
    lockDataDir(dir).release();
  }),
);

test(
  "a lock held by another live process is respected",
  withDir(async (dir) => {
    const other = spawn("sleep", ["60"]);
    try {
      writeFileSync(join(dir, LOCK_FILE), `${other.pid}\n`);
      assert.throws(() => lockDataDir(dir), {
        message: new RegExp(
          `^the data directory ${dir} is in use by another deno-pusher \\(pid ${other.pid},`,
        ),
      });
      assert.equal(readFileSync(join(dir, LOCK_FILE), "utf8"), `${other.pid}\n`, "left as it was");
    } finally {
      const exited = new Promise((resolve) => other.on("exit", resolve));
      other.kill("SIGKILL");
      await exited;
    }
  }),
);
