/**
 * The SQLite history store on a real file: the contract every store keeps, then what only a file
 * can show (a restart, group commit, a commit the file refuses).
 */
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { historyContract } from "./history_contract.ts";
import { SqliteHistory, type SqliteHistoryOptions } from "./history_sqlite.ts";
import { type Publication, uidStream } from "./stream.ts";
import { inFile, storeOnTemporaryFile, temporaryFile, until } from "../testkit.ts";

/** A store on a new file; disposing of it closes the store and removes the file. */
function openStore(options: SqliteHistoryOptions) {
  const opened = storeOnTemporaryFile(
    "history.db",
    (path) => new SqliteHistory(path, { sweepMs: 0, ...options }),
  );
  return { ...opened, sweep: () => opened.store.sweep() };
}

historyContract("sqlite", openStore);

const ALICE = uidStream("alice");
const pub = (id: number, stream = ALICE, ts = Date.now()): Publication => ({
  id,
  stream,
  data: `message ${id}`,
  ts,
});

test("sqlite: a restart on the same file finds what was kept, pending appends included, and what was trimmed stays trimmed", async () => {
  using file = temporaryFile("history.db");
  const ts = Date.now();
  const first = new SqliteHistory(file.path, { size: 3, ttl: 3600, sweepMs: 0 });
  await Promise.all([1, 2, 3, 4, 5].map((id) => first.append(pub(id, ALICE, ts))));
  const unwaited = first.append(pub(6, uidStream("bob"), ts));
  await first.close(); // commits it
  await unwaited;

  const second = new SqliteHistory(file.path, { size: 3, ttl: 3600, sweepMs: 0 });
  const page = await second.read(ALICE, 0, 10);
  assert.deepEqual(page.publications.map((p) => p.id), [3, 4, 5]);
  assert.equal(page.recovered, false);
  assert.equal((await second.read(ALICE, 2, 10)).recovered, true, "the mark survived: it is 2");
  assert.deepEqual((await second.read(uidStream("bob"), 0, 10)).publications, [
    pub(6, uidStream("bob"), ts),
  ]);
  await second.append(pub(7, ALICE, ts));
  assert.deepEqual(inFile(file.path, "SELECT id FROM history WHERE stream = 'uid:alice'"), [
    { id: 4 },
    { id: 5 },
    { id: 7 },
  ], "the file holds the newest three, not more");
  assert.deepEqual(inFile(file.path, "SELECT * FROM history_streams ORDER BY stream"), [
    { stream: "uid:alice", kept: 3, trimmed: 3 },
    { stream: "uid:bob", kept: 1, trimmed: 0 },
  ]);
  await second.close();
});

test("sqlite: appends made together land in one transaction, and a full batch commits at once", async () => {
  await using h = openStore({ size: 1000, ttl: 3600 });
  await Promise.all(Array.from({ length: 300 }, (_, i) => h.store.append(pub(i + 1))));
  assert.deepEqual(h.store.stats(), { batches: 1, failedBatches: 0 });
  await h.store.append(pub(301));
  assert.deepEqual(h.store.stats(), { batches: 2, failedBatches: 0 });

  await using small = openStore({ size: 1000, ttl: 3600, maxBatchRows: 10 });
  const pending = Array.from({ length: 25 }, (_, i) => small.store.append(pub(i + 1)));
  assert.equal(small.store.stats().batches, 2, "two full batches committed before any timer ran");
  await Promise.all(pending);
  assert.equal(small.store.stats().batches, 3, "the last five went by the timer");
  assert.equal((await small.store.read(ALICE, 0, 100)).publications.length, 25);
});

test("sqlite: while another process holds the write lock, every waiting append rejects naming the file; later ones land", async () => {
  await using h = openStore({ size: 1000, ttl: 3600 });
  await h.store.append(pub(1));
  const holder = new DatabaseSync(h.path);
  holder.exec("BEGIN IMMEDIATE");
  const results = await Promise.allSettled([h.store.append(pub(2)), h.store.append(pub(3))]);
  for (const result of results) {
    assert.equal(result.status, "rejected");
    const { message } = (result as PromiseRejectedResult).reason as Error;
    assert.ok(message.includes(h.path), `names the file: ${message}`);
    assert.match(message, /cannot commit 2 appends: database is locked/);
  }
  assert.deepEqual(h.store.stats(), { batches: 1, failedBatches: 1 });
  // Reads go on while the file cannot be written.
  assert.deepEqual((await h.store.read(ALICE, 0, 10)).publications.map((p) => p.id), [1]);
  holder.exec("ROLLBACK");
  holder.close();
  await h.store.append(pub(4));
  const page = await h.store.read(ALICE, 0, 10);
  assert.deepEqual(page.publications.map((p) => p.id), [1, 4], "the refused ones were not kept");
  assert.equal(page.recovered, true, "nothing was trimmed: what was refused was never kept");
});

test("sqlite: a sweep deletes the expired rows of streams nobody writes to, and raises their marks", async () => {
  let now = 1_700_000_000_000;
  await using h = openStore({ size: 1000, ttl: 60, now: () => now });
  await Promise.all([
    h.store.append(pub(1, ALICE, now)),
    h.store.append(pub(2, uidStream("bob"), now)),
  ]);
  now += 30_000;
  await h.store.append(pub(3, ALICE, now));
  now += 31_000;
  h.store.sweep();
  assert.deepEqual(inFile(h.path, "SELECT stream, id FROM history ORDER BY id"), [
    { stream: "uid:alice", id: 3 },
  ]);
  assert.deepEqual(inFile(h.path, "SELECT * FROM history_streams ORDER BY stream"), [
    { stream: "uid:alice", kept: 1, trimmed: 1 },
    { stream: "uid:bob", kept: 0, trimmed: 2 },
  ]);
});

test("sqlite: a file written by a newer build is refused, naming the file", () => {
  using file = temporaryFile("history.db");
  mkdirSync(dirname(file.path));
  const db = new DatabaseSync(file.path);
  db.exec("PRAGMA user_version = 99");
  db.close();
  assert.throws(
    () => new SqliteHistory(file.path, { size: 10, ttl: 10, sweepMs: 0 }),
    (err: Error) =>
      err.message.includes(file.path) && /schema 99 is newer than this build's/.test(err.message),
  );
});

test("sqlite: a new file answers for nothing before its floor: a reader from an older id is told recovered=false", async () => {
  await using h = openStore({ size: 10, ttl: 3600, floor: 100 });
  await h.store.append(pub(101));
  const old = await h.store.read(ALICE, 50, 10);
  assert.deepEqual([old.publications.map((p) => p.id), old.recovered], [[101], false]);
  const fresh = await h.store.read(ALICE, 100, 10);
  assert.deepEqual([fresh.publications.map((p) => p.id), fresh.recovered], [[101], true]);
});

test("sqlite: a file deleted while the store runs is made again, said, and answers recovered=false from before", async () => {
  const told: Error[] = [];
  await using h = openStore({ size: 10, ttl: 3600, onError: (e) => told.push(e) });
  await h.store.append(pub(1));
  await h.store.append(pub(2));
  for (const suffix of ["", "-wal", "-shm"]) rmSync(h.path + suffix, { force: true });
  await h.store.append(pub(3));
  assert.equal(told.length, 1);
  assert.match(told[0].message, /was deleted or replaced while the server ran/);
  assert.ok(told[0].message.includes(h.path));
  assert.deepEqual(inFile(h.path, "SELECT id FROM history"), [{ id: 3 }], "the new file has it");
  const page = await h.store.read(ALICE, 0, 10);
  assert.deepEqual([page.publications.map((p) => p.id), page.recovered], [[3], false]);
  assert.equal((await h.store.read(ALICE, 2, 10)).recovered, true);
});

test("sqlite: written marks survive a restart, also those noted after the last append", async () => {
  using file = temporaryFile("history.db");
  const first = new SqliteHistory(file.path, { size: 10, ttl: 3600, sweepMs: 0 });
  await first.append(pub(1));
  first.wrote("alice", 1);
  await first.append(pub(2));
  first.wrote("alice", 2);
  first.wrote("bob", 9); // no append follows: its own commit, at close at the latest
  await first.close();
  const second = new SqliteHistory(file.path, { size: 10, ttl: 3600, sweepMs: 0 });
  try {
    assert.equal(second.writtenThrough("alice"), 2);
    assert.equal(second.writtenThrough("bob"), 9);
    assert.deepEqual(inFile(file.path, "SELECT uid, id FROM history_marks ORDER BY uid"), [
      { uid: "alice", id: 2 },
      { uid: "bob", id: 9 },
    ]);
  } finally {
    await second.close();
  }
});

test("sqlite: a mark noted with nothing to append is committed within MARK_FLUSH_MS", async () => {
  using file = temporaryFile("history.db");
  const store = new SqliteHistory(file.path, { size: 10, ttl: 3600, sweepMs: 0 });
  try {
    store.wrote("carol", 4);
    await until(
      () => Promise.resolve(inFile(file.path, "SELECT id FROM history_marks").length === 1),
      "the mark in the file",
    );
    assert.deepEqual(inFile(file.path, "SELECT uid, id FROM history_marks"), [
      { uid: "carol", id: 4 },
    ]);
  } finally {
    await store.close();
  }
});

test("sqlite: a file of schema 3 gains the sender columns and keeps its rows", async () => {
  using file = temporaryFile("history.db");
  mkdirSync(dirname(file.path));
  const v3 = new DatabaseSync(file.path);
  v3.exec(`CREATE TABLE history (stream TEXT NOT NULL, id INTEGER NOT NULL, data TEXT NOT NULL,
    ts INTEGER NOT NULL, PRIMARY KEY (stream, id));
    INSERT INTO history VALUES ('uid:alice', 7, 'kept', ${Date.now()});
    PRAGMA user_version = 3;`);
  v3.close();
  const store = new SqliteHistory(file.path, { size: 10, ttl: 3600, sweepMs: 0 });
  try {
    await store.append({ ...pub(8), from: { uid: "bob", client: "c-2" } });
    const page = await store.read(ALICE, 0, 10);
    assert.deepEqual(page.publications.map((p) => [p.id, p.data, p.from]), [
      [7, "kept", undefined],
      [8, "message 8", { uid: "bob", client: "c-2" }],
    ]);
    assert.deepEqual(inFile(file.path, "PRAGMA user_version"), [{ user_version: 4 }]);
  } finally {
    await store.close();
  }
});
