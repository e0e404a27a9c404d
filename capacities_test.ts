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

/** A new, empty directory, removed when the test is done with it. */
function directory() {
  const path = mkdtempSync(join(tmpdir(), "deno-pusher-capacities-"));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

test("capacities: bounds set and forgotten are what the next run reads", () => {
  using dir = directory();
  const first = new CapacityFile(dir.path);
  assert.deepEqual([...first.all], []);
  first.set("room-1", 3);
  first.set("room-2", 0);
  first.set("room-1", 5);
  first.set("room-3", 1);
  first.set("room-3", null);
  assert.deepEqual([...first.all], [["room-1", 5], ["room-2", 0]]);
  assert.deepEqual([...new CapacityFile(dir.path).all], [["room-1", 5], ["room-2", 0]]);
});

test("capacities: a file that is not theirs stops the start, naming it and what to do", () => {
  using dir = directory();
  const file = join(dir.path, CAPACITIES_FILE);
  for (const text of ["{", "[]", '{"version":1,"maxMembers":{"room":-1}}', '{"version":2}']) {
    writeFileSync(file, text);
    assert.throws(
      () => new CapacityFile(dir.path),
      (err: Error) => err.message.startsWith(file) && /mend it, or remove it/.test(err.message),
      text,
    );
  }
});

test("capacities: a bound that cannot be written is refused, naming the file, and not kept", () => {
  using dir = directory();
  const store = new CapacityFile(dir.path);
  store.set("room-1", 2);
  // The temporary file's name taken by a directory: the write fails as on a full disk.
  mkdirSync(join(dir.path, `${CAPACITIES_FILE}.tmp`));
  assert.throws(() => store.set("room-1", 9), new RegExp(`cannot write .*${CAPACITIES_FILE}`));
  assert.deepEqual([...store.all], [["room-1", 2]]);
  assert.match(readFileSync(join(dir.path, CAPACITIES_FILE), "utf8"), /"room-1":2/);
});
