/**
 * The management API under /api: gateway-websocket's operations over clients, uids and groups, as
 * JSON over HTTP. Each resource's routes are in their own file; this one wires them together and
 * serves the OpenAPI document at /api/openapi.json, which the same zod schemas generate.
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { Config } from "../config.ts";
import type { Hub } from "../hub.ts";
import type { Roster } from "../roster.ts";
import { batchRoutes } from "./batch.ts";
import { broadcastRoutes } from "./broadcast.ts";
import { clientRoutes } from "./clients.ts";
import { bodyTooLarge, invalid, maxBodyBytes, unsupportedType } from "./errors.ts";
import { groupRoutes } from "./groups.ts";
import { historyRoutes } from "./history.ts";
import { messageRoutes } from "./messages.ts";
import type { Env, RouteDeps } from "./schemas.ts";
import { uidRoutes } from "./uids.ts";

/**
 * Where the document says the API is: relative to the document's own URL, so a client generated
 * from `<origin>/api/openapi.json` calls `<origin>/api/<path>`, behind any proxy that keeps /api.
 */
const SERVER_URL = "/api";

/** Builds the /api sub-app. It trusts that the API key middleware (apikey.ts) ran before it. */
export function createApi(
  deps: { config: Config; hub: Hub; roster: Roster; idempotent: MiddlewareHandler },
): OpenAPIHono<Env> {
  const { config } = deps;
  const api = new OpenAPIHono<Env>({
    defaultHook: (result, c) => result.success ? undefined : invalid(c, result.error.issues),
  });
  // The route's media-type check throws this one; every other error goes on to server.ts's.
  api.onError((err, c) => {
    if (err instanceof HTTPException && err.status === 415) return unsupportedType(c);
    throw err;
  });

  const routes: RouteDeps = {
    ...deps,
    limitBody: bodyLimit({
      maxSize: maxBodyBytes(config),
      onError: (c) => bodyTooLarge(c, config),
    }),
  };
  broadcastRoutes(api, routes);
  batchRoutes(api, routes);
  clientRoutes(api, routes);
  uidRoutes(api, routes);
  groupRoutes(api, routes);
  historyRoutes(api, routes);
  messageRoutes(api, routes);

  api.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "one of API_KEYS, as `Authorization: Bearer <key>`",
  });
  api.openAPIRegistry.registerComponent("securitySchemes", "apiKey", {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
    description: "one of API_KEYS, as `X-API-Key: <key>` (it wins over Authorization)",
  });
  api.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "deno-pusher management API",
      version: "1",
      license: { name: "MIT", url: "https://spdx.org/licenses/MIT.html" },
      description: "Send to clients, uids and groups; query and manage connections and groups. " +
        "Every route needs one of API_KEYS, as `Authorization: Bearer <key>` or `X-API-Key`; " +
        "while API_KEYS is empty, only loopback callers are answered, and need no key.",
    },
    servers: [{ url: SERVER_URL, description: "this server's /api" }],
    security: [{ bearer: [] }, { apiKey: [] }],
  });

  return api;
}
