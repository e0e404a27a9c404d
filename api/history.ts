/**
 * /api/…/history: what a stream keeps, for a backend that fills in what a client missed (after a
 * `recovered: false`) or shows the last messages. Pages run by message id: `since` (exclusive) and
 * `limit`; `next` is the `since` of the next page.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ALL_STREAM, groupStream, type StreamName, uidStream } from "../engine/stream.ts";
import type { Hub } from "../hub.ts";
import { notFound, refusals } from "./errors.ts";
import { MAX_PAGE } from "./pages.ts";
import { type Env, GroupName, json, type RouteDeps, Uid } from "./schemas.ts";

const HistoryQuery = z.object({
  since: z.coerce.number({ error: "since must be a message id" })
    .int("since must be a whole number").min(0, "since must be 0 or more").default(0)
    .openapi({ description: "the last message id already seen; 0 for the oldest kept" }),
  limit: z.coerce.number({ error: "limit must be a number" })
    .int("limit must be a whole number").min(1, `limit must be 1 to ${MAX_PAGE}`)
    .max(MAX_PAGE, `limit must be 1 to ${MAX_PAGE}`).default(100).openapi({ example: 100 }),
});

const HistoryPageSchema = z.object({
  items: z.array(z.object({
    id: z.number().int(),
    data: z.string(),
    ts: z.number().int().openapi({ description: "when it was accepted, ms since the epoch" }),
    from: z.object({ uid: z.string(), client: z.string() }).optional().openapi({
      description: "who sent it over its socket (a publish or send frame); absent for a backend's",
    }),
  })),
  recovered: z.boolean().openapi({
    description: "false when some of the stream's messages after `since` were trimmed " +
      "(HISTORY_SIZE, HISTORY_TTL): they are not in this history any more",
  }),
  next: z.number().int().nullable().openapi({ description: "the `since` of the next page" }),
}).openapi("HistoryPage");

/** 404 when nothing is kept. */
const HISTORY_OFF = "no history is kept (HISTORY_SIZE=0)";

/** One stream's history route. */
function historyRoute(
  api: OpenAPIHono<Env>,
  hub: Hub,
  route: {
    path: string;
    operationId: string;
    summary: string;
    params?: z.ZodObject;
    stream(c: Context): StreamName;
  },
) {
  api.openapi(
    createRoute({
      method: "get",
      path: route.path,
      operationId: route.operationId,
      summary: route.summary,
      request: { ...(route.params ? { params: route.params } : {}), query: HistoryQuery },
      responses: {
        200: json(HistoryPageSchema, "a page of the stream's kept messages, oldest first"),
        404: notFound(HISTORY_OFF),
        ...refusals(400),
      },
    }),
    async (c) => {
      const { since, limit } = c.req.valid("query");
      const page = await hub.history(route.stream(c), since, limit);
      if (!page) return c.json({ error: HISTORY_OFF }, 404) as never;
      const items = page.publications.map(({ id, data, ts, from }) =>
        from ? { id, data, ts, from: { uid: from.uid, client: from.client } } : { id, data, ts }
      );
      return c.json({ items, recovered: page.recovered, next: page.next }, 200);
    },
  );
}

export function historyRoutes(api: OpenAPIHono<Env>, { hub }: RouteDeps) {
  historyRoute(api, hub, {
    path: "/uids/{uid}/history",
    operationId: "uidHistory",
    summary: "What was sent to a uid, as kept",
    params: z.object({ uid: Uid }),
    stream: (c) => uidStream(c.req.param("uid")!),
  });
  historyRoute(api, hub, {
    path: "/groups/{group}/history",
    operationId: "groupHistory",
    summary: "What was sent to a group, as kept",
    params: z.object({ group: GroupName }),
    stream: (c) => groupStream(c.req.param("group")!),
  });
  historyRoute(api, hub, {
    path: "/broadcast/history",
    operationId: "broadcastHistory",
    summary: "What was broadcast, as kept",
    stream: () => ALL_STREAM,
  });
}
