/**
 * The SQLite idempotency store on a real file: the contract every store keeps, then what only a
 * file can show (a restart, the sweep, group commit, a commit the file refuses).
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { clock, idempotencyContract, sendRoute } from "./contract.ts";
import { IDEMPOTENCY_FILE, SqliteIdempotency, type SqliteIdempotencyOptions } from "./sqlite.ts";
import { inFile, storeOnTemporaryFile, temporaryFile } from "../testkit.ts";

/** A store on a new file; disposing of it closes the store and removes the file. */
function openStore(options: SqliteIdempotencyOptions) {
  const opened = storeOnTemporaryFile(
    IDEMPOTENCY_FILE,
    (path) => new SqliteIdempotency(path, { sweepMs: 0, ...options }),
  );
  return { ...opened, sweep: () => opened.store.sweepNow() };
}

idempotencyContract("sqlite", openStore);

test("sqlite: after a restart on the same file, a retry still gets the first answer; expired keys and requests in progress are not kept", async () => {
  const t = clock();
  using file = temporaryFile(IDEMPOTENCY_FILE);
  const before = new SqliteIdempotency(file.path, { ttl: 600, now: t.now, sweepMs: 0 });
  const route = sendRoute(before);
  await route.send("old", "hello");
  t.advance(300_000);
  await route.send("order-42", "hello");
  const finishing = await before.begin("key:alice /send", "order-43", "hello");
  const running = await before.begin("key:alice /send", "order-44", "hello");
  assert.equal(finishing.kind, "first");
  assert.equal(running.kind, "first");
  // Not waited for: close commits it.
  const unwaited = finishing.finish({ status: 200, body: { id: 3 } });
  await before.close();
  await unwaited;

  t.advance(300_000); // "old" is 600 s old now
  const after = new SqliteIdempotency(file.path, { ttl: 600, now: t.now, sweepMs: 0 });
  const again = sendRoute(after);
  again.pushed = 3;
  for (const key of ["order-42", "order-43"]) {
    const answer = await again.send(key, "hello");
    assert.equal((answer.body as { duplicate?: boolean }).duplicate, true, key);
  }
  assert.equal(again.pushed, 3, "nothing was pushed again");
  await again.send("old", "hello");
  await again.send("order-44", "hello");
  assert.equal(again.pushed, 5, "the expired key and the one in progress at the stop ran again");
  await after.close();
});

test("sqlite: a sweep deletes the expired rows from the file and keeps the fresh ones", async () => {
  const t = clock();
  await using h = openStore({ ttl: 60, now: t.now });
  const route = sendRoute(h.store);
  await route.send("a", "m");
  await route.send("b", "m");
  t.advance(30_000);
  await route.send("c", "m");
  t.advance(30_000);
  assert.equal(inFile(h.path, "SELECT key FROM idempotency").length, 3, "hidden, not deleted yet");
  h.sweep();
  assert.deepEqual(inFile(h.path, "SELECT key, status FROM idempotency"), [
    { key: "c", status: 200 },
  ]);
  assert.equal(h.store.stats().keys, 1);
});

test("sqlite: each batch deletes expired rows as it writes, so a busy server needs no sweep", async () => {
  const t = clock();
  await using h = openStore({ ttl: 60, now: t.now });
  const route = sendRoute(h.store);
  for (const key of ["a", "b", "c", "d"]) await route.send(key, "m");
  t.advance(60_000);
  await route.send("e", "m"); // deletes two expired rows
  assert.equal(inFile(h.path, "SELECT key FROM idempotency").length, 3);
  await route.send("f", "m"); // and two more
  assert.deepEqual(inFile(h.path, "SELECT key FROM idempotency ORDER BY key"), [
    { key: "e" },
    { key: "f" },
  ]);
});

test("sqlite: finishes made together land in one transaction, and a full batch commits at once", async () => {
  await using h = openStore({ ttl: 600, now: clock().now, maxBatchRows: 10 });
  const begun = await Promise.all(
    Array.from({ length: 25 }, (_, i) => h.store.begin("s", `k${i}`, "f")),
  );
  const finished = begun.map((b) => {
    assert.equal(b.kind, "first");
    return (b as Extract<typeof b, { kind: "first" }>).finish({ status: 200, body: { i: 1 } });
  });
  assert.equal(h.store.stats().batches, 2, "two full batches committed before any timer ran");
  await Promise.all(finished);
  assert.equal(h.store.stats().batches, 3, "the last five went by the timer");
  assert.equal(inFile(h.path, "SELECT key FROM idempotency").length, 25);
});

test("sqlite: while another process holds the write lock, finish rejects naming the file and the key is released; later ones land", async () => {
  await using h = openStore({ ttl: 600, now: clock().now });
  const holder = new DatabaseSync(h.path);
  holder.exec("BEGIN IMMEDIATE");
  const begun = await h.store.begin("s", "k", "f");
  assert.equal(begun.kind, "first");
  await assert.rejects(
    (begun as Extract<typeof begun, { kind: "first" }>).finish({ status: 200, body: {} }),
    (err: Error) => {
      assert.ok(err.message.includes(h.path), `names the file: ${err.message}`);
      assert.match(err.message, /cannot commit 1 answer: database is locked/);
      return true;
    },
  );
  assert.equal(h.store.stats().failedBatches, 1);
  assert.equal(h.store.stats().keys, 0);
  holder.exec("ROLLBACK");
  holder.close();
  const retry = await h.store.begin("s", "k", "f");
  assert.equal(retry.kind, "first", "the answer was not kept, so the retry runs");
  await (retry as Extract<typeof retry, { kind: "first" }>).finish({ status: 200, body: {} });
  assert.equal((await h.store.begin("s", "k", "f")).kind, "duplicate");
});

test("sqlite: the bound counts the rows a restart finds in the file", async () => {
  const t = clock();
  using file = temporaryFile(IDEMPOTENCY_FILE);
  const before = new SqliteIdempotency(file.path, { ttl: 600, now: t.now, sweepMs: 0 });
  const route = sendRoute(before);
  for (const key of ["a", "b", "c"]) {
    await route.send(key, "m");
    t.advance(1);
  }
  await before.close();
  const after = new SqliteIdempotency(file.path, {
    ttl: 600,
    now: t.now,
    sweepMs: 0,
    maxKeys: 2,
  });
  assert.equal(after.stats().keys, 3);
  await sendRoute(after).send("d", "m");
  assert.deepEqual(after.stats().evicted, 2);
  assert.deepEqual(inFile(file.path, "SELECT key FROM idempotency ORDER BY key"), [
    { key: "c" },
    { key: "d" },
  ]);
  await after.close();
});

test("sqlite: a file written by a newer build is refused, naming the file", () => {
  using file = temporaryFile(IDEMPOTENCY_FILE);
  new SqliteIdempotency(file.path, { ttl: 600, sweepMs: 0 }).close();
  const db = new DatabaseSync(file.path);
  db.exec("PRAGMA user_version = 2");
  db.close();
  assert.throws(
    () => new SqliteIdempotency(file.path, { ttl: 600, sweepMs: 0 }),
    (err: Error) =>
      err.message.includes(file.path) && /schema 2 is newer than this build's/.test(err.message),
  );
});
