/**
 * A cluster on Redis, told against the program as users run it (main.ts on this runtime, or the
 * executable under `make test-bin`): three nodes with one REDIS_URL behave as one big node. A send
 * made on any node reaches the connections of every node, the counts are the cluster's, a tab that
 * comes back on another node resumes what it missed, a killed node leaves the counts, and while
 * Redis is down sends answer 503 and the sockets stay open.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ready, startCluster, type TestNode } from "./cluster_testkit.ts";
import {
  canMakeCertificates,
  findRedisServer,
  freePort,
  OPENSSL_MISSING,
  redisCommand,
  startRedis,
  testWithout,
  testWithoutRedis,
} from "./redis_testkit.ts";
import {
  connectClient,
  postJson,
  PROGRAM_SECRET,
  programToken as token,
  rawRequest,
  startProgram,
  stopProgram,
  type TestClient,
  until,
  within,
} from "./testkit.ts";

/** A json tab of `uid` on `node` with `claims`: the socket, its client id and its welcome. */
async function tab(node: TestNode, uid: string, claims: Record<string, unknown> = {}, since = "") {
  const client = await connectClient(
    `ws://127.0.0.1:${node.port}/ws?format=json${since}&token=${await token(uid, claims)}`,
  );
  const welcome = await client.nextJson();
  assert.equal(welcome.type, "welcome");
  return { client, id: welcome.client as string, welcome };
}

const get = async (node: TestNode, path: string) => await (await fetch(node.url + path)).json();
const post = (node: TestNode, path: string, body: Record<string, unknown>) =>
  postJson(node.port, path, body);

/** Waits until `node` counts `n` connections in the whole cluster. */
const counted = (node: TestNode, n: number) =>
  until(
    async () => (await get(node, "/api/clients/count")).count === n,
    `${n} connections counted on ${node.name}`,
  );

/** The data and id of the next message frame `client` gets. */
async function nextMessage(client: TestClient) {
  const frame = await client.nextJson();
  assert.equal(frame.type, "message", `a message, not ${JSON.stringify(frame)}`);
  return frame;
}

if (!findRedisServer()) {
  testWithoutRedis("the cluster stories");
} else {
  test("a send made on any node reaches every node's connections, for every target; counts are the cluster's", async () => {
    await using cluster = await startCluster(3);
    const [n0, n1, n2] = cluster.nodes;
    const ann = await tab(n1, "ann", { groups: ["g"] });
    const bob = await tab(n2, "bob", { groups: ["g"] });
    const cy = await tab(n0, "cy");
    for (const node of cluster.nodes) await counted(node, 3);

    // A uid on another node: 200, and it arrives.
    const toAnn = await post(n0, "/send", { uid: "ann", message: "to ann" });
    assert.deepEqual(toAnn, { status: 200, body: { id: toAnn.body.id, uid: "ann", delivered: 1 } });
    assert.deepEqual((await nextMessage(ann.client)).data, "to ann");

    // A group with members on two other nodes.
    const toG = await post(n0, "/api/groups/g/send", { message: "to g" });
    assert.deepEqual(toG.body, { id: toG.body.id, delivered: 2, connections: 2 });
    for (const t of [ann, bob]) {
      const m = await nextMessage(t.client);
      assert.deepEqual([m.id, m.data, m.group], [toG.body.id, "to g", "g"]);
    }

    // Everyone, from the third node.
    const toAll = await post(n2, "/api/broadcast", { message: "to all" });
    assert.equal(toAll.body.delivered, 3);
    for (const t of [ann, bob, cy]) assert.equal((await nextMessage(t.client)).data, "to all");

    // One connection by its client id, from a node it is not on.
    const toBob = await post(n1, `/api/clients/${bob.id}/send`, { message: "to bob's tab" });
    assert.equal(toBob.status, 200);
    assert.equal(toBob.body.delivered, 1);
    const m = await nextMessage(bob.client);
    assert.deepEqual([m.id, m.data], [toBob.body.id, "to bob's tab"]);

    // Ids increase across nodes, in the order the sends were made.
    const ids = [toAnn, toG, toAll, toBob].map((s) => s.body.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));

    // Nobody anywhere: 404, decided for the whole cluster.
    const nobody = await post(n2, "/send", { uid: "dee", message: "?" });
    assert.equal(nobody.status, 404);
    assert.equal(nobody.body.error, "client not found: dee");

    for (const node of cluster.nodes) {
      assert.equal((await get(node, "/api/uids/count")).count, 3, `uids on ${node.name}`);
      assert.equal((await get(node, "/api/groups/count")).count, 1, `groups on ${node.name}`);
      assert.deepEqual(await get(node, "/api/uids/bob/online"), {
        uid: "bob",
        online: true,
        connections: 1,
      });
    }
    // /metrics stays per node, and tells the cluster's size.
    const metrics = await (await fetch(`${n0.url}/metrics`)).text();
    assert.match(metrics, /^connections 1$/m);
    assert.match(metrics, /^cluster_nodes 3$/m);

    for (const t of [ann, bob, cy]) await t.client[Symbol.asyncDispose]();
    for (const node of cluster.nodes) await counted(node, 0);
  });

  test("clients talk across nodes: a publish frame reaches the room's members on other nodes, a send frame a uid there", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const talker = { groups: ["room-1"], publish: ["room-*"], send: ["*"] };
    const ann = await tab(n0, "ann", talker);
    const bob = await tab(n1, "bob", talker);
    for (const node of cluster.nodes) await counted(node, 2);

    ann.client.ws.send(JSON.stringify({ type: "publish", group: "room-1", data: "hi", ref: 1 }));
    const ack = await ann.client.nextJson();
    assert.deepEqual(ack, { type: "ack", ref: 1, id: ack.id });
    const hi = await nextMessage(bob.client);
    assert.deepEqual(
      [hi.id, hi.data, hi.group, hi.from],
      [ack.id, "hi", "room-1", { uid: "ann", client: ann.id }],
    );

    bob.client.ws.send(JSON.stringify({ type: "send", uid: "ann", data: "psst", ref: 2 }));
    const sent = await bob.client.nextJson();
    assert.deepEqual(sent, { type: "ack", ref: 2, id: sent.id, delivered: 1 });
    const psst = await nextMessage(ann.client);
    assert.deepEqual([psst.id, psst.data, psst.from], [sent.id, "psst", {
      uid: "bob",
      client: bob.id,
    }]);

    for (const t of [ann, bob]) await t.client[Symbol.asyncDispose]();
  });

  test("presence across nodes: joined snapshots, join and leave events, and presence frames count every node", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const talker = { subscribe: ["room-*"], publish: ["room-*"] };
    const ann = await tab(n0, "ann", { ...talker, info: { name: "Ann" } });
    const bob = await tab(n1, "bob", { ...talker, info: { name: "Bob" } });

    ann.client.ws.send(JSON.stringify({ type: "join", group: "room-1", ref: 1 }));
    assert.deepEqual(await ann.client.nextJson(), {
      type: "joined",
      ref: 1,
      group: "room-1",
      members: [{ uid: "ann", info: { name: "Ann" } }],
      locks: [],
    });
    bob.client.ws.send(JSON.stringify({ type: "join", group: "room-1", ref: 2 }));
    const joined = await bob.client.nextJson();
    assert.deepEqual(
      [joined.type, (joined.members as { uid: string }[]).map((m) => m.uid).toSorted()],
      ["joined", ["ann", "bob"]],
    );
    // Ann, on the other node, hears Bob come.
    assert.deepEqual(await ann.client.nextJson(), {
      type: "join",
      group: "room-1",
      uid: "bob",
      info: { name: "Bob" },
    });
    ann.client.ws.send(JSON.stringify({ type: "presence", group: "room-1", ref: 3 }));
    const presence = await ann.client.nextJson();
    assert.deepEqual(
      (presence.members as { uid: string; info: unknown }[]).toSorted((a, b) =>
        a.uid < b.uid ? -1 : 1
      ),
      [{ uid: "ann", info: { name: "Ann" } }, { uid: "bob", info: { name: "Bob" } }],
    );
    // A second tab of Bob's is no news; his last one leaving is.
    const bob2 = await tab(n0, "bob", { groups: ["room-1"] });
    // Each node tells the registry on its own connection: wait until Redis has the second tab.
    await until(
      async () => (await get(n1, "/api/uids/bob/online")).connections === 2,
      "bob's second tab counted",
    );
    bob.client.ws.send(JSON.stringify({ type: "leave", group: "room-1", ref: 4 }));
    assert.deepEqual(await bob.client.nextJson(), { type: "left", ref: 4, group: "room-1" });
    await bob2.client[Symbol.asyncDispose]();
    assert.deepEqual(await ann.client.nextJson(), { type: "leave", group: "room-1", uid: "bob" });
    for (const t of [ann, bob]) await t.client[Symbol.asyncDispose]();
  });

  test("locks hold across nodes: taken on one, refused and told on another, released by ttl, by closing and by the API", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const ann = await tab(n0, "ann", { groups: ["room-1"] });
    const bob = await tab(n1, "bob", { groups: ["room-1"] });
    await counted(n0, 2);
    const ask = async (t: { client: TestClient }, frame: Record<string, unknown>) => {
      t.client.ws.send(JSON.stringify(frame));
      return await t.client.nextJson();
    };

    assert.deepEqual(await ask(ann, { type: "lock", group: "room-1", key: "f1", ref: 1 }), {
      type: "locked",
      ref: 1,
      group: "room-1",
      key: "f1",
      expiresAt: null,
    });
    const annLock = { key: "f1", holder: { uid: "ann", client: ann.id }, expiresAt: null };
    assert.deepEqual(await bob.client.nextJson(), { type: "lock", group: "room-1", ...annLock });
    assert.deepEqual(await ask(bob, { type: "lock", group: "room-1", key: "f1", ref: 2 }), {
      type: "error",
      ref: 2,
      error: `f1 in room-1 is locked by ann (client ${ann.id})`,
    });
    assert.deepEqual(await get(n1, "/api/groups/room-1/locks"), { items: [annLock] });

    // A ttl: the holder's node releases it when it passes, and the other node hears it.
    const f2 = await ask(bob, { type: "lock", group: "room-1", key: "f2", ttl: 0.2, ref: 3 });
    assert.equal(f2.type, "locked");
    assert.equal((await ann.client.nextJson()).type, "lock");
    for (const t of [ann, bob]) {
      assert.deepEqual(await t.client.nextJson(), { type: "unlock", group: "room-1", key: "f2" });
    }

    // The API breaks a lock held on another node; its holder is told too.
    assert.equal(
      (await ask(bob, { type: "lock", group: "room-1", key: "f3", ref: 4 })).type,
      "locked",
    );
    assert.equal((await ann.client.nextJson()).key, "f3");
    const broken = await fetch(`${n0.url}/api/groups/room-1/locks/f3`, { method: "DELETE" });
    assert.deepEqual(await broken.json(), { group: "room-1", key: "f3", released: true });
    for (const t of [ann, bob]) {
      assert.deepEqual(await t.client.nextJson(), { type: "unlock", group: "room-1", key: "f3" });
    }

    // Ann's lock goes with her connection.
    await ann.client[Symbol.asyncDispose]();
    assert.deepEqual(await bob.client.nextJson(), { type: "unlock", group: "room-1", key: "f1" });
    assert.deepEqual(await get(n0, "/api/groups/room-1/locks"), { items: [] });
    await bob.client[Symbol.asyncDispose]();
  });

  test("limits hold cluster-wide: MAX_CONNECTIONS_PER_UID and MAX_GROUP_MEMBERS count every node", async () => {
    await using cluster = await startCluster(2, [
      "--max-connections-per-uid",
      "1",
      "--max-group-members",
      "1",
    ]);
    const [n0, n1] = cluster.nodes;
    const claims = { subscribe: ["room-*"] };
    const ann = await tab(n0, "ann", claims);
    await counted(n1, 1);
    const url = `ws://127.0.0.1:${n1.port}/ws?format=json&token=${await token("ann", claims)}`;
    await assert.rejects(connectClient(url), "a second connection of ann, on the other node");
    const metrics = await (await fetch(`${n1.url}/metrics`)).text();
    assert.match(metrics, /http_requests_total\{method="GET",route="\/ws",status="429"\} 1/);

    ann.client.ws.send(JSON.stringify({ type: "join", group: "room-1", ref: 1 }));
    assert.equal((await ann.client.nextJson()).type, "joined");
    const bob = await tab(n1, "bob", claims);
    await until(
      async () => (await get(n1, "/api/groups/room-1/members/count")).members === 1,
      "ann's membership counted",
    );
    bob.client.ws.send(JSON.stringify({ type: "join", group: "room-1", ref: 2 }));
    assert.deepEqual(await bob.client.nextJson(), {
      type: "error",
      ref: 2,
      error: "group is full",
    });

    // The API's join, made on the node that is not bob's, counts every node's members too.
    const refused = await fetch(`${n0.url}/api/groups/room-1/clients/${bob.id}`, { method: "PUT" });
    assert.deepEqual([refused.status, await refused.json()], [409, {
      error: "group is full: room-1 holds 1 of 1 members",
    }]);

    // A group's own bound, set on one node, holds on every node.
    const set = await fetch(`${n0.url}/api/groups/room-1/settings`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ maxMembers: 2 }),
    });
    assert.equal(set.status, 200);
    await until(
      async () => (await get(n1, "/api/groups/room-1/settings")).maxMembers === 2,
      "the bound told to the other node",
    );
    assert.deepEqual(await get(n1, "/api/groups/room-1/settings"), {
      group: "room-1",
      maxMembers: 2,
      own: true,
      members: 1,
    });
    bob.client.ws.send(JSON.stringify({ type: "join", group: "room-1", ref: 3 }));
    assert.equal((await bob.client.nextJson()).type, "joined");
    for (const t of [ann, bob]) await t.client[Symbol.asyncDispose]();
  });

  test("the mailbox is the cluster's: mailed once on whichever node the uid comes back to", async () => {
    await using cluster = await startCluster(2, ["--offline-ttl", "60"]);
    const [n0, n1] = cluster.nodes;
    const queued = await post(n0, "/send", { uid: "ann", message: "while away" });
    assert.deepEqual(queued, {
      status: 202,
      body: { id: queued.body.id, uid: "ann", delivered: 0, queued: true },
    });
    const first = await tab(n1, "ann");
    assert.deepEqual([(await nextMessage(first.client)).data], ["while away"]);
    await first.client[Symbol.asyncDispose]();
    await counted(n0, 0);
    // The node that wrote it keeps the uid's written mark in Redis (within 100 ms).
    await until(
      async () =>
        Number(await redisCommand(cluster.redis.port, "HGET deno-pusher:history:marks ann")) ===
          queued.body.id,
      "ann's written mark in Redis",
    );

    const again = await post(n1, "/send", { uid: "ann", message: "away again" });
    assert.equal(again.status, 202);
    const back = await tab(n0, "ann");
    // Only what it was not written yet: "while away" is not mailed twice.
    assert.deepEqual([(await nextMessage(back.client)).data], ["away again"]);
    const live = await post(n1, "/send", { uid: "ann", message: "live" });
    assert.equal(live.status, 200);
    assert.equal((await nextMessage(back.client)).data, "live");
    await back.client[Symbol.asyncDispose]();
  });

  test("a stream of sends through a node that is killed and a Redis that restarts: every 200 arrives, in order", async () => {
    const dir = mkdtempSync(join(tmpdir(), "deno-pusher-redis-"));
    try {
      await using cluster = await startCluster(3, [], { dir });
      const [n0, n1, n2] = cluster.nodes;
      const live = await tab(n1, "ann");
      await counted(n0, 1);
      const marker = await post(n0, "/send", { uid: "ann", message: "marker" });
      assert.equal(marker.status, 200);
      assert.equal((await nextMessage(live.client)).id, marker.body.id);
      const answered: number[] = []; // ids answered 200, in the order sent
      let refused = 0; // 503s
      let unanswered = 0; // requests that got no answer (their node died)
      const send = async (node: TestNode, i: number) => {
        try {
          const res = await post(node, "/send", { uid: "ann", message: `m${i}` });
          if (res.status === 200) answered.push(res.body.id);
          else if (res.status === 503) refused++;
          else {assert.fail(
              `send ${i} through ${node.name}: ${res.status} ${JSON.stringify(res.body)}`,
            );}
        } catch {
          unanswered++;
        }
      };
      // Through two nodes, then one of them is killed with -9 while sends go on through the other.
      for (let i = 0; i < 100; i++) await send(i % 2 === 0 ? n0 : n2, i);
      await Promise.all([cluster.kill(n2), send(n2, 100), send(n0, 101)]);
      for (let i = 102; i < 200; i++) await send(n0, i);

      // Redis restarts (it persists: appendonly, fsync always); a send while it is down is a 503.
      const port = cluster.redis.port;
      await cluster.redis.stop();
      await send(n0, 200);
      assert.ok(refused >= 1, "a send while Redis is down answers 503");
      await using _redis = await startRedis({ port, dir });
      for (const node of [n0, n1]) await until(() => ready(node.port), `${node.name} ready`);
      for (let i = 201; i < 300; i++) await send(n0, i);

      // Live, the tab got a part, in order, nothing twice and nothing that was not answered 200.
      const received: number[] = [];
      const sent = new Set(answered);
      while (received.length === 0 || received.at(-1) !== answered.at(-1)) {
        const m = await nextMessage(live.client);
        assert.ok(sent.has(m.id as number), `message ${m.id} was not answered 200`);
        assert.ok(received.length === 0 || (m.id as number) > received.at(-1)!, "in order");
        received.push(m.id as number);
      }
      // Resuming from the marker, it gets every one answered 200: none lost.
      const back = await tab(n0, "ann", {}, `&since=${marker.body.id}`);
      assert.deepEqual([back.welcome.recovered, back.welcome.replayed], [true, answered.length]);
      const replayed: number[] = [];
      for (let i = 0; i < answered.length; i++) {
        replayed.push((await nextMessage(back.client)).id as number);
      }
      assert.deepEqual(replayed, answered);
      console.log(
        `stream: ${answered.length} answered 200, ${refused} answered 503, ${unanswered} ` +
          `unanswered (node killed); ${received.length} arrived live, ${replayed.length} on resume`,
      );
      for (const t of [live, back]) await t.client[Symbol.asyncDispose]();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("several nodes on one machine and one port (REUSE_PORT): the kernel spreads the connections, the cluster counts them all", async () => {
    await using cluster = await startCluster(0);
    const port = await freePort();
    const shared = ["--port", String(port), "--reuse-port", "true"];
    await cluster.addNode(shared);
    await cluster.addNode(shared);
    const entry = cluster.nodes[0]; // either node: they answer on the same port
    const tabs = [];
    for (let i = 0; i < 20; i++) tabs.push(await tab(entry, `u${i}`));
    await counted(entry, 20);

    // Each new TCP connection lands on one node or the other; each tells its own count.
    const perNode = new Map<string, number>();
    while (perNode.size < 2) {
      const { body } = await rawRequest(
        port,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close",
      );
      const node = /^cluster_node_info\{node="([^"]+)"\} 1$/m.exec(body)![1];
      perNode.set(node, Number(/^connections (\d+)$/m.exec(body)![1]));
    }
    assert.deepEqual([...perNode.keys()].toSorted(), ["n0", "n1"]);
    assert.equal([...perNode.values()].reduce((a, b) => a + b), 20);
    assert.ok([...perNode.values()].every((n) => n > 0), `spread: ${JSON.stringify([...perNode])}`);

    const all = await post(entry, "/api/broadcast", { message: "to all" });
    assert.equal(all.body.delivered, 20);
    for (const t of tabs) assert.equal((await nextMessage(t.client)).data, "to all");
    for (const t of tabs) await t.client[Symbol.asyncDispose]();
  });

  test("a message's receipt is the cluster's: acked on one node, GET /api/messages/{id} on another says so", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const ann = await tab(n1, "ann");
    await counted(n0, 1);
    const sent = await post(n0, "/send", { uid: "ann", message: "please ack" });
    const m = await nextMessage(ann.client);
    ann.client.ws.send(JSON.stringify({ type: "ack", id: m.id }));
    // The message log writes in batches (LOG_FLUSH_MS): wait for the ack's.
    await until(
      async () => (await get(n0, `/api/messages/${sent.body.id}`)).status === "acked",
      "the ack recorded",
    );
    const receipt = await get(n0, `/api/messages/${sent.body.id}`);
    assert.deepEqual(
      [receipt.target, receipt.uid, receipt.message, receipt.written, receipt.acked],
      ["uid:ann", "ann", "please ack", 1, 1],
    );
    assert.equal((await fetch(`${n0.url}/api/messages/1`)).status, 404);
    await ann.client[Symbol.asyncDispose]();
  });

  test("a password in REDIS_URL: the nodes use it and never print it; a wrong one keeps a node out, and it says why", async () => {
    const password = "redis-password-0123456789";
    await using cluster = await startCluster(2, [], { password });
    const [n0, n1] = cluster.nodes;
    const ann = await tab(n1, "ann");
    await counted(n0, 1);
    assert.equal((await post(n0, "/send", { uid: "ann", message: "hi" })).body.delivered, 1);
    assert.equal((await nextMessage(ann.client)).data, "hi");

    const wrong = "not-the-password-0123456789";
    const outsider = await startProgram(["--port", "0", "--node-name", "outsider"], {
      JWT_SECRET: PROGRAM_SECRET,
      REDIS_URL: `redis://:${wrong}@127.0.0.1:${cluster.redis.port}`,
    });
    try {
      await within(10_000, "the refusal", outsider.printed(/WRONGPASS|NOAUTH|invalid password/i));
      const port = Number(/listening on [^:]+:(\d+)/.exec(outsider.banner)![1]);
      const readyz = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.deepEqual([readyz.status, (await readyz.json()).status], [503, "unavailable"]);
      assert.ok(!outsider.output().includes(wrong), outsider.output());
    } finally {
      await stopProgram(outsider);
    }
    for (const node of cluster.nodes) {
      assert.ok(!node.started.output().includes(password), node.started.output());
    }
    await ann.client[Symbol.asyncDispose]();
  });

  if (!canMakeCertificates()) {
    testWithout("openssl", OPENSSL_MISSING, "the rediss:// story");
  } else {
    test("rediss://: the nodes reach Redis over TLS, trusting a private CA given in NODE_EXTRA_CA_CERTS; without it a node stays out and says why", async () => {
      await using cluster = await startCluster(2, [], { tls: true });
      const [n0, n1] = cluster.nodes;
      const ann = await tab(n1, "ann");
      await counted(n0, 1);
      assert.equal(
        (await post(n0, "/send", { uid: "ann", message: "over TLS" })).body.delivered,
        1,
      );
      assert.equal((await nextMessage(ann.client)).data, "over TLS");
      // Every connection the nodes hold to Redis came in on its TLS port (Redis's CLIENT LIST
      // gives each one's local address; the test's own question comes on the plain port).
      const list = await redisCommand(cluster.redis.port, "CLIENT LIST");
      const ports = list.split("\n").filter((line) => / name=deno-pusher-/.test(line))
        .map((line) => / laddr=\S+:(\d+) /.exec(line)?.[1]);
      assert.ok(ports.length >= 2, list);
      assert.deepEqual(new Set(ports), new Set([new URL(cluster.redis.tlsUrl!).port]), list);

      const untrusting = await startProgram(["--port", "0", "--node-name", "untrusting"], {
        JWT_SECRET: PROGRAM_SECRET,
        REDIS_URL: cluster.redis.tlsUrl!,
      });
      try {
        await within(10_000, "the refusal", untrusting.printed(/self[- ]signed certificate/i));
        const port = Number(/listening on [^:]+:(\d+)/.exec(untrusting.banner)![1]);
        const readyz = await fetch(`http://127.0.0.1:${port}/readyz`);
        assert.deepEqual([readyz.status, (await readyz.json()).status], [503, "unavailable"]);
      } finally {
        await stopProgram(untrusting);
      }
      await ann.client[Symbol.asyncDispose]();
    });
  }

  test("a node whose JWT_SECRET differs from the others' is named in a warning on both sides, never with the secret", async () => {
    await using cluster = await startCluster(1);
    const [n0] = cluster.nodes;
    const other = "another-secret-0123456789abcdef0123456";
    const odd = await startProgram(["--port", "0", "--node-name", "odd"], {
      JWT_SECRET: other,
      REDIS_URL: cluster.redis.url,
    });
    try {
      const warning = /cluster: node\(s\) (\S+) check tokens with other settings than this node/;
      await within(10_000, "the odd node's warning", odd.printed(warning));
      assert.equal(warning.exec(odd.output())![1], "n0");
      // The first node hears of the newcomer at its next beat (every 2 s).
      await within(10_000, "the first node's warning", n0.started.printed(warning));
      assert.equal(warning.exec(n0.started.output())![1], "odd");
      for (const out of [odd.output(), n0.started.output()]) {
        assert.ok(!out.includes(other) && !out.includes(PROGRAM_SECRET), out);
      }
    } finally {
      await stopProgram(odd);
    }
  });

  test("the /api lists and actions reach every node's connections", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const ann = await tab(n0, "ann", { groups: ["g"] });
    const bob = await tab(n1, "bob", { groups: ["g"] });
    const bob2 = await tab(n1, "bob", { groups: ["g"] });
    await counted(n0, 3);

    const clients = await get(n0, "/api/clients?limit=2");
    assert.equal(clients.total, 3);
    assert.equal(clients.next, 2);
    const rest = await get(n0, "/api/clients?offset=2");
    const ids = [...clients.items, ...rest.items].map((c: { id: string }) => c.id);
    assert.deepEqual(ids.toSorted(), [ann.id, bob.id, bob2.id].toSorted());
    assert.deepEqual((await get(n0, "/api/uids")).items.toSorted(), ["ann", "bob"]);
    assert.equal((await get(n0, "/api/uids/bob/clients")).total, 2);
    const bobView = await get(n0, `/api/clients/${bob.id}`);
    assert.deepEqual([bobView.id, bobView.uid, bobView.groups], [bob.id, "bob", ["g"]]);
    assert.equal((await get(n1, "/api/groups/g/members")).total, 3);
    assert.deepEqual(await get(n0, "/api/groups/g/members/count"), { members: 3, uids: 2 });

    // Actions from a node the connection is not on.
    const joined = await fetch(`${n0.url}/api/groups/h/clients/${bob.id}`, { method: "PUT" });
    assert.deepEqual(await joined.json(), { group: "h", members: 1, changed: 1 });
    const toH = await post(n0, "/api/groups/h/send", { message: "to h" });
    assert.equal(toH.body.delivered, 1);
    assert.equal((await nextMessage(bob.client)).data, "to h");

    const rebound = await fetch(`${n0.url}/api/clients/${bob2.id}/uid`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ uid: "cy" }),
    });
    assert.equal((await rebound.json()).uid, "cy");
    await until(
      async () => (await get(n0, "/api/uids/bob/online")).connections === 1,
      "bob down to one connection",
    );
    assert.deepEqual(
      await (await fetch(`${n0.url}/api/uids/bob`, { method: "DELETE" })).json(),
      { closed: 1 },
    );
    assert.deepEqual(await bob.client.closed, { code: 4009, reason: "logged out" });
    assert.deepEqual(
      await (await fetch(`${n1.url}/api/clients/${ann.id}`, { method: "DELETE" })).json(),
      { closed: 1 },
    );
    assert.equal((await ann.client.closed).code, 4009);
    assert.equal(
      (await fetch(`${n1.url}/api/clients/${ann.id}`, { method: "DELETE" })).status,
      404,
      "closed already",
    );
    const dissolved = await (await fetch(`${n0.url}/api/groups/g`, { method: "DELETE" })).json();
    assert.deepEqual(dissolved, { group: "g", members: 0, changed: 1 });
    await bob2.client[Symbol.asyncDispose]();
  });

  test("a tab that was on one node comes back on another with since and gets everything it missed, in order", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const first = await tab(n0, "ann", { groups: ["g"] });
    await counted(n1, 1);
    const seen = (await post(n1, "/api/uids/ann/send", { message: "seen" })).body.id;
    assert.equal((await nextMessage(first.client)).id, seen);
    await first.client[Symbol.asyncDispose]();
    await counted(n1, 0);

    const missed = [
      await post(n0, "/api/uids/ann/send", { message: "to ann" }),
      await post(n1, "/api/groups/g/send", { message: "to g" }),
      await post(n0, "/api/broadcast", { message: "to all" }),
    ];
    const back = await tab(n1, "ann", { groups: ["g"] }, `&since=${seen}`);
    assert.equal(back.welcome.recovered, true);
    assert.equal(back.welcome.replayed, 3);
    const replay = [];
    for (let i = 0; i < 3; i++) replay.push(await nextMessage(back.client));
    assert.deepEqual(replay.map((m) => m.data), ["to ann", "to g", "to all"]);
    assert.deepEqual(replay.map((m) => m.id), missed.map((s) => s.body.id));

    // And live again, sent from the node it left.
    await counted(n0, 1);
    const live = await post(n0, "/send", { uid: "ann", message: "live" });
    assert.equal(live.body.delivered, 1);
    assert.equal((await nextMessage(back.client)).data, "live");
    await back.client[Symbol.asyncDispose]();
  });

  test("a node killed with -9 leaves the cluster's counts within its heartbeat's TTL; the others go on", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const ann = await tab(n0, "ann");
    await tab(n1, "bob"); // dies with its node
    await counted(n0, 2);
    await cluster.kill(n1);

    // No event says a node died: its heartbeat lapses after 10 s, and the next beat of a live
    // node (every 2 s) removes it.
    await until(
      async () => (await get(n0, "/api/clients/count")).count === 1,
      "the dead node's connections to leave the count (within 20 s)",
      20_000,
    );
    assert.deepEqual(await get(n0, "/api/uids/bob/online"), {
      uid: "bob",
      online: false,
      connections: 0,
    });
    assert.equal((await post(n0, "/send", { uid: "bob", message: "?" })).status, 404);
    const toAnn = await post(n0, "/send", { uid: "ann", message: "still here" });
    assert.equal(toAnn.status, 200);
    assert.equal((await nextMessage(ann.client)).data, "still here");
    assert.match(await (await fetch(`${n0.url}/metrics`)).text(), /^cluster_nodes 1$/m);
    await ann.client[Symbol.asyncDispose]();
  });

  test("while Redis is down, sends answer 503, /readyz 503, and sockets stay open; once it is back, delivery resumes", async () => {
    await using cluster = await startCluster(2);
    const [n0, n1] = cluster.nodes;
    const ann = await tab(n1, "ann");
    await counted(n0, 1);
    const port = cluster.redis.port;
    await cluster.redis.stop();

    await until(async () => !(await ready(n0.port)), "n0 unready");
    const down = await post(n0, "/send", { uid: "ann", message: "lost?" });
    assert.equal(down.status, 503);
    assert.match(down.body.error, /cannot keep messages now/);
    assert.deepEqual(await (await fetch(`${n1.url}/readyz`)).json(), {
      status: "unavailable",
      error: "Redis is unreachable: sends answer 503 until it is back",
    });

    // Redis comes back empty (no persistence in this test): the nodes reconnect, subscribe
    // again and write their presence again by themselves.
    await using _redis = await startRedis({ port });
    for (const node of cluster.nodes) await until(() => ready(node.port), `${node.name} ready`);
    await counted(n0, 1);
    const back = await post(n0, "/send", { uid: "ann", message: "back" });
    assert.equal(back.status, 200);
    assert.equal(back.body.delivered, 1);
    // The 503 was not delivered: the first message ann gets after the outage is "back".
    assert.equal((await nextMessage(ann.client)).data, "back");
    assert.ok(back.body.id > down.body.id || down.body.id === undefined);
    await ann.client[Symbol.asyncDispose]();
  });
}
