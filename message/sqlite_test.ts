/** The SQLite message log on a real file, and what it does when the file cannot be written. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { eventually, inFile, startTestServer } from "../testkit.ts";
import { SqliteLogger } from "./sqlite.ts";
import { StdoutLogger } from "./stdout.ts";
import { WRITE_CHUNK } from "./logger.ts";

/**
 * A log file's place in a new temporary folder (removed with everything in it on dispose), and a
 * list for the errors its logger reports.
 */
function temporaryLog(): { dir: string; path: string; errors: Error[] } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-sqlite-"));
  return {
    dir,
    path: join(dir, "messages.db"),
    errors: [],
    [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }),
  };
}

const record = (id: number, status = "accepted" as const) => ({
  id,
  uid: "u",
  target: "uid:u",
  message: `m${id}`,
  createdAt: 1000 + id,
  status,
});

test("batches reach the file on flush; a status settled within a batch is written once", () => {
  using log = temporaryLog();
  const { dir } = log;
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
});

test("the batch is written by its timer without anyone calling flush", async () => {
  using log = temporaryLog();
  const { dir } = log;
  const path = join(dir, "messages.db");
  let flushed!: () => void;
  const written = new Promise<void>((resolve) => flushed = resolve);
  const logger = new (class extends SqliteLogger {
    protected override write(...batch: Parameters<SqliteLogger["write"]>) {
      super.write(...batch);
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
});

/** The rows of the log at `path`, read by a connection of its own. */
function rowsOf(path: string, columns = "id, message, status") {
  const db = new DatabaseSync(path);
  try {
    return db.prepare(`SELECT ${columns} FROM messages ORDER BY id`).all().map((r) => ({ ...r }));
  } finally {
    db.close();
  }
}

test("a record the file refuses is set apart and reported; the rest of its batch is written", () => {
  using log = temporaryLog();
  const { path, errors } = log;
  const logger = new SqliteLogger(path, 60_000, (e) => errors.push(e as Error));
  logger.log(record(1));
  logger.flush();
  logger.log(record(2));
  logger.log({ ...record(1), message: "again" }); // the same id again: the primary key refuses it
  logger.log(record(3));
  logger.flush();
  assert.equal(errors.length, 1, "one report, for the one refused record");
  assert.ok(errors[0].message.includes(path), `names the file: ${errors[0].message}`);
  assert.match(errors[0].message, /UNIQUE constraint failed.*record 1 can never be written/);
  // Later status changes land on the rows written with the refused one; the refused record's own
  // change does not touch the row that already had its id.
  logger.setStatus(2, "delivered");
  logger.setStatus(3, "offline");
  logger.setStatus(1, "dropped");
  logger.flush();
  assert.deepEqual(rowsOf(path), [
    { id: 1, message: "m1", status: "accepted" },
    { id: 2, message: "m2", status: "delivered" },
    { id: 3, message: "m3", status: "offline" },
  ]);
  assert.deepEqual(logger.stats(), {
    writeErrors: 0,
    rejected: 1,
    dropped: 0,
    backlog: 0,
    backlogBytes: 0,
  });
  logger.close();
});

test("a batch the file cannot take now (another connection holds the write lock) is written by a later try", async () => {
  using log = temporaryLog();
  const { path, errors } = log;
  const logger = new SqliteLogger(path, 10, (e) => errors.push(e as Error));
  logger.log(record(1));
  logger.flush();
  const holder = new DatabaseSync(path);
  holder.exec("BEGIN IMMEDIATE");
  logger.log(record(2));
  logger.log(record(3));
  logger.flush();
  assert.equal(errors.length, 1);
  assert.ok(errors[0].message.includes(path), `names the file: ${errors[0].message}`);
  assert.match(errors[0].message, /database is locked; 2 records and 0 status changes wait/);
  logger.setStatus(2, "delivered"); // settled while it waits
  holder.exec("COMMIT");
  const count = () =>
    (holder.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n;
  await eventually(() => count() === 3, 5000, "the retry to write the kept batch");
  holder.close();
  logger.setStatus(3, "offline"); // a status change after the retried batch lands too
  logger.flush();
  assert.deepEqual(rowsOf(path), [
    { id: 1, message: "m1", status: "accepted" },
    { id: 2, message: "m2", status: "delivered" },
    { id: 3, message: "m3", status: "offline" },
  ]);
  assert.ok(logger.stats().writeErrors >= 1);
  assert.equal(logger.stats().backlog, 0);
  logger.close();
});

test("a full disk is reported as such, naming the file, and the batch is written once there is room", () => {
  using log = temporaryLog();
  const { path, errors } = log;
  // SQLite's own size limit on the logger's connection: the file is "full" at its current size.
  const logger = new (class extends SqliteLogger {
    limitPages(pages: number | "current") {
      const n = pages === "current"
        ? (this.db.prepare("PRAGMA page_count").get() as { page_count: number }).page_count
        : pages;
      this.db.exec(`PRAGMA max_page_count = ${n}`);
    }
  })(path, 60_000, (e) => errors.push(e as Error));
  logger.log(record(1));
  logger.flush();
  logger.limitPages("current");
  logger.log({ ...record(2), message: "x".repeat(100_000) });
  logger.log(record(3));
  logger.flush();
  assert.equal(errors.length, 1);
  assert.ok(errors[0].message.includes(path), `names the file: ${errors[0].message}`);
  assert.match(errors[0].message, /database or disk is full/);
  assert.doesNotMatch(errors[0].message, /cannot rollback/);
  assert.equal(logger.stats().backlog, 2);
  logger.limitPages(1_000_000);
  logger.flush();
  assert.deepEqual(rowsOf(path, "id, length(message) AS bytes"), [
    { id: 1, bytes: 2 },
    { id: 2, bytes: 100_000 },
    { id: 3, bytes: 2 },
  ]);
  logger.close();
});

test("a log file deleted while the server runs is noticed: a new one is made and the batch lands there", () => {
  using log = temporaryLog();
  const { path, errors } = log;
  const logger = new SqliteLogger(path, 60_000, (e) => errors.push(e as Error));
  logger.log(record(1));
  logger.flush();
  for (const file of ["", "-wal", "-shm"]) rmSync(path + file, { force: true });
  logger.log(record(2));
  logger.flush();
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /was deleted or replaced while the server ran/);
  assert.ok(errors[0].message.includes(path), `names the file: ${errors[0].message}`);
  assert.equal(logger.stats().backlog, 1, "the batch waits for the new file");
  logger.flush();
  assert.deepEqual(rowsOf(path), [{ id: 2, message: "m2", status: "accepted" }]);
  assert.equal(errors.length, 1);
  logger.close();
});

test("while the file cannot write, the backlog stops at its bound: what fits is written later, the rest is counted", () => {
  using log = temporaryLog();
  const { path, errors } = log;
  // Bytes: a record of 1000 characters for uid:u costs 128 + 2 × (1000 + 6), so four fit.
  const bound = 10_000;
  const logger = new SqliteLogger(path, 60_000, (e) => errors.push(e as Error), bound);
  const holder = new DatabaseSync(path);
  holder.exec("BEGIN IMMEDIATE");
  for (let id = 1; id <= 10; id++) logger.log({ ...record(id), message: "x".repeat(1000) });
  logger.setStatus(3, "delivered"); // edits a waiting record: costs nothing
  logger.flush();
  assert.deepEqual(logger.stats(), {
    writeErrors: 1,
    rejected: 0,
    dropped: 6,
    backlog: 4,
    backlogBytes: 4 * (128 + 2 * 1006),
  });
  assert.match(
    errors[0].message,
    /backlog is full \(4 records and 0 status changes, 10000 bytes\)/,
  );
  assert.equal(errors.length, 2, "one report for the full backlog, one for the failed write");
  holder.exec("COMMIT");
  holder.close();
  logger.flush();
  logger.log(record(11)); // room again
  logger.close();
  assert.deepEqual(rowsOf(path, "id, status"), [
    { id: 1, status: "accepted" },
    { id: 2, status: "accepted" },
    { id: 3, status: "delivered" },
    { id: 4, status: "accepted" },
    { id: 11, status: "accepted" },
  ]);
  assert.equal(logger.stats().dropped, 6);
});

test("closing while the file cannot write reports what is lost", () => {
  using log = temporaryLog();
  const { path, errors } = log;
  const logger = new SqliteLogger(path, 60_000, (e) => errors.push(e as Error));
  const holder = new DatabaseSync(path);
  holder.exec("BEGIN IMMEDIATE");
  logger.log(record(1));
  logger.close();
  holder.exec("COMMIT");
  holder.close();
  assert.match(errors.at(-1)!.message, /closing with 1 record and 0 status changes unwritten/);
  assert.equal(logger.stats().dropped, 1);
  assert.deepEqual(rowsOf(path), []);
});

test("/metrics shows the message log's backlog and errors while its file is locked (sends answer 503), and their end", async () => {
  await using server = await startTestServer({ messageLogger: "sqlite", logFlushMs: 10 });
  const path = join(server.config.dataDir, "messages.db");
  const holder = new DatabaseSync(path);
  try {
    holder.exec("BEGIN IMMEDIATE");
    const sent = [(await server.send("u", "one")).body.id];
    await eventually(() => server.logger.stats!().writeErrors >= 1, 5000, "a failed write");
    assert.equal(await server.metric("message_log_backlog"), 1);
    // Meanwhile sends are refused rather than promised a record that is not kept.
    const refused = await server.send("u", "two");
    assert.equal(refused.status, 503);
    assert.match(String(refused.body.error), /^the message log cannot keep messages now: .*locked/);
    assert.ok(await server.metric("message_log_write_errors_total") >= 1);
    assert.equal(await server.metric("message_log_rejected_total"), 0);
    assert.equal(await server.metric("message_log_dropped_total"), 0);
    assert.ok(await server.metric("message_log_backlog_bytes") > 0);
    holder.exec("COMMIT");
    await eventually(() => server.logger.stats!().backlog === 0, 15_000, "the retry");
    assert.equal(await server.metric("message_log_backlog"), 0);
    assert.deepEqual(
      holder.prepare("SELECT id, status FROM messages ORDER BY id").all().map((r) => ({ ...r })),
      sent.map((id) => ({ id, status: "offline" })),
    );
  } finally {
    holder.close();
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
  using log = temporaryLog();
  const { dir } = log;
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
});

test("messages a crashed run left accepted are marked interrupted when the log opens again", () => {
  using log = temporaryLog();
  const { path, errors } = log;
  const first = new SqliteLogger(path, 60_000, (e) => errors.push(e as Error));
  first.log(record(1));
  first.log(record(2));
  first.setStatus(2, "delivered");
  first.log(record(3));
  first.flush(); // what a run that then died had written: 1 and 3 still accepted
  const again = new SqliteLogger(path, 60_000, (e) => errors.push(e as Error));
  assert.equal(again.interrupted, 2);
  assert.deepEqual(rowsOf(path), [
    { id: 1, message: "m1", status: "interrupted" },
    { id: 2, message: "m2", status: "delivered" },
    { id: 3, message: "m3", status: "interrupted" },
  ]);
  again.close();
  first.close();
  assert.deepEqual(errors, []);
});

test("a log from an older schema is rebuilt once to take the newer statuses; its rows and indexes stay", () => {
  using log = temporaryLog();
  const { path } = log;
  const v1 = new DatabaseSync(path);
  v1.exec(
    `CREATE TABLE messages (id INTEGER PRIMARY KEY, uid TEXT, target TEXT NOT NULL,
    message TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL
    CHECK (status IN ('accepted', 'delivered', 'offline', 'failed', 'dropped')),
    updated_at INTEGER NOT NULL);
    CREATE INDEX messages_uid_id ON messages (uid, id);
    CREATE INDEX messages_accepted ON messages (id) WHERE status = 'accepted';
    INSERT INTO messages VALUES (7, NULL, 'group:g', 'kept', 1, 'offline', 2);
    INSERT INTO messages VALUES (8, 'u', 'uid:u', 'cut short', 3, 'accepted', 4);
    PRAGMA user_version = 1;`,
  );
  v1.close();
  const logger = new SqliteLogger(path, 60_000, (err) => assert.fail(`${err}`));
  assert.equal(logger.lastId(), 8);
  assert.equal(logger.interrupted, 1);
  logger.close();
  assert.deepEqual(inFile(path, "SELECT id, target, status FROM messages ORDER BY id"), [
    { id: 7, target: "group:g", status: "offline" },
    { id: 8, target: "uid:u", status: "interrupted" },
  ]);
  assert.deepEqual(inFile(path, "PRAGMA user_version"), [{ user_version: 3 }]);
  assert.deepEqual(
    inFile(
      path,
      "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    ),
    [
      { name: "messages_accepted" },
      { name: "messages_queued" },
      { name: "messages_uid_id" },
    ],
    "the rebuilt table has every index",
  );
});

test("a timed flush writes a large backlog in chunks of WRITE_CHUNK, one turn of the event loop each", async () => {
  using log = temporaryLog();
  const sizes: number[] = [];
  let done!: () => void;
  const allWritten = new Promise<void>((resolve) => done = resolve);
  const logger = new (class extends SqliteLogger {
    protected override write(...batch: Parameters<SqliteLogger["write"]>) {
      super.write(...batch);
      sizes.push(batch[0].length + batch[1].size);
      if (sizes.reduce((a, b) => a + b, 0) === 600) done();
    }
  })(log.path, 10, (e) => log.errors.push(e as Error));
  for (let id = 1; id <= 600; id++) logger.log(record(id));
  await allWritten;
  const full = Math.floor(600 / WRITE_CHUNK);
  assert.deepEqual(sizes, [
    ...Array.from({ length: full }, () => WRITE_CHUNK),
    ...(600 % WRITE_CHUNK ? [600 % WRITE_CHUNK] : []),
  ]);
  assert.equal(rowsOf(log.path).length, 600);
  logger.close();
  assert.deepEqual(log.errors, []);
});
