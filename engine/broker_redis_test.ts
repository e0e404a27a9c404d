/**
 * The Redis broker on a real redis-server that the test starts. Two brokers on the same Redis and
 * prefix are two nodes of one cluster: what each node's hub is handed, in which order, what is
 * kept, and what happens while Redis is down and once it is back. Each test gets its own prefix, so
 * tests share one server, except the one that stops its own.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { RedisBroker, type RedisBrokerOptions } from "./broker_redis.ts";
import { RedisHistory } from "./history_redis.ts";
import { groupStream, type Publication, uidStream } from "./stream.ts";
import { findRedisServer, startRedis, testWithoutRedis } from "../redis_testkit.ts";

/** Milliseconds a test waits for an event before it fails: far above what any takes. */
const EVENT_MS = 4_000;

/** A prefix no other test uses. */
const freshPrefix = () => `test-${randomUUID()}:`;

/** Rejects after `ms`, naming what did not happen; the timer is cleared once `promise` settles. */
function within<T>(promise: Promise<T>, what: string, ms = EVENT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A hub's stand-in: keeps what it is handed, and lets a test await the n-th publication. */
class Received {
  readonly publications: Publication[] = [];
  #waiters: { n: number; resolve: () => void }[] = [];

  readonly handler = (publication: Publication): void => {
    this.publications.push(publication);
    this.#waiters = this.#waiters.filter((w) => {
      if (this.publications.length < w.n) return true;
      w.resolve();
      return false;
    });
  };

  /** Resolves once `n` publications were handed over; fails the test after EVENT_MS. */
  count(n: number, who: string): Promise<void> {
    if (this.publications.length >= n) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ n, resolve });
    return within(
      promise,
      `${who} to be handed ${n} publications (has ${this.publications.length})`,
    );
  }

  get ids(): number[] {
    return this.publications.map((p) => p.id);
  }
}

/** Fails unless `ids` strictly increase. */
function assertIncreasing(ids: number[], who: string): void {
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i] > ids[i - 1], `${who}: id ${ids[i]} came after ${ids[i - 1]}`);
  }
}

if (!findRedisServer()) {
  testWithoutRedis("the Redis broker's tests");
} else {
  const redis = await startRedis();
  after(() => redis.stop());

  /** A node's broker on the shared server; disposing of it closes the broker. */
  const openNode = (options: Omit<RedisBrokerOptions, "url"> & { url?: string }) => {
    const broker = new RedisBroker({ url: redis.url, ...options });
    return Object.assign(broker, { [Symbol.asyncDispose]: () => broker.close() });
  };

  test("redis broker: publications from two nodes reach every subscriber of both, once each, in id order", async () => {
    const prefix = freshPrefix();
    await using a = openNode({ prefix });
    await using b = openNode({ prefix });
    const hubs = { a1: new Received(), a2: new Received(), b1: new Received() };
    a.subscribe(hubs.a1.handler);
    a.subscribe(hubs.a2.handler);
    b.subscribe(hubs.b1.handler);
    await within(Promise.all([a.subscribed(), b.subscribed()]), "both nodes to subscribe");

    const streams = Array.from(
      { length: 12 },
      (_, i) => i % 3 ? uidStream(`u${i}`) : groupStream(`g${i}`),
    );
    const sent = await Promise.all(
      Array.from({ length: 300 }, (_, i) => {
        const node = i % 2 ? a : b;
        return node.publish(streams[i % streams.length], `message ${i}`, {
          uid: `u${i}`,
          client: `c${i}`,
          echo: i % 4 === 0,
        });
      }),
    );
    const ids = sent.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "ids are unique across nodes");

    for (const [who, hub] of Object.entries(hubs)) {
      await hub.count(sent.length, who);
      assert.equal(hub.publications.length, sent.length, `${who} got each once`);
      assertIncreasing(hub.ids, who);
      assert.deepEqual(hub.ids, [...ids].sort((x, y) => x - y), `${who} got every one`);
    }
    const byId = new Map(sent.map((p) => [p.id, p]));
    for (const p of hubs.b1.publications) assert.deepEqual(p, byId.get(p.id), "as published");
  });

  test("redis broker: a publish resolves once its own node's subscribers have it", async () => {
    await using a = openNode({ prefix: freshPrefix() });
    const hub = new Received();
    a.subscribe(hub.handler);
    await within(a.subscribed(), "the node to subscribe");
    for (let i = 0; i < 5; i++) {
      const p = await a.publish(uidStream("alice"), `hello ${i}`);
      assert.deepEqual(hub.publications.at(-1), p, "handed over before the publish resolved");
    }
  });

  test("redis broker: a subscriber that throws is reported, and the others still get the publication", async () => {
    const told: [unknown, Publication][] = [];
    await using a = openNode({ prefix: freshPrefix(), onError: (e, p) => told.push([e, p]) });
    const hub = new Received();
    a.subscribe(() => {
      throw new Error("hub bug");
    });
    a.subscribe(hub.handler);
    await within(a.subscribed(), "the node to subscribe");
    const p1 = await a.publish(uidStream("alice"), "one");
    const p2 = await a.publish(uidStream("alice"), "two");
    assert.deepEqual(hub.publications, [p1, p2]);
    assert.deepEqual(told.map(([e, p]) => [(e as Error).message, p.id]), [
      ["hub bug", p1.id],
      ["hub bug", p2.id],
    ]);
  });

  test("redis broker: each publication is kept in the Redis history before anyone sees it", async () => {
    const prefix = freshPrefix();
    const bounds = { size: 1000, ttl: 3600, sweepMs: 0 };
    const historyA = new RedisHistory({ url: redis.url, prefix, ...bounds });
    const historyB = new RedisHistory({ url: redis.url, prefix, ...bounds });
    const reader = new RedisHistory({ url: redis.url, prefix, ...bounds });
    try {
      await using a = openNode({ prefix, history: historyA });
      await using b = openNode({ prefix, history: historyB });
      const streams = [uidStream("alice"), uidStream("bob"), groupStream("chat")];
      // What b's hub is handed must be readable at that moment: resume.ts's horizon rests on it.
      const seenUnread: number[] = [];
      const reads: Promise<void>[] = [];
      b.subscribe((p) => {
        reads.push(
          reader.read(p.stream, p.id - 1, 1).then((page) => {
            if (page.publications[0]?.id !== p.id) seenUnread.push(p.id);
          }),
        );
      });
      await within(b.subscribed(), "node b to subscribe");
      const sent = await Promise.all(
        Array.from(
          { length: 60 },
          (_, i) =>
            (i % 2 ? a : b).publish(streams[i % 3], `message ${i}`, {
              uid: "alice",
              client: `c${i}`,
              echo: true,
            }),
        ),
      );
      await Promise.all(reads);
      assert.deepEqual(seenUnread, []);
      for (const stream of streams) {
        const page = await reader.read(stream, 0, 1000);
        // The store keeps who sent it, not `echo`, which is live only.
        const expected = sent.filter((p) => p.stream === stream).sort((x, y) => x.id - y.id)
          .map(({ from, ...rest }) => ({
            ...rest,
            from: { uid: from!.uid, client: from!.client },
          }));
        assert.deepEqual(page.publications, expected, stream);
        assert.equal(page.recovered, true);
      }
    } finally {
      await Promise.all([historyA.close(), historyB.close(), reader.close()]);
    }
  });

  test("redis broker: ids start above the floor a node gives, and never go back", async () => {
    const prefix = freshPrefix();
    // A MessageIds floor is the clock in microseconds: 16 digits, past Lua's default %.14g.
    const floor = 1_733_000_000_123_456;
    await using a = openNode({ prefix, floor });
    assert.equal((await a.publish(uidStream("alice"), "first")).id, floor + 1);
    await using b = openNode({ prefix, floor: 10 });
    assert.equal((await b.publish(uidStream("alice"), "second")).id, floor + 2);
    await using c = openNode({ prefix, floor: floor + 100 });
    assert.equal((await c.publish(uidStream("alice"), "third")).id, floor + 101);
    assert.equal((await a.publish(uidStream("alice"), "fourth")).id, floor + 102);
  });

  test("redis broker: prefixes keep two deployments on one Redis apart", async () => {
    const one = new Received();
    const two = new Received();
    await using a = openNode({ prefix: freshPrefix() });
    await using b = openNode({ prefix: freshPrefix() });
    a.subscribe(one.handler);
    b.subscribe(two.handler);
    await within(Promise.all([a.subscribed(), b.subscribed()]), "both deployments to subscribe");
    const p1 = await a.publish(uidStream("alice"), "for deployment one");
    // Redis hands a connection its messages in the order it published them: had b's subscriber
    // been given p1, it would have been before p2.
    const p2 = await b.publish(uidStream("alice"), "for deployment two");
    assert.deepEqual([p1.id, p2.id], [1, 1], "each deployment counts its own ids");
    assert.deepEqual(one.publications, [p1]);
    assert.deepEqual(two.publications, [p2]);
  });

  test("redis broker: close lets every publish already made settle, then refuses more", async () => {
    await using a = openNode({ prefix: freshPrefix() });
    const hub = new Received();
    a.subscribe(hub.handler);
    await within(a.subscribed(), "the node to subscribe");
    const settled: string[] = [];
    const publishes = Array.from(
      { length: 50 },
      (_, i) =>
        a.publish(uidStream("alice"), `message ${i}`).then(
          () => void settled.push("fulfilled"),
          (err) => void settled.push(`rejected: ${err.message}`),
        ),
    );
    await within(a.close(), "close");
    assert.deepEqual(settled, Array(50).fill("fulfilled"), "all settled before close resolved");
    assert.equal(hub.publications.length, 50, "and each reached the subscriber");
    await Promise.all(publishes);
    await assert.rejects(a.publish(uidStream("alice"), "late"), /the broker is closed/);
  });

  test("redis broker: with Redis down, publish rejects naming the server but not its password", async () => {
    const down = await startRedis();
    await down.stop(); // a port nobody answers on
    const told: Error[] = [];
    const url = `redis://deployer:s3cret-pw@127.0.0.1:${down.port}`;
    await using a = openNode({ url, prefix: freshPrefix(), onRedisError: (e) => told.push(e) });
    const started = Date.now();
    const err = await within(
      a.publish(uidStream("alice"), "nobody hears").then(
        () => assert.fail("the publish resolved"),
        (e: Error) => e,
      ),
      "the publish to reject",
    );
    assert.ok(Date.now() - started < EVENT_MS, "promptly");
    assert.ok(err.message.includes(`127.0.0.1:${down.port}`), `names the server: ${err.message}`);
    assert.ok(!err.message.includes("s3cret-pw"), `hides the password: ${err.message}`);
    assert.ok(told.length > 0, "the failed connection was told");
    for (const e of told) assert.ok(!e.message.includes("s3cret-pw"), e.message);
  });

  test("redis broker: when Redis stops, publish rejects; when it is back, the nodes hear each other again", async () => {
    let server = await startRedis();
    const prefix = freshPrefix();
    const down = { a: Promise.withResolvers<void>(), b: Promise.withResolvers<void>() };
    const hubB = new Received();
    try {
      await using a = openNode({
        url: server.url,
        prefix,
        onRedisError: () => down.a.resolve(),
      });
      await using b = openNode({
        url: server.url,
        prefix,
        onRedisError: () => down.b.resolve(),
      });
      b.subscribe(hubB.handler);
      await within(Promise.all([a.subscribed(), b.subscribed()]), "both nodes to subscribe");
      const before = await a.publish(uidStream("alice"), "before");
      await hubB.count(1, "node b");

      await server.stop();
      // Each node's connections notice, and fail to reconnect: that is what they report.
      await within(
        Promise.all([down.a.promise, down.b.promise]),
        "both nodes to report Redis down",
      );
      await assert.rejects(
        within(a.publish(uidStream("alice"), "while down"), "the publish to reject"),
        (err: Error) => err.message.includes(server.url.replace("redis://", "")),
      );

      server = await startRedis({ port: server.port }); // the same port, and no data
      await within(Promise.all([a.subscribed(), b.subscribed()]), "both nodes to subscribe again");
      const back = await within(a.publish(uidStream("alice"), "back"), "the publish after restart");
      await hubB.count(2, "node b");
      assert.deepEqual(hubB.publications, [before, back]);
      assert.ok(back.id > before.id, "the counter Redis lost restarts above the ids seen");
    } finally {
      await server.stop();
    }
  });
}
