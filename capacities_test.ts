/**
 * The groups' own bounds in the data directory, as an operator lives it: set, restarted, mended by
 * hand. (e2e_frames_test.ts tells the same through the API and a restart of the program.)
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CAPACITIES_FILE, CapacityFile } from "./capacities.ts";
import { Hub, StoreUnavailableError } from "./hub.ts";
import { NullLogger } from "./message/logger.ts";
import { Metrics } from "./metrics.ts";

/** A new, empty directory, removed when the test is done with it. */
function directory() {
  const path = mkdtempSync(join(tmpdir(), "deno-pusher-capacities-"));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

test("capacities: what was saved last is what the next run loads", () => {
  using dir = directory();
  const first = new CapacityFile(dir.path);
  assert.deepEqual([...first.load()], [], "no file yet: no bounds");
  first.save(new Map([["room-1", 3], ["room-3", 1]]));
  first.save(new Map([["room-1", 5], ["room-2", 0]]));
  assert.deepEqual([...new CapacityFile(dir.path).load()], [["room-1", 5], ["room-2", 0]]);
});

test("capacities: a file that is not theirs stops the start, naming it and what to do", () => {
  using dir = directory();
  const file = join(dir.path, CAPACITIES_FILE);
  for (const text of ["{", "[]", '{"version":1,"maxMembers":{"room":-1}}', '{"version":2}']) {
    writeFileSync(file, text);
    assert.throws(
      () => new CapacityFile(dir.path).load(),
      (err: Error) => err.message.startsWith(file) && /mend it, or remove it/.test(err.message),
      text,
    );
  }
});

test("capacities: bounds that cannot be written are refused, naming the file, which keeps the last saved", () => {
  using dir = directory();
  const store = new CapacityFile(dir.path);
  store.save(new Map([["room-1", 2]]));
  // The temporary file's name taken by a directory: the write fails as on a full disk.
  mkdirSync(join(dir.path, `${CAPACITIES_FILE}.tmp`));
  assert.throws(
    () => store.save(new Map([["room-1", 9]])),
    new RegExp(`cannot write .*${CAPACITIES_FILE}`),
  );
  assert.deepEqual([...store.load()], [["room-1", 2]]);
  assert.match(readFileSync(join(dir.path, CAPACITIES_FILE), "utf8"), /"room-1":2/);
});

test("capacities: the hub applies a bound only once the file has it, and says why when it cannot", async () => {
  using dir = directory();
  const store = new CapacityFile(dir.path);
  store.save(new Map([["room-1", 2]]));
  const hub = new Hub({
    logger: new NullLogger(),
    metrics: new Metrics(),
    maxQueueBytes: 1 << 20,
    maxGroupMembers: 50,
    capacities: { store, kept: store.load() },
  });
  assert.equal(hub.capacity("room-1"), 2, "what the file kept");
  await hub.setCapacity("room-2", 7);
  assert.deepEqual([...store.load()], [["room-1", 2], ["room-2", 7]]);
  mkdirSync(join(dir.path, `${CAPACITIES_FILE}.tmp`));
  await assert.rejects(hub.setCapacity("room-1", 9), (err) => {
    assert.ok(err instanceof StoreUnavailableError);
    assert.match(err.message, new RegExp(`cannot write .*${CAPACITIES_FILE}`));
    return true;
  });
  await assert.rejects(hub.setCapacity("room-2", null), StoreUnavailableError);
  assert.deepEqual(
    [hub.capacity("room-1"), hub.capacity("room-2"), hub.hasOwnCapacity("room-2")],
    [2, 7, true],
    "nothing changed",
  );
});
