/**
 * The client SDK (sdk/client.ts), told against the program as users run it (main.ts on this
 * runtime, or the executable under `make test-bin`): a page connects and receives, talks in rooms
 * with promises settled by the answers, acks what it handled, refreshes its token in-band, stops
 * for good when the server says so, rejoins its rooms after a restart, and, across a server restart
 * in the middle of a stream of sends, hands the application every message once and in order.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { Authenticator } from "./authenticator.ts";
import {
  Client,
  ClientClosedError,
  type ClientEvents,
  type ClientOptions,
  type Close,
  ConnectionLostError,
  type Gap,
  type Message,
  RequestRefusedError,
  RequestTimeoutError,
  type State,
  type Welcome,
} from "./sdk/client.ts";
import {
  connectClient,
  PROGRAM_SECRET,
  programToken as token,
  type Started,
  startProgram,
  stopProgram,
  until,
  within,
  withProgram,
} from "./testkit.ts";

/** Claims that let a client do everything in rooms `room-*` and message anyone. */
const TALKER = { subscribe: ["room-*"], publish: ["room-*"], send: ["*"] };

/** How long a test waits for one event before it fails (a missing event must fail, not hang). */
const WAIT_MS = 10_000;

/** Reconnect quickly: the stories restart servers, and the default waits up to 20 s. */
const QUICK = {
  minReconnectDelay: 100,
  maxReconnectDelay: 1000,
} satisfies ClientOptions;

/** What a client told its application, in order. */
interface Heard {
  states: State[];
  messages: Message[];
  closes: Close[];
  welcomes: Welcome[];
  gaps: Gap[];
  errors: Error[];
}

/** A client of the program on `port`, with everything it tells recorded; not connected yet. */
function page(
  port: number,
  options: ClientOptions,
): { client: Client; heard: Heard } {
  const client = new Client(`ws://127.0.0.1:${port}/ws`, options);
  const heard: Heard = {
    states: [],
    messages: [],
    closes: [],
    welcomes: [],
    gaps: [],
    errors: [],
  };
  client.on("state", (s) => heard.states.push(s));
  client.on("message", (m) => heard.messages.push(m));
  client.on("close", (c) => heard.closes.push(c));
  client.on("welcome", (w) => heard.welcomes.push(w));
  client.on("gap", (g) => heard.gaps.push(g));
  client.on("error", (e) => heard.errors.push(e));
  return { client, heard };
}

/** The next `event` of `client` that `match` accepts, from now on; fails after WAIT_MS. */
function next<K extends keyof ClientEvents>(
  client: Client,
  event: K,
  match: (value: ClientEvents[K]) => boolean = () => true,
): Promise<ClientEvents[K]> {
  return within(
    WAIT_MS,
    `${event} event`,
    new Promise((resolve) => {
      const off = client.on(event, (value) => {
        if (match(value)) off(), resolve(value);
      });
    }),
  );
}

/** Connects `client` and resolves once it is connected. */
async function connected(client: Client): Promise<void> {
  const ready = next(client, "state", (s) => s === "connected");
  client.connect();
  await ready;
}

/** POSTs `body` as JSON to the program at `port`; answers the status and the JSON. */
async function post(port: number, path: string, body: Record<string, unknown>) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Calls /api`path` on the program at `port`; answers the status and the JSON. */
async function api(port: number, method: string, path: string) {
  const res = await fetch(`http://127.0.0.1:${port}/api${path}`, { method });
  return { status: res.status, body: await res.json() };
}

/** A token of `ttl` seconds, which programs started by withProgram accept. */
async function shortToken(
  uid: string,
  ttl: number,
  claims: Record<string, unknown> = {},
) {
  return (await Authenticator.hmac(PROGRAM_SECRET)).sign(uid, ttl, claims);
}

/** The program on `dataDir` and `port` (0: a free one), with its defaults (history on). */
async function startOn(
  dataDir: string,
  port = 0,
): Promise<{ started: Started; port: number }> {
  const started = await startProgram(["--port", String(port)], {
    DATA_DIR: dataDir,
    JWT_SECRET: PROGRAM_SECRET,
  });
  return {
    started,
    port: Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]),
  };
}

test("a page connects, receives what the backend sends, and closes", async () => {
  await withProgram([], async (port) => {
    const { client, heard } = page(port, { token: await token("ann") });
    assert.equal(
      client.state,
      "disconnected",
      "nothing happens before connect()",
    );
    await connected(client);
    assert.equal(heard.welcomes.length, 1);
    assert.equal(client.id, heard.welcomes[0].client);
    assert.equal(client.uid, "ann");
    const described = await api(port, "GET", `/clients/${client.id}`);
    assert.deepEqual([described.body.uid, described.body.format], [
      "ann",
      "json",
    ]);

    const arrived = next(client, "message");
    const sent = await post(port, "/api/uids/ann/send", { message: "hello" });
    assert.equal(sent.status, 200);
    const message = await arrived;
    assert.deepEqual(message, {
      id: sent.body.id,
      data: "hello",
      ts: message.ts,
    });
    assert.equal(typeof message.ts, "number");
    assert.equal(
      client.lastId,
      sent.body.id,
      "the position the next socket resumes after",
    );

    client.close();
    assert.deepEqual(heard.states, ["connecting", "connected", "closed"]);
    assert.deepEqual(heard.closes, [{
      code: 1000,
      reason: "closed by the client",
      reconnect: false,
    }]);
    await assert.rejects(client.join("room-1"), ClientClosedError);
    await until(
      async () => (await api(port, "GET", "/uids/ann/online")).body.online === false,
      "ann offline",
    );
  });
});

test("a page that comes back with since gets what it missed, and a gap event when history no longer holds it all", async () => {
  await withProgram(["--history-size", "2"], async (port) => {
    const cyToken = await token("cy");
    const send = (message: string) => post(port, "/api/uids/cy/send", { message });
    const first = page(port, { token: cyToken });
    await connected(first.client);
    const seen = next(first.client, "message");
    await send("seen");
    await seen;
    first.client.close();

    // Away for two messages: history (2 per stream) holds them both.
    await send("one");
    await send("two");
    const back = page(port, { token: cyToken, since: first.client.lastId });
    const caughtUp = next(back.client, "message", (m) => m.data === "two");
    await connected(back.client);
    await caughtUp;
    assert.deepEqual(back.heard.messages.map((m) => m.data), ["one", "two"]);
    assert.deepEqual([
      back.heard.welcomes[0].recovered,
      back.heard.welcomes[0].replayed,
    ], [
      true,
      2,
    ]);
    assert.deepEqual(back.heard.gaps, []);
    back.client.close();

    // Away for three: the oldest was trimmed, and the page is told to refetch.
    for (const message of ["three", "four", "five"]) await send(message);
    const again = page(port, { token: cyToken, since: back.client.lastId });
    const gap = next(again.client, "gap");
    const last = next(again.client, "message", (m) => m.data === "five");
    again.client.connect();
    assert.deepEqual(await gap, { since: back.client.lastId, replayed: 2 });
    await last;
    assert.deepEqual(again.heard.messages.map((m) => m.data), ["four", "five"]);
    again.client.close();
  });
});

test("join, publish, send, presence, lock and unlock resolve with their answers; refusals reject with the server's words", async () => {
  await withProgram([], async (port) => {
    const ann = page(port, {
      token: await token("ann", { ...TALKER, info: { name: "Ann" } }),
    });
    const bob = page(port, {
      token: await token("bob", { ...TALKER, info: { name: "Bob" } }),
    });
    await connected(ann.client);
    await connected(bob.client);
    const annId = ann.client.id!, bobId = bob.client.id!;

    assert.deepEqual(await ann.client.join("room-1"), {
      group: "room-1",
      members: [{ uid: "ann", info: { name: "Ann" } }],
      locks: [],
    });
    const bobCame = next(ann.client, "join");
    const bobJoined = await bob.client.join("room-1");
    assert.equal(bobJoined.members?.length, 2);
    assert.deepEqual(await bobCame, {
      group: "room-1",
      uid: "bob",
      info: { name: "Bob" },
    });
    assert.deepEqual(
      [...ann.client.groups],
      ["room-1"],
      "kept to rejoin after a reconnect",
    );

    // A room message: the sender gets the id, the others the message with `from`.
    const roomLine = next(ann.client, "message");
    const published = await bob.client.publish("room-1", "hi");
    assert.deepEqual(await roomLine, {
      id: published.id,
      data: "hi",
      ts: (await roomLine).ts,
      group: "room-1",
      from: { uid: "bob", client: bobId },
    });

    // A direct message, with how many connections took it.
    const direct = next(bob.client, "message");
    const sent = await ann.client.send("bob", "psst");
    assert.deepEqual(sent, { id: sent.id, delivered: 1 });
    assert.deepEqual([(await direct).data, (await direct).from], ["psst", {
      uid: "ann",
      client: annId,
    }]);

    assert.deepEqual(await ann.client.presence("room-1"), {
      group: "room-1",
      members: [{ uid: "ann", info: { name: "Ann" } }, {
        uid: "bob",
        info: { name: "Bob" },
      }],
    });

    // Locks: the other member is told, and refused the key while ann holds it.
    const told = next(bob.client, "lock");
    assert.deepEqual(await ann.client.lock("room-1", "q3"), {
      group: "room-1",
      key: "q3",
      expiresAt: null,
    });
    assert.deepEqual(await told, {
      group: "room-1",
      key: "q3",
      holder: { uid: "ann", client: annId },
      expiresAt: null,
    });
    await assert.rejects(bob.client.lock("room-1", "q3"), (err) => {
      assert.ok(err instanceof RequestRefusedError);
      assert.equal(err.request, "lock");
      assert.equal(
        err.message,
        `q3 in room-1 is locked by ann (client ${annId})`,
      );
      return true;
    });
    const released = next(bob.client, "unlock");
    assert.deepEqual(await ann.client.unlock("room-1", "q3"), {
      group: "room-1",
      key: "q3",
    });
    assert.deepEqual(await released, { group: "room-1", key: "q3" });

    // Refusals carry the server's words, and the id of a message that was kept all the same.
    await assert.rejects(ann.client.send("nobody", "x"), (err) => {
      assert.ok(err instanceof RequestRefusedError);
      assert.equal(err.message, "client not found: nobody");
      assert.equal(typeof err.id, "number");
      return true;
    });
    await assert.rejects(ann.client.join("lobby"), {
      name: "RequestRefusedError",
      message: "not allowed to join lobby (the token's subscribe claim)",
    });
    await assert.rejects(bob.client.publish("room-2", "x"), {
      message: "not a member of room-2: join it first",
    });
    assert.deepEqual(
      [...ann.client.groups],
      ["room-1"],
      "a refused join is not kept",
    );

    const bobWent = next(ann.client, "leave");
    await bob.client.leave("room-1");
    assert.deepEqual(await bobWent, { group: "room-1", uid: "bob" });
    assert.deepEqual([...bob.client.groups], []);
    assert.deepEqual([ann.heard.errors, bob.heard.errors], [[], []]);
    ann.client.close();
    bob.client.close();

    // A request that gets no answer in time (this client never connects).
    const idle = new Client(`ws://127.0.0.1:${port}/ws`, {
      token: "x",
      requestTimeout: 50,
    });
    await assert.rejects(idle.join("room-1"), RequestTimeoutError);
    idle.close();
  });
});

test("with autoAck every message handed to the application is acked, and the backend reads it acked", async () => {
  await withProgram([], async (port) => {
    const { client } = page(port, { token: await token("ann"), autoAck: true });
    await connected(client);
    const ids: number[] = [];
    for (const message of ["one", "two", "three"]) {
      const arrived = next(client, "message");
      ids.push((await post(port, "/api/uids/ann/send", { message })).body.id);
      assert.equal((await arrived).data, message);
    }
    for (const id of ids) {
      await until(
        async () => (await api(port, "GET", `/messages/${id}`)).body.acked === 1,
        `message ${id} acked`,
      );
      const fate = (await api(port, "GET", `/messages/${id}`)).body;
      assert.deepEqual([fate.status, fate.acked], ["acked", 1]);
    }
    client.close();
  });
});

test("a short-lived token is refreshed in-band from getToken before its exp, and the connection outlives it", async () => {
  await withProgram([], async (port) => {
    const exps: number[] = [];
    const getToken = async () => {
      const fresh = await shortToken("ann", 3);
      exps.push(JSON.parse(atob(fresh.split(".")[1])).exp);
      return fresh;
    };
    const { client, heard } = page(port, { getToken });
    const refreshes: (number | null)[] = [];
    client.on("token", ({ exp }) => refreshes.push(exp));
    await connected(client);
    const id = client.id;
    const firstExp = exps[0];
    // Refreshes come until the first token has expired: the server would have closed with 4004.
    while (Date.now() <= firstExp * 1000) await next(client, "token");
    assert.ok(refreshes.length >= 1);
    assert.deepEqual(
      refreshes,
      exps.slice(1, refreshes.length + 1),
      "each refresh's exp, in order",
    );

    const arrived = next(client, "message");
    const sent = await post(port, "/api/uids/ann/send", {
      message: "still here",
    });
    assert.equal((await arrived).id, sent.body.id);
    assert.equal(client.id, id, "the same connection");
    assert.deepEqual(heard.closes, []);
    assert.deepEqual(heard.states, ["connecting", "connected"]);
    assert.deepEqual(heard.errors, []);
    client.close();
  });
});

test("the client stops for good and says why: 4009 from the API, 4004 without getToken, 4001 for a forged token", async () => {
  await withProgram([], async (port) => {
    // Closed through the API: DELETE /api/clients/{id}.
    const ann = page(port, { token: await token("ann"), ...QUICK });
    await connected(ann.client);
    const stopped = next(ann.client, "close");
    assert.equal(
      (await api(port, "DELETE", `/clients/${ann.client.id}`)).status,
      200,
    );
    assert.deepEqual(await stopped, {
      code: 4009,
      reason: "closed by server",
      reconnect: false,
    });
    assert.equal(ann.client.state, "closed");
    assert.deepEqual(ann.heard.states, ["connecting", "connected", "closed"]);
    await assert.rejects(ann.client.publish("room-1", "x"), (err) => {
      assert.ok(err instanceof ClientClosedError);
      assert.deepEqual([err.code, err.reason], [4009, "closed by server"]);
      return true;
    });

    // A logout: DELETE /api/uids/{uid}.
    const bob = page(port, { token: await token("bob"), ...QUICK });
    await connected(bob.client);
    const loggedOut = next(bob.client, "close");
    assert.equal((await api(port, "DELETE", "/uids/bob")).body.closed, 1);
    assert.deepEqual(await loggedOut, {
      code: 4009,
      reason: "logged out",
      reconnect: false,
    });

    // A token that expires, with no getToken to refresh it.
    const cy = page(port, { token: await shortToken("cy", 2), ...QUICK });
    await connected(cy.client);
    assert.deepEqual(await next(cy.client, "close"), {
      code: 4004,
      reason: "token expired",
      reconnect: false,
    });
    assert.equal(cy.client.state, "closed");

    // A token the server did not sign.
    const forger = await Authenticator.hmac(
      "another-secret-0123456789abcdef0123456",
    );
    const dee = page(port, { token: await forger.sign("dee", 60), ...QUICK });
    const refused = next(dee.client, "close");
    dee.client.connect();
    const close = await refused;
    assert.equal(close.code, 4001);
    assert.equal(close.reconnect, false);
    assert.ok(
      close.reason.length > 0,
      "the close says why the token was refused",
    );
    assert.deepEqual(dee.heard.states, ["connecting", "closed"]);
    assert.equal(
      (await api(port, "GET", "/clients/count")).body.count,
      0,
      "none of them came back",
    );
  });
});

test("a request written before the connection drops rejects with ConnectionLostError, and the client reconnects", async () => {
  await withProgram([], async (port, started) => {
    const { client } = page(port, {
      token: await token("ann", TALKER),
      ...QUICK,
    });
    await connected(client);
    // Stopped, the server can answer nothing; killed, its sockets end.
    const pid = started.child.pid!;
    process.kill(pid, "SIGSTOP");
    const joining = client.join("room-1");
    const dropped = next(client, "close");
    process.kill(pid, "SIGKILL");
    await assert.rejects(joining, (err) => {
      assert.ok(err instanceof ConnectionLostError);
      assert.equal(err.request, "join");
      return true;
    });
    const close = await dropped;
    assert.equal(close.reconnect, true, `after ${close.code} ${close.reason}`);
    assert.equal(client.state, "disconnected");
    assert.deepEqual(
      [...client.groups],
      [],
      "a join without its answer is not kept",
    );
    client.close();
  });
});

test("after a server restart the client rejoins its rooms, and a publish made while it was away goes out once it is back in", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-sdk-"));
  let server = await startOn(dataDir);
  const port = server.port;
  try {
    const { client, heard } = page(port, {
      token: await token("ann", TALKER),
      ...QUICK,
    });
    await connected(client);
    await client.join("room-1");
    const before = client.id;

    // The moment the server goes away, the application publishes: it waits for the next socket.
    let whileAway: Promise<{ id: number }> | undefined;
    const away = next(client, "close");
    client.on(
      "close",
      () => whileAway ??= client.publish("room-1", "while away"),
    );
    const rejoined = new Promise<ClientEvents["joined"]>((resolve, reject) =>
      client.on("welcome", () => next(client, "joined").then(resolve, reject))
    );
    assert.equal(await stopProgram(server.started), 0);
    assert.deepEqual(await away, {
      code: 1001,
      reason: "server going away",
      reconnect: true,
      delay: 0,
    });
    server = await startOn(dataDir, port);

    const snapshot = await within(WAIT_MS, "the rejoin", rejoined);
    assert.deepEqual(snapshot, {
      group: "room-1",
      members: [{ uid: "ann" }],
      locks: [],
    });
    const { id } = await whileAway!;
    assert.notEqual(client.id, before, "a new connection");
    const members = await api(port, "GET", "/groups/room-1/members");
    assert.deepEqual(
      members.body.items.map((m: { client: string }) => m.client),
      [client.id],
    );
    const history = await api(port, "GET", "/groups/room-1/history");
    assert.deepEqual(
      history.body.items.map((
        m: { id: number; data: string },
      ) => [m.id, m.data]),
      [
        [id, "while away"],
      ],
    );
    assert.equal(heard.states.at(-1), "connected");
    assert.deepEqual(heard.errors, []);
    client.close();
  } finally {
    await stopProgram(server.started);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/** Sends in flight at once in the restart story. */
const SENDERS = 4;
/** Sends answered 200 before the restart, and after it: then the stream stops. */
const ANSWERED_BEFORE = 300;
const ANSWERED_AFTER = 300;

test("the server restarts under a stream of sends: the application sees every message answered 200 once, in order", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-sdk-"));
  let server = await startOn(dataDir);
  const port = server.port;
  const uid = "kim";
  const kimToken = await token(uid);
  const { client, heard } = page(port, { token: kimToken, ...QUICK });
  // A plain tab of the same uid keeps it online, so that sends answer 200 while the SDK's client
  // is still away: those reach it by its resume, or not at all.
  let tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${kimToken}`);
  try {
    await connected(client);

    /** The text of every send answered 200, by its id; and the counts for the report. */
    const answered = new Map<number, string>();
    let answeredAfter = 0, unanswered = 0, refused = 0, sent = 0;
    let restarted = false;
    /** Senders wait on it while the server restarts. */
    let serverUp: Promise<void> = Promise.resolve();
    let restarting!: () => void;
    const restartDue = new Promise<void>((resolve) => restarting = resolve);
    let enough!: () => void;
    const streamDone = new Promise<void>((resolve) => enough = resolve);
    let stopping = false;

    const sender = async () => {
      while (!stopping) {
        await serverUp;
        const message = `m${sent++}`;
        let answer;
        try {
          answer = await post(port, "/send", { uid, message });
        } catch {
          unanswered++; // the server went away under it: kept or not, it was not answered
          continue;
        }
        if (answer.status !== 200) {
          refused++; // 503 while it drains
          continue;
        }
        answered.set(answer.body.id, message);
        if (restarted) answeredAfter++;
        if (answered.size >= ANSWERED_BEFORE) restarting();
        if (answeredAfter >= ANSWERED_AFTER) enough();
      }
    };
    const senders = Array.from({ length: SENDERS }, sender);

    await within(30_000, `${ANSWERED_BEFORE} sends answered`, restartDue);
    let up!: () => void;
    serverUp = new Promise((resolve) => up = resolve);
    assert.equal(await stopProgram(server.started), 0, "SIGTERM: a clean stop");
    server = await startOn(dataDir, port);
    await tab[Symbol.asyncDispose]();
    tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${kimToken}`);
    restarted = true;
    up();
    await within(
      30_000,
      `${ANSWERED_AFTER} sends answered after the restart`,
      streamDone,
    );
    stopping = true;
    await Promise.all(senders);

    // Every answered message reaches the application: wait for the last one, then name any missing.
    const handed = new Set<number>();
    const missing = () => [...answered.keys()].filter((id) => !handed.has(id));
    await within(
      WAIT_MS,
      "every answered message at the application",
      new Promise<void>((resolve) => {
        const check = () => missing().length === 0 && (off(), resolve());
        const off = client.on("message", (m) => (handed.add(m.id), check()));
        for (const m of heard.messages) handed.add(m.id);
        check();
      }),
    ).catch(() => {});
    assert.deepEqual(
      missing(),
      [],
      "answered 200, never handed to the application",
    );
    const ids = heard.messages.map((m) => m.id);
    const outOfOrder = ids.filter((id, i) => i > 0 && id <= ids[i - 1]);
    assert.deepEqual(
      outOfOrder,
      [],
      "each message once, in increasing id order",
    );
    for (const m of heard.messages) {
      if (answered.has(m.id)) {
        assert.equal(m.data, answered.get(m.id), `message ${m.id}`);
      }
    }
    assert.ok(
      heard.closes.some((c) => c.code === 1001 && c.reconnect),
      "it saw the restart",
    );
    const resumed = heard.welcomes.slice(1);
    assert.ok(
      resumed.length >= 1 && resumed.every((w) => w.recovered === true),
      "resumed whole",
    );
    assert.deepEqual(heard.errors, []);
    console.log(
      `restart story: ${answered.size} sends answered 200 (${answeredAfter} after the restart), ` +
        `${unanswered} unanswered, ${refused} refused; the application was handed ` +
        `${heard.messages.length} messages, ${
          resumed.reduce((n, w) => n + (w.replayed ?? 0), 0)
        } of them by resume`,
    );
    client.close();
  } finally {
    client.close();
    await tab[Symbol.asyncDispose]();
    await stopProgram(server.started);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
