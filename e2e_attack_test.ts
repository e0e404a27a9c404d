/**
 * The attacks of the outside review, told against the program as users run it (main.ts on this
 * runtime, or the executable under `make test-bin`): each must leave the server alive, serving its
 * other clients, with bounded memory and descriptors, on every runtime. Part of the bad-input
 * suite with security_test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  connectClient,
  programMetric as metric,
  programToken as token,
  rawUpgrade,
  readToEnd,
  until,
  withProgram,
} from "./testkit.ts";

/** Sends `count` messages of `bytes` to `uid` through /send, `inFlight` requests at a time. */
async function burst(port: number, uid: string, count: number, bytes: number, inFlight: number) {
  const body = "x".repeat(bytes - 8);
  let next = 0;
  const statuses: number[] = [];
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < count) {
      const n = next++;
      const res = await fetch(`http://127.0.0.1:${port}/send`, {
        method: "POST",
        body: new URLSearchParams({ uid, message: `${String(n).padStart(7, "0")}:${body}` }),
      });
      statuses[n] = res.status;
      await res.body?.cancel();
    }
  }));
  return statuses;
}

test("a tab reading at full speed gets a burst whole; a tab that stopped reading is cut off with a 4008 it can see", async () => {
  // 20 MiB in 16 KiB messages, 64 requests in flight: more than the loopback buffers of the
  // stopped tab can hold, and a burst that reaches the server faster than one turn of its event
  // loop writes it (the Deno run used to cut the reading tab off after a few dozen messages).
  const count = 1280;
  await withProgram(["--slow-consumer-timeout", "1"], async (port) => {
    const stopped = await rawUpgrade(port, `/ws?token=${await token("fan")}`);
    assert.equal(stopped.status, 101);
    const reading = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("fan")}`);
    const received: string[] = [];
    reading.ws.addEventListener("message", (e) => received.push((e.data as string).slice(0, 7)));

    const statuses = await burst(port, "fan", count, 16 * 1024, 64);
    assert.deepEqual(statuses, statuses.map(() => 200), "every send found the reading tab");
    await until(async () => received.length === count, "the reading tab to get every message");
    // Requests in flight together reach the server in any order: each message once is the claim.
    assert.deepEqual(received.toSorted(), received.map((_, i) => String(i).padStart(7, "0")));
    assert.equal(reading.ws.readyState, WebSocket.OPEN);

    // The stopped tab stays more than MAX_QUEUE_BYTES behind for SLOW_CONSUMER_TIMEOUT: cut off.
    await until(async () => await metric(port, "slow_consumers_total") === 1, "the cut");
    const end = await readToEnd(stopped);
    assert.deepEqual(end.close, { code: 4008, reason: "slow consumer" }, "a close frame, last");
    assert.equal(end.frames.at(-1)?.opcode, 8);
    assert.equal(await metric(port, "connections"), 1);
    await reading[Symbol.asyncDispose]();
  });
});
