/**
 * Configuration: one table of settings, read from flags, the environment and an optional JSON file
 * (in that order of precedence, then defaults), validated once with zod. The table is the single
 * source for parsing, `--help` and the README's table.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { z } from "zod";

/** One setting: its flag (`--name`), its environment variable, its schema and its help line. */
interface Setting {
  env: string;
  schema: z.ZodType;
  help: string;
  /** Shown in --help; `undefined` means "no default". */
  default?: string;
}

const number = () =>
  z.coerce.number({ error: "must be a number" }).refine(Number.isFinite, "must be a number");
const int = (min: number, max: number) =>
  number().pipe(z.number().int("must be a whole number").min(min).max(max));
const seconds = (min: number, max: number) => number().pipe(z.number().min(min).max(max));

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
    schema: z.string().min(32, "must be at least 32 characters"),
    help: "HMAC secret for client JWTs; unset: a random one per process and a printed dev token",
  },
  "jwt-alg": {
    env: "JWT_ALG",
    schema: z.enum(["HS256", "HS384", "HS512"]),
    default: "HS256",
    help: "JWT algorithm accepted (pinned; the token's header never chooses it)",
  },
  "api-keys": {
    env: "API_KEYS",
    schema: z.string(),
    default: "",
    help: "comma-separated keys for /send and /api; empty: they answer loopback callers only",
  },
  "data-dir": {
    env: "DATA_DIR",
    schema: z.string().min(1),
    default: "./data",
    help: "state directory; the SQLite message log is <data-dir>/messages.db",
  },
  "message-logger": {
    env: "MESSAGE_LOGGER",
    schema: z.enum(["sqlite", "stdout", "none"]),
    default: "sqlite",
    help: "where accepted messages and their delivery status are recorded",
  },
  "log-flush-ms": {
    env: "LOG_FLUSH_MS",
    schema: int(1, 60_000),
    default: "200",
    help: "how often the message log writes its batch, in milliseconds",
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
    help: "outbound bytes a connection may have waiting before it is closed as slow (4008)",
  },
  "max-connections": {
    env: "MAX_CONNECTIONS",
    schema: z.union([z.literal("auto"), int(1, 10_000_000)]),
    default: "auto",
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

/** The validated configuration the rest of the program reads. */
export interface Config {
  host: string;
  port: number;
  jwtSecret: string | undefined;
  jwtAlg: "HS256" | "HS384" | "HS512";
  apiKeys: string[];
  dataDir: string;
  messageLogger: "sqlite" | "stdout" | "none";
  logFlushMs: number;
  maxMessageBytes: number;
  maxBatch: number;
  maxFrameBytes: number;
  maxQueueBytes: number;
  maxConnections: "auto" | number;
  /** Seconds; at most 960 (Bun's bound). */
  idleTimeout: number;
  /** Seconds. */
  authTimeout: number;
  /** Seconds. */
  shutdownGrace: number;
}

/** A setting had a value its schema refused; `message` is one line naming the setting. */
export class ConfigError extends Error {}

/** What `parseConfig` found: a configuration, or a request for help or the version. */
export type ParsedArgs =
  | { kind: "config"; config: Config }
  | { kind: "help" }
  | { kind: "version" };

const camel = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Reads flags from `args`, variables from `env`, and the JSON file named by `--config` or
 * CONFIG_FILE; flags win over the environment, which wins over the file, which wins over defaults.
 * Throws ConfigError naming the first bad setting.
 */
export function parseConfig(
  args: string[],
  env: Record<string, string | undefined>,
  readFile: (path: string) => string = (path) => readFileSync(path, "utf8"),
): ParsedArgs {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "v" },
    config: { type: "string" },
  };
  for (const name of Object.keys(SETTINGS)) options[name] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (see --help)`);
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
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
      throw new ConfigError(
        `invalid ${source}=${JSON.stringify(raw)}: ${parsed.error.issues[0].message}`,
      );
    }
    out[camel(name)] = parsed.data;
  }
  out.apiKeys = (out.apiKeys as string).split(",").map((k) => k.trim()).filter(Boolean);
  return { kind: "config", config: out as unknown as Config };
}

/**
 * Reads a JSON config file: an object whose keys are flag names without `--`. Numbers are taken
 * as their text and arrays (for api-keys) as a comma-separated list, so the same schemas apply.
 */
function readConfigFile(path: string, readFile: (path: string) => string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFile(path));
  } catch (err) {
    throw new ConfigError(`config file ${path}: ${(err as Error).message.split("\n")[0]}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${path}: must be a JSON object of settings`);
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!(key in SETTINGS)) {
      throw new ConfigError(`config file ${path}: unknown setting "${key}" (see --help)`);
    }
    if (typeof value === "string" || typeof value === "number") out[key] = String(value);
    else if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      out[key] = value.join(",");
    } else {
      throw new ConfigError(`config file ${path}: "${key}" must be a string or a number`);
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

/** The `--help` text: every setting with its flag, variable and default. */
export function helpText(): string {
  const lines = [
    "deno-pusher: a self-hosted WebSocket push server",
    "",
    "usage: deno-pusher [--config file.json] [--flag value ...]",
    "precedence: flags > environment variables > config file (CONFIG_FILE) > defaults",
    "",
  ];
  for (const [name, setting] of Object.entries(SETTINGS) as [string, Setting][]) {
    const def = setting.default === undefined
      ? "(none)"
      : setting.default === ""
      ? '""'
      : setting.default;
    lines.push(`  --${name.padEnd(18)} ${setting.env.padEnd(18)} default ${def}`);
    lines.push(`      ${setting.help}`);
  }
  lines.push(
    `  --${"config".padEnd(18)} ${"CONFIG_FILE".padEnd(18)} default (none)`,
    '      JSON file of settings keyed by flag name, e.g. {"port": 8181}',
    "  -h, --help          this text",
    "  -v, --version       print the version",
  );
  return lines.join("\n");
}
