/**
 * /api/groups: named sets of connections, many-to-many with them. A group exists while it has
 * members: the first join creates it, the last leave removes it. Joins and leaves are idempotent.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { sendRoute } from "./send.ts";
import type { Context } from "hono";
import { clientNotFound, declare, groupNotFound, notFound, refusals } from "./errors.ts";
import { collection, pageOf, PageQuery, pageView } from "./pages.ts";
import {
  ClientId,
  type Env,
  GroupName,
  json,
  jsonBody,
  LockKey,
  type RouteDeps,
  Uid,
} from "./schemas.ts";

const GroupParam = { params: z.object({ group: GroupName }) };
const ClientInGroup = { params: z.object({ group: GroupName, id: ClientId }) };
const UidInGroup = { params: z.object({ group: GroupName, uid: Uid }) };
const unknownGroup = notFound("the group has no members");
const groupFull = declare(
  "the group is full (MAX_GROUP_MEMBERS, or its settings): nobody joined",
);

const Settings = z.object({
  group: z.string(),
  maxMembers: z.number().int().openapi({
    description: "connections the group may hold; 0: no limit",
  }),
  own: z.boolean().openapi({
    description: "true when set for this group; false when it is MAX_GROUP_MEMBERS",
  }),
  members: z.number().int().openapi({ description: "connections it holds now" }),
}).openapi("GroupSettings");

const LockSchema = z.object({
  key: z.string(),
  holder: z.object({ uid: z.string().nullable(), client: z.string() }),
  expiresAt: z.number().int().nullable().openapi({
    description: "ms since the epoch; null until released",
  }),
}).openapi("Lock");

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
  const { hub, roster, limitBody } = deps;
  /**
   * The connection `id`, or every connection of `uid`, joins (or leaves) `group`: 404 when it is
   * not online (for a join), 409 when the group is full, else the group's members and the change.
   */
  const changeMembership = async (
    c: Context,
    group: string,
    join: boolean,
    who: { id: string } | { uid: string },
  ) => {
    const { found, changed, members, full } = await roster.membership(group, join, who);
    if (found === 0 && (join || "id" in who)) {
      return clientNotFound(c, "id" in who ? who.id : who.uid);
    }
    if (full) return c.json({ error: full }, 409);
    return c.json({ group, members, changed }, 200);
  };

  collection(api, {
    path: "/groups",
    noun: "groups",
    operations: { list: "listGroups", count: "countGroups" },
    title: "GroupPage",
    item: z.string(),
    list: (offset, limit) => roster.groups(offset, limit),
    view: (group) => group,
    count: async () => (await hub.counts()).groups,
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
    async (c) => {
      const { group } = c.req.valid("param");
      const { offset, limit } = c.req.valid("query");
      const p = await roster.members(group, offset, limit);
      if (!p) return groupNotFound(c, group);
      return c.json(pageView(p, (m) => ({ client: m.id, uid: m.uid, info: m.info })), 200);
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
    async (c) => {
      const { group } = c.req.valid("param");
      const size = await roster.groupSize(group);
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
    async (c) => {
      const { group } = c.req.valid("param");
      const removed = await roster.dissolve(group);
      if (removed === undefined) return groupNotFound(c, group);
      return c.json({ group, members: 0, changed: removed }, 200);
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
          ...(join ? { 409: groupFull } : {}),
          ...refusals(400),
        },
      }),
      async (c) => {
        const { group, id } = c.req.valid("param");
        return await changeMembership(c, group, join, { id }) as never;
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
        409: groupFull,
        ...refusals(400),
      },
    }),
    async (c) => {
      const { group, uid } = c.req.valid("param");
      return await changeMembership(c, group, true, { uid }) as never;
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
    async (c) => {
      const { group, uid } = c.req.valid("param");
      return await changeMembership(c, group, false, { uid }) as never;
    },
  );

  const settings = async (group: string) => ({
    group,
    maxMembers: hub.capacity(group),
    own: hub.hasOwnCapacity(group),
    members: (await roster.groupSize(group))?.members ?? 0,
  });

  api.openapi(
    createRoute({
      method: "get",
      path: "/groups/{group}/settings",
      operationId: "getGroupSettings",
      summary: "A group's settings: how many connections it may hold",
      request: GroupParam,
      responses: { 200: json(Settings, "the settings"), ...refusals(400) },
    }),
    async (c) => c.json(await settings(c.req.valid("param").group), 200),
  );

  api.openapi(
    createRoute({
      method: "put",
      path: "/groups/{group}/settings",
      operationId: "setGroupSettings",
      summary: "Set how many connections a group may hold (null: MAX_GROUP_MEMBERS again)",
      description: "Kept across restarts (in the data directory; in Redis in a cluster), whether " +
        "or not the group has members. Members past a lowered bound stay; only later joins are " +
        "refused. 503 when it cannot be kept (nothing changed then).",
      middleware: [limitBody] as const,
      request: {
        ...GroupParam,
        body: jsonBody(
          z.object({
            maxMembers: z.number({ error: "maxMembers must be a whole number or null" }).int(
              "maxMembers must be a whole number",
            ).min(0, "maxMembers must be 0 or more").max(10_000_000).nullable(),
          }),
        ),
      },
      responses: { 200: json(Settings, "the settings now"), ...refusals(400, 413, 415, 503) },
    }),
    async (c) => {
      const { group } = c.req.valid("param");
      await hub.setCapacity(group, c.req.valid("json").maxMembers);
      return c.json(await settings(group), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/groups/{group}/locks",
      operationId: "listGroupLocks",
      summary: "The keys locked in a group, and by whom",
      request: GroupParam,
      responses: {
        200: json(z.object({ items: z.array(LockSchema) }), "the locks, oldest first"),
        ...refusals(400),
      },
    }),
    async (c) => c.json({ items: await roster.locks(c.req.valid("param").group) }, 200),
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/groups/{group}/locks/{key}",
      operationId: "breakGroupLock",
      summary: "Break a lock; every member of the group gets an unlock event",
      request: { params: z.object({ group: GroupName, key: LockKey }) },
      responses: {
        200: json(
          z.object({ group: z.string(), key: z.string(), released: z.literal(true) }),
          "broken",
        ),
        404: notFound("`lock not found: <key>`: the key is not locked"),
        ...refusals(400),
      },
    }),
    async (c) => {
      const { group, key } = c.req.valid("param");
      if (!await roster.breakLock(group, key)) {
        return c.json({ error: `lock not found: ${key}` }, 404);
      }
      return c.json({ group, key, released: true as const }, 200);
    },
  );
}
