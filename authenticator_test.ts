/**
 * HS* tokens are checked by HmacVerifier (node:crypto's HMAC and jose's claims validation), every
 * other algorithm by jose's jwtVerify. Their verdicts must be the same: these tests set one against
 * the other on tokens good and bad, and check the refusals a client sees.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { test } from "node:test";
import fc from "fast-check";
import { errors, type JWTPayload, jwtVerify, SignJWT } from "jose";
import { Authenticator, DEFAULT_AUTH, HmacVerifier } from "./authenticator.ts";
import type { JwtAlg } from "./config.ts";

const SECRET = "authenticator-secret-0123456789abcdef";
const KEY = new TextEncoder().encode(SECRET);
const OTHER_KEY = new TextEncoder().encode("another-secret-0123456789abcdef012345");
const NOW = Math.floor(Date.now() / 1000);

const b64 = (s: string) => Buffer.from(s).toString("base64url");

/** What a verification came to: the payload, or the name of jose's error class. */
async function outcome(check: () => JWTPayload | Promise<JWTPayload>): Promise<unknown> {
  try {
    return { payload: await check() };
  } catch (err) {
    assert.ok(err instanceof errors.JOSEError, `not a jose error: ${err}`);
    return { error: err.constructor.name };
  }
}

/** A token, signed or mangled as the generator says. */
const tokens = fc.record({
  alg: fc.constantFrom<JwtAlg>("HS256", "HS384", "HS512"),
  signAs: fc.constantFrom<JwtAlg>("HS256", "HS384", "HS512"),
  exp: fc.option(fc.integer({ min: NOW - 3600, max: NOW + 3600 }), { nil: undefined }),
  nbf: fc.option(fc.integer({ min: NOW - 3600, max: NOW + 3600 }), { nil: undefined }),
  iss: fc.option(fc.constantFrom("https://backend.test", "https://evil.test"), { nil: undefined }),
  aud: fc.option(fc.constantFrom("pusher", "other"), { nil: undefined }),
  otherKey: fc.boolean(),
  mangle: fc.constantFrom(
    "none",
    "flip-mac",
    "drop-mac",
    "mac-padding",
    "crit",
    "alg-none",
    "payload-not-json",
    "extra-part",
    "garbage",
  ),
  garbage: fc.string({ maxLength: 40 }),
});

type TokenSpec = typeof tokens extends fc.Arbitrary<infer T> ? T : never;

async function makeToken(t: TokenSpec): Promise<string> {
  const claims: JWTPayload = { uid: "u1" };
  if (t.exp !== undefined) claims.exp = t.exp;
  if (t.nbf !== undefined) claims.nbf = t.nbf;
  if (t.iss !== undefined) claims.iss = t.iss;
  if (t.aud !== undefined) claims.aud = t.aud;
  const header: Record<string, unknown> = { alg: t.signAs, typ: "JWT" };
  if (t.mangle === "crit") Object.assign(header, { crit: ["b64"], b64: true });
  const key = t.otherKey ? OTHER_KEY : KEY;
  const token = await new SignJWT(claims).setProtectedHeader(header as { alg: string }).sign(key);
  const [h, p, mac] = token.split(".");
  switch (t.mangle) {
    case "flip-mac":
      return `${h}.${p}.${mac[0] === "A" ? "B" : "A"}${mac.slice(1)}`;
    case "drop-mac":
      return `${h}.${p}.`;
    case "mac-padding":
      return `${h}.${p}.${mac}=`;
    case "alg-none":
      return `${b64('{"alg":"none"}')}.${p}.`;
    case "payload-not-json":
      return `${h}.${b64("not json")}.${mac}`;
    case "extra-part":
      return `${token}.${mac}`;
    case "garbage":
      return t.garbage;
    default:
      return token;
  }
}

test("HS* tokens get the same verdict from HmacVerifier as from jose's jwtVerify", async () => {
  await fc.assert(
    fc.asyncProperty(tokens, async (t) => {
      const token = await makeToken(t);
      const options = {
        issuer: "https://backend.test",
        audience: "pusher",
        requiredClaims: ["exp"],
      };
      const ours = await outcome(() => new HmacVerifier(t.alg, KEY).verify(token, options));
      const key = await crypto.subtle.importKey(
        "raw",
        KEY,
        { name: "HMAC", hash: `SHA-${t.alg.slice(2)}` },
        false,
        ["verify"],
      );
      const jose = await outcome(async () =>
        (await jwtVerify(token, key, { algorithms: [t.alg], ...options })).payload
      );
      // jose tells a malformed token apart in more ways; both refuse it, as "token malformed".
      const malformed = (o: unknown) =>
        JSON.stringify(o).replace(/JWSInvalid|JWTInvalid|JOSENotSupported/, "malformed");
      assert.equal(malformed(ours), malformed(jose), `token ${token}`);
    }),
    { numRuns: 400, seed: 16 },
  );
});

test("a client sees the same refusals for HS256 tokens as before: expired, bad signature, wrong alg", async () => {
  const server = await Authenticator.hmac(SECRET);
  const sign = (claims: JWTPayload, alg = "HS256", key = KEY) =>
    new SignJWT(claims).setProtectedHeader({ alg }).sign(key);
  assert.equal((await server.verify(await sign({ uid: "ann", exp: NOW + 60 }))).uid, "ann");
  const refused = async (token: string, message: string) =>
    await assert.rejects(server.verify(token), (err: Error) => err.message === message);
  await refused(await sign({ uid: "ann", exp: NOW - 60 }), "token expired");
  await refused(
    await sign({ uid: "ann", exp: NOW + 60 }, "HS256", OTHER_KEY),
    "token signature invalid",
  );
  await refused(await sign({ uid: "ann", exp: NOW + 60 }, "HS512"), "token algorithm not allowed");
  await refused(
    await sign({ uid: "ann" }),
    "token has no exp claim: sign it with one, or set JWT_REQUIRE_EXP=false on the server",
  );
  await refused(
    await sign({ uid: "ann", exp: NOW + 60, nbf: NOW + 600 }),
    "token claim nbf invalid",
  );
  await refused("not.a.token", "token malformed");
  const lenient = await Authenticator.create({
    ...DEFAULT_AUTH,
    alg: "HS256",
    secret: SECRET,
    requireExp: false,
  });
  assert.equal((await lenient.verify(await sign({ sub: "bob" }))).uid, "bob");
});
