/**
 * Hub paths that a real socket cannot be made to take on demand: a write that throws, and a buffer
 * that stays full for exactly as long as a test needs. These use a scripted Socket; everything
 * a real socket can show is tested in server_test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { HIGH_WATER_BYTES, type Socket } from "./client.ts";
import { Hub } from "./hub.ts";
import type { DeliveryStatus, MessageLogger, MessageRecord } from "./message/logger.ts";
import { Message } from "./message/message.ts";
import { Metrics } from "./metrics.ts";
import type { WebhookEvent } from "./webhook/events.ts";

/** A socket whose network the test stalls and lets flow, and whose writes it can break. */
class ScriptedSocket implements Socket {
  sent: string[] = [];
  buffered = 0;
  /** While stalled, the network takes nothing: every write stays in the buffer. */
  stalled = false;
  broken = false;
  closedWith: [number, string] | undefined;
  #onClose: ((closed: [number, string]) => void) | undefined;
  /** Resolves with the code and reason once the client closes the socket. */
  readonly closed = new Promise<[number, string]>((resolve) => this.#onClose = resolve);
  send(data: string) {
    if (this.broken) throw new Error("broken pipe");
    this.sent.push(data);
    if (this.stalled) this.buffered += data.length;
  }
  /** The network takes everything buffered. */
  flow() {
    this.stalled = false;
    this.buffered = 0;
  }
  /** How often the client asked; each ask is a call into the runtime on Deno. */
  reads = 0;
  bufferedAmount() {
    this.reads++;
    return this.buffered;
  }
  /** How often the client asked to be told when the buffer drained. */
  asks = 0;
  whenDrained() {
    this.asks++;
  }
  close(code: number, reason: string) {
    this.closedWith ??= [code, reason];
    this.#onClose!(this.closedWith);
  }
}

/** Keeps what it is told in memory, so the test can read statuses synchronously. */
class MemoryLogger implements MessageLogger {
  records = new Map<number, MessageRecord>();
  log(r: MessageRecord) {
    this.records.set(r.id, { ...r });
  }
  setStatus(id: number, status: DeliveryStatus) {
    this.records.get(id)!.status = status;
  }
  addWritten(id: number, n: number) {
    const record = this.records.get(id)!;
    record.written = (record.written ?? 0) + n;
  }
  ack() {}
  lastId() {
    return 0;
  }
  flush() {}
  close() {}
}

function hub(maxQueueBytes = 1024 * 1024, slowConsumerTimeout?: number) {
  const logger = new MemoryLogger();
  const metrics = new Metrics();
  const errors: unknown[] = [];
  const h = new Hub({
    logger,
    metrics,
    maxQueueBytes,
    slowConsumerTimeout,
    onDeliveryError: (e) => errors.push(e),
  });
  return { hub: h, logger, metrics, errors };
}

test("a write that throws marks the message failed and calls the error hook", async () => {
  const { hub: h, logger, metrics, errors } = hub();
  const socket = new ScriptedSocket();
  const client = h.connect({ uid: "u" }, "text", socket);
  socket.broken = true;
  const result = await h.sendToUid("u", "lost");
  assert.equal(result.delivered, 0);
  assert.equal(result.connections, 1);
  assert.equal(logger.records.get(result.id)!.status, "failed");
  assert.equal(metrics.messagesFailed, 1);
  assert.deepEqual(errors, [{
    messageId: result.id,
    target: "uid:u",
    clientId: client.id,
    how: "failed",
  }]);
});

test("one good tab is enough for delivered, whatever happens to the others", async () => {
  const { hub: h, logger } = hub();
  const bad = new ScriptedSocket();
  bad.broken = true;
  h.connect({ uid: "u" }, "text", bad);
  h.connect({ uid: "u" }, "text", new ScriptedSocket());
  const result = await h.sendToUid("u", "x");
  assert.equal(result.delivered, 1);
  assert.equal(logger.records.get(result.id)!.status, "delivered");
});

test("queued frames are counted in pending exactly, written in order, and settle the status", async () => {
  const { hub: h, logger } = hub();
  const socket = new ScriptedSocket();
  const client = h.connect({ uid: "u" }, "json", socket);
  socket.stalled = true;
  await h.sendToUid("u", "x".repeat(HIGH_WATER_BYTES)); // written, and now the buffer is full
  const ids = [(await h.sendToUid("u", "a")).id, (await h.sendToUid("u", "b")).id];
  assert.equal(h.pending, 2);
  assert.equal(logger.records.get(ids[0])!.status, "accepted");
  socket.flow();
  client.drain();
  assert.equal(h.pending, 0);
  assert.deepEqual(socket.sent.slice(2).map((f) => JSON.parse(f).data), ["a", "b"]);
  assert.equal(logger.records.get(ids[1])!.status, "delivered");
});

test("closing a client with a queue drops it: pending returns to 0, the message is dropped", async () => {
  const { hub: h, logger, metrics, errors } = hub();
  const socket = new ScriptedSocket();
  const client = h.connect({ uid: "u" }, "text", socket);
  socket.stalled = true;
  await h.sendToUid("u", "x".repeat(HIGH_WATER_BYTES));
  const { id } = await h.sendToUid("u", "never");
  h.disconnected(client);
  assert.equal(h.pending, 0);
  assert.equal(h.connections, 0);
  assert.equal(h.users, 0);
  assert.equal(logger.records.get(id)!.status, "dropped");
  assert.equal(metrics.messagesDropped, 1);
  assert.equal(errors.length, 1);
  h.disconnected(client); // a second close changes nothing
  assert.equal(metrics.messagesDropped, 1);
});

// The backlog is the queue plus the runtime's buffer: the first HIGH_WATER_BYTES (64 KiB) of each
// step below sit in the stalled socket's buffer, the rest waits in the queue.
const MAX_QUEUE = 256 * 1024;

test("a connection behind for a moment is kept; one that stays behind is cut off when its time is up", async () => {
  const { hub: h, metrics } = hub(MAX_QUEUE, 50);
  const socket = new ScriptedSocket();
  const client = h.connect({ uid: "u" }, "text", socket);
  socket.stalled = true;
  await h.sendToUid("u", "x".repeat(HIGH_WATER_BYTES)); // written, and now the buffer is full
  await h.sendToUid("u", "y".repeat(MAX_QUEUE)); // queued: more than MAX_QUEUE_BYTES behind
  assert.equal(socket.closedWith, undefined, "not cut off the moment it falls behind");
  socket.flow();
  client.drain(); // it caught up: its time behind starts again from nothing
  assert.equal(h.pending, 0);
  socket.stalled = true;
  socket.buffered = HIGH_WATER_BYTES;
  const { id } = await h.sendToUid("u", "z".repeat(MAX_QUEUE));
  assert.equal(socket.closedWith, undefined);
  // It stays behind: the timer it started cuts it off, and what waited is dropped.
  assert.deepEqual(await socket.closed, [4008, "slow consumer"]);
  assert.equal(h.connections, 0);
  assert.equal(metrics.slowConsumers, 1);
  assert.equal(h.pending, 0);
  assert.equal(metrics.messagesDropped, 1, `message ${id} dropped`);
});

test("past four times MAX_QUEUE_BYTES a connection is cut off at once, whatever its time", async () => {
  const { hub: h } = hub(MAX_QUEUE, 60_000);
  const socket = new ScriptedSocket();
  h.connect({ uid: "u" }, "text", socket);
  socket.stalled = true;
  await h.sendToUid("u", "x".repeat(HIGH_WATER_BYTES));
  await h.sendToUid("u", "y".repeat(2 * MAX_QUEUE));
  assert.equal(socket.closedWith, undefined);
  await h.sendToUid("u", "y".repeat(2 * MAX_QUEUE));
  assert.deepEqual(socket.closedWith, [4008, "slow consumer"]);
  assert.equal(h.connections, 0);
});

test("a fan-out encodes the message once per format, not once per connection", async () => {
  const { hub: h } = hub();
  const sockets = Array.from({ length: 50 }, () => new ScriptedSocket());
  sockets.forEach((s, i) => h.connect({ uid: "many" }, i % 2 ? "json" : "text", s));
  // JSON.stringify is counted by replacing it, and this test is synchronous from the replacement
  // to the restore: no other test, timer or socket callback can run in between and see the
  // counting version, so the global cannot disturb anything else.
  const originalStringify = JSON.stringify;
  let calls = 0;
  JSON.stringify = ((...args: Parameters<typeof JSON.stringify>) => {
    calls++;
    return originalStringify(...args);
  }) as typeof JSON.stringify;
  let sent: Promise<unknown>;
  try {
    sent = h.sendToUid("many", "hello"); // without a history store, pushed before it returns
  } finally {
    JSON.stringify = originalStringify;
  }
  await sent;
  assert.equal(calls, 1);
  const frames = new Set(sockets.map((s) => s.sent.at(-1)));
  assert.equal(frames.size, 2, "one text frame and one json frame, shared");
});

test("ids continue after the last stored id when it is ahead of the clock", async () => {
  const logger = new MemoryLogger();
  const ahead = Date.now() * 1000 + 1_000_000_000;
  logger.lastId = () => ahead;
  const h = new Hub({ logger, metrics: new Metrics(), maxQueueBytes: 1024 });
  assert.equal((await h.sendToUid("x", "y")).id, ahead + 1);
});

test("the runtime's buffer is read about once per HIGH_WATER_BYTES written, not once per push", async () => {
  const { hub: h } = hub();
  const socket = new ScriptedSocket();
  h.connect({ uid: "u" }, "text", socket);
  const message = "m".repeat(100);
  for (let i = 0; i < 1000; i++) await h.sendToUid("u", message); // 100 KB in all
  assert.equal(socket.sent.length, 1000);
  assert.ok(socket.reads >= 1 && socket.reads <= 2, `${socket.reads} reads`);
});

test("a backed-up client waits for the runtime's drain call and runs no timer of its own", async () => {
  const { hub: h } = hub();
  const socket = new ScriptedSocket();
  const client = h.connect({ uid: "u" }, "text", socket);
  socket.stalled = true;
  await h.sendToUid("u", "x".repeat(HIGH_WATER_BYTES));
  await h.sendToUid("u", "a");
  await h.sendToUid("u", "b");
  assert.equal(socket.asks, 1, "the client asked the runtime once when its queue began");
  // Bun fires drain while its buffer empties; each call finding no room asks again, no more.
  for (let i = 0; i < 100; i++) client.drain();
  assert.equal(socket.sent.length, 1, "nothing more is written while the buffer is full");
  assert.equal(socket.asks, 101);
  assert.equal(h.pending, 2);
  socket.flow();
  client.drain();
  assert.deepEqual(socket.sent.slice(1), ["a", "b"]);
  assert.equal(h.pending, 0);
  assert.equal(socket.asks, 101, "an empty queue asks for nothing");
});

test("a message resent to a resuming client shares the frames of the original: encoded once", () => {
  const original = new Message(7, { group: "g" }, "hi", 1000);
  const copies = [original.resent(), original.resent().resent()];
  for (const copy of copies) {
    assert.equal(copy.json, original.json, "the same frame object, not an equal one");
    assert.equal(copy.text, original.text);
    assert.deepEqual([copy.id, copy.status, copy.outstanding], [7, "delivered", 1]);
  }
  assert.equal(original.status, "accepted", "the original's outcome is its own");
});

test("a message that no connection took is told to the webhooks as message.undelivered, failed or dropped", async () => {
  const events: WebhookEvent[] = [];
  const h = new Hub({
    logger: new MemoryLogger(),
    metrics: new Metrics(),
    maxQueueBytes: 1024 * 1024,
    webhooks: { emit: (event) => void events.push(event) },
  });
  const broken = new ScriptedSocket();
  h.connect({ uid: "u" }, "text", broken);
  broken.broken = true;
  const failed = await h.sendToUid("u", "lost");

  const stalled = new ScriptedSocket();
  const client = h.connect({ uid: "v" }, "text", stalled);
  stalled.stalled = true;
  await h.sendToUid("v", "x".repeat(HIGH_WATER_BYTES));
  const dropped = await h.sendToUid("v", "never");
  h.disconnected(client, 1006, "gone");

  const undelivered = events.filter((e) => e.type === "message.undelivered")
    .map(({ messageId, target, status, uid }) => ({ messageId, target, status, uid }));
  assert.deepEqual(undelivered, [
    { messageId: failed.id, target: "uid:u", status: "failed", uid: "u" },
    { messageId: dropped.id, target: "uid:v", status: "dropped", uid: "v" },
  ]);
  const gone = events.find((e) => e.type === "client.disconnect" && e.uid === "v")!;
  assert.deepEqual([gone.client, gone.code, gone.reason], [client.id, 1006, "gone"]);
});
