/**
 * What every history store must do, as tests: history_memory_test.ts and history_sqlite_test.ts run
 * them against their store, and a Redis store's test will run them too. Each test is a reader's
 * story: what was sent, what a client that comes back with `since` reads, and what it is told.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { HistoryBounds, HistoryPage, HistoryStore } from "./history.ts";
import { ALL_STREAM, groupStream, type Publication, uidStream } from "./stream.ts";

/** A store under test; disposing of it closes the store and removes what it left behind. */
export interface OpenedHistory extends AsyncDisposable {
  store: HistoryStore;
  /** Runs the store's sweep now, if it has one. */
  sweep?: () => void;
}

/** Opens a new, empty store with these bounds and this clock; throws what the constructor threw. */
export type OpenHistory = (options: HistoryBounds & { now: () => number }) => OpenedHistory;

const ALICE = uidStream("alice");
const BOB = uidStream("bob");
const CHAT = groupStream("chat");

/** A clock that stands still until a test moves it, in milliseconds since the epoch. */
function clock(): { now: () => number; ms: number; advance(ms: number): void } {
  const c = {
    ms: 1_700_000_000_000,
    now: () => c.ms,
    advance: (ms: number) => void (c.ms += ms),
  };
  return c;
}

/** The ids of a page, with what it says besides. */
function summary(page: HistoryPage): { ids: number[]; recovered: boolean; next: number | null } {
  return { ids: page.publications.map((p) => p.id), recovered: page.recovered, next: page.next };
}

/** Registers the contract's tests for the stores `open` makes; each test's name starts `name`. */
export function historyContract(name: string, open: OpenHistory): void {
  const t = clock();
  const pub = (id: number, stream = ALICE): Publication => ({
    id,
    stream,
    data: `message ${id}`,
    ts: t.now(),
  });
  /** Appends the publications in order, without waiting for one before the next. */
  const appendAll = (store: HistoryStore, pubs: Publication[]) =>
    Promise.all(pubs.map((p) => store.append(p)));
  const ids = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => from + i);

  test(`${name}: a client that comes back reads what was sent after the last id it saw, oldest first`, async () => {
    await using h = open({ size: 100, ttl: 3600, now: t.now });
    await appendAll(h.store, ids(1, 5).map((id) => pub(id)));
    const page = await h.store.read(ALICE, 2, 100);
    assert.deepEqual(page.publications, [3, 4, 5].map((id) => pub(id)));
    assert.equal(page.recovered, true);
    assert.equal(page.next, null);
    assert.deepEqual(summary(await h.store.read(ALICE, 5, 100)), {
      ids: [],
      recovered: true,
      next: null,
    });
  });

  test(`${name}: a long history comes in pages; next is the since of the next page and null on the last`, async () => {
    await using h = open({ size: 100, ttl: 3600, now: t.now });
    await appendAll(h.store, ids(1, 6).map((id) => pub(id)));
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 2)), {
      ids: [1, 2],
      recovered: true,
      next: 2,
    });
    assert.deepEqual(summary(await h.store.read(ALICE, 2, 2)), {
      ids: [3, 4],
      recovered: true,
      next: 4,
    });
    // The last page is full, and still says there is no more.
    assert.deepEqual(summary(await h.store.read(ALICE, 4, 2)), {
      ids: [5, 6],
      recovered: true,
      next: null,
    });
  });

  test(`${name}: past HISTORY_SIZE the oldest go, and recovered is false exactly when one of them came after since`, async () => {
    await using h = open({ size: 3, ttl: 3600, now: t.now });
    await appendAll(h.store, ids(1, 5).map((id) => pub(id)));
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 10)), {
      ids: [3, 4, 5],
      recovered: false,
      next: null,
    });
    assert.deepEqual(summary(await h.store.read(ALICE, 1, 10)), {
      ids: [3, 4, 5],
      recovered: false,
      next: null,
    }, "2 was trimmed and came after 1");
    assert.deepEqual(summary(await h.store.read(ALICE, 2, 10)), {
      ids: [3, 4, 5],
      recovered: true,
      next: null,
    }, "the reader had seen 2, the newest trimmed");
    await h.store.append(pub(6));
    assert.equal((await h.store.read(ALICE, 2, 10)).recovered, false, "now 3 is gone too");
  });

  test(`${name}: streams are kept apart: one stream's trim tells nothing false about another`, async () => {
    await using h = open({ size: 2, ttl: 3600, now: t.now });
    // Ids increase across streams, so each stream's ids have gaps.
    await appendAll(h.store, [
      pub(1, ALICE),
      pub(2, CHAT),
      pub(3, ALICE),
      pub(4, ALL_STREAM),
      pub(5, ALICE),
      pub(6, ALICE),
      pub(7, CHAT),
    ]);
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 10)), {
      ids: [5, 6],
      recovered: false,
      next: null,
    });
    assert.deepEqual(summary(await h.store.read(ALICE, 3, 10)), {
      ids: [5, 6],
      recovered: true,
      next: null,
    }, "4 was never alice's");
    assert.deepEqual(summary(await h.store.read(CHAT, 0, 10)), {
      ids: [2, 7],
      recovered: true,
      next: null,
    });
    assert.deepEqual(summary(await h.store.read(ALL_STREAM, 0, 10)), {
      ids: [4],
      recovered: true,
      next: null,
    });
    assert.deepEqual(summary(await h.store.read(BOB, 0, 10)), {
      ids: [],
      recovered: true,
      next: null,
    }, "a stream never sent to has missed nothing");
  });

  test(`${name}: past HISTORY_TTL a publication is trimmed, oldest first, even if nobody appends`, async () => {
    const c = clock();
    const at = (id: number, ts: number): Publication => ({ id, stream: ALICE, data: `${id}`, ts });
    await using h = open({ size: 100, ttl: 10, now: c.now });
    const t0 = c.ms;
    await h.store.append(at(1, t0));
    c.advance(5_000);
    await h.store.append(at(3, t0 + 5_000)); // ids have gaps: 2 went to another stream
    c.advance(5_000); // 1 is exactly 10 s old: still kept
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 10)), {
      ids: [1, 3],
      recovered: true,
      next: null,
    });
    c.advance(1);
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 10)), {
      ids: [3],
      recovered: false,
      next: null,
    });
    assert.equal(
      (await h.store.read(ALICE, 1, 10)).recovered,
      true,
      "1, the one trimmed, was seen",
    );
    c.advance(5_000);
    h.sweep?.();
    assert.deepEqual(summary(await h.store.read(ALICE, 1, 10)), {
      ids: [],
      recovered: false,
      next: null,
    });
    assert.equal((await h.store.read(ALICE, 2, 10)).recovered, false, "3 came after 2");
    assert.equal((await h.store.read(ALICE, 3, 10)).recovered, true);
    // A new publication is kept as usual after the stream emptied.
    await h.store.append(at(4, c.ms));
    assert.deepEqual(summary(await h.store.read(ALICE, 3, 10)), {
      ids: [4],
      recovered: true,
      next: null,
    });
  });

  test(`${name}: with a size of 0 nothing is kept, and recovered says whether the reader saw the newest id`, async () => {
    await using h = open({ size: 0, ttl: 3600, now: t.now });
    await appendAll(h.store, [pub(1), pub(2), pub(3, CHAT)]);
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 10)), {
      ids: [],
      recovered: false,
      next: null,
    });
    assert.equal((await h.store.read(ALICE, 1, 10)).recovered, false);
    assert.equal((await h.store.read(ALICE, 2, 10)).recovered, true);
    assert.equal((await h.store.read(BOB, 0, 10)).recovered, true);
  });

  test(`${name}: appends not waited for all resolve, and a read sees every append called before it`, async () => {
    await using h = open({ size: 10_000, ttl: 3600, now: t.now });
    const pending = ids(1, 2500).map((id) => h.store.append(pub(id, id % 2 ? ALICE : CHAT)));
    const page = await h.store.read(ALICE, 0, 10_000);
    assert.equal(page.publications.length, 1250);
    assert.deepEqual(page.publications.at(-1), pub(2499));
    await Promise.all(pending);
    assert.equal((await h.store.read(CHAT, 2000, 10_000)).publications.length, 250);
  });

  test(`${name}: an id the stream already holds changes nothing, and one that comes late is put in its place`, async () => {
    await using h = open({ size: 3, ttl: 3600, now: t.now });
    await appendAll(h.store, [pub(1), pub(2), pub(4)]);
    await h.store.append({ ...pub(2), data: "again" });
    await h.store.append(pub(3));
    assert.deepEqual(
      (await h.store.read(ALICE, 0, 10)).publications,
      [2, 3, 4].map((id) => pub(id)),
    );
    // 1 was trimmed: appended again, it stays trimmed.
    await h.store.append(pub(1));
    assert.deepEqual(summary(await h.store.read(ALICE, 0, 10)), {
      ids: [2, 3, 4],
      recovered: false,
      next: null,
    });
  });

  test(`${name}: what the caller does with its object after an append does not change history`, async () => {
    await using h = open({ size: 10, ttl: 3600, now: t.now });
    const p = { ...pub(1) };
    const appended = h.store.append(p);
    p.data = "changed";
    await appended;
    assert.equal((await h.store.read(ALICE, 0, 10)).publications[0].data, "message 1");
  });

  test(`${name}: arguments out of range are refused with a RangeError that says what is allowed`, async () => {
    assert.throws(() => open({ size: -1, ttl: 10, now: t.now }), /size must be a whole number/);
    assert.throws(() => open({ size: 1.5, ttl: 10, now: t.now }), RangeError);
    assert.throws(() => open({ size: 10, ttl: 0, now: t.now }), /ttl must be a number of seconds/);
    await using h = open({ size: 10, ttl: 10, now: t.now });
    await assert.rejects(h.store.read(ALICE, -1, 10), /since must be a message id/);
    await assert.rejects(h.store.read(ALICE, 0, 0), /limit must be a whole number 1 or more/);
    await assert.rejects(h.store.append(pub(0)), /positive safe integer, not 0/);
    await assert.rejects(h.store.append({ ...pub(1), ts: NaN }), /ts must be milliseconds/);
  });

  test(`${name}: a client's own publication is read back with its sender; a backend's has none`, async () => {
    await using h = open({ size: 10, ttl: 60, now: t.now });
    const from = { uid: "ann", client: "c-1" };
    await appendAll(h.store, [{ ...pub(1, CHAT), from }, pub(2, CHAT)]);
    const page = await h.store.read(CHAT, 0, 10);
    assert.deepEqual(page.publications, [{ ...pub(1, CHAT), from }, pub(2, CHAT)]);
    assert.equal("from" in page.publications[1], false);
  });

  test(`${name}: a uid's written mark only rises, is kept apart per uid, and is forgotten after HISTORY_TTL`, async () => {
    await using h = open({ size: 10, ttl: 60, now: t.now });
    assert.equal(h.store.writtenThrough("alice"), 0, "nothing written yet");
    h.store.wrote("alice", 5);
    h.store.wrote("alice", 3); // a slower socket of alice writes an older one
    h.store.wrote("bob", 4);
    assert.equal(h.store.writtenThrough("alice"), 5);
    assert.equal(h.store.writtenThrough("bob"), 4);
    t.advance(30_000);
    h.store.wrote("bob", 7);
    t.advance(31_000);
    assert.equal(h.store.writtenThrough("alice"), 0, "alice's mark is older than the TTL");
    assert.equal(h.store.writtenThrough("bob"), 7);
    h.sweep?.();
    assert.equal(h.store.writtenThrough("bob"), 7, "the sweep forgets only expired marks");
  });

  test(`${name}: a closed store refuses appends and reads`, async () => {
    await using h = open({ size: 10, ttl: 10, now: t.now });
    await h.store.append(pub(1));
    await h.store.close();
    await assert.rejects(h.store.append(pub(2)), /closed/);
    await assert.rejects(h.store.read(ALICE, 0, 10), /closed/);
    await h.store.close(); // closing twice is harmless
  });
}
