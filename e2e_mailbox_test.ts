/**
 * The mailbox (OFFLINE_TTL) and acks, told against the program as users run it (main.ts on this
 * runtime, or the executable under `make test-bin`): a message to a uid that is offline waits for
 * its next connection, even a go-pusher text client that knows no ids; the backend reads each
 * message's fate at GET /api/messages/{id}; a json client acks what it handled.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  connectClient,
  postJson,
  programToken as token,
  type TestClient,
  until,
  withProgram,
} from "./testkit.ts";

const post = postJson;

/** GET /api/messages/{id}: the status and the JSON. */
async function message(port: number, id: unknown) {
  const res = await fetch(`http://127.0.0.1:${port}/api/messages/${id}`);
  return { status: res.status, body: await res.json() };
}

/** Waits until message `id` has `status` (the log settles it a moment after the push). */
const settled = (port: number, id: number, status: string) =>
  until(async () => (await message(port, id)).body.status === status, `message ${id} ${status}`);

/** A text-format (go-pusher) tab of `uid`. */
const textTab = async (port: number, uid: string) =>
  await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token(uid)}`);

/** A json tab of `uid`, past its welcome. */
async function jsonTab(port: number, uid: string, claims: Record<string, unknown> = {}) {
  const client = await connectClient(
    `ws://127.0.0.1:${port}/ws?format=json&token=${await token(uid, claims)}`,
  );
  assert.equal((await client.nextJson()).type, "welcome");
  return client;
}

/** The next frame is the live message sent now: nothing else was queued before it. */
async function nothingBefore(port: number, uid: string, client: TestClient, json = false) {
  const live = await post(port, "/send", { uid, message: "live" });
  assert.equal(live.status, 200);
  const frame = json ? (await client.nextJson()).data : await client.next();
  assert.equal(frame, "live", "nothing was mailed before the live message");
}

test("OFFLINE_TTL: a message to an offline uid answers 202 queued and reaches its next connection, in order, once", async () => {
  await withProgram(["--offline-ttl", "60"], async (port) => {
    const first = await post(port, "/send", { uid: "ann", message: "one" });
    assert.equal(first.status, 202);
    assert.deepEqual(first.body, { id: first.body.id, uid: "ann", delivered: 0, queued: true });
    const second = await post(port, "/api/uids/ann/send", { message: "two" });
    assert.equal(second.status, 202);
    assert.deepEqual(second.body, {
      id: second.body.id,
      delivered: 0,
      connections: 0,
      queued: true,
    });
    assert.equal((await message(port, first.body.id)).body.status, "queued");

    // A go-pusher text client: no ids, no since, and still nothing is lost.
    const tab = await textTab(port, "ann");
    assert.deepEqual([await tab.next(), await tab.next()], ["one", "two"]);
    await settled(port, second.body.id, "delivered");
    assert.deepEqual(
      {
        ...(await message(port, first.body.id)).body,
        ts: 0,
        updated: 0,
      },
      {
        id: first.body.id,
        target: "uid:ann",
        uid: "ann",
        message: "one",
        status: "delivered",
        written: 1,
        acked: 0,
        ts: 0,
        updated: 0,
      },
    );
    await nothingBefore(port, "ann", tab);
    await tab[Symbol.asyncDispose]();

    // What a socket of ann was written is never mailed again, to this tab or another.
    const again = await textTab(port, "ann");
    await nothingBefore(port, "ann", again);
    await again[Symbol.asyncDispose]();

    // Groups and broadcasts are not the mailbox's: a group without members still answers 200.
    const group = await post(port, "/api/groups/g/send", { message: "to g" });
    assert.deepEqual([group.status, group.body.queued], [200, undefined]);
  });
});

test("OFFLINE_TTL: a mailbox message nobody came for ends expired, and is not mailed after that", async () => {
  await withProgram(["--offline-ttl", "1"], async (port) => {
    const sent = await post(port, "/send", { uid: "bo", message: "too late" });
    assert.equal(sent.status, 202);
    await settled(port, sent.body.id, "expired");
    const tab = await textTab(port, "bo");
    await nothingBefore(port, "bo", tab);
    await tab[Symbol.asyncDispose]();
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^messages_queued_total 1$/m);
  });
});

test("without OFFLINE_TTL an offline uid is still go-pusher's 404, and a mailbox without history is refused at start", async () => {
  await withProgram([], async (port) => {
    const sent = await post(port, "/send", { uid: "cy", message: "x" });
    assert.equal(sent.status, 404);
    assert.equal((await message(port, sent.body.id)).body.status, "offline");
  });
  await assert.rejects(
    withProgram(["--offline-ttl", "60", "--history-size", "0"], () => Promise.resolve()),
    /OFFLINE_TTL needs history/,
  );
});

test("acks: a json client acks what it handled; the log keeps the first ack per uid, and unknown or foreign ids get an error frame", async () => {
  await withProgram([], async (port) => {
    const tab = await jsonTab(port, "di", { groups: ["g"] });
    const other = await jsonTab(port, "di", { groups: ["g"] });
    const toDi = await post(port, "/send", { uid: "di", message: "hi" });
    const toG = await post(port, "/api/groups/g/send", { message: "to g" });
    const toEd = await post(port, "/send", { uid: "ed", message: "not yours" });
    assert.equal((await tab.nextJson()).id, toDi.body.id);
    assert.equal((await tab.nextJson()).id, toG.body.id);

    tab.ws.send(JSON.stringify({ type: "ack", id: toDi.body.id }));
    other.ws.send(JSON.stringify({ type: "ack", id: toDi.body.id })); // same uid: not counted again
    tab.ws.send(JSON.stringify({ type: "ack", id: toG.body.id }));
    tab.ws.send(JSON.stringify({ type: "ack", id: toEd.body.id }));
    assert.deepEqual(await tab.nextJson(), {
      type: "error",
      error: `message ${toEd.body.id} was not sent to this connection`,
      id: toEd.body.id,
    });
    tab.ws.send(JSON.stringify({ type: "ack", id: 987654321 }));
    assert.deepEqual(await tab.nextJson(), {
      type: "error",
      error: "unknown message id: 987654321",
      id: 987654321,
    });
    tab.ws.send(JSON.stringify({ type: "ack", id: "x" }));
    assert.deepEqual(await tab.nextJson(), {
      type: "error",
      error: "ack needs id: the id of a message (a whole number)",
      id: null,
    });

    await settled(port, toG.body.id, "acked");
    const acked = (await message(port, toDi.body.id)).body;
    assert.deepEqual([acked.status, acked.written, acked.acked], ["acked", 2, 1]);
    assert.equal((await message(port, toEd.body.id)).body.status, "offline");
    const missing = await message(port, 987654321);
    assert.deepEqual([missing.status, missing.body.error], [404, "message not found: 987654321"]);
    const bad = await message(port, "abc");
    assert.equal(bad.status, 400);
    // The connection is still open and answering.
    tab.ws.send(JSON.stringify({ type: "ping" }));
    assert.deepEqual(await tab.nextJson(), { type: "pong" });
    await tab[Symbol.asyncDispose]();
    await other[Symbol.asyncDispose]();
  });
});

test("without a message log that can be read, acks are refused with an error frame and GET /api/messages/{id} answers 404", async () => {
  await withProgram(["--message-logger", "none"], async (port) => {
    const tab = await jsonTab(port, "fay");
    const sent = await post(port, "/send", { uid: "fay", message: "hi" });
    assert.equal((await tab.nextJson()).id, sent.body.id);
    tab.ws.send(JSON.stringify({ type: "ack", id: sent.body.id }));
    assert.deepEqual(await tab.nextJson(), {
      type: "error",
      error: "acks are not recorded: the message log is off (MESSAGE_LOGGER=sqlite records them)",
      id: sent.body.id,
    });
    const res = await message(port, sent.body.id);
    assert.equal(res.status, 404);
    assert.equal(
      res.body.error,
      "no message log is kept that can be read (MESSAGE_LOGGER=sqlite keeps one)",
    );
    await tab[Symbol.asyncDispose]();
  });
});
