/**
 * The bad-input suite: hostile tokens, origins, floods and malformed requests against a running
 * server, while a well-behaved client keeps receiving every message. Each door answers with its
 * documented status or close code.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { connect as tcpConnect, type Socket as TcpSocket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";
import { Authenticator, DEFAULT_AUTH } from "./authenticator.ts";
import { clientAddress, redact } from "./server.ts";
import {
  connectClient,
  eventually,
  rawUpgrade,
  startTestServer,
  TEST_SECRET,
  type TestServer,
} from "./testkit.ts";

const inAMinute = () => Math.floor(Date.now() / 1000) + 60;

/** Serves a JWKS on loopback; `keys` can be swapped to rotate. */
async function jwksServer(initial: object[]) {
  let keys = initial;
  let fetches = 0;
  const server = createServer((_req, res) => {
    fetches++;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    rotate: (next: object[]) => keys = next,
    fetches: () => fetches,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A well-behaved client that must receive every message sent to it while others misbehave. */
async function bystander(server: TestServer) {
  const client = await connectClient(`${server.wsUrl}/ws?token=${await server.token("good")}`);
  let sent = 0;
  return {
    async push() {
      const reply = await server.send("good", `m${sent}`);
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
      sent++;
    },
    async verify() {
      for (let i = 0; i < sent; i++) assert.equal(await client.next(), `m${i}`);
      await client[Symbol.asyncDispose]();
    },
  };
}

test("RS256 with a PEM key: signed tokens pass; HS/RS confusion and alg none are refused", async () => {
  const { publicKey, privateKey } = await generateKeyPair("RS256", { extractable: true });
  const pem = await exportSPKI(publicKey);
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-key-"));
  const keyFile = join(dir, "public.pem");
  writeFileSync(keyFile, pem);
  try {
    await using server = await startTestServer({
      jwtAlg: "RS256",
      jwtSecret: undefined,
      jwtPublicKeyFile: keyFile,
    });
    const good = await new SignJWT({ uid: "rsa", exp: inAMinute() })
      .setProtectedHeader({ alg: "RS256" }).sign(privateKey);
    const ok = await rawUpgrade(server.port, `/ws?token=${good}`);
    assert.equal(ok.status, 101);
    ok.socket.destroy();
    // The classic confusion: the public key's PEM text used as an HMAC secret.
    const confused = await new SignJWT({ uid: "rsa", exp: inAMinute() })
      .setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(pem));
    const none = `${btoa('{"alg":"none"}')}.${btoa(`{"uid":"x","exp":${inAMinute()}}`)}.`
      .replace(/=/g, "");
    for (const [token, error] of [[confused, /algorithm/], [none, /malformed|algorithm/]]) {
      const res = await rawUpgrade(server.port, `/ws?token=${token}`);
      assert.equal(res.status, 401);
      assert.match(JSON.parse(res.body).error, error as RegExp);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("ES256 with a JWKS URL: keys are fetched, cached, and rotated; an unreachable JWKS is 503", async () => {
  const a = await generateKeyPair("ES256", { extractable: true });
  const jwks = await jwksServer([{ ...await exportJWK(a.publicKey), kid: "a", alg: "ES256" }]);
  try {
    await using server = await startTestServer({
      jwtAlg: "ES256",
      jwtSecret: undefined,
      jwtJwksUrl: jwks.url,
    });
    const tokenA = await new SignJWT({ uid: "ec", exp: inAMinute() })
      .setProtectedHeader({ alg: "ES256", kid: "a" }).sign(a.privateKey);
    for (let i = 0; i < 3; i++) {
      const res = await rawUpgrade(server.port, `/ws?token=${tokenA}`);
      assert.equal(res.status, 101);
      res.socket.destroy();
    }
    assert.equal(jwks.fetches(), 1, "the JWKS is cached");

    // Rotation, with the cooldown off so the test need not wait 30 s.
    const auth = await Authenticator.create({
      ...DEFAULT_AUTH,
      alg: "ES256",
      jwksUrl: jwks.url,
      jwksCooldownMs: 0,
    });
    assert.equal((await auth.verify(tokenA)).uid, "ec");
    const b = await generateKeyPair("ES256", { extractable: true });
    jwks.rotate([{ ...await exportJWK(b.publicKey), kid: "b", alg: "ES256" }]);
    const tokenB = await new SignJWT({ uid: "ec2", exp: inAMinute() })
      .setProtectedHeader({ alg: "ES256", kid: "b" }).sign(b.privateKey);
    assert.equal((await auth.verify(tokenB)).uid, "ec2", "an unknown kid refetches the JWKS");
  } finally {
    await jwks.close();
  }
  const gone = await Authenticator.create({
    ...DEFAULT_AUTH,
    alg: "ES256",
    jwksUrl: jwks.url,
  });
  await assert.rejects(
    gone.verify(
      await new SignJWT({ uid: "x", exp: inAMinute() }).setProtectedHeader({
        alg: "ES256",
        kid: "a",
      })
        .sign(a.privateKey),
    ),
    (err: Error & { status?: number }) => err.status === 503 && /unavailable/.test(err.message),
  );
});

test("exp is required by default; iss, aud and the uid claim are checked when configured", async () => {
  const key = new TextEncoder().encode(TEST_SECRET);
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(key);
  {
    await using server = await startTestServer();
    const res = await rawUpgrade(server.port, `/ws?token=${await sign({ uid: "1" })}`);
    assert.equal(res.status, 401);
    assert.match(JSON.parse(res.body).error, /no exp claim/);
  }
  {
    await using server = await startTestServer({ jwtRequireExp: false });
    const res = await rawUpgrade(server.port, `/ws?token=${await sign({ uid: "1" })}`);
    assert.equal(res.status, 101, "go-pusher's tokens without exp, when allowed");
    res.socket.destroy();
  }
  {
    await using server = await startTestServer({
      jwtIssuer: "https://issuer.test",
      jwtAudience: "push",
      jwtUidClaim: "user_id",
    });
    const exp = inAMinute();
    const good = await sign({ user_id: "u", iss: "https://issuer.test", aud: "push", exp });
    const ok = await rawUpgrade(server.port, `/ws?token=${good}`);
    assert.equal(ok.status, 101);
    await eventually(() => server.hub.connectionsOf("u") === 1, 5000, "the uid from user_id");
    ok.socket.destroy();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ user_id: "u", iss: "https://evil.test", aud: "push", exp }, /iss/],
      [{ user_id: "u", iss: "https://issuer.test", aud: "other", exp }, /aud/],
      [{ uid: "u", iss: "https://issuer.test", aud: "push", exp }, /user_id/],
    ];
    for (const [claims, error] of cases) {
      const res = await rawUpgrade(server.port, `/ws?token=${await sign(claims)}`);
      assert.equal(res.status, 401, JSON.stringify(claims));
      assert.match(JSON.parse(res.body).error, error);
    }
  }
});

test("a 100 KB token is refused with 401, or by the HTTP layer (400/414/431), and nothing breaks", async () => {
  await using server = await startTestServer();
  const huge = "a".repeat(100_000);
  const header = await rawUpgrade(server.port, "/ws", { Authorization: `Bearer ${huge}` });
  assert.ok([400, 401, 431].includes(header.status), `${header.status}`);
  if (header.status === 401) assert.match(JSON.parse(header.body).error, /too long/);
  const url = await rawUpgrade(server.port, `/ws?token=${huge}`);
  assert.ok([400, 401, 414, 431].includes(url.status), `${url.status}`);
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
});

test("an expiring token closes the socket with 4004 unless a fresh one arrives first", async () => {
  await using server = await startTestServer();
  // One token, so both expire together. exp has whole seconds, so 3 s leaves at least 2 s of life,
  // and the only step before the refresh is two loopback connects: the fresh tokens are minted
  // first, and the slower steps (joining a group, the wrong-uid check) come after the refresh.
  const shortLived = await server.token("t", {}, 3);
  const fresh = await server.token("t", {}, 3600);
  const plain = await connectClient(`${server.wsUrl}/ws?token=${shortLived}`);
  const renew = await connectClient(`${server.wsUrl}/ws?format=json&token=${shortLived}`);
  renew.ws.send(JSON.stringify({ type: "auth", token: fresh }));
  const welcome = await renew.nextJson();
  assert.equal(welcome.type, "welcome");
  const ack = await renew.nextJson();
  assert.deepEqual([ack.type, ack.ok], ["auth", true]);
  await server.api("PUT", `/groups/room/clients/${welcome.client}`);
  renew.ws.send(JSON.stringify({ type: "auth", token: await server.token("someone-else") }));
  assert.match((await renew.nextJson()).error as string, /same uid/);

  assert.deepEqual(await plain.closed, { code: 4004, reason: "token expired" });
  // The refreshed connection outlived the token both started with, and kept its group.
  const sent = await server.api("POST", "/groups/room/send", { message: "still here" });
  assert.equal(sent.body.delivered, 1);
  assert.equal((await renew.nextJson()).data, "still here");
  await renew[Symbol.asyncDispose]();
});

test("origins: exact and wildcard entries pass, others get 403 before the upgrade", async () => {
  await using server = await startTestServer({
    allowedOrigins: ["https://app.example.com", "https://*.example.org"],
  });
  const token = await server.token("o");
  for (
    const [origin, status] of [
      ["https://app.example.com", 101],
      ["https://chat.example.org", 101],
      ["https://example.org", 403],
      ["https://evil.test", 403],
    ] as const
  ) {
    const res = await rawUpgrade(server.port, `/ws?token=${token}`, { Origin: origin });
    assert.equal(res.status, status, origin);
    if (status === 403) assert.match(JSON.parse(res.body).error, /origin not allowed/);
    res.socket.destroy();
  }
  const noOrigin = await rawUpgrade(server.port, `/ws?token=${token}`);
  assert.equal(noOrigin.status, 101, "non-browser clients send no Origin");
  noOrigin.socket.destroy();
});

test("limits: per uid (429 / 4029), per IP (429), frames per second (1008), requests per key (429)", async () => {
  {
    await using server = await startTestServer({ maxConnectionsPerUid: 2 });
    const token = await server.token("busy");
    await using _a = await connectClient(`${server.wsUrl}/ws?token=${token}`);
    await using _b = await connectClient(`${server.wsUrl}/ws?token=${token}`);
    const third = await rawUpgrade(server.port, `/ws?token=${token}`);
    assert.equal(third.status, 429);
    assert.match(JSON.parse(third.body).error, /MAX_CONNECTIONS_PER_UID/);
    const framed = await connectClient(`${server.wsUrl}/ws?auth=frame`);
    framed.ws.send(JSON.stringify({ type: "auth", token }));
    assert.deepEqual(await framed.closed, {
      code: 4029,
      reason: "too many connections for this uid",
    });
  }
  {
    // A rate of 1 refills one token per second. Five connects issued together can see at most one
    // refill for each second they took, whatever the machine's load: the count is bounded by the
    // time measured around them rather than by assuming they are fast.
    await using server = await startTestServer({ maxConnectsPerIp: 1 });
    const token = await server.token("ip");
    const began = performance.now();
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => rawUpgrade(server.port, `/ws?token=${token}`)),
    );
    const seconds = (performance.now() - began) / 1000;
    answers.forEach((a) => a.socket.destroy());
    const statuses = answers.map((a) => a.status);
    assert.ok(statuses.every((s) => s === 101 || s === 429), `${statuses}`);
    const admitted = statuses.filter((s) => s === 101).length;
    assert.ok(admitted >= 1 && admitted <= 1 + Math.floor(seconds), `${statuses} in ${seconds} s`);
  }
  {
    await using server = await startTestServer({ maxFramesPerSecond: 2 });
    const flood = await connectClient(`${server.wsUrl}/ws?token=${await server.token("f")}`);
    // Ping as fast as the pongs come back: a few round trips take far less than the half second
    // a token takes to refill. (Frames still in flight after the server's close would make some
    // runtimes reset the connection, and the client would not see the code.) Every answer is collected, and the loop ends when the socket closes; the assertions come
    // after it, so that a wrong answer fails the test rather than ending the loop.
    const answers: string[] = [];
    for (let i = 0; i < 50 && flood.ws.readyState === WebSocket.OPEN; i++) {
      flood.ws.send("ping");
      const answer = await flood.next().catch((err: Error) => err.message);
      if (answer.startsWith("socket closed")) break;
      answers.push(answer);
    }
    assert.ok(answers.length >= 2 && answers.length < 50, `${answers.length} answers`);
    assert.deepEqual(answers, answers.map(() => "pong"));
    assert.deepEqual(await flood.closed, { code: 1008, reason: "too many frames" });
  }
  {
    // As above: five requests issued together, at most one refill per second they took.
    await using server = await startTestServer({ maxRequestsPerKey: 1, apiKeys: ["k"] });
    const began = performance.now();
    const statuses = await Promise.all(Array.from({ length: 5 }, async () => {
      const res = await fetch(`${server.url}/api/clients/count`, { headers: { "x-api-key": "k" } });
      await res.body?.cancel();
      return res.status;
    }));
    const seconds = (performance.now() - began) / 1000;
    assert.ok(statuses.every((s) => s === 200 || s === 429), `${statuses}`);
    const admitted = statuses.filter((s) => s === 200).length;
    assert.ok(admitted >= 1 && admitted <= 1 + Math.floor(seconds), `${statuses} in ${seconds} s`);
  }
});

test("hostile sockets come and go while a good client receives every message", async () => {
  await using server = await startTestServer({ maxFrameBytes: 1024, authTimeout: 0.5 });
  const good = await bystander(server);
  const token = await server.token("bad");
  await good.push();

  const binary = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  binary.ws.send(new Uint8Array([0, 1, 2]));
  assert.equal((await binary.closed).code, 1003);
  await good.push();

  const big = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  big.ws.send("x".repeat(5000));
  assert.equal((await big.closed).code, 1009);
  await good.push();

  const json = await connectClient(`${server.wsUrl}/ws?format=json&token=${token}`);
  await json.next();
  for (const bad of ["{", "[]", "null", '{"type":5}', '{"type":"auth"}', "\u0000"]) {
    json.ws.send(bad);
    assert.equal((await json.nextJson()).type, "error", bad);
  }
  await json[Symbol.asyncDispose]();
  await good.push();

  // Handshakes that never finish: half a request line each, then silence.
  const stalled: TcpSocket[] = [];
  for (let i = 0; i < 50; i++) {
    stalled.push(
      await new Promise<TcpSocket>((resolve, reject) => {
        const s = tcpConnect({ host: "127.0.0.1", port: server.port }, () => {
          s.write("GET /ws?tok");
          resolve(s);
        });
        s.on("error", reject);
      }),
    );
  }
  await good.push();
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200, "still serving");
  for (const s of stalled) s.destroy();

  // Auth-frame sockets that never authenticate are closed by AUTH_TIMEOUT.
  const silent = await connectClient(`${server.wsUrl}/ws?auth=frame`);
  assert.equal((await silent.closed).code, 4002);
  await good.push();

  await good.verify();
  await eventually(() => server.app.sockets() === 0, 5000, "every socket to be gone");
  assert.deepEqual([server.hub.connections, server.hub.pending], [0, 0]);
  assert.equal(await server.metric("connections_unauthenticated"), 0);
});

test("two thousand connects from one address: the rate limit answers, the server stays up", async () => {
  await using server = await startTestServer();
  const good = await bystander(server);
  const token = await server.token("many");
  const counts = new Map<number, number>();
  const open: TcpSocket[] = [];
  for (let batch = 0; batch < 20; batch++) {
    const results = await Promise.all(
      Array.from({ length: 100 }, () => rawUpgrade(server.port, `/ws?token=${token}`)),
    );
    for (const r of results) {
      counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
      if (r.status === 101) open.push(r.socket);
    }
    await good.push();
  }
  assert.deepEqual([...counts.keys()].sort(), [101, 429]);
  assert.ok(counts.get(101)! <= 100, `${counts.get(101)} admitted: at most the uid cap`);
  for (const s of open) s.destroy();
  await good.verify();
  await eventually(() => server.app.sockets() === 0, 5000, "the admitted sockets to close");
});

test("fuzzed /send and /api requests get a documented status and JSON, never a 500", async () => {
  await using server = await startTestServer({ maxMessageBytes: 64, maxRequestsPerKey: 0 });
  await using _tab = await connectClient(`${server.wsUrl}/ws?token=${await server.token("u")}`);
  const paths = [
    "/send",
    "/api/broadcast",
    "/api/batch",
    "/api/clients",
    "/api/clients/x",
    "/api/clients/x/uid",
    "/api/uids/u/send",
    "/api/uids/u/clients",
    "/api/groups/g/send",
    "/api/groups/g/members",
    "/api/groups/g/uids/u",
    "/api/groups",
    "/api/nope",
  ];
  const value = fc.oneof(
    fc.string(),
    fc.integer(),
    fc.constant(null),
    fc.boolean(),
    fc.array(fc.string(), { maxLength: 3 }),
    fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }),
  );
  const request = fc.record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
    path: fc.constantFrom(...paths),
    query: fc.dictionary(fc.constantFrom("uid", "message", "limit", "offset", "x"), fc.string(), {
      maxKeys: 3,
    }),
    body: fc.oneof(
      fc.constant(undefined),
      fc.string().map((s) => ({ type: "text/plain", text: s })),
      fc.dictionary(fc.constantFrom("uid", "message", "messages", "group", "client"), value, {
        maxKeys: 4,
      }).map((o) => ({ type: "application/json", text: JSON.stringify(o) })),
      fc.string().map((s) => ({ type: "application/json", text: s })),
      fc.dictionary(fc.constantFrom("uid", "message"), fc.string(), { maxKeys: 2 })
        .map((o) => ({
          type: "application/x-www-form-urlencoded",
          text: String(new URLSearchParams(o)),
        })),
    ),
  });
  const documented = new Set([200, 400, 404, 405, 413, 415]);
  await fc.assert(
    fc.asyncProperty(request, async ({ method, path, query, body }) => {
      const withBody = body !== undefined && method !== "GET";
      const res = await fetch(`${server.url}${path}?${new URLSearchParams(query)}`, {
        method,
        headers: withBody ? { "content-type": body.type } : {},
        body: withBody ? body.text : undefined,
      });
      const text = await res.text();
      assert.ok(documented.has(res.status), `${method} ${path}: ${res.status} ${text}`);
      const parsed = JSON.parse(text);
      if (res.status !== 200) assert.equal(typeof parsed.error, "string");
    }),
    { numRuns: 300 },
  );
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  for (const path of ["/api/broadcast", "/api/batch", "/send"]) {
    const huge = await fetch(`${server.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ uid: "u", message: "x".repeat(20_000_000) }),
    });
    assert.equal(huge.status, 413, path);
    assert.match((await huge.json()).error, /too large/);
  }
});

test("redact() hides tokens and keys in URLs (the access log runs it on every line)", () => {
  assert.equal(
    redact("/ws?format=json&token=eyJabc.def.ghi&x=1"),
    "/ws?format=json&token=[redacted]&x=1",
  );
  assert.equal(redact("/send?api_key=k1&uid=1"), "/send?api_key=[redacted]&uid=1");
});

test("a refusal reason too long for a close frame is cut to 123 bytes, and the socket still closes", async () => {
  const claim = "a_very_long_uid_claim_name_".repeat(6);
  await using server = await startTestServer({ jwtUidClaim: claim });
  const client = await connectClient(`${server.wsUrl}/ws?auth=frame`);
  const token = await new SignJWT({ nothing: 1, exp: inAMinute() }).setProtectedHeader({
    alg: "HS256",
  })
    .sign(new TextEncoder().encode(TEST_SECRET));
  client.ws.send(JSON.stringify({ type: "auth", token }));
  const closed = await client.closed;
  assert.equal(closed.code, 4001);
  assert.ok(closed.reason.startsWith("token has no string a_very_long"), closed.reason);
  assert.ok(new TextEncoder().encode(closed.reason).length <= 123);
});

test("behind a trusted proxy, X-Forwarded-For names the client for the loopback rule and limits", async () => {
  assert.equal(clientAddress("127.0.0.1", "203.0.113.9", []), "127.0.0.1", "untrusted peer");
  assert.equal(clientAddress("10.0.0.2", "1.1.1.1, 203.0.113.9", ["10.0.0.2"]), "203.0.113.9");
  assert.equal(
    clientAddress("10.0.0.2", "203.0.113.9, 10.0.0.3", ["10.0.0.2", "10.0.0.3"]),
    "203.0.113.9",
    "every trusted hop is skipped",
  );
  await using server = await startTestServer({
    trustedProxies: ["127.0.0.1"],
    maxConnectsPerIp: 1,
  });
  const via = (client: string) => ({ "x-forwarded-for": client });
  const outside = await fetch(`${server.url}/send?uid=1&message=x`, {
    headers: via("203.0.113.9"),
  });
  assert.equal(outside.status, 403, "a proxied internet caller is not loopback");
  await outside.body?.cancel();
  const inside = await fetch(`${server.url}/send?uid=1&message=x`, { headers: via("127.0.0.1") });
  assert.equal(inside.status, 404, "a proxied local caller is");
  await inside.body?.cancel();
  const token = await server.token("p");
  const statuses = [];
  for (const client of ["198.51.100.1", "198.51.100.2", "198.51.100.1"]) {
    const res = await rawUpgrade(server.port, `/ws?token=${token}`, { "X-Forwarded-For": client });
    statuses.push(res.status);
    res.socket.destroy();
  }
  assert.deepEqual(statuses, [101, 101, 429], "one bucket per forwarded client");
});
