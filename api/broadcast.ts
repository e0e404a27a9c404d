/** /api/broadcast: one message to every connection. */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { messageTooLarge, oversize, refusals } from "./errors.ts";
import {
  type Env,
  json,
  jsonBody,
  MessageBody,
  type RouteDeps,
  SendResultSchema,
} from "./schemas.ts";

export function broadcastRoutes(api: OpenAPIHono<Env>, { config, hub, limitBody }: RouteDeps) {
  api.openapi(
    createRoute({
      method: "post",
      path: "/broadcast",
      operationId: "broadcast",
      summary: "Broadcast to every connection",
      middleware: limitBody,
      request: { body: jsonBody(MessageBody) },
      responses: {
        200: json(SendResultSchema, "accepted; `delivered` says how many connections took it"),
        ...refusals(400, 413, 415),
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
