/**
 * Clients that talk, told against the program as users run it (main.ts on this runtime, or the
 * executable under `make test-bin`): with `subscribe`, `publish` and `send` in their tokens, two
 * people join a room, see each other, exchange room and direct messages with acks; without those
 * claims every such frame is refused and the connection stays open.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  ask,
  connectClient,
  postJson,
  PROGRAM_SECRET,
  programTab,
  programToken as token,
  type Started,
  startProgram,
  stopProgram,
  withProgram,
} from "./testkit.ts";

/** Claims that let a client do everything in rooms `room-*` and message anyone. */
const TALKER = { subscribe: ["room-*"], publish: ["room-*"], send: ["*"] };

const tab = programTab;

test("two people with the claims join a room, see each other, and exchange room and direct messages with acks", async () => {
  await withProgram([], async (port) => {
    const ann = await tab(port, "ann", { ...TALKER, info: { name: "Ann" } });
    const bob = await tab(port, "bob", { ...TALKER, info: { name: "Bob" } });

    assert.deepEqual(await ask(ann.client, { type: "join", group: "room-1", ref: 1 }), {
      type: "joined",
      ref: 1,
      group: "room-1",
      members: [{ uid: "ann", info: { name: "Ann" } }],
      locks: [],
    });
    assert.deepEqual(await ask(bob.client, { type: "join", group: "room-1", ref: "b1" }), {
      type: "joined",
      ref: "b1",
      group: "room-1",
      members: [{ uid: "ann", info: { name: "Ann" } }, { uid: "bob", info: { name: "Bob" } }],
      locks: [],
    });
    // Joining subscribed ann to the room's presence: she hears bob come.
    assert.deepEqual(await ann.client.nextJson(), {
      type: "join",
      group: "room-1",
      uid: "bob",
      info: { name: "Bob" },
    });

    // A room message: the sender gets an ack with the id, everyone else the message with `from`.
    const ack = await ask(bob.client, { type: "publish", group: "room-1", data: "hi", ref: 3 });
    assert.deepEqual(ack, { type: "ack", ref: 3, id: ack.id });
    const hi = await ann.client.nextJson();
    assert.equal(typeof hi.ts, "number");
    assert.deepEqual(hi, {
      type: "message",
      id: ack.id,
      data: "hi",
      ts: hi.ts,
      group: "room-1",
      from: { uid: "bob", client: bob.id },
    });

    // With echo, the sender gets its own message too, after its ack or before it.
    bob.client.ws.send(
      JSON.stringify({ type: "publish", group: "room-1", data: "me too", echo: true, ref: 4 }),
    );
    const two = [await bob.client.nextJson(), await bob.client.nextJson()];
    const echoed = two.find((f) => f.type === "message")!;
    const acked = two.find((f) => f.type === "ack")!;
    assert.deepEqual([echoed.data, echoed.id, acked.ref], ["me too", acked.id, 4]);
    assert.equal((await ann.client.nextJson()).data, "me too");

    // A direct message: an ack with how many connections of bob took it.
    const direct = await ask(ann.client, { type: "send", uid: "bob", data: "psst", ref: 5 });
    assert.deepEqual(direct, { type: "ack", ref: 5, id: direct.id, delivered: 1 });
    const got = await bob.client.nextJson();
    assert.deepEqual([got.data, got.from, got.group], [
      "psst",
      { uid: "ann", client: ann.id },
      undefined,
    ]);

    assert.deepEqual(await ask(ann.client, { type: "presence", group: "room-1", ref: 6 }), {
      type: "presence",
      ref: 6,
      group: "room-1",
      members: [{ uid: "ann", info: { name: "Ann" } }, { uid: "bob", info: { name: "Bob" } }],
    });
    assert.deepEqual(await ask(bob.client, { type: "leave", group: "room-1", ref: 7 }), {
      type: "left",
      ref: 7,
      group: "room-1",
    });
    assert.deepEqual(await ann.client.nextJson(), { type: "leave", group: "room-1", uid: "bob" });

    // Client messages are messages like any other: kept in history with who sent them.
    const history = await (await fetch(`http://127.0.0.1:${port}/api/groups/room-1/history`))
      .json();
    assert.deepEqual(history.items.map((m: { data: string; from: unknown }) => [m.data, m.from]), [
      ["hi", { uid: "bob", client: bob.id }],
      ["me too", { uid: "bob", client: bob.id }],
    ]);
    await ann.client[Symbol.asyncDispose]();
    await bob.client[Symbol.asyncDispose]();
  });
});

test("without the claims every new frame is refused with its ref, and the connection stays open", async () => {
  await withProgram([], async (port) => {
    const cy = await tab(port, "cy", { groups: ["room-1"] });
    const refusals: [Record<string, unknown>, string][] = [
      [
        { type: "join", group: "room-1" },
        "not allowed to join room-1 (the token's subscribe claim)",
      ],
      [
        { type: "leave", group: "room-1" },
        "not allowed to leave room-1 (the token's subscribe claim)",
      ],
      [
        { type: "publish", group: "room-1", data: "x" },
        "not allowed to publish to room-1 (the token's publish claim)",
      ],
      [
        { type: "send", uid: "dee", data: "x" },
        "not allowed to send to dee (the token's send claim)",
      ],
      [
        { type: "presence", group: "room-2" },
        "not allowed to see room-2: not a member, nor in the subscribe claim",
      ],
    ];
    let ref = 0;
    for (const [frame, error] of refusals) {
      ref++;
      assert.deepEqual(await ask(cy.client, { ...frame, ref }), { type: "error", ref, error });
    }
    // A member may see its own group's presence without any claim.
    assert.deepEqual(await ask(cy.client, { type: "presence", group: "room-1" }), {
      type: "presence",
      group: "room-1",
      members: [{ uid: "cy" }], // no info claim, no info
    });
    assert.deepEqual(await ask(cy.client, { type: "ping", ref: "still" }), {
      type: "pong",
      ref: "still",
    });
    await cy.client[Symbol.asyncDispose]();
  });
});

test("what a client with the claims is still refused: not a member, an offline uid, a name or message out of bounds, an unknown frame", async () => {
  await withProgram(["--max-message-bytes", "16"], async (port) => {
    const dee = await tab(port, "dee", { ...TALKER, subscribe: ["room-1"] });
    const cases: [Record<string, unknown>, string | RegExp][] = [
      [{ type: "publish", group: "room-1", data: "x" }, "not a member of room-1: join it first"],
      [{ type: "leave", group: "room-1" }, "not a member of room-1"],
      [
        { type: "join", group: "room-2" },
        "not allowed to join room-2 (the token's subscribe claim)",
      ],
      [{ type: "join", group: "" }, "group is required"],
      [{ type: "join", group: "g".repeat(257) }, "group is longer than 256 characters"],
      [{ type: "send", uid: "ed", data: 5 }, "data must be a string"],
      [{ type: "send", uid: "ed", data: "x".repeat(17) }, /^message is 17 bytes; the limit is 16/],
      [{ type: "dance" }, "unknown frame type: dance"],
    ];
    let ref = 0;
    for (const [frame, error] of cases) {
      ref++;
      const answer = await ask(dee.client, { ...frame, ref });
      assert.equal(answer.type, "error", JSON.stringify(frame));
      assert.equal(answer.ref, ref);
      if (typeof error === "string") assert.equal(answer.error, error);
      else assert.match(String(answer.error), error);
    }
    // An offline uid: /send's 404, with the id of the message, which is logged all the same.
    const offline = await ask(dee.client, { type: "send", uid: "ed", data: "x", ref: "o" });
    assert.equal(offline.error, "client not found: ed");
    assert.equal(typeof offline.id, "number");
    assert.equal(offline.ref, "o");
    await dee.client[Symbol.asyncDispose]();
  });
  await withProgram(["--offline-ttl", "60"], async (port) => {
    const dee = await tab(port, "dee", TALKER);
    const queued = await ask(dee.client, { type: "send", uid: "ed", data: "later", ref: 1 });
    assert.deepEqual(queued, { type: "ack", ref: 1, id: queued.id, delivered: 0, queued: true });
    const ed = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("ed")}`);
    assert.equal(await ed.next(), "later", "the mailbox hands it to ed's next connection");
    await ed[Symbol.asyncDispose]();
    await dee.client[Symbol.asyncDispose]();
    const status = await postJson(port, "/api/uids/ed/send", { message: "x" });
    assert.equal(status.status, 202);
  });
});

test("locks: a member locks a key, the others see it and are refused it, and it is released by unlock, by leaving, by closing, by its ttl, or by the API", async () => {
  await withProgram(["--max-locks-per-connection", "2"], async (port) => {
    const ann = await tab(port, "ann", TALKER);
    const bob = await tab(port, "bob", TALKER);
    await ask(ann.client, { type: "join", group: "room-1" });
    await ask(bob.client, { type: "join", group: "room-1" });
    await ann.client.nextJson(); // bob's join

    const locked = await ask(ann.client, { type: "lock", group: "room-1", key: "q3", ref: 1 });
    assert.deepEqual(locked, {
      type: "locked",
      ref: 1,
      group: "room-1",
      key: "q3",
      expiresAt: null,
    });
    const holder = { uid: "ann", client: ann.id };
    assert.deepEqual(await bob.client.nextJson(), {
      type: "lock",
      group: "room-1",
      key: "q3",
      holder,
      expiresAt: null,
    });
    assert.deepEqual(await ask(bob.client, { type: "lock", group: "room-1", key: "q3", ref: 2 }), {
      type: "error",
      ref: 2,
      error: `q3 in room-1 is locked by ann (client ${ann.id})`,
    });
    assert.deepEqual(await ask(bob.client, { type: "unlock", group: "room-1", key: "q3" }), {
      type: "error",
      error: "q3 in room-1 is locked by another connection",
    });
    assert.deepEqual(await ask(bob.client, { type: "lock", group: "room-2", key: "x" }), {
      type: "error",
      error: "not a member of room-2: join it first",
    });
    // A late joiner's snapshot holds the locks.
    const cy = await tab(port, "cy", TALKER);
    const joined = await ask(cy.client, { type: "join", group: "room-1" });
    assert.deepEqual(joined.locks, [{ key: "q3", holder, expiresAt: null }]);
    await ann.client.nextJson(); // cy's join
    await bob.client.nextJson();
    const api = await (await fetch(`http://127.0.0.1:${port}/api/groups/room-1/locks`)).json();
    assert.deepEqual(api, { items: [{ key: "q3", holder, expiresAt: null }] });

    // MAX_LOCKS_PER_CONNECTION.
    await ask(ann.client, { type: "lock", group: "room-1", key: "q4" });
    await bob.client.nextJson();
    await cy.client.nextJson();
    assert.deepEqual(await ask(ann.client, { type: "lock", group: "room-1", key: "q5" }), {
      type: "error",
      error: "this connection holds 2 locks already (MAX_LOCKS_PER_CONNECTION)",
    });

    // Released by unlock: the others are told.
    assert.deepEqual(
      await ask(ann.client, { type: "unlock", group: "room-1", key: "q4", ref: 9 }),
      {
        type: "unlocked",
        ref: 9,
        group: "room-1",
        key: "q4",
      },
    );
    const unlockQ4 = { type: "unlock", group: "room-1", key: "q4" };
    assert.deepEqual(await bob.client.nextJson(), unlockQ4);
    assert.deepEqual(await cy.client.nextJson(), unlockQ4);

    // Released when its holder closes: bob may take it then.
    await ann.client[Symbol.asyncDispose]();
    const afterClose = [await bob.client.nextJson(), await bob.client.nextJson()];
    assert.deepEqual(afterClose, [
      { type: "unlock", group: "room-1", key: "q3" },
      { type: "leave", group: "room-1", uid: "ann" },
    ]);
    await cy.client.nextJson();
    await cy.client.nextJson();
    assert.equal(
      (await ask(bob.client, { type: "lock", group: "room-1", key: "q3" })).type,
      "locked",
    );
    await cy.client.nextJson(); // bob's lock

    // Released when its holder leaves, by the API, and by its ttl.
    await ask(bob.client, { type: "leave", group: "room-1" });
    assert.deepEqual([await cy.client.nextJson(), await cy.client.nextJson()], [
      { type: "unlock", group: "room-1", key: "q3" },
      { type: "leave", group: "room-1", uid: "bob" },
    ]);
    await ask(cy.client, { type: "lock", group: "room-1", key: "q7" });
    const broken = await fetch(`http://127.0.0.1:${port}/api/groups/room-1/locks/q7`, {
      method: "DELETE",
    });
    assert.deepEqual(await broken.json(), { group: "room-1", key: "q7", released: true });
    assert.deepEqual(await cy.client.nextJson(), { type: "unlock", group: "room-1", key: "q7" });
    const again = await fetch(`http://127.0.0.1:${port}/api/groups/room-1/locks/q7`, {
      method: "DELETE",
    });
    assert.deepEqual([again.status, (await again.json()).error], [404, "lock not found: q7"]);
    const brief = await ask(cy.client, { type: "lock", group: "room-1", key: "q8", ttl: 0.2 });
    assert.equal(typeof brief.expiresAt, "number");
    assert.deepEqual(await cy.client.nextJson(), { type: "unlock", group: "room-1", key: "q8" });
    await bob.client[Symbol.asyncDispose]();
    await cy.client[Symbol.asyncDispose]();
  });
});

test("capacity: a full group refuses a join frame, an API join answers 409, and a token naming it connects without it", async () => {
  await withProgram(["--max-group-members", "2"], async (port) => {
    const a = await tab(port, "a", TALKER);
    const b = await tab(port, "b", TALKER);
    const c = await tab(port, "c", TALKER);
    await ask(a.client, { type: "join", group: "room-1" });
    await ask(b.client, { type: "join", group: "room-1" });
    assert.deepEqual(await ask(c.client, { type: "join", group: "room-1", ref: 1 }), {
      type: "error",
      ref: 1,
      error: "group is full",
    });
    const viaApi = await fetch(`http://127.0.0.1:${port}/api/groups/room-1/clients/${c.id}`, {
      method: "PUT",
    });
    assert.equal(viaApi.status, 409);
    assert.equal((await viaApi.json()).error, "group is full: room-1 holds 2 of 2 members");
    const late = await connectClient(
      `ws://127.0.0.1:${port}/ws?format=json&token=${await token("d", {
        groups: ["room-1", "room-2"],
      })}`,
    );
    const welcome = await late.nextJson();
    assert.deepEqual(welcome.full, ["room-1"], "the welcome lists what it could not join");
    const joinedNow = await (await fetch(`http://127.0.0.1:${port}/api/groups/room-2/members`))
      .json();
    assert.equal(joinedNow.total, 1, "the group with room was joined");

    // One group's own bound, set through the API.
    const put = await fetch(`http://127.0.0.1:${port}/api/groups/room-1/settings`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ maxMembers: 3 }),
    });
    assert.deepEqual(await put.json(), { group: "room-1", maxMembers: 3, own: true, members: 2 });
    assert.equal((await ask(c.client, { type: "join", group: "room-1" })).type, "joined");
    await late[Symbol.asyncDispose]();
    for (const t of [a, b, c]) await t.client[Symbol.asyncDispose]();
  });
});

test("capacity: a group's own bound outlives a restart, kept in the data directory; null forgets it", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-capacity-"));
  const start = () =>
    startProgram(["--port", "0", "--data-dir", dataDir], { JWT_SECRET: PROGRAM_SECRET });
  const portOf = (started: Started) => Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]);
  const settings = (port: number, body?: Record<string, unknown>) =>
    fetch(`http://127.0.0.1:${port}/api/groups/room-1/settings`, {
      method: body ? "PUT" : "GET",
      headers: { "content-type": "application/json" },
      body: body && JSON.stringify(body),
    }).then((res) => res.json());
  let started = await start();
  try {
    assert.equal((await settings(portOf(started), { maxMembers: 1 })).maxMembers, 1);
    assert.equal(await stopProgram(started), 0);
    started = await start();
    const port = portOf(started);
    assert.deepEqual(await settings(port), {
      group: "room-1",
      maxMembers: 1,
      own: true,
      members: 0,
    });
    const a = await tab(port, "a", TALKER);
    const b = await tab(port, "b", TALKER);
    assert.equal((await ask(a.client, { type: "join", group: "room-1" })).type, "joined");
    assert.equal((await ask(b.client, { type: "join", group: "room-1" })).error, "group is full");
    for (const t of [a, b]) await t.client[Symbol.asyncDispose]();

    assert.equal((await settings(port, { maxMembers: null })).own, false);
    assert.equal(await stopProgram(started), 0);
    started = await start();
    assert.equal((await settings(portOf(started))).own, false, "forgotten after the restart too");
  } finally {
    await stopProgram(started);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
