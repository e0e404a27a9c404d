/**
 * Resume never loses or repeats a message at the seam, whatever the interleaving: tabs of a few
 * uids, each in a few groups, drop and come back with `since` (in the query or in the auth frame)
 * while messages go to their uids (/send and /api/uids/{uid}/send), their groups and everyone,
 * some of them published while a resume is in progress. Run against a real server with real
 * sockets; the model is the list of everything published, with a logical clock saying what
 * happened before what as the test saw it.
 *
 * What a connection must have received (checked when it closes, and at the end of each run):
 * - always: messages only, in strictly increasing id order (so no duplicate), each one addressed
 *   to it (its uid, a group of its token, or everyone) and, after a `since`, above it (after none,
 *   nothing delivered before it connected); every message addressed to it and published after its
 *   welcome (unless it dropped without waiting for them); and no more replayed than could have
 *   been kept;
 * - after a `since`, with `recovered: true`: exactly every message addressed to it above `since`,
 *   the replay then the live ones, nothing lost or repeated at the seam (or, for a tab that dropped
 *   without waiting, a prefix of that);
 * - `recovered` itself: false when more than HISTORY_SIZE of one of its streams' messages after
 *   `since` were kept before it connected (or `since` is older than the history file), true when
 *   even counting those published during the resume none was trimmed.
 *
 * The same property holds of a cluster: two nodes on one Redis (REDIS_URL), the tabs connecting
 * to one node or the other and the messages sent through either. There a node answers a send once
 * its own connections have it, not the other node's, so two checks count only what was sent
 * through the tab's own node: a fresh tab gets nothing sent before it connected, and what was
 * kept before it connected comes in the replay.
 *
 * On failure fast-check prints the shrunk scenario and its seed; RESUME_PROPERTY_SEED reruns (or
 * explores) another seed.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { test } from "node:test";
import fc from "fast-check";
import { startTestServer, type TestServer, until, within } from "./testkit.ts";
import { findRedisServer, startRedis, testWithoutRedis } from "./redis_testkit.ts";

const UIDS = ["u0", "u1", "u2"];
const GROUPS = ["g0", "g1"];

/**
 * Milliseconds a connection has to receive what it must have, or to open, welcome or close: far
 * above what a loaded two-core machine needs (a few ms), so that only a lost message reaches it.
 */
const WAIT_MS = 5000;

/** The fixed seed: the same scenarios on every run, so that a failure is one a rerun repeats. */
const SEED = Number(process.env.RESUME_PROPERTY_SEED ?? 1106);

/** Where a message goes, and by which route. */
type Target =
  | { to: "uid"; uid: string; via: "send" | "api" }
  | { to: "group"; group: string }
  | { to: "all" };

/** A browser tab: one uid, the groups of its token, and what it remembers before its first connect. */
interface TabSpec {
  uid: string;
  groups: string[];
  /**
   * fresh: it has seen nothing and connects without `since`; genesis: it saw the run's first
   * message (a broadcast sent before anyone connected); zero: it resumes with `since=0`, older than
   * the history file, which can never be recovered.
   */
  start: "fresh" | "genesis" | "zero";
}

/** Where a (re)connecting tab puts its `since`: the /ws query, or its auth frame (`auth=frame`). */
type Via = "query" | "frame";

type Action = { act: "connect"; tab: number; via: Via } | { act: "publish"; target: Target };

type Cmd =
  | { cmd: "publish"; target: Target }
  /** Every action fired at once, none awaited before the next is fired. */
  | { cmd: "burst"; actions: Action[] }
  /** `wait`: the tab first receives all it must have; otherwise it drops with frames in flight. */
  | { cmd: "disconnect"; tab: number; wait: boolean };

interface Scenario {
  historySize: number;
  tabs: TabSpec[];
  cmds: Cmd[];
}

const tabIndex = fc.nat(7);
const targetArb: fc.Arbitrary<Target> = fc.oneof(
  fc.record({
    to: fc.constant("uid" as const),
    uid: fc.constantFrom(...UIDS),
    via: fc.constantFrom("send" as const, "api" as const),
  }),
  fc.record({ to: fc.constant("group" as const), group: fc.constantFrom(...GROUPS) }),
  fc.record({ to: fc.constant("all" as const) }),
);
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  fc.record({
    act: fc.constant("connect" as const),
    tab: tabIndex,
    via: fc.constantFrom("query" as const, "frame" as const),
  }),
  fc.record({ act: fc.constant("publish" as const), target: targetArb }),
);
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ cmd: fc.constant("publish" as const), target: targetArb }) },
  {
    weight: 4,
    arbitrary: fc.record({
      cmd: fc.constant("burst" as const),
      actions: fc.array(actionArb, { minLength: 1, maxLength: 5 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      cmd: fc.constant("disconnect" as const),
      tab: tabIndex,
      wait: fc.boolean(),
    }),
  },
);
const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  // Mostly the default, under which only `since=0` is not recovered; sometimes so small that a
  // few messages trim what a tab missed.
  historySize: fc.constantFrom(1000, 1000, 2, 3),
  tabs: fc.array(
    fc.record({
      uid: fc.constantFrom(...UIDS),
      groups: fc.uniqueArray(fc.constantFrom(...GROUPS), { maxLength: 2 }),
      start: fc.constantFrom(
        "fresh" as const,
        "genesis" as const,
        "genesis" as const,
        "zero" as const,
      ),
    }),
    { minLength: 2, maxLength: 4 },
  ),
  cmds: fc.array(cmdArb, { minLength: 1, maxLength: 12 }),
});

/** One accepted publish, as the test saw it: `start` and `settle` are ticks of the run's clock. */
interface Pub {
  /** Unique in the run (`m<start>`): what ties a frame to its publish. */
  data: string;
  target: Target;
  /** Ticked just before the request was sent. */
  start: number;
  /** Ticked once the answer was read: the server had delivered the message by then. */
  settle: number;
  /**
   * Undefined only for a /api/uids/{uid}/send to an offline uid, which answers 404 without the
   * id, when the uid's history no longer held it either; a frame carrying it tells the id later.
   */
  id: number | undefined;
  /** The node (index of the run's servers) it was sent through. */
  node: number;
}

/** A `message` frame as a json connection gets it. */
interface Frame {
  id: number;
  data: string;
  group?: string;
}

/** One connection of a tab, from its first tick to its close. */
class Conn {
  readonly ws: WebSocket;
  readonly uid: string;
  readonly groups: string[];
  /** The `since` it connected with; undefined for a fresh connect. */
  readonly since: number | undefined;
  /** The node (index of the run's servers) it is connected to. */
  readonly node: number;
  /** Ticked before the socket was made. */
  readonly start: number;
  /** Ticked when the welcome frame came (Infinity until then). */
  welcomed = Infinity;
  /** Ticked when the test began to close it (Infinity while it is open). */
  end = Infinity;
  welcome: Record<string, unknown> | undefined;
  readonly messages: Frame[] = [];
  /** The data of every message received. */
  readonly got = new Set<string>();
  /** Anything that was neither the welcome first nor a message after it. */
  readonly unexpected: string[] = [];
  readonly closed: Promise<void>;
  readonly welcomed$: Promise<void>;
  #wake = () => {};

  constructor(
    url: string,
    tab: TabSpec,
    since: number | undefined,
    tick: () => number,
    node: number,
  ) {
    this.node = node;
    this.uid = tab.uid;
    this.groups = tab.groups;
    this.since = since;
    this.start = tick();
    this.ws = new WebSocket(url);
    let welcomed = () => {};
    this.welcomed$ = new Promise((resolve) => welcomed = resolve);
    this.ws.addEventListener("message", (e) => {
      const text = String(e.data);
      const frame = JSON.parse(text);
      if (!this.welcome && frame.type === "welcome") {
        this.welcomed = tick();
        this.welcome = frame;
        welcomed();
      } else if (this.welcome && frame.type === "message") {
        this.messages.push({ id: frame.id, data: frame.data, group: frame.group });
        this.got.add(frame.data);
      } else {
        this.unexpected.push(text);
      }
      this.#wake();
    });
    this.closed = new Promise((resolve) =>
      this.ws.addEventListener("close", () => {
        this.#wake();
        resolve();
      })
    );
  }

  /** What it says of itself, for a failure's message. */
  describe(): string {
    return `${this.uid} ${JSON.stringify(this.groups)} since=${this.since} welcome=${
      JSON.stringify(this.welcome)
    } got=${JSON.stringify(this.messages.map((m) => m.id))}`;
  }

  /** Resolves once `done()` holds, re-checked at each frame; fails loudly after WAIT_MS. */
  async until(done: () => boolean, what: () => string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out after ${WAIT_MS} ms: ${what()}\n${this.describe()}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }
}

/** Whether `pub` is addressed to `conn`: its uid, one of its token's groups, or everyone. */
function addressed(conn: Conn, pub: Pub): boolean {
  const t = pub.target;
  return t.to === "all" || (t.to === "uid" ? t.uid === conn.uid : conn.groups.includes(t.group));
}

/** The streams a resume of `conn` reads, each with the publishes that go to it. */
function streamsOf(conn: Conn, pubs: Pub[]): Pub[][] {
  return [
    pubs.filter((p) => p.target.to === "all"),
    pubs.filter((p) => p.target.to === "uid" && p.target.uid === conn.uid),
    ...conn.groups.map((g) => pubs.filter((p) => p.target.to === "group" && p.target.group === g)),
  ];
}

/** One run of a scenario against its own server, or its own cluster of servers. */
class Run {
  #clock = 0;
  readonly tick = () => ++this.#clock;
  readonly pubs: Pub[] = [];
  readonly tabs: { spec: TabSpec; token: string; seen: number | undefined; conn?: Conn }[] = [];
  readonly conns: Conn[] = [];
  /** The id of the run's first message, a broadcast sent before anyone connected. */
  genesis = 0;

  #published = 0;
  #connected = 0;

  constructor(readonly servers: TestServer[], readonly historySize: number) {}

  /** The server the run's first node is: tokens and history look-ups go there. */
  get server(): TestServer {
    return this.servers[0];
  }

  async setUp(specs: TabSpec[]): Promise<void> {
    this.genesis = (await this.publish({ to: "all" })).id!;
    for (const spec of specs) {
      const token = await this.server.token(spec.uid, { groups: spec.groups });
      const seen = spec.start === "fresh" ? undefined : spec.start === "zero" ? 0 : this.genesis;
      this.tabs.push({ spec, token, seen });
    }
  }

  /** Publishes to `target` and records it; the request is sent before the first await. */
  async publish(target: Target): Promise<Pub> {
    const start = this.tick();
    const data = `m${start}`;
    // Through each node in turn.
    const node = this.#published++ % this.servers.length;
    const { url } = this.servers[node];
    const post = (path: string) =>
      fetch(`${url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: data }),
      });
    const res = await (
      target.to === "uid" && target.via === "send"
        ? fetch(`${url}/send?${new URLSearchParams({ uid: target.uid, message: data })}`)
        : target.to === "uid"
        ? post(`/api/uids/${target.uid}/send`)
        : target.to === "group"
        ? post(`/api/groups/${target.group}/send`)
        : post("/api/broadcast")
    );
    const body = await res.json();
    const settle = this.tick();
    const what = `${JSON.stringify(target)}: ${res.status} ${JSON.stringify(body)}`;
    // An offline uid answers 404, and the message is kept all the same.
    assert.ok(res.status === 200 || (res.status === 404 && target.to === "uid"), what);
    let id: number | undefined = body.id;
    if (id === undefined && target.to === "uid" && target.via === "api") {
      // /api/uids/{uid}/send's 404 does not say the id (/send's does): the uid's history does.
      const kept = await this.server.api("GET", `/uids/${target.uid}/history?limit=1000`);
      id = kept.body.items.find((m: { data: string }) => m.data === data)?.id;
    } else assert.equal(typeof id, "number", what);
    const pub = { data, target, start, settle, id, node };
    this.pubs.push(pub);
    return pub;
  }

  /** Opens a connection for tab `i`, resuming after what it saw; resolves once welcomed. */
  async connect(i: number, via: Via): Promise<void> {
    const tab = this.tabs[i];
    const since = tab.seen;
    const query = via === "frame"
      ? "auth=frame"
      : `token=${tab.token}${since === undefined ? "" : `&since=${since}`}`;
    // To each node in turn, with a stride that is not the publishes' (which alternate).
    const node = Math.floor(this.#connected++ / 2) % this.servers.length;
    const url = `${this.servers[node].wsUrl}/ws?format=json&${query}`;
    const conn = new Conn(url, tab.spec, since, this.tick, node);
    tab.conn = conn;
    this.conns.push(conn);
    if (via === "frame") {
      await within(WAIT_MS, "open", new Promise((open) => conn.ws.addEventListener("open", open)));
      conn.ws.send(JSON.stringify({ type: "auth", token: tab.token, since }));
    }
    await within(WAIT_MS, `welcome of ${conn.describe()}`, conn.welcomed$);
  }

  /** Closes tab `i`'s connection, after it received all it must when `wait`; then checks it. */
  async disconnect(i: number, wait: boolean): Promise<void> {
    const tab = this.tabs[i];
    const conn = tab.conn;
    if (!conn) return;
    if (wait) {
      const must = this.mustHave(conn);
      const replayed = Number(conn.welcome?.replayed ?? 0);
      const missing = () => must.filter((p) => !conn.got.has(p.data));
      await conn.until(
        () => conn.messages.length >= replayed && missing().length === 0,
        () => `missing ${JSON.stringify(missing())}`,
      );
    }
    conn.end = this.tick();
    conn.ws.close();
    await within(WAIT_MS, `close of ${conn.describe()}`, conn.closed);
    tab.conn = undefined;
    this.check(conn, wait);
    // The next connect resumes after the last message this one saw.
    tab.seen = conn.messages.at(-1)?.id ?? tab.seen;
  }

  async apply(cmd: Cmd): Promise<void> {
    const n = this.tabs.length;
    switch (cmd.cmd) {
      case "publish":
        await this.publish(cmd.target);
        return;
      case "disconnect":
        return this.disconnect(cmd.tab % n, cmd.wait);
      case "burst": {
        const connects = new Set<number>();
        const fired = cmd.actions.filter((a) => {
          if (a.act === "publish") return true;
          if (connects.has(a.tab % n)) return false;
          connects.add(a.tab % n);
          return true;
        });
        // A tab that is open reconnects: it drops first, having received all it must.
        for (const i of connects) await this.disconnect(i, true);
        await Promise.all(
          fired.map((a) =>
            a.act === "connect" ? this.connect(a.tab % n, a.via) : this.publish(a.target)
          ),
        );
        return;
      }
    }
  }

  /**
   * What `conn` must receive of what is published before it closes: everything addressed to it
   * after `since` when it recovered; else what was published after its welcome (which comes live
   * whatever the replay found).
   */
  mustHave(conn: Conn): Pub[] {
    const recovered = conn.welcome?.recovered === true;
    return this.addressedAfter(conn).filter((p) => recovered || p.start > conn.welcomed);
  }

  /**
   * The messages addressed to `conn` after its `since` (after nothing, for a fresh connect) that
   * were published before it closed, in id order. One whose id is unknown is in only when it was
   * published after the welcome, so surely after `since`; it then sorts last.
   */
  addressedAfter(conn: Conn): Pub[] {
    const since = conn.since ?? 0;
    return this.pubs
      .filter((p) =>
        addressed(conn, p) && p.start < conn.end &&
        (p.id === undefined ? p.start > conn.welcomed : p.id > since)
      )
      .sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity));
  }

  /** Everything that must hold of `conn`; `complete` when it received all it must before closing. */
  check(conn: Conn, complete: boolean): void {
    const where =
      `HISTORY_SIZE=${this.historySize} genesis=${this.genesis} node=${conn.node}: ${conn.describe()}`;
    assert.deepEqual(conn.unexpected, [], `only a welcome, then messages: ${where}`);
    const ids = conn.messages.map((m) => m.id);
    for (let k = 1; k < ids.length; k++) {
      assert.ok(ids[k - 1] < ids[k], `ids strictly increasing (no repeat, no reorder): ${where}`);
    }
    const byData = new Map(this.pubs.map((p) => [p.data, p]));
    for (const m of conn.messages) {
      const pub = byData.get(m.data);
      assert.ok(pub, `message ${m.id} ${m.data} was published: ${where}`);
      pub.id ??= m.id; // the id a 404 did not say
      const group = pub.target.to === "group" ? pub.target.group : undefined;
      assert.deepEqual([m.id, m.group], [pub.id, group], `${m.data} is as published: ${where}`);
      assert.ok(addressed(conn, pub), `${m.id} ${JSON.stringify(pub.target)} is for it: ${where}`);
      // After a since, only what is after it; after none, nothing delivered before it connected.
      if (conn.since !== undefined) assert.ok(m.id > conn.since, `${m.id} after since: ${where}`);
      else if (pub.node === conn.node) {
        assert.ok(pub.settle > conn.start, `${m.id} came before it connected: ${where}`);
      }
    }
    const after = this.addressedAfter(conn);
    const label = (p: Pub) => p.id ?? p.data;
    // Published after the welcome: it comes live, whatever the replay found.
    const live = after.filter((p) => p.start > conn.welcomed);
    if (complete) {
      const lost = live.filter((p) => !conn.got.has(p.data)).map(label);
      assert.deepEqual(lost, [], `every message published after the welcome: ${where}`);
    }
    if (conn.since === undefined) {
      assert.equal(conn.welcome?.recovered, undefined, `no since, no recovered: ${where}`);
      return;
    }
    const { recovered, replayed } = conn.welcome as { recovered: unknown; replayed: unknown };
    assert.equal(typeof recovered, "boolean", where);
    assert.ok(typeof replayed === "number", where);
    // The replay reads what was kept before the welcome: at most what had been published by then
    // (counting any whose id is unknown).
    const couldReplay =
      this.pubs.filter((p) =>
        addressed(conn, p) && p.start < conn.welcomed && (p.id === undefined || p.id > conn.since!)
      ).length;
    assert.ok(replayed <= couldReplay, `replayed ≤ ${couldReplay}: ${where}`);
    this.checkRecovered(conn, recovered as boolean, where);
    if (recovered !== true) return;
    // Recovered: everything addressed to it after since, each once and in id order, the replay
    // then the live ones; a tab that dropped without waiting got the beginning of that.
    const expected = after.map(label);
    if (complete) assert.deepEqual(ids, expected, `all, once, in order: ${where}`);
    else assert.deepEqual(ids, expected.slice(0, ids.length), `a prefix of all: ${where}`);
    // What was delivered before it connected was kept, so it comes from history.
    const kept = after.filter((p) => p.settle < conn.start && p.node === conn.node).length;
    assert.ok(replayed >= kept, `replayed ≥ ${kept} kept before it connected: ${where}`);
  }

  /**
   * `recovered` against the model: false when `since` is older than the history file, or one of
   * its streams kept more than HISTORY_SIZE messages after `since` before it connected; true when
   * even counting all those published before its welcome, none of its streams had that many.
   */
  checkRecovered(conn: Conn, recovered: boolean, where: string): void {
    const since = conn.since!;
    const streams = streamsOf(conn, this.pubs);
    const count = (stream: Pub[], counted: (p: Pub) => boolean) => stream.filter(counted).length;
    const trimmed = since < this.genesis ||
      streams.some((s) =>
        count(s, (p) => p.id !== undefined && p.id > since && p.settle < conn.start) >
          this.historySize
      );
    const mayBeTrimmed = since < this.genesis ||
      streams.some((s) =>
        count(s, (p) => (p.id === undefined || p.id > since) && p.start < conn.welcomed) >
          this.historySize
      );
    if (trimmed) assert.equal(recovered, false, `trimmed, so not recovered: ${where}`);
    if (!mayBeTrimmed) assert.equal(recovered, true, `nothing trimmed, so recovered: ${where}`);
  }
}

/** Runs `scenario` against `servers`: the commands, then every tab receives all it must. */
async function runScenario(servers: TestServer[], { historySize, tabs, cmds }: Scenario) {
  const run = new Run(servers, historySize);
  try {
    await run.setUp(tabs);
    for (const cmd of cmds) await run.apply(cmd);
    // The end: every open tab receives what it must, then closes and is checked.
    for (let i = 0; i < run.tabs.length; i++) await run.disconnect(i, true);
  } finally {
    for (const conn of run.conns) conn.ws.close();
    await Promise.all(run.conns.map((c) => within(WAIT_MS, "close", c.closed)));
  }
}

test("a tab that resumes with since gets every message once and in order across the seam, or is told it cannot", async () => {
  await fc.assert(
    fc.asyncProperty(scenarioArb, async (scenario) => {
      await using server = await startTestServer({
        historySize: scenario.historySize,
        maxConnectsPerIp: 0,
      });
      await runScenario([server], scenario);
    }),
    { numRuns: 40, seed: SEED },
  );
});

if (!findRedisServer()) {
  testWithoutRedis("the resume property on a two-node cluster");
} else {
  test("the same on a cluster of two nodes on one Redis: tabs on either node, sends through either", async () => {
    await using redis = await startRedis();
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (scenario) => {
        // Each run its own keys in the one Redis, as a deployment of its own.
        const prefix = `run${++runs}:`;
        const settings = {
          historySize: scenario.historySize,
          maxConnectsPerIp: 0,
          redisUrl: redis.url,
          redisPrefix: prefix,
        };
        await using a = await startTestServer({ ...settings, nodeName: "a" });
        await using b = await startTestServer({ ...settings, nodeName: "b" });
        for (const server of [a, b]) {
          await until(
            async () => (await fetch(`${server.url}/readyz`)).status === 200,
            "the node joined",
          );
        }
        await runScenario([a, b], scenario);
      }),
      { numRuns: 25, seed: SEED },
    );
  });
}
