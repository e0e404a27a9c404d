/**
 * The door for backends: /send and /api need one of API_KEYS, sent as `Authorization: Bearer` or
 * `X-API-Key`. With none configured they answer loopback callers only, so nothing is open to the
 * network by default.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { addressKey, type RateLimiter } from "./ratelimit.ts";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

/** Whether `address` (as the runtime reports a peer) is on this machine's loopback. */
export function isLoopback(address: string): boolean {
  return LOOPBACK.test(address);
}

/** How to present a key; the refusals below say it, and the README quotes them. */
const SEND_A_KEY = "Authorization: Bearer <key> or X-API-Key: <key>";

/** 403: no keys are configured and the route was called from off loopback. */
const loopbackOnly = (c: Context) =>
  c.json({
    error: `${c.req.path} answers loopback callers only while API_KEYS is empty: set API_KEYS, ` +
      `then send one of its keys as ${SEND_A_KEY}`,
  }, 403);

/** 401: the route was called without a key. */
const keyRequired = (c: Context) =>
  c.json({ error: `${c.req.path} needs an API key: send one of API_KEYS as ${SEND_A_KEY}` }, 401);

/** 401: the key sent matches none of API_KEYS. */
const keyInvalid = (c: Context) =>
  c.json({ error: "API key invalid: the key sent is not one of API_KEYS" }, 401);

/** 429, with Retry-After: the caller is over MAX_REQUESTS_PER_KEY. */
function rateLimited(c: Context, limiter: RateLimiter) {
  c.header("retry-after", "1");
  return c.json({
    error: `rate limit exceeded: ${limiter.rate} requests per second (MAX_REQUESTS_PER_KEY)`,
  }, 429);
}

/** Keys are compared as SHA-256 digests: equal lengths, so timingSafeEqual applies. */
function digest(key: string): Uint8Array {
  return createHash("sha256").update(key).digest();
}

/**
 * Middleware that refuses requests without a valid key: 401 without one or with a wrong one, 403
 * from off-loopback when no keys are configured, 429 past the rate limit. `remoteAddress` comes
 * from the runtime adapter.
 */
export function requireApiKey(
  keys: string[],
  limiter: RateLimiter,
): MiddlewareHandler<{ Bindings: { remoteAddress: string } }> {
  const digests = keys.map(digest);
  return async (c, next) => {
    // Who is rate-limited: the key that matched, or the caller's address when there are no keys.
    let caller = addressKey(c.env.remoteAddress);
    if (digests.length === 0) {
      if (!isLoopback(c.env.remoteAddress)) return loopbackOnly(c);
    } else {
      const auth = c.req.header("authorization");
      const presented = c.req.header("x-api-key") ??
        (auth?.toLowerCase().startsWith("bearer ") ? auth.slice(7).trim() : undefined);
      if (presented === undefined) return keyRequired(c);
      const presentedDigest = digest(presented);
      // Compare with every key, whatever matched, so timing says nothing about which one did.
      let matched = -1;
      digests.forEach((key, i) => {
        if (timingSafeEqual(key, presentedDigest)) matched = i;
      });
      if (matched < 0) return keyInvalid(c);
      caller = `key ${matched}`;
    }
    if (!limiter.take(caller)) return rateLimited(c, limiter);
    await next();
  };
}
