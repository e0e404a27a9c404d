/**
 * The Redis idempotency store on a real redis-server that the test starts: the contract every
 * store keeps, then what only a shared Redis can show. Two stores on the same Redis and prefix are
 * two nodes of a cluster: a retry that lands on the other node is still a duplicate, waits, or is
 * refused as the same node would. Each test gets its own prefix, so tests share one server.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { Redis } from "ioredis";
import { clock, idempotencyContract, sendRoute } from "./contract.ts";
import { RedisIdempotency, type RedisIdempotencyOptions } from "./redis.ts";
import type { Begun } from "./store.ts";
import { findRedisServer, startRedis, testWithoutRedis } from "../redis_testkit.ts";
import { until } from "../testkit.ts";

/** A prefix no other test uses. */
const freshPrefix = () => `test-${randomUUID()}:`;

/** The `first` a begin must have found; fails the test with what it found instead. */
function first(begun: Begun) {
  assert.equal(begun.kind, "first");
  return begun as Extract<Begun, { kind: "first" }>;
}

/**
 * Resolves once what `store` was asked so far has reached Redis and been answered, and the store
 * has acted on the answers: a turn (the requests' scripts go out), a PING after them, a turn.
 */
async function reached(store: RedisIdempotency): Promise<void> {
  await turn();
  await store.roundTrip();
  await turn();
}

/** One turn of the event loop: every callback queued so far runs. */
const turn = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

if (!findRedisServer()) {
  testWithoutRedis("the Redis idempotency store's tests");
} else {
  const redis = await startRedis();
  after(() => redis.stop());

  /** Two nodes (or more) on one Redis and prefix; disposing of them closes them. */
  const cluster = (options: Omit<RedisIdempotencyOptions, "url">, nodes = 2) => {
    const prefix = freshPrefix();
    const stores = Array.from(
      { length: nodes },
      () => new RedisIdempotency({ url: redis.url, prefix, sweepMs: 0, ...options }),
    );
    return {
      prefix,
      stores,
      [Symbol.asyncDispose]: async () => void await Promise.all(stores.map((s) => s.close())),
    };
  };

  idempotencyContract("redis", (options) => {
    const store = new RedisIdempotency({
      url: redis.url,
      prefix: freshPrefix(),
      sweepMs: 0,
      ...options,
    });
    return {
      store,
      sweep: () => store.sweep(),
      // The requests' first scripts go out after a turn of the loop; a PING after them is answered
      // after them; one more turn lets what they do with their answers run.
      settle: () => reached(store),
      [Symbol.asyncDispose]: () => store.close(),
    };
  });

  test("redis: a retry that lands on the other node gets the first node's answer, and nothing is pushed again", async () => {
    await using c = cluster({ ttl: 600 });
    const [a, b] = c.stores;
    const onA = sendRoute(a);
    const onB = sendRoute(b);
    await onA.send("order-42", "hello");
    assert.deepEqual(await onB.send("order-42", "hello"), {
      status: 200,
      body: { id: 1, message: "hello", delivered: 1, duplicate: true },
    });
    assert.equal(onA.pushed + onB.pushed, 1);
    assert.equal(b.stats().keys, 1, "b sees the cluster's keys");
  });

  test("redis: a key begun on one node is in progress on the other: it waits, then answers in-progress", async () => {
    await using c = cluster({ ttl: 600, waitMs: 100 });
    const [a, b] = c.stores;
    const running = first(await a.begin("s", "k", "f"));
    const started = performance.now();
    assert.deepEqual(await b.begin("s", "k", "f"), { kind: "in-progress" });
    const waited = performance.now() - started;
    // It waited out waitMs before it said so (a lower bound: Redis cannot answer earlier).
    assert.ok(waited >= 95, `waited ${waited} ms`);
    assert.equal(b.stats().inProgress, 0, "b claimed nothing");
    await running.finish({ status: 200, body: { id: 1 } });
    assert.equal((await b.begin("s", "k", "f")).kind, "duplicate");
  });

  test("redis: a twin waiting on the other node gets the answer soon after the first finishes", async () => {
    await using c = cluster({ ttl: 600 });
    const [a, b] = c.stores;
    const running = first(await a.begin("s", "k", "f"));
    const waiting = b.begin("s", "k", "f");
    await reached(b); // b found the key in progress and polls
    await running.finish({ status: 201, body: { id: 7 } });
    assert.deepEqual(await waiting, {
      kind: "duplicate",
      answer: { status: 201, body: { id: 7 } },
    });
  });

  test("redis: fifty retries spread over three nodes push once, and all get the same answer", async () => {
    await using c = cluster({ ttl: 600 }, 3);
    const routes = c.stores.map(sendRoute);
    // The one that claims the key holds its push until all fifty have reached Redis.
    const gate = Promise.withResolvers<void>();
    const sending = Array.from(
      { length: 50 },
      (_, i) => routes[i % 3].send("order-42", "hello", { gate: gate.promise }),
    );
    await Promise.all(c.stores.map(reached));
    gate.resolve();
    const answers = await Promise.all(sending);
    assert.equal(routes.reduce((n, r) => n + r.pushed, 0), 1);
    assert.equal(answers.filter((a) => (a.body as { duplicate?: true }).duplicate).length, 49);
    for (const a of answers) assert.equal((a.body as { id: number }).id, 1);
  });

  test("redis: a key reused with another request is refused on the other node, running or finished", async () => {
    await using c = cluster({ ttl: 600 });
    const [a, b] = c.stores;
    const running = first(await a.begin("s", "k", "message A"));
    assert.deepEqual(await b.begin("s", "k", "message B"), { kind: "reused" });
    await running.finish({ status: 200, body: {} });
    assert.deepEqual(await b.begin("s", "k", "message B"), { kind: "reused" });
    assert.equal((await b.begin("s", "k", "message A")).kind, "duplicate");
  });

  test("redis: a request abandoned on one node lets the waiter on the other run it", async () => {
    await using c = cluster({ ttl: 600 });
    const [a, b] = c.stores;
    const running = first(await a.begin("s", "k", "f"));
    const waiting = b.begin("s", "k", "f");
    await reached(b);
    running.abandon();
    const retry = first(await waiting);
    await retry.finish({ status: 200, body: { id: 2 } });
    assert.equal((await a.begin("s", "k", "f")).kind, "duplicate");
  });

  test("redis: a node that dies mid-request frees its key after claimMs; its late finish is refused", async () => {
    const prefix = freshPrefix();
    const dying = new RedisIdempotency({ url: redis.url, prefix, ttl: 600, claimMs: 200 });
    const other = new RedisIdempotency({ url: redis.url, prefix, ttl: 600, waitMs: 2000 });
    try {
      const stuck = first(await dying.begin("s", "k", "f"));
      const started = performance.now();
      const retry = first(await other.begin("s", "k", "f"));
      const waited = performance.now() - started;
      // Not before the claim lapsed in Redis (a lower bound: Redis cannot expire it earlier).
      assert.ok(waited >= 150, `waited ${waited} ms`);
      await assert.rejects(
        stuck.finish({ status: 200, body: {} }),
        /claim lapsed after 200 ms and another request took the key/,
      );
      await retry.finish({ status: 200, body: { id: 2 } });
      assert.equal((await dying.begin("s", "k", "f")).kind, "duplicate");
    } finally {
      await Promise.all([dying.close(), other.close()]);
    }
  });

  test("redis: a node that closes gives its keys in progress back at once", async () => {
    await using c = cluster({ ttl: 600, waitMs: 2000 });
    const [a, b] = c.stores;
    first(await a.begin("s", "k", "f"));
    const waiting = b.begin("s", "k", "f");
    await reached(b);
    await a.close();
    // Within b's waitMs (2 s), not the claim's minute: else b would answer in-progress.
    first(await waiting).abandon();
  });

  test("redis: keys live under the prefix, scoped by API key and route, and Redis expires them after IDEMPOTENCY_TTL", async () => {
    await using c = cluster({ ttl: 0.3 });
    const [a, b] = c.stores;
    await sendRoute(a).send("order-42", "hello", { scope: "key:alice /send" });
    await sendRoute(b).send("order-42", "hello", { scope: "key:bob /send" });
    const raw = new Redis(redis.url);
    try {
      const keys = (await raw.keys(`${c.prefix}*`)).sort();
      assert.deepEqual(keys, [
        `${c.prefix}idempotency:index`,
        `${c.prefix}idempotency:key:key:alice /send\u0000order-42`,
        `${c.prefix}idempotency:key:key:bob /send\u0000order-42`,
      ]);
      const ttl = await raw.pttl(keys[1]);
      assert.ok(ttl > 0 && ttl <= 300, `PX ${ttl} ms`);
      await until(async () => await raw.exists(keys[1], keys[2]) === 0, "Redis to expire both");
      const route = sendRoute(b);
      await route.send("order-42", "hello", { scope: "key:alice /send" });
      assert.equal(route.pushed, 1, "after the TTL the same request runs again");
    } finally {
      raw.disconnect();
    }
  });

  test("redis: a deployment on another prefix shares the Redis but none of the keys", async () => {
    const t = clock();
    const one = new RedisIdempotency({
      url: redis.url,
      prefix: freshPrefix(),
      ttl: 600,
      now: t.now,
    });
    const two = new RedisIdempotency({
      url: redis.url,
      prefix: freshPrefix(),
      ttl: 600,
      now: t.now,
    });
    try {
      await sendRoute(one).send("order-42", "hello");
      const route = sendRoute(two);
      await route.send("order-42", "hello");
      assert.equal(route.pushed, 1);
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  test("redis: with Redis down, begin rejects promptly naming the server but not its password", async () => {
    const down = await startRedis();
    await down.stop(); // a port nobody answers on
    const url = `redis://deployer:s3cret-pw@127.0.0.1:${down.port}`;
    const errors: Error[] = [];
    const store = new RedisIdempotency({ url, ttl: 600, onError: (err) => errors.push(err) });
    try {
      const started = performance.now();
      await assert.rejects(store.begin("s", "k", "f"), (err: Error) => {
        const message = err.message;
        assert.ok(message.includes(`127.0.0.1:${down.port}`), `names the server: ${message}`);
        assert.ok(!message.includes("s3cret-pw"), `hides the password: ${message}`);
        assert.match(message, /cannot look Idempotency-Key k up/);
        return true;
      });
      const took = performance.now() - started;
      assert.ok(took < 3000, `rejected after ${took} ms`);
      assert.ok(errors.length > 0, "the connection's failure was told");
      for (const err of errors) assert.ok(!err.message.includes("s3cret-pw"), err.message);
      assert.equal(store.stats().inProgress, 0);
    } finally {
      await store.close();
    }
  });

  test("redis: when Redis goes down mid-request, finish rejects naming the server and the key is released here", async () => {
    const own = await startRedis();
    const store = new RedisIdempotency({ url: own.url, ttl: 600 });
    try {
      const running = first(await store.begin("s", "k", "f"));
      await own.stop();
      await assert.rejects(running.finish({ status: 200, body: {} }), (err: Error) => {
        assert.ok(err.message.includes(`127.0.0.1:${own.port}`), err.message);
        assert.match(err.message, /cannot keep the answer of Idempotency-Key k/);
        return true;
      });
      assert.equal(store.stats().inProgress, 0);
    } finally {
      await store.close();
      await own.stop();
    }
  });

  test("redis: a URL that is not redis:// is refused without repeating it", () => {
    assert.throws(
      () => new RedisIdempotency({ url: "http://user:pw@host:6379", ttl: 600 }),
      (err: Error) => err instanceof TypeError && !err.message.includes("pw@"),
    );
  });
}
