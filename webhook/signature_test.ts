/**
 * The webhook signature: what a backend checks before it believes a POST came from deno-pusher.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { SIGNATURE_TOLERANCE_SEC, signatureHeader, verifySignature } from "./signature.ts";

const SECRET = "whsec_test";
const BODY = '{"events":[]}';
/** 2023-11-14T22:13:20Z, in unix seconds. */
const T = 1_700_000_000;
/** The receiver's clock, `offset` seconds after T. */
const at = (offset: number) => () => (T + offset) * 1000;

test("the header is Stripe's: t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>", () => {
  // Computed with `printf '1700000000.{"events":[]}' | openssl dgst -sha256 -hmac whsec_test`.
  assert.equal(
    signatureHeader(SECRET, BODY, T),
    "t=1700000000,v1=4f6f9b7a41398ad124e52a1320534f978e522923f3f2b2724e31d7a9dbf78a7f",
  );
  assert.match(signatureHeader(SECRET, BODY), /^t=\d{10},v1=[0-9a-f]{64}$/);
  assert.throws(() => signatureHeader(SECRET, BODY, 1.5), RangeError);
});

test("a backend accepts the body it was sent, signed just now, as a string or as the raw bytes", () => {
  const header = signatureHeader(SECRET, BODY, T);
  assert.equal(verifySignature(SECRET, header, BODY, { now: at(0) }), true);
  assert.equal(
    verifySignature(SECRET, header, new TextEncoder().encode(BODY), { now: at(0) }),
    true,
  );
  assert.equal(
    verifySignature(SECRET, signatureHeader(SECRET, BODY), BODY),
    true,
    "now, by default",
  );
});

test("a tampered body, another secret or a changed timestamp fail verification", () => {
  const header = signatureHeader(SECRET, BODY, T);
  assert.equal(verifySignature(SECRET, header, '{"events":[1]}', { now: at(0) }), false);
  assert.equal(verifySignature("another secret", header, BODY, { now: at(0) }), false);
  const moved = header.replace(`t=${T}`, `t=${T + 1}`);
  assert.equal(verifySignature(SECRET, moved, BODY, { now: at(0) }), false);
});

test("a replay after the tolerance, or a timestamp too far ahead, fails; within it, passes", () => {
  const header = signatureHeader(SECRET, BODY, T);
  const tolerance = SIGNATURE_TOLERANCE_SEC;
  assert.equal(verifySignature(SECRET, header, BODY, { now: at(tolerance) }), true);
  assert.equal(verifySignature(SECRET, header, BODY, { now: at(tolerance + 1) }), false, "stale");
  assert.equal(verifySignature(SECRET, header, BODY, { now: at(-tolerance - 1) }), false, "future");
  assert.equal(verifySignature(SECRET, header, BODY, { now: at(30), toleranceSec: 10 }), false);
});

test("malformed headers fail and never throw", () => {
  const v1 = signatureHeader(SECRET, BODY, T).split(",")[1];
  const now = at(0);
  for (
    const header of [
      undefined,
      null,
      "",
      "garbage",
      `${v1}`, // no timestamp
      `t=${T}`, // no signature
      `t=${T},v1=`,
      `t=${T},v1=xyz`,
      `t=${T},${v1.slice(0, -2)}`, // short
      `t=${T},${v1}00`, // long
      `t=abc,${v1}`,
      `t=-${T},${v1}`,
      `t=${T},t=${T},${v1}`,
      `t=${T},${v1},junk`,
    ]
  ) {
    assert.equal(verifySignature(SECRET, header, BODY, { now }), false, String(header));
  }
});

test("during a secret rotation, a header with several v1 entries passes when one matches", () => {
  const good = signatureHeader(SECRET, BODY, T).split(",")[1];
  const other = signatureHeader("old secret", BODY, T).split(",")[1];
  const header = `t=${T},${other},${good}`;
  assert.equal(verifySignature(SECRET, header, BODY, { now: at(0) }), true);
  assert.equal(verifySignature("third", header, BODY, { now: at(0) }), false);
  assert.equal(verifySignature(SECRET, `t=${T},v0=abc,${good}`, BODY, { now: at(0) }), true);
});
