/**
 * The HTTP surface: /ws (every check that can be made before the upgrade, then the upgrade), /send,
 * /api (api.ts), /metrics, /healthz and /readyz. Requests are validated here, once, at the edge;
 * the hub decides who receives what; connection.ts runs each socket after its upgrade. The runtime
 * (Deno or Bun) is reached only through `RuntimeEnv`, which its adapter in runtime/ passes in.
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { Context } from "hono";
import { z } from "zod";
import { type Authenticator, AuthError, type Identity, tokenFromRequest } from "./authenticator.ts";
import type { Config } from "./config.ts";
import { connection, type ConnectionDeps, type SocketHandlers } from "./connection.ts";
import type { Hub } from "./hub.ts";
import { requireApiKey } from "./apikey.ts";
import { createApi } from "./api/api.ts";
import { utf8Length } from "./message/message.ts";
import { type Metrics, METRICS_CONTENT_TYPE } from "./metrics.ts";
import { originAllowed } from "./origin.ts";
import { RateLimiter } from "./ratelimit.ts";

/** The per-request bridge to the runtime, passed as Hono's `env` by the adapter. */
export interface RuntimeEnv {
  /** Turns `request` into a WebSocket; returns the response the route hands back. */
  upgrade(request: Request, handlers: SocketHandlers): Response;
  /**
   * The client's IP address, as text: the peer's, or behind a trusted proxy the one its
   * X-Forwarded-For names (the first middleware resolves it).
   */
  remoteAddress: string;
}

/** What the app needs; main.ts wires it, tests build it with other settings. */
export interface AppDeps {
  config: Config;
  hub: Hub;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Most sockets open at once, authenticated or not; past it /ws answers 503. */
  maxConnections: number;
}

/** The app and the state the adapters and main.ts need to see. */
export interface App {
  fetch(request: Request, env: RuntimeEnv): Response | Promise<Response>;
  /** Sockets open now, authenticated or not. */
  readonly sockets: () => number;
  /** Marks the server as draining: /readyz turns 503 and /ws refuses new sockets. */
  drain(): void;
}

type Env = { Bindings: RuntimeEnv };

const uidSchema = z.union([z.string(), z.number().int()], {
  error: (issue) => issue.input === undefined ? "uid is required" : "uid must be a string",
}).transform(String).pipe(
  z.string().min(1, "uid is required").max(256, "uid is longer than 256 characters"),
);

/** /send's input, from the query, a form body or a JSON body (the body wins). */
const sendSchema = z.object({
  uid: uidSchema,
  message: z.string({
    error: (issue) =>
      issue.input === undefined ? "message is required" : "message must be a string",
  }),
});

/** /ws's query; `token` is read separately (it may come in a header instead). */
const wsQuerySchema = z.object({
  format: z.enum(["text", "json"], { error: "format must be text or json" }).default("text"),
  presence: z.enum(["true", "false"], { error: "presence must be true or false" })
    .default("false").transform((v) => v === "true"),
  auth: z.enum(["frame"], { error: "auth must be frame" }).optional(),
}).refine((q) => !q.presence || q.format === "json", {
  error: "presence events need format=json",
});

/** Builds the Hono app. Stateless across requests but for the hub and the counters. */
export function createApp(deps: AppDeps): App {
  const { config, hub, metrics, authenticator } = deps;
  const app = new Hono<Env>();
  let sockets = 0;
  const unauthenticated = { count: 0 };
  let draining = false;
  const apiKey = requireApiKey(config.apiKeys, new RateLimiter(config.maxRequestsPerKey));
  const connectsPerIp = new RateLimiter(config.maxConnectsPerIp);
  const connectionDeps: ConnectionDeps = {
    config,
    hub,
    metrics,
    authenticator,
    unauthenticated,
    onClosed: () => sockets--,
  };

  app.use(async (c, next) => {
    const started = Date.now();
    c.env.remoteAddress = clientAddress(
      c.env.remoteAddress,
      c.req.header("x-forwarded-for"),
      config.trustedProxies,
    );
    await next();
    // An upgrade answers 101 on Deno; on Bun the route returns a placeholder 200 that Bun discards.
    const status = c.req.routePath === "/ws" && c.res.status === 200 ? 101 : c.res.status;
    metrics.httpRequest(c.req.method, c.req.routePath, status);
    if (config.accessLog) {
      const url = new URL(c.req.url);
      console.log(
        `${c.env.remoteAddress} ${c.req.method} ${redact(url.pathname + url.search)} ${status} ` +
          `${Date.now() - started}ms`,
      );
    }
  });

  app.get("/ws", async (c) => {
    const query = wsQuerySchema.safeParse(c.req.query());
    if (!query.success) return c.json({ error: query.error.issues[0].message }, 400);
    const { format, presence } = query.data;
    const origin = c.req.header("origin");
    if (!originAllowed(origin, config.allowedOrigins)) {
      return c.json({ error: `origin not allowed: ${origin?.slice(0, 256)}` }, 403);
    }
    if (!connectsPerIp.take(c.env.remoteAddress)) {
      c.header("retry-after", "1");
      return c.json({
        error:
          `too many new connections from this address: ${config.maxConnectsPerIp} per second ` +
          "(MAX_CONNECTS_PER_IP)",
      }, 429);
    }
    const token = tokenFromRequest(new URL(c.req.url), c.req.raw.headers);
    const frameAuth = query.data.auth === "frame";
    let identity: Identity | undefined;
    if (token !== undefined) {
      try {
        identity = await authenticator.verify(token);
      } catch (err) {
        metrics.authFailures++;
        if (err instanceof AuthError) return c.json({ error: err.message }, err.status);
        throw err;
      }
      const cap = config.maxConnectionsPerUid;
      if (cap > 0 && hub.connectionsOf(identity.uid) >= cap) {
        return c.json({
          error: `uid ${identity.uid} has ${cap} connections (MAX_CONNECTIONS_PER_UID)`,
        }, 429);
      }
    } else if (!frameAuth) {
      metrics.authFailures++;
      return c.json(
        { error: "token required: ?token=, Authorization: Bearer, or ?auth=frame" },
        401,
      );
    }
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return c.json({ error: "expected a WebSocket upgrade" }, 426);
    }
    if (draining) return c.json({ error: "server is shutting down" }, 503);
    if (sockets >= deps.maxConnections) {
      return c.json({ error: `connection limit reached (${deps.maxConnections})` }, 503);
    }
    sockets++;
    return c.env.upgrade(
      c.req.raw,
      connection(connectionDeps, { identity, format, presence }),
    );
  });

  const send = async (c: Context<Env>) => {
    const fields: Record<string, unknown> = { ...c.req.query() };
    if (c.req.method === "POST") {
      const body = await readBody(c);
      if (body instanceof Response) return body;
      Object.assign(fields, body);
    }
    const parsed = sendSchema.safeParse(fields);
    if (!parsed.success) {
      return c.json({ error: parsed.error.issues[0].message, issues: parsed.error.issues }, 400);
    }
    const { uid, message } = parsed.data;
    const bytes = utf8Length(message);
    if (bytes > config.maxMessageBytes) {
      return c.json({
        error:
          `message is ${bytes} bytes; the limit is ${config.maxMessageBytes} (MAX_MESSAGE_BYTES)`,
      }, 413);
    }
    const { id, delivered, connections } = hub.sendToUid(uid, message, bytes);
    if (connections === 0) return c.json({ error: `client not found: ${uid}`, id, uid }, 404);
    return c.json({ id, uid, delivered }, 200);
  };

  /** Form and JSON bodies are both accepted; they carry URL-encoding, so allow 3× the message. */
  const sendBodyLimit = bodyLimit({
    maxSize: config.maxMessageBytes * 3 + 4096,
    onError: (c) =>
      c.json(
        { error: `request body too large; MAX_MESSAGE_BYTES is ${config.maxMessageBytes}` },
        413,
      ),
  });
  app.get("/send", apiKey, send);
  app.post("/send", apiKey, sendBodyLimit, send);
  app.use("/api/*", apiKey);
  app.route("/api", createApi({ config, hub }));

  async function readBody(c: Context<Env>): Promise<Record<string, unknown> | Response> {
    const type = c.req.header("content-type")?.split(";")[0].trim().toLowerCase() ?? "";
    if (type === "application/json") {
      let body: unknown;
      try {
        body = await c.req.json();
      } catch {
        return c.json({ error: "body is not valid JSON" }, 400);
      }
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        return c.json({ error: "JSON body must be an object" }, 400);
      }
      return body as Record<string, unknown>;
    }
    if (type === "application/x-www-form-urlencoded" || type === "multipart/form-data") {
      const form = await c.req.parseBody();
      return Object.fromEntries(Object.entries(form).filter(([, v]) => typeof v === "string"));
    }
    const length = c.req.header("content-length");
    if (type === "" && (length === undefined || length === "0")) return {}; // fields in the query
    return c.json({
      error: `unsupported content type ${type || "(none)"}: use a form or application/json`,
    }, 415);
  }

  app.get("/metrics", (c) => {
    const body = metrics.render({
      connections: hub.connections,
      users: hub.users,
      pending: hub.pending,
      unauthenticated: unauthenticated.count,
    });
    return c.body(body, 200, { "content-type": METRICS_CONTENT_TYPE });
  });
  // A page of this origin, so a browser's console can open a socket here: Chromium refuses
  // pages of other origins (and about:blank) access to local addresses.
  app.get("/", (c) => c.html(LANDING_PAGE));
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get(
    "/readyz",
    (c) => draining ? c.json({ status: "draining" }, 503) : c.json({ status: "ready" }),
  );

  for (const path of ["/", "/ws", "/send", "/metrics", "/healthz", "/readyz"]) {
    app.all(path, (c) => c.json({ error: `method ${c.req.method} not allowed on ${path}` }, 405));
  }
  app.notFound((c) => c.json({ error: `not found: ${c.req.method} ${c.req.path}` }, 404));
  app.onError((err, c) => {
    // Hono's own refusals (malformed JSON, say) carry their status and a message for the caller.
    if (err instanceof HTTPException && err.status < 500) {
      return c.json({ error: err.message }, err.status);
    }
    console.error(`error on ${c.req.method} ${c.req.path}: ${err}`);
    return c.json({ error: "internal error" }, 500);
  });

  return {
    fetch: (request, env) => app.fetch(request, env),
    sockets: () => sockets,
    drain: () => {
      draining = true;
    },
  };
}

/** A path and query with every secret-bearing parameter's value replaced, for logs. */
export function redact(pathAndQuery: string): string {
  return pathAndQuery.replace(
    /([?&](?:token|access_token|api_key|apikey|key|jwt)=)[^&#]*/gi,
    "$1[redacted]",
  );
}

const LANDING_PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>deno-pusher</title>
<h1>deno-pusher is running</h1>
<p>Browsers connect to <code>/ws?token=&lt;JWT&gt;</code>; backends push with
<code>/send?uid=&lt;uid&gt;&amp;message=&lt;text&gt;</code>. Paste the browser line that the server
printed at start into this page's developer console to watch pushes arrive.</p>
`;

/**
 * The client's address: `peer`, unless `peer` is a trusted proxy, in which case the rightmost
 * address of X-Forwarded-For that is not itself a trusted proxy (the left part can be forged by
 * the client; what the proxies appended cannot).
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | undefined,
  trusted: string[],
): string {
  if (!trusted.includes(peer) || !forwardedFor) return peer;
  const hops = forwardedFor.split(",").map((h) => h.trim()).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) if (!trusted.includes(hops[i])) return hops[i];
  return hops[0] ?? peer;
}
