/**
 * The authenticator turns a client's JWT into an identity. The algorithm is pinned by configuration
 * and never taken from the token's header, so `alg: none` and HS/RS confusion (an RSA public key
 * used as an HMAC secret) are refused.
 *
 * Asymmetric tokens are verified by jose's `jwtVerify`. HS* tokens have their MAC checked with
 * `node:crypto` (built into Deno and Bun) and their claims by jose's claims-set validation, the
 * same code `jwtVerify` runs: jose checks an HMAC through WebCrypto, whose asynchronous call cost a
 * Bun handshake a third of its CPU (docs/BENCHMARKS.md, connect rate).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import {
  base64url,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  importSPKI,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
  type KeyObject,
  SignJWT,
  UnsecuredJWT,
} from "jose";
import type { JwtAlg } from "./config.ts";
import { checkPatterns, PERMISSION_CLAIMS, type PermissionClaim } from "./permissions.ts";

/** Who a verified token belongs to. */
export interface Identity {
  uid: string;
  /** Seconds since the epoch, when the token carries `exp`. */
  exp?: number;
  /** Groups to join at connect time: the token's optional `groups` claim. */
  groups?: string[];
  /** Shown to the members of its groups: the token's optional `info` claim, any JSON value. */
  info?: unknown;
  /** The token's optional `subscribe`, `publish` and `send` claims (see permissions.ts). */
  permissions?: Partial<Record<PermissionClaim, string[]>>;
}

/** Most groups a token may name, and the longest group name, in characters. */
export const MAX_TOKEN_GROUPS = 64;
export const MAX_GROUP_NAME = 256;

/**
 * A token was refused. `message` is safe to show the client (it never echoes the token); `status`
 * is 401, or 503 when the keys to check it with could not be fetched.
 */
export class AuthError extends Error {
  constructor(message: string, readonly status: 401 | 503 = 401) {
    super(message);
  }
}

/** How tokens are checked. Exactly one key source fits `alg`: a secret for HS*, else a key. */
export interface AuthenticatorOptions {
  alg: JwtAlg;
  /** The HMAC secret, for HS*. */
  secret?: string;
  /** A PEM (SPKI) public key, for RS*, PS*, ES* and EdDSA. */
  publicKeyPem?: string;
  /** A JWKS URL, for RS*, PS*, ES* and EdDSA. */
  jwksUrl?: string;
  /** Milliseconds before a JWKS may be fetched again for an unknown key id (jose's cooldown). */
  jwksCooldownMs?: number;
  issuer?: string;
  audience?: string;
  /** Refuse tokens without `exp`. */
  requireExp: boolean;
  /** The claim holding the uid; `sub` stands in when it is absent. */
  uidClaim: string;
  /** Longest token accepted, in bytes: refuses absurd inputs before any crypto runs. */
  maxTokenBytes: number;
}

/** The defaults a test or an embedding starts from: HS256, exp required, the `uid` claim. */
export const DEFAULT_AUTH: Omit<AuthenticatorOptions, "alg" | "secret"> = {
  requireExp: true,
  uidClaim: "uid",
  maxTokenBytes: 8192,
};

/** JWKS fetches give up after this long; the connect then gets 503. */
const JWKS_TIMEOUT_MS = 5000;
/** jose's cooldown between refetches for unknown key ids, and how long a JWKS is kept. */
const JWKS_COOLDOWN_MS = 30_000;
const JWKS_MAX_AGE_MS = 10 * 60_000;

/** Verifies tokens with one pinned algorithm and one key source. */
export class Authenticator {
  readonly #key: KeyObject | CryptoKey | JWTVerifyGetKey | HmacVerifier;
  readonly #options: AuthenticatorOptions;
  /** The HMAC secret's bytes, to sign with (the dev token, tests); none for asymmetric keys. */
  readonly #secret: Uint8Array | undefined;

  private constructor(
    key: KeyObject | CryptoKey | JWTVerifyGetKey | HmacVerifier,
    options: AuthenticatorOptions,
    secret?: Uint8Array,
  ) {
    this.#key = key;
    this.#options = options;
    this.#secret = secret;
  }

  /** Builds an authenticator; throws with a readable reason when the key does not fit `alg`. */
  static async create(options: AuthenticatorOptions): Promise<Authenticator> {
    if (options.alg.startsWith("HS")) {
      if (!options.secret) throw new Error(`JWT_ALG=${options.alg} needs JWT_SECRET`);
      const secret = new TextEncoder().encode(options.secret);
      return new Authenticator(new HmacVerifier(options.alg, secret), options, secret);
    }
    if (options.jwksUrl) {
      const jwks = createRemoteJWKSet(new URL(options.jwksUrl), {
        timeoutDuration: JWKS_TIMEOUT_MS,
        cooldownDuration: options.jwksCooldownMs ?? JWKS_COOLDOWN_MS,
        cacheMaxAge: JWKS_MAX_AGE_MS,
      });
      return new Authenticator(jwks, options);
    }
    if (!options.publicKeyPem) {
      throw new Error(`JWT_ALG=${options.alg} needs JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL`);
    }
    try {
      return new Authenticator(await importSPKI(options.publicKeyPem, options.alg), options);
    } catch (err) {
      throw new Error(`the public key is not a PEM SPKI key for ${options.alg}: ${err}`);
    }
  }

  /** An HS256 authenticator with the defaults, for the dev token and for tests. */
  static hmac(secret: string, alg: JwtAlg = "HS256"): Promise<Authenticator> {
    return Authenticator.create({ ...DEFAULT_AUTH, alg, secret });
  }

  /**
   * Returns the token's identity: the uid claim (else `sub`), which must be a non-empty string,
   * and the optional `groups` and `info` claims. Honours `exp` and `nbf`, and `iss` and `aud` when
   * configured. Throws AuthError with a reason otherwise.
   */
  async verify(token: string): Promise<Identity> {
    const o = this.#options;
    // A JWT is ASCII, so UTF-16 units are its bytes; anything else fails verification below.
    if (token.length > o.maxTokenBytes) throw new AuthError("token too long");
    let payload: JWTPayload;
    const claims = {
      issuer: o.issuer,
      audience: o.audience,
      requiredClaims: o.requireExp ? ["exp"] : [],
    };
    try {
      payload = this.#key instanceof HmacVerifier
        ? this.#key.verify(token, claims)
        : (await jwtVerify(token, this.#key as CryptoKey, { algorithms: [o.alg], ...claims }))
          .payload;
    } catch (err) {
      throw refusal(err);
    }
    const uid = payload[o.uidClaim] ?? payload.sub;
    if (typeof uid !== "string" || uid === "") {
      throw new AuthError(`token has no string ${o.uidClaim} or sub claim`);
    }
    const groups = payload.groups;
    if (
      groups !== undefined &&
      !(Array.isArray(groups) && groups.length <= MAX_TOKEN_GROUPS &&
        groups.every((g) => typeof g === "string" && g !== "" && g.length <= MAX_GROUP_NAME))
    ) {
      throw new AuthError(
        `token groups claim must be an array of at most ${MAX_TOKEN_GROUPS} non-empty strings`,
      );
    }
    const permissions: Partial<Record<PermissionClaim, string[]>> = {};
    for (const claim of PERMISSION_CLAIMS) {
      const problem = checkPatterns(claim, payload[claim]);
      if (problem) throw new AuthError(problem);
      if (payload[claim] !== undefined) permissions[claim] = payload[claim] as string[];
    }
    return { uid, exp: payload.exp, groups, info: payload.info, permissions };
  }

  /**
   * Signs a token for `uid`, valid for `ttlSeconds`, with the HMAC secret: the dev token and
   * tests. Throws for asymmetric algorithms, whose private key this server never holds.
   */
  sign(uid: string, ttlSeconds = 24 * 3600, claims: Record<string, unknown> = {}): Promise<string> {
    if (!this.#secret) {
      throw new Error(`cannot sign ${this.#options.alg} tokens: the server holds no private key`);
    }
    return new SignJWT({ ...claims, [this.#options.uidClaim]: uid })
      .setProtectedHeader({ alg: this.#options.alg, typ: "JWT" })
      .setIssuedAt()
      .setExpirationTime(`${ttlSeconds}s`)
      .sign(this.#secret);
  }
}

/**
 * Verifies HS256, HS384 or HS512 tokens with one secret, synchronously. The header must name the
 * pinned algorithm; the MAC, decoded by jose's base64url decoder, must be the HMAC of
 * `<header>.<payload>`, compared in constant time. The rest goes through jose's own checks, with
 * its errors: the token, its MAC dropped and its header's `alg` set to `none`, is decoded by
 * `UnsecuredJWT.decode`, which runs the header checks (crit, b64) and the claims-set validation
 * (exp, nbf, iss, aud, required claims) that `jwtVerify` runs. Only this verifier makes such a
 * token, after the MAC passed.
 */
export class HmacVerifier {
  readonly #hash: string;

  constructor(readonly alg: JwtAlg, readonly secret: Uint8Array) {
    this.#hash = `sha${alg.slice(2)}`;
  }

  /** The payload of a valid token; throws jose's errors, as `jwtVerify` would, otherwise. */
  verify(
    token: string,
    claims: { issuer?: string; audience?: string; requiredClaims: string[] },
  ): JWTPayload {
    const parts = token.split(".");
    if (parts.length !== 3) throw new errors.JWSInvalid("Invalid Compact JWS");
    const [header, payload, mac] = parts;
    let decoded;
    try {
      decoded = decodeProtectedHeader(token);
    } catch (cause) {
      throw new errors.JWSInvalid("JWS Protected Header is invalid", { cause });
    }
    if (decoded.alg !== this.alg) {
      throw new errors.JOSEAlgNotAllowed('"alg" (Algorithm) Header Parameter value not allowed');
    }
    let given;
    try {
      given = base64url.decode(mac);
    } catch (cause) {
      throw new errors.JWSInvalid("Failed to base64url decode the signature", { cause });
    }
    const expected = createHmac(this.#hash, this.secret).update(`${header}.${payload}`).digest();
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new errors.JWSSignatureVerificationFailed();
    }
    const unsecured = Buffer.from(JSON.stringify({ ...decoded, alg: "none" })).toString(
      "base64url",
    );
    return UnsecuredJWT.decode(`${unsecured}.${payload}.`, claims).payload;
  }
}

function refusal(err: unknown): AuthError {
  if (err instanceof errors.JWTExpired) return new AuthError("token expired");
  if (err instanceof errors.JWTClaimValidationFailed) {
    // Short enough for a close reason (123 bytes), and says what to change.
    if (err.claim === "exp" && err.reason === "missing") {
      return new AuthError(
        "token has no exp claim: sign it with one, or set JWT_REQUIRE_EXP=false on the server",
      );
    }
    return new AuthError(
      err.reason === "missing"
        ? `token has no ${err.claim} claim`
        : `token claim ${err.claim} invalid`,
    );
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return new AuthError("token algorithm not allowed");
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return new AuthError("token signature invalid");
  }
  if (err instanceof errors.JWKSNoMatchingKey) return new AuthError("token key id unknown");
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) {
    return new AuthError("token keys unavailable", 503);
  }
  if (err instanceof TypeError && /fetch|connect|network/i.test(err.message)) {
    return new AuthError("token keys unavailable", 503);
  }
  return new AuthError("token malformed");
}

/**
 * The token a request carries: `?token=` (go-pusher's) or `Authorization: Bearer`. Returns
 * undefined when there is none.
 */
export function tokenFromRequest(url: URL, headers: Headers): string | undefined {
  const fromQuery = url.searchParams.get("token");
  if (fromQuery) return fromQuery;
  const auth = headers.get("authorization");
  if (auth?.toLowerCase().startsWith("bearer ")) return auth.slice(7).trim() || undefined;
  return undefined;
}

/** A random secret for a run that has none configured: 32 bytes, base64url. */
export function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(
    /=+$/,
    "",
  );
}
