/** `deno-pusher token`: the token it prints is the one the configured server accepts. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { test } from "node:test";
import { Authenticator, DEFAULT_AUTH } from "./authenticator.ts";
import { ConfigError } from "./config.ts";
import { parseTtl, tokenCommand, tokenHelp } from "./token.ts";

const SECRET = "token-secret-0123456789abcdef0123456789";

test("the token carries the configured uid claim, issuer and audience, and the server's check accepts it", async () => {
  const env = {
    JWT_SECRET: SECRET,
    JWT_ALG: "HS512",
    JWT_UID_CLAIM: "user_id",
    JWT_ISSUER: "https://backend.test",
    JWT_AUDIENCE: "pusher",
  };
  const token = await tokenCommand(
    ["--uid", "42", "--groups", "room-1, room-2", "--info", '{"name":"Ann"}', "--ttl", "15m"],
    env,
  );
  const server = await Authenticator.create({
    ...DEFAULT_AUTH,
    alg: "HS512",
    secret: SECRET,
    uidClaim: "user_id",
    issuer: "https://backend.test",
    audience: "pusher",
  });
  const identity = await server.verify(token);
  assert.equal(identity.uid, "42");
  assert.deepEqual(identity.groups, ["room-1", "room-2"]);
  assert.deepEqual(identity.info, { name: "Ann" });
  const leftSeconds = identity.exp! - Date.now() / 1000;
  assert.ok(leftSeconds > 14 * 60 && leftSeconds <= 15 * 60, `${leftSeconds} s left`);
  await assert.rejects(
    (await Authenticator.hmac(SECRET, "HS256")).verify(token),
    /algorithm not allowed/,
    "signed with JWT_ALG, not a fixed HS256",
  );
});

test("the secret may come from the config file, as the server reads it", async () => {
  const read = () => JSON.stringify({ "jwt-secret": SECRET });
  const token = await tokenCommand(["--uid", "7", "--config", "/etc/p.json"], {}, read);
  assert.equal((await (await Authenticator.hmac(SECRET)).verify(token)).uid, "7");
});

test("--ttl takes seconds or a number with s, m, h or d; anything else is refused", () => {
  assert.equal(parseTtl("90"), 90);
  assert.equal(parseTtl("90s"), 90);
  assert.equal(parseTtl("15m"), 900);
  assert.equal(parseTtl("1h"), 3600);
  assert.equal(parseTtl("7d"), 7 * 86400);
  for (const bad of ["0", "-1h", "1w", "h", "1.5h", ""]) {
    assert.throws(() => parseTtl(bad), ConfigError, bad);
  }
});

test("bad --groups, --info or a token the server would find too long are refused before printing", async () => {
  const env = { JWT_SECRET: SECRET };
  const groups = Array.from({ length: 65 }, (_, i) => `g${i}`).join(",");
  await assert.rejects(tokenCommand(["--uid", "1", "--groups", groups], env), /at most 64/);
  await assert.rejects(tokenCommand(["--uid", "1", "--info", "{name"], env), /--info must be JSON/);
  await assert.rejects(
    tokenCommand(["--uid", "1", "--info", JSON.stringify("x".repeat(200))], {
      ...env,
      MAX_TOKEN_BYTES: "128",
    }),
    /over MAX_TOKEN_BYTES \(128\)/,
  );
  await assert.rejects(tokenCommand(["--uid", "1", "--nope", "x"], env), /Unknown option '--nope'/);
  assert.match(await tokenCommand(["--help"], {}), /usage: deno-pusher token --uid/);
  assert.equal(await tokenCommand(["-h"], {}), tokenHelp());
});

test("the README's Node snippet mints a token the server accepts", async () => {
  const readme = readFileSync(new URL("./README.md", import.meta.url), "utf8");
  const snippet = /Node, with `npm install jose`:\n\n.*\n```js\n([^`]+)```/.exec(readme)?.[1];
  assert.ok(snippet, "README lacks the Node snippet");
  const printed = await new Promise<string>((resolve, reject) =>
    execFile(
      "node",
      ["--input-type=module", "-e", `${snippet}console.log(token);`],
      { cwd: import.meta.dirname, env: { ...process.env, JWT_SECRET: SECRET } },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    )
  );
  const identity = await (await Authenticator.hmac(SECRET)).verify(printed.trim());
  assert.equal(identity.uid, "123");
  assert.ok(identity.exp! - Date.now() / 1000 > 3500, "exp is an hour away");
});
