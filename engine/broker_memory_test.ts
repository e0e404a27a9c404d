/**
 * The memory broker: what a hub subscribed to it is handed, in which order, and when (only once
 * the publication is kept, and never when keeping it failed).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { countFrom } from "../message/ids.ts";
import { MemoryBroker } from "./broker_memory.ts";
import type { HistoryPage } from "./history.ts";
import { MemoryHistory } from "./history_memory.ts";
import { ALL_STREAM, groupStream, type Publication, uidStream } from "./stream.ts";

const ALICE = uidStream("alice");
const CHAT = groupStream("chat");
const T0 = 1_700_000_000_000;

/** A memory history store that keeps everything for an hour and runs no sweep timer. */
function memoryHistory(): MemoryHistory {
  return new MemoryHistory({ size: 10_000, ttl: 3600, sweepMs: 0 });
}

/**
 * A store whose appends settle only when the test says: `settle(id)` lets the append of `id`
 * through to the memory store, `fail(id)` rejects it. Reads go straight to the memory store.
 */
class HeldHistory extends MemoryHistory {
  readonly #held = new Map<number, { let: () => void; fail: (error: Error) => void }>();

  constructor() {
    super({ size: 10_000, ttl: 3600, sweepMs: 0 });
  }

  override append(publication: Publication): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#held.set(publication.id, {
        let: () => super.append(publication).then(resolve, reject),
        fail: reject,
      });
    });
  }

  /** The ids whose appends are held, lowest first. */
  get held(): number[] {
    return [...this.#held.keys()].sort((a, b) => a - b);
  }

  settle(id: number): void {
    this.#take(id).let();
  }

  fail(id: number, error: Error): void {
    this.#take(id).fail(error);
  }

  #take(id: number) {
    const held = this.#held.get(id);
    assert.ok(held, `no append of ${id} is held`);
    this.#held.delete(id);
    return held;
  }
}

/** Lets every pending promise callback and timer run. */
const settleAll = () => new Promise((resolve) => setTimeout(resolve, 0));

test("a publication gets the next id, the broker's time, and reaches every subscriber", async () => {
  const broker = new MemoryBroker({ ids: countFrom(41), now: () => T0 });
  const first: Publication[] = [];
  const second: Publication[] = [];
  broker.subscribe((p) => first.push(p));
  broker.subscribe((p) => second.push(p));
  const sent = await broker.publish(ALICE, "hello");
  assert.deepEqual(sent, { id: 42, stream: ALICE, data: "hello", ts: T0 });
  assert.deepEqual(first, [sent]);
  assert.deepEqual(second, [sent]);
  assert.equal((await broker.publish(CHAT, "hi all")).id, 43, "ids increase across streams");
  await broker.close();
});

test("without a history store, subscribers are handed the publication before publish returns", () => {
  const broker = new MemoryBroker({ ids: countFrom(0) });
  const got: number[] = [];
  broker.subscribe((p) => got.push(p.id));
  void broker.publish(ALICE, "a");
  void broker.publish(ALL_STREAM, "b");
  assert.deepEqual(got, [1, 2]);
});

test("1000 publishes not awaited, appends settling in random order: every subscriber gets each once, in id order", async () => {
  const history = new HeldHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const streams = [ALICE, uidStream("bob"), CHAT, groupStream("ops"), ALL_STREAM];
  const got: Publication[][] = [[], []];
  for (const list of got) broker.subscribe((p) => list.push(p));
  const published = Array.from(
    { length: 1000 },
    (_, i) => broker.publish(streams[i % streams.length], `message ${i}`),
  );
  assert.deepEqual(history.held.length, 1000);
  // A deterministic shuffle (a linear congruential generator), so a failure can be replayed.
  const order = history.held;
  let seed = 12345;
  for (let i = order.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  for (const [n, id] of order.entries()) {
    history.settle(id);
    if (n % 7 === 0) await settleAll();
  }
  const sent = await Promise.all(published);
  const ids = sent.map((p) => p.id);
  assert.deepEqual(ids, Array.from({ length: 1000 }, (_, i) => i + 1));
  for (const list of got) assert.deepEqual(list, sent);
  await broker.close();
});

test("an append that rejects: publish rejects with the store's error, nobody sees it, later ones still come", async () => {
  const history = new HeldHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const got: number[] = [];
  broker.subscribe((p) => got.push(p.id));
  const first = broker.publish(ALICE, "kept");
  const second = broker.publish(CHAT, "lost");
  const third = broker.publish(ALICE, "kept too");
  const disk = new Error("history.db: disk I/O error");
  history.settle(3);
  history.fail(2, disk);
  await settleAll();
  assert.deepEqual(got, [], "3 waits for 1, even though 2 has settled");
  history.settle(1);
  assert.equal((await first).id, 1);
  await assert.rejects(second, disk);
  assert.equal((await third).id, 3);
  assert.deepEqual(got, [1, 3]);
  assert.deepEqual((await history.read(CHAT, 0, 10)).publications, []);
  await broker.close();
});

test("a publication is kept before anyone sees it: at delivery, a history read returns it", async () => {
  const history = new HeldHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const reads: Promise<HistoryPage>[] = [];
  let delivered = 0;
  broker.subscribe((p) => {
    delivered++;
    reads.push(history.read(p.stream, p.id - 1, 1));
  });
  const sent = broker.publish(ALICE, "durable");
  await settleAll();
  assert.equal(delivered, 0, "not delivered while the append is in flight");
  assert.deepEqual((await history.read(ALICE, 0, 10)).publications, []);
  history.settle(1);
  const publication = await sent;
  assert.equal(delivered, 1);
  assert.deepEqual((await reads[0]).publications, [publication]);
  await broker.close();
});

test("a subscriber that throws is reported; the others and later publications still get through", async () => {
  const errors: string[] = [];
  const broker = new MemoryBroker({
    ids: countFrom(0),
    history: memoryHistory(),
    onError: (error, p) => errors.push(`${p.id}: ${(error as Error).message}`),
  });
  const got: number[] = [];
  broker.subscribe(() => {
    throw new Error("hub bug");
  });
  broker.subscribe((p) => got.push(p.id));
  await Promise.all([broker.publish(ALICE, "a"), broker.publish(ALICE, "b")]);
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(errors, ["1: hub bug", "2: hub bug"]);
  await broker.close();
});

test("a subscriber that publishes: every subscriber still sees ids in order", async () => {
  const broker = new MemoryBroker({ ids: countFrom(0) });
  const first: number[] = [];
  const second: number[] = [];
  broker.subscribe((p) => {
    first.push(p.id);
    if (p.id === 1) void broker.publish(ALICE, "echo");
  });
  broker.subscribe((p) => second.push(p.id));
  await broker.publish(ALICE, "a");
  assert.deepEqual(first, [1, 2]);
  assert.deepEqual(second, [1, 2]);
  await broker.close();
});

test("unsubscribe: the handler is never called again, and the other subscriptions stay", async () => {
  const broker = new MemoryBroker({ ids: countFrom(0) });
  const got: number[] = [];
  const handler = (p: Publication) => got.push(p.id);
  const stop = broker.subscribe(handler);
  broker.subscribe(handler);
  await broker.publish(ALICE, "a");
  stop();
  stop();
  await broker.publish(ALICE, "b");
  assert.deepEqual(got, [1, 1, 2]);
  await broker.close();
});

test("close waits for publications in flight, then refuses new ones, saying why", async () => {
  const history = new HeldHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const got: number[] = [];
  broker.subscribe((p) => got.push(p.id));
  const inFlight = broker.publish(ALICE, "a");
  let closed = false;
  const closing = broker.close().then(() => closed = true);
  await assert.rejects(broker.publish(ALICE, "b"), /the broker is closed/);
  await settleAll();
  assert.equal(closed, false, "close waits for the append in flight");
  history.settle(1);
  await closing;
  assert.equal((await inFlight).id, 1);
  assert.deepEqual(got, [1]);
});

test("an id source that fails: publish rejects with its error and nothing is held back", async () => {
  let n = 0;
  const broker = new MemoryBroker({
    ids: {
      next: () => {
        if (++n === 2) throw new Error("cannot write the message id mark data/message-ids: EROFS");
        return n;
      },
      last: 0,
    },
    history: memoryHistory(),
  });
  const got: number[] = [];
  broker.subscribe((p) => got.push(p.id));
  const results = await Promise.allSettled([1, 2, 3].map(() => broker.publish(ALICE, "x")));
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.match(String((results[1] as PromiseRejectedResult).reason), /message-ids: EROFS/);
  assert.deepEqual(got, [1, 3]);
  await broker.close();
});

test("a publication to one client id is kept nowhere, and waits in id order behind the appends before it", async () => {
  const history = new HeldHistory();
  const broker = new MemoryBroker({ ids: countFrom(0), history });
  const handed: number[] = [];
  broker.subscribe((p) => handed.push(p.id));
  const toChat = broker.publish(CHAT, "kept first");
  const toClient = broker.publishToClient("c1", "for one tab");
  // The client's publication is not appended, but it does not overtake the chat's either: a
  // client that resumes after the last id it got would skip the chat's otherwise.
  assert.deepEqual(history.held, [1]);
  assert.deepEqual(handed, []);
  history.settle(1);
  assert.deepEqual([(await toChat).id, (await toClient).id], [1, 2]);
  assert.deepEqual(handed, [1, 2]);
  assert.deepEqual((await toClient).stream, "client:c1");
  assert.equal((await history.read("client:c1", 0, 10)).publications.length, 0, "kept nowhere");
  await broker.close();
});
