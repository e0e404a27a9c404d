/**
 * History and resume, told against the program as users run it (main.ts on this runtime, or the
 * executable under `make test-bin`): a tab that was away reconnects with `since` and misses
 * nothing, and is told when history no longer holds all it missed.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  connectClient,
  postJson,
  programToken as token,
  rawUpgrade,
  type TestClient,
  until,
  withProgram,
} from "./testkit.ts";

const post = postJson;

/** A json tab of `uid` in group `g`, resuming after `since` when given; answers it and its welcome. */
async function tab(port: number, uid: string, since?: number) {
  const query = since === undefined ? "" : `&since=${since}`;
  const client = await connectClient(
    `ws://127.0.0.1:${port}/ws?format=json${query}&token=${await token(uid, { groups: ["g"] })}`,
  );
  return { client, welcome: await client.nextJson() };
}

const next = (client: TestClient) => client.nextJson();

/** Waits until the server has seen every connection of `uid` close (the client saw it first). */
const offline = (port: number, uid: string) =>
  until(
    async () =>
      !(await (await fetch(`http://127.0.0.1:${port}/api/uids/${uid}/online`)).json()).online,
    `${uid} offline`,
  );

test("a tab that was away resumes with since: every message to its uid, its group and everyone, in order, then live ones", async () => {
  await withProgram([], async (port) => {
    const first = await tab(port, "ann");
    assert.equal(first.welcome.recovered, undefined, "no since, no replay");
    const seen = (await post(port, "/api/uids/ann/send", { message: "before" })).body.id;
    assert.equal((await next(first.client)).data, "before");
    await first.client[Symbol.asyncDispose]();
    await offline(port, "ann");

    // Away: one message to each of its streams, and one to someone else.
    const sent = [
      await post(port, "/send", { uid: "ann", message: "to ann" }),
      await post(port, "/api/groups/g/send", { message: "to g" }),
      await post(port, "/api/uids/bob/send", { message: "to bob" }),
      await post(port, "/api/broadcast", { message: "to all" }),
    ];
    assert.deepEqual(sent.map((s) => s.status), [404, 200, 404, 200], "nobody was connected");
    assert.deepEqual(sent[1].body, { id: sent[1].body.id, delivered: 0, connections: 0 });
    assert.deepEqual(sent[2].body, { error: "client not found: bob", id: sent[2].body.id });
    assert.ok(sent[2].body.id > sent[1].body.id, "the 404 names the id of the message it kept");

    const back = await tab(port, "ann", seen);
    assert.equal(back.welcome.type, "welcome");
    assert.equal(back.welcome.recovered, true);
    assert.equal(back.welcome.replayed, 3);
    const replay = [await next(back.client), await next(back.client), await next(back.client)];
    assert.deepEqual(replay.map((m) => m.data), ["to ann", "to g", "to all"]);
    assert.deepEqual(replay.map((m) => m.id), [sent[0].body.id, sent[1].body.id, sent[3].body.id]);
    assert.equal(replay[1].group, "g");
    const live = await post(port, "/api/uids/ann/send", { message: "live" });
    assert.equal(live.body.delivered, 1);
    const after = await next(back.client);
    assert.deepEqual([after.type, after.id, after.data], ["message", live.body.id, "live"]);
    await back.client[Symbol.asyncDispose]();
  });
});

test("history too short for what a tab missed: it gets what is kept, and recovered is false", async () => {
  await withProgram(["--history-size", "2"], async (port) => {
    const first = await tab(port, "cy");
    const seen = (await post(port, "/api/uids/cy/send", { message: "seen" })).body.id;
    await next(first.client);
    await first.client[Symbol.asyncDispose]();
    for (const message of ["one", "two", "three"]) {
      await post(port, "/api/uids/cy/send", { message });
    }
    const back = await tab(port, "cy", seen);
    assert.deepEqual([back.welcome.recovered, back.welcome.replayed], [false, 2]);
    assert.deepEqual([(await next(back.client)).data, (await next(back.client)).data], [
      "two",
      "three",
    ]);
    await back.client[Symbol.asyncDispose]();
  });
});

test("since in the auth frame, and in the text format: the replay comes as bare frames", async () => {
  await withProgram([], async (port) => {
    // /send answers an offline uid's 404 with the id all the same.
    const seen = (await post(port, "/send", { uid: "di", message: "old" })).body.id;
    await post(port, "/send", { uid: "di", message: "missed" });
    const framed = await connectClient(`ws://127.0.0.1:${port}/ws?auth=frame&format=json`);
    framed.ws.send(JSON.stringify({ type: "auth", token: await token("di"), since: seen }));
    const welcome = await framed.nextJson();
    assert.deepEqual([welcome.type, welcome.recovered, welcome.replayed], ["welcome", true, 1]);
    assert.equal((await framed.nextJson()).data, "missed");
    await framed[Symbol.asyncDispose]();
    const text = await connectClient(
      `ws://127.0.0.1:${port}/ws?since=${seen}&token=${await token("di")}`,
    );
    assert.equal(await text.next(), "missed");
    await text[Symbol.asyncDispose]();
  });
});

test("HISTORY_SIZE=0 keeps nothing: a group without members answers 404 and since replays nothing", async () => {
  await withProgram(["--history-size", "0"], async (port) => {
    const refused = await post(port, "/api/groups/empty/send", { message: "x" });
    assert.equal(refused.status, 404);
    assert.equal(refused.body.error, "group not found: empty");
    const seen = (await post(port, "/api/broadcast", { message: "gone" })).body.id;
    await post(port, "/api/broadcast", { message: "also gone" });
    const back = await tab(port, "ed", seen - 1);
    assert.equal(back.welcome.recovered, undefined, "no history, no replay fields");
    const live = await post(port, "/api/uids/ed/send", { message: "live" });
    assert.equal((await next(back.client)).id, live.body.id, "nothing came before the live one");
    await back.client[Symbol.asyncDispose]();
  });
});

test("a resuming tab that asked for presence gets its welcome first, then the replay, then presence", async () => {
  await withProgram([], async (port) => {
    const seen = (await post(port, "/send", { uid: "fay", message: "old" })).body.id;
    await post(port, "/api/groups/g/send", { message: "missed" });
    const back = await connectClient(
      `ws://127.0.0.1:${port}/ws?format=json&presence=true&since=${seen}&token=${await token(
        "fay",
        { groups: ["g"] },
      )}`,
    );
    const welcome = await back.nextJson();
    assert.deepEqual([welcome.type, welcome.replayed], ["welcome", 1]);
    assert.equal((await back.nextJson()).data, "missed");
    const other = await tab(port, "gus");
    assert.deepEqual(await back.nextJson(), { type: "join", group: "g", uid: "gus" });
    await other.client[Symbol.asyncDispose]();
    await back[Symbol.asyncDispose]();
  });
});

test("the backend reads a stream's history in pages by id, and learns when it was trimmed", async () => {
  await withProgram(["--history-size", "3"], async (port) => {
    const ids = [];
    for (const message of ["a", "b", "c", "d"]) {
      ids.push((await post(port, "/api/groups/news/send", { message })).body.id);
    }
    const get = async (path: string) =>
      await (await fetch(`http://127.0.0.1:${port}/api${path}`)).json();
    const first = await get("/groups/news/history?limit=2");
    assert.deepEqual(first.items.map((m: { data: string }) => m.data), ["b", "c"]);
    assert.equal(first.recovered, false, "a was trimmed (HISTORY_SIZE 3)");
    const rest = await get(`/groups/news/history?since=${first.next}&limit=2`);
    assert.deepEqual(rest.items.map((m: { id: number }) => m.id), [ids[3]]);
    assert.deepEqual([rest.recovered, rest.next], [true, null]);
    // From the beginning of time: the file holds nothing sent before it was made, and says so.
    assert.deepEqual(await get("/uids/nobody/history"), {
      items: [],
      recovered: false,
      next: null,
    });
    const since = ids[3];
    assert.deepEqual(await get(`/uids/nobody/history?since=${since}`), {
      items: [],
      recovered: true,
      next: null,
    });
    const all = await get("/broadcast/history");
    assert.deepEqual(all.items, []);
  });
  await withProgram(["--history-size", "0"], async (port) => {
    const res = await fetch(`http://127.0.0.1:${port}/api/uids/x/history`);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error, "no history is kept (HISTORY_SIZE=0)");
  });
});

test("a since that is not a message id is refused before the upgrade with 400", async () => {
  await withProgram([], async (port) => {
    for (const since of ["abc", "-1", "9999999999999999"]) {
      const res = await rawUpgrade(port, `/ws?since=${since}&token=${await token("hal")}`);
      assert.equal(res.status, 400, since);
      assert.equal(JSON.parse(res.body).error, "since must be a message id (a whole number)");
    }
  });
});
