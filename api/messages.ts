/**
 * /api/messages: the message log. One message as the log keeps it (its target, how its delivery
 * stands (`status`), how many connections it was written to and how many uids acked it), or the
 * latest ones, newest first, paged by id.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { LoggedMessage } from "../message/logger.ts";
import { notFound, refusals } from "./errors.ts";
import { MAX_PAGE } from "./pages.ts";
import { type Env, json, type RouteDeps, Uid } from "./schemas.ts";

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

const LatestQuerySchema = z.object({
  uid: Uid.optional().openapi({ description: "only the messages sent to this uid" }),
  before: z.coerce.number({ error: "before must be a message id" })
    .int("before must be a whole number").min(1, "before must be 1 or more").optional()
    .openapi({ description: "only the messages older than this id: the `next` of a page" }),
  limit: z.coerce.number({ error: "limit must be a number" })
    .int("limit must be a whole number").min(1, `limit must be 1 to ${MAX_PAGE}`)
    .max(MAX_PAGE, `limit must be 1 to ${MAX_PAGE}`).default(100).openapi({ example: 100 }),
});

const MessagePageSchema = z.object({
  items: z.array(MessageSchema),
  next: z.number().int().nullable().openapi({
    description: "the `before` of the next (older) page; null when no older message is left",
  }),
}).openapi("MessagePage");

/** A logged message as the API shows it: `ts` and `updated` for the log's two times. */
const view = ({ createdAt, updatedAt, ...rest }: LoggedMessage) => ({
  ...rest,
  ts: createdAt,
  updated: updatedAt,
});

export function messageRoutes(api: OpenAPIHono<Env>, { hub, roster }: RouteDeps) {
  api.openapi(
    createRoute({
      method: "get",
      path: "/messages",
      operationId: "listMessages",
      summary: "The latest messages of the log, newest first, all of them or one uid's",
      description: "Paged by id: pass a page's `next` as `before` for the page before it. In a " +
        "cluster this is the log of the node that answers: each node logs the messages its own " +
        "connections were sent, and those it took that nobody had.",
      request: { query: LatestQuerySchema },
      responses: {
        200: json(MessagePageSchema, "a page of messages, newest first"),
        404: notFound(NO_LOG),
        ...refusals(400),
      },
    }),
    (c) => {
      const { uid, before, limit } = c.req.valid("query");
      // One more than the page, to know whether an older page follows.
      const found = hub.messages({ uid, before, limit: limit + 1 });
      if (found === null) return c.json({ error: NO_LOG }, 404);
      const items = found.slice(0, limit);
      const next = found.length > limit ? items[items.length - 1].id : null;
      return c.json({ items: items.map(view), next }, 200);
    },
  );

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
      return c.json(view(found), 200);
    },
  );
}
