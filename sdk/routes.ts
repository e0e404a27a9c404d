/**
 * GET /sdk/deno-pusher.js: the client SDK (sdk/client.ts) as one ES module for browsers, with its
 * source map, so that a page uses it with no build step:
 *
 *   import { Client } from "/sdk/deno-pusher.js";
 *
 * It is the build sdk/bundle.ts holds (`make sdk`), so the executable serves it from an empty
 * directory. Caching is keyed by version: `?v=<the server's version>` is cached for a year
 * (immutable); without it, revalidated by ETag after five minutes. Any origin may import it.
 */
import type { Context, Hono } from "hono";
import pkg from "../package.json" with { type: "json" };
import type { RuntimeEnv } from "../runtime/contract.ts";
import { SDK_JS, SDK_MAP, SDK_SOURCE_SHA256 } from "./bundle.ts";

/** Seconds a versioned URL is cached: a year, the most caches keep anything. */
const VERSIONED_MAX_AGE = 365 * 24 * 3600;
/** Seconds the unversioned URL is used before it is revalidated (cheaply: ETag, 304). */
const MAX_AGE = 300;

/** Names the build: the server's version and the source it was built from. */
const ETAG = `"${pkg.version}-${SDK_SOURCE_SHA256.slice(0, 16)}"`;

/** Registers GET /sdk/deno-pusher.js and its map. */
export function sdkRoutes(app: Hono<{ Bindings: RuntimeEnv }>): void {
  const serve = (body: string, type: string) => (c: Context) => {
    const versioned = c.req.query("v") === pkg.version;
    const headers: Record<string, string> = {
      "content-type": type,
      "cache-control": versioned
        ? `public, max-age=${VERSIONED_MAX_AGE}, immutable`
        : `public, max-age=${MAX_AGE}`,
      etag: ETAG,
      "access-control-allow-origin": "*",
    };
    if (c.req.header("if-none-match") === ETAG) return c.body(null, 304, headers);
    return c.body(body, 200, headers);
  };
  app.get("/sdk/deno-pusher.js", serve(SDK_JS, "text/javascript; charset=utf-8"));
  app.get("/sdk/deno-pusher.js.map", serve(SDK_MAP, "application/json; charset=utf-8"));
}
