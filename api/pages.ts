/**
 * Paging: every list takes `offset` and `limit` and answers `{items, total, next}`. A list is a
 * snapshot, so pages can shift while connections come and go.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Page } from "../hub.ts";
import { refusals } from "./errors.ts";
import { Count, type Env, json } from "./schemas.ts";

/** Most items one list page returns; `limit` defaults to 100. */
export const MAX_PAGE = 1000;

export const PageQuery = z.object({
  offset: z.coerce.number({ error: "offset must be a number" })
    .int("offset must be a whole number").min(0, "offset must be 0 or more").default(0)
    .openapi({ example: 0 }),
  limit: z.coerce.number({ error: "limit must be a number" })
    .int("limit must be a whole number").min(1, `limit must be 1 to ${MAX_PAGE}`)
    .max(MAX_PAGE, `limit must be 1 to ${MAX_PAGE}`).default(100).openapi({ example: 100 }),
});

/** The schema of a page of `item`, registered as `title`. */
export const pageOf = <T extends z.ZodType>(item: T, title: string) =>
  z.object({
    items: z.array(item),
    total: z.number().int(),
    next: z.number().int().nullable().openapi({ description: "offset of the next page" }),
  }).openapi(title);

/** A page of the hub's, with each item shown through `view`. */
export const pageView = <T, U>(p: Page<T>, view: (t: T) => U) => ({
  items: p.items.map(view),
  total: p.total,
  next: p.next,
});

/** A collection's two routes: GET `path` (a page of it) and GET `path`/count. */
export interface Collection<T, S extends z.ZodType> {
  path: string;
  /** What the collection holds, for the summaries: "online clients". */
  noun: string;
  /** The operationIds of the two routes. */
  operations: { list: string; count: string };
  /** The page schema's name in the document. */
  title: string;
  item: S;
  /** May be a promise: a cluster's lists are gathered from every node. */
  list(offset: number, limit: number): Page<T> | Promise<Page<T>>;
  view(t: T): z.infer<S>;
  /** May be a promise: a cluster's counts come from its presence registry. */
  count(): number | Promise<number>;
}

/**
 * Registers a collection's list and count. Register it before a `path`/{param} route of the same
 * method: Hono answers with the first route that matches, and `count` would match {param}.
 */
export function collection<T, S extends z.ZodType>(api: OpenAPIHono<Env>, c: Collection<T, S>) {
  api.openapi(
    createRoute({
      method: "get",
      path: c.path,
      operationId: c.operations.list,
      summary: `List ${c.noun}`,
      request: { query: PageQuery },
      responses: { 200: json(pageOf(c.item, c.title), "a page"), ...refusals(400) },
    }),
    async (ctx) => {
      const { offset, limit } = ctx.req.valid("query");
      // The page's type follows from `item`, which TypeScript cannot see through the generic.
      return ctx.json(pageView(await c.list(offset, limit), c.view) as never, 200);
    },
  );
  api.openapi(
    createRoute({
      method: "get",
      path: `${c.path}/count`,
      operationId: c.operations.count,
      summary: `Count ${c.noun}`,
      responses: { 200: json(Count, "the count"), ...refusals() },
    }),
    async (ctx) => ctx.json({ count: await c.count() }, 200),
  );
}
