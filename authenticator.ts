/**
 * The authenticator turns a client's JWT into a uid. Verification is jose's; the algorithm is pinned
 * by configuration and never taken from the token's header.
 */
import { errors, jwtVerify, SignJWT } from "jose";

/** HMAC algorithms a deployment can pin. */
export type HmacAlg = "HS256" | "HS384" | "HS512";

/** Who a verified token belongs to. */
export interface Identity {
  uid: string;
  /** Seconds since the epoch, when the token carries `exp`. */
  exp?: number;
  /** Groups to join at connect time: the token's optional `groups` claim. */
  groups?: string[];
  /** Shown to the members of its groups: the token's optional `info` claim, any JSON value. */
  info?: unknown;
}

/** Most groups a token may name, and the longest group name, in characters. */
export const MAX_TOKEN_GROUPS = 64;
export const MAX_GROUP_NAME = 256;

/** A token was refused; `message` is safe to show the client (it never echoes the token). */
export class AuthError extends Error {}

/** Longest token accepted, in characters: refuses absurd inputs before any crypto runs. */
export const MAX_TOKEN_LENGTH = 8192;

/** Verifies HS256/384/512 tokens signed with one secret. */
export class Authenticator {
  readonly #key: Uint8Array;
  readonly #alg: HmacAlg;

  constructor(secret: string, alg: HmacAlg = "HS256") {
    this.#key = new TextEncoder().encode(secret);
    this.#alg = alg;
  }

  /**
   * Returns the token's identity: the `uid` claim (go-pusher's), else `sub`; each must be a
   * non-empty string. Honours `exp` and `nbf`. Throws AuthError with a reason otherwise.
   */
  async verify(token: string): Promise<Identity> {
    if (token.length > MAX_TOKEN_LENGTH) throw new AuthError("token too long");
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.#key, { algorithms: [this.#alg] }));
    } catch (err) {
      throw new AuthError(reason(err));
    }
    const uid = payload.uid ?? payload.sub;
    if (typeof uid !== "string" || uid === "") {
      throw new AuthError("token has no string uid or sub claim");
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
    return { uid, exp: payload.exp, groups, info: payload.info };
  }

  /** Signs a token for `uid`, valid for `ttlSeconds`; for the dev token and for tests. */
  sign(uid: string, ttlSeconds = 24 * 3600, claims: Record<string, unknown> = {}): Promise<string> {
    return new SignJWT({ ...claims, uid })
      .setProtectedHeader({ alg: this.#alg, typ: "JWT" })
      .setIssuedAt()
      .setExpirationTime(`${ttlSeconds}s`)
      .sign(this.#key);
  }
}

function reason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return "token expired";
  if (err instanceof errors.JWTClaimValidationFailed) return `token claim ${err.claim} invalid`;
  if (err instanceof errors.JOSEAlgNotAllowed) return "token algorithm not allowed";
  if (err instanceof errors.JWSSignatureVerificationFailed) return "token signature invalid";
  return "token malformed";
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
