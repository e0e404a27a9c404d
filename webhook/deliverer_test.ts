/**
 * Webhook delivery, told as a backend lives it: a real HTTP receiver on a random port that checks
 * every signature, and fails, drops the connection or hangs when the test says so. Backoffs are
 * milliseconds here (options); the tests wait for what the receiver saw, never for time.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { temporaryFile } from "../testkit.ts";
import { WebhookDeliverer, type WebhookDelivererOptions } from "./deliverer.ts";
import type { WebhookEvent } from "./events.ts";
import type { Outbox } from "./outbox.ts";
import { SqliteOutbox, WEBHOOK_FILE } from "./outbox_sqlite.ts";
import { ids, startReceiver } from "./testkit.ts";
import { idsOf } from "./outbox_contract.ts";

const SECRET = "whsec_deliverer_test";

/** An event `id` of `type`, now by `now`, with `fields` (`uid`, `group`…). */
function event(
  id: string,
  fields: Record<string, unknown> = {},
  type = "client.connect",
  now = Date.now,
): WebhookEvent {
  return { id, type, ts: now(), ...fields };
}

/** A deliverer to `urls` on an outbox in a new file, with short delays; disposing closes both. */
function deliver(
  urls: string[],
  options: Partial<WebhookDelivererOptions> & { maxEvents?: number; path?: string } = {},
) {
  const file = temporaryFile(WEBHOOK_FILE);
  const errors: string[] = [];
  const waiters = new Set<() => void>();
  const onError = (err: Error) => {
    errors.push(err.message);
    for (const waiter of [...waiters]) waiter();
  };
  const outbox: Outbox = options.outbox ??
    new SqliteOutbox(options.path ?? file.path, { maxEvents: options.maxEvents, onError });
  const deliverer = new WebhookDeliverer({
    secret: SECRET,
    batchDelayMs: 5,
    minBackoffMs: 10,
    maxBackoffMs: 100,
    ...options,
    urls,
    outbox,
    onError,
  });
  return {
    deliverer,
    outbox,
    path: file.path,
    /** Every error and drop logged, in order. */
    errors,
    /** Resolves with the first log line, past or to come, that matches `pattern`. */
    reported(pattern: RegExp): Promise<string> {
      return new Promise((resolve) => {
        const waiter = () => {
          const found = errors.find((message) => pattern.test(message));
          if (found === undefined) return;
          waiters.delete(waiter);
          resolve(found);
        };
        waiters.add(waiter);
        waiter();
      });
    },
    async [Symbol.asyncDispose]() {
      await deliverer.close();
      await outbox.close();
      file[Symbol.dispose]();
    },
  };
}

test("webhooks: the backend gets the events in one POST of {events:[…]}, JSON, signed over the exact body", async () => {
  await using receiver = await startReceiver(SECRET);
  await using h = deliver([receiver.url]);
  const sent = [
    event("alice-1", { uid: "alice", client: "c1" }),
    event("bob-1", { uid: "bob", client: "c2" }),
    event("room-1", { group: "room" }, "group.created"),
  ];
  for (const e of sent) h.deliverer.emit(e);
  await receiver.until(() => receiver.accepted.length === 3, "three events");
  await h.deliverer.close();

  assert.equal(receiver.requests.length, 1, "one POST");
  assert.equal(receiver.requests[0].verified, true);
  assert.equal(receiver.requests[0].contentType, "application/json");
  assert.deepEqual(receiver.accepted, sent, "the events as emitted");
  const stats = h.deliverer.stats();
  assert.deepEqual(stats.emitted, { "client.connect": 2, "group.created": 1 });
  assert.equal(stats.delivered, 3);
  assert.equal(stats.failures, 0);
  assert.equal(stats.outbox, 0);
  assert.equal(stats.latency.count, 3);
  assert.equal(stats.latency.buckets.at(-1), 3, "within a day");
  assert.deepEqual(h.errors, []);
});

test("webhooks: a burst goes in POSTs of at most batchSize events, each uid's in the order emitted", async () => {
  await using receiver = await startReceiver(SECRET);
  await using h = deliver([receiver.url], { batchSize: 10 });
  const sent = Array.from({ length: 25 }, (_, i) => event(`e${i}`, { uid: `u${i % 2}` }));
  for (const e of sent) h.deliverer.emit(e);
  await receiver.until(() => receiver.accepted.length === 25, "25 events");
  await h.deliverer.close();

  assert.ok(receiver.requests.length >= 3);
  for (const request of receiver.requests) assert.ok(request.events.length <= 10);
  for (const uid of ["u0", "u1"]) {
    assert.deepEqual(
      ids(receiver.accepted.filter((e) => e.uid === uid)),
      ids(sent.filter((e) => e.uid === uid)),
    );
  }
  assert.equal(h.deliverer.stats().delivered, 25);
});

test("webhooks: a receiver that drops the connection, then answers 500, gets the same events again until it takes them", async () => {
  await using receiver = await startReceiver(SECRET);
  // The drop comes first, on a new connection: a runtime's fetch may resend by itself a request
  // whose reused keep-alive connection closed, which the deliverer would not see as a failure.
  receiver.answer = (_, n) => n === 1 ? "close" : n === 2 ? "fail" : "ok";
  await using h = deliver([receiver.url]);
  h.deliverer.emit(event("alice-1", { uid: "alice" }));
  h.deliverer.emit(event("alice-2", { uid: "alice" }));
  await receiver.until(() => receiver.accepted.length === 2, "the events, at last");
  await h.deliverer.close();

  assert.deepEqual(receiver.requests.map((r) => r.answer), ["close", "fail", "ok"]);
  for (const request of receiver.requests) {
    assert.deepEqual(ids(request.events), ["alice-1", "alice-2"], "the same ids each time");
    assert.equal(request.verified, true);
  }
  const stats = h.deliverer.stats();
  assert.equal(stats.failures, 2);
  assert.equal(stats.delivered, 2);
  assert.equal(stats.outbox, 0);
  assert.equal(h.errors.length, 1, "one log line for the failing run");
  assert.match(
    h.errors[0],
    /^webhook http:\/\/127\.0\.0\.1:\d+\/hooks: cannot deliver 2 events: .+; retrying/,
  );
});

test("webhooks: while alice's events fail, bob's go on, and alice's arrive later in their order", async () => {
  await using receiver = await startReceiver(SECRET);
  const bob = ["bob-1", "bob-2", "bob-3"];
  const bobsArrived = () => bob.every((id) => ids(receiver.accepted).includes(id));
  // Refuses alice's events until bob's have all arrived: alice's must not hold bob's up.
  receiver.answer = (events) =>
    events.some((e) => e.uid === "alice") && !bobsArrived() ? "fail" : "ok";
  await using h = deliver([receiver.url], { minBackoffMs: 50, random: () => 1 });
  h.deliverer.emit(event("alice-1", { uid: "alice" }));
  h.deliverer.emit(event("alice-2", { uid: "alice" }));
  await receiver.until(() => receiver.requests.length >= 1, "alice's first attempt");
  for (const id of bob) h.deliverer.emit(event(id, { uid: "bob" }));
  await receiver.until(() => receiver.accepted.length === 5, "every event");

  const accepted = ids(receiver.accepted);
  assert.deepEqual(accepted.filter((id) => id.startsWith("bob")), bob);
  assert.deepEqual(accepted.filter((id) => id.startsWith("alice")), ["alice-1", "alice-2"]);
  assert.ok(accepted.indexOf("bob-3") < accepted.indexOf("alice-1"), "bob's went first");
});

test("webhooks: a receiver back from an outage gets the events waiting on their backoff at once, not a minute later", async () => {
  await using receiver = await startReceiver(SECRET);
  let down = true;
  receiver.answer = () => down ? "fail" : "ok";
  // Every retry would wait a full minute: longer than the receiver's `until` waits.
  const minute = { minBackoffMs: 60_000, maxBackoffMs: 60_000, random: () => 1 };
  await using h = deliver([receiver.url], minute);
  h.deliverer.emit(event("alice-1", { uid: "alice" }));
  h.deliverer.emit(event("bob-1", { uid: "bob" }));
  await receiver.until(() => receiver.requests.length >= 1, "the POST that failed");
  down = false;
  // The receiver's first 2xx (a new uid's event, due at once) shows it is back.
  h.deliverer.emit(event("carol-1", { uid: "carol" }));
  await receiver.until(() => receiver.accepted.length === 3, "every event, the waiting ones too");
  assert.deepEqual(ids(receiver.accepted), ["carol-1", "alice-1", "bob-1"]);
});

test("webhooks: a receiver that refuses one uid's events while it takes the others' does not get that uid's retries sooner", async () => {
  await using receiver = await startReceiver(SECRET);
  receiver.answer = (events) => events.some((e) => e.uid === "alice") ? "fail" : "ok";
  const minute = { minBackoffMs: 60_000, maxBackoffMs: 60_000, random: () => 1 };
  await using h = deliver([receiver.url], minute);
  h.deliverer.emit(event("bob-1", { uid: "bob" }));
  await receiver.until(() => receiver.accepted.length === 1, "bob-1");
  h.deliverer.emit(event("alice-1", { uid: "alice" }));
  await receiver.until(() => receiver.requests.length === 2, "alice-1, refused");
  const failedAt = Date.now();
  for (const id of ["bob-2", "bob-3"]) {
    h.deliverer.emit(event(id, { uid: "bob" }));
    await receiver.until(() => ids(receiver.accepted).includes(id), id);
  }
  // bob-3's POST came after bob-2's answer was recorded: had that brought alice's queue forward,
  // it would be due now, not a minute after her failure.
  const dueNow = await h.outbox.due(receiver.url, Date.now(), 10);
  assert.deepEqual(dueNow.filter((row) => row.key === "uid:alice"), []);
  const dueLater = await h.outbox.due(receiver.url, failedAt + 61_000, 10);
  assert.deepEqual(
    idsOf(dueLater.filter((row) => row.key === "uid:alice")),
    ["alice-1"],
    "due a minute after her failure",
  );
  assert.equal(receiver.requests.filter((r) => r.events.some((e) => e.uid === "alice")).length, 1);
});

test("webhooks: a receiver that is down holds up only its own URL", async () => {
  await using down = await startReceiver(SECRET);
  await using up = await startReceiver(SECRET);
  down.answer = () => "fail";
  await using h = deliver([down.url, up.url]);
  h.deliverer.emit(event("alice-1", { uid: "alice" }));
  h.deliverer.emit(event("alice-2", { uid: "alice" }));
  await up.until(() => up.accepted.length === 2, "both events at the receiver that is up");
  await down.until(() => down.requests.length >= 2, "a retry at the one that is down");
  await h.deliverer.close();
  assert.equal(h.deliverer.stats().outbox, 2, "kept for the one that is down");
});

test("webhooks: a receiver that hangs does not hold emit up: 1,000 events are in the outbox at once, and all arrive once it answers", async () => {
  await using receiver = await startReceiver(SECRET);
  receiver.answer = (_, n) => n === 1 ? "hang" : "ok";
  await using h = deliver([receiver.url], { timeoutMs: 200 });
  h.deliverer.emit(event("first", { uid: "u0" }));
  await receiver.until(() => receiver.requests.length === 1, "the request that hangs");
  assert.equal(h.deliverer.stats().inFlight, 1);

  const sent = Array.from({ length: 1000 }, (_, i) => event(`e${i}`, { uid: `u${i % 10}` }));
  for (const e of sent) h.deliverer.emit(e);
  assert.equal(h.deliverer.stats().outbox, 1001, "every event kept as emit returned");
  assert.equal(h.deliverer.stats().inFlight, 1, "still waiting for the hung receiver");

  await receiver.until(() => receiver.accepted.length === 1001, "all 1001 events");
  await h.deliverer.close();
  assert.equal(new Set(ids(receiver.accepted)).size, 1001, "each once");
  for (let u = 0; u < 10; u++) {
    const mine = (e: WebhookEvent) => e.uid === `u${u}`;
    assert.deepEqual(ids(receiver.accepted.filter(mine)), [
      ...(u === 0 ? ["first"] : []),
      ...ids(sent.filter(mine)),
    ]);
  }
  const stats = h.deliverer.stats();
  assert.equal(stats.failures, 1, "the request that timed out");
  assert.equal(stats.delivered, 1001);
  assert.match(h.errors[0], /cannot deliver 1 event: no answer within 200 ms/);
});

test("webhooks: events still in the outbox when deno-pusher stops are delivered once after it starts again", async () => {
  await using receiver = await startReceiver(SECRET);
  using file = temporaryFile(WEBHOOK_FILE);
  const sent = Array.from({ length: 5 }, (_, i) => event(`e${i}`, { uid: "alice" }));
  {
    const outbox = new SqliteOutbox(file.path);
    const deliverer = new WebhookDeliverer({ urls: [receiver.url], secret: SECRET, outbox });
    for (const e of sent) deliverer.emit(e);
    await deliverer.close(); // before any delivery
    assert.equal(outbox.size(), 5);
    await outbox.close();
  }
  assert.equal(receiver.requests.length, 0, "nothing was sent before the stop");

  {
    await using h = deliver([receiver.url], { path: file.path });
    assert.equal(h.outbox.size(), 5, "the new outbox finds them");
    await receiver.until(() => receiver.accepted.length === 5, "the five events");
    await h.deliverer.close();
    assert.equal(h.outbox.size(), 0);
  }
  const again = new SqliteOutbox(file.path);
  assert.equal(again.size(), 0, "none left for a third start");
  await again.close();
  assert.deepEqual(ids(receiver.accepted), ids(sent), "each once, in order");
  assert.ok(receiver.requests.every((r) => r.verified));
});

test("webhooks: an event no receiver accepts within maxAgeMs is dropped, counted and logged", async () => {
  let ms = 1_700_000_000_000;
  const now = () => ms;
  await using receiver = await startReceiver(SECRET);
  receiver.answer = () => "fail";
  await using h = deliver([receiver.url], { maxAgeMs: 60_000, now, random: () => 1 });
  h.deliverer.emit(event("old", { uid: "alice" }, "client.connect", now));
  await receiver.until(() => receiver.requests.length >= 1, "a first attempt");
  ms += 60_000;
  const line = await h.reported(/dropped/);
  assert.match(
    line,
    /^webhooks: dropped 1 event that no receiver accepted within 1 min \(WEBHOOK_MAX_AGE\)$/,
  );

  receiver.answer = () => "ok";
  h.deliverer.emit(event("new", { uid: "alice" }, "client.connect", now));
  await receiver.until(() => receiver.accepted.length === 1, "the new event");
  await h.deliverer.close();
  assert.deepEqual(ids(receiver.accepted), ["new"], "the old one never");
  const stats = h.deliverer.stats();
  assert.equal(stats.expired, 1);
  assert.equal(stats.outbox, 0);
});

test("webhooks: past the outbox's bound the oldest events are dropped, counted and logged; the newest arrive", async () => {
  await using receiver = await startReceiver(SECRET);
  await using h = deliver([receiver.url], { maxEvents: 10 });
  const sent = Array.from({ length: 15 }, (_, i) => event(`e${i}`, { uid: `u${i % 3}` }));
  for (const e of sent) h.deliverer.emit(e);
  await receiver.until(() => receiver.accepted.length === 10, "ten events");
  await h.deliverer.close();

  assert.deepEqual(ids(receiver.accepted).sort(), ids(sent.slice(5)).sort());
  assert.equal(h.deliverer.stats().dropped, 5);
  assert.equal(h.errors.filter((m) => /is full \(10 events\)/.test(m)).length, 1);
});

test("webhooks: close does not wait long for a receiver that hangs, and what it did not deliver stays in the outbox", async () => {
  await using receiver = await startReceiver(SECRET);
  receiver.answer = () => "hang";
  await using h = deliver([receiver.url], { closeTimeoutMs: 50 });
  h.deliverer.emit(event("alice-1", { uid: "alice" }));
  await receiver.until(() => receiver.requests.length === 1, "the request that hangs");
  await h.deliverer.close();
  const stats = h.deliverer.stats();
  assert.equal(stats.inFlight, 0);
  assert.equal(stats.failures, 0, "cut short by the stop, not the receiver's failure");
  assert.equal(stats.outbox, 1);
  h.deliverer.emit(event("alice-2", { uid: "alice" }));
  assert.equal(h.outbox.size(), 2, "an event emitted after close waits for the next start");
});

test("webhooks: emit never throws: an event that is no JSON, or an outbox closed, is counted as lost and logged", async () => {
  await using h = deliver(["http://127.0.0.1:9/hooks"]);
  h.deliverer.emit({ ...event("big", { uid: "alice" }), n: 1n });
  assert.equal(h.deliverer.stats().lost, 1);
  assert.match(h.errors[0], /^webhooks: lost 1 event: .*BigInt/i);
  await h.deliverer.close();
  await h.outbox.close();
  h.deliverer.emit(event("late", { uid: "alice" }));
  assert.equal(h.deliverer.stats().lost, 2);
});

test("webhooks: a deliverer refuses a URL that is not http(s), an empty secret and numbers out of range", async () => {
  await using h = deliver([]);
  const base = { secret: SECRET, outbox: h.outbox };
  assert.throws(
    () => new WebhookDeliverer({ ...base, urls: ["ftp://example.com/"] }),
    /a webhook URL must be an http or https URL, not "ftp:\/\/example\.com\/"/,
  );
  assert.throws(() => new WebhookDeliverer({ ...base, urls: ["not a url"] }), RangeError);
  assert.throws(
    () => new WebhookDeliverer({ ...base, urls: ["http://127.0.0.1/"], secret: "" }),
    /WEBHOOK_SECRET/,
  );
  assert.throws(
    () => new WebhookDeliverer({ ...base, urls: ["http://127.0.0.1/"], batchSize: 0 }),
    /batchSize must be a whole number 1 or more, not 0/,
  );
});
