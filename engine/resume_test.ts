/**
 * Resume: a client that comes back with `since` gets what it missed on its uid, its groups and
 * everyone, then what is published while it catches up, each once and in id order. The stories
 * first, then a property test that publishes while the history is being read.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate } from "node:timers";
import fc from "fast-check";
import { countFrom } from "../message/ids.ts";
import { MemoryBroker } from "./broker_memory.ts";
import type { HistoryPage, HistoryStore } from "./history.ts";
import { MemoryHistory } from "./history_memory.ts";
import { Resume, type ResumeOutcome } from "./resume.ts";
import { ALL_STREAM, groupStream, type Publication, type StreamName, uidStream } from "./stream.ts";

const ME = uidStream("alice");
const TEAM = groupStream("team");
const OPS = groupStream("ops");
const OTHER = uidStream("bob");
const ELSEWHERE = groupStream("sales");
/** The streams of the connection that resumes: its uid, its two groups, and everyone. */
const MINE: StreamName[] = [ME, TEAM, OPS, ALL_STREAM];

/**
 * A memory store whose reads wait until the test opens them one by one (`open`), so the test can
 * publish while a resume reads. `onRead` and `onAppend` see each call as it reaches the store.
 */
class GatedHistory extends MemoryHistory {
  /** Reads waiting to be let through, in the order they were asked for. */
  readonly waiting: (() => void)[] = [];
  reads = 0;
  onRead: (stream: StreamName, since: number) => void = () => {};

  constructor(size = 10_000) {
    super({ size, ttl: 3600, sweepMs: 0 });
  }

  override async read(stream: StreamName, since: number, limit: number): Promise<HistoryPage> {
    this.reads++;
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.onRead(stream, since);
    return super.read(stream, since, limit);
  }

  /** Lets the `n`th waiting read through (counted modulo how many wait); false when none waits. */
  open(n = 0): boolean {
    if (this.waiting.length === 0) return false;
    this.waiting.splice(n % this.waiting.length, 1)[0]();
    return true;
  }
}

/** Lets every pending promise callback run (a macrotask turn; setTimeout would cost ~1 ms). */
const tick = () => new Promise((resolve) => setImmediate(resolve));

/**
 * The hub's part, as it will be wired: it subscribes to the broker, remembers the last id it was
 * handed (the horizon of the next resume), and routes the connection's streams to its resume.
 */
function hub(broker: MemoryBroker, streams: StreamName[] = MINE) {
  const following = new Set(streams);
  const h = {
    last: 0,
    resume: undefined as Resume | undefined,
    got: [] as Publication[],
    /** A connection that comes back with `since` on `history`: its resume, not yet read. */
    connect(since: number, history: HistoryStore, pageSize?: number): Resume {
      h.resume = new Resume({
        streams,
        since,
        horizon: h.last,
        history,
        deliver: (p) => h.got.push(p),
        pageSize,
      });
      return h.resume;
    },
  };
  broker.subscribe((p) => {
    h.last = p.id;
    if (following.has(p.stream)) h.resume?.live(p);
  });
  return h;
}

/** Reads and flushes `resume` with every read let through; resolves with the outcome. */
async function resumeNow(resume: Resume, history: GatedHistory): Promise<ResumeOutcome> {
  let outcome: ResumeOutcome | undefined;
  const reading = resume.read().then((o) => outcome = o);
  while (!outcome) {
    while (history.open());
    await tick();
  }
  await reading;
  resume.flush();
  return outcome;
}

test("a client that was away gets what its uid, its groups and everyone missed, in id order, then live ones", async () => {
  const history = new GatedHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker);
  for (const stream of [ME, OTHER, TEAM, ALL_STREAM, ELSEWHERE, OPS, ME]) {
    await broker.publish(stream, `to ${stream}`);
  }
  // The client saw up to id 1 before it went away.
  const outcome = await resumeNow(h.connect(1, history), history);
  assert.deepEqual(outcome, { recovered: true, replayed: 4 });
  assert.deepEqual(h.got.map((p) => p.id), [3, 4, 6, 7]);
  assert.deepEqual(h.got.map((p) => p.data), [
    "to group:team",
    "to all",
    "to group:ops",
    "to uid:alice",
  ]);
  await broker.publish(TEAM, "live");
  await broker.publish(OTHER, "not mine");
  assert.deepEqual(h.got.map((p) => p.id), [3, 4, 6, 7, 8]);
  await broker.close();
});

test("published while history is read: sent after the replay, once, nothing lost at the seam", async () => {
  const history = new GatedHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker);
  await broker.publish(ME, "missed 1");
  await broker.publish(ALL_STREAM, "missed 2");
  const resume = h.connect(0, history);
  const reading = resume.read();
  await tick();
  assert.equal(history.waiting.length, MINE.length, "one read per stream, all at once");
  // Published while the reads wait: the store has them before the reads are let through, so a
  // read returns them, and they come live too. Each must be sent once.
  await broker.publish(ME, "during 3");
  await broker.publish(TEAM, "during 4");
  while (history.open());
  const outcome = await reading;
  await broker.publish(OPS, "after the read, before the flush 5");
  assert.equal(h.got.length, 0, "nothing is sent before flush, so the welcome can go first");
  resume.flush();
  await broker.publish(ALL_STREAM, "after the flush 6");
  assert.deepEqual(outcome, { recovered: true, replayed: 2 });
  assert.deepEqual(h.got.map((p) => p.id), [1, 2, 3, 4, 5, 6]);
  await broker.close();
});

test("streams read at different times: one published between two reads is not lost", async () => {
  const history = new GatedHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker, [ME, TEAM]);
  await broker.publish(ME, "1");
  const resume = h.connect(0, history);
  const reading = resume.read();
  await tick();
  // The read of the team stream goes first and finds nothing; then 2 (team) and 3 (alice) are
  // published; then the read of alice returns 1 and 3. Taking the reads at their word would send
  // 1, 3 and drop 2 as "older than what was sent". The horizon (1) sends 1 from history and leaves
  // 2 and 3 to come live.
  history.open(1);
  await tick();
  await broker.publish(TEAM, "2");
  await broker.publish(ME, "3");
  history.open(0);
  assert.deepEqual(await reading, { recovered: true, replayed: 1 });
  resume.flush();
  assert.deepEqual(h.got.map((p) => p.id), [1, 2, 3]);
  await broker.close();
});

test("a history too short for the time away: recovered is false, and what is kept still comes in order", async () => {
  const history = new GatedHistory(2);
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker);
  for (let i = 0; i < 5; i++) await broker.publish(ME, `${i + 1}`);
  await broker.publish(TEAM, "6");
  const outcome = await resumeNow(h.connect(1, history), history);
  assert.deepEqual(outcome, { recovered: false, replayed: 3 });
  assert.deepEqual(h.got.map((p) => p.id), [4, 5, 6]);
  await broker.close();
});

test("a long history is read in pages, and pages past the horizon are not read", async () => {
  const history = new GatedHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker, [ME]);
  for (let i = 0; i < 10; i++) await broker.publish(ME, `${i + 1}`);
  const outcome = await resumeNow(h.connect(2, history, 3), history);
  assert.deepEqual(outcome, { recovered: true, replayed: 8 });
  assert.deepEqual(h.got.map((p) => p.id), [3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(history.reads, 3, "pages after 2, 5 and 8; the last page ends at the horizon");
  await broker.close();
});

test("a client that saw everything already: no history is read, and live ones come", async () => {
  const history = new GatedHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker);
  await broker.publish(ME, "1");
  const resume = h.connect(1, history);
  assert.deepEqual(await resume.read(), { recovered: true, replayed: 0 });
  resume.flush();
  await broker.publish(ME, "2");
  assert.equal(history.reads, 0);
  assert.deepEqual(h.got.map((p) => p.id), [2]);
  await broker.close();
});

test("a read that fails: read rejects naming the stream, and flush still sends what came live", async () => {
  const kept = new MemoryHistory({ size: 100, ttl: 3600, sweepMs: 0 });
  const failing: HistoryStore = {
    append: (p) => kept.append(p),
    read: (stream) =>
      stream === TEAM
        ? Promise.reject(new Error("history.db: disk I/O error"))
        : kept.read(stream, 0, 1),
    wrote: () => {},
    writtenThrough: () => 0,
    close: () => kept.close(),
  };
  const broker = new MemoryBroker({ ids: countFrom(0), history: failing });
  const h = hub(broker);
  await broker.publish(ME, "1");
  const resume = h.connect(0, failing);
  const reading = resume.read();
  await broker.publish(ME, "2");
  await assert.rejects(reading, /cannot resume group:team after 0: history\.db: disk I\/O error/);
  resume.flush();
  assert.deepEqual(h.got.map((p) => p.id), [2]);
  await broker.close();
});

test("misuse and closing: flush before read says what to do; after cancel nothing is sent", async () => {
  const history = new GatedHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const h = hub(broker);
  await broker.publish(ME, "1");
  const resume = h.connect(0, history);
  const reading = resume.read();
  assert.throws(() => resume.flush(), /flush\(\) before read\(\) settled.*await read\(\)/);
  resume.cancel();
  while (history.open());
  await reading;
  resume.flush();
  await broker.publish(ME, "2");
  assert.deepEqual(h.got, []);
  assert.throws(
    () => new Resume({ streams: [ME], since: -1, horizon: 0, history, deliver: () => {} }),
    /since must be a message id/,
  );
  await broker.close();
});

/** One step of the property test. */
type Step =
  | { kind: "publish"; stream: number; wait: boolean }
  | { kind: "open"; n: number }
  | { kind: "tick" }
  | { kind: "flush" };

/** Publishes to one of the connection's streams (0-3) or to someone else's (4-5). */
const ALL_STREAMS = [...MINE, OTHER, ELSEWHERE];
const publishStep = fc.record({
  kind: fc.constant("publish" as const),
  // Mostly the connection's streams, where the races are; sometimes someone else's.
  stream: fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: MINE.length - 1 }) },
    { weight: 1, arbitrary: fc.integer({ min: MINE.length, max: ALL_STREAMS.length - 1 }) },
  ),
  wait: fc.boolean(),
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: publishStep },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("open" as const), n: fc.nat(8) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("tick" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("flush" as const) }) },
);

test("property: publishes racing a resume reach the connection once each, in id order; recovered says exactly whether a read found a trim", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        before: fc.array(fc.oneof(publishStep, fc.constant<Step>({ kind: "tick" })), {
          maxLength: 50,
          size: "max",
        }),
        during: fc.array(step, { maxLength: 60, size: "max" }),
        /** How far below the last assigned id the client's `since` is (negative: above it). */
        back: fc.integer({ min: -2, max: 50 }),
        /** HISTORY_SIZE: large (nothing trimmed) or small (trims as it goes). */
        size: fc.oneof(
          { weight: 1, arbitrary: fc.constant(10_000) },
          { weight: 3, arbitrary: fc.integer({ min: 1, max: 6 }) },
        ),
        pageSize: fc.oneof(fc.constant(1000), fc.integer({ min: 1, max: 5 })),
      }),
      async ({ before, during, back, size, pageSize }) => {
        const history = new GatedHistory(size);
        let assigned = 0;
        const broker = new MemoryBroker({
          ids: { next: () => ++assigned, last: 0 },
          history,
        });
        const h = hub(broker);
        /** The model: ids published to each stream, in the order the store was given them. */
        const published = new Map<StreamName, number[]>(ALL_STREAMS.map((s) => [s, []]));
        const pending: Promise<Publication>[] = [];
        const publish = async (s: { stream: number; wait: boolean }) => {
          const stream = ALL_STREAMS[s.stream];
          const sent = broker.publish(stream, `#${assigned + 1}`);
          published.get(stream)!.push(assigned);
          if (s.wait) await sent;
          else pending.push(sent);
        };
        /** Per read that reached the store: whether the model says it found nothing trimmed. */
        const readsFound: boolean[] = [];
        history.onRead = (stream, since) => {
          const ids = published.get(stream)!;
          const mark = ids.length > size ? ids[ids.length - size - 1] : 0;
          readsFound.push(since >= mark);
        };

        for (const s of before) {
          if (s.kind === "publish") await publish(s);
          else await tick();
        }
        const since = Math.max(0, assigned - back);
        const resume = h.connect(since, history, pageSize);
        const horizon = h.last;
        let outcome: ResumeOutcome | undefined;
        const reading = resume.read().then((o) => outcome = o);
        let flushed = false;
        for (const s of during) {
          if (s.kind === "publish") await publish(s);
          else if (s.kind === "open") history.open(s.n);
          else if (s.kind === "tick") await tick();
          else if (outcome && !flushed) {
            resume.flush();
            flushed = true;
          }
        }
        while (!outcome) {
          while (history.open());
          await tick();
        }
        await reading;
        if (!flushed) resume.flush();
        await Promise.all(pending);

        const got = h.got.map((p) => p.id);
        const expected = MINE.flatMap((s) => published.get(s)!).filter((id) => id > since)
          .sort((a, b) => a - b);
        for (let i = 1; i < got.length; i++) {
          assert.ok(got[i] > got[i - 1], `ids not increasing: ${got}`);
        }
        const expectedSet = new Set(expected);
        assert.ok(got.every((id) => expectedSet.has(id)), `sent one not addressed: ${got}`);
        const gotSet = new Set(got);
        assert.deepEqual(
          expected.filter((id) => id > horizon && !gotSet.has(id)),
          [],
          "every live one above the horizon arrives, recovered or not",
        );
        assert.equal(outcome.replayed, got.filter((id) => id <= horizon).length);
        if (outcome.recovered) assert.deepEqual(got, expected);
        assert.equal(outcome.recovered, readsFound.every(Boolean));
        await broker.close();
      },
    ),
    { numRuns: 1000 },
  );
});
