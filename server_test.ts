/**
 * The server as its users meet it: a browser on /ws, a backend calling /send, Prometheus on
 * /metrics. Each test runs a real server on a random port and real sockets.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { SignJWT } from "jose";
import { connectClient, eventually, rawUpgrade, startTestServer, TEST_SECRET } from "./testkit.ts";

test("the message arrives as a text frame holding exactly the message", async () => {
  await using server = await startTestServer();
  await using tab = await connectClient(`${server.wsUrl}/ws?token=${await server.token("123")}`);
  const reply = await server.send("123", "Hello World ✓");
  assert.equal(reply.status, 200);
  assert.equal(reply.body.uid, "123");
  assert.equal(reply.body.delivered, 1);
  assert.equal(typeof reply.body.id, "number");
  assert.equal(await tab.next(), "Hello World ✓");
});

test("every tab of a uid receives; closing one leaves the other receiving", async () => {
  await using server = await startTestServer();
  const token = await server.token("42");
  const first = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  await using second = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  const both = await server.send("42", "to both");
  assert.equal(both.body.delivered, 2);
  assert.equal(await first.next(), "to both");
  assert.equal(await second.next(), "to both");

  first.ws.close();
  await first.closed;
  await eventually(() => server.hub.connectionsOf("42") === 1, 5000, "the hub to drop tab 1");
  const one = await server.send("42", "to the second");
  assert.equal(one.body.delivered, 1);
  assert.equal(await second.next(), "to the second");
});

test("a second login does not evict the first (go-pusher's bug)", async () => {
  await using server = await startTestServer();
  const token = await server.token("7");
  await using first = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  const second = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  second.ws.close();
  await second.closed;
  await eventually(() => server.hub.connectionsOf("7") === 1, 5000, "the hub to drop tab 2");
  assert.equal((await server.send("7", "still here")).body.delivered, 1);
  assert.equal(await first.next(), "still here");
});

test("/send takes form and JSON bodies as well as the query", async () => {
  await using server = await startTestServer();
  await using tab = await connectClient(`${server.wsUrl}/ws?token=${await server.token("u1")}`);
  const form = await fetch(`${server.url}/send`, {
    method: "POST",
    body: new URLSearchParams({ uid: "u1", message: "from a form" }),
  });
  assert.equal(form.status, 200);
  assert.equal(await tab.next(), "from a form");
  const json = await fetch(`${server.url}/send`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ uid: "u1", message: "from JSON" }),
  });
  assert.equal(json.status, 200);
  assert.equal(await tab.next(), "from JSON");
  const mixed = await fetch(`${server.url}/send?uid=u1`, {
    method: "POST",
    body: new URLSearchParams({ message: "uid in the query" }),
  });
  assert.equal(mixed.status, 200);
  assert.equal(await tab.next(), "uid in the query");
});

test("ids are unique and increasing", async () => {
  await using server = await startTestServer();
  const ids: number[] = [];
  for (let i = 0; i < 20; i++) ids.push((await server.send("nobody", `m${i}`)).body.id as number);
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i] > ids[i - 1], `${ids[i]} > ${ids[i - 1]}`);
  }
});

test("no uid, no message, wrong types, bad JSON and wrong content types get 400 or 415", async () => {
  await using server = await startTestServer();
  const cases: [RequestInit & { path?: string }, number, RegExp][] = [
    [{ path: "/send?message=hi" }, 400, /^uid is required$/],
    [{ path: "/send?uid=&message=hi" }, 400, /^uid is required$/],
    [{ path: "/send?uid=1" }, 400, /^message is required$/],
    [
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"uid": {"a":1}, "message": "x"}',
      },
      400,
      /^uid must be a string$/,
    ],
    [
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"uid": "1", "message": 5}',
      },
      400,
      /^message must be a string$/,
    ],
    [
      { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" },
      400,
      /JSON/,
    ],
    [
      { method: "POST", headers: { "content-type": "application/json" }, body: "[1]" },
      400,
      /object/,
    ],
    [
      { method: "POST", headers: { "content-type": "text/xml" }, body: "<a/>" },
      415,
      /content type/,
    ],
    [{ path: "/send?uid=1&message=x", method: "PUT" }, 405, /not allowed/],
    [{ path: "/nowhere" }, 404, /not found/],
  ];
  for (const [init, status, error] of cases) {
    const res = await fetch(`${server.url}${init.path ?? "/send"}`, init);
    const body = await res.json();
    assert.equal(
      res.status,
      status,
      `${init.method ?? "GET"} ${init.path}: ${JSON.stringify(body)}`,
    );
    assert.match(body.error, error);
  }
});

test("a uid with no connection gets 404 client not found", async () => {
  await using server = await startTestServer();
  const reply = await server.send("123", "anyone?");
  assert.equal(reply.status, 404);
  assert.equal(reply.body.error, "client not found: 123");
});

test("a message over MAX_MESSAGE_BYTES gets 413, by query or by body", async () => {
  await using server = await startTestServer({ maxMessageBytes: 10 });
  await using tab = await connectClient(`${server.wsUrl}/ws?token=${await server.token("1")}`);
  assert.equal((await server.send("1", "0123456789")).status, 200);
  assert.equal(await tab.next(), "0123456789");
  const big = await server.send("1", "0123456789ä");
  assert.equal(big.status, 413);
  assert.match(big.body.error as string, /12 bytes; the limit is 10/);
  const huge = await fetch(`${server.url}/send`, {
    method: "POST",
    body: new URLSearchParams({ uid: "1", message: "x".repeat(100_000) }),
  });
  assert.equal(huge.status, 413);
  await huge.body?.cancel();
});

test("missing, forged, expired, early, uid-less and oversized tokens get 401 and no socket", async () => {
  await using server = await startTestServer();
  const key = new TextEncoder().encode(TEST_SECRET);
  const now = Math.floor(Date.now() / 1000);
  const sign = (claims: Record<string, unknown>, alg = "HS256", k = key) =>
    new SignJWT({ exp: now + 600, ...claims }).setProtectedHeader({ alg }).sign(k);
  const unsigned = `${btoa('{"alg":"none"}')}.${btoa('{"uid":"1"}')}.`.replace(/=/g, "");
  const cases: [string, string | undefined, RegExp][] = [
    ["no token", undefined, /token required/],
    ["garbage", "not-a-jwt", /malformed/],
    ["alg none", unsigned, /malformed|algorithm/],
    [
      "wrong key",
      await sign({ uid: "1" }, "HS256", new TextEncoder().encode("x".repeat(40))),
      /signature/,
    ],
    ["wrong alg", await sign({ uid: "1" }, "HS512"), /algorithm/],
    ["expired", await sign({ uid: "1", exp: now - 60 }), /expired/],
    ["not yet valid", await sign({ uid: "1", nbf: now + 3600 }), /nbf/],
    ["no uid", await sign({ name: "x" }), /uid/],
    ["numeric uid", await sign({ uid: 5 }), /uid/],
    ["9 KB", "a".repeat(9000), /too long/],
  ];
  for (const [what, token, error] of cases) {
    const res = await rawUpgrade(server.port, token === undefined ? "/ws" : `/ws?token=${token}`);
    assert.equal(res.status, 401, `${what}: ${res.head}`);
    assert.match(JSON.parse(res.body).error, error, what);
  }
  assert.equal(await server.metric("connections"), 0);
  assert.equal(await server.metric("auth_failures_total"), cases.length);
});

test("a token in Authorization: Bearer is accepted; sub stands in for uid", async () => {
  await using server = await startTestServer();
  const token = await new SignJWT({ sub: "by-sub" }).setProtectedHeader({ alg: "HS256" })
    .setExpirationTime("10m")
    .sign(new TextEncoder().encode(TEST_SECRET));
  const res = await rawUpgrade(server.port, "/ws", { Authorization: `Bearer ${token}` });
  try {
    assert.equal(res.status, 101);
    await eventually(() => server.hub.connectionsOf("by-sub") === 1, 5000, "the connection");
  } finally {
    res.socket.destroy();
  }
});

test("an auth frame within AUTH_TIMEOUT authenticates; a bad one or none closes 4001-4003", async () => {
  await using server = await startTestServer({ authTimeout: 30 });
  const url = `${server.wsUrl}/ws?auth=frame&format=json`;

  await using good = await connectClient(url);
  assert.equal(await server.metric("connections_unauthenticated"), 1);
  good.ws.send(JSON.stringify({ type: "auth", token: await server.token("framed") }));
  const welcome = await good.nextJson();
  assert.equal(welcome.type, "welcome");
  assert.equal(welcome.uid, "framed");
  assert.equal((await server.send("framed", "hi")).body.delivered, 1);
  assert.equal((await good.nextJson()).data, "hi");

  const bad = await connectClient(url);
  bad.ws.send(JSON.stringify({ type: "auth", token: "forged" }));
  assert.deepEqual(await bad.closed, { code: 4001, reason: "token malformed" });

  const wrong = await connectClient(url);
  wrong.ws.send("hello");
  assert.deepEqual(await wrong.closed, { code: 4003, reason: "expected an auth frame" });

  await eventually(() => server.app.sockets() === 1, 5000, "the refused sockets to close");
  assert.equal(await server.metric("connections_unauthenticated"), 0);

  await using quick = await startTestServer({ authTimeout: 0.3 });
  const silent = await connectClient(`${quick.wsUrl}/ws?auth=frame`);
  assert.deepEqual(await silent.closed, { code: 4002, reason: "authentication timeout" });
  await eventually(() => quick.app.sockets() === 0, 5000, "the silent socket to close");
  assert.equal(await quick.metric("connections_unauthenticated"), 0);
});

test("json: welcome carries the client id, pushes are envelopes with the /send id", async () => {
  await using server = await startTestServer();
  await using tab = await connectClient(
    `${server.wsUrl}/ws?format=json&token=${await server.token("j")}`,
  );
  const welcome = await tab.nextJson();
  assert.equal(welcome.type, "welcome");
  assert.equal(welcome.v, 1);
  assert.equal(welcome.uid, "j");
  assert.ok(server.hub.client(welcome.client as string), "the client id is the hub's");
  const reply = await server.send("j", '{"not": "parsed"}');
  const envelope = await tab.nextJson();
  assert.equal(envelope.type, "message");
  assert.equal(envelope.id, reply.body.id);
  assert.equal(envelope.data, '{"not": "parsed"}');
  assert.equal(typeof envelope.ts, "number");
});

test("a text ping gets pong in both formats; a json ping gets a json pong", async () => {
  await using server = await startTestServer();
  const token = await server.token("p");
  await using text = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  text.ws.send("ping");
  assert.equal(await text.next(), "pong");
  await using json = await connectClient(`${server.wsUrl}/ws?format=json&token=${token}`);
  await json.next(); // welcome
  json.ws.send("ping");
  assert.equal(await json.next(), "pong");
  json.ws.send('{"type":"ping"}');
  assert.deepEqual(await json.nextJson(), { type: "pong" });
  json.ws.send("{oops");
  assert.equal((await json.nextJson()).type, "error");
});

test("an unknown format gets 400", async () => {
  await using server = await startTestServer();
  const res = await rawUpgrade(server.port, `/ws?format=xml&token=${await server.token("x")}`);
  assert.equal(res.status, 400);
  assert.match(JSON.parse(res.body).error, /format must be text or json/);
});

test("a frame over MAX_FRAME_BYTES closes 1009; a binary frame closes 1003", async () => {
  await using server = await startTestServer({ maxFrameBytes: 1024 });
  const token = await server.token("big");
  const big = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  big.ws.send("x".repeat(2048));
  assert.equal((await big.closed).code, 1009);
  // Each left the hub before its close frame went out, not once its descriptor went (Deno's `ws`
  // keeps that up to CLOSE_TIMEOUT_MS): a send meanwhile finds it offline (404).
  assert.equal(server.hub.connections, 0);
  assert.equal((await server.send("big", "after")).status, 404);
  const binary = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  binary.ws.send(new Uint8Array([1, 2, 3]));
  assert.equal((await binary.closed).code, 1003);
  assert.equal(server.hub.connections, 0);
});

test("a client that stops reading is cut off with 4008; a fast one gets every message", async () => {
  await using server = await startTestServer({ maxQueueBytes: 256 * 1024 });
  const token = await server.token("fan");
  const slow = await rawUpgrade(server.port, `/ws?token=${token}`);
  try {
    assert.equal(slow.status, 101);
    await using fast = await connectClient(`${server.wsUrl}/ws?token=${token}`);
    await eventually(() => server.hub.connectionsOf("fan") === 2, 5000, "both connections");
    const chunk = "y".repeat(60_000);
    // Loopback socket buffers hold several MB; 2000 × 60 KB is far more than they can.
    let sent = 0;
    while (server.hub.connectionsOf("fan") === 2) {
      assert.ok(sent < 2000, "the slow client was never cut off");
      const reply = await server.send("fan", `${sent}:${chunk}`);
      assert.equal(reply.status, 200);
      sent++;
    }
    for (let i = 0; i < sent; i++) assert.equal(await fast.next(), `${i}:${chunk}`);
    assert.equal((await server.send("fan", "after")).body.delivered, 1);
    assert.equal(await fast.next(), "after");
    assert.equal(await server.metric("slow_consumers_total"), 1);
    assert.equal(await server.metric("pending"), 0);
    assert.ok((await server.metric("messages_dropped_total")) > 0);
  } finally {
    slow.socket.destroy();
  }
});

test("past MAX_CONNECTIONS /ws gets 503, HTTP keeps working, and a freed slot is reused", async () => {
  await using server = await startTestServer({ maxConnections: 2 });
  const token = await server.token("cap");
  const a = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  await using b = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  const refused = await rawUpgrade(server.port, `/ws?token=${token}`);
  assert.equal(refused.status, 503);
  assert.match(JSON.parse(refused.body).error, /connection limit reached \(2\)/);
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  a.ws.close();
  await a.closed;
  await eventually(() => server.app.sockets() === 1, 5000, "the slot to free");
  await using c = await connectClient(`${server.wsUrl}/ws?token=${token}`);
  assert.equal((await server.send("cap", "two")).body.delivered, 2);
  assert.equal(await b.next(), "two");
  assert.equal(await c.next(), "two");
});

test("/metrics counts sockets, uids and messages as they really are", async () => {
  await using server = await startTestServer();
  const res = await fetch(`${server.url}/metrics`);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  await res.body?.cancel();
  const t1 = await server.token("m1");
  const a = await connectClient(`${server.wsUrl}/ws?token=${t1}`);
  await using b = await connectClient(`${server.wsUrl}/ws?token=${t1}`);
  await using c = await connectClient(`${server.wsUrl}/ws?token=${await server.token("m2")}`);
  assert.equal(await server.metric("connections"), 3);
  assert.equal(await server.metric("users"), 2);
  await server.send("m1", "x");
  await server.send("m2", "y");
  await server.send("nobody", "z");
  await Promise.all([a.next(), b.next(), c.next()]);
  assert.equal(await server.metric("messages_accepted_total"), 3);
  assert.equal(await server.metric("messages_sent_total"), 3);
  assert.equal(await server.metric("messages_offline_total"), 1);
  assert.equal(await server.metric("pending"), 0);
  a.ws.close();
  await eventually(() => server.hub.connections === 2, 5000, "the close");
  assert.equal(await server.metric("connections"), 2);
  assert.equal(await server.metric("users"), 2);
  const text = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(text, /http_requests_total\{method="GET",route="\/send",status="200"\} 2/);
  assert.match(text, /http_requests_total\{method="GET",route="\/ws",status="101"\} 3/);
  assert.doesNotMatch(text, /m1|m2|nobody/, "no uid reaches /metrics");
});

test("the SQLite log records each message with its real delivery status", async () => {
  const server = await startTestServer({ messageLogger: "sqlite", maxQueueBytes: 128 * 1024 });
  const dbPath = `${server.config.dataDir}/messages.db`;
  try {
    await using tab = await connectClient(`${server.wsUrl}/ws?token=${await server.token("s")}`);
    const delivered = (await server.send("s", "hello")).body.id as number;
    await tab.next();
    const offline = (await server.send("gone", "nobody home")).body.id as number;
    const slow = await rawUpgrade(server.port, `/ws?token=${await server.token("slow")}`);
    let lastToSlow = 0;
    try {
      await eventually(() => server.hub.connectionsOf("slow") === 1, 5000, "the slow client");
      for (let i = 0; server.hub.connectionsOf("slow") === 1; i++) {
        assert.ok(i < 2000, "the slow client was never cut off");
        lastToSlow = (await server.send("slow", "z".repeat(60_000))).body.id as number;
      }
    } finally {
      slow.socket.destroy();
    }
    await server.stop(); // flushes the log
    const db = new DatabaseSync(dbPath);
    const status = (id: number) =>
      (db.prepare("SELECT status FROM messages WHERE id = ?").get(id) as {
        status: string;
      }).status;
    assert.equal(status(delivered), "delivered");
    assert.equal(status(offline), "offline");
    assert.equal(status(lastToSlow), "dropped");
    const row = db.prepare("SELECT uid, message FROM messages WHERE id = ?").get(delivered);
    assert.deepEqual({ ...row }, { uid: "s", message: "hello" });
    const mode = db.prepare("PRAGMA journal_mode").get() as { journal_mode: string };
    assert.equal(mode.journal_mode, "wal");
    db.close();
  } finally {
    await server[Symbol.asyncDispose]();
  }
});

test("/healthz and /readyz answer; /readyz turns 503 while draining", async () => {
  await using server = await startTestServer();
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  assert.equal((await fetch(`${server.url}/readyz`)).status, 200);
  server.app.drain();
  const res = await fetch(`${server.url}/readyz`);
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { status: "draining" });
});
