/**
 * What a client may do over its own socket, as its token says: which groups it may join and leave
 * by itself (`subscribe`), publish to (`publish`, as a member), and which uids it may message
 * directly (`send`). Each claim is a list of patterns: an exact name, a prefix ending in `*`
 * (`"form-*"`), or `"*"` alone for any name. A token without a claim allows nothing of its kind,
 * so a client whose token has none of them can do nothing but listen, as before these claims.
 */

/** The permission claims, in the token and in Identity. */
export const PERMISSION_CLAIMS = ["subscribe", "publish", "send"] as const;
export type PermissionClaim = typeof PERMISSION_CLAIMS[number];

/** Most patterns one claim may hold, and the longest pattern, in characters (as a name's 256). */
export const MAX_PATTERNS = 64;
export const MAX_PATTERN_LENGTH = 256;

/** One claim's patterns, matched against names. */
export class Patterns {
  readonly #exact = new Set<string>();
  readonly #prefixes: string[] = [];
  #any = false;

  /** `patterns` as a token carries them; see `checkPatterns` for what is allowed. */
  constructor(patterns: readonly string[] = []) {
    for (const p of patterns) {
      if (p === "*") this.#any = true;
      else if (p.endsWith("*")) this.#prefixes.push(p.slice(0, -1));
      else this.#exact.add(p);
    }
  }

  /** Whether `name` matches one of the patterns. */
  allows(name: string): boolean {
    return this.#any || this.#exact.has(name) || this.#prefixes.some((p) => name.startsWith(p));
  }
}

/** A client's permissions, one Patterns per claim. */
export type Permissions = Record<PermissionClaim, Patterns>;

/** An absent claim: allows nothing. Patterns never change, so one serves every connection. */
const NOTHING = new Patterns();

/**
 * The permissions of a token with none of the claims, the common case: shared by every such
 * connection rather than three Patterns (and their Sets) each.
 */
const LISTEN_ONLY: Permissions = Object.freeze({
  subscribe: NOTHING,
  publish: NOTHING,
  send: NOTHING,
});

/** The permissions of a token with `claims` (each a list that passed `checkPatterns`, or absent). */
export function permissionsOf(
  claims: Partial<Record<PermissionClaim, readonly string[]>> = {},
): Permissions {
  const { subscribe, publish, send } = claims;
  if (!subscribe && !publish && !send) return LISTEN_ONLY;
  const of = (patterns?: readonly string[]) => patterns ? new Patterns(patterns) : NOTHING;
  return { subscribe: of(subscribe), publish: of(publish), send: of(send) };
}

/**
 * Why the value of claim `name` is not a list of patterns, or undefined when it is (or is absent):
 * at most MAX_PATTERNS non-empty strings of at most MAX_PATTERN_LENGTH characters.
 */
export function checkPatterns(name: PermissionClaim, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  const ok = Array.isArray(value) && value.length <= MAX_PATTERNS &&
    value.every((p) => typeof p === "string" && p !== "" && p.length <= MAX_PATTERN_LENGTH);
  return ok ? undefined : `token ${name} claim must be an array of at most ${MAX_PATTERNS} ` +
    `names or patterns (a name, a prefix ending in *, or *)`;
}
