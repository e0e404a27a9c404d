/**
 * The `Idempotency-Key` header on the sends: a retry with the same key gets the first answer again
 * (with `"duplicate": true`) and pushes nothing. See idempotency/store.ts for the store's contract.
 */
import { createHash } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { idempotencyKeyProblem, type IdempotencyStore } from "./store.ts";

/** The header a backend sends a key in. */
export const IDEMPOTENCY_HEADER = "Idempotency-Key";

/** 409: a request with the key is still running. */
export const IN_PROGRESS = "a request with this Idempotency-Key is still running; retry it later";
/** 422: the key came with another request. */
export const REUSED =
  "this Idempotency-Key was sent with another request; use a new key for a new message";

const digest = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * Who is asking, for the key's scope: the API key they presented (as its digest), or "open" when
 * no key is needed. Two backends with two keys never see each other's answers.
 */
function caller(c: Context): string {
  const bearer = /^Bearer (.+)$/i.exec(c.req.header("authorization") ?? "")?.[1];
  const key = bearer ?? c.req.header("x-api-key");
  return key === undefined ? "open" : digest(key);
}

/**
 * The middleware for a send route: without the header it does nothing. With it: 400 for a key
 * that is not 1–256 printable ASCII characters; a retry's first answer again; 409 while the first
 * still runs (after waiting up to 5 s for it); 422 for a key sent with another request. The first
 * answer is kept when the send made a message: 2xx, or /send's 404 for an offline uid (which
 * carries the message's id); a refusal or a failure is not, and a retry runs again.
 */
export function idempotent(store: IdempotencyStore): MiddlewareHandler {
  return async (c, next) => {
    const key = c.req.header(IDEMPOTENCY_HEADER);
    if (key === undefined) return await next();
    const problem = idempotencyKeyProblem(key);
    if (problem) return c.json({ error: problem }, 400);
    const url = new URL(c.req.url);
    const scope = `${caller(c)} ${c.req.method} ${url.pathname}`;
    const fingerprint = digest(`${url.search}\n${await c.req.raw.clone().text()}`);
    const begun = await store.begin(scope, key, fingerprint);
    if (begun.kind === "duplicate") {
      const { status, body } = begun.answer;
      return c.json({ ...(body as Record<string, unknown>), duplicate: true }, status as 200);
    }
    if (begun.kind === "in-progress") return c.json({ error: IN_PROGRESS }, 409);
    if (begun.kind === "reused") return c.json({ error: REUSED }, 422);
    using first = begun; // abandoned on the way out unless finished below
    await next();
    const status = c.res.status;
    const body = await c.res.clone().json().catch(() => undefined);
    const madeMessage = status < 300 || (status === 404 && typeof body?.id === "number");
    if (!madeMessage) return;
    try {
      await first.finish({ status, body });
    } catch (err) {
      // The send happened: its answer stands; only a retry would push again.
      console.error(`idempotency: ${err instanceof Error ? err.message : err}`);
    }
  };
}
