/**
 * The Redis history store on a real redis-server that the test starts: the contract every store
 * keeps, then what only a server can show (another store finding what one kept, a Redis that lost
 * its data, a Redis that is down). Each store gets its own key prefix, so tests share one server.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { Redis } from "ioredis";
import { historyContract } from "./history_contract.ts";
import { RedisHistory, type RedisHistoryOptions } from "./history_redis.ts";
import { type Publication, uidStream } from "./stream.ts";
import { findRedisServer, startRedis, testWithoutRedis } from "../redis_testkit.ts";

const ALICE = uidStream("alice");
const pub = (id: number, stream = ALICE, ts = Date.now()): Publication => ({
  id,
  stream,
  data: `message ${id}`,
  ts,
});

/** A prefix no other test uses. */
const freshPrefix = () => `test-${randomUUID()}:`;

if (!findRedisServer()) {
  testWithoutRedis("the Redis history store's tests");
} else {
  const redis = await startRedis();
  after(() => redis.stop());

  /** A store on its own prefix; disposing of it closes the store. */
  const openStore = (options: Omit<RedisHistoryOptions, "url">) => {
    const store = new RedisHistory({
      url: redis.url,
      prefix: freshPrefix(),
      sweepMs: 0,
      ...options,
    });
    return {
      store,
      sweep: () => void store.sweep(),
      [Symbol.asyncDispose]: () => store.close(),
    };
  };

  historyContract("redis", openStore);

  test("redis: a store opened later on the same prefix finds what was kept, trim marks and written marks included", async () => {
    const prefix = freshPrefix();
    const ts = Date.now();
    const first = new RedisHistory({ url: redis.url, prefix, size: 3, ttl: 3600, sweepMs: 0 });
    await Promise.all([1, 2, 3, 4, 5].map((id) => first.append(pub(id, ALICE, ts))));
    first.wrote("alice", 5);
    const unwaited = first.append(pub(6, uidStream("bob"), ts));
    await first.close(); // saves the mark, and the append is answered before the connection ends
    await unwaited;

    const second = new RedisHistory({ url: redis.url, prefix, size: 3, ttl: 3600, sweepMs: 0 });
    try {
      const page = await second.read(ALICE, 0, 10);
      assert.deepEqual(page.publications.map((p) => p.id), [3, 4, 5]);
      assert.equal(page.recovered, false);
      assert.equal((await second.read(ALICE, 2, 10)).recovered, true, "the mark survived: it is 2");
      assert.deepEqual((await second.read(uidStream("bob"), 0, 10)).publications, [
        pub(6, uidStream("bob"), ts),
      ]);
      assert.equal(second.writtenThrough("alice"), 5, "the written mark was loaded");
    } finally {
      await second.close();
    }
  });

  test("redis: prefixes keep deployments apart on one Redis", async () => {
    await using a = openStore({ size: 10, ttl: 3600 });
    await using b = openStore({ size: 10, ttl: 3600 });
    await a.store.append(pub(1));
    assert.deepEqual((await b.store.read(ALICE, 0, 10)).publications, []);
    assert.equal((await a.store.read(ALICE, 0, 10)).publications.length, 1);
  });

  test("redis: a Redis that lost its data (restart, FLUSHDB) answers recovered=false from before", async () => {
    const prefix = freshPrefix();
    const store = new RedisHistory({ url: redis.url, prefix, size: 10, ttl: 3600, sweepMs: 0 });
    const admin = new Redis(redis.url);
    try {
      await store.append(pub(1));
      await store.append(pub(2));
      const keys = await admin.keys(`${prefix}*`);
      await admin.del(...keys);
      await store.append(pub(3));
      const page = await store.read(ALICE, 0, 10);
      assert.deepEqual([page.publications.map((p) => p.id), page.recovered], [[3], false]);
      assert.equal((await store.read(ALICE, 2, 10)).recovered, true);
    } finally {
      await store.close();
      await admin.quit();
    }
  });

  test("redis: a sweep frees the expired publications of streams nobody writes to", async () => {
    let now = 1_700_000_000_000;
    const prefix = freshPrefix();
    const store = new RedisHistory({
      url: redis.url,
      prefix,
      size: 1000,
      ttl: 60,
      sweepMs: 0,
      now: () => now,
    });
    const admin = new Redis(redis.url);
    try {
      await store.append(pub(1, ALICE, now));
      await store.append(pub(2, uidStream("bob"), now));
      now += 30_000;
      await store.append(pub(3, ALICE, now));
      now += 31_000;
      assert.equal(await store.sweep(), 2);
      assert.equal(await admin.exists(`${prefix}history:stream:uid:bob`), 0, "bob's key is gone");
      assert.deepEqual(
        await admin.zrange(`${prefix}history:stream:uid:alice`, "0", "-1", "WITHSCORES"),
        [
          JSON.stringify({ id: 3, ts: now - 31_000, data: "message 3" }),
          "3",
        ],
      );
      assert.deepEqual(await admin.hgetall(`${prefix}history:trimmed`), {
        "uid:alice": "1",
        "uid:bob": "2",
      });
      assert.equal(await store.sweep(), 0, "nothing more has expired");
    } finally {
      await store.close();
      await admin.quit();
    }
  });

  test("redis: with Redis down, appends and reads reject naming the server but not its password", async () => {
    const down = await startRedis();
    await down.stop(); // a port nobody answers on
    const told: Error[] = [];
    const url = `redis://deployer:s3cret-pw@127.0.0.1:${down.port}`;
    const store = new RedisHistory({
      url,
      size: 10,
      ttl: 3600,
      sweepMs: 0,
      onError: (e) => told.push(e),
    });
    try {
      const results = await Promise.allSettled([store.append(pub(1)), store.read(ALICE, 0, 10)]);
      for (const result of results) {
        assert.equal(result.status, "rejected");
        const { message } = (result as PromiseRejectedResult).reason as Error;
        assert.ok(message.includes(`127.0.0.1:${down.port}`), `names the server: ${message}`);
        assert.ok(!message.includes("s3cret-pw"), `hides the password: ${message}`);
      }
      assert.ok(told.length > 0, "the failed connection was told");
      for (const err of told) assert.ok(!err.message.includes("s3cret-pw"), err.message);
    } finally {
      await store.close();
    }
  });

  test("redis: a URL that is not redis:// is refused without repeating it", () => {
    assert.throws(
      () => new RedisHistory({ url: "http://x:pw@host", size: 10, ttl: 10, sweepMs: 0 }),
      (err: Error) => err instanceof TypeError && !err.message.includes("pw"),
    );
  });
}
