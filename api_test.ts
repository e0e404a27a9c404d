/**
 * The management API as a backend uses it: every operation against a running server, with real
 * sockets on the other end.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { eventually, startTestServer } from "./testkit.ts";

test("broadcast, and send to a client, a uid and a group, each saying how many it reached", async () => {
  await using server = await startTestServer();
  const a = await server.connectAs("alice", { groups: ["room"] });
  const a2 = await server.connectAs("alice");
  const b = await server.connectAs("bob", { groups: ["room"] });
  await using _a = a.client, _a2 = a2.client, _b = b.client;

  const all = await server.api("POST", "/broadcast", { message: "to all" });
  assert.equal(all.status, 200);
  assert.equal(all.body.delivered, 3);
  for (const c of [a, a2, b]) assert.equal((await c.client.nextJson()).data, "to all");

  const one = await server.api("POST", `/clients/${a2.id}/send`, { message: "to a2" });
  assert.deepEqual([one.status, one.body.delivered], [200, 1]);
  assert.equal((await a2.client.nextJson()).data, "to a2");

  const uid = await server.api("POST", "/uids/alice/send", { message: "to alice" });
  assert.equal(uid.body.delivered, 2);
  assert.equal((await a.client.nextJson()).data, "to alice");
  assert.equal((await a2.client.nextJson()).data, "to alice");

  const group = await server.api("POST", "/groups/room/send", { message: "to room" });
  assert.equal(group.body.delivered, 2);
  const envelope = await a.client.nextJson();
  assert.deepEqual([envelope.data, envelope.group], ["to room", "room"]);
  assert.equal((await b.client.nextJson()).data, "to room");

  // Nothing else arrived: the next frame anyone gets is this one.
  await server.api("POST", "/broadcast", { message: "end" });
  for (const c of [a, a2, b]) assert.equal((await c.client.nextJson()).data, "end");
});

test("unknown clients, uids and groups get 404; bad input gets 400 with zod's issues", async () => {
  // With history off, as go-pusher answers: history on keeps a group's message instead (below).
  await using server = await startTestServer({ maxMessageBytes: 8, maxBatch: 2, historySize: 0 });
  const cases: [string, string, unknown, number, RegExp][] = [
    ["POST", "/clients/nope/send", { message: "x" }, 404, /^client not found: nope$/],
    ["POST", "/uids/nobody/send", { message: "x" }, 404, /^client not found: nobody$/],
    ["POST", "/groups/none/send", { message: "x" }, 404, /^group not found: none$/],
    ["GET", "/clients/nope", undefined, 404, /client not found/],
    ["DELETE", "/clients/nope", undefined, 404, /client not found/],
    ["PUT", "/clients/nope/uid", { uid: "x" }, 404, /client not found/],
    ["PUT", "/groups/g/clients/nope", undefined, 404, /client not found/],
    ["PUT", "/groups/g/uids/nobody", undefined, 404, /client not found: nobody/],
    ["GET", "/groups/none/members", undefined, 404, /group not found/],
    ["GET", "/groups/none/members/count", undefined, 404, /group not found/],
    ["DELETE", "/groups/none", undefined, 404, /group not found/],
    ["POST", "/broadcast", { message: 5 }, 400, /^message must be a string$/],
    ["POST", "/broadcast", {}, 400, /^message must be a string$/],
    ["POST", "/broadcast", { message: "123456789" }, 413, /9 bytes; the limit is 8/],
    ["GET", "/clients?limit=0", undefined, 400, /^limit must be 1 to 1000$/],
    ["GET", "/uids?offset=x", undefined, 400, /^offset must be a number$/],
    ["POST", "/batch", { messages: [] }, 400, /messages is empty/],
    ["POST", "/batch", { messages: [{ message: "x" }] }, 400, /exactly one of uid/],
    ["POST", "/batch", { messages: [{ message: "x", uid: "1", group: "g" }] }, 400, /exactly one/],
    [
      "POST",
      "/batch",
      {
        messages: [{ message: "1", uid: "a" }, { message: "2", uid: "a" }, {
          message: "3",
          uid: "a",
        }],
      },
      400,
      /at most 2 messages/,
    ],
    ["GET", "/nowhere", undefined, 404, /not found/],
  ];
  for (const [method, path, body, status, error] of cases) {
    const res = await server.api(method, path, body);
    assert.equal(res.status, status, `${method} ${path}: ${JSON.stringify(res.body)}`);
    assert.match(res.body.error, error, `${method} ${path}`);
    if (status === 400 && path !== "/nowhere") assert.ok(Array.isArray(res.body.issues));
  }
  const bad = await fetch(`${server.url}/api/broadcast`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{not json",
  });
  assert.deepEqual([bad.status, await bad.json()], [400, {
    error: "Malformed JSON in request body",
  }]);
});

test("batch publishes many messages to many targets and answers each in order", async () => {
  await using server = await startTestServer({ maxMessageBytes: 16 });
  const a = await server.connectAs("a", { groups: ["g"] });
  await using _a = a.client;
  const res = await server.api("POST", "/batch", {
    messages: [
      { uid: "a", message: "1" },
      { group: "g", message: "2" },
      { client: a.id, message: "3" },
      { broadcast: true, message: "4" },
      { uid: "offline", message: "5" },
      { uid: "a", message: "far too long for the limit" },
    ],
  });
  assert.equal(res.status, 200);
  const results = res.body.results;
  assert.deepEqual(results.slice(0, 5).map((r: { delivered: number }) => r.delivered), [
    1,
    1,
    1,
    1,
    0,
  ]);
  assert.match(results[5].error, /limit is 16/);
  for (const expected of ["1", "2", "3", "4"]) {
    assert.equal((await a.client.nextJson()).data, expected);
  }
});

test("client queries: online, count, list with pages, and a client's uid", async () => {
  await using server = await startTestServer();
  const conns = [];
  for (const uid of ["u1", "u1", "u2"]) {
    conns.push(await server.connectAs(uid, { info: { n: uid } }));
  }
  try {
    assert.deepEqual((await server.api("GET", `/clients/${conns[0].id}/online`)).body, {
      id: conns[0].id,
      online: true,
    });
    assert.equal((await server.api("GET", "/clients/nope/online")).body.online, false);
    assert.equal((await server.api("GET", "/clients/count")).body.count, 3);
    const first = await server.api("GET", "/clients?limit=2");
    assert.deepEqual([first.body.items.length, first.body.total, first.body.next], [2, 3, 2]);
    const second = await server.api("GET", "/clients?limit=2&offset=2");
    assert.deepEqual([second.body.items.length, second.body.next], [1, null]);
    const ids = [...first.body.items, ...second.body.items].map((c: { id: string }) => c.id);
    assert.deepEqual(ids.sort(), conns.map((c) => c.id).sort());
    const one = await server.api("GET", `/clients/${conns[2].id}`);
    assert.equal(one.body.uid, "u2");
    assert.deepEqual(one.body.info, { n: "u2" });
    assert.equal(one.body.format, "json");
  } finally {
    for (const c of conns) await c.client[Symbol.asyncDispose]();
  }
});

test("uid queries: online, count, list, and a uid's clients", async () => {
  await using server = await startTestServer();
  const conns = [];
  for (const uid of ["u1", "u1", "u2"]) conns.push(await server.connectAs(uid));
  try {
    assert.deepEqual((await server.api("GET", "/uids/u1/online")).body, {
      uid: "u1",
      online: true,
      connections: 2,
    });
    assert.equal((await server.api("GET", "/uids/u9/online")).body.online, false);
    assert.equal((await server.api("GET", "/uids/count")).body.count, 2);
    assert.deepEqual((await server.api("GET", "/uids")).body.items.sort(), ["u1", "u2"]);
    const clients = await server.api("GET", "/uids/u1/clients");
    assert.deepEqual(
      clients.body.items.map((c: { id: string }) => c.id).sort(),
      [conns[0].id, conns[1].id].sort(),
    );
    assert.deepEqual((await server.api("GET", "/uids/u9/clients")).body.items, []);
  } finally {
    for (const c of conns) await c.client[Symbol.asyncDispose]();
  }
});

test("closing a client (4009) and logging a uid out close exactly those sockets", async () => {
  await using server = await startTestServer();
  const a1 = await server.connectAs("a");
  const a2 = await server.connectAs("a");
  const b = await server.connectAs("b", { groups: ["g"] });
  await using _b = b.client;
  assert.deepEqual((await server.api("DELETE", `/clients/${b.id}`)).body, { closed: 1 });
  assert.deepEqual(await b.client.closed, { code: 4009, reason: "closed by server" });
  assert.equal((await server.api("GET", "/groups/count")).body.count, 0, "b's group went with it");
  assert.deepEqual((await server.api("DELETE", "/uids/a")).body, { closed: 2 });
  assert.deepEqual(await a1.client.closed, { code: 4009, reason: "logged out" });
  assert.deepEqual(await a2.client.closed, { code: 4009, reason: "logged out" });
  assert.deepEqual((await server.api("DELETE", "/uids/a")).body, { closed: 0 });
  assert.equal(server.hub.connections, 0);
  assert.equal(server.hub.users, 0);
});

test("bind and unbind move a client between uids and keep its groups", async () => {
  await using server = await startTestServer();
  const c = await server.connectAs("guest", { groups: ["lobby"] });
  await using _c = c.client;
  const bound = await server.api("PUT", `/clients/${c.id}/uid`, { uid: "member" });
  assert.equal(bound.status, 200);
  assert.deepEqual([bound.body.uid, bound.body.groups], ["member", ["lobby"]]);
  assert.equal((await server.api("GET", "/uids/guest/online")).body.online, false);
  assert.equal(
    (await server.api("POST", "/uids/member/send", { message: "hi" })).body.delivered,
    1,
  );
  assert.equal((await c.client.nextJson()).data, "hi");
  const unbound = await server.api("DELETE", `/clients/${c.id}/uid`);
  assert.deepEqual([unbound.body.uid, unbound.body.groups], [null, ["lobby"]]);
  assert.equal((await server.api("GET", "/uids/count")).body.count, 0);
  const members = await server.api("GET", "/groups/lobby/members");
  assert.deepEqual(members.body.items, [{ client: c.id, uid: null, info: null }]);
  assert.equal(
    (await server.api("POST", "/groups/lobby/send", { message: "still" })).body.delivered,
    1,
  );
  assert.equal((await c.client.nextJson()).data, "still");
});

test("joins and leaves by client and by uid are idempotent; groups list, count and dissolve", async () => {
  await using server = await startTestServer();
  const a1 = await server.connectAs("a", { info: { name: "Ann" } });
  const a2 = await server.connectAs("a", { info: { name: "Ann" } });
  const b = await server.connectAs("b");
  await using _a1 = a1.client, _a2 = a2.client, _b = b.client;

  const join = await server.api("PUT", `/groups/g1/clients/${b.id}`);
  assert.deepEqual(join.body, { group: "g1", members: 1, changed: 1 });
  assert.deepEqual((await server.api("PUT", `/groups/g1/clients/${b.id}`)).body.changed, 0);
  const byUid = await server.api("PUT", "/groups/g1/uids/a");
  assert.deepEqual(byUid.body, { group: "g1", members: 3, changed: 2 });
  assert.equal((await server.api("PUT", "/groups/g1/uids/a")).body.changed, 0);
  await server.api("PUT", `/groups/g2/clients/${a1.id}`);

  assert.deepEqual((await server.api("GET", "/groups")).body.items.sort(), ["g1", "g2"]);
  assert.equal((await server.api("GET", "/groups/count")).body.count, 2);
  assert.deepEqual((await server.api("GET", "/groups/g1/members/count")).body, {
    members: 3,
    uids: 2,
  });
  const members = (await server.api("GET", "/groups/g1/members")).body.items;
  assert.deepEqual(
    members.map((m: { uid: string; info: unknown }) => [m.uid, m.info]).sort(),
    [["a", { name: "Ann" }], ["a", { name: "Ann" }], ["b", null]],
  );

  assert.deepEqual((await server.api("DELETE", "/groups/g1/uids/a")).body, {
    group: "g1",
    members: 1,
    changed: 2,
  });
  assert.equal((await server.api("DELETE", "/groups/g1/uids/a")).body.changed, 0);
  assert.equal((await server.api("DELETE", `/groups/g2/clients/${a1.id}`)).body.members, 0);
  assert.equal((await server.api("DELETE", `/groups/g2/clients/${a1.id}`)).status, 200);
  assert.deepEqual((await server.api("GET", "/groups")).body.items, ["g1"], "emptied groups go");

  assert.deepEqual((await server.api("DELETE", "/groups/g1")).body, {
    group: "g1",
    members: 0,
    changed: 1,
  });
  assert.equal((await server.api("GET", "/groups/count")).body.count, 0);
  assert.equal((await server.api("GET", `/clients/${b.id}`)).body.groups.length, 0);
});

test("presence: members that opted in hear a uid's first join and last leave, with its info", async () => {
  await using server = await startTestServer();
  const watcher = await server.connectAs("w", { groups: ["room"] }, "&presence=true");
  await using _w = watcher.client;
  assert.deepEqual(await watcher.client.nextJson(), { type: "join", group: "room", uid: "w" });
  const quiet = await server.connectAs("q", { groups: ["room"] });
  await using _q = quiet.client;
  assert.deepEqual(await watcher.client.nextJson(), { type: "join", group: "room", uid: "q" });
  const ann1 = await server.connectAs("ann", { groups: ["room"], info: { name: "Ann" } });
  assert.deepEqual(await watcher.client.nextJson(), {
    type: "join",
    group: "room",
    uid: "ann",
    info: { name: "Ann" },
  });
  const ann2 = await server.connectAs("ann", { groups: ["room"] });
  ann1.client.ws.close();
  await ann1.client.closed;
  await eventually(() => server.hub.connectionsOf("ann") === 1, 5000, "ann's first tab to go");
  ann2.client.ws.close();
  // ann's second tab neither joined nor left as news: the next event is her last leave.
  assert.deepEqual(await watcher.client.nextJson(), { type: "leave", group: "room", uid: "ann" });
  await server.api("DELETE", `/groups/room/clients/${quiet.id}`);
  assert.deepEqual(await watcher.client.nextJson(), { type: "leave", group: "room", uid: "q" });
  assert.equal((await server.api("POST", "/groups/room/send", { message: "m" })).body.delivered, 1);
  assert.equal((await watcher.client.nextJson()).data, "m");
  const noPresenceInText = await fetch(`${server.url}/ws?presence=true&token=x`, {
    headers: { upgrade: "websocket" },
  });
  assert.equal(noPresenceInText.status, 400);
  assert.match((await noPresenceInText.json()).error, /presence events need format=json/);
});

test("the message log lists the latest messages, newest first, one uid's or all, page by page", async () => {
  await using server = await startTestServer({ messageLogger: "sqlite" });
  const ann = await server.connectAs("ann", { groups: ["room"] });
  await using _ann = ann.client;
  const ids: number[] = [];
  for (const text of ["one", "two", "three"]) {
    ids.push((await server.api("POST", "/uids/ann/send", { message: text })).body.id);
  }
  const toRoom = (await server.api("POST", "/groups/room/send", { message: "four" })).body.id;
  const toBob = (await server.send("bob", "five")).body.id; // offline: logged all the same

  const all = await server.api("GET", "/messages");
  assert.equal(all.status, 200);
  assert.deepEqual(all.body.items.map((m: { id: number }) => m.id), [
    toBob,
    toRoom,
    ...ids.reverse(),
  ]);
  assert.equal(all.body.next, null);
  const [bob, room] = all.body.items;
  assert.deepEqual([bob.target, bob.uid, bob.message, bob.status], [
    "uid:bob",
    "bob",
    "five",
    "offline",
  ]);
  assert.deepEqual([room.target, room.uid, room.status, room.written], [
    "group:room",
    null,
    "delivered",
    1,
  ]);
  assert.equal(typeof room.ts, "number");

  // ann's three, two to a page: the second page starts below the first's `next`.
  const first = await server.api("GET", "/messages?uid=ann&limit=2");
  assert.deepEqual(first.body.items.map((m: { message: string }) => m.message), ["three", "two"]);
  assert.equal(first.body.next, first.body.items[1].id);
  const second = await server.api("GET", `/messages?uid=ann&limit=2&before=${first.body.next}`);
  assert.deepEqual(second.body.items.map((m: { message: string }) => m.message), ["one"]);
  assert.equal(second.body.next, null);
  assert.deepEqual((await server.api("GET", "/messages?uid=nobody")).body, {
    items: [],
    next: null,
  });

  const bad = await server.api("GET", "/messages?limit=0");
  assert.deepEqual([bad.status, bad.body.error], [400, "limit must be 1 to 1000"]);
  assert.equal(
    (await server.api("GET", "/messages?before=x")).body.error,
    "before must be a message id",
  );
});

test("without a message log that can be read, the list answers 404 and says why", async () => {
  await using server = await startTestServer(); // MESSAGE_LOGGER=none
  assert.deepEqual(await server.api("GET", "/messages"), {
    status: 404,
    body: { error: "no message log is kept that can be read (MESSAGE_LOGGER=sqlite keeps one)" },
  });
});

test("/api needs a key when API_KEYS is set, by Bearer or X-API-Key", async () => {
  await using server = await startTestServer({ apiKeys: ["k-one", "k-two"] });
  const get = (headers: Record<string, string>) =>
    fetch(`${server.url}/api/clients/count`, { headers }).then(async (r) => ({
      status: r.status,
      body: await r.json(),
    }));
  assert.deepEqual(await get({}), {
    status: 401,
    body: {
      error: "/api/clients/count needs an API key: send one of API_KEYS as " +
        "Authorization: Bearer <key> or X-API-Key: <key>",
    },
  });
  assert.deepEqual(await get({ authorization: "Bearer wrong" }), {
    status: 401,
    body: { error: "API key invalid: the key sent is not one of API_KEYS" },
  });
  assert.equal((await get({ authorization: "Bearer k-two" })).status, 200);
  assert.equal((await get({ "x-api-key": "k-one" })).status, 200);
  const send = await fetch(`${server.url}/send?uid=1&message=x`);
  const refusal = await send.json();
  assert.deepEqual([send.status, refusal], [401, {
    error: "/send needs an API key: send one of API_KEYS as " +
      "Authorization: Bearer <key> or X-API-Key: <key>",
  }], "/send sits behind the same keys");
  const readme = readFileSync(new URL("./README.md", import.meta.url), "utf8");
  assert.ok(readme.includes(JSON.stringify(refusal)), "the README quotes /send's 401 as sent");
  assert.ok(readme.includes(JSON.stringify((await get({ "x-api-key": "nope" })).body)));
});

test("without API_KEYS, a caller off loopback is told which route refused it and what to send", async () => {
  // The test server's peer is 127.0.0.1; as a trusted proxy it can name an outside caller.
  await using server = await startTestServer({ trustedProxies: ["127.0.0.1"] });
  const fromOutside = async (path: string) => {
    const res = await fetch(`${server.url}${path}`, {
      headers: { "x-forwarded-for": "203.0.113.9" },
    });
    return { status: res.status, body: await res.json() };
  };
  const refusal = (route: string) => ({
    status: 403,
    body: {
      error: `${route} answers loopback callers only while API_KEYS is empty: set API_KEYS, ` +
        "then send one of its keys as Authorization: Bearer <key> or X-API-Key: <key>",
    },
  });
  const send = await fromOutside("/send?uid=1&message=x");
  assert.deepEqual(send, refusal("/send"));
  assert.deepEqual(await fromOutside("/api/clients/count"), refusal("/api/clients/count"));
  const readme = readFileSync(new URL("./README.md", import.meta.url), "utf8");
  assert.ok(readme.includes(JSON.stringify(send.body)), "the README quotes /send's 403 as sent");
});

test("the OpenAPI document and the README list every operation", async () => {
  await using server = await startTestServer();
  const doc = (await server.api("GET", "/openapi.json")).body;
  assert.equal(doc.openapi, "3.1.0");
  const operations = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`))
    .sort();
  assert.deepEqual(operations, [
    "DELETE /clients/{id}",
    "DELETE /clients/{id}/uid",
    "DELETE /groups/{group}",
    "DELETE /groups/{group}/clients/{id}",
    "DELETE /groups/{group}/locks/{key}",
    "DELETE /groups/{group}/uids/{uid}",
    "DELETE /uids/{uid}",
    "GET /broadcast/history",
    "GET /clients",
    "GET /clients/count",
    "GET /clients/{id}",
    "GET /clients/{id}/online",
    "GET /groups",
    "GET /groups/count",
    "GET /groups/{group}/history",
    "GET /groups/{group}/locks",
    "GET /groups/{group}/members",
    "GET /groups/{group}/members/count",
    "GET /groups/{group}/settings",
    "GET /messages",
    "GET /messages/{id}",
    "GET /uids",
    "GET /uids/count",
    "GET /uids/{uid}/clients",
    "GET /uids/{uid}/history",
    "GET /uids/{uid}/online",
    "POST /batch",
    "POST /broadcast",
    "POST /clients/{id}/send",
    "POST /groups/{group}/send",
    "POST /uids/{uid}/send",
    "PUT /clients/{id}/uid",
    "PUT /groups/{group}/clients/{id}",
    "PUT /groups/{group}/settings",
    "PUT /groups/{group}/uids/{uid}",
  ]);
  const readme = readFileSync(new URL("./README.md", import.meta.url), "utf8");
  for (const op of operations) {
    const [method, path] = op.split(" ");
    assert.ok(readme.includes(`\`${method} /api${path}`), `README lacks ${method} /api${path}`);
  }
});
