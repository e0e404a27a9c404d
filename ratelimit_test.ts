/** Token buckets, on a clock the test moves. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Bucket, RateLimiter } from "./ratelimit.ts";

test("a bucket allows a burst of `rate`, then `rate` per second", () => {
  const b = new Bucket(5, 0);
  for (let i = 0; i < 5; i++) assert.ok(b.take(0));
  assert.equal(b.take(0), false);
  assert.equal(b.take(199), false, "not yet a whole token");
  assert.ok(b.take(200), "5 per second: one token each 200 ms");
  assert.equal(b.take(200), false);
  assert.ok(b.full(2000));
});

test("rate 0 means no limit", () => {
  const b = new Bucket(0, 0);
  for (let i = 0; i < 1000; i++) assert.ok(b.take(0));
  assert.ok(new RateLimiter(0).take("x"));
});

test("a limiter keeps one bucket per key and forgets full ones past its sweep size", () => {
  const limiter = new RateLimiter(2, 100);
  assert.ok(limiter.take("a", 0) && limiter.take("a", 0));
  assert.equal(limiter.take("a", 0), false);
  assert.ok(limiter.take("b", 0), "keys do not share a bucket");
  for (let i = 0; i < 200; i++) limiter.take(`ip${i}`, 10_000 + i * 2000);
  assert.ok(limiter.size <= 101, `${limiter.size} keys kept`);
});
