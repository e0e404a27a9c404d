/**
 * /api/messages/{id}: one message as the message log keeps it: its target, how its delivery
 * stands (`status`), how many connections it was written to and how many uids acked it.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { notFound, refusals } from "./errors.ts";
import { type Env, json, type RouteDeps } from "./schemas.ts";

/** Every status a message can have; see message/logger.ts. */
const STATUSES = [
  "accepted",
  "delivered",
  "offline",
  "failed",
  "dropped",
  "interrupted",
  "queued",
  "expired",
  "acked",
] as const;

const MessageSchema = z.object({
  id: z.number().int(),
  target: z.string().openapi({
    description: "`uid:<uid>`, `group:<name>`, `client:<id>` or `all`",
    example: "uid:123",
  }),
  uid: z.string().nullable().openapi({ description: "the uid when the target is one, else null" }),
  message: z.string(),
  status: z.enum(STATUSES).openapi({
    description: "accepted (on its way), delivered (written to a connection), offline (nobody " +
      "to send it to), queued (in the mailbox, OFFLINE_TTL), expired (left the mailbox unsent), " +
      "failed, dropped (every connection it was queued on closed first), interrupted (the server " +
      "stopped before it was settled), acked (a client acked it)",
  }),
  written: z.number().int().openapi({ description: "connections it was written to" }),
  acked: z.number().int().openapi({ description: "distinct uids that acked it" }),
  ts: z.number().int().openapi({ description: "when it was accepted, ms since the epoch" }),
  updated: z.number().int().openapi({ description: "when its status last changed, ms" }),
}).openapi("Message");

/** 404 when the log keeps nothing that can be read back. */
const NO_LOG = "no message log is kept that can be read (MESSAGE_LOGGER=sqlite keeps one)";

export function messageRoutes(api: OpenAPIHono<Env>, { roster }: RouteDeps) {
  api.openapi(
    createRoute({
      method: "get",
      path: "/messages/{id}",
      operationId: "getMessage",
      summary: "A message's target, status, and how many connections were written it and acked it",
      request: {
        params: z.object({
          id: z.coerce.number({ error: "id must be a message id" }).int("id must be a whole number")
            .min(1, "id must be 1 or more").openapi({ example: 42 }),
        }),
      },
      responses: {
        200: json(MessageSchema, "the message"),
        404: notFound(`\`message not found: <id>\`, or \`${NO_LOG}\``),
        ...refusals(400),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const found = await roster.message(id);
      if (found === null) return c.json({ error: NO_LOG }, 404);
      if (found === undefined) return c.json({ error: `message not found: ${id}` }, 404);
      const { createdAt, updatedAt, ...rest } = found;
      return c.json({ ...rest, ts: createdAt, updated: updatedAt }, 200);
    },
  );
}
