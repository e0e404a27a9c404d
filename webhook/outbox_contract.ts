/**
 * What every webhook outbox must do, as tests: outbox_sqlite_test.ts and outbox_redis_test.ts run
 * them against their outbox. Each test is a deliverer's story, as deliverer.ts uses an outbox:
 * every `due` is followed by `delivered` or `retry` of its rows before they are asked for again
 * (the Redis outbox claims what `due` answers until then).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { WebhookEvent } from "./events.ts";
import type { Outbox, OutboxOptions, OutboxRow } from "./outbox.ts";

/** An outbox under test; disposing of it closes it and removes what it left behind. */
export interface OpenedOutbox extends AsyncDisposable {
  store: Outbox;
  /** Resolves once the rows added so far are written where the outbox keeps them. */
  settle(): Promise<void>;
}

/** Opens a new, empty outbox with these options; throws what the constructor threw. */
export type OpenOutbox = (options: OutboxOptions) => OpenedOutbox;

export const A = "http://127.0.0.1:1/a";
export const B = "http://127.0.0.1:1/b";
/** The tests' clock, ms since the epoch: the outbox takes its times from its callers. */
export const NOW = 1_700_000_000_000;

/** An event `id` of `uid` (or of no uid), that happened at `ts`. */
export function event(id: string, uid?: string, ts = NOW): WebhookEvent {
  return { id, type: "client.connect", ts, ...(uid === undefined ? {} : { uid }) };
}

/** The ids of the events of `rows`. */
export const idsOf = (rows: readonly OutboxRow[]) =>
  rows.map((row) => (JSON.parse(row.json) as WebhookEvent).id);

/** Registers the contract's tests for the outboxes `open` makes; each test's name starts `name`. */
export function outboxContract(name: string, open: OpenOutbox): void {
  test(`${name}: an event waits once per URL, and comes due in the order it was added`, async () => {
    await using h = open({});
    h.store.add(event("e1", "alice"), [A, B]);
    h.store.add(event("e2", "alice"), [A, B]);
    assert.equal(h.store.size(), 4, "counted at once");
    const due = await h.store.due(A, NOW, 10);
    assert.deepEqual(idsOf(due), ["e1", "e2"]);
    assert.deepEqual(JSON.parse(due[0].json), event("e1", "alice"), "the event as it was added");
    assert.deepEqual(
      due.map(({ key, createdAt, attempts }) => ({ key, createdAt, attempts })),
      [0, 1].map(() => ({ key: "uid:alice", createdAt: NOW, attempts: 0 })),
    );
    assert.ok(due[0].seq < due[1].seq, "later rows have higher seqs");
    await h.store.delivered(A, due, NOW);
    assert.deepEqual(await h.store.due(A, NOW, 10), []);
    assert.equal(await h.store.nextDueAt(A), undefined, "A has nothing left");
    assert.deepEqual(idsOf(await h.store.due(B, NOW, 10)), ["e1", "e2"], "B has its own rows");
    assert.equal(h.store.size(), 2);
  });

  test(`${name}: a uid's failed head blocks that uid's later events for that URL only; other uids go on`, async () => {
    await using h = open({});
    h.store.add(event("a1", "alice"), [A, B]);
    h.store.add(event("b1", "bob"), [A]);
    h.store.add(event("a2", "alice"), [A]);
    h.store.add(event("g1"), [A]); // no uid, no group: the queue of the others
    const first = await h.store.due(A, NOW, 1);
    assert.deepEqual(idsOf(first), ["a1"]);
    await h.store.retry(A, first, (attempts) => NOW + 1000 * attempts);

    h.store.add(event("a3", "alice"), [A]);
    assert.equal(await h.store.nextDueAt(A), 0, "bob's and the others' queues are due");
    const others = await h.store.due(A, NOW, 10);
    assert.deepEqual(idsOf(others), ["b1", "g1"], "alice waits, bob does not");
    assert.deepEqual(idsOf(await h.store.due(B, NOW, 10)), ["a1"], "B's alice is not held up");
    await h.store.delivered(A, others, NOW);
    assert.equal(await h.store.nextDueAt(A), NOW + 1000, "alice's head failed once: 1 s");

    const again = await h.store.due(A, NOW + 1000, 10);
    assert.deepEqual(idsOf(again), ["a1", "a2", "a3"], "alice's whole queue, in order");
    assert.deepEqual(again.map((row) => row.attempts), [1, 0, 0]);
    await h.store.retry(A, again, (attempts) => NOW + 1000 * attempts);
    assert.equal(await h.store.nextDueAt(A), NOW + 2000, "the head's second failure: 2 s");
    assert.deepEqual(await h.store.due(A, NOW + 1999, 10), []);
    const later = await h.store.due(A, NOW + 2000, 10);
    assert.deepEqual(
      later.map((row) => row.attempts),
      [2, 1, 1],
      "each row counts its own failures",
    );
  });

  test(`${name}: a busy uid does not keep the others waiting: a queue left half delivered goes behind them`, async () => {
    await using h = open({});
    for (let i = 1; i <= 3; i++) h.store.add(event(`a${i}`, "alice"), [A]);
    h.store.add(event("b1", "bob"), [A]);
    const page = await h.store.due(A, NOW, 2);
    assert.deepEqual(idsOf(page), ["a1", "a2"]);
    await h.store.delivered(A, page, NOW);
    assert.deepEqual(idsOf(await h.store.due(A, NOW, 2)), ["b1", "a3"]);
  });

  test(`${name}: resume brings the queues waiting on a retry forward to now, in their order, their failures still counted`, async () => {
    await using h = open({});
    for (const uid of ["alice", "bob", "carol"]) h.store.add(event(`${uid}-1`, uid), [A, B]);
    const failed = await h.store.due(A, NOW, 2);
    assert.deepEqual(idsOf(failed), ["alice-1", "bob-1"]);
    await h.store.retry(A, failed, (attempts) => NOW + 60_000 * attempts);
    assert.equal(await h.store.nextDueAt(A), 0, "carol's queue has not been tried");

    assert.equal(await h.store.resume(A, NOW + 1000), 2, "alice's and bob's");
    const now = await h.store.due(A, NOW + 1000, 10);
    assert.deepEqual(idsOf(now), ["carol-1", "alice-1", "bob-1"], "due the longest first");
    assert.deepEqual(now.map((row) => row.attempts), [0, 1, 1]);
    await h.store.retry(A, now, (attempts) => NOW + 1000 + 60_000 * attempts);
    assert.equal(await h.store.nextDueAt(A), NOW + 61_000, "carol's first failure");
    assert.equal(await h.store.resume(A, NOW + 2000), 3);
    assert.equal(await h.store.resume(A, NOW + 2000), 0, "none waits any more");
    const again = await h.store.due(A, NOW + 2000, 10);
    assert.deepEqual(idsOf(again), ["alice-1", "bob-1", "carol-1"], "oldest queue first");
    assert.deepEqual(again.map((row) => row.attempts), [2, 2, 1], "the backoff goes on from there");
    assert.equal(await h.store.nextDueAt(B), 0, "B's queues are B's");
    assert.equal(await h.store.resume(B, NOW), 0);
  });

  test(`${name}: past maxEvents the oldest rows go, counted and reported once per burst`, async () => {
    const reports: string[] = [];
    await using h = open({ maxEvents: 10, onError: (err) => reports.push(err.message) });
    for (let i = 1; i <= 12; i++) h.store.add(event(`e${i}`, `u${i % 3}`), [A]);
    await h.settle();
    assert.equal(h.store.size(), 10);
    assert.equal(h.store.stats().dropped, 2);
    const due = await h.store.due(A, NOW, 100);
    assert.deepEqual(
      idsOf(due).sort(),
      [3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((i) => `e${i}`).sort(),
    );
    assert.equal(reports.length, 1);
    assert.match(reports[0], /webhook outbox .* is full \(10 events\): dropped the oldest 2/);

    h.store.add(event("e13", "u1"), [A]);
    await h.settle();
    assert.equal(h.store.stats().dropped, 3);
    assert.equal(reports.length, 1, "the same burst");

    await h.store.delivered(A, due.slice(0, 5), NOW); // back under 90%: the burst ended
    for (let i = 14; i <= 20; i++) h.store.add(event(`e${i}`, "u1"), [A]);
    await h.settle();
    assert.equal(h.store.stats().dropped, 5);
    assert.equal(h.store.size(), 10);
    assert.equal(reports.length, 2, "a new burst is reported");
  });

  test(`${name}: expire removes the events that happened at or before the cutoff, of every URL`, async () => {
    await using h = open({});
    h.store.add(event("old", "alice", NOW - 2000), [A, B]);
    h.store.add(event("new", "alice", NOW), [A, B]);
    const failed = await h.store.due(A, NOW, 10);
    await h.store.retry(A, failed, () => NOW + 60_000);
    assert.equal(await h.store.expire(NOW - 1000), 2);
    assert.equal(await h.store.expire(NOW - 1000), 0);
    assert.deepEqual(h.store.stats(), { rows: 2, dropped: 0, expired: 2 });
    assert.deepEqual(idsOf(await h.store.due(B, NOW, 10)), ["new"]);
    assert.equal(await h.store.nextDueAt(A), NOW + 60_000, "the queue keeps its backoff");
    assert.deepEqual(idsOf(await h.store.due(A, NOW + 60_000, 10)), ["new"]);
    assert.equal(await h.store.expire(NOW), 2);
    assert.equal(await h.store.nextDueAt(A), undefined, "an emptied queue goes with its rows");
    assert.equal(await h.store.nextDueAt(B), undefined);
    assert.equal(h.store.size(), 0);
  });

  test(`${name}: an event that is no JSON is refused with a TypeError, and nothing is added`, async () => {
    await using h = open({});
    assert.throws(() => h.store.add({ ...event("e1"), n: 1n }, [A]), TypeError);
    assert.equal(h.store.size(), 0);
    h.store.add(event("e2"), []);
    assert.equal(h.store.size(), 0, "an event for no URL is no row");
  });

  test(`${name}: a closed outbox refuses adds and reads, naming itself`, async () => {
    await using h = open({});
    await h.store.close();
    assert.throws(() => h.store.add(event("late"), [A]), /webhook outbox .*is closed/);
    await assert.rejects(h.store.due(A, NOW, 1), /webhook outbox .*is closed/);
    await h.store.close(); // again: harmless
  });

  test(`${name}: options out of range are refused`, () => {
    assert.throws(() => open({ maxEvents: 0 }), RangeError);
    assert.throws(() => open({ maxEvents: 1.5 }), RangeError);
  });
}
