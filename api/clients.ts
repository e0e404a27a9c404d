/**
 * /api/clients: the connections. List and count them, look one up, send to it, close it, and bind
 * or unbind its uid (it keeps its groups either way).
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { sendRoute } from "./send.ts";
import { CloseCode } from "../client.ts";
import { clientNotFound, notFound, refusals } from "./errors.ts";
import { collection } from "./pages.ts";
import {
  ClientId,
  ClientSchema,
  Closed,
  type Env,
  json,
  jsonBody,
  type RouteDeps,
  Uid,
} from "./schemas.ts";

const ClientParam = { params: z.object({ id: ClientId }) };
const notOnline = notFound("no client with this id is online");

export function clientRoutes(api: OpenAPIHono<Env>, deps: RouteDeps) {
  const { hub, roster, limitBody } = deps;
  // Before /clients/{id}, which would match /clients/count.
  collection(api, {
    path: "/clients",
    noun: "online clients",
    operations: { list: "listClients", count: "countClients" },
    title: "ClientPage",
    item: ClientSchema,
    list: (offset, limit) => roster.clients(offset, limit),
    view: (client) => client,
    count: async () => (await hub.counts()).connections,
  });

  api.openapi(
    createRoute({
      method: "get",
      path: "/clients/{id}",
      operationId: "getClient",
      summary: "A client: its uid, groups and info",
      request: ClientParam,
      responses: { 200: json(ClientSchema, "the client"), 404: notOnline, ...refusals(400) },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const client = await roster.client(id);
      if (!client) return clientNotFound(c, id);
      return c.json(client, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/clients/{id}/online",
      operationId: "isClientOnline",
      summary: "Is a client online",
      request: ClientParam,
      responses: {
        200: json(z.object({ id: z.string(), online: z.boolean() }), "whether it is online"),
        ...refusals(400),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      return c.json({ id, online: await roster.client(id) !== undefined }, 200);
    },
  );

  sendRoute(api, deps, {
    path: "/clients/{id}/send",
    operationId: "sendToClient",
    summary: "Send to one client",
    param: "id",
    schema: ClientId,
    delivered: "whether the client took it",
    offline: { description: "no client with this id is online", answer: clientNotFound },
    send: (id, message) => hub.sendToClient(id, message),
  });

  api.openapi(
    createRoute({
      method: "delete",
      path: "/clients/{id}",
      operationId: "closeClient",
      summary: "Close a client (close code 4009)",
      request: ClientParam,
      responses: { 200: json(Closed, "closed"), 404: notOnline, ...refusals(400) },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { code, reason } = CloseCode.closedByServer;
      if (!await roster.close(id, code, reason)) return clientNotFound(c, id);
      return c.json({ closed: 1 }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "put",
      path: "/clients/{id}/uid",
      operationId: "bindUid",
      summary: "Bind a uid to a client (it keeps its groups)",
      middleware: limitBody,
      request: { ...ClientParam, body: jsonBody(z.object({ uid: Uid }).openapi("UidBody")) },
      responses: {
        200: json(ClientSchema, "the client"),
        404: notOnline,
        ...refusals(400, 413, 415),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const client = await roster.bind(id, c.req.valid("json").uid);
      if (!client) return clientNotFound(c, id);
      return c.json(client, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/clients/{id}/uid",
      operationId: "unbindUid",
      summary: "Unbind a client's uid (it stays connected, with no uid)",
      request: ClientParam,
      responses: { 200: json(ClientSchema, "the client"), 404: notOnline, ...refusals(400) },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const client = await roster.bind(id, undefined);
      if (!client) return clientNotFound(c, id);
      return c.json(client, 200);
    },
  );
}
