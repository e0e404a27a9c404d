/** The SQLite message log on a real file. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { SqliteLogger } from "./sqlite.ts";
import { StdoutLogger } from "./stdout.ts";

const record = (id: number, status = "accepted" as const) => ({
  id,
  uid: "u",
  target: "uid:u",
  message: `m${id}`,
  createdAt: 1000 + id,
  status,
});

test("batches reach the file on flush; a status settled within a batch is written once", () => {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-sqlite-"));
  try {
    const path = join(dir, "nested", "messages.db");
    const logger = new SqliteLogger(path, 60_000, (err) => assert.fail(`${err}`));
    logger.log(record(1));
    logger.log(record(2));
    logger.setStatus(1, "delivered");
    const reader = new DatabaseSync(path);
    const count = () =>
      (reader.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n;
    assert.equal(count(), 0, "nothing is written before the batch");
    logger.flush();
    assert.equal(count(), 2);
    logger.setStatus(2, "dropped");
    logger.close();
    const rows = reader.prepare(
      "SELECT id, uid, message, created_at, status FROM messages ORDER BY id",
    )
      .all().map((r) => ({ ...r }));
    assert.deepEqual(rows, [
      { id: 1, uid: "u", message: "m1", created_at: 1001, status: "delivered" },
      { id: 2, uid: "u", message: "m2", created_at: 1002, status: "dropped" },
    ]);
    reader.close();

    const reopened = new SqliteLogger(path, 60_000, () => {});
    assert.equal(reopened.lastId(), 2, "the last id survives a restart");
    reopened.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the batch is written by its timer without anyone calling flush", async () => {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-sqlite-"));
  try {
    const path = join(dir, "messages.db");
    let flushed!: () => void;
    const written = new Promise<void>((resolve) => flushed = resolve);
    const logger = new (class extends SqliteLogger {
      override flush() {
        super.flush();
        flushed();
      }
    })(path, 10, () => {});
    logger.log(record(7));
    await written;
    const reader = new DatabaseSync(path);
    assert.deepEqual({ ...reader.prepare("SELECT status FROM messages WHERE id = 7").get() }, {
      status: "accepted",
    });
    reader.close();
    logger.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a write error goes to the error handler, not to the send path", () => {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-sqlite-"));
  try {
    const errors: unknown[] = [];
    const logger = new SqliteLogger(join(dir, "messages.db"), 60_000, (e) => errors.push(e));
    logger.log(record(1));
    logger.flush();
    logger.log(record(1)); // the same id again: the primary key refuses it
    logger.flush();
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /UNIQUE|constraint/i);
    logger.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the stdout logger prints one JSON line per record and per later status change", () => {
  const out: string[] = [];
  const logger = new StdoutLogger(60_000, () => {}, (text) => out.push(text));
  logger.log(record(1));
  logger.setStatus(1, "delivered");
  logger.flush();
  logger.setStatus(1, "dropped");
  logger.close();
  assert.deepEqual(out.flatMap((t) => t.split("\n")).map((l) => JSON.parse(l)), [
    { event: "message", ...record(1), status: "delivered" },
    { event: "status", id: 1, status: "dropped" },
  ]);
});

test("a log from the first schema is migrated: its rows keep their ids and gain a target", () => {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-sqlite-"));
  try {
    const path = join(dir, "messages.db");
    const v0 = new DatabaseSync(path);
    v0.exec(
      `CREATE TABLE messages (id INTEGER PRIMARY KEY, uid TEXT NOT NULL, message TEXT NOT NULL,
      created_at INTEGER NOT NULL, status TEXT NOT NULL, updated_at INTEGER NOT NULL);
      CREATE INDEX messages_uid_id ON messages (uid, id);
      INSERT INTO messages VALUES (41, 'u', 'old', 1, 'delivered', 2);`,
    );
    v0.close();
    const logger = new SqliteLogger(path, 60_000, (err) => assert.fail(`${err}`));
    assert.equal(logger.lastId(), 41);
    logger.log({ ...record(42), uid: null, target: "group:g" });
    logger.close();
    const db = new DatabaseSync(path);
    const rows = db.prepare("SELECT id, uid, target, status FROM messages ORDER BY id").all()
      .map((r) => ({ ...r }));
    assert.deepEqual(rows, [
      { id: 41, uid: "u", target: "uid:u", status: "delivered" },
      { id: 42, uid: null, target: "group:g", status: "accepted" },
    ]);
    db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
