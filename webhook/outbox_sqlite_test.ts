/**
 * The SQLite outbox on a real file: the contract every outbox keeps, then what only a file can
 * show (group commit at the next turn, a restart, the file's errors).
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { setImmediate } from "node:timers";
import { inFile, storeOnTemporaryFile, temporaryFile } from "../testkit.ts";
import { A, B, event, idsOf, NOW, outboxContract } from "./outbox_contract.ts";
import type { OutboxOptions } from "./outbox.ts";
import { SqliteOutbox, WEBHOOK_FILE } from "./outbox_sqlite.ts";

/**
 * Lets the group commit run: it waits in the event loop's immediate queue, and an immediate queued
 * after it runs after it (a timer of 0 ms could come first on a busy loop).
 */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** An outbox on a new file; disposing of it closes it and removes the file. */
function openOutbox(options: OutboxOptions = {}) {
  const opened = storeOnTemporaryFile(WEBHOOK_FILE, (path) => new SqliteOutbox(path, options));
  return { ...opened, settle: nextTurn };
}

outboxContract("sqlite outbox", openOutbox);

test("sqlite outbox: rows are written at the next turn, one per URL, and the file holds what size says", async () => {
  await using h = openOutbox({ maxEvents: 3 });
  h.store.add(event("e1", "alice"), [A, B]);
  h.store.add(event("e2", "alice"), [A, B]);
  assert.equal(h.store.size(), 4, "counted at once");
  assert.equal(inFile(h.path, "SELECT seq FROM webhook_outbox").length, 0, "not written yet");
  await nextTurn();
  assert.deepEqual(
    inFile(h.path, "SELECT url, key, created_at AS createdAt FROM webhook_outbox ORDER BY seq"),
    [B, A, B].map((url) => ({ url, key: "uid:alice", createdAt: NOW })),
    "the oldest row went for the bound",
  );
  assert.equal(h.store.size(), 3);
  await h.store.expire(NOW);
  assert.equal(inFile(h.path, "SELECT * FROM webhook_queues").length, 0, "no queue is left");
});

test("sqlite outbox: after a restart on the same file, the rows are found with their attempts and backoff", async () => {
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

test("sqlite outbox: errors name the file: a file it cannot open, a newer schema, a closed outbox", async () => {
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

  const closed = new SqliteOutbox(":memory:");
  await closed.close();
  await assert.rejects(closed.due(A, NOW, 1), /the webhook outbox :memory: is closed/);
});
