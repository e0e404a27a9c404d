/**
 * Every refusal /api answers, each built in exactly one place, and the responses that declare them
 * in the OpenAPI document. An error body is `{"error": "<what went wrong and what to do>"}`, plus
 * zod's `issues` on a 400. The 401, 403 and 429 come from apikey.ts, which runs before /api.
 */
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { Config } from "../config.ts";
import { utf8Length } from "../message/message.ts";
import { json } from "./schemas.ts";

export const ErrorSchema = z.object({
  error: z.string().openapi({ example: "client not found: 123" }),
  issues: z.array(z.unknown()).optional().openapi({ description: "zod's issues, on 400" }),
  id: z.number().int().optional().openapi({
    description: "on a send's 404: the message's id (it is logged, and a uid's is kept in history)",
  }),
}).openapi("Error");

/** 400 for the first of zod's `issues`, named by its field when the message does not say it. */
export function invalid(c: Context, issues: z.core.$ZodIssue[]) {
  const issue = issues[0];
  // Our own messages name their field; zod's defaults do not, so those get the path.
  const field = String(issue.path.at(-1) ?? "");
  const where = field && !issue.message.includes(field) ? `${issue.path.join(".")}: ` : "";
  return c.json({ error: `${where}${issue.message}`, issues }, 400);
}

/** go-pusher's wording for an offline uid or an unknown client, which backends match on. */
export const clientNotFoundMessage = (idOrUid: string) => `client not found: ${idOrUid}`;

/** 404 for a client id, or for an offline uid; a send adds the message's `id` in `extra`. */
export const clientNotFound = (c: Context, idOrUid: string, extra: { id?: number } = {}) =>
  c.json({ error: clientNotFoundMessage(idOrUid), ...extra }, 404);

/** 404 for a group that has no members (groups exist only while they have some). */
export const groupNotFound = (c: Context, group: string, extra: { id?: number } = {}) =>
  c.json({ error: `group not found: ${group}`, ...extra }, 404);

/**
 * Why `message` is refused, when it is over MAX_MESSAGE_BYTES (UTF-8); undefined when it fits.
 * /api/batch answers it as one item's result, the other routes as a 413 (`messageTooLarge`).
 */
export function oversize(config: Config, message: string): string | undefined {
  const bytes = utf8Length(message);
  return bytes > config.maxMessageBytes
    ? `message is ${bytes} bytes; the limit is ${config.maxMessageBytes} (MAX_MESSAGE_BYTES)`
    : undefined;
}

/** 413 for a message over MAX_MESSAGE_BYTES; `reason` is what `oversize` said. */
export const messageTooLarge = (c: Context, reason: string) => c.json({ error: reason }, 413);

/** Largest request body /api reads, in bytes: a full batch of full messages, with room for JSON. */
export const maxBodyBytes = (config: Config) =>
  config.maxBatch * (config.maxMessageBytes + 1024) + 4096;

/** 413 for a request body over `maxBodyBytes`. */
export const bodyTooLarge = (c: Context, config: Config) =>
  c.json({
    error: `request body too large: the limit is ${maxBodyBytes(config)} bytes ` +
      "(MAX_BATCH × (MAX_MESSAGE_BYTES + 1024) + 4096)",
  }, 413);

/** 415 for a body that is not JSON. */
export function unsupportedType(c: Context) {
  const type = c.req.header("content-type")?.split(";")[0].trim() || "(none)";
  return c.json({ error: `unsupported content type ${type}: send application/json` }, 415);
}

/** The documented answer of an error a route gives: `description` says when. */
export const declare = (description: string) => json(ErrorSchema, description);

/** The documented answer of each refusal a route can give besides 404 (see `notFound`). */
const REFUSALS = {
  400: declare("a parameter, the query or the body failed validation, or the JSON is malformed"),
  413: declare(
    "the body is over the request limit, or a message to send is over MAX_MESSAGE_BYTES",
  ),
  415: declare("the body is not application/json"),
  409: declare("a request with this Idempotency-Key is still running; retry later"),
  422: declare("this Idempotency-Key was sent with another request"),
  503: declare(
    "the history store or the message log cannot keep messages now (a full disk, a locked " +
      "file): nothing was pushed; retry later",
  ),
};

/** What every route can answer: apikey.ts's refusals, which run before any route. */
const KEY_REFUSALS = {
  401: declare("API_KEYS is set and the request has no key, or one that is not among them"),
  403: declare("API_KEYS is empty and the caller is not on loopback"),
  429: {
    ...declare("over MAX_REQUESTS_PER_KEY requests in the last second from this key (or address)"),
    headers: z.object({
      "Retry-After": z.number().int().openapi({ description: "seconds to wait", example: 1 }),
    }),
  },
};

/** The error responses of a route: the `codes` it gives itself, and the API key's refusals. */
export function refusals<C extends keyof typeof REFUSALS>(...codes: C[]) {
  const own = Object.fromEntries(codes.map((code) => [code, REFUSALS[code]]));
  return { ...own as Pick<typeof REFUSALS, C>, ...KEY_REFUSALS };
}

/** The documented 404 of a route, saying what it did not find. */
export const notFound = declare;
