/**
 * The backend SDK (sdk/server.ts), told as a backend uses it, against a real server on a random
 * port: it calls exactly the operations of /api/openapi.json, each answer is what the document
 * declares, sends land (200, 202, 404), failures arrive as typed errors, and a send retried after
 * a 503, a reset or a 429 reuses its Idempotency-Key, so a tab gets the message once.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { startTestServer, type TestClient, type TestServer } from "../testkit.ts";
import {
  API_PREFIX,
  ConflictError,
  DenoPusher,
  DenoPusherError,
  type DenoPusherOptions,
  type Fetch,
  InvalidRequestError,
  KeyReusedError,
  NetworkError,
  NotFoundError,
  OfflineError,
  type OperationId,
  OPERATIONS,
  RateLimitedError,
  type RetryEvent,
  SEND_ROUTE,
  TooLargeError,
  UnauthorizedError,
  UnavailableError,
} from "./server.ts";

// deno-lint-ignore no-explicit-any -- the document is JSON; each check reads the parts it needs
type Doc = any;

/** /api/openapi.json of `server`. */
async function fetchDoc(server: TestServer, apiKey?: string): Promise<Doc> {
  const headers: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
  const res = await fetch(`${server.url}${API_PREFIX}/openapi.json`, { headers });
  assert.equal(res.status, 200);
  return await res.json();
}

/** Every operation of the document: operationId → method and templated path. */
function documentOperations(doc: Doc): Map<string, { method: string; path: string }> {
  const operations = new Map<string, { method: string; path: string }>();
  for (const [path, methods] of Object.entries(doc.paths as Record<string, Doc>)) {
    for (const [method, op] of Object.entries(methods as Record<string, Doc>)) {
      operations.set(op.operationId, { method: method.toUpperCase(), path });
    }
  }
  return operations;
}

/**
 * The document's operation a request path (under /api) is, or undefined: a literal segment wins
 * over a `{param}` one, as the server's routes do (`/clients/count` is not `/clients/{id}`).
 */
function operationOf(doc: Doc, method: string, path: string): string | undefined {
  const candidates = [...documentOperations(doc)].filter(([, op]) => {
    if (op.method !== method) return false;
    const pattern = op.path.replace(/\{\w+\}/g, "[^/]+");
    return new RegExp(`^${pattern}$`).test(path);
  });
  candidates.sort(([, a], [, b]) => a.path.split("{").length - b.path.split("{").length);
  return candidates[0]?.[0];
}

/**
 * Where `value` departs from `schema` (JSON Schema as the document writes it: $ref, anyOf, type,
 * enum, properties, required, items). Strict: a field the schema does not name is a problem too,
 * so a field the server answers and the document (and so the SDK's types) misses is caught.
 */
function departures(doc: Doc, schema: Doc, value: unknown, at: string): string[] {
  if (schema.$ref) {
    return departures(doc, doc.components.schemas[schema.$ref.split("/").pop()], value, at);
  }
  if (schema.anyOf) {
    const each = schema.anyOf.map((s: Doc) => departures(doc, s, value, at));
    return each.some((d: string[]) => d.length === 0) ? [] : each.flat();
  }
  const problems: string[] = [];
  if (schema.type !== undefined) {
    const types: string[] = [schema.type].flat();
    const type = value === null
      ? "null"
      : Array.isArray(value)
      ? "array"
      : Number.isInteger(value)
      ? "integer"
      : typeof value;
    const ok = types.includes(type) || (type === "integer" && types.includes("number"));
    if (!ok) return [`${at}: ${JSON.stringify(value)} is not ${types.join(" or ")}`];
  }
  if (schema.enum && !schema.enum.includes(value)) {
    problems.push(`${at}: ${JSON.stringify(value)} is not one of ${schema.enum}`);
  }
  if (schema.properties && typeof value === "object" && value !== null) {
    const record = value as Record<string, unknown>;
    for (const key of schema.required ?? []) {
      if (!(key in record)) problems.push(`${at}.${key} is required`);
    }
    for (const [key, field] of Object.entries(record)) {
      const declared = schema.properties[key];
      if (declared) problems.push(...departures(doc, declared, field, `${at}.${key}`));
      // The document tells of `duplicate` in the Idempotency-Key header, not in the schemas.
      else if (!(key === "duplicate" && field === true)) problems.push(`${at}.${key} undeclared`);
    }
  }
  if (schema.items && Array.isArray(value)) {
    value.forEach((item, i) =>
      problems.push(...departures(doc, schema.items, item, `${at}[${i}]`))
    );
  }
  return problems;
}

/** One request the SDK made, as a recording fetch saw it. */
interface Seen {
  method: string;
  /** The path under the base URL, and the query. */
  path: string;
  query: string;
  headers: Headers;
  body: string | undefined;
  /** The document's operation it is; undefined for /send and for anything undeclared. */
  operation?: string;
}

/**
 * A fetch for the SDK that records every request and checks each /api answer against the schema
 * the document declares for its operation and status; `problems` lists what departed.
 */
function checkingFetch(doc: Doc, base: string) {
  const seen: Seen[] = [];
  const problems: string[] = [];
  const fetcher: Fetch = async (url, init) => {
    const method = init.method ?? "GET";
    const path = url.pathname.slice(new URL(base).pathname.replace(/\/$/, "").length);
    const api = path.startsWith(`${API_PREFIX}/`) ? path.slice(API_PREFIX.length) : undefined;
    const operation = api === undefined ? undefined : operationOf(doc, method, api);
    const headers = new Headers(init.headers);
    seen.push({ method, path, query: url.search, headers, body: init.body as string, operation });
    const res = await fetch(url, init);
    if (api === undefined) return res;
    const what = `${method} ${path} ${res.status}`;
    if (!operation) {
      problems.push(`${what}: no operation of the document`);
      return res;
    }
    const { path: template } = documentOperations(doc).get(operation)!;
    const declared = doc.paths[template][method.toLowerCase()].responses[String(res.status)];
    if (!declared) problems.push(`${what}: ${operation} does not declare ${res.status}`);
    else {
      const body = await res.clone().json();
      const schema = declared.content["application/json"].schema;
      problems.push(...departures(doc, schema, body, `${operation} ${res.status}`));
    }
    return res;
  };
  return { fetch: fetcher, seen, problems };
}

/** The SDK on `server`, with a fetch that checks every answer against the document. */
async function sdkOn(server: TestServer, options: DenoPusherOptions = {}) {
  const doc = await fetchDoc(server, options.apiKey);
  const checked = checkingFetch(doc, server.url);
  const pusher = new DenoPusher(server.url, { fetch: checked.fetch, ...options });
  return { pusher, doc, ...checked };
}

/** The next frame of `tab`, which must be a message: its id and data. */
async function nextMessage(tab: TestClient): Promise<{ id: unknown; data: unknown }> {
  const frame = await tab.nextJson();
  assert.equal(frame.type, "message", JSON.stringify(frame));
  return { id: frame.id, data: frame.data };
}

/** `promise`'s rejection, which must be a DenoPusherError of `type`. */
async function refusal<E extends DenoPusherError>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => E,
): Promise<E> {
  const err = await promise.then(
    (value) => assert.fail(`expected ${type.name}, got ${JSON.stringify(value)}`),
    (err: unknown) => err,
  );
  assert.ok(err instanceof type, `expected ${type.name}, got ${err}`);
  return err;
}

test("the SDK's table of operations is the OpenAPI document's, and each has its method", async () => {
  await using server = await startTestServer();
  const doc = await fetchDoc(server);
  assert.equal(doc.servers[0].url, API_PREFIX, "the document's server is where the SDK calls");
  const documented = Object.fromEntries(documentOperations(doc));
  const implemented = Object.fromEntries(
    Object.entries(OPERATIONS).map(([id, { method, path }]) => [id, { method, path }]),
  );
  assert.deepEqual(implemented, documented);
  const pusher = new DenoPusher(server.url);
  for (const id of Object.keys(OPERATIONS)) {
    assert.equal(typeof pusher[id as OperationId], "function", `DenoPusher.${id}`);
  }
  assert.equal(typeof pusher.send, "function");
  assert.equal(doc.paths[SEND_ROUTE.path], undefined, "/send lives outside /api and its document");
});

test("every request the SDK makes is an operation of the document, and together they are all of them", async () => {
  await using server = await startTestServer();
  const doc = await fetchDoc(server);
  const seen: Seen[] = [];
  // Answers every request with an empty success: this story is about the requests only.
  const recording: Fetch = (url, init) => {
    seen.push({
      method: init.method ?? "GET",
      path: url.pathname,
      query: url.search,
      headers: new Headers(init.headers),
      body: init.body as string | undefined,
    });
    return Promise.resolve(Response.json({}));
  };
  const p = new DenoPusher("http://backend.test/pusher/", { fetch: recording, apiKey: "k" });
  await p.send("u 1", "hi");
  await p.broadcast("hi");
  await p.publishBatch([{ uid: "u", message: "a" }, { broadcast: true, message: "b" }]);
  await p.listClients({ offset: 10, limit: 5 });
  await p.countClients();
  await p.getClient("c/1");
  await p.closeClient("c");
  await p.isClientOnline("c");
  await p.sendToClient("c", "hi");
  await p.bindUid("c", "u");
  await p.unbindUid("c");
  await p.listUids();
  await p.countUids();
  await p.isUidOnline("u");
  await p.listUidClients("u", { limit: 2 });
  await p.sendToUid("ü", "hi");
  await p.disconnectUid("u");
  await p.uidHistory("u", { since: 4, limit: 10 });
  await p.listGroups();
  await p.countGroups();
  await p.sendToGroup("g", "hi");
  await p.listGroupMembers("g");
  await p.countGroupMembers("g");
  await p.dissolveGroup("g");
  await p.joinGroupByClient("g", "c");
  await p.leaveGroupByClient("g", "c");
  await p.joinGroupByUid("g", "u");
  await p.leaveGroupByUid("g", "u");
  await p.getGroupSettings("g");
  await p.setGroupSettings("g", null);
  await p.listGroupLocks("g");
  await p.breakGroupLock("g", "field-3");
  await p.groupHistory("g");
  await p.broadcastHistory({ since: 7 });
  await p.listMessages({ uid: "u", before: 9 });
  await p.getMessage(42);

  const [send, ...api] = seen;
  const prefix = `/pusher${API_PREFIX}`;
  assert.deepEqual([send.method, send.path], [SEND_ROUTE.method, "/pusher/send"]);
  assert.deepEqual(JSON.parse(send.body!), { uid: "u 1", message: "hi" });
  const covered = new Set<string>();
  for (const request of api) {
    assert.ok(request.path.startsWith(`${prefix}/`), request.path);
    const id = operationOf(doc, request.method, request.path.slice(prefix.length));
    assert.ok(id, `${request.method} ${request.path} is no operation of the document`);
    covered.add(id);
    assert.equal(request.headers.get("authorization"), "Bearer k");
    const isSend = "send" in OPERATIONS[id as OperationId];
    assert.equal(request.headers.has("idempotency-key"), isSend, `${id}'s Idempotency-Key`);
  }
  assert.deepEqual([...covered].sort(), [...documentOperations(doc).keys()].sort());
  assert.ok(send.headers.get("idempotency-key"), "/send carries a key too");

  // Parameters are escaped into their segment; queries carry only what was given.
  const at = (id: string) =>
    api.find((r) => operationOf(doc, r.method, r.path.slice(prefix.length)) === id)!;
  assert.equal(at("getClient").path, "/pusher/api/clients/c%2F1");
  assert.equal(at("sendToUid").path, "/pusher/api/uids/%C3%BC/send");
  assert.equal(at("listClients").query, "?offset=10&limit=5");
  assert.equal(at("listUids").query, "");
  assert.equal(at("uidHistory").query, "?since=4&limit=10");
  assert.equal(at("listMessages").query, "?uid=u&before=9");
  assert.deepEqual(JSON.parse(at("setGroupSettings").body!), { maxMembers: null });
  assert.deepEqual(JSON.parse(at("publishBatch").body!), {
    messages: [{ uid: "u", message: "a" }, { broadcast: true, message: "b" }],
  });
});

test("a backend sends to a uid, a client, a group and everyone, and the tab gets each message with its id", async () => {
  await using server = await startTestServer();
  const { pusher, problems } = await sdkOn(server);
  const ann = await server.connectAs("ann", { groups: ["room-1"] });

  const toUid = await pusher.sendToUid("ann", "to the uid");
  assert.deepEqual(toUid, { id: toUid.id, delivered: 1, connections: 1 });
  assert.deepEqual(await nextMessage(ann.client), { id: toUid.id, data: "to the uid" });

  const viaSend = await pusher.send("ann", "via /send");
  assert.deepEqual(viaSend, { id: viaSend.id, uid: "ann", delivered: 1 });
  assert.deepEqual(await nextMessage(ann.client), { id: viaSend.id, data: "via /send" });

  const toClient = await pusher.sendToClient(ann.id, "to the client");
  assert.deepEqual(toClient, { id: toClient.id, delivered: 1, connections: 1 });
  assert.deepEqual(await nextMessage(ann.client), { id: toClient.id, data: "to the client" });

  const toGroup = await pusher.sendToGroup("room-1", "to the room");
  assert.deepEqual(toGroup, { id: toGroup.id, delivered: 1, connections: 1 });
  assert.deepEqual(await nextMessage(ann.client), { id: toGroup.id, data: "to the room" });

  const toAll = await pusher.broadcast("to everyone");
  assert.deepEqual(toAll, { id: toAll.id, delivered: 1, connections: 1 });
  assert.deepEqual(await nextMessage(ann.client), { id: toAll.id, data: "to everyone" });

  // A group without members is a stream while history is kept: 200, with nobody to take it.
  const empty = await pusher.sendToGroup("nobody-here", "kept");
  assert.deepEqual(empty, { id: empty.id, delivered: 0, connections: 0 });

  const batch = await pusher.publishBatch([
    { uid: "ann", message: "b1" },
    { client: ann.id, message: "b2" },
    { group: "room-1", message: "b3" },
    { broadcast: true, message: "b4" },
    { uid: "offline", message: "b5" },
  ]);
  const ids = batch.results.map((r) => "id" in r ? r.id : undefined);
  assert.deepEqual(batch, {
    results: [
      { id: ids[0], delivered: 1, connections: 1 },
      { id: ids[1], delivered: 1, connections: 1 },
      { id: ids[2], delivered: 1, connections: 1 },
      { id: ids[3], delivered: 1, connections: 1 },
      { id: ids[4], delivered: 0, connections: 0 },
    ],
  });
  for (const [i, data] of ["b1", "b2", "b3", "b4"].entries()) {
    assert.deepEqual(await nextMessage(ann.client), { id: ids[i], data });
  }
  assert.deepEqual(problems, []);
});

test("a send to an offline uid is an OfflineError with the message's id, or 202 queued with the mailbox", async () => {
  await using server = await startTestServer({ historySize: 0 });
  const { pusher, problems } = await sdkOn(server);

  const offline = await refusal(pusher.sendToUid("bob", "hello?"), OfflineError);
  assert.equal(offline.kind, "offline");
  assert.equal(offline.status, 404);
  assert.equal(offline.message, "client not found: bob");
  assert.equal(typeof offline.id, "number");
  assert.ok(offline instanceof NotFoundError, "an offline target is a 404 like any other");

  const viaSend = await refusal(pusher.send("bob", "hello?"), OfflineError);
  assert.deepEqual([viaSend.id > offline.id, viaSend.uid], [true, "bob"]);
  assert.deepEqual(viaSend.body, { error: "client not found: bob", id: viaSend.id, uid: "bob" });

  const group = await refusal(pusher.sendToGroup("room-9", "anyone?"), OfflineError);
  assert.equal(group.message, "group not found: room-9");
  const client = await refusal(pusher.sendToClient("gone", "hi"), OfflineError);
  assert.equal(client.message, "client not found: gone");
  assert.deepEqual(problems, []);

  await using mailbox = await startTestServer({ offlineTtl: 60 });
  const sdk = await sdkOn(mailbox);
  const queued = await sdk.pusher.sendToUid("bob", "for later");
  assert.deepEqual(queued, { id: queued.id, delivered: 0, connections: 0, queued: true });
  const queuedViaSend = await sdk.pusher.send("bob", "and this");
  assert.deepEqual(queuedViaSend, { id: queuedViaSend.id, uid: "bob", delivered: 0, queued: true });
  const bob = await mailbox.connectAs("bob");
  assert.deepEqual(await nextMessage(bob.client), { id: queued.id, data: "for later" });
  assert.deepEqual(await nextMessage(bob.client), { id: queuedViaSend.id, data: "and this" });
  assert.deepEqual(sdk.problems, []);
});

test("a backend looks up, moves, groups, closes and logs out connections", async () => {
  await using server = await startTestServer();
  const { pusher, problems } = await sdkOn(server);
  const ann = await server.connectAs("ann", { info: { name: "Ann" } });
  const bob = await server.connectAs("bob");

  assert.deepEqual(await pusher.countClients(), { count: 2 });
  assert.deepEqual(await pusher.countUids(), { count: 2 });
  const annInfo = await pusher.getClient(ann.id);
  assert.deepEqual(annInfo, {
    id: ann.id,
    uid: "ann",
    groups: [],
    info: { name: "Ann" },
    format: "json",
    connectedAt: annInfo.connectedAt,
    queuedBytes: 0,
  });
  const clients = await pusher.listClients({ limit: 1 });
  assert.deepEqual([clients.items.length, clients.total, clients.next], [1, 2, 1]);
  assert.deepEqual((await pusher.listUids()).items.sort(), ["ann", "bob"]);
  assert.deepEqual(await pusher.isClientOnline(ann.id), { id: ann.id, online: true });
  assert.deepEqual(await pusher.isUidOnline("ann"), { uid: "ann", online: true, connections: 1 });
  assert.deepEqual(await pusher.isUidOnline("carol"), {
    uid: "carol",
    online: false,
    connections: 0,
  });
  assert.deepEqual((await pusher.listUidClients("ann")).items.map((c) => c.id), [ann.id]);

  // Groups: bob joins by client, ann by uid; settings bound the room.
  assert.deepEqual(await pusher.joinGroupByClient("room", bob.id), {
    group: "room",
    members: 1,
    changed: 1,
  });
  assert.deepEqual(await pusher.joinGroupByUid("room", "ann"), {
    group: "room",
    members: 2,
    changed: 1,
  });
  assert.deepEqual(await pusher.listGroups(), { items: ["room"], total: 1, next: null });
  assert.deepEqual(await pusher.countGroups(), { count: 1 });
  assert.deepEqual(await pusher.countGroupMembers("room"), { members: 2, uids: 2 });
  const members = await pusher.listGroupMembers("room");
  assert.deepEqual(
    members.items.sort((a, b) => a.client < b.client ? -1 : 1),
    [{ client: ann.id, uid: "ann", info: { name: "Ann" } }, {
      client: bob.id,
      uid: "bob",
      info: null,
    }]
      .sort((a, b) => a.client < b.client ? -1 : 1),
  );
  assert.deepEqual(await pusher.setGroupSettings("room", 5), {
    group: "room",
    maxMembers: 5,
    own: true,
    members: 2,
  });
  assert.deepEqual(await pusher.getGroupSettings("room"), {
    group: "room",
    maxMembers: 5,
    own: true,
    members: 2,
  });
  assert.deepEqual(await pusher.leaveGroupByUid("room", "ann"), {
    group: "room",
    members: 1,
    changed: 1,
  });
  assert.deepEqual(await pusher.leaveGroupByClient("room", bob.id), {
    group: "room",
    members: 0,
    changed: 1,
  });
  await pusher.joinGroupByClient("room", bob.id);
  assert.deepEqual(await pusher.dissolveGroup("room"), { group: "room", members: 0, changed: 1 });

  // Rebinding moves the connection to another uid; unbinding leaves it without one.
  const rebound = await pusher.bindUid(bob.id, "robert");
  assert.equal(rebound.uid, "robert");
  const unbound = await pusher.unbindUid(bob.id);
  assert.deepEqual([unbound.id, unbound.uid], [bob.id, null]);

  // Closing a client, and logging a uid out: each socket gets 4009.
  assert.deepEqual(await pusher.closeClient(bob.id), { closed: 1 });
  assert.equal((await bob.client.closed).code, 4009);
  assert.deepEqual(await pusher.disconnectUid("ann"), { closed: 1 });
  assert.deepEqual(await ann.client.closed, { code: 4009, reason: "logged out" });
  assert.deepEqual(problems, []);
});

test("a backend reads history, a message's fate and a room's locks", async () => {
  await using server = await startTestServer({ messageLogger: "sqlite" });
  const { pusher, problems } = await sdkOn(server);
  const ann = await server.connectAs("ann", { groups: ["room"] });

  const toAnn = await pusher.sendToUid("ann", "one");
  const toRoom = await pusher.sendToGroup("room", "two");
  const toAll = await pusher.broadcast("three");
  for (const { id } of [toAnn, toRoom, toAll]) assert.equal((await nextMessage(ann.client)).id, id);

  const history = await pusher.uidHistory("ann");
  assert.deepEqual(history.items.map(({ id, data }) => ({ id, data })), [
    { id: toAnn.id, data: "one" },
  ]);
  assert.deepEqual([typeof history.recovered, history.next], ["boolean", null]);
  assert.deepEqual(
    (await pusher.groupHistory("room", { since: 0, limit: 1 })).items.map((i) => i.data),
    ["two"],
  );
  assert.deepEqual((await pusher.broadcastHistory({ since: toAll.id })).items, []);

  const logged = await pusher.getMessage(toAnn.id);
  assert.deepEqual(logged, {
    id: toAnn.id,
    target: "uid:ann",
    uid: "ann",
    message: "one",
    status: logged.status,
    written: 1,
    acked: 0,
    ts: logged.ts,
    updated: logged.updated,
  });
  const latest = await pusher.listMessages({ limit: 2 });
  assert.deepEqual([latest.items.map((m) => m.id), latest.next], [
    [toAll.id, toRoom.id],
    toRoom.id,
  ]);
  const older = await pusher.listMessages({ before: latest.next!, limit: 2 });
  assert.deepEqual([older.items.map((m) => m.id), older.next], [[toAnn.id], null]);
  const anns = await pusher.listMessages({ uid: "ann" });
  assert.deepEqual(anns.items.map(({ id, target }) => ({ id, target })), [
    { id: toAnn.id, target: "uid:ann" },
  ]);
  const unknown = await refusal(pusher.getMessage(toAll.id + 100), NotFoundError);
  assert.equal(unknown.message, `message not found: ${toAll.id + 100}`);

  ann.client.ws.send(JSON.stringify({ type: "lock", group: "room", key: "field-3", ref: 1 }));
  assert.equal((await ann.client.nextJson()).type, "locked");
  assert.deepEqual(await pusher.listGroupLocks("room"), {
    items: [{ key: "field-3", holder: { uid: "ann", client: ann.id }, expiresAt: null }],
  });
  assert.deepEqual(await pusher.breakGroupLock("room", "field-3"), {
    group: "room",
    key: "field-3",
    released: true,
  });
  const none = await refusal(pusher.breakGroupLock("room", "field-3"), NotFoundError);
  assert.deepEqual([none.kind, none.message], ["not_found", "lock not found: field-3"]);
  assert.deepEqual(problems, []);

  await using noHistory = await startTestServer({ historySize: 0 });
  const off = await refusal(new DenoPusher(noHistory.url).uidHistory("ann"), NotFoundError);
  assert.equal(off.message, "no history is kept (HISTORY_SIZE=0)");
});

test("what the server refuses arrives as a typed error carrying the server's own words", async () => {
  await using server = await startTestServer({ maxMessageBytes: 8 });
  const { pusher, problems } = await sdkOn(server);

  const invalid = await refusal(pusher.listClients({ limit: 0 }), InvalidRequestError);
  assert.deepEqual([invalid.status, invalid.kind], [400, "invalid"]);
  assert.equal(invalid.message, "limit must be 1 to 1000");
  assert.ok(Array.isArray(invalid.issues) && invalid.issues.length > 0, "zod's issues");
  assert.deepEqual([invalid.operation, invalid.method], ["listClients", "GET"]);
  assert.equal(invalid.url, `${server.url}/api/clients?limit=0`);

  const missing = await refusal(pusher.getClient("nobody"), NotFoundError);
  assert.deepEqual([missing.status, missing.kind], [404, "not_found"]);
  assert.equal(missing.message, "client not found: nobody");
  assert.ok(!(missing instanceof OfflineError), "no message was made: not an offline send");

  const big = await refusal(pusher.broadcast("123456789"), TooLargeError);
  assert.deepEqual([big.status, big.kind], [413, "too_large"]);
  assert.equal(big.message, "message is 9 bytes; the limit is 8 (MAX_MESSAGE_BYTES)");
  const viaSend = await refusal(pusher.send("ann", "123456789"), TooLargeError);
  assert.equal(viaSend.message, "message is 9 bytes; the limit is 8 (MAX_MESSAGE_BYTES)");

  // A batch refuses an oversized message on its own line, not the whole request.
  const batch = await pusher.publishBatch([{ broadcast: true, message: "123456789" }]);
  assert.deepEqual(batch, {
    results: [{ error: "message is 9 bytes; the limit is 8 (MAX_MESSAGE_BYTES)" }],
  });

  // 409: the room holds one connection, and it has it.
  const ann = await server.connectAs("ann");
  const bob = await server.connectAs("bob");
  await pusher.setGroupSettings("room", 1);
  await pusher.joinGroupByClient("room", ann.id);
  const full = await refusal(pusher.joinGroupByClient("room", bob.id), ConflictError);
  assert.deepEqual([full.status, full.kind], [409, "conflict"]);
  assert.equal(full.message, "group is full: room holds 1 of 1 members");

  // 422: a key is for one message.
  await pusher.broadcast("first", { idempotencyKey: "order-1" });
  const reused = await refusal(
    pusher.broadcast("second", { idempotencyKey: "order-1" }),
    KeyReusedError,
  );
  assert.deepEqual([reused.status, reused.kind], [422, "key_reused"]);
  assert.match(reused.message, /use a new key for a new message/);
  assert.deepEqual(problems, []);
});

test("with API_KEYS set, the SDK needs one of the keys, and sends it as the server expects", async () => {
  await using server = await startTestServer({ apiKeys: ["key-one", "key-two"] });
  const keyless = new DenoPusher(server.url);
  const none = await refusal(keyless.countUids(), UnauthorizedError);
  assert.deepEqual([none.status, none.kind], [401, "unauthorized"]);
  assert.match(none.message, /^\/api\/uids\/count needs an API key: send one of API_KEYS/);
  const noneOnSend = await refusal(keyless.send("ann", "hi"), UnauthorizedError);
  assert.match(noneOnSend.message, /^\/send needs an API key/);

  const wrongKey = new DenoPusher(server.url, { apiKey: "nope" });
  const wrong = await refusal(wrongKey.countUids(), UnauthorizedError);
  assert.equal(wrong.message, "API key invalid: the key sent is not one of API_KEYS");

  const { pusher, problems } = await sdkOn(server, { apiKey: "key-two" });
  assert.deepEqual(await pusher.countUids(), { count: 0 });
  const ann = await server.connectAs("ann");
  const sent = await pusher.send("ann", "with a key");
  assert.deepEqual(await nextMessage(ann.client), { id: sent.id, data: "with a key" });
  assert.deepEqual(problems, []);
});

/** What the proxy does with one request. */
type Fault =
  /** Passes it on and answers as the server did. */
  | "forward"
  /** Answers 503 without passing it on. */
  | "503"
  /** Passes it on, then answers 503 in place of the server's answer (a gateway that failed). */
  | "503-after"
  /** Passes it on, then drops the connection without an answer. */
  | "reset-after"
  /** Passes it on, then never answers (until the proxy closes). */
  | "hang-after"
  /** Answers 429 with `Retry-After: <seconds>` without passing it on. */
  | { status: 429; retryAfter: string };

/** One request through the proxy, and the server's answer when it was passed on. */
interface Proxied {
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  upstream?: { status: number; body: Record<string, unknown> };
}

/**
 * A proxy in front of `server` that treats its nth request (from 0) as `plan(n)` says: a network
 * between backend and server that fails in the ways the SDK retries.
 */
async function faultyProxy(server: TestServer, plan: (n: number) => Fault) {
  const requests: Proxied[] = [];
  const proxy = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const seen: Proxied = {
      method: req.method!,
      path: req.url!,
      idempotencyKey: req.headers["idempotency-key"] as string | undefined,
    };
    const fault = plan(requests.length);
    requests.push(seen);
    const answer = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(body));
    };
    if (fault === "503") return answer(503, { error: "proxy: the server is restarting" });
    if (typeof fault === "object") {
      return answer(429, { error: "proxy: slow down" }, { "retry-after": fault.retryAfter });
    }
    const headers: Record<string, string> = {};
    for (const name of ["authorization", "content-type", "idempotency-key", "x-api-key"]) {
      const value = req.headers[name];
      if (typeof value === "string") headers[name] = value;
    }
    const body = Buffer.concat(chunks);
    const upstream = await fetch(`${server.url}${req.url}`, {
      method: req.method,
      headers,
      body: body.length > 0 ? body : undefined,
    });
    seen.upstream = { status: upstream.status, body: await upstream.json() };
    if (fault === "503-after") return answer(503, { error: "proxy: upstream timed out" });
    if (fault === "reset-after") return void req.socket.destroy();
    if (fault === "hang-after") return;
    answer(seen.upstream.status, seen.upstream.body);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const { port } = proxy.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async [Symbol.asyncDispose]() {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

/** Quick retries, so that a story with several does not dawdle; the SDK's defaults are longer. */
const QUICK = { baseDelayMs: 5, maxDelayMs: 2000 };

/** Each way a pushed send can fail to be answered, and the error the SDK retries it on. */
const LOST_ANSWERS = [
  { fault: "503-after", what: "a 503", error: UnavailableError },
  { fault: "reset-after", what: "a dropped connection", error: NetworkError },
  { fault: "hang-after", what: "no answer within timeoutMs", error: NetworkError },
] as const;

for (const { fault, what, error } of LOST_ANSWERS) {
  test(`a send pushed but answered with ${what} is retried with the same Idempotency-Key, and the tab gets it once`, async () => {
    await using server = await startTestServer();
    await using proxy = await faultyProxy(server, (n) => n === 0 ? fault : "forward");
    const checked = checkingFetch(await fetchDoc(server), proxy.url);
    const retries: RetryEvent[] = [];
    const pusher = new DenoPusher(proxy.url, {
      retry: QUICK,
      // Long enough for any answer on loopback; only the hanging proxy outlasts it.
      timeoutMs: 1000,
      onRetry: (e) => retries.push(e),
      fetch: checked.fetch,
    });
    const ann = await server.connectAs("ann");

    const result = await pusher.sendToUid("ann", "exactly once");
    const [first, retry] = proxy.requests;
    assert.equal(proxy.requests.length, 2);
    assert.equal(first.upstream?.status, 200, "the first try reached the server and pushed");
    assert.ok(first.idempotencyKey, "a key was made for the send");
    assert.equal(retry.idempotencyKey, first.idempotencyKey, "the retry reused it");
    assert.deepEqual(result, { ...first.upstream!.body, duplicate: true });
    assert.equal(retries.length, 1);
    assert.ok(retries[0].error instanceof error, String(retries[0].error));
    assert.equal(retries[0].idempotencyKey, first.idempotencyKey);

    // The next frame after the retried message is the next send: the retry pushed nothing.
    const next = await pusher.sendToUid("ann", "the next one");
    assert.deepEqual(await nextMessage(ann.client), { id: result.id, data: "exactly once" });
    assert.deepEqual(await nextMessage(ann.client), { id: next.id, data: "the next one" });
    assert.deepEqual(checked.problems, []);
  });
}

test("/send retried after a 503 keeps the caller's own Idempotency-Key", async () => {
  await using server = await startTestServer();
  await using proxy = await faultyProxy(server, (n) => n === 0 ? "503-after" : "forward");
  const pusher = new DenoPusher(proxy.url, { retry: QUICK });
  const ann = await server.connectAs("ann");
  const result = await pusher.send("ann", "order shipped", { idempotencyKey: "order-42" });
  assert.deepEqual(proxy.requests.map((r) => r.idempotencyKey), ["order-42", "order-42"]);
  assert.deepEqual(result, { id: result.id, uid: "ann", delivered: 1, duplicate: true });
  const next = await pusher.send("ann", "next");
  assert.deepEqual(await nextMessage(ann.client), { id: result.id, data: "order shipped" });
  assert.deepEqual(await nextMessage(ann.client), { id: next.id, data: "next" });
});

test("a 429 is retried after its Retry-After, and a Retry-After past maxDelayMs is handed back", async () => {
  await using server = await startTestServer();
  await using proxy = await faultyProxy(
    server,
    (n) => n === 0 ? { status: 429, retryAfter: "1" } : "forward",
  );
  const retries: RetryEvent[] = [];
  const pusher = new DenoPusher(proxy.url, { retry: QUICK, onRetry: (e) => retries.push(e) });
  const ann = await server.connectAs("ann");
  const result = await pusher.sendToUid("ann", "after a pause");
  assert.deepEqual(result, { id: result.id, delivered: 1, connections: 1 });
  assert.equal(retries.length, 1);
  assert.ok(retries[0].error instanceof RateLimitedError);
  assert.deepEqual([retries[0].error.retryAfter, retries[0].delayMs], [1, 1000]);
  assert.deepEqual(await nextMessage(ann.client), { id: result.id, data: "after a pause" });

  await using slow = await faultyProxy(server, () => ({ status: 429, retryAfter: "3600" }));
  const impatient = new DenoPusher(slow.url, { retry: QUICK });
  const limited = await refusal(impatient.countUids(), RateLimitedError);
  assert.deepEqual([limited.kind, limited.retryAfter, limited.message], [
    "rate_limited",
    3600,
    "proxy: slow down",
  ]);
  assert.equal(slow.requests.length, 1, "not retried: the wait is the caller's to decide");
});

test("a GET is retried on a 503, a PUT or DELETE never, and retries stop after `attempts`", async () => {
  await using server = await startTestServer();
  await using flaky = await faultyProxy(server, (n) => n === 0 ? "503" : "forward");
  const pusher = new DenoPusher(flaky.url, { retry: QUICK });
  assert.deepEqual(await pusher.countClients(), { count: 0 });
  assert.equal(flaky.requests.length, 2);

  await using down = await faultyProxy(server, () => "503");
  const retries: RetryEvent[] = [];
  const patient = new DenoPusher(down.url, {
    retry: { ...QUICK, attempts: 3 },
    onRetry: (e) => retries.push(e),
  });
  const unsafe = await refusal(patient.disconnectUid("ann"), UnavailableError);
  assert.deepEqual([unsafe.status, unsafe.kind], [503, "unavailable"]);
  assert.equal(unsafe.message, "proxy: the server is restarting");
  assert.equal(down.requests.length, 1, "a DELETE is not retried");

  await refusal(patient.broadcast("hi"), UnavailableError);
  assert.equal(down.requests.length, 1 + 3, "a send is tried `attempts` times");
  assert.deepEqual(retries.map((r) => r.attempt), [1, 2]);
  const keys = new Set(down.requests.slice(1).map((r) => r.idempotencyKey));
  assert.equal(keys.size, 1, "every try of the send carried the same key");
});

test("aborting a call stops its retries at once, with the signal's reason", async () => {
  await using server = await startTestServer();
  await using down = await faultyProxy(server, () => "503");
  const controller = new AbortController();
  const reason = new Error("the backend is shutting down");
  const pusher = new DenoPusher(down.url, {
    retry: { baseDelayMs: 60_000, maxDelayMs: 60_000 },
    onRetry: () => controller.abort(reason),
  });
  const err = await pusher.broadcast("hi", { signal: controller.signal }).catch((e) => e);
  assert.equal(err, reason);
  assert.equal(down.requests.length, 1);
});
