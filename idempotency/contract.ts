/**
 * What every idempotency store must do, as tests: memory_test.ts and sqlite_test.ts run them
 * against their store. Each test is a backend's story: what it sent, what it sent again, what
 * was pushed and what it was answered.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Begun, IdempotencyOptions, IdempotencyStore, IdempotentAnswer } from "./store.ts";

/** A store under test; disposing of it closes the store and removes what it left behind. */
export interface OpenedIdempotency extends AsyncDisposable {
  store: IdempotencyStore;
  /** Runs the store's sweep now; a store that sweeps elsewhere (Redis) resolves when it is done. */
  sweep(): void | Promise<void>;
  /**
   * Lets the requests made so far reach the store and be answered. Default `tick`, enough for a
   * store in this process; one across a network (Redis) needs a round trip.
   */
  settle?(): Promise<void>;
}

/** Opens a new, empty store with these options; throws what the constructor threw. */
export type OpenIdempotency = (
  options: IdempotencyOptions & { now: () => number },
) => OpenedIdempotency;

/** A clock that stands still until a test moves it, in milliseconds since the epoch. */
export function clock(): { now: () => number; advance(ms: number): void } {
  let ms = 1_700_000_000_000;
  return { now: () => ms, advance: (by: number) => void (ms += by) };
}

/**
 * A send route behind the store, as the API will run it: the first request with a key pushes
 * (counted in `pushed`) and keeps its answer; a retry gets that answer marked as a duplicate.
 * `gate`, when given, holds the first request between its push and its answer.
 */
export function sendRoute(store: IdempotencyStore) {
  const route = {
    pushed: 0,
    async send(
      key: string,
      message: string,
      options: { scope?: string; gate?: Promise<void> } = {},
    ): Promise<IdempotentAnswer> {
      const begun = await store.begin(options.scope ?? "key:alice /send", key, message);
      switch (begun.kind) {
        case "first": {
          route.pushed++;
          const answer = { status: 200, body: { id: route.pushed, message, delivered: 1 } };
          await options.gate;
          await begun.finish(answer);
          return answer;
        }
        case "duplicate":
          return { ...begun.answer, body: { ...begun.answer.body as object, duplicate: true } };
        case "in-progress":
          return { status: 409, body: { error: "in progress" } };
        case "reused":
          return { status: 422, body: { error: "reused" } };
      }
    },
  };
  return route;
}

/** The `first` a begin must have found; fails the test with what it found instead. */
function first(begun: Begun) {
  assert.equal(begun.kind, "first");
  return begun as Extract<Begun, { kind: "first" }>;
}

/** Lets pending promises and timers of 0 ms run. */
const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** Registers the contract's tests for the stores `open` makes; each test's name starts `name`. */
export function idempotencyContract(name: string, open: OpenIdempotency): void {
  test(`${name}: a retry with the same key gets the first answer again, marked duplicate, and nothing is pushed again`, async () => {
    const t = clock();
    await using h = open({ ttl: 600, now: t.now });
    const route = sendRoute(h.store);
    const answer = await route.send("order-42", "hello");
    assert.deepEqual(answer, { status: 200, body: { id: 1, message: "hello", delivered: 1 } });
    t.advance(599_999);
    assert.deepEqual(await route.send("order-42", "hello"), {
      status: 200,
      body: { id: 1, message: "hello", delivered: 1, duplicate: true },
    });
    assert.equal(route.pushed, 1);
    const { keys, inProgress, evicted } = h.store.stats();
    assert.deepEqual({ keys, inProgress, evicted }, { keys: 1, inProgress: 0, evicted: 0 });
  });

  test(`${name}: each duplicate gets a copy of the answer; changing one changes no other`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    await first(await h.store.begin("s", "k", "f")).finish({ status: 202, body: { queued: true } });
    const one = await h.store.begin("s", "k", "f");
    assert.equal(one.kind, "duplicate");
    (one as { answer: { body: { queued: boolean } } }).answer.body.queued = false;
    assert.deepEqual(await h.store.begin("s", "k", "f"), {
      kind: "duplicate",
      answer: { status: 202, body: { queued: true } },
    });
  });

  test(`${name}: after IDEMPOTENCY_TTL the key is forgotten and the same request runs again`, async () => {
    const t = clock();
    await using h = open({ ttl: 600, now: t.now });
    const route = sendRoute(h.store);
    await route.send("order-42", "hello");
    t.advance(600_000);
    assert.deepEqual(await route.send("order-42", "hello"), {
      status: 200,
      body: { id: 2, message: "hello", delivered: 1 },
    });
    assert.equal(route.pushed, 2);
  });

  test(`${name}: a key belongs to its scope: another backend, or another route, with the same key runs its own request`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    const route = sendRoute(h.store);
    await route.send("order-42", "hello", { scope: "key:alice /send" });
    const bob = await route.send("order-42", "hello", { scope: "key:bob /send" });
    const api = await route.send("order-42", "hello", { scope: "key:alice /api/uids/{uid}/send" });
    assert.equal(route.pushed, 3);
    assert.equal((bob.body as { duplicate?: boolean }).duplicate, undefined);
    assert.equal((api.body as { duplicate?: boolean }).duplicate, undefined);
  });

  test(`${name}: a key sent again with a different request is refused as reused, finished or running, and pushes nothing`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    const running = first(await h.store.begin("s", "k", "message A"));
    assert.deepEqual(await h.store.begin("s", "k", "message B"), { kind: "reused" });
    await running.finish({ status: 200, body: {} });
    assert.deepEqual(await h.store.begin("s", "k", "message B"), { kind: "reused" });
    assert.equal((await h.store.begin("s", "k", "message A")).kind, "duplicate");
  });

  test(`${name}: an abandoned request (its send failed) releases the key, and the retry runs`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    first(await h.store.begin("s", "k", "f")).abandon();
    const retry = first(await h.store.begin("s", "k", "f"));
    retry.abandon();
    retry.abandon(); // twice is harmless
    // A handler that throws before finishing releases its key when `using` disposes of it.
    await assert.rejects(async () => {
      using _begun = first(await h.store.begin("s", "k", "f"));
      throw new Error("the hub threw");
    }, /the hub threw/);
    await first(await h.store.begin("s", "k", "f")).finish({ status: 200, body: { ok: true } });
    assert.equal(h.store.stats().inProgress, 0);
  });

  test(`${name}: two requests with the same key at once push once; the second waits and gets the first's answer`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    const route = sendRoute(h.store);
    const gate = Promise.withResolvers<void>();
    const one = route.send("order-42", "hello", { gate: gate.promise });
    const two = route.send("order-42", "hello");
    await (h.settle ?? tick)();
    assert.equal(route.pushed, 1);
    assert.equal(h.store.stats().inProgress, 1, "the second waits; it did not claim the key");
    gate.resolve();
    assert.deepEqual(await one, { status: 200, body: { id: 1, message: "hello", delivered: 1 } });
    assert.deepEqual(await two, {
      status: 200,
      body: { id: 1, message: "hello", delivered: 1, duplicate: true },
    });
    assert.equal(route.pushed, 1);
  });

  test(`${name}: fifty retries at once push once, and all get the same answer`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    const route = sendRoute(h.store);
    const answers = await Promise.all(
      Array.from({ length: 50 }, () => route.send("order-42", "hello", { gate: tick() })),
    );
    assert.equal(route.pushed, 1);
    assert.equal(answers.filter((a) => (a.body as { duplicate?: true }).duplicate).length, 49);
    for (const a of answers) assert.equal((a.body as { id: number }).id, 1);
  });

  test(`${name}: when the first is abandoned, exactly one waiter runs the send and the others get its answer`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    const begun = first(await h.store.begin("s", "k", "f"));
    const waiters = Array.from({ length: 5 }, () => h.store.begin("s", "k", "f"));
    await (h.settle ?? tick)();
    begun.abandon();
    // The waiter that woke first runs; the others wait for it in turn.
    const next = await Promise.race(waiters);
    await first(next).finish({ status: 200, body: { id: 2 } });
    const kinds = (await Promise.all(waiters)).map((b) => b.kind).sort();
    assert.deepEqual(kinds, ["duplicate", "duplicate", "duplicate", "duplicate", "first"]);
  });

  test(`${name}: waiting is bounded: a request stuck in progress makes its twin answer in-progress after waitMs`, async () => {
    await using h = open({ ttl: 600, now: clock().now, waitMs: 50 });
    const stuck = first(await h.store.begin("s", "k", "f"));
    const started = performance.now();
    assert.deepEqual(await h.store.begin("s", "k", "f"), { kind: "in-progress" });
    const waited = performance.now() - started;
    assert.ok(waited >= 45 && waited < 1000, `waited ${waited} ms`);
    stuck.abandon();

    await using now = open({ ttl: 600, now: clock().now, waitMs: 0 });
    using _held = first(await now.store.begin("s", "k", "f"));
    assert.deepEqual(await now.store.begin("s", "k", "f"), { kind: "in-progress" });
  });

  test(`${name}: past maxKeys the oldest answers go first, expired ones before fresh; a forgotten key runs again`, async () => {
    const t = clock();
    await using h = open({ ttl: 60, now: t.now, maxKeys: 3 });
    const route = sendRoute(h.store);
    await route.send("old", "m"); // expires
    t.advance(60_000);
    for (const key of ["a", "b", "c"]) {
      await route.send(key, "m");
      t.advance(1);
    }
    assert.equal(h.store.stats().evicted, 0, "the expired one went, and does not count");
    await route.send("d", "m");
    assert.equal(h.store.stats().evicted, 1);
    assert.equal(h.store.stats().keys, 3);
    const pushed = route.pushed;
    for (const key of ["b", "c", "d"]) await route.send(key, "m");
    assert.equal(route.pushed, pushed, "the newest three are kept");
    await route.send("a", "m");
    assert.equal(route.pushed, pushed + 1, "the oldest was forgotten, so its retry ran");
  });

  test(`${name}: a sweep frees the expired answers`, async () => {
    const t = clock();
    await using h = open({ ttl: 60, now: t.now });
    const route = sendRoute(h.store);
    await route.send("a", "m");
    await route.send("b", "m");
    t.advance(30_000);
    await route.send("c", "m");
    t.advance(30_000);
    await h.sweep();
    assert.equal(h.store.stats().keys, 1);
  });

  test(`${name}: a key that is not 1 to 256 printable ASCII characters is refused, saying what is allowed`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    const refusals: [string, RegExp][] = [
      ["", /Idempotency-Key is empty: send 1 to 256 characters/],
      ["x".repeat(257), /Idempotency-Key is 257 characters long; the limit is 256/],
      ["order 42", /printable ASCII characters without spaces \(0x21 to 0x7E\)/],
      ["заказ-42", /printable ASCII/],
      ["order\t42", /printable ASCII/],
      ["order-42\u007f", /printable ASCII/],
    ];
    for (const [key, message] of refusals) {
      await assert.rejects(h.store.begin("s", key, "f"), (err: Error) => {
        assert.ok(err instanceof RangeError);
        assert.match(err.message, message);
        return true;
      }, JSON.stringify(key));
    }
    const longest = "~".repeat(256);
    assert.equal((await h.store.begin("s", longest, "f")).kind, "first");
  });

  test(`${name}: an answer that cannot be kept is refused with a TypeError, and the key is released`, async () => {
    await using h = open({ ttl: 600, now: clock().now });
    await assert.rejects(
      first(await h.store.begin("s", "k", "f")).finish({ status: 99, body: {} }),
      { name: "TypeError", message: /status must be a whole number from 100 to 599, not 99/ },
    );
    await assert.rejects(
      first(await h.store.begin("s", "k", "f")).finish({ status: 200, body: undefined }),
      { name: "TypeError", message: /body must be JSON, not undefined/ },
    );
    await assert.rejects(
      first(await h.store.begin("s", "k", "f")).finish({ status: 200, body: { n: 1n } }),
      { name: "TypeError", message: /body must be JSON/ },
    );
    const begun = first(await h.store.begin("s", "k", "f"));
    await begun.finish({ status: 200, body: null });
    await assert.rejects(begun.finish({ status: 200, body: null }), /finish was called after/);
    assert.deepEqual(await h.store.begin("s", "k", "f"), {
      kind: "duplicate",
      answer: { status: 200, body: null },
    });
  });

  test(`${name}: closing the store rejects the waiters, later begins and a late finish, saying it is closed`, async () => {
    const h = open({ ttl: 600, now: clock().now });
    try {
      const running = first(await h.store.begin("s", "k", "f"));
      const waiter = h.store.begin("s", "k", "f");
      await (h.settle ?? tick)();
      await h.store.close();
      await assert.rejects(waiter, /is closed/);
      await assert.rejects(h.store.begin("s", "other", "f"), /is closed/);
      await assert.rejects(running.finish({ status: 200, body: {} }), /is closed/);
      running.abandon();
      await h.store.close(); // twice is harmless
    } finally {
      await h[Symbol.asyncDispose]();
    }
  });
}
