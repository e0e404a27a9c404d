/**
 * The HTTP surface: /ws (every check that can be made before the upgrade, then the upgrade), /send,
 * /api (api/), /metrics, /healthz and /readyz. Requests are validated here, once, at the edge;
 * the hub decides who receives what; connection.ts runs each socket after its upgrade. The runtime
 * (Deno or Bun) is reached only through `RuntimeEnv`, which its adapter in runtime/ passes in.
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { Context, MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { type Authenticator, AuthError, type Identity, tokenFromRequest } from "./authenticator.ts";
import type { Config } from "./config.ts";
import { type Closable, connection, type ConnectionDeps, ExpiryWatch } from "./connection.ts";
import { type Hub, StoreUnavailableError } from "./hub.ts";
import { requireApiKey } from "./apikey.ts";
import { createApi } from "./api/api.ts";
import { exampleRoutes } from "./examples/routes.ts";
import { sdkRoutes } from "./sdk/routes.ts";
import { adminRoutes } from "./admin/routes.ts";
import { clientNotFoundMessage, messageTooLarge, oversize } from "./api/errors.ts";
import { type Metrics, METRICS_CONTENT_TYPE } from "./metrics.ts";
import type { NodeChannel } from "./engine/nodes.ts";
import type { ClientMessageGate } from "./webhook/gate.ts";
import type { WebhookStats } from "./webhook/deliverer.ts";
import { Roster } from "./roster.ts";
import { originAllowed } from "./origin.ts";
import { addressKey, Bucket, RateLimiter } from "./ratelimit.ts";
import type { RuntimeEnv, Served } from "./runtime/contract.ts";
import { idempotent } from "./idempotency/middleware.ts";
import type { IdempotencyStore } from "./idempotency/store.ts";

export type { RuntimeEnv };

/** What the app needs; main.ts wires it, tests build it with other settings. */
export interface AppDeps {
  config: Config;
  hub: Hub;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Most sockets open at once, authenticated or not; past it /ws answers 503. */
  maxConnections: number;
  /** Where operator lines go (refused handshakes); stderr by default. */
  log?: (line: string) => void;
  /** Where Idempotency-Key answers are kept; without one the header is ignored. */
  idempotency?: IdempotencyStore;
  /** A cluster node's state (REDIS_URL); none for a single node. */
  cluster?: ClusterState;
  /** How the API reaches the other nodes' connections (REDIS_URL); none for a single node. */
  nodes?: NodeChannel;
  /** CLIENT_MESSAGE_HOOK's gate for clients' publish and send frames; none without it. */
  gate?: ClientMessageGate;
  /** How webhook delivery is going, for /metrics; none without WEBHOOK_URL. */
  webhookStats?: () => WebhookStats;
}

/** What /readyz and /metrics tell of a cluster node. */
export interface ClusterState {
  /** This node's name (NODE_NAME). */
  node: string;
  /** Why the node cannot take sends now (Redis is unreachable), or undefined when it can. */
  unready(): string | undefined;
  /** Nodes of the cluster now; the last count known while Redis cannot answer. */
  nodes(): Promise<number>;
  lagSeconds(): number;
}

/** The app and the state the adapters and main.ts need to see. */
export interface App extends Served {
  /** Sockets upgraded and not yet closed, authenticated or not. */
  readonly sockets: () => number;
  /** Marks the server as draining: /readyz turns 503 and /ws refuses new sockets. */
  drain(): void;
  /**
   * Closes every open socket with `code` and `reason`, authenticated or not; resolves once every
   * upgraded socket has closed (the caller bounds the wait).
   */
  closeAll(code: number, reason: string): Promise<void>;
}

/** Refused handshakes logged per second at most; the rest are counted in the next line. */
const REFUSALS_LOGGED_PER_SECOND = 10;

/** Sec-WebSocket-Key: the base64 of 16 bytes (RFC 6455, 4.1). */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{22}==$/;

/** What is wrong with a WebSocket handshake's headers (RFC 6455, 4.2.1), or undefined. */
export function handshakeProblem(headers: Headers): string | undefined {
  const connection = headers.get("connection")?.toLowerCase().split(",").map((t) => t.trim());
  if (!connection?.includes("upgrade")) return "WebSocket handshake needs Connection: Upgrade";
  if (!WEBSOCKET_KEY.test(headers.get("sec-websocket-key")?.trim() ?? "")) {
    return "WebSocket handshake needs a Sec-WebSocket-Key of 16 bytes in base64";
  }
  if (headers.get("sec-websocket-version")?.trim() !== "13") {
    return "WebSocket handshake needs Sec-WebSocket-Version: 13";
  }
  return undefined;
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
  since: z.string().regex(/^\d{1,16}$/, { error: "since must be a message id (a whole number)" })
    .transform(Number).refine(Number.isSafeInteger, {
      error: "since must be a message id (a whole number)",
    }).optional(),
}).refine((q) => !q.presence || q.format === "json", {
  error: "presence events need format=json",
});

/**
 * Hono's `c.json`, with a newline after the JSON: every JSON answer ends with one, as a terminal or
 * a line-reading client expects. Set on each request's context before any route runs, so that the
 * API's routes, its validation errors, `notFound` and `onError` all answer through it; writing the
 * newline at the source spares every call a copy of its answer.
 */
function jsonWithNewline(c: Context<Env>): Context<Env>["json"] {
  const json = (
    object: unknown,
    arg?: ContentfulStatusCode | ResponseInit,
    headers?: Record<string, string>,
  ) =>
    c.body(
      `${JSON.stringify(object)}\n`,
      arg as ContentfulStatusCode,
      { "Content-Type": "application/json", ...headers },
    );
  return json as unknown as Context<Env>["json"];
}

/** Builds the Hono app. Stateless across requests but for the hub and the counters. */
export function createApp(deps: AppDeps): App {
  const { config, hub, metrics, authenticator } = deps;
  const app = new Hono<Env>();
  let sockets = 0;
  const unauthenticated = { count: 0 };
  let draining = false;
  const apiKey = requireApiKey(config.apiKeys, new RateLimiter(config.maxRequestsPerKey));
  const connectsPerIp = new RateLimiter(config.maxConnectsPerIp);
  const open = new Set<Closable>();
  const log = deps.log ?? ((line: string) => console.error(line));
  /** Waiters for the moment no socket is left (shutdown). */
  const allClosed: (() => void)[] = [];
  const socketClosed = () => {
    sockets--;
    if (sockets === 0) { for (const resolve of allClosed.splice(0)) resolve(); }
  };
  const connectionDeps: ConnectionDeps = {
    config,
    hub,
    metrics,
    authenticator,
    unauthenticated,
    open,
    onClosed: socketClosed,
    gate: deps.gate,
    expiries: new ExpiryWatch(),
  };

  app.use(async (c, next) => {
    const started = Date.now();
    c.env.remoteAddress = clientAddress(
      c.env.remoteAddress,
      c.req.header("x-forwarded-for"),
      config.trustedProxies,
    );
    c.json = jsonWithNewline(c);
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

  /** Logs one line per refused /ws handshake, at most REFUSALS_LOGGED_PER_SECOND. */
  const refusalLog = new Bucket(REFUSALS_LOGGED_PER_SECOND);
  let refusalsUnlogged = 0;
  const refuse = (
    c: Context<Env>,
    status: ContentfulStatusCode,
    error: string,
    headers?: Record<string, string>,
  ) => {
    if (refusalLog.take()) {
      const url = new URL(c.req.url);
      const more = refusalsUnlogged > 0 ? ` (${refusalsUnlogged} more refusals not shown)` : "";
      refusalsUnlogged = 0;
      log(
        `/ws refused ${status} for ${c.env.remoteAddress} ${
          redact(url.pathname + url.search)
        }: ${error}${more}`,
      );
    } else refusalsUnlogged++;
    return c.json({ error }, status, headers);
  };

  app.get("/ws", async (c) => {
    const query = wsQuerySchema.safeParse(c.req.query());
    if (!query.success) return refuse(c, 400, query.error.issues[0].message);
    const { format, presence, since } = query.data;
    const origin = c.req.header("origin");
    if (!originAllowed(origin, config.allowedOrigins)) {
      return refuse(c, 403, `origin not allowed: ${origin?.slice(0, 256)}`);
    }
    if (!connectsPerIp.take(addressKey(c.env.remoteAddress))) {
      return refuse(
        c,
        429,
        `too many new connections from this address: ${config.maxConnectsPerIp} per second ` +
          "(MAX_CONNECTS_PER_IP)",
        { "retry-after": "1" },
      );
    }
    const token = tokenFromRequest(new URL(c.req.url), c.req.raw.headers);
    const frameAuth = query.data.auth === "frame";
    let identity: Identity | undefined;
    if (token !== undefined) {
      try {
        identity = await authenticator.verify(token);
      } catch (err) {
        metrics.authFailures++;
        if (err instanceof AuthError) return refuse(c, err.status, err.message);
        throw err;
      }
      const cap = config.maxConnectionsPerUid;
      // This node's count first, in this tick, so a burst of handshakes cannot all pass it; then,
      // in a cluster, every node's.
      if (
        cap > 0 &&
        (hub.connectionsOf(identity.uid) >= cap ||
          (hub.clustered && await hub.connectionsAnywhere(identity.uid) >= cap))
      ) {
        return refuse(
          c,
          429,
          `uid ${identity.uid} has ${cap} connections (MAX_CONNECTIONS_PER_UID)`,
        );
      }
    } else if (!frameAuth) {
      metrics.authFailures++;
      return refuse(c, 401, "token required: ?token=, Authorization: Bearer, or ?auth=frame");
    }
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return refuse(c, 426, "expected a WebSocket upgrade");
    }
    const problem = handshakeProblem(c.req.raw.headers);
    if (problem) return refuse(c, 400, problem, { "sec-websocket-version": "13" });
    if (draining) return refuse(c, 503, "server is shutting down");
    if (sockets >= deps.maxConnections) {
      return refuse(c, 503, `connection limit reached (${deps.maxConnections})`);
    }
    // Counted before the upgrade, so that concurrent handshakes cannot pass the cap together;
    // counted down by the socket's close, or here when the runtime refuses the handshake.
    sockets++;
    const response = c.env.upgrade(
      c.req.raw,
      connection(connectionDeps, { identity, format, presence, since }),
    );
    if (response === undefined) {
      socketClosed();
      return refuse(c, 400, "WebSocket handshake refused by the runtime");
    }
    return response;
  });

  const idem: MiddlewareHandler = deps.idempotency
    ? idempotent(deps.idempotency)
    : async (_c, next) => await next();

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
    const tooLarge = oversize(config, message);
    if (tooLarge) return messageTooLarge(c, tooLarge);
    const { id, delivered, connections, queued } = await hub.sendToUid(uid, message);
    // Kept for the uid's next connection (OFFLINE_TTL): accepted, not yet delivered.
    if (queued) return c.json({ id, uid, delivered, queued }, 202);
    if (connections === 0) return c.json({ error: clientNotFoundMessage(uid), id, uid }, 404);
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
  app.get("/send", apiKey, idem, send);
  app.post("/send", apiKey, sendBodyLimit, idem, send);
  app.use("/api/*", apiKey);
  const roster = new Roster(hub, deps.nodes);
  app.route("/api", createApi({ config, hub, roster, idempotent: idem }));
  if (config.examples) exampleRoutes(app, { hub, authenticator });
  sdkRoutes(app);
  adminRoutes(app);

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

  app.get("/metrics", async (c) => {
    const body = metrics.render({
      connections: hub.connections,
      users: hub.users,
      pending: hub.pending,
      unauthenticated: unauthenticated.count,
      cluster: deps.cluster && {
        node: deps.cluster.node,
        nodes: await deps.cluster.nodes(),
        lagSeconds: deps.cluster.lagSeconds(),
      },
      webhooks: deps.webhookStats?.(),
    });
    return c.body(body, 200, { "content-type": METRICS_CONTENT_TYPE });
  });
  // A page of this origin, so a browser's console can open a socket here: Chromium refuses
  // pages of other origins (and about:blank) access to local addresses.
  app.get("/", (c) => c.html(LANDING_PAGE));
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get(
    "/readyz",
    (c) => {
      if (draining) return c.json({ status: "draining" }, 503);
      const why = deps.cluster?.unready();
      return why ? c.json({ status: "unavailable", error: why }, 503) : c.json({ status: "ready" });
    },
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
    // The history store could not keep a message: nothing was pushed, and a retry may succeed.
    if (err instanceof StoreUnavailableError) {
      console.error(`${c.req.method} ${c.req.path}: ${err.message}`);
      return c.json({ error: err.message }, 503);
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
    closeAll(code, reason) {
      const closed = new Promise<void>((resolve) => {
        if (sockets === 0) resolve();
        else allClosed.push(resolve);
      });
      for (const socket of [...open]) socket.shut(code, reason);
      return closed;
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
