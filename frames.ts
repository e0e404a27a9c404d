/**
 * What a json-format client may ask over its own socket, and the answers. Every request frame may
 * carry `ref` (a string or a number the client picks), and its answer carries the same `ref`; a
 * refused one gets `{"type":"error","ref","error"}` and the connection stays open. What a client may
 * do is its token's (permissions.ts); the hub does it. Text-format clients only listen.
 *
 * | frame      | needs                                  | answer                            |
 * | ---------- | -------------------------------------- | --------------------------------- |
 * | `ping`     |                                        | `pong`                            |
 * | `auth`     | a token for the same uid               | `auth` (connection.ts refreshes)  |
 * | `ack`      | a message id it was sent               | nothing; `error` when refused     |
 * | `join`     | `subscribe` allows the group           | `joined` with the presence        |
 * | `leave`    | `subscribe` allows it; a member        | `left`                            |
 * | `publish`  | `publish` allows it; a member          | `ack` with the message id         |
 * | `send`     | `send` allows the uid                  | `ack` with the id and `delivered` |
 * | `presence` | a member, or `subscribe` allows it     | `presence` with the members       |
 * | `lock`     | a member; the key free or its own      | `locked`                          |
 * | `unlock`   | its own lock                           | `unlocked`                        |
 */
import { z } from "zod";
import { oversize } from "./api/errors.ts";
import { GroupName, LockKey, Uid } from "./api/schemas.ts";
import type { Client } from "./client.ts";
import type { Config } from "./config.ts";
import { GROUP_FULL, type Hub, StoreUnavailableError } from "./hub.ts";
import type { ClientMessageGate } from "./webhook/gate.ts";
import { MAX_LOCK_TTL } from "./locks.ts";

/** A `ref` as a client may pick it: a string of at most 64 characters, or a number. */
const Ref = z.union([z.string().max(64, "ref is longer than 64 characters"), z.number()], {
  error: "ref must be a string or a number",
}).optional();

const data = z.string({ error: "data must be a string" });

/** A lock's key: a name as the API takes names, 1 to 256 characters. */
const Key = LockKey;

/** The request frames of the table above but `ping`, `auth` and `ack`. */
const Request = z.discriminatedUnion("type", [
  z.object({ type: z.literal("join"), group: GroupName, ref: Ref }),
  z.object({ type: z.literal("leave"), group: GroupName, ref: Ref }),
  z.object({
    type: z.literal("publish"),
    group: GroupName,
    data,
    echo: z.boolean({ error: "echo must be true or false" }).optional(),
    ref: Ref,
  }),
  z.object({ type: z.literal("send"), uid: Uid, data, ref: Ref }),
  z.object({ type: z.literal("presence"), group: GroupName, ref: Ref }),
  z.object({
    type: z.literal("lock"),
    group: GroupName,
    key: Key,
    ttl: z.number({ error: "ttl must be a number of seconds" }).positive("ttl must be over 0")
      .max(MAX_LOCK_TTL, `ttl must be at most ${MAX_LOCK_TTL} seconds`).optional(),
    ref: Ref,
  }),
  z.object({ type: z.literal("unlock"), group: GroupName, key: Key, ref: Ref }),
]);
type Request = z.infer<typeof Request>;

/** The frame types of Request, for telling an unknown type from a malformed frame. */
const REQUEST_TYPES = new Set(["join", "leave", "publish", "send", "presence", "lock", "unlock"]);

/** What answering frames needs besides the client. */
export interface FrameDeps {
  hub: Hub;
  config: Config;
  /** Refreshes the client's token (connection.ts): an `auth` frame after the first. */
  refresh(client: Client, token: string | undefined): void;
  /** CLIENT_MESSAGE_HOOK: asks the backend before a client's publish or send goes out. */
  gate?: ClientMessageGate;
}

/**
 * Answers one text frame of a json-format client (see the table above). Never throws: whatever
 * goes wrong is told to the client in an `error` frame, with its `ref`.
 */
export function answerFrame(client: Client, text: string, deps: FrameDeps): void {
  let frame: Record<string, unknown>;
  try {
    frame = JSON.parse(text);
  } catch {
    client.control(errorFrame("frame is not valid JSON"));
    return;
  }
  if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
    client.control(errorFrame("frame must be a JSON object with a type"));
    return;
  }
  const ref = typeof frame.ref === "string" || typeof frame.ref === "number"
    ? frame.ref
    : undefined;
  const type = frame.type;
  if (type === "ping") return void client.control(answer("pong", ref));
  if (type === "auth") {
    return deps.refresh(client, typeof frame.token === "string" ? frame.token : undefined);
  }
  if (type === "ack") {
    const refused = deps.hub.ack(client, frame.id);
    if (refused) {
      const id = typeof frame.id === "number" ? frame.id : null;
      client.control(errorFrame(refused, ref, { id }));
    }
    return;
  }
  if (typeof type !== "string" || !REQUEST_TYPES.has(type)) {
    return void client.control(errorFrame(`unknown frame type: ${String(type).slice(0, 64)}`, ref));
  }
  const parsed = Request.safeParse(frame);
  if (!parsed.success) return void client.control(errorFrame(parsed.error.issues[0].message, ref));
  const refused = (error: string, extra?: Record<string, unknown>) =>
    client.control(errorFrame(error, ref, extra));
  request(client, parsed.data, deps, refused).catch((err) => {
    if (err instanceof StoreUnavailableError) return refused(err.message);
    console.error(`${parsed.data.type} frame of client ${client.id}: ${err}`);
    refused("internal error");
  });
}

/** Does what `req` asks, if the client may, and answers it. */
async function request(
  client: Client,
  req: Request,
  { hub, config, gate }: FrameDeps,
  refused: (error: string, extra?: Record<string, unknown>) => void,
): Promise<void> {
  const { permissions } = client;
  const ref = req.ref;
  /**
   * The message to send: `data` within MAX_MESSAGE_BYTES, as the backend let it through (or
   * rewrote it) when CLIENT_MESSAGE_HOOK is set; undefined, the client told why, when refused.
   */
  const gated = async (
    data: string,
    about: { uid: string; client: string; group?: string; to?: string },
  ): Promise<string | undefined> => {
    let big = oversize(config, data);
    if (big) return void refused(big);
    if (!gate) return data;
    const decision = await gate.check({ ...about, data });
    if (!decision.ok) return void refused(decision.error);
    big = oversize(config, decision.data);
    if (big) return void refused(`the backend's rewrite: ${big}`);
    return decision.data;
  };
  switch (req.type) {
    case "join": {
      if (!permissions.subscribe.allows(req.group)) {
        return refused(`not allowed to join ${req.group} (the token's subscribe claim)`);
      }
      const full = await hub.joinBySocket(
        client,
        req.group,
        (joined) => client.control(answer("joined", ref, { group: req.group, ...joined })),
      );
      if (full === GROUP_FULL) refused(GROUP_FULL);
      return;
    }
    case "leave": {
      if (!permissions.subscribe.allows(req.group)) {
        return refused(`not allowed to leave ${req.group} (the token's subscribe claim)`);
      }
      if (!client.groups.has(req.group)) return refused(`not a member of ${req.group}`);
      hub.leave(client, req.group);
      return void client.control(answer("left", ref, { group: req.group }));
    }
    case "presence": {
      if (!client.groups.has(req.group) && !permissions.subscribe.allows(req.group)) {
        return refused(`not allowed to see ${req.group}: not a member, nor in the subscribe claim`);
      }
      const members = await hub.presence(req.group);
      return void client.control(answer("presence", ref, { group: req.group, members }));
    }
    case "publish": {
      if (!permissions.publish.allows(req.group)) {
        return refused(`not allowed to publish to ${req.group} (the token's publish claim)`);
      }
      if (!client.groups.has(req.group)) {
        return refused(`not a member of ${req.group}: join it first`);
      }
      const from = sender(client, req.echo);
      if (!from) return refused("this connection has no uid to publish as");
      const data = await gated(req.data, { uid: from.uid, client: client.id, group: req.group });
      if (data === undefined) return;
      const { id } = await hub.publishFrom(from, req.group, data);
      return void client.control(answer("ack", ref, { id }));
    }
    case "send": {
      if (!permissions.send.allows(req.uid)) {
        return refused(`not allowed to send to ${req.uid} (the token's send claim)`);
      }
      const from = sender(client, false);
      if (!from) return refused("this connection has no uid to send as");
      const data = await gated(req.data, { uid: from.uid, client: client.id, to: req.uid });
      if (data === undefined) return;
      const { id, delivered, connections, queued } = await hub.sendFrom(from, req.uid, data);
      // An offline uid is /send's 404, or its 202 with the mailbox on.
      if (queued) return void client.control(answer("ack", ref, { id, delivered, queued }));
      if (connections === 0) return refused(`client not found: ${req.uid}`, { id });
      return void client.control(answer("ack", ref, { id, delivered }));
    }
    case "lock": {
      const lock = await hub.lock(client, req.group, req.key, req.ttl);
      if (typeof lock === "string") return refused(lock);
      return void client.control(
        answer("locked", ref, { group: req.group, key: req.key, expiresAt: lock.expiresAt }),
      );
    }
    case "unlock": {
      const why = await hub.unlock(client, req.group, req.key);
      if (why) return refused(why);
      return void client.control(answer("unlocked", ref, { group: req.group, key: req.key }));
    }
  }
}

/** The client as the sender of its own message; undefined once it was unbound from its uid. */
function sender(client: Client, echo: boolean | undefined) {
  const uid = client.uid;
  if (uid === undefined) return undefined;
  return echo ? { uid, client: client.id, echo } : { uid, client: client.id };
}

/** A server frame of `type` answering the frame with `ref` (left out when it had none). */
function answer(type: string, ref: string | number | undefined, fields = {}): string {
  return JSON.stringify(ref === undefined ? { type, ...fields } : { type, ref, ...fields });
}

/** `{"type":"error","error"}`, with the refused frame's `ref`, and `extra` fields. */
export function errorFrame(
  error: string,
  ref?: string | number,
  extra: Record<string, unknown> = {},
): string {
  return answer("error", ref, { error, ...extra });
}
