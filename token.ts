/**
 * `deno-pusher token`: mints a client token with the server's own configuration (the same flags,
 * environment and config file), so that a server with JWT_SECRET set can be tried from a shell,
 * and a backend without a JWT library can shell out for one. HS* only: for the other algorithms
 * the server holds a public key, and tokens are signed with the private key it never sees.
 */
import { SignJWT } from "jose";
import { MAX_GROUP_NAME, MAX_TOKEN_GROUPS } from "./authenticator.ts";
import { ConfigError, configFromFlags, parseFlags } from "./config.ts";

/** The token's lifetime when `--ttl` is not given. */
export const DEFAULT_TTL = "1h";

/** Seconds per `--ttl` unit. */
const TTL_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** The text of `deno-pusher token --help`. */
export function tokenHelp(): string {
  return [
    "usage: deno-pusher token --uid <uid> [--ttl 1h] [--groups a,b] [--info JSON] [--flag value ...]",
    "",
    "Prints a client token on stdout, signed with the configured JWT_SECRET and JWT_ALG (HS* only),",
    "carrying the configured uid claim, JWT_ISSUER and JWT_AUDIENCE, as the server checks them.",
    "It reads the server's settings: flags, environment, config file (see deno-pusher --help).",
    "",
    "  --uid <uid>         the uid the token is for (required)",
    `  --ttl <duration>    lifetime: seconds, or a number with s, m, h or d (default ${DEFAULT_TTL})`,
    `  --groups a,b        groups the connection joins (at most ${MAX_TOKEN_GROUPS})`,
    '  --info <JSON>       shown to the members of its groups, e.g. \'{"name":"Ann"}\'',
    "  -h, --help          this text",
  ].join("\n");
}

/**
 * Runs `deno-pusher token` with `args` (after the word `token`) and `env`: returns what to print
 * on stdout, the token or the help text. Throws ConfigError for a bad flag or setting, a missing
 * secret, or an algorithm it cannot sign.
 */
export async function tokenCommand(
  args: string[],
  env: Record<string, string | undefined>,
  readFile?: (path: string) => string,
): Promise<string> {
  const values = parseFlags(args, {
    help: { type: "boolean", short: "h" },
    uid: { type: "string" },
    ttl: { type: "string" },
    groups: { type: "string" },
    info: { type: "string" },
  });
  if (values.help) return tokenHelp();
  const uid = values.uid as string | undefined;
  if (!uid) throw new ConfigError("--uid is required, e.g. token --uid 123 (see token --help)");
  const ttl = parseTtl((values.ttl as string | undefined) ?? DEFAULT_TTL);
  const claims: Record<string, unknown> = {};
  if (values.groups !== undefined) claims.groups = parseGroups(values.groups as string);
  if (values.info !== undefined) claims.info = parseInfo(values.info as string);

  const config = configFromFlags(values, env, readFile);
  if (!config.jwtAlg.startsWith("HS")) {
    throw new ConfigError(
      `JWT_ALG=${config.jwtAlg} tokens are signed with a private key, which deno-pusher never ` +
        "holds (it has only the public key or JWKS): sign them where the private key lives",
    );
  }
  if (config.jwtSecret === undefined) {
    throw new ConfigError(
      "JWT_SECRET is not set: give the server's secret (environment, --jwt-secret or the config " +
        "file); a server without one makes a random secret that no other process knows",
    );
  }
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ ...claims, [config.jwtUidClaim]: uid })
    .setProtectedHeader({ alg: config.jwtAlg, typ: "JWT" })
    .setIssuedAt(now)
    .setExpirationTime(now + ttl);
  if (config.jwtIssuer !== undefined) jwt = jwt.setIssuer(config.jwtIssuer);
  if (config.jwtAudience !== undefined) jwt = jwt.setAudience(config.jwtAudience);
  const token = await jwt.sign(new TextEncoder().encode(config.jwtSecret));
  if (token.length > config.maxTokenBytes) {
    throw new ConfigError(
      `the token is ${token.length} bytes, over MAX_TOKEN_BYTES (${config.maxTokenBytes}): ` +
        "the server would refuse it; use fewer groups or a shorter --info",
    );
  }
  return token;
}

/** `--ttl`: whole seconds, or a number with a unit (`90s`, `15m`, `1h`, `7d`). */
export function parseTtl(text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  const seconds = match ? Number(match[1]) * TTL_UNITS[match[2] || "s"] : NaN;
  if (!(seconds > 0)) {
    throw new ConfigError(
      `invalid --ttl="${text}": must be a positive number of seconds, or one with s, m, h or d (1h)`,
    );
  }
  return seconds;
}

function parseGroups(text: string): string[] {
  const groups = text.split(",").map((g) => g.trim()).filter(Boolean);
  if (groups.length > MAX_TOKEN_GROUPS) {
    throw new ConfigError(`--groups names ${groups.length} groups; at most ${MAX_TOKEN_GROUPS}`);
  }
  const long = groups.find((g) => g.length > MAX_GROUP_NAME);
  if (long !== undefined) {
    throw new ConfigError(`--groups: a group name is over ${MAX_GROUP_NAME} characters`);
  }
  return groups;
}

function parseInfo(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new ConfigError(`--info must be JSON, e.g. '{"name":"Ann"}' (a string needs quotes)`);
  }
}
