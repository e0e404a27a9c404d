/**
 * /api/uids: the users, each with one or more connections. List and count the online ones, ask
 * whether one is online, list its connections, send to all of them, or log it out everywhere.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { sendRoute } from "./send.ts";
import { CloseCode } from "../client.ts";
import { clientNotFound, refusals } from "./errors.ts";
import { collection, pageOf, PageQuery } from "./pages.ts";
import { ClientSchema, Closed, type Env, json, type RouteDeps, Uid } from "./schemas.ts";

const UidParam = { params: z.object({ uid: Uid }) };

export function uidRoutes(api: OpenAPIHono<Env>, deps: RouteDeps) {
  const { hub, roster } = deps;
  collection(api, {
    path: "/uids",
    noun: "online uids",
    operations: { list: "listUids", count: "countUids" },
    title: "UidPage",
    item: z.string(),
    list: (offset, limit) => roster.uids(offset, limit),
    view: (uid) => uid,
    count: async () => (await hub.counts()).uids,
  });

  api.openapi(
    createRoute({
      method: "get",
      path: "/uids/{uid}/online",
      operationId: "isUidOnline",
      summary: "Is a uid online, and with how many connections",
      request: UidParam,
      responses: {
        200: json(
          z.object({ uid: z.string(), online: z.boolean(), connections: z.number().int() }),
          "whether it is online",
        ),
        ...refusals(400),
      },
    }),
    async (c) => {
      const { uid } = c.req.valid("param");
      const connections = await hub.connectionsAnywhere(uid);
      return c.json({ uid, online: connections > 0, connections }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/uids/{uid}/clients",
      operationId: "listUidClients",
      summary: "List a uid's clients (empty when offline)",
      request: { ...UidParam, query: PageQuery },
      responses: { 200: json(pageOf(ClientSchema, "UidClientPage"), "a page"), ...refusals(400) },
    }),
    async (c) => {
      const { uid } = c.req.valid("param");
      const { offset, limit } = c.req.valid("query");
      const p = await roster.clientsOf(uid, offset, limit) ?? { items: [], total: 0, next: null };
      return c.json(p, 200);
    },
  );

  sendRoute(api, deps, {
    path: "/uids/{uid}/send",
    operationId: "sendToUid",
    summary: "Send to every connection of a uid",
    param: "uid",
    schema: Uid,
    delivered: "how many connections took it",
    offline: {
      description: "the uid is offline (and OFFLINE_TTL is 0: no mailbox)",
      answer: clientNotFound,
    },
    send: (uid, message) => hub.sendToUid(uid, message),
    mailbox: true,
  });

  api.openapi(
    createRoute({
      method: "delete",
      path: "/uids/{uid}",
      operationId: "disconnectUid",
      summary: "Disconnect every connection of a uid (logout; close code 4009)",
      request: UidParam,
      responses: { 200: json(Closed, "how many were closed"), ...refusals(400) },
    }),
    async (c) => {
      const { uid } = c.req.valid("param");
      const closed = await roster.closeUid(uid, CloseCode.closedByServer.code, "logged out");
      return c.json({ closed }, 200);
    },
  );
}
