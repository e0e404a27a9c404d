/**
 * The door for backends: /send and /api need one of API_KEYS, sent as `Authorization: Bearer` or
 * `X-API-Key`. With none configured they answer loopback callers only, so nothing is open to the
 * network by default.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import type { RateLimiter } from "./ratelimit.ts";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

/** Whether `address` (as the runtime reports a peer) is on this machine's loopback. */
export function isLoopback(address: string): boolean {
  return LOOPBACK.test(address);
}

/** Keys are compared as SHA-256 digests: equal lengths, so timingSafeEqual applies. */
function digest(key: string): Uint8Array {
  return createHash("sha256").update(key).digest();
}

/**
 * Middleware that refuses requests without a valid key: 401 without one or with a wrong one, 403
 * from off-loopback when no keys are configured. `remoteAddress` comes from the runtime adapter.
 */
export function requireApiKey(
  keys: string[],
  limiter: RateLimiter,
): MiddlewareHandler<{ Bindings: { remoteAddress: string } }> {
  const digests = keys.map(digest);
  return async (c, next) => {
    // Who is rate-limited: the key that matched, or the caller's address when there are no keys.
    let caller = c.env.remoteAddress;
    if (digests.length === 0) {
      if (!isLoopback(c.env.remoteAddress)) {
        return c.json({ error: "answers loopback callers only until API_KEYS is set" }, 403);
      }
    } else {
      const auth = c.req.header("authorization");
      const presented = c.req.header("x-api-key") ??
        (auth?.toLowerCase().startsWith("bearer ") ? auth.slice(7).trim() : undefined);
      if (presented === undefined) return c.json({ error: "API key required" }, 401);
      const presentedDigest = digest(presented);
      // Compare with every key, whatever matched, so timing says nothing about which one did.
      let matched = -1;
      digests.forEach((key, i) => {
        if (timingSafeEqual(key, presentedDigest)) matched = i;
      });
      if (matched < 0) return c.json({ error: "API key invalid" }, 401);
      caller = `key ${matched}`;
    }
    if (!limiter.take(caller)) {
      c.header("retry-after", "1");
      return c.json({
        error: `rate limit exceeded: ${limiter.rate} requests per second (MAX_REQUESTS_PER_KEY)`,
      }, 429);
    }
    await next();
  };
}
