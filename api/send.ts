/**
 * The targeted send, one definition for its three targets (a client, a uid, a group): validate,
 * refuse an oversized message with 413, send through the hub, and answer 404 when the target had
 * no connection.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { SendResult } from "../hub.ts";
import { messageTooLarge, notFound, oversize, refusals } from "./errors.ts";
import {
  type Env,
  IdempotencyHeaders,
  json,
  jsonBody,
  MessageBody,
  type RouteDeps,
  SendResultSchema,
} from "./schemas.ts";

/** One target's send route: `POST <path>`, where `path` holds `{<param>}`. */
export interface SendRoute {
  path: string;
  operationId: string;
  summary: string;
  /** The path parameter naming the target, and its schema. */
  param: string;
  schema: z.ZodString;
  /** What `delivered` counts, for the 200's description. */
  delivered: string;
  /** The 404's description, and its answer for the target that had no connection. */
  offline: {
    description: string;
    /** The 404; `extra` holds the message's `id`, logged all the same. */
    answer(c: Context, target: string, extra: { id: number }): Response;
  };
  send(target: string, message: string): SendResult | Promise<SendResult>;
  /**
   * Whether a send to a target without connections is kept all the same (a group's stream, while
   * history is on): then it answers 200 with `connections: 0` rather than 404.
   */
  keptOffline?: boolean;
  /**
   * Whether an offline target may be queued in the mailbox (a uid): then such a send answers 202
   * with `queued: true`.
   */
  mailbox?: boolean;
}

/** Adds `route` to `api`. */
export function sendRoute(
  api: OpenAPIHono<Env>,
  { config, limitBody, idempotent }: RouteDeps,
  route: SendRoute,
) {
  api.openapi(
    createRoute({
      method: "post",
      path: route.path,
      operationId: route.operationId,
      summary: route.summary,
      middleware: [limitBody, idempotent] as const,
      request: {
        params: z.object({ [route.param]: route.schema }),
        headers: IdempotencyHeaders,
        body: jsonBody(MessageBody),
      },
      responses: {
        200: json(SendResultSchema, `accepted; \`delivered\` says ${route.delivered}`),
        ...(route.mailbox
          ? {
            202: json(
              SendResultSchema,
              "the uid is offline and the mailbox (OFFLINE_TTL > 0) keeps the message for its " +
                "next connection: `queued` is true",
            ),
          }
          : {}),
        404: notFound(route.offline.description),
        ...refusals(400, 409, 413, 415, 422, 503),
      },
    }),
    async (c) => {
      const target = c.req.valid("param")[route.param];
      const { message } = c.req.valid("json");
      const big = oversize(config, message);
      if (big) return messageTooLarge(c, big);
      const result = await route.send(target, message);
      if (result.queued) return c.json(result, 202);
      if (result.connections === 0 && !route.keptOffline) {
        return route.offline.answer(c, target, { id: result.id }) as never;
      }
      return c.json(result, 200);
    },
  );
}
