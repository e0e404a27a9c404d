/**
 * The zod schemas /api's routes share. Each validates a request once, at the edge, and describes
 * it (or an answer) in the OpenAPI document; the views turn the hub's objects into those answers.
 */
import { z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import type { Config } from "../config.ts";
import type { Hub } from "../hub.ts";
import type { Roster } from "../roster.ts";

/** The runtime bindings /api sees (server.ts resolves the address before /api runs). */
export type Env = { Bindings: { remoteAddress: string } };

/** What each resource's routes are built from. */
export interface RouteDeps {
  config: Config;
  hub: Hub;
  /** Every node's connections: the lists and the actions on clients, uids and groups. */
  roster: Roster;
  /** Refuses a body over the request limit with 413; every route that reads a body runs it. */
  limitBody: MiddlewareHandler;
  /** The Idempotency-Key check every send route runs after limitBody (idempotency/middleware.ts). */
  idempotent: MiddlewareHandler;
}

const name = (what: string, example: string) =>
  z.string().min(1, `${what} is required`).max(256, `${what} is longer than 256 characters`)
    .openapi({ example });
export const ClientId = name("client id", "0b9f6d1e-1c1a-4f43-9b51-6c2f0d7f3a10");
export const Uid = name("uid", "123");
export const GroupName = name("group", "room-1");
export const LockKey = name("key", "field-3");

export const MessageBody = z.object({
  message: z.string({ error: "message must be a string" }).openapi({ example: "Hello" }),
}).openapi("MessageBody");

export const SendResultSchema = z.object({
  id: z.number().int().openapi({ description: "the message id, unique and increasing" }),
  delivered: z.number().int().openapi({
    description: "connections the message was written or queued to",
  }),
  connections: z.number().int().openapi({ description: "connections the target had" }),
  queued: z.literal(true).optional().openapi({
    description: "present when the uid was offline and the mailbox keeps the message for its " +
      "next connection (OFFLINE_TTL)",
  }),
}).openapi("SendResult");

export const ClientSchema = z.object({
  id: z.string(),
  uid: z.string().nullable().openapi({ description: "null once unbound" }),
  groups: z.array(z.string()),
  info: z.unknown().openapi({ description: "the token's info claim" }),
  format: z.enum(["text", "json"]),
  connectedAt: z.number().int().openapi({ description: "ms since the epoch" }),
  queuedBytes: z.number().int().openapi({
    description: "outbound bytes waiting for it now: its queue and its socket's buffer " +
      "(past MAX_QUEUE_BYTES for SLOW_CONSUMER_TIMEOUT it is cut off, 4008)",
  }),
}).openapi("Client");

export const Closed = z.object({ closed: z.number().int() }).openapi("Closed");

export const Count = z.object({ count: z.number().int() }).openapi("Count");

/** An answer of `schema`, for a route's `responses`. */
export const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});

/** A required JSON request body of `schema`; the route must also run `limitBody`. */
export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  content: { "application/json": { schema } },
  required: true,
});

/** The optional Idempotency-Key header of the send routes (idempotency/middleware.ts checks it). */
export const IdempotencyHeaders = z.object({
  "idempotency-key": z.string().optional().openapi({
    description:
      "1–256 printable ASCII characters, e.g. a UUID: a retry with the same key within " +
      "IDEMPOTENCY_TTL gets the first answer again, with `duplicate: true`, and pushes nothing",
  }),
});
