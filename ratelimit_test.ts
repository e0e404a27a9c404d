/** Token buckets, on a clock the test moves. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { addressKey, Bucket, RateLimiter } from "./ratelimit.ts";

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

test("past its capacity a limiter evicts the least recently used key, even when no bucket refilled", () => {
  const limiter = new RateLimiter(1, 100);
  assert.ok(limiter.take("busy", 0));
  for (let i = 0; i < 99; i++) limiter.take(`ip${i}`, 0);
  assert.equal(limiter.take("busy", 0), false, "busy is over its rate");
  for (let i = 99; i < 300; i++) {
    limiter.take(`ip${i}`, 0);
    if (i % 50 === 0) assert.equal(limiter.take("busy", 0), false, "a key in use is kept");
  }
  assert.ok(limiter.size <= 100, `${limiter.size} keys kept`);
  assert.ok(limiter.take("ip0", 0), "the oldest idle key was forgotten");
});

test("IPv6 callers are limited per /64; IPv4 and IPv4-mapped addresses per address", () => {
  assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:0db8:0001:0002::"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(addressKey("::ffff:10.0.0.7"), "10.0.0.7");
  assert.equal(addressKey("10.0.0.7"), "10.0.0.7");
  assert.notEqual(addressKey("2001:db8:1:2::1"), addressKey("2001:db8:1:3::1"));
  const limiter = new RateLimiter(2);
  assert.ok(limiter.take(addressKey("2001:db8:1:2::1"), 0));
  assert.ok(limiter.take(addressKey("2001:db8:1:2::2"), 0));
  assert.equal(limiter.take(addressKey("2001:db8:1:2::ffff"), 0), false, "one /64, one bucket");
});
