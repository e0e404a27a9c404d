/**
 * The management API under /api: gateway-websocket's operations over clients, uids and groups, as
 * JSON over HTTP. Every route is declared with zod schemas, which both validate the request (once,
 * here at the edge) and generate the OpenAPI document at /api/openapi.json.
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import type { Client } from "./client.ts";
import { CloseCode } from "./client.ts";
import type { Config } from "./config.ts";
import type { Hub, Page, SendResult } from "./hub.ts";
import { utf8Length } from "./message/message.ts";

/** Most items one list page returns; `limit` defaults to 100. */
export const MAX_PAGE = 1000;

type Env = { Bindings: { remoteAddress: string } };

const ErrorSchema = z.object({
  error: z.string().openapi({ example: "client not found: 6f1c…" }),
  issues: z.array(z.unknown()).optional().openapi({ description: "zod's issues, on 400" }),
}).openapi("Error");

const name = (what: string, example: string) =>
  z.string().min(1, `${what} is required`).max(256, `${what} is longer than 256 characters`)
    .openapi({ example });
const ClientId = name("client id", "0b9f6d1e-1c1a-4f43-9b51-6c2f0d7f3a10");
const Uid = name("uid", "123");
const GroupName = name("group", "room-1");

const MessageBody = z.object({
  message: z.string({ error: "message must be a string" }).openapi({ example: "Hello" }),
}).openapi("MessageBody");

const SendResultSchema = z.object({
  id: z.number().int().openapi({ description: "the message id, unique and increasing" }),
  delivered: z.number().int().openapi({
    description: "connections the message was written or queued to",
  }),
  connections: z.number().int().openapi({ description: "connections the target had" }),
}).openapi("SendResult");

const ClientSchema = z.object({
  id: z.string(),
  uid: z.string().nullable().openapi({ description: "null once unbound" }),
  groups: z.array(z.string()),
  info: z.unknown().openapi({ description: "the token's info claim" }),
  format: z.enum(["text", "json"]),
  connectedAt: z.number().int().openapi({ description: "ms since the epoch" }),
}).openapi("Client");

const MemberSchema = z.object({
  client: z.string(),
  uid: z.string().nullable(),
  info: z.unknown(),
}).openapi("Member");

const PageQuery = z.object({
  offset: z.coerce.number({ error: "offset must be a number" })
    .int("offset must be a whole number").min(0, "offset must be 0 or more").default(0)
    .openapi({ example: 0 }),
  limit: z.coerce.number({ error: "limit must be a number" })
    .int("limit must be a whole number").min(1, `limit must be 1 to ${MAX_PAGE}`)
    .max(MAX_PAGE, `limit must be 1 to ${MAX_PAGE}`).default(100).openapi({ example: 100 }),
});

const pageOf = <T extends z.ZodType>(item: T, title: string) =>
  z.object({
    items: z.array(item),
    total: z.number().int(),
    next: z.number().int().nullable().openapi({ description: "offset of the next page" }),
  }).openapi(title);

const Count = z.object({ count: z.number().int() }).openapi("Count");

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

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});
const error = (description: string) => json(ErrorSchema, description);
const body = <T extends z.ZodType>(schema: T) => ({
  body: { content: { "application/json": { schema } }, required: true },
});
const invalid = error("a parameter or the body failed validation");

/** Builds the /api sub-app. It trusts that the API key middleware ran before it. */
export function createApi(deps: { config: Config; hub: Hub }): OpenAPIHono<Env> {
  const { config, hub } = deps;
  const api = new OpenAPIHono<Env>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        // Our own messages name their field; zod's defaults do not, so those get the path.
        const field = String(issue.path.at(-1) ?? "");
        const where = field && !issue.message.includes(field) ? `${issue.path.join(".")}: ` : "";
        return c.json({ error: `${where}${issue.message}`, issues: result.error.issues }, 400);
      }
    },
  });

  api.use(
    "*",
    bodyLimit({
      maxSize: config.maxBatch * (config.maxMessageBytes + 1024) + 4096,
      onError: (c) => c.json({ error: "request body too large" }, 413),
    }),
  );

  /** The 413 for a message over MAX_MESSAGE_BYTES, or undefined when it fits. */
  const tooBig = (message: string): string | undefined => {
    const bytes = utf8Length(message);
    return bytes > config.maxMessageBytes
      ? `message is ${bytes} bytes; the limit is ${config.maxMessageBytes} (MAX_MESSAGE_BYTES)`
      : undefined;
  };
  const clientView = (c: Client) => ({
    id: c.id,
    uid: c.uid ?? null,
    groups: [...c.groups],
    info: c.info ?? null,
    format: c.format,
    connectedAt: c.connectedAt,
  });
  const pageView = <T, U>(p: Page<T>, view: (t: T) => U) => ({
    items: p.items.map(view),
    total: p.total,
    next: p.next,
  });
  const clientNotFound = (id: string) => ({ error: `client not found: ${id}` });
  const groupNotFound = (group: string) => ({ error: `group not found: ${group}` });

  // ---- sending -------------------------------------------------------------------------------

  const broadcastResponses = {
    200: json(SendResultSchema, "accepted; `delivered` says how many connections took it"),
    400: invalid,
    413: error("the message is over MAX_MESSAGE_BYTES"),
  };
  const sendResponses = {
    ...broadcastResponses,
    404: error("the target is unknown or offline"),
  };

  api.openapi(
    createRoute({
      method: "post",
      path: "/broadcast",
      summary: "Broadcast to every connection",
      request: body(MessageBody),
      responses: broadcastResponses,
    }),
    (c) => {
      const { message } = c.req.valid("json");
      const big = tooBig(message);
      if (big) return c.json({ error: big }, 413);
      return c.json(hub.broadcast(message), 200);
    },
  );

  const targeted = [
    { noun: "client", param: "id", schema: ClientId, send: hub.sendToClient, what: "one client" },
    {
      noun: "uid",
      param: "uid",
      schema: Uid,
      send: hub.sendToUid,
      what: "every connection of a uid",
    },
    { noun: "group", param: "group", schema: GroupName, send: hub.sendToGroup, what: "a group" },
  ];
  for (const { noun, param, schema, send, what } of targeted) {
    api.openapi(
      createRoute({
        method: "post",
        path: `/${noun}s/{${param}}/send`,
        summary: `Send to ${what}`,
        request: { params: z.object({ [param]: schema }), ...body(MessageBody) },
        responses: sendResponses,
      }),
      (c) => {
        const target = (c.req.valid("param") as Record<string, string>)[param];
        const { message } = c.req.valid("json");
        const big = tooBig(message);
        if (big) return c.json({ error: big }, 413);
        const result = send.call(hub, target, message);
        if (result.connections === 0) {
          // A uid's 404 keeps go-pusher's wording, as /send does.
          return c.json(
            { error: `${noun === "group" ? "group" : "client"} not found: ${target}` },
            404,
          );
        }
        return c.json(result, 200);
      },
    );
  }

  const BatchResult = z.union([
    SendResultSchema,
    z.object({ error: z.string() }),
  ]).openapi("BatchResult");

  api.openapi(
    createRoute({
      method: "post",
      path: "/batch",
      summary: "Publish many messages to many targets in one request",
      request: body(
        z.object({
          messages: z.array(BatchItem).min(1, "messages is empty").max(
            config.maxBatch,
            `at most ${config.maxBatch} messages per batch (MAX_BATCH)`,
          ),
        }),
      ),
      responses: {
        200: json(
          z.object({ results: z.array(BatchResult) }),
          "one result per message, in order: a send result (connections 0 when the target was offline), or an error for an oversized message",
        ),
        400: invalid,
      },
    }),
    (c) => {
      const results: (SendResult | { error: string })[] = c.req.valid("json").messages.map(
        (item) => {
          const big = tooBig(item.message);
          if (big) return { error: big };
          const result = item.uid !== undefined
            ? hub.sendToUid(item.uid, item.message)
            : item.client !== undefined
            ? hub.sendToClient(item.client, item.message)
            : item.group !== undefined
            ? hub.sendToGroup(item.group, item.message)
            : hub.broadcast(item.message);
          return result;
        },
      );
      return c.json({ results }, 200);
    },
  );

  /** GET `path` (a page of the collection) and GET `path`/count. */
  const collection = <T, S extends z.ZodType>(
    path: string,
    noun: string,
    title: string,
    item: S,
    list: (offset: number, limit: number) => Page<T>,
    view: (t: T) => z.infer<S>,
    count: () => number,
  ) => {
    api.openapi(
      createRoute({
        method: "get",
        path,
        summary: `List ${noun}`,
        request: { query: PageQuery },
        responses: {
          200: json(pageOf(item, title), "a page"),
          400: invalid,
        },
      }),
      (c) => {
        const { offset, limit } = c.req.valid("query");
        // The page's type follows from `item`, which TypeScript cannot see through the generic.
        return c.json(pageView(list(offset, limit), view) as never, 200);
      },
    );
    api.openapi(
      createRoute({
        method: "get",
        path: `${path}/count`,
        summary: `Count ${noun}`,
        responses: { 200: json(Count, "the count") },
      }),
      (c) => c.json({ count: count() }, 200),
    );
  };
  collection(
    "/clients",
    "online clients",
    "ClientPage",
    ClientSchema,
    hub.clients.bind(hub),
    clientView,
    () => hub.connections,
  );
  collection(
    "/uids",
    "online uids",
    "UidPage",
    z.string(),
    hub.uids.bind(hub),
    (u) => u,
    () => hub.users,
  );
  collection(
    "/groups",
    "groups",
    "GroupPage",
    z.string(),
    hub.groups.bind(hub),
    (g) => g,
    () => hub.groupCount,
  );

  // ---- clients -------------------------------------------------------------------------------

  const ClientParam = { params: z.object({ id: ClientId }) };

  api.openapi(
    createRoute({
      method: "get",
      path: "/clients/{id}",
      summary: "A client: its uid, groups and info",
      request: ClientParam,
      responses: { 200: json(ClientSchema, "the client"), 404: error("not online") },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      const client = hub.client(id);
      if (!client) return c.json(clientNotFound(id), 404);
      return c.json(clientView(client), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/clients/{id}/online",
      summary: "Is a client online",
      request: ClientParam,
      responses: {
        200: json(z.object({ id: z.string(), online: z.boolean() }), "whether it is online"),
      },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      return c.json({ id, online: hub.client(id) !== undefined }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/clients/{id}",
      summary: "Close a client (close code 4009)",
      request: ClientParam,
      responses: {
        200: json(z.object({ closed: z.number().int() }), "closed"),
        404: error("not online"),
      },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      const client = hub.client(id);
      if (!client) return c.json(clientNotFound(id), 404);
      hub.close(client, CloseCode.closedByServer.code, CloseCode.closedByServer.reason);
      return c.json({ closed: 1 }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "put",
      path: "/clients/{id}/uid",
      summary: "Bind a uid to a client (it keeps its groups)",
      request: { ...ClientParam, ...body(z.object({ uid: Uid })) },
      responses: { 200: json(ClientSchema, "the client"), 400: invalid, 404: error("not online") },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      const client = hub.client(id);
      if (!client) return c.json(clientNotFound(id), 404);
      hub.bind(client, c.req.valid("json").uid);
      return c.json(clientView(client), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/clients/{id}/uid",
      summary: "Unbind a client's uid (it stays connected, with no uid)",
      request: ClientParam,
      responses: { 200: json(ClientSchema, "the client"), 404: error("not online") },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      const client = hub.client(id);
      if (!client) return c.json(clientNotFound(id), 404);
      hub.bind(client, undefined);
      return c.json(clientView(client), 200);
    },
  );

  // ---- uids ----------------------------------------------------------------------------------

  const UidParam = { params: z.object({ uid: Uid }) };

  api.openapi(
    createRoute({
      method: "get",
      path: "/uids/{uid}/online",
      summary: "Is a uid online, and with how many connections",
      request: UidParam,
      responses: {
        200: json(
          z.object({ uid: z.string(), online: z.boolean(), connections: z.number().int() }),
          "whether it is online",
        ),
      },
    }),
    (c) => {
      const { uid } = c.req.valid("param");
      const connections = hub.connectionsOf(uid);
      return c.json({ uid, online: connections > 0, connections }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/uids/{uid}/clients",
      summary: "List a uid's clients (empty when offline)",
      request: { ...UidParam, query: PageQuery },
      responses: { 200: json(pageOf(ClientSchema, "UidClientPage"), "a page"), 400: invalid },
    }),
    (c) => {
      const { uid } = c.req.valid("param");
      const { offset, limit } = c.req.valid("query");
      const p = hub.clientsOf(uid, offset, limit) ?? { items: [], total: 0, next: null };
      return c.json(pageView(p, clientView), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/uids/{uid}",
      summary: "Disconnect every connection of a uid (logout; close code 4009)",
      request: UidParam,
      responses: { 200: json(z.object({ closed: z.number().int() }), "how many were closed") },
    }),
    (c) => {
      const { uid } = c.req.valid("param");
      const closed = hub.closeUid(uid, CloseCode.closedByServer.code, "logged out");
      return c.json({ closed }, 200);
    },
  );

  // ---- groups --------------------------------------------------------------------------------

  const GroupParam = { params: z.object({ group: GroupName }) };
  const Membership = z.object({
    group: z.string(),
    members: z.number().int().openapi({ description: "the group's members now" }),
    changed: z.number().int().openapi({ description: "connections that joined or left" }),
  }).openapi("Membership");
  const membership = (group: string, changed: number) => ({
    group,
    members: hub.groupSize(group)?.members ?? 0,
    changed,
  });
  /** `clients` join (or leave) `group`; counts those whose membership really changed. */
  const changeMembership = (clients: Client[], group: string, join: boolean) => {
    let changed = 0;
    for (const client of clients) {
      if (client.groups.has(group) !== join) changed++;
      if (join) hub.join(client, group);
      else hub.leave(client, group);
    }
    return membership(group, changed);
  };

  api.openapi(
    createRoute({
      method: "get",
      path: "/groups/{group}/members",
      summary: "List a group's members: client ids, uids and info",
      request: { ...GroupParam, query: PageQuery },
      responses: {
        200: json(pageOf(MemberSchema, "MemberPage"), "a page"),
        400: invalid,
        404: error("unknown group"),
      },
    }),
    (c) => {
      const { group } = c.req.valid("param");
      const { offset, limit } = c.req.valid("query");
      const p = hub.members(group, offset, limit);
      if (!p) return c.json(groupNotFound(group), 404);
      return c.json(
        pageView(p, (m) => ({ client: m.id, uid: m.uid ?? null, info: m.info ?? null })),
        200,
      );
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/groups/{group}/members/count",
      summary: "Count a group's members and distinct uids",
      request: GroupParam,
      responses: {
        200: json(z.object({ members: z.number().int(), uids: z.number().int() }), "counts"),
        404: error("unknown group"),
      },
    }),
    (c) => {
      const { group } = c.req.valid("param");
      const size = hub.groupSize(group);
      if (!size) return c.json(groupNotFound(group), 404);
      return c.json(size, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/groups/{group}",
      summary: "Dissolve a group: every member leaves",
      request: GroupParam,
      responses: { 200: json(Membership, "dissolved"), 404: error("unknown group") },
    }),
    (c) => {
      const { group } = c.req.valid("param");
      const removed = hub.dissolve(group);
      if (removed === undefined) return c.json(groupNotFound(group), 404);
      return c.json(membership(group, removed), 200);
    },
  );

  const ClientInGroup = { params: z.object({ group: GroupName, id: ClientId }) };
  const UidInGroup = { params: z.object({ group: GroupName, uid: Uid }) };

  for (const join of [true, false]) {
    api.openapi(
      createRoute({
        method: join ? "put" : "delete",
        path: "/groups/{group}/clients/{id}",
        summary: `A client ${join ? "joins" : "leaves"} a group (idempotent)`,
        request: ClientInGroup,
        responses: {
          200: json(Membership, join ? "joined" : "left"),
          404: error("unknown client"),
        },
      }),
      (c) => {
        const { group, id } = c.req.valid("param");
        const client = hub.client(id);
        if (!client) return c.json(clientNotFound(id), 404);
        return c.json(changeMembership([client], group, join), 200);
      },
    );
  }

  api.openapi(
    createRoute({
      method: "put",
      path: "/groups/{group}/uids/{uid}",
      summary: "Every current connection of a uid joins a group (idempotent)",
      request: UidInGroup,
      responses: { 200: json(Membership, "joined"), 404: error("the uid is not online") },
    }),
    (c) => {
      const { group, uid } = c.req.valid("param");
      const clients = hub.clientsOf(uid, 0, Infinity)?.items;
      if (!clients) return c.json({ error: `client not found: ${uid}` }, 404);
      return c.json(changeMembership(clients, group, true), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/groups/{group}/uids/{uid}",
      summary: "Every current connection of a uid leaves a group (idempotent)",
      request: UidInGroup,
      responses: { 200: json(Membership, "left") },
    }),
    (c) => {
      const { group, uid } = c.req.valid("param");
      const clients = hub.clientsOf(uid, 0, Infinity)?.items ?? [];
      return c.json(changeMembership(clients, group, false), 200);
    },
  );

  api.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "deno-pusher management API",
      version: "1",
      description: "Send to clients, uids and groups; query and manage connections and groups. " +
        "Every route needs an API key (Authorization: Bearer or X-API-Key) unless none is " +
        "configured, in which case only loopback callers are answered.",
    },
  });

  return api;
}
