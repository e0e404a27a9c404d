/**
 * Message ids stay unique and increasing whatever the clock does: within a run, across restarts and
 * crashes, and with loggers that keep no rows.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { defaultConfig } from "../config.ts";
import { start } from "../main.ts";
import { TEST_SECRET } from "../testkit.ts";
import { IDS_FILE, MessageIds } from "./ids.ts";

function increasing(ids: number[]) {
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i] > ids[i - 1], `id ${ids[i]} after ${ids[i - 1]} (${ids.join(", ")})`);
  }
}

function withDir(story: (dir: string) => void | Promise<void>) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "deno-pusher-ids-"));
    try {
      await story(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  "ids keep increasing when the clock is stepped back, within a run and across a restart",
  withDir((dir) => {
    let now = Date.UTC(2030, 0, 1);
    const first = new MessageIds(dir, { now: () => now });
    const ids = [first.next(), first.next()];
    now -= 3600_000; // the clock is set back an hour
    ids.push(first.next());
    const second = new MessageIds(dir, { now: () => now });
    ids.push(second.next(), second.next());
    increasing(ids);
    assert.equal(ids[0], Date.UTC(2030, 0, 1) * 1000 + 1, "a right clock: ids read as its µs");
  }),
);

test(
  "a crash never reuses an id: the mark on disk is ahead of every id handed out",
  withDir((dir) => {
    const crashed = new MessageIds(dir, { now: () => 0, block: 10 });
    const ids = Array.from({ length: 25 }, () => crashed.next()); // three blocks; never closed
    assert.ok(Number(readFileSync(join(dir, IDS_FILE), "utf8")) >= ids.at(-1)!);
    const restarted = new MessageIds(dir, { now: () => 0, block: 10 });
    ids.push(restarted.next());
    increasing(ids);
  }),
);

test(
  "ids start after the logger's last stored id when it is ahead of the mark and the clock",
  withDir((dir) => {
    const floor = Date.now() * 1000 + 5_000_000_000;
    assert.equal(new MessageIds(dir, { floor }).next(), floor + 1);
  }),
);

test(
  "a mark that is not a number stops start-up with a message naming the file",
  withDir((dir) => {
    writeFileSync(join(dir, IDS_FILE), "twelve\n");
    assert.throws(() => new MessageIds(dir), {
      message: `${join(dir, IDS_FILE)} should hold the highest message id used, a whole number, ` +
        `but holds "twelve\\n": write there a number at least as high as the last id used`,
    });
  }),
);

test(
  "with the stdout logger, a restart with the clock stepped back goes on from the last id",
  withDir(async (dataDir) => {
    const config = defaultConfig({
      host: "127.0.0.1",
      port: 0,
      jwtSecret: TEST_SECRET,
      messageLogger: "stdout",
      dataDir,
    });
    let now = Date.now();
    const printed: string[] = [];
    const stdout = (text: string) => printed.push(...text.split("\n"));
    const send = async (url: string) =>
      (await (await fetch(`${url}/send?uid=u&message=hi`)).json()).id as number;

    const first = await start(config, { clock: () => now, stdout });
    const ids = [await send(first.url), await send(first.url)];
    await first.stop();
    now -= 24 * 3600_000; // the clock is set back a day
    const second = await start(config, { clock: () => now, stdout });
    ids.push(await send(second.url));
    await second.stop();
    increasing(ids);
    const logged = printed.map((l) => JSON.parse(l)).filter((e) => e.event === "message");
    assert.deepEqual(logged.map((e) => e.id), ids, "the log has the same ids");
  }),
);
