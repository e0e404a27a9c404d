/**
 * How a webhook POST is signed, and how a receiver checks it: Stripe's scheme. The header is
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under WEBHOOK_SECRET. The timestamp is
 * inside the signed text, so a receiver that refuses old timestamps refuses replays, and one that
 * refuses a changed body refuses forgeries. node:crypto: the same code on Deno and Bun.
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";

/** The header that carries the signature, on every webhook and gate POST. */
export const SIGNATURE_HEADER = "X-Deno-Pusher-Signature";

/**
 * Seconds a signature's timestamp may be away from the receiver's clock, either way: long enough
 * for a retry in flight and some clock skew, short enough that a captured request soon stops
 * working. Stripe's default.
 */
export const SIGNATURE_TOLERANCE_SEC = 300;

/** Hex digits of an HMAC-SHA256. */
const HEX_LENGTH = 64;

/** The hex HMAC-SHA256 of `<t>.<body>` under `secret`. */
function sign(secret: string, t: number, body: string | Uint8Array): string {
  return createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex");
}

/**
 * The signature header's value for `body`, the exact bytes POSTed, signed at `t` (unix seconds;
 * default now). Throws a RangeError when `t` is not a whole number of 0 or more.
 */
export function signatureHeader(
  secret: string,
  body: string | Uint8Array,
  t: number = Math.floor(Date.now() / 1000),
): string {
  if (!Number.isSafeInteger(t) || t < 0) {
    throw new RangeError(`a signature's time must be whole unix seconds, not ${t}`);
  }
  return `t=${t},v1=${sign(secret, t, body)}`;
}

/** What verifySignature may be told. */
export interface VerifyOptions {
  /** Seconds the timestamp may be from now, either way. Default SIGNATURE_TOLERANCE_SEC. */
  toleranceSec?: number;
  /** The receiver's clock, ms since the epoch. Default Date.now. */
  now?: () => number;
}

/**
 * Whether `header` (the SIGNATURE_HEADER's value, as received) signs `body` (the raw body, before
 * any parsing) under `secret`, at a time within `toleranceSec` of now. False for a missing or
 * malformed header, a stale or future timestamp, a changed body or another secret; it never
 * throws. Several `v1=` entries (a sender rotating its secret) pass when one of them matches.
 */
export function verifySignature(
  secret: string,
  header: string | null | undefined,
  body: string | Uint8Array,
  { toleranceSec = SIGNATURE_TOLERANCE_SEC, now = Date.now }: VerifyOptions = {},
): boolean {
  if (typeof header !== "string") return false;
  let t: number | undefined;
  const signatures: string[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) return false;
    const [name, value] = [part.slice(0, eq).trim(), part.slice(eq + 1).trim()];
    if (name === "t") {
      if (t !== undefined || !/^\d{1,15}$/.test(value)) return false;
      t = Number(value);
    } else if (name === "v1") {
      if (value.length !== HEX_LENGTH || !/^[0-9a-f]+$/i.test(value)) return false;
      signatures.push(value.toLowerCase());
    } // Other schemes (v0, a future v2) are ignored, as Stripe's verifiers do.
  }
  if (t === undefined || signatures.length === 0) return false;
  if (Math.abs(now() / 1000 - t) > toleranceSec) return false;
  const expected = Buffer.from(sign(secret, t, body), "hex");
  let found = false;
  for (const signature of signatures) {
    // Every entry is compared, in constant time: how long it takes says nothing of which matched.
    if (timingSafeEqual(expected, Buffer.from(signature, "hex"))) found = true;
  }
  return found;
}
