/**
 * The hub's indexes stay true to the real connections, whatever happens in whatever order:
 * connects, drops, kicks, logouts, joins, leaves, binds, unbinds and dissolves, run against a real
 * server with real sockets. The first property applies them one after another and checks every
 * count and list against a model of what should be connected; the second issues them all at once,
 * from several sockets and API calls in flight together, and checks that every index agrees with
 * the connections that are really open.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { eventually, startTestServer, type TestClient, type TestServer } from "./testkit.ts";

const UIDS = ["u0", "u1", "u2"];
const GROUPS = ["g0", "g1", "g2"];

type Op =
  | { op: "connect"; uid: string; groups: string[] }
  | { op: "drop" | "kick" | "unbind"; at: number }
  | { op: "join" | "leave"; at: number; group: string }
  | { op: "bind"; at: number; uid: string }
  | { op: "logout"; uid: string }
  | { op: "joinUid" | "leaveUid"; uid: string; group: string }
  | { op: "dissolve"; group: string };

const uid = fc.constantFrom(...UIDS);
const group = fc.constantFrom(...GROUPS);
const at = fc.nat(20);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant("connect" as const),
    uid,
    groups: fc.uniqueArray(group, { maxLength: 2 }),
  }),
  fc.record({ op: fc.constantFrom("drop" as const, "kick" as const, "unbind" as const), at }),
  fc.record({ op: fc.constantFrom("join" as const, "leave" as const), at, group }),
  fc.record({ op: fc.constant("bind" as const), at, uid }),
  fc.record({ op: fc.constant("logout" as const), uid }),
  fc.record({ op: fc.constantFrom("joinUid" as const, "leaveUid" as const), uid, group }),
  fc.record({ op: fc.constant("dissolve" as const), group }),
);

/** What the server should hold: each live connection's uid and groups. */
interface Conn {
  id: string;
  uid: string | undefined;
  groups: Set<string>;
  client: TestClient;
}

async function apply(server: TestServer, live: Conn[], op: Op): Promise<void> {
  const pick = (i: number) => live[i % live.length];
  const gone = async (conns: Conn[]) => {
    for (const c of conns) {
      await c.client.closed;
      live.splice(live.indexOf(c), 1);
    }
  };
  switch (op.op) {
    case "connect": {
      const { client, id } = await server.connectAs(op.uid, { groups: op.groups });
      live.push({ id, uid: op.uid, groups: new Set(op.groups), client });
      return;
    }
    case "drop": {
      if (live.length === 0) return;
      const c = pick(op.at);
      c.client.ws.close();
      await gone([c]);
      await eventually(() => !server.hub.client(c.id), 5000, "the server to see the drop");
      return;
    }
    case "kick": {
      if (live.length === 0) return;
      const c = pick(op.at);
      assert.equal((await server.api("DELETE", `/clients/${c.id}`)).status, 200);
      await gone([c]);
      return;
    }
    case "logout": {
      const mine = live.filter((c) => c.uid === op.uid);
      const res = await server.api("DELETE", `/uids/${op.uid}`);
      assert.equal(res.body.closed, mine.length);
      await gone(mine);
      return;
    }
    case "join":
    case "leave": {
      if (live.length === 0) return;
      const c = pick(op.at);
      const method = op.op === "join" ? "PUT" : "DELETE";
      assert.equal((await server.api(method, `/groups/${op.group}/clients/${c.id}`)).status, 200);
      if (op.op === "join") c.groups.add(op.group);
      else c.groups.delete(op.group);
      return;
    }
    case "joinUid":
    case "leaveUid": {
      const mine = live.filter((c) => c.uid === op.uid);
      const method = op.op === "joinUid" ? "PUT" : "DELETE";
      const res = await server.api(method, `/groups/${op.group}/uids/${op.uid}`);
      assert.equal(res.status, mine.length === 0 && method === "PUT" ? 404 : 200);
      for (const c of mine) {
        op.op === "joinUid" ? c.groups.add(op.group) : c.groups.delete(op.group);
      }
      return;
    }
    case "bind":
    case "unbind": {
      if (live.length === 0) return;
      const c = pick(op.at);
      const res = op.op === "bind"
        ? await server.api("PUT", `/clients/${c.id}/uid`, { uid: op.uid })
        : await server.api("DELETE", `/clients/${c.id}/uid`);
      assert.equal(res.status, 200);
      c.uid = op.op === "bind" ? op.uid : undefined;
      return;
    }
    case "dissolve": {
      const members = live.filter((c) => c.groups.has(op.group));
      const res = await server.api("DELETE", `/groups/${op.group}`);
      assert.equal(res.status, members.length === 0 ? 404 : 200);
      for (const c of members) c.groups.delete(op.group);
      return;
    }
  }
}

async function all<T>(server: TestServer, path: string): Promise<T[]> {
  const sep = path.includes("?") ? "&" : "?";
  const res = await server.api("GET", `${path}${sep}limit=1000`);
  assert.equal(res.status, 200, `${path}: ${JSON.stringify(res.body)}`);
  assert.equal(res.body.next, null);
  return res.body.items;
}

/** Every count and list the API offers, against the model. */
async function check(server: TestServer, live: Conn[]): Promise<void> {
  const sorted = (xs: Iterable<string>) => [...xs].sort();
  const ids = (xs: { id: string }[]) => sorted(xs.map((x) => x.id));
  assert.deepEqual(ids(await all(server, "/clients")), sorted(live.map((c) => c.id)));
  assert.equal((await server.api("GET", "/clients/count")).body.count, live.length);

  const uids = new Set(live.flatMap((c) => c.uid === undefined ? [] : [c.uid]));
  assert.deepEqual(sorted(await all<string>(server, "/uids")), sorted(uids));
  assert.equal((await server.api("GET", "/uids/count")).body.count, uids.size);
  for (const u of UIDS) {
    const expected = live.filter((c) => c.uid === u).map((c) => c.id);
    assert.deepEqual(ids(await all(server, `/uids/${u}/clients`)), sorted(expected), u);
  }

  const groups = new Set(live.flatMap((c) => [...c.groups]));
  assert.deepEqual(sorted(await all<string>(server, "/groups")), sorted(groups));
  assert.equal((await server.api("GET", "/groups/count")).body.count, groups.size);
  for (const g of GROUPS) {
    const members = live.filter((c) => c.groups.has(g));
    const listed = await server.api("GET", `/groups/${g}/members?limit=1000`);
    if (members.length === 0) {
      assert.equal(listed.status, 404, `${g} should be gone`);
      continue;
    }
    const shown = listed.body.items.map((m: { client: string; uid: string | null }) =>
      `${m.client}:${m.uid}`
    );
    assert.deepEqual(sorted(shown), sorted(members.map((c) => `${c.id}:${c.uid ?? null}`)), g);
    const count = (await server.api("GET", `/groups/${g}/members/count`)).body;
    const memberUids = new Set(members.flatMap((c) => c.uid === undefined ? [] : [c.uid]));
    assert.deepEqual(count, { members: members.length, uids: memberUids.size }, g);
  }
  for (const c of live) {
    const one = (await server.api("GET", `/clients/${c.id}`)).body;
    assert.deepEqual([one.uid, sorted(one.groups)], [c.uid ?? null, sorted(c.groups)], c.id);
  }
  assert.equal(await server.metric("connections"), live.length);
  assert.equal(await server.metric("users"), uids.size);
  assert.equal(await server.metric("pending"), 0);
}

test("every index matches the model after any sequence of operations", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
      await using server = await startTestServer();
      const live: Conn[] = [];
      try {
        for (const op of ops) await apply(server, live, op);
        await check(server, live);
      } finally {
        for (const c of live) await c.client[Symbol.asyncDispose]();
      }
      // Once everyone has gone, nothing is left behind in any index.
      await eventually(() => server.hub.connections === 0, 5000, "every socket to close");
      assert.deepEqual([server.hub.users, server.hub.groupCount, server.hub.pending], [0, 0, 0]);
    }),
    { numRuns: 100 },
  );
});

/** A connection made by the concurrent property, whatever has happened to it since. */
interface Made {
  id: string;
  client: TestClient;
}

/**
 * Issues `op` without waiting for any other operation. Its target may already be gone by the time
 * it arrives (a concurrent kick, logout or drop), so a 404 is a right answer; anything but the
 * documented statuses fails the test.
 */
async function issue(server: TestServer, made: Made[], op: Op): Promise<void> {
  const expect = async (method: string, path: string, body?: unknown) => {
    const res = await server.api(method, path, body);
    assert.ok([200, 404].includes(res.status), `${method} ${path}: ${res.status}`);
  };
  switch (op.op) {
    case "connect":
      made.push(await server.connectAs(op.uid, { groups: op.groups }));
      return;
    case "logout":
      return expect("DELETE", `/uids/${op.uid}`);
    case "joinUid":
      return expect("PUT", `/groups/${op.group}/uids/${op.uid}`);
    case "leaveUid":
      return expect("DELETE", `/groups/${op.group}/uids/${op.uid}`);
    case "dissolve":
      return expect("DELETE", `/groups/${op.group}`);
  }
  if (made.length === 0) return;
  const { id, client } = made[op.at % made.length];
  switch (op.op) {
    case "drop":
      return client.ws.close();
    case "kick":
      return expect("DELETE", `/clients/${id}`);
    case "join":
      return expect("PUT", `/groups/${op.group}/clients/${id}`);
    case "leave":
      return expect("DELETE", `/groups/${op.group}/clients/${id}`);
    case "bind":
      return expect("PUT", `/clients/${id}/uid`, { uid: op.uid });
    case "unbind":
      return expect("DELETE", `/clients/${id}/uid`);
  }
}

test("every index agrees with the open connections after operations issued all at once", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(opArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 3 }),
      async (waves) => {
        await using server = await startTestServer();
        const made: Made[] = [];
        try {
          // Each wave is issued in one go: every operation in it is in flight at once, over as
          // many sockets and HTTP requests.
          for (const wave of waves) await Promise.all(wave.map((op) => issue(server, made, op)));
          // Once the server has closed what it closed and seen what the clients closed, a socket
          // is open on the client's side exactly when the server still holds it.
          const open = (m: Made) => m.client.ws.readyState === WebSocket.OPEN;
          await eventually(
            () => made.every((m) => open(m) === (server.hub.client(m.id) !== undefined)),
            5000,
            "the server and the clients to agree on which sockets are open",
          );
          // Each open connection says which uid and groups it has; every list and count must
          // agree with those answers.
          const live: Conn[] = [];
          for (const m of made.filter(open)) {
            const one = await server.api("GET", `/clients/${m.id}`);
            assert.equal(one.status, 200, m.id);
            const { uid, groups } = one.body as { uid: string | null; groups: string[] };
            live.push({
              id: m.id,
              uid: uid ?? undefined,
              groups: new Set(groups),
              client: m.client,
            });
          }
          await check(server, live);
        } finally {
          for (const m of made) await m.client[Symbol.asyncDispose]();
        }
        await eventually(() => server.hub.connections === 0, 5000, "every socket to close");
        assert.deepEqual([server.hub.users, server.hub.groupCount, server.hub.pending], [0, 0, 0]);
      },
    ),
    { numRuns: 60 },
  );
});
