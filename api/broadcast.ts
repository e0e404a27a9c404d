/** /api/broadcast: one message to every connection. */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { messageTooLarge, oversize, refusals } from "./errors.ts";
import {
  type Env,
  IdempotencyHeaders,
  json,
  jsonBody,
  MessageBody,
  type RouteDeps,
  SendResultSchema,
} from "./schemas.ts";

export function broadcastRoutes(
  api: OpenAPIHono<Env>,
  { config, hub, limitBody, idempotent }: RouteDeps,
) {
  api.openapi(
    createRoute({
      method: "post",
      path: "/broadcast",
      operationId: "broadcast",
      summary: "Broadcast to every connection",
      middleware: [limitBody, idempotent] as const,
      request: { headers: IdempotencyHeaders, body: jsonBody(MessageBody) },
      responses: {
        200: json(SendResultSchema, "accepted; `delivered` says how many connections took it"),
        ...refusals(400, 409, 413, 415, 422, 503),
      },
    }),
    async (c) => {
      const { message } = c.req.valid("json");
      const big = oversize(config, message);
      if (big) return messageTooLarge(c, big);
      return c.json(await hub.broadcast(message), 200);
    },
  );
}
