/**
 * Black-box: the command line as an operator meets it. Minting a token with `deno-pusher token`
 * and connecting with it, and the messages that say what to do when something is wrong. Runs
 * `main.ts` on the runtime running the tests, or the executable named by DENO_PUSHER_BIN.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SignJWT } from "jose";
import {
  connectClient,
  killProgram,
  rawUpgrade,
  runProgram,
  startProgram,
  stopProgram,
} from "./testkit.ts";

const SECRET = "cli-secret-0123456789abcdef0123456789";

const portOf = (banner: string) => Number(/listening on [^:]+:(\d+)/.exec(banner)![1]);

test("a port in use stops start-up with one line naming the port and how to pick another", async () => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  const port = (taken.address() as { port: number }).port;
  try {
    const ran = await runProgram(["--host", "127.0.0.1", "--port", String(port)], {
      JWT_SECRET: SECRET,
    });
    assert.equal(ran.code, 1, ran.stderr);
    assert.equal(
      ran.stderr.trim(),
      `deno-pusher: cannot start: port ${port} is already in use on 127.0.0.1; ` +
        "stop what listens there, or pick another port with --port or PORT (e.g. PORT=8282)",
    );
  } finally {
    taken.close();
  }
});

test("a token minted with `deno-pusher token` from a config file connects to a server given the same secret and algorithm; one without exp is refused, naming JWT_REQUIRE_EXP", async () => {
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-cli-"));
  const configFile = join(dir, "config.json");
  writeFileSync(configFile, JSON.stringify({ "jwt-secret": SECRET, "jwt-alg": "HS384" }));
  const started = await startProgram(["--port", "0", "--jwt-alg", "HS384"], { JWT_SECRET: SECRET });
  try {
    const minted = await runProgram(
      ["token", "--uid", "123", "--ttl", "2h", "--groups", "a,b", "--config", configFile],
    );
    assert.equal(minted.code, 0, minted.stderr);
    assert.match(minted.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, "the token alone on stdout");
    const token = minted.stdout.trim();
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    assert.equal(claims.exp - claims.iat, 2 * 3600, "--ttl 2h");

    const port = portOf(started.banner);
    await using tab = await connectClient(`ws://127.0.0.1:${port}/ws?format=json&token=${token}`);
    const welcome = JSON.parse(await tab.next());
    assert.equal(welcome.uid, "123");
    const sent = await fetch(`http://127.0.0.1:${port}/api/groups/b/send`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message: "to group b" }),
    });
    assert.equal(sent.status, 200, "the token's --groups were joined");
    const frame = JSON.parse(await tab.next());
    assert.equal(frame.data, "to group b");

    const noExp = await new SignJWT({ uid: "123" }).setProtectedHeader({ alg: "HS384" })
      .sign(new TextEncoder().encode(SECRET));
    const refused = await rawUpgrade(port, `/ws?token=${noExp}`);
    assert.equal(refused.status, 401);
    assert.match(JSON.parse(refused.body).error, /no exp claim.*JWT_REQUIRE_EXP=false/);

    assert.equal(await stopProgram(started), 0);
  } finally {
    await killProgram(started);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("`deno-pusher token` says what it needs: a secret, an HS* algorithm, a uid; never echoing a secret", async () => {
  const noSecret = await runProgram(["token", "--uid", "123"]);
  assert.equal(noSecret.code, 2);
  assert.match(noSecret.stderr, /^deno-pusher token: JWT_SECRET is not set/);
  assert.equal(noSecret.stdout, "", "nothing on stdout that a script could take for a token");

  const asymmetric = await runProgram(["token", "--uid", "123"], {
    JWT_ALG: "ES256",
    JWT_JWKS_URL: "https://issuer.test/jwks.json",
  });
  assert.equal(asymmetric.code, 2);
  assert.match(asymmetric.stderr, /JWT_ALG=ES256 tokens are signed with a private key/);

  const shortSecret = "hunter2-too-short";
  const short = await runProgram(["token", "--uid", "123"], { JWT_SECRET: shortSecret });
  assert.equal(short.code, 2);
  assert.match(short.stderr, /invalid JWT_SECRET \(value hidden, 17 characters\).*openssl rand/);
  assert.ok(!short.stderr.includes(shortSecret), "the secret is not printed");

  const noUid = await runProgram(["token"], { JWT_SECRET: SECRET });
  assert.equal(noUid.code, 2);
  assert.match(noUid.stderr, /--uid is required/);
});
