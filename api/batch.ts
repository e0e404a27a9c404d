/**
 * /api/batch: many messages to many targets in one request. Each item is answered on its own, in
 * order, so one oversized message refuses that message only.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { SendResult } from "../hub.ts";
import { oversize, refusals } from "./errors.ts";
import {
  ClientId,
  type Env,
  GroupName,
  IdempotencyHeaders,
  json,
  jsonBody,
  type RouteDeps,
  SendResultSchema,
  Uid,
} from "./schemas.ts";

/** One item of a batch: a message and exactly one target. */
const BatchItem = z.object({
  message: z.string({ error: "message must be a string" }),
  uid: Uid.optional(),
  client: ClientId.optional(),
  group: GroupName.optional(),
  broadcast: z.literal(true).optional(),
}).refine(
  (i) => [i.uid, i.client, i.group, i.broadcast].filter((t) => t !== undefined).length === 1,
  { error: "each batch item needs exactly one of uid, client, group or broadcast" },
).openapi("BatchItem");

const BatchResult = z.union([SendResultSchema, z.object({ error: z.string() })])
  .openapi("BatchResult");

export function batchRoutes(
  api: OpenAPIHono<Env>,
  { config, hub, limitBody, idempotent }: RouteDeps,
) {
  /** Sends one item to its target; an offline target answers `connections: 0`, not an error. */
  const publish = (
    item: z.infer<typeof BatchItem>,
  ): SendResult | Promise<SendResult> | { error: string } => {
    const big = oversize(config, item.message);
    if (big) return { error: big };
    if (item.uid !== undefined) return hub.sendToUid(item.uid, item.message);
    if (item.client !== undefined) return hub.sendToClient(item.client, item.message);
    if (item.group !== undefined) return hub.sendToGroup(item.group, item.message);
    return hub.broadcast(item.message);
  };

  api.openapi(
    createRoute({
      method: "post",
      path: "/batch",
      operationId: "publishBatch",
      summary: "Publish many messages to many targets in one request",
      middleware: [limitBody, idempotent] as const,
      request: {
        headers: IdempotencyHeaders,
        body: jsonBody(
          z.object({
            messages: z.array(BatchItem).min(1, "messages is empty").max(
              config.maxBatch,
              `at most ${config.maxBatch} messages per batch (MAX_BATCH)`,
            ),
          }).openapi("Batch"),
        ),
      },
      responses: {
        200: json(
          z.object({ results: z.array(BatchResult) }),
          "one result per message, in order: a send result (connections 0 when the target was " +
            "offline), or an error for an oversized message",
        ),
        ...refusals(400, 409, 413, 415, 422, 503),
      },
    }),
    // Issued without waiting for one another: the broker gives them ids in this order and pushes
    // them in that order, and their history appends share one commit. A message to one client id
    // is pushed at once, so it waits for the messages before it first.
    async (c) => {
      const results: ReturnType<typeof publish>[] = [];
      for (const item of c.req.valid("json").messages) {
        if (item.client !== undefined) await Promise.all(results);
        results.push(publish(item));
      }
      return c.json({ results: await Promise.all(results) }, 200);
    },
  );
}
