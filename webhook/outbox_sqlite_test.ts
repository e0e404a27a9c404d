/**
 * The SQLite outbox on a real file: rows per URL and per uid queue, the order a failure keeps, a
 * restart, the bound, expiry, and errors that name the file.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { inFile, storeOnTemporaryFile, temporaryFile } from "../testkit.ts";
import type { WebhookEvent } from "./events.ts";
import type { OutboxOptions, OutboxRow } from "./outbox.ts";
import { SqliteOutbox, WEBHOOK_FILE } from "./outbox_sqlite.ts";

const A = "http://127.0.0.1:1/a";
const B = "http://127.0.0.1:1/b";
const NOW = 1_700_000_000_000;

/** An outbox on a new file; disposing of it closes it and removes the file. */
function openOutbox(options: OutboxOptions = {}) {
  return storeOnTemporaryFile(WEBHOOK_FILE, (path) => new SqliteOutbox(path, options));
}

/** An event `id` of `uid` (or of no uid), that happened at `ts`. */
function event(id: string, uid?: string, ts = NOW): WebhookEvent {
  return { id, type: "client.connect", ts, ...(uid === undefined ? {} : { uid }) };
}

/** The ids of the events of `rows`. */
const idsOf = (rows: readonly OutboxRow[]) =>
  rows.map((row) => (JSON.parse(row.json) as WebhookEvent).id);

/** Lets the next turn of the event loop (the group commit) run. */
const nextTurn = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

test("outbox: an event waits once per URL, written at the next turn, and comes due in order", async () => {
  await using h = openOutbox();
  h.store.add(event("e1", "alice"), [A, B]);
  h.store.add(event("e2", "alice"), [A, B]);
  assert.equal(h.store.size(), 4, "counted at once");
  assert.equal(inFile(h.path, "SELECT seq FROM webhook_outbox").length, 0, "not written yet");
  await nextTurn();
  assert.deepEqual(
    inFile(h.path, "SELECT url, key, created_at AS createdAt FROM webhook_outbox ORDER BY seq"),
    [A, B, A, B].map((url) => ({ url, key: "uid:alice", createdAt: NOW })),
  );
  const due = await h.store.due(A, NOW, 10);
  assert.deepEqual(idsOf(due), ["e1", "e2"]);
  assert.deepEqual(JSON.parse(due[0].json), event("e1", "alice"), "the event as it was added");
  assert.equal(due[0].attempts, 0);
  await h.store.delivered(A, due, NOW);
  assert.deepEqual(await h.store.due(A, NOW, 10), []);
  assert.equal(await h.store.nextDueAt(A), undefined, "A has nothing left");
  assert.deepEqual(idsOf(await h.store.due(B, NOW, 10)), ["e1", "e2"], "B has its own rows");
  assert.equal(h.store.size(), 2);
});

test("outbox: a uid's failed head blocks that uid's later events for that URL only; other uids go on", async () => {
  await using h = openOutbox();
  h.store.add(event("a1", "alice"), [A, B]);
  h.store.add(event("b1", "bob"), [A]);
  h.store.add(event("a2", "alice"), [A]);
  h.store.add(event("g1"), [A]); // no uid, no group: the queue of the others
  const first = await h.store.due(A, NOW, 1);
  assert.deepEqual(idsOf(first), ["a1"]);
  await h.store.retry(A, first, (attempts) => NOW + 1000 * attempts);

  h.store.add(event("a3", "alice"), [A]);
  assert.deepEqual(idsOf(await h.store.due(A, NOW, 10)), ["b1", "g1"], "alice waits, bob does not");
  assert.equal(await h.store.nextDueAt(A), 0, "bob's and the others' queues are due");
  assert.deepEqual(idsOf(await h.store.due(B, NOW, 10)), ["a1"], "B's alice is not held up");

  const again = await h.store.due(A, NOW + 1000, 10);
  assert.deepEqual(idsOf(again), ["b1", "g1", "a1", "a2", "a3"], "alice's whole queue, in order");
  assert.equal(again.find((row) => row.seq === first[0].seq)?.attempts, 1);
  const alice = again.filter((row) => row.key === "uid:alice");
  await h.store.retry(A, alice, (attempts) => NOW + 1000 * attempts);
  assert.deepEqual(
    inFile(
      h.path,
      "SELECT attempts FROM webhook_outbox WHERE url = 'http://127.0.0.1:1/a' ORDER BY seq",
    )
      .map((row) => row.attempts),
    [2, 0, 1, 0, 1],
    "each row counts its own failures; b1 and g1 never failed",
  );
  assert.equal(await h.store.nextDueAt(A), 0);
  await h.store.delivered(A, again.filter((row) => row.key !== "uid:alice"), NOW + 1000);
  assert.equal(await h.store.nextDueAt(A), NOW + 2000, "the head's second failure: 2 s");
});

test("outbox: a busy uid does not keep the others waiting: a queue left half delivered goes behind them", async () => {
  await using h = openOutbox();
  for (let i = 1; i <= 3; i++) h.store.add(event(`a${i}`, "alice"), [A]);
  h.store.add(event("b1", "bob"), [A]);
  const page = await h.store.due(A, NOW, 2);
  assert.deepEqual(idsOf(page), ["a1", "a2"]);
  await h.store.delivered(A, page, NOW);
  assert.deepEqual(idsOf(await h.store.due(A, NOW, 2)), ["b1", "a3"]);
});

test("outbox: after a restart on the same file, the rows are found with their attempts and backoff", async () => {
  using file = temporaryFile(WEBHOOK_FILE);
  const before = new SqliteOutbox(file.path);
  before.add(event("a1", "alice"), [A]);
  before.add(event("b1", "bob"), [A]);
  const rows = await before.due(A, NOW, 1);
  await before.retry(A, rows, () => NOW + 5000);
  before.add(event("c1", "carol"), [A]); // not written yet: close writes it
  await before.close();
  assert.throws(() => before.add(event("late"), [A]), /webhook outbox .*webhooks\.db is closed/);

  const after = new SqliteOutbox(file.path);
  try {
    assert.equal(after.size(), 3);
    assert.deepEqual(idsOf(await after.due(A, NOW, 10)), ["b1", "c1"]);
    const later = await after.due(A, NOW + 5000, 10);
    assert.deepEqual(idsOf(later), ["b1", "c1", "a1"]);
    assert.equal(later[2].attempts, 1);
  } finally {
    await after.close();
  }
});

test("outbox: past maxEvents the oldest rows go, counted and reported once per burst", async () => {
  const reports: string[] = [];
  await using h = openOutbox({ maxEvents: 10, onError: (err) => reports.push(err.message) });
  for (let i = 1; i <= 12; i++) h.store.add(event(`e${i}`, `u${i % 3}`), [A]);
  await nextTurn();
  assert.equal(h.store.size(), 10);
  assert.equal(h.store.stats().dropped, 2);
  const due = await h.store.due(A, NOW, 100);
  assert.deepEqual(idsOf(due).sort(), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((i) => `e${i}`).sort());
  assert.equal(reports.length, 1);
  assert.match(
    reports[0],
    /webhook outbox .*webhooks\.db is full \(10 events\): dropped the oldest 2/,
  );

  h.store.add(event("e13", "u1"), [A]);
  await nextTurn();
  assert.equal(h.store.stats().dropped, 3);
  assert.equal(reports.length, 1, "the same burst");

  await h.store.delivered(A, due.slice(0, 5), NOW); // back under 90%: the burst ended
  for (let i = 14; i <= 20; i++) h.store.add(event(`e${i}`, "u1"), [A]);
  await nextTurn();
  assert.equal(h.store.stats().dropped, 5);
  assert.equal(reports.length, 2, "a new burst is reported");
  assert.equal(
    inFile(h.path, "SELECT count(*) AS n FROM webhook_outbox")[0].n,
    10,
    "the file holds what size says",
  );
});

test("outbox: expire removes the events that happened at or before the cutoff, of every URL", async () => {
  await using h = openOutbox();
  h.store.add(event("old", "alice", NOW - 2000), [A, B]);
  h.store.add(event("new", "alice", NOW), [A, B]);
  const failed = await h.store.due(A, NOW, 10);
  await h.store.retry(A, failed, () => NOW + 60_000);
  assert.equal(await h.store.expire(NOW - 1000), 2);
  assert.equal(await h.store.expire(NOW - 1000), 0);
  assert.deepEqual(h.store.stats(), { rows: 2, dropped: 0, expired: 2 });
  assert.deepEqual(idsOf(await h.store.due(B, NOW, 10)), ["new"]);
  assert.deepEqual(idsOf(await h.store.due(A, NOW + 60_000, 10)), ["new"]);
  assert.equal(await h.store.expire(NOW), 2);
  assert.equal(await h.store.nextDueAt(A), undefined, "an emptied queue goes with its rows");
  assert.equal(inFile(h.path, "SELECT * FROM webhook_queues").length, 0);
});

test("outbox: an event that is no JSON is refused with a TypeError, and nothing is added", async () => {
  await using h = openOutbox();
  assert.throws(() => h.store.add({ ...event("e1"), n: 1n }, [A]), TypeError);
  assert.equal(h.store.size(), 0);
});

test("outbox: errors name the file: a file it cannot open, a newer schema, a closed outbox", async () => {
  using dir = temporaryFile("not-a-file");
  mkdirSync(dir.path, { recursive: true });
  assert.throws(() => new SqliteOutbox(dir.path), /cannot open the webhook outbox .*not-a-file/);

  using file = temporaryFile(WEBHOOK_FILE);
  await new SqliteOutbox(file.path).close();
  const db = new DatabaseSync(file.path);
  db.exec("PRAGMA user_version = 99");
  db.close();
  assert.throws(
    () => new SqliteOutbox(file.path),
    /cannot open the webhook outbox .*webhooks\.db: its schema 99 is newer/,
  );
  assert.throws(() => new SqliteOutbox(file.path, { maxEvents: 0 }), RangeError);

  const closed = new SqliteOutbox(":memory:");
  await closed.close();
  await assert.rejects(closed.due(A, NOW, 1), /the webhook outbox :memory: is closed/);
});
