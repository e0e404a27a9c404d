/**
 * /api/groups: named sets of connections, many-to-many with them. A group exists while it has
 * members: the first join creates it, the last leave removes it. Joins and leaves are idempotent.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { sendRoute } from "./send.ts";
import type { Client } from "../client.ts";
import { clientNotFound, groupNotFound, notFound, refusals } from "./errors.ts";
import { collection, pageOf, PageQuery, pageView } from "./pages.ts";
import { ClientId, type Env, GroupName, json, type RouteDeps, Uid } from "./schemas.ts";

const GroupParam = { params: z.object({ group: GroupName }) };
const ClientInGroup = { params: z.object({ group: GroupName, id: ClientId }) };
const UidInGroup = { params: z.object({ group: GroupName, uid: Uid }) };
const unknownGroup = notFound("the group has no members");

const MemberSchema = z.object({
  client: z.string(),
  uid: z.string().nullable(),
  info: z.unknown(),
}).openapi("Member");

const Membership = z.object({
  group: z.string(),
  members: z.number().int().openapi({ description: "the group's members now" }),
  changed: z.number().int().openapi({ description: "connections that joined or left" }),
}).openapi("Membership");

export function groupRoutes(api: OpenAPIHono<Env>, deps: RouteDeps) {
  const { hub } = deps;
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

  collection(api, {
    path: "/groups",
    noun: "groups",
    operations: { list: "listGroups", count: "countGroups" },
    title: "GroupPage",
    item: z.string(),
    list: (offset, limit) => hub.groups(offset, limit),
    view: (group) => group,
    count: () => hub.groupCount,
  });

  sendRoute(api, deps, {
    path: "/groups/{group}/send",
    operationId: "sendToGroup",
    summary: "Send to every member of a group",
    param: "group",
    schema: GroupName,
    delivered: "how many connections took it (0, with `connections` 0, when the group has no " +
      "members while history is kept: the message is kept for members that resume)",
    offline: {
      description: "the group has no members (only with HISTORY_SIZE=0)",
      answer: groupNotFound,
    },
    send: (group, message) => hub.sendToGroup(group, message),
    keptOffline: hub.keepsHistory,
  });

  api.openapi(
    createRoute({
      method: "get",
      path: "/groups/{group}/members",
      operationId: "listGroupMembers",
      summary: "List a group's members: client ids, uids and info",
      request: { ...GroupParam, query: PageQuery },
      responses: {
        200: json(pageOf(MemberSchema, "MemberPage"), "a page"),
        404: unknownGroup,
        ...refusals(400),
      },
    }),
    (c) => {
      const { group } = c.req.valid("param");
      const { offset, limit } = c.req.valid("query");
      const p = hub.members(group, offset, limit);
      if (!p) return groupNotFound(c, group);
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
      operationId: "countGroupMembers",
      summary: "Count a group's members and distinct uids",
      request: GroupParam,
      responses: {
        200: json(z.object({ members: z.number().int(), uids: z.number().int() }), "counts"),
        404: unknownGroup,
        ...refusals(400),
      },
    }),
    (c) => {
      const { group } = c.req.valid("param");
      const size = hub.groupSize(group);
      if (!size) return groupNotFound(c, group);
      return c.json(size, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/groups/{group}",
      operationId: "dissolveGroup",
      summary: "Dissolve a group: every member leaves",
      request: GroupParam,
      responses: { 200: json(Membership, "dissolved"), 404: unknownGroup, ...refusals(400) },
    }),
    (c) => {
      const { group } = c.req.valid("param");
      const removed = hub.dissolve(group);
      if (removed === undefined) return groupNotFound(c, group);
      return c.json(membership(group, removed), 200);
    },
  );

  for (const join of [true, false]) {
    api.openapi(
      createRoute({
        method: join ? "put" : "delete",
        path: "/groups/{group}/clients/{id}",
        operationId: join ? "joinGroupByClient" : "leaveGroupByClient",
        summary: `A client ${join ? "joins" : "leaves"} a group (idempotent)`,
        request: ClientInGroup,
        responses: {
          200: json(Membership, join ? "joined" : "left"),
          404: notFound("no client with this id is online"),
          ...refusals(400),
        },
      }),
      (c) => {
        const { group, id } = c.req.valid("param");
        const client = hub.client(id);
        if (!client) return clientNotFound(c, id);
        return c.json(changeMembership([client], group, join), 200);
      },
    );
  }

  api.openapi(
    createRoute({
      method: "put",
      path: "/groups/{group}/uids/{uid}",
      operationId: "joinGroupByUid",
      summary: "Every current connection of a uid joins a group (idempotent)",
      request: UidInGroup,
      responses: {
        200: json(Membership, "joined"),
        404: notFound("the uid is offline"),
        ...refusals(400),
      },
    }),
    (c) => {
      const { group, uid } = c.req.valid("param");
      const clients = hub.clientsOf(uid, 0, Infinity)?.items;
      if (!clients) return clientNotFound(c, uid);
      return c.json(changeMembership(clients, group, true), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/groups/{group}/uids/{uid}",
      operationId: "leaveGroupByUid",
      summary: "Every current connection of a uid leaves a group (idempotent)",
      request: UidInGroup,
      responses: { 200: json(Membership, "left"), ...refusals(400) },
    }),
    (c) => {
      const { group, uid } = c.req.valid("param");
      const clients = hub.clientsOf(uid, 0, Infinity)?.items ?? [];
      return c.json(changeMembership(clients, group, false), 200);
    },
  );
}
