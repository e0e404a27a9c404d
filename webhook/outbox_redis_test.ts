/**
 * The Redis outbox on a real redis-server that the test starts: the contract every outbox keeps,
 * then what only a shared Redis can show. Two outboxes on the same Redis and prefix are two nodes
 * of a cluster: they never answer the same rows while a lease holds, a node that dies leaves its
 * rows to the other, and a Redis that restarts loses none of the rows added while it was down.
 * Each test gets its own prefix, so tests share one server.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { Redis } from "ioredis";
import { A, B, event, idsOf, NOW, outboxContract } from "./outbox_contract.ts";
import { LEASE_MS, RedisOutbox, type RedisOutboxOptions, RESUME_QUEUES } from "./outbox_redis.ts";
import { WebhookDeliverer } from "./deliverer.ts";
import type { WebhookEvent } from "./events.ts";
import { startReceiver } from "./testkit.ts";
import { findRedisServer, startRedis, testWithoutRedis } from "../redis_testkit.ts";

/** A prefix no other test uses. */
const freshPrefix = () => `test-${randomUUID()}:`;

if (!findRedisServer()) {
  testWithoutRedis("the Redis webhook outbox's tests");
} else {
  const redis = await startRedis();
  after(() => redis.stop());

  outboxContract("redis outbox", (options) => {
    const store = new RedisOutbox({ url: redis.url, prefix: freshPrefix(), ...options });
    return {
      store,
      settle: () => store.written(),
      [Symbol.asyncDispose]: () => store.close(),
    };
  });

  /** Two nodes (or more) on one Redis and prefix; disposing of them closes them. */
  const cluster = (nodes = 2, options: Omit<RedisOutboxOptions, "url"> = {}) => {
    const prefix = freshPrefix();
    const outboxes = Array.from(
      { length: nodes },
      () => new RedisOutbox({ url: redis.url, prefix, ...options }),
    );
    return {
      prefix,
      outboxes,
      [Symbol.asyncDispose]: async () => void await Promise.all(outboxes.map((o) => o.close())),
    };
  };

  test("redis outbox: two nodes asking at once never get the same rows, and a claimed queue waits for its lease", async () => {
    await using c = cluster();
    const [a, b] = c.outboxes;
    const uids = ["alice", "bob", "carol", "dave"];
    for (let i = 1; i <= 3; i++) for (const uid of uids) a.add(event(`${uid}${i}`, uid), [A]);
    await a.written();
    const [fromA, fromB] = await Promise.all([a.due(A, NOW, 6), b.due(A, NOW, 6)]);
    assert.equal(fromA.length, 6);
    assert.equal(fromB.length, 6);
    const seqsA = new Set(fromA.map((row) => row.seq));
    assert.ok(fromB.every((row) => !seqsA.has(row.seq)), "no row went to both");
    const keysA = new Set(fromA.map((row) => row.key));
    assert.ok(fromB.every((row) => !keysA.has(row.key)), "no queue went to both");
    for (const rows of [fromA, fromB]) {
      for (const key of new Set(rows.map((row) => row.key))) {
        const uid = key.slice("uid:".length);
        assert.deepEqual(
          idsOf(rows.filter((row) => row.key === key)),
          [`${uid}1`, `${uid}2`, `${uid}3`],
          "each queue whole and in order",
        );
      }
    }

    const ended = NOW + LEASE_MS;
    assert.deepEqual(await a.due(A, ended - 1, 10), [], "claimed, for this node too");
    assert.deepEqual(await b.due(A, ended - 1, 10), []);
    assert.equal(await b.nextDueAt(A), ended, "due again when the lease ends");

    await b.retry(A, fromB, (attempts) => NOW + 1000 * attempts);
    await a.delivered(A, fromA, NOW);
    const again = await a.due(A, NOW + 1000, 10);
    assert.deepEqual(idsOf(again).sort(), idsOf(fromB).sort(), "b's answer ended its lease");
    assert.deepEqual(again.map((row) => row.attempts), [1, 1, 1, 1, 1, 1]);
  });

  test("redis outbox: resume on one node leaves the queues another node has claimed where they are", async () => {
    await using c = cluster();
    const [a, b] = c.outboxes;
    for (const uid of ["alice", "bob"]) a.add(event(`${uid}-1`, uid), [A]);
    await a.written();
    const alice = await a.due(A, NOW, 1);
    await a.retry(A, alice, () => NOW + 60_000);
    const bob = await b.due(A, NOW, 10);
    assert.deepEqual(idsOf(bob), ["bob-1"], "b holds bob's queue until NOW + LEASE_MS");
    assert.equal(await a.resume(A, NOW + 1000), 1, "alice's only");
    assert.deepEqual(idsOf(await a.due(A, NOW + 1000, 10)), ["alice-1"]);
    await b.delivered(A, bob, NOW + 1000);
    assert.equal(await a.nextDueAt(A), NOW + 1000 + LEASE_MS, "alice's, claimed by a now");
  });

  test("redis outbox: resume takes every waiting queue however many there are, passing over the claimed ones among them", async () => {
    await using c = cluster();
    const [a, b] = c.outboxes;
    const uids = Array.from({ length: 2 * RESUME_QUEUES + 100 }, (_, i) => `u${i}`);
    for (const uid of uids) a.add(event(uid, uid), [A]);
    await a.written();
    const all = await a.due(A, NOW, uids.length);
    const half = all.length / 2;
    await a.retry(A, all.slice(0, half), () => NOW + 60_000);
    await a.retry(A, all.slice(half), () => NOW + 200_000);
    // b claims the first half, more queues than one step of resume looks at: they wait for its
    // lease (NOW + 60 s + LEASE_MS), ahead of the second half in the order resume looks at them.
    const claimed = await b.due(A, NOW + 60_000, half);
    assert.equal(claimed.length, half);
    assert.ok(half > RESUME_QUEUES);
    assert.equal(await a.resume(A, NOW + 1000), uids.length - half);
    const now = await a.due(A, NOW + 1000, uids.length);
    assert.equal(now.length, uids.length - half);
    const taken = new Set(claimed.map((row) => row.key));
    assert.ok(now.every((row) => !taken.has(row.key)), "none of b's");
  });

  test("redis outbox: an answer that comes after its lease ended leaves the new holder's lease alone", async () => {
    await using c = cluster();
    const [a, b] = c.outboxes;
    for (const id of ["a1", "a2", "a3"]) a.add(event(id, "alice"), [A]);
    const slow = await a.due(A, NOW, 1);
    assert.deepEqual(idsOf(slow), ["a1"]);
    const ended = NOW + LEASE_MS;
    const taken = await b.due(A, ended, 10);
    assert.deepEqual(idsOf(taken), ["a1", "a2", "a3"], "the lease ended: b takes the queue");

    await a.delivered(A, slow, ended); // a's receiver answered at last
    assert.deepEqual(await a.due(A, ended, 10), [], "b still holds the queue");
    await a.retry(A, slow, () => ended);
    assert.deepEqual(await a.due(A, ended, 10), [], "nor does a failure of a give it back");

    await b.delivered(A, taken, ended);
    assert.equal(await b.nextDueAt(A), undefined);
    assert.equal(b.size(), 0, "a1 went once, whoever removed it");
  });

  test("redis outbox: a node that dies leaves what it added and what it claimed; another delivers it after the lease", async () => {
    await using c = cluster();
    const [dead, alive] = c.outboxes;
    for (const id of ["a1", "a2"]) dead.add(event(id, "alice"), [A, B]);
    dead.add(event("b1", "bob"), [A]);
    const claimed = await dead.due(A, NOW, 10);
    assert.deepEqual(idsOf(claimed), ["a1", "a2", "b1"]);
    dead.disconnect();
    assert.throws(() => dead.add(event("late"), [A]), /is closed/);

    assert.deepEqual(idsOf(await alive.due(B, NOW, 10)), ["a1", "a2"], "B's rows were not claimed");
    assert.deepEqual(await alive.due(A, NOW, 10), [], "the dead node's lease holds");
    assert.equal(await alive.nextDueAt(A), NOW + LEASE_MS);
    const taken = await alive.due(A, NOW + LEASE_MS, 10);
    assert.deepEqual(idsOf(taken), ["a1", "a2", "b1"], "in order, once the lease ended");
    assert.deepEqual(
      taken.map((row) => row.seq),
      claimed.map((row) => row.seq),
    );
    await alive.delivered(A, taken, NOW + LEASE_MS);
    assert.equal(await alive.nextDueAt(A), undefined);
    assert.equal(alive.size(), 2, "B's two rows wait");
  });

  test("redis outbox: a node that closes writes what it was given and hands its queues over at once; a node opened later finds rows with their attempts and backoff", async () => {
    // `close` hands queues over as of the real clock: this test keeps to it.
    const now = Date.now();
    const hour = 3_600_000;
    const prefix = freshPrefix();
    const before = new RedisOutbox({ url: redis.url, prefix });
    before.add(event("a1", "alice"), [A]);
    before.add(event("b1", "bob"), [A]);
    const failed = await before.due(A, now, 1);
    await before.retry(A, failed, () => now + hour);
    const claimed = await before.due(A, now, 10);
    assert.deepEqual(idsOf(claimed), ["b1"], "claimed, and never answered");
    before.add(event("c1", "carol"), [A]); // not written yet: close writes it
    await before.close();

    const later = new RedisOutbox({ url: redis.url, prefix });
    try {
      const due = await later.due(A, Date.now(), 10);
      assert.deepEqual(idsOf(due), ["c1", "b1"], "c1 was due at once, b1 since the close");
      assert.equal(later.size(), 3);
      await later.delivered(A, due, now);
      assert.equal(await later.nextDueAt(A), now + hour, "a1 keeps its backoff");
      const a1 = await later.due(A, now + hour, 10);
      assert.deepEqual(idsOf(a1), ["a1"]);
      assert.equal(a1[0].attempts, 1);
    } finally {
      await later.close();
    }
  });

  test("redis outbox: while Redis restarts, add never throws; the rows added while it was down are written once it is back, in order", async () => {
    const own = await startRedis();
    const prefix = freshPrefix();
    const errors: Error[] = [];
    let told!: () => void;
    const addFailed = new Promise<void>((resolve) => told = resolve);
    const outbox = new RedisOutbox({
      url: own.url,
      prefix,
      onError: (err) => {
        errors.push(err);
        if (err.message.includes("cannot add")) told();
      },
    });
    let back: Awaited<ReturnType<typeof startRedis>> | undefined;
    try {
      outbox.add(event("before", "alice"), [A]);
      await outbox.written();
      await own.stop();
      for (let i = 1; i <= 3; i++) outbox.add(event(`down${i}`, "alice"), [A]);
      await addFailed;
      for (let i = 4; i <= 6; i++) outbox.add(event(`down${i}`, "alice"), [A]);
      assert.equal(outbox.size(), 7, "kept in memory");
      const failure = errors.find((err) => err.message.includes("cannot add"))!;
      assert.match(
        failure.message,
        new RegExp(`webhook outbox on redis://127\\.0\\.0\\.1:${own.port}`),
      );
      assert.match(failure.message, /cannot add 3 events; they are kept in memory/);

      back = await startRedis({ port: own.port }); // no persistence: "before" is gone
      await outbox.written(); // the retries, not a read, write them
      const raw = new Redis(back.url);
      try {
        assert.equal(await raw.zcard(`${prefix}webhooks:rows`), 6);
      } finally {
        raw.disconnect();
      }
      assert.equal(
        errors.filter((err) => err.message.includes("cannot add")).length,
        1,
        "the failing writes were told once",
      );
      const due = await outbox.due(A, NOW, 10);
      assert.deepEqual(idsOf(due), [1, 2, 3, 4, 5, 6].map((i) => `down${i}`));
      assert.equal(outbox.size(), 6);
    } finally {
      await outbox.close();
      await back?.stop();
    }
  });

  test("redis outbox: two nodes' deliverers on one outbox: every event reaches the receiver once, in order per uid, through its failures", async () => {
    const secret = "whsec-test";
    await using receiver = await startReceiver(secret);
    receiver.answer = (_events, n) => n <= 2 ? "fail" : "ok";
    await using c = cluster();
    const errors: Error[] = [];
    const nodes = c.outboxes.map((outbox) =>
      new WebhookDeliverer({
        urls: [receiver.url],
        secret,
        outbox,
        batchSize: 3,
        batchDelayMs: 0,
        minBackoffMs: 1,
        maxBackoffMs: 5,
        onError: (err) => errors.push(err),
      })
    );
    try {
      const sent: WebhookEvent[] = [];
      for (let i = 1; i <= 10; i++) {
        // A uid's events come from one node here: the order of two nodes' events is the order
        // they reach Redis.
        for (const [node, uid] of [[0, "alice"], [1, "bob"], [1, "carol"]] as const) {
          const e = { id: `${uid}${i}`, type: "message.client", ts: Date.now(), uid };
          sent.push(e);
          nodes[node].emit(e);
        }
      }
      await receiver.until(() => receiver.accepted.length >= sent.length, "every event");
      const ids = receiver.accepted.map((e) => e.id);
      assert.equal(new Set(ids).size, ids.length, `no event twice: ${ids}`);
      for (const uid of ["alice", "bob", "carol"]) {
        assert.deepEqual(
          receiver.accepted.filter((e) => e.uid === uid).map((e) => e.id),
          sent.filter((e) => e.uid === uid).map((e) => e.id),
          `${uid}'s events in order`,
        );
      }
      assert.ok(receiver.requests.every((r) => r.verified));
      assert.ok(errors.some((err) => err.message.includes("answered 500")), "the failures told");
    } finally {
      await Promise.all(nodes.map((node) => node.close()));
    }
    assert.equal(await c.outboxes[0].nextDueAt(receiver.url), undefined, "nothing is left");
    await c.outboxes[0].expire(0); // a script: it tells the count as of now
    assert.equal(c.outboxes[0].size(), 0);
  });

  test("redis outbox: a deployment on another prefix shares the Redis but none of the rows", async () => {
    await using c = cluster(1);
    await using d = cluster(1);
    c.outboxes[0].add(event("e1", "alice"), [A]);
    await c.outboxes[0].written();
    assert.deepEqual(await d.outboxes[0].due(A, NOW, 10), []);
    assert.deepEqual(idsOf(await c.outboxes[0].due(A, NOW, 10)), ["e1"]);
  });

  test("redis outbox: a URL that is not redis:// is refused without repeating it", () => {
    assert.throws(
      () => new RedisOutbox({ url: "http://user:pw@host:6379" }),
      (err: Error) => err instanceof TypeError && !err.message.includes("pw@"),
    );
  });
}
