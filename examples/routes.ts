/**
 * The examples (EXAMPLES=true, which `make run` sets): two pages built on talking clients, and the
 * one piece of backend they need, a token endpoint. Each page is one HTML document with its script
 * inline, kept as a string (examples/chat/page.ts, examples/forms/page.ts) so that the compiled
 * executable serves it without files beside it.
 *
 * The token endpoint signs a token for any name it is given: it answers loopback callers only, and
 * is off unless EXAMPLES=true. A real backend signs tokens for the users it has authenticated.
 */
import type { Hono } from "hono";
import { z } from "zod";
import { isLoopback } from "../apikey.ts";
import type { Authenticator } from "../authenticator.ts";
import type { Hub } from "../hub.ts";
import type { RuntimeEnv } from "../runtime/contract.ts";
import { CHAT_PAGE } from "./chat/page.ts";
import { FORMS_PAGE } from "./forms/page.ts";

/** People a form's room holds: the 31st is refused (re-formers' room-full). */
export const FORM_ROOM_SIZE = 30;

/** How long an example token lasts, in seconds: a day. */
const TOKEN_TTL = 24 * 3600;

const TokenRequest = z.object({
  app: z.enum(["chat", "forms"], { error: "app must be chat or forms" }),
  name: z.string({ error: "name is required" }).trim().min(1, "name is required")
    .max(40, "name is longer than 40 characters"),
  color: z.string().regex(/^#[0-9a-fA-F]{6}$/, "color must be #rrggbb").optional(),
  /** The form's room (forms only): `form-<id>`. */
  room: z.string().regex(/^form-[A-Za-z0-9_-]{1,64}$/, "room must be form-<id>").optional(),
});

/** The claims each example's users get: what its page may ask over the socket. */
function claims(req: z.infer<typeof TokenRequest>): Record<string, unknown> {
  if (req.app === "chat") {
    return {
      subscribe: ["chat-*"],
      publish: ["chat-*"],
      send: ["*"],
      info: { name: req.name },
    };
  }
  return {
    // In the room from the start, so that `since=0` replays the room's history (the form's edits):
    // a resume replays only the groups of the token.
    ...(req.room ? { groups: [req.room] } : {}),
    subscribe: ["form-*"],
    publish: ["form-*"],
    info: { name: req.name, color: req.color ?? "#3366cc" },
  };
}

/** Adds the examples' routes to `app`. */
export function exampleRoutes(
  app: Hono<{ Bindings: RuntimeEnv }>,
  { hub, authenticator }: { hub: Hub; authenticator: Authenticator },
): void {
  app.get("/examples", (c) => c.redirect("/examples/"));
  app.get(
    "/examples/",
    (c) =>
      c.html(`<!doctype html><meta charset="utf-8"><title>deno-pusher examples</title>
<h1>deno-pusher examples</h1>
<ul><li><a href="/examples/chat/">chat</a>: one-to-one and room messages, who is online</li>
<li><a href="/examples/forms/">forms</a>: several people edit one form, with locks</li></ul>`),
  );
  app.get("/examples/chat", (c) => c.redirect("/examples/chat/"));
  app.get("/examples/chat/", (c) => c.html(CHAT_PAGE));
  app.get("/examples/forms", (c) => c.redirect("/examples/forms/"));
  app.get("/examples/forms/", (c) => c.html(FORMS_PAGE));
  app.post("/examples/token", async (c) => {
    if (!isLoopback(c.env.remoteAddress)) {
      return c.json({ error: "/examples/token answers loopback callers only" }, 403);
    }
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: "body is not valid JSON" }, 400);
    }
    const parsed = TokenRequest.safeParse(body);
    if (!parsed.success) return c.json({ error: parsed.error.issues[0].message }, 400);
    const req = parsed.data;
    if (req.room && !hub.hasOwnCapacity(req.room)) hub.setCapacity(req.room, FORM_ROOM_SIZE);
    const token = await authenticator.sign(req.name, TOKEN_TTL, claims(req));
    return c.json({ token, uid: req.name }, 200);
  });
}
