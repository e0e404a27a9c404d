/**
 * Wires the parts together: configuration, message logger, hub, HTTP app, runtime adapter and
 * signals. Nothing here decides how a push is delivered.
 */
import process from "node:process";
import { readFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import pkg from "./package.json" with { type: "json" };
import { Authenticator, randomSecret } from "./authenticator.ts";
import { CloseCode } from "./client.ts";
import { type Config, ConfigError, helpText, parseConfig } from "./config.ts";
import { lockDataDir } from "./datadir.ts";
import { autoMaxConnections, maxTcpConnections, openFileLimit } from "./descriptors.ts";
import { type DeliveryErrorHandler, Hub } from "./hub.ts";
import { MessageIds } from "./message/ids.ts";
import { type MessageLogger, NullLogger } from "./message/logger.ts";
import { SqliteLogger } from "./message/sqlite.ts";
import { SqliteHistory } from "./engine/history_sqlite.ts";
import { RedisHistory } from "./engine/history_redis.ts";
import { RedisBroker } from "./engine/broker_redis.ts";
import { RedisPresence } from "./engine/presence_redis.ts";
import { RedisNodes } from "./engine/nodes_redis.ts";
import { redactedUrl } from "./engine/redis.ts";
import { ClientMessageGate } from "./webhook/gate.ts";
import { WebhookDeliverer } from "./webhook/deliverer.ts";
import { SqliteOutbox, WEBHOOK_FILE } from "./webhook/outbox_sqlite.ts";
import { RedisOutbox } from "./webhook/outbox_redis.ts";
import type { Outbox } from "./webhook/outbox.ts";
import { filtered } from "./webhook/events.ts";
import type { PresentClient } from "./engine/presence.ts";
import type { HistoryStore } from "./engine/history.ts";
import type { IdempotencyStore } from "./idempotency/store.ts";
import { IDEMPOTENCY_FILE, SqliteIdempotency } from "./idempotency/sqlite.ts";
import { CapacityFile } from "./capacities.ts";
import { RedisIdempotency } from "./idempotency/redis.ts";
import { startCheckpoints } from "./sqlite.ts";
import { StdoutLogger } from "./message/stdout.ts";
import { Metrics } from "./metrics.ts";
import type { Listening } from "./runtime/contract.ts";
import { runtimeName, serve } from "./runtime/serve.ts";
import { type App, type ClusterState, createApp } from "./server.ts";
import { tokenCommand } from "./token.ts";

/** The version printed by --version and in the start banner. */
export const VERSION: string = pkg.version;

/** A running server and its parts, for main and for tests. */
export interface Running {
  /** `http://<host>:<port>` with a host that reaches it from this machine. */
  url: string;
  port: number;
  hub: Hub;
  metrics: Metrics;
  app: App;
  logger: MessageLogger;
  authenticator: Authenticator;
  /** The HMAC secret tokens are checked with (random when none was configured); none for RS* etc. */
  secret: string | undefined;
  /** True when the secret was generated for this process. */
  generatedSecret: boolean;
  maxConnections: number;
  /** This node's name in its cluster (REDIS_URL); undefined for a single node. */
  node: string | undefined;
  /**
   * Stops: /readyz turns 503, every socket gets 1001, the log is flushed, then it waits up to
   * SHUTDOWN_GRACE seconds for the listener to finish open requests. Idempotent.
   */
  stop(): Promise<void>;
}

/** Extra wiring that is not configuration. */
export interface StartOptions {
  onDeliveryError?: DeliveryErrorHandler;
  /** Where the stdout logger writes; tests capture it. */
  stdout?: (text: string) => void;
  /** The clock message ids start from (ms since the epoch); tests step it back. */
  clock?: () => number;
  /**
   * Whether the SQLite files are checkpointed by a worker (sqlite_checkpointer.ts); default true.
   * Tests that start many short-lived servers in one process turn it off: a worker per server is
   * an isolate each, and the writers then checkpoint by themselves, as SQLite does by default.
   */
  checkpointer?: boolean;
}

/** Starts a server with `config`. Resolves once it listens. */
export async function start(config: Config, options: StartOptions = {}): Promise<Running> {
  // The key first: a key that cannot be read stops start-up before anything is opened.
  const hmac = config.jwtAlg.startsWith("HS");
  const secret = hmac ? config.jwtSecret ?? randomSecret() : undefined;
  const authenticator = await Authenticator.create({
    alg: config.jwtAlg,
    secret,
    publicKeyPem: config.jwtPublicKeyFile && readFileSync(config.jwtPublicKeyFile, "utf8"),
    jwksUrl: config.jwtJwksUrl,
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    requireExp: config.jwtRequireExp,
    uidClaim: config.jwtUidClaim,
    maxTokenBytes: config.maxTokenBytes,
  });
  const dataDir = lockDataDir(config.dataDir); // refuses a second server on the same directory
  const onLogError = (err: unknown) =>
    console.error(`message log: ${err instanceof Error ? err.message : err}`);
  const metrics = new Metrics();
  // Checkpoints of the SQLite files run off the event loop (sqlite_checkpointer.ts); started before
  // the stores open, so that they leave checkpoints to it.
  const redisUrl = config.redisUrl;
  const checkpoints = options.checkpointer === false ? undefined : startCheckpoints(
    [
      ...(config.messageLogger === "sqlite" ? [join(dataDir.dir, "messages.db")] : []),
      ...(config.historySize > 0 && !redisUrl ? [join(dataDir.dir, "history.db")] : []),
      ...(redisUrl ? [] : [join(dataDir.dir, IDEMPOTENCY_FILE)]),
      ...(config.webhookUrl.length > 0 && !redisUrl ? [join(dataDir.dir, WEBHOOK_FILE)] : []),
    ],
    (err) => {
      metrics.sqliteCheckpointErrors++;
      console.error(`sqlite: ${err.message}`);
    },
    () => metrics.sqliteCheckpoints++,
  );
  let logger: MessageLogger | undefined, ids: MessageIds;
  let history: HistoryStore | undefined;
  let idempotency: IdempotencyStore | undefined;
  let outbox: Outbox | undefined;
  let capacities: { store: CapacityFile; kept: Map<string, number> } | undefined;
  try {
    // A cluster keeps the groups' own bounds in Redis (its presence registry).
    if (!redisUrl) {
      const store = new CapacityFile(dataDir.dir);
      capacities = { store, kept: store.load() };
    }
    logger = config.messageLogger === "sqlite"
      ? new SqliteLogger(join(dataDir.dir, "messages.db"), config.logFlushMs, onLogError)
      : config.messageLogger === "stdout"
      ? new StdoutLogger(config.logFlushMs, onLogError, options.stdout)
      : new NullLogger();
    ids = new MessageIds(dataDir.dir, { floor: logger.lastId(), now: options.clock });
    const onHistoryError = (err: Error) => console.error(`history: ${err.message}`);
    const onIdempotencyError = (err: Error) => console.error(`idempotency: ${err.message}`);
    if (config.historySize > 0) {
      const bounds = { size: config.historySize, ttl: config.historyTtl };
      // A new store holds nothing sent before it: clients resuming from then are told so.
      history = redisUrl
        ? new RedisHistory({
          url: redisUrl,
          prefix: config.redisPrefix,
          ...bounds,
          floor: ids.last,
          onError: onHistoryError,
        })
        : new SqliteHistory(join(dataDir.dir, "history.db"), {
          ...bounds,
          floor: ids.last,
          onError: onHistoryError,
        });
    }
    idempotency = redisUrl
      ? new RedisIdempotency({
        url: redisUrl,
        prefix: config.redisPrefix,
        ttl: config.idempotencyTtl,
        onError: onIdempotencyError,
      })
      : new SqliteIdempotency(join(dataDir.dir, IDEMPOTENCY_FILE), {
        ttl: config.idempotencyTtl,
        onError: onIdempotencyError,
      });
    if (config.webhookUrl.length > 0) {
      const onError = (err: Error) => console.error(`webhooks: ${err.message}`);
      // In a cluster, one outbox for every node: a node that dies leaves its events to the others.
      outbox = redisUrl
        ? new RedisOutbox({ url: redisUrl, prefix: config.redisPrefix, onError })
        : new SqliteOutbox(join(dataDir.dir, WEBHOOK_FILE), { onError });
    }
    if (logger instanceof SqliteLogger && logger.interrupted > 0) {
      console.error(
        `message log: ${logger.interrupted} message(s) the last run left accepted (it ended ` +
          `before their delivery was settled) are now marked interrupted`,
      );
    }
  } catch (err) {
    checkpoints?.stop();
    logger?.close();
    await history?.close();
    await idempotency?.close();
    await outbox?.close();
    dataDir.release();
    throw err;
  }
  metrics.messageLog = logger;
  // Webhooks: kept in the outbox at once, POSTed by the deliverer; the hub never waits on them.
  const deliverer = outbox && new WebhookDeliverer({
    urls: config.webhookUrl,
    secret: config.webhookSecret!,
    outbox,
    maxAgeMs: config.webhookMaxAge * 1000,
    onError: (err) => console.error(`webhooks: ${err.message}`),
  });
  // A cluster's node: a broker and a presence registry on the same Redis (engine/).
  // Port 0 is no name: two such processes on one host would share it.
  const node = config.nodeName ??
    `${hostname()}:${config.port || `${process.pid}-${randomBytes(3).toString("hex")}`}`;
  const cluster = redisUrl
    ? {
      broker: new RedisBroker({
        url: redisUrl,
        prefix: config.redisPrefix,
        node,
        floor: ids.last,
        history: history as RedisHistory | undefined,
        onRedisError: (err) => console.error(`cluster: ${err.message}`),
      }),
      presence: new RedisPresence({
        url: redisUrl,
        prefix: config.redisPrefix,
        node,
        // Called from the first beat on, once Redis has answered: the hub exists by then.
        snapshot: (): Iterable<PresentClient> => hub.present(),
        fingerprint: jwtFingerprint(config, secret),
        onEvent: (event) => hub.told(event),
        onChange: (change, name) => hub.clusterChanged(change, name),
        offlineDelayMs: config.webhookOfflineDelay * 1000,
        onMismatch: (nodes) => {
          if (nodes.length === 0) return;
          console.error(
            `cluster: node(s) ${nodes.join(", ")} check tokens with other settings than this ` +
              `node (JWT_SECRET, JWT_ALG, JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL, JWT_ISSUER, ` +
              `JWT_AUDIENCE or JWT_UID_CLAIM differ): a token may work on one node and not on ` +
              `another; give every node the same`,
          );
        },
        onError: (err) => console.error(`cluster: ${err.message}`),
      }),
      nodes: new RedisNodes({ url: redisUrl, prefix: config.redisPrefix, node }),
    }
    : undefined;
  const hub = new Hub({
    logger,
    ids,
    metrics,
    maxQueueBytes: config.maxQueueBytes,
    slowConsumerTimeout: config.slowConsumerTimeout * 1000,
    maxPresenceMembers: config.maxPresenceMembers,
    history,
    offlineTtl: config.offlineTtl * 1000,
    maxGroupMembers: config.maxGroupMembers,
    capacities,
    maxLocksPerConnection: config.maxLocksPerConnection,
    onDeliveryError: options.onDeliveryError,
    broker: cluster?.broker,
    presence: cluster?.presence,
    webhooks: deliverer && filtered(deliverer, config.webhookEvents),
    offlineDelay: config.webhookOfflineDelay * 1000,
  });
  const clusterState = cluster && joinCluster(hub, cluster.broker, cluster.presence);

  const fileLimit = openFileLimit();
  const maxConnections = config.maxConnections === "auto"
    ? autoMaxConnections(fileLimit)
    : config.maxConnections;
  if (config.maxConnections === "auto" && fileLimit === undefined) {
    console.error(
      `the open-file limit could not be read (on Deno, reading /proc needs --allow-all): ` +
        `MAX_CONNECTIONS defaults to ${maxConnections}; set it to stay below the limit`,
    );
  }
  const app = createApp({
    config,
    hub,
    metrics,
    authenticator,
    maxConnections,
    idempotency,
    cluster: clusterState,
    nodes: cluster?.nodes,
    webhookStats: deliverer && (() => deliverer.stats()),
    gate: config.clientMessageHook === undefined ? undefined : new ClientMessageGate({
      url: config.clientMessageHook,
      secret: config.webhookSecret!,
      timeoutMs: config.clientMessageHookTimeout * 1000,
    }),
  });
  let listening: Listening;
  try {
    listening = await serve(app, {
      host: config.host,
      port: config.port,
      idleTimeout: config.idleTimeout,
      maxFrameBytes: config.maxFrameBytes,
      maxTcpConnections: maxTcpConnections(fileLimit),
      maxQueueBytes: config.maxQueueBytes,
      reusePort: config.reusePort,
    });
  } catch (err) {
    checkpoints?.stop();
    await cluster?.presence.close();
    await cluster?.nodes.close();
    await cluster?.broker.close();
    await deliverer?.close();
    await outbox?.close();
    logger.close();
    await history?.close();
    await idempotency?.close();
    dataDir.release();
    throw err;
  }
  const expiry = expireMailbox(config, logger, hub);
  const host = config.host === "0.0.0.0" || config.host === "::" ? "localhost" : config.host;
  let stopping: Promise<void> | undefined;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${listening.port}`,
    port: listening.port,
    hub,
    metrics,
    app,
    logger,
    authenticator,
    secret,
    generatedSecret: hmac && config.jwtSecret === undefined,
    maxConnections,
    node: cluster && node,
    stop: () =>
      stopping ??= (async () => {
        app.drain();
        clearInterval(expiry);
        // Our 1001 and reason reach every socket, and their close handshakes finish, before the
        // listener stops: Deno's shutdown would otherwise close them with a reason of its own.
        const socketsClosed = app.closeAll(CloseCode.goingAway.code, CloseCode.goingAway.reason);
        // Flush first: whatever happens to the listener below, nothing accepted is lost.
        logger.flush();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const graceOver = new Promise<"grace over">((resolve) =>
          timer = setTimeout(() => resolve("grace over"), config.shutdownGrace * 1000)
        );
        const outcome = await Promise.race([
          socketsClosed.then(() => listening.stop()),
          graceOver,
        ]);
        clearTimeout(timer);
        if (outcome === "grace over") {
          console.error(
            `shutdown: SHUTDOWN_GRACE of ${config.shutdownGrace}s is over with requests still open`,
          );
        }
        checkpoints?.stop();
        // Out of the cluster's presence first, then no more publications: the hub is empty.
        await cluster?.presence.close();
        await cluster?.nodes.close();
        await cluster?.broker.close();
        // Every uid is gone: its uid.offline goes into the outbox now, not after the delay; what
        // the receiver has not taken waits there for the next start.
        hub.flushWebhooks();
        await deliverer?.close();
        await outbox?.close();
        logger.close();
        await history?.close();
        await idempotency?.close();
        dataDir.release();
      })(),
  };
}

/**
 * Waits, in the background, for the cluster's broker to subscribe, then catches the hub up to the
 * cluster's last id (hub.ts's `caughtUp`), again after every loss of the subscription. Until then,
 * and while Redis is unreachable, the node is not ready (/readyz 503).
 */
function joinCluster(hub: Hub, broker: RedisBroker, presence: RedisPresence): ClusterState {
  let caughtUp = false;
  const catchUp = async () => {
    while (true) {
      await broker.subscribed();
      try {
        hub.caughtUp(await broker.lastId());
        await hub.loadCapacities();
        caughtUp = true;
        return;
      } catch (err) {
        console.error(`cluster: ${err instanceof Error ? err.message : err}`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  };
  catchUp();
  return {
    node: presence.node,
    unready: () =>
      !caughtUp
        ? "joining the cluster: Redis has not answered yet"
        : !broker.isSubscribed
        ? "Redis is unreachable: sends answer 503 until it is back"
        : undefined,
    nodes: () => presence.counts().then((counts) => counts.nodes, () => presence.nodes),
    lagSeconds: () => broker.lagMs / 1000,
  };
}

/**
 * A fingerprint of how this node checks tokens, to compare with the other nodes' in a cluster: a
 * hash of the algorithm, the key (the HMAC secret, the public key file's name or the JWKS URL),
 * issuer, audience and uid claim. 16 hex digits of SHA-256: it tells settings apart, and shows
 * nothing of the secret.
 */
function jwtFingerprint(config: Config, secret: string | undefined): string {
  const parts = [
    config.jwtAlg,
    secret ?? "",
    config.jwtPublicKeyFile ? readFileSync(config.jwtPublicKeyFile, "utf8") : "",
    config.jwtJwksUrl ?? "",
    config.jwtIssuer ?? "",
    config.jwtAudience ?? "",
    config.jwtUidClaim,
  ];
  return createHash("sha256").update(`deno-pusher jwt\0${parts.join("\0")}`).digest("hex")
    .slice(0, 16);
}

/** Milliseconds between two expiries of the mailbox at most; shorter when OFFLINE_TTL is. */
const MAILBOX_EXPIRY_MS = 10_000;

/**
 * Settles as `expired` the mailbox's messages older than OFFLINE_TTL, now and then (a mailbox
 * message left waiting is `expired` within OFFLINE_TTL plus MAILBOX_EXPIRY_MS), and tells the
 * webhooks (message.undelivered); none without a mailbox or a log that keeps statuses.
 */
function expireMailbox(
  config: Config,
  logger: MessageLogger,
  hub: Hub,
): ReturnType<typeof setInterval> | undefined {
  if (config.offlineTtl === 0 || !logger.expireQueued) return undefined;
  const ttlMs = config.offlineTtl * 1000;
  const timer = setInterval(() => {
    try {
      for (const { id, uid } of logger.expireQueued!(Date.now() - ttlMs)) hub.expired(id, uid);
    } catch (err) {
      console.error(`mailbox: ${err instanceof Error ? err.message : err}`);
    }
  }, Math.min(MAILBOX_EXPIRY_MS, ttlMs));
  timer.unref();
  return timer;
}

/** The start banner; with a generated secret, a dev token and lines that work as printed. */
export async function banner(running: Running, config: Config): Promise<string> {
  const lines = [
    `deno-pusher ${VERSION} on ${runtimeName}, listening on ${config.host}:${running.port}` +
    ` (max ${running.maxConnections} connections)`,
    `message log: ${
      config.messageLogger === "sqlite"
        ? `sqlite at ${join(resolve(config.dataDir), "messages.db")}`
        : config.messageLogger
    }`,
  ];
  if (config.redisUrl) {
    lines.push(
      `cluster: node ${running.node} on ${redactedUrl(config.redisUrl)} ` +
        `(REDIS_PREFIX ${config.redisPrefix}); /readyz says when it has joined`,
    );
  }
  if (config.examples) {
    lines.push(`examples (EXAMPLES=true): ${running.url}/examples/`);
  }
  if (running.generatedSecret) {
    const token = await running.authenticator.sign("123", 24 * 3600);
    const ws = running.url.replace(/^http/, "ws");
    lines.push(
      "",
      "No JWT_SECRET is set: this run signs tokens with a random secret that dies with it.",
      "Dev token for uid 123, valid 24 hours:",
      `  ${token}`,
      `In a browser, open ${running.url}/ and paste into its developer console:`,
      `  const ws = new WebSocket("${ws}/ws?token=${token}"); ws.onmessage = (e) => console.log(e.data);`,
      "Then, from a shell on this machine:",
      `  curl "${running.url}/send?uid=123&message=Hello"`,
      "",
    );
  }
  return lines.join("\n");
}

/** Why start-up failed, as the operator can act on it: a port in use says how to pick another. */
function startFailure(err: unknown, config: Config): string {
  if ((err as { code?: unknown }).code === "EADDRINUSE") {
    return `port ${config.port} is already in use on ${config.host}; ` +
      "stop what listens there, or pick another port with --port or PORT (e.g. PORT=8282)";
  }
  return (err as Error).message;
}

async function main(args: string[]): Promise<number> {
  if (args[0] === "token") {
    try {
      console.log(await tokenCommand(args.slice(1), process.env));
      return 0;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      console.error(`deno-pusher token: ${err.message}`);
      return 2;
    }
  }
  let parsed;
  try {
    parsed = parseConfig(args, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`deno-pusher: ${err.message}`);
    return 2;
  }
  if (parsed.kind === "help") {
    console.log(helpText());
    return 0;
  }
  if (parsed.kind === "version") {
    console.log(`deno-pusher ${VERSION} (${runtimeName})`);
    return 0;
  }
  const config = parsed.config;
  let running: Running;
  try {
    running = await start(config);
  } catch (err) {
    console.error(`deno-pusher: cannot start: ${startFailure(err, config)}`);
    return 1;
  }
  console.log(await banner(running, config));
  return await new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: string) => {
      if (stopping) {
        // A second signal: the operator does not want to wait. Keep what is logged, then go.
        console.log(`${signal} again: exiting now`);
        running.logger.flush();
        process.exit(130);
      }
      stopping = true;
      console.log(`${signal}: closing connections (1001) and flushing the message log`);
      running.stop().then(() => resolve(0), (err) => {
        console.error(`deno-pusher: shutdown failed: ${err}`);
        resolve(1);
      });
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
  });
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
