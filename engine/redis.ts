/**
 * What every Redis store of the engine shares: the key prefix, the connection's bounds, the Redis
 * URL as errors may show it (never with its password), error reports and the way to hang up.
 */
import type { Redis } from "ioredis";

/** The key prefix when none is given. */
export const DEFAULT_PREFIX = "deno-pusher:";

/**
 * Milliseconds to open a connection to Redis before the attempt counts as failed: a Redis on the
 * same network answers in one; more means it is down or unreachable.
 */
export const REDIS_CONNECT_TIMEOUT_MS = 2_000;

/**
 * Milliseconds a command waits for Redis's answer before it rejects: a send that waits longer is
 * answered 503 rather than hold its request.
 */
export const REDIS_COMMAND_TIMEOUT_MS = 5_000;

/**
 * Reconnections a command waits through before it rejects: with ioredis's back-off (50 ms more at
 * each try), a Redis that is down fails appends within about REDIS_CONNECT_TIMEOUT_MS times this
 * plus one, and they are answered 503 rather than hang.
 */
export const REDIS_RETRIES_PER_COMMAND = 2;

/** The options of every command connection to Redis; `name` shows in Redis's CLIENT LIST. */
export function connectionOptions(name: string) {
  return {
    // RESP2: the plain replies every Redis since 2.6 gives.
    protocol: 2 as const,
    connectTimeout: REDIS_CONNECT_TIMEOUT_MS,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: REDIS_RETRIES_PER_COMMAND,
    enableAutoPipelining: true,
    connectionName: name,
  };
}

/** `url` without its password, to name the server in errors and logs. */
export function redactedUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError("the Redis URL must look like redis://host:port, and does not");
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    throw new TypeError(`the Redis URL must start redis:// or rediss://, not ${parsed.protocol}//`);
  }
  if (parsed.password) parsed.password = "";
  return parsed.toString();
}

/**
 * Reports `redis`'s connection errors through `onError`, naming the Redis by `name` (its URL
 * without the password): once per cause rather than once per retry, and again after it was ready.
 * Without a listener, ioredis would print every failed attempt itself.
 */
export function reportErrors(redis: Redis, name: string, onError: (err: Error) => void): void {
  let lastError = "";
  redis.on("error", (err: Error) => {
    if (err.message === lastError) return;
    lastError = err.message;
    onError(new Error(`redis ${name}: ${err.message}`, { cause: err }));
  });
  redis.on("ready", () => void (lastError = ""));
}

/**
 * Ends a connection after the answers to what was sent on it, or at once when it is down (the
 * commands still waiting for a connection are then rejected, and their callers told).
 */
export async function quit(redis: Redis): Promise<void> {
  if (redis.status === "ready") {
    try {
      // ioredis may send QUIT ahead of commands it is still gathering into a pipeline: a PING
      // goes in order behind them, so once it is answered, so are they.
      await redis.ping();
      await redis.quit();
      return;
    } catch {
      // The connection went down meanwhile: disconnect below.
    }
  }
  redis.disconnect();
}
