/**
 * Configuration: one table of settings, read from flags, the environment and an optional JSON file
 * (in that order of precedence, then defaults), validated once with zod. The table is the single
 * source for parsing, `--help` and the README's table.
 */
import { readFileSync } from "node:fs";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { z } from "zod";
import { DEFAULT_WEBHOOK_TYPES, WEBHOOK_TYPES } from "./webhook/events.ts";

/** One setting: its flag (`--name`), its environment variable, its schema and its help line. */
interface Setting {
  env: string;
  /** Takes the text (flag, variable or file) to the value the program reads. */
  schema: z.ZodType;
  help: string;
  /** Shown in --help; `undefined` means "no default". */
  default?: string;
  /** The values an enumerated setting accepts, as --help lists them. */
  values?: string;
  /** A credential: no message ever shows its value, only its length. */
  secret?: true;
}

const number = () =>
  z.coerce.number({ error: "must be a number" }).refine(Number.isFinite, "must be a number");
const boolean = () =>
  z.enum(["true", "false", "1", "0", "yes", "no"], { error: "must be true or false" })
    .transform((v) => v === "true" || v === "1" || v === "yes");
const int = (min: number, max: number) =>
  number().pipe(z.number().int("must be a whole number").min(min).max(max));
const seconds = (min: number, max: number) => number().pipe(z.number().min(min).max(max));
/** A comma-separated list: items trimmed, empty ones dropped. */
const list = (item: z.ZodString = z.string()) =>
  item.transform((v) => v.split(",").map((k) => k.trim()).filter(Boolean));
const BOOLEAN_VALUES = "true or false (also 1/0, yes/no)";

/** The JWT algorithms a deployment can pin. HS* use JWT_SECRET; the rest a public key or JWKS. */
export const JWT_ALGS = [
  "HS256",
  "HS384",
  "HS512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
] as const;
export type JwtAlg = (typeof JWT_ALGS)[number];

/** Where accepted messages are recorded. */
export const MESSAGE_LOGGERS = ["sqlite", "stdout", "none"] as const;

/** Every setting. Keys are the flag names without `--`. */
export const SETTINGS = {
  host: {
    env: "HOST",
    schema: z.string().min(1),
    default: "0.0.0.0",
    help: "address to listen on",
  },
  port: {
    env: "PORT",
    schema: int(0, 65535),
    default: "8181",
    help: "TCP port to listen on (0 picks a free one)",
  },
  "jwt-secret": {
    env: "JWT_SECRET",
    schema: z.string().min(
      32,
      "must be at least 32 characters; make one with: openssl rand -hex 32",
    ),
    help: "HMAC secret for client JWTs; unset: a random one per process and a printed dev token",
    secret: true,
  },
  "jwt-alg": {
    env: "JWT_ALG",
    schema: z.enum(JWT_ALGS, { error: `must be one of ${JWT_ALGS.join(", ")}` }),
    default: "HS256",
    values: JWT_ALGS.join(", "),
    help: "the one JWT algorithm accepted (pinned; the token's header never chooses it)",
  },
  "jwt-public-key-file": {
    env: "JWT_PUBLIC_KEY_FILE",
    schema: z.string().min(1),
    help: "PEM (SPKI) public key for RS*, PS*, ES* and EdDSA tokens",
  },
  "jwt-jwks-url": {
    env: "JWT_JWKS_URL",
    schema: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
    help: "JWKS URL for RS*, PS*, ES* and EdDSA tokens; cached, refetched for unknown key ids",
  },
  "jwt-issuer": {
    env: "JWT_ISSUER",
    schema: z.string().min(1),
    help: "when set, tokens must carry this iss",
  },
  "jwt-audience": {
    env: "JWT_AUDIENCE",
    schema: z.string().min(1),
    help: "when set, tokens must carry this aud",
  },
  "jwt-require-exp": {
    env: "JWT_REQUIRE_EXP",
    schema: boolean(),
    default: "true",
    values: BOOLEAN_VALUES,
    help: "refuse tokens without exp (false accepts go-pusher's tokens that never expire)",
  },
  "jwt-uid-claim": {
    env: "JWT_UID_CLAIM",
    schema: z.string().min(1),
    default: "uid",
    help: "the claim holding the uid (a string); sub is used when it is absent",
  },
  "max-token-bytes": {
    env: "MAX_TOKEN_BYTES",
    schema: int(64, 65536),
    default: "8192",
    help: "longest token accepted, in bytes; longer gets 401 (or close 4001)",
  },
  "allowed-origins": {
    env: "ALLOWED_ORIGINS",
    schema: list(z.string().min(1)),
    default: "*",
    help:
      "comma-separated origins /ws accepts (https://app.example.com, https://*.example.com); * any",
  },
  "max-connections-per-uid": {
    env: "MAX_CONNECTIONS_PER_UID",
    schema: int(0, 1_000_000),
    default: "100",
    help: "most connections one uid may hold; past it 429 (or close 4029); 0: no limit",
  },
  "max-connects-per-ip": {
    env: "MAX_CONNECTS_PER_IP",
    schema: int(0, 1_000_000),
    default: "50",
    help: "new /ws connections one IP may open per second (bursts up to that many); 0: no limit",
  },
  "max-frames-per-second": {
    env: "MAX_FRAMES_PER_SECOND",
    schema: int(0, 1_000_000),
    default: "20",
    help: "frames one connection may send per second (bursts up to that many); past it close 1008",
  },
  "max-requests-per-key": {
    env: "MAX_REQUESTS_PER_KEY",
    schema: int(0, 10_000_000),
    default: "5000",
    help: "/send and /api requests per second per API key (per IP without keys); past it 429",
  },
  "trusted-proxies": {
    env: "TRUSTED_PROXIES",
    schema: list(),
    default: "",
    help: "comma-separated proxy addresses whose X-Forwarded-For names the client; empty: none",
  },
  examples: {
    env: "EXAMPLES",
    schema: boolean(),
    default: "false",
    values: BOOLEAN_VALUES,
    help: "serve the chat and forms examples at /examples/, with a token endpoint for " +
      "loopback callers (make run sets it); never in production",
  },
  "reuse-port": {
    env: "REUSE_PORT",
    schema: boolean(),
    default: "false",
    values: BOOLEAN_VALUES,
    help: "let several processes listen on the same PORT (SO_REUSEPORT, Linux; Deno and Bun " +
      "alike): the kernel spreads new connections over them, e.g. cluster nodes on one machine",
  },
  "access-log": {
    env: "ACCESS_LOG",
    schema: boolean(),
    default: "false",
    values: BOOLEAN_VALUES,
    help: "print one line per HTTP request to stdout, with tokens and keys redacted",
  },
  "api-keys": {
    env: "API_KEYS",
    schema: list(),
    default: "",
    help: "comma-separated keys for /send and /api; empty: they answer loopback callers only",
    secret: true,
  },
  "data-dir": {
    env: "DATA_DIR",
    schema: z.string().min(1),
    default: "./data",
    help: "state directory; the SQLite message log is <data-dir>/messages.db",
  },
  "message-logger": {
    env: "MESSAGE_LOGGER",
    schema: z.enum(MESSAGE_LOGGERS, { error: `must be one of ${MESSAGE_LOGGERS.join(", ")}` }),
    default: "sqlite",
    values: MESSAGE_LOGGERS.join(", "),
    help: "where accepted messages and their delivery status are recorded",
  },
  "log-flush-ms": {
    env: "LOG_FLUSH_MS",
    schema: int(1, 60_000),
    default: "200",
    help: "how often the message log writes its batch, in milliseconds",
  },
  "history-size": {
    env: "HISTORY_SIZE",
    schema: int(0, 1_000_000),
    default: "1000",
    help: "messages kept per uid, group and broadcast stream for clients that resume with since " +
      "(in <data-dir>/history.db); 0 keeps none",
  },
  "history-ttl": {
    env: "HISTORY_TTL",
    schema: seconds(1, 366 * 86400),
    default: "86400",
    help: "seconds a kept message stays in history",
  },
  "offline-ttl": {
    env: "OFFLINE_TTL",
    schema: seconds(0, 366 * 86400),
    default: "0",
    help:
      "seconds a message to an offline uid waits (202, queued) for the uid's next connection; " +
      "0: answer 404 as go-pusher does. Needs HISTORY_SIZE > 0 and at most HISTORY_TTL",
  },
  "idempotency-ttl": {
    env: "IDEMPOTENCY_TTL",
    schema: seconds(1, 7 * 86400),
    default: "600",
    help: "seconds a send's answer is kept for a retry with the same Idempotency-Key " +
      "(in <data-dir>/idempotency.db)",
  },
  "webhook-url": {
    env: "WEBHOOK_URL",
    schema: list().pipe(
      z.array(z.url({ protocol: /^https?$/, error: "must be http(s) URLs, comma-separated" })),
    ),
    default: "",
    help: "comma-separated URLs that get the webhook events, signed with WEBHOOK_SECRET, " +
      "retried until WEBHOOK_MAX_AGE (kept in <data-dir>/webhooks.db); empty: none",
  },
  "webhook-events": {
    env: "WEBHOOK_EVENTS",
    schema: list().pipe(
      z.array(z.enum(WEBHOOK_TYPES, { error: `must name ${WEBHOOK_TYPES.join(", ")}` })),
    ),
    default: DEFAULT_WEBHOOK_TYPES.join(","),
    values: WEBHOOK_TYPES.join(", "),
    help: "comma-separated event types sent to WEBHOOK_URL (message.acked is off by default)",
  },
  "webhook-secret": {
    env: "WEBHOOK_SECRET",
    schema: z.string().min(
      32,
      "must be at least 32 characters; make one with: openssl rand -hex 32",
    ),
    help: "signs every webhook POST (X-Deno-Pusher-Signature); required with WEBHOOK_URL",
    secret: true,
  },
  "webhook-offline-delay": {
    env: "WEBHOOK_OFFLINE_DELAY",
    schema: seconds(0, 3600),
    default: "5",
    help: "seconds a uid stays online after its last connection closed, so that a reload sends " +
      "no uid.offline and uid.online pair",
  },
  "webhook-max-age": {
    env: "WEBHOOK_MAX_AGE",
    schema: seconds(60, 30 * 86400),
    default: "86400",
    help: "seconds a webhook event is retried before it is dropped (counted in /metrics)",
  },
  "client-message-hook": {
    env: "CLIENT_MESSAGE_HOOK",
    schema: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
    help: "a client's publish or send is POSTed here first (signed with WEBHOOK_SECRET) and " +
      "delivered only on a 2xx, which may rewrite it; unset: no gate",
  },
  "client-message-hook-timeout": {
    env: "CLIENT_MESSAGE_HOOK_TIMEOUT",
    schema: seconds(0.1, 60),
    default: "2",
    help: "seconds CLIENT_MESSAGE_HOOK has to answer; past it the frame is refused",
  },
  "redis-url": {
    env: "REDIS_URL",
    schema: z.string().regex(
      /^rediss?:\/\/[^\s]+$/,
      "must look like redis://host:6379 (rediss:// for TLS; a password as redis://:pw@host)",
    ),
    help: "join a cluster on this Redis: every node with the same REDIS_URL and REDIS_PREFIX " +
      "behaves as one big node (history, ids, presence and idempotency keys live in Redis)",
    secret: true,
  },
  "redis-prefix": {
    env: "REDIS_PREFIX",
    schema: z.string().min(1).max(64).regex(/^[^\s]+$/, "must have no spaces"),
    default: "deno-pusher:",
    help: "put before every Redis key and channel; one per cluster sharing a Redis",
  },
  "node-name": {
    env: "NODE_NAME",
    schema: z.string().min(1).max(128).regex(
      /^[A-Za-z0-9._:-]+$/,
      "must be letters, digits, . _ : -",
    ),
    help: "this node's name in the cluster, unique among its nodes; default <hostname>:<port>",
  },
  "max-message-bytes": {
    env: "MAX_MESSAGE_BYTES",
    schema: int(1, 16 * 1024 * 1024),
    default: "65536",
    help: "largest message /send accepts, in bytes (UTF-8); larger gets 413",
  },
  "max-batch": {
    env: "MAX_BATCH",
    schema: int(1, 100_000),
    default: "100",
    help: "most messages one POST /api/batch may carry; more gets 400",
  },
  "max-group-members": {
    env: "MAX_GROUP_MEMBERS",
    schema: int(0, 10_000_000),
    default: "0",
    help: "connections a group may hold (a join past it: group is full); 0: no limit; " +
      "PUT /api/groups/{group}/settings sets one group's",
  },
  "max-locks-per-connection": {
    env: "MAX_LOCKS_PER_CONNECTION",
    schema: int(0, 100_000),
    default: "16",
    help: "keys one connection may lock at once, all groups together; 0: no limit",
  },
  "max-presence-members": {
    env: "MAX_PRESENCE_MEMBERS",
    schema: int(0, 1_000_000),
    default: "1000",
    help:
      "largest group (connections) whose joins and leaves are announced; larger: none; 0: no limit",
  },
  "max-frame-bytes": {
    env: "MAX_FRAME_BYTES",
    schema: int(64, 16 * 1024 * 1024),
    default: "16384",
    help: "largest frame a client may send, in bytes; larger closes the socket with 1009",
  },
  "max-queue-bytes": {
    env: "MAX_QUEUE_BYTES",
    schema: int(1024, 1024 * 1024 * 1024),
    default: "1048576",
    help: "outbound bytes a connection may fall behind by for up to SLOW_CONSUMER_TIMEOUT " +
      "(closed as slow, 4008, past that time or at four times this)",
  },
  "slow-consumer-timeout": {
    env: "SLOW_CONSUMER_TIMEOUT",
    schema: seconds(0, 300),
    default: "5",
    help: "seconds a connection may stay more than MAX_QUEUE_BYTES behind before it is closed " +
      "as slow (4008); 0 closes it at once",
  },
  "max-connections": {
    env: "MAX_CONNECTIONS",
    schema: z.union([z.literal("auto"), int(1, 10_000_000)]),
    default: "auto",
    values: "auto, or a whole number from 1 to 10000000",
    help:
      "most sockets open at once, past it /ws answers 503; auto: open-file limit minus a reserve",
  },
  "shutdown-grace": {
    env: "SHUTDOWN_GRACE",
    schema: seconds(0, 3600),
    default: "10",
    help: "seconds SIGTERM waits for sockets and requests to finish before exiting anyway",
  },
  "idle-timeout": {
    env: "IDLE_TIMEOUT",
    schema: seconds(1, 960),
    default: "60",
    help: "seconds without a pong before a connection is closed (protocol pings keep it alive)",
  },
  "auth-timeout": {
    env: "AUTH_TIMEOUT",
    schema: seconds(0.1, 300),
    default: "10",
    help: "seconds a ?auth=frame socket has to send its auth frame before 4002",
  },
} satisfies Record<string, Setting>;

export type SettingName = keyof typeof SETTINGS;

type Settings = typeof SETTINGS;
/** `max-queue-bytes` → `maxQueueBytes`. */
type Camel<S extends string> = S extends `${infer Head}-${infer Tail}`
  ? `${Head}${Capitalize<Camel<Tail>>}`
  : S;

/**
 * The validated configuration the rest of the program reads: each setting's parsed value (its
 * schema's output) under its camelCase name, `undefined` for a setting with no default that is
 * unset. Units and bounds are in SETTINGS' help lines.
 */
export type Config = {
  [K in SettingName as Camel<K>]:
    | z.output<Settings[K]["schema"]>
    | (Settings[K] extends { default: string } ? never : undefined);
};

/** A setting had a value its schema refused; `message` is one line naming the setting. */
export class ConfigError extends Error {}

/** What `parseConfig` found: a configuration, or a request for help or the version. */
export type ParsedArgs =
  | { kind: "config"; config: Config }
  | { kind: "help" }
  | { kind: "version" };

/** Flag values as node:util's parseArgs returns them, keyed by flag name without `--`. */
export type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** The default file reader: the config file is read as UTF-8. */
const readUtf8 = (path: string) => readFileSync(path, "utf8");

/**
 * Reads flags from `args`, variables from `env`, and the JSON file named by `--config` or
 * CONFIG_FILE; flags win over the environment, which wins over the file, which wins over defaults.
 * Throws ConfigError naming the first bad setting.
 */
export function parseConfig(
  args: string[],
  env: Record<string, string | undefined>,
  readFile: (path: string) => string = readUtf8,
): ParsedArgs {
  const values = parseFlags(args, {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "v" },
  });
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  return { kind: "config", config: configFromFlags(values, env, readFile) };
}

/**
 * Parses `args` as every setting's flag, `--config`, and `extra` (a subcommand's own options).
 * Throws ConfigError for an unknown flag or a stray argument; a stray argument is not echoed
 * unless it comes first, as it may be a secret split off its flag by a space.
 */
export function parseFlags(args: string[], extra: ParseArgsOptionsConfig = {}): FlagValues {
  const options: ParseArgsOptionsConfig = { config: { type: "string" }, ...extra };
  for (const name of Object.keys(SETTINGS)) options[name] = { type: "string" };
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true, tokens: true });
  } catch (err) {
    // node's messages name the option, never its value; some run over several lines.
    throw new ConfigError(`${(err as Error).message.split("\n")[0]} (see --help)`);
  }
  const stray = parsed.tokens.find((t) => t.kind === "positional");
  if (stray?.index === 0) {
    throw new ConfigError(`unexpected argument "${stray.value}" (see --help)`);
  }
  if (stray) {
    throw new ConfigError(
      `unexpected argument ${stray.index + 1} (not shown: it may be a secret); ` +
        "every value follows its --flag, and a value with spaces needs quotes (see --help)",
    );
  }
  return parsed.values;
}

/**
 * The configuration from parsed flags, `env` and the config file they name, validated. Throws
 * ConfigError naming the first bad setting and where its value came from, never a secret's value.
 */
export function configFromFlags(
  values: FlagValues,
  env: Record<string, string | undefined>,
  readFile: (path: string) => string = readUtf8,
): Config {
  const configPath = (values.config as string | undefined) ?? (env.CONFIG_FILE || undefined);
  const file = configPath === undefined ? {} : readConfigFile(configPath, readFile);

  const out: Record<string, unknown> = {};
  for (const [name, setting] of Object.entries(SETTINGS) as [string, Setting][]) {
    const flag = values[name] as string | undefined;
    // An empty variable counts as unset, as systemd's EnvironmentFile writes `NAME=` for "none".
    const fromEnv = env[setting.env] || undefined;
    const raw = flag ?? fromEnv ?? file[name] ?? setting.default;
    if (raw === undefined) continue;
    const parsed = setting.schema.safeParse(raw);
    if (!parsed.success) {
      const source = flag !== undefined
        ? `--${name}`
        : fromEnv !== undefined
        ? setting.env
        : file[name] !== undefined
        ? `"${name}" in ${configPath}`
        : name;
      const value = setting.secret
        ? ` (value hidden, ${raw.length} characters)`
        : `=${JSON.stringify(raw)}`;
      throw new ConfigError(`invalid ${source}${value}: ${parsed.error.issues[0].message}`);
    }
    out[camel(name)] = parsed.data;
  }
  // Each field is its setting's schema output, or absent for an unset setting with no default:
  // Config's definition, which TypeScript cannot follow through the loop.
  const config = out as Config;
  checkJwtKeys(config);
  checkMailbox(config);
  checkWebhooks(config);
  return config;
}

const camel = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Webhooks are signed: a URL needs the secret. */
function checkWebhooks(config: Config): void {
  for (
    const [set, name] of [[config.webhookUrl.length > 0, "WEBHOOK_URL"], [
      config.clientMessageHook !== undefined,
      "CLIENT_MESSAGE_HOOK",
    ]] as const
  ) {
    if (set && config.webhookSecret === undefined) {
      throw new ConfigError(
        `${name} needs WEBHOOK_SECRET, which signs every POST (make one with: openssl rand -hex 32)`,
      );
    }
  }
}

/** The mailbox keeps its messages in history: it needs one that keeps them as long. */
function checkMailbox(config: Config): void {
  if (config.offlineTtl === 0) return;
  if (config.historySize === 0) {
    throw new ConfigError(
      "OFFLINE_TTL needs history: the mailbox keeps its messages there; set HISTORY_SIZE > 0",
    );
  }
  if (config.offlineTtl > config.historyTtl) {
    throw new ConfigError(
      `OFFLINE_TTL (${config.offlineTtl} s) is longer than HISTORY_TTL (${config.historyTtl} s), ` +
        "which bounds how long the mailbox's messages are kept: raise HISTORY_TTL",
    );
  }
}

/** An HS* algorithm needs the secret; the others need a public key or a JWKS URL, not both. */
function checkJwtKeys(config: Config): void {
  const hmac = config.jwtAlg.startsWith("HS");
  const keys = [config.jwtPublicKeyFile, config.jwtJwksUrl].filter((k) => k !== undefined);
  if (hmac && keys.length > 0) {
    throw new ConfigError(
      `JWT_ALG=${config.jwtAlg} uses JWT_SECRET; JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL are for the others`,
    );
  }
  if (!hmac && keys.length !== 1) {
    throw new ConfigError(
      `JWT_ALG=${config.jwtAlg} needs exactly one of JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL`,
    );
  }
}

/**
 * Reads a JSON config file: an object whose keys are flag names without `--`. Numbers are taken
 * as their text and arrays (for api-keys) as a comma-separated list, so the same schemas apply.
 * A syntax error is reported by position only: the runtimes quote the text around it, which may
 * be a secret.
 */
function readConfigFile(path: string, readFile: (path: string) => string): Record<string, string> {
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    throw new ConfigError(`config file ${path}: ${(err as Error).message.split("\n")[0]}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    const where = /line \d+ column \d+/.exec((err as Error).message)?.[0];
    throw new ConfigError(`config file ${path}: not valid JSON${where ? ` (at ${where})` : ""}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${path}: must be a JSON object of settings`);
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!(key in SETTINGS)) {
      throw new ConfigError(`config file ${path}: unknown setting "${key}" (see --help)`);
    }
    if (["string", "number", "boolean"].includes(typeof value)) out[key] = String(value);
    else if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      out[key] = value.join(",");
    } else {
      throw new ConfigError(
        `config file ${path}: "${key}" must be a string, a number or a boolean`,
      );
    }
  }
  return out;
}

/** The configuration with every default, for tests and embedding; `overrides` win. */
export function defaultConfig(overrides: Partial<Config> = {}): Config {
  const parsed = parseConfig([], {});
  if (parsed.kind !== "config") throw new Error("unreachable");
  return { ...parsed.config, ...overrides };
}

/** The `--help` text: every setting with its flag, variable, default and allowed values. */
export function helpText(): string {
  const lines = [
    "deno-pusher: a self-hosted WebSocket push server",
    "",
    "usage: deno-pusher [--config file.json] [--flag value ...]",
    "       deno-pusher token --uid <uid> [--ttl 1h] [--groups a,b] [--info JSON] [--flag value ...]",
    "           prints a client token signed with the configured JWT_SECRET (see token --help)",
    "precedence: flags > environment variables > config file (CONFIG_FILE) > defaults",
    "",
  ];
  for (const [name, setting] of Object.entries(SETTINGS) as [string, Setting][]) {
    const def = setting.default === undefined
      ? "(none)"
      : setting.default === ""
      ? '""'
      : setting.default;
    lines.push(`  --${name.padEnd(24)} ${setting.env.padEnd(24)} default ${def}`);
    lines.push(`      ${setting.help}`);
    if (setting.values) lines.push(`      values: ${setting.values}`);
  }
  lines.push(
    `  --${"config".padEnd(24)} ${"CONFIG_FILE".padEnd(24)} default (none)`,
    '      JSON file of settings keyed by flag name, e.g. {"port": 8181}',
    "  -h, --help          this text",
    "  -v, --version       print the version",
  );
  return lines.join("\n");
}
