/**
 * A crash, told against the program as users run it (main.ts on this runtime, or the executable
 * under `make test-bin`): a backend sends about a thousand messages a second, the process is killed
 * with SIGKILL while requests are in flight, and the next start on the same data directory has kept
 * every message it answered 200 for, replays them to a resuming tab in order, and hands out no id
 * twice.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import {
  connectClient,
  inFile,
  killProgram,
  PROGRAM_SECRET,
  programToken as token,
  type Started,
  startProgram,
  stopProgram,
  type TestClient,
  within,
} from "./testkit.ts";

/** Messages the stream sends at most: bounds the test whatever the machine's speed. */
const MAX_SENDS = 4000;

/**
 * 200 answers after which the process is killed, at the next message the tab receives before its
 * send's answer: about a second into the stream at 1,000/s.
 */
const KILL_AFTER = 1200;

/** Sends start BURST at a time every BURST_MS, 1,000 a second: a steady stream, not a wave. */
const BURST = 5;
const BURST_MS = 5;

/** Sends waiting for their answer at most; a slow server slows the stream down, not the test. */
const MAX_IN_FLIGHT = 200;

/** Messages kept per stream: more than the stream can send, so nothing is trimmed. */
const HISTORY_SIZE = 2 * MAX_SENDS;

/** History pages the backend reads: smaller than a stream's share, so that `next` is followed. */
const PAGE = 250;

/** The uid whose tab is connected, and the group that tab is in. */
const UID = "kim";
const GROUP = "room";

/** The program on `dataDir`, with its defaults (SQLite message log and history) on a free port. */
async function startOn(dataDir: string): Promise<{ started: Started; url: string }> {
  const started = await startProgram(["--port", "0", "--history-size", String(HISTORY_SIZE)], {
    DATA_DIR: dataDir,
    JWT_SECRET: PROGRAM_SECRET,
  });
  const port = Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]);
  return { started, url: `http://127.0.0.1:${port}` };
}

/** POSTs `body` as JSON to `path`; answers the status and the JSON. */
async function post(url: string, path: string, body: Record<string, unknown>) {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Every item a stream's history keeps after `since`, read page by page as a backend would. */
async function history(url: string, stream: string, since: number) {
  const items: { id: number; data: string }[] = [];
  let recovered = true, pages = 0;
  for (let next: number | null = since; next !== null; pages++) {
    const res: Response = await fetch(`${url}/api/${stream}/history?since=${next}&limit=${PAGE}`);
    assert.equal(res.status, 200, `${stream}/history`);
    const page = await res.json();
    items.push(...page.items);
    recovered &&= page.recovered;
    next = page.next;
  }
  return { items, recovered, pages };
}

/** What the stream saw: the answered messages by id, and how the others ended. */
interface Stream {
  /** The message text of every send answered 200, by its id. */
  answered: Map<number, string>;
  /** Sends started. */
  sent: number;
  /**
   * The message the tab received while its send still waited for the answer, at which the process
   * was killed: the server had kept it and was answering.
   */
  killedAt: { id: number; data: string } | undefined;
  /** Sends that got no answer: the kill reset their connection. */
  failed: number;
}

/**
 * Sends to `url` about 1,000 messages a second, alternately to UID by /send and to GROUP by the
 * API. Once KILL_AFTER were answered 200, kills `pid` with SIGKILL the moment `tab` receives a
 * message whose send has no answer yet: the server is between keeping a message and answering for
 * it. Resolves once every send has its answer or its failure.
 */
async function streamAndKill(url: string, pid: number, tab: TestClient): Promise<Stream> {
  const stream: Stream = {
    answered: new Map(),
    sent: 0,
    killedAt: undefined,
    failed: 0,
  };
  const unanswered = new Set<string>();
  const pending = new Set<Promise<void>>();
  let killed = false;
  let over!: () => void;
  const stopped = new Promise<void>((resolve) => over = resolve);
  const kill = () => {
    if (killed) return;
    killed = true;
    clearInterval(bursts);
    process.kill(pid, "SIGKILL");
    over();
  };
  const onFrame = (e: MessageEvent) => {
    const frame = JSON.parse(e.data);
    if (stream.answered.size < KILL_AFTER || !unanswered.has(frame.data)) return;
    stream.killedAt = { id: frame.id, data: frame.data };
    kill();
  };
  tab.ws.addEventListener("message", onFrame);
  const sendOne = async (i: number) => {
    const message = `m${i}`;
    unanswered.add(message);
    let answer;
    try {
      answer = i % 2 === 0
        ? await post(url, "/send", { uid: UID, message })
        : await post(url, `/api/groups/${GROUP}/send`, { message });
    } catch (err) {
      unanswered.delete(message);
      if (!killed) throw err;
      stream.failed++;
      return;
    }
    unanswered.delete(message);
    assert.equal(answer.status, 200, `send ${i}: ${JSON.stringify(answer.body)}`);
    stream.answered.set(answer.body.id, message);
  };
  const errors: unknown[] = [];
  const bursts = setInterval(() => {
    // Every send answered and none left to send: no moment to kill at came (the test says so).
    if (stream.sent === MAX_SENDS && unanswered.size === 0) kill();
    for (let k = 0; k < BURST && stream.sent < MAX_SENDS && unanswered.size < MAX_IN_FLIGHT; k++) {
      // A send that fails before the kill ends the stream at once, and the test with it.
      const sending = sendOne(stream.sent++).catch((err) => (errors.push(err), kill()));
      pending.add(sending);
      sending.finally(() => pending.delete(sending));
    }
  }, BURST_MS);
  try {
    await within(20_000, `${KILL_AFTER} sends answered 200`, stopped);
  } finally {
    clearInterval(bursts);
    tab.ws.removeEventListener("message", onFrame);
  }
  await within(10_000, "the answers or failures of the sends in flight", Promise.all(pending));
  if (errors.length > 0) throw errors[0];
  return stream;
}

test("kill -9 in the middle of a stream of sends: every message answered 200 is kept, replayed in order to a resuming tab, and no id is reused", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-crash-"));
  const kimToken = await token(UID, { groups: [GROUP] });
  let first: Started | undefined, second: Started | undefined;
  try {
    const before = await startOn(dataDir);
    first = before.started;
    // A tab of the uid, in the group, so that /send answers 200 and the group has a member.
    const tab = await connectClient(
      `${before.url.replace("http", "ws")}/ws?format=json&token=${kimToken}`,
    );
    assert.equal((await tab.nextJson()).type, "welcome");
    const seen = (await post(before.url, "/send", { uid: UID, message: "seen" })).body.id;
    assert.equal((await tab.nextJson()).id, seen, "the tab saw the last message before the stream");

    const stream = await streamAndKill(before.url, first.child.pid!, tab);
    assert.equal(await first.exited, null, "killed by SIGKILL");
    await tab.closed;
    assert.ok(stream.killedAt, "killed while the server answered a send it had kept and pushed");
    const answered = [...stream.answered.keys()].sort((a, b) => a - b);
    assert.ok(answered[0] > seen, `the stream's ids ${answered[0]}… follow ${seen}`);

    // The next start, on the same data directory.
    const after = await startOn(dataDir);
    second = after.started;

    // The message log: nothing is left accepted; what the last run left so is now interrupted, and
    // the start said how many (often none: a status settles within a millisecond of its record).
    const log = join(dataDir, "messages.db");
    const statuses = Object.fromEntries(
      inFile(log, "SELECT status, count(*) AS n FROM messages GROUP BY status")
        .map((row) => [row.status, Number(row.n)]),
    );
    assert.equal(
      statuses.accepted,
      undefined,
      `no row is left accepted: ${JSON.stringify(statuses)}`,
    );
    const interrupted = statuses.interrupted ?? 0;
    const said = new RegExp(
      `message log: ${interrupted} message\\(s\\) the last run left accepted`,
    );
    if (interrupted > 0) await within(5000, "the count of interrupted rows", second.printed(said));
    else assert.doesNotMatch(second.output(), /the last run left accepted/);

    // What the backend reads back: every answered message, with its text, in its stream.
    const uidKept = await history(after.url, `uids/${UID}`, seen);
    const groupKept = await history(after.url, `groups/${GROUP}`, seen);
    assert.equal(uidKept.recovered && groupKept.recovered, true, "nothing was trimmed");
    assert.ok(uidKept.pages > 1 && groupKept.pages > 1, "the backend followed next");
    const kept = new Map(
      [...uidKept.items, ...groupKept.items].map((item) => [item.id, item.data] as const),
    );
    const lost = answered.filter((id) => kept.get(id) !== stream.answered.get(id));
    assert.deepEqual(
      lost.map((id) => ({ id, sent: stream.answered.get(id), kept: kept.get(id) ?? null })),
      [],
      `of ${answered.length} messages answered 200 before the kill (${stream.failed} sends got no ` +
        "answer), these are not in history",
    );

    const { id: pushed, data } = stream.killedAt;
    assert.equal(kept.get(pushed), data, `message ${pushed}, pushed before the kill, is kept`);

    // A tab that resumes from the last message it saw gets all of them, in increasing id order.
    const back = await connectClient(
      `${after.url.replace("http", "ws")}/ws?format=json&since=${seen}&token=${kimToken}`,
    );
    const welcome = await back.nextJson();
    assert.deepEqual(
      [welcome.type, welcome.recovered, welcome.replayed],
      ["welcome", true, kept.size],
      `the welcome of a tab resuming from ${seen}, of ${kept.size} messages kept after it`,
    );
    const replayed: number[] = [];
    for (let n = 0; n < kept.size; n++) {
      const frame = await back.nextJson();
      assert.equal(frame.data, kept.get(frame.id as number), `replayed message ${frame.id}`);
      replayed.push(frame.id as number);
    }
    assert.deepEqual(replayed, [...kept.keys()].sort((a, b) => a - b), "in increasing id order");
    const got = new Set(replayed);
    const missed = answered.filter((id) => !got.has(id));
    assert.deepEqual(missed, [], "every message answered 200 is replayed");

    // The next message gets an id above every id of the last run, and comes live after the replay.
    const highest = Math.max(...answered, ...kept.keys());
    const live = await post(after.url, "/send", { uid: UID, message: "after the crash" });
    assert.equal(live.status, 200);
    assert.ok(live.body.id > highest, `id ${live.body.id} after ${highest}: no id is reused`);
    const next = await back.nextJson();
    assert.deepEqual([next.type, next.id, next.data], ["message", live.body.id, "after the crash"]);
    await back[Symbol.asyncDispose]();
    assert.equal(await stopProgram(second), 0);
    second = undefined;
  } finally {
    for (const started of [first, second]) if (started) await killProgram(started);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
