/** Presence events stay bounded: a reconnect storm into a big group costs O(N), not O(N²). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Hub } from "./hub.ts";
import { NullLogger } from "./message/logger.ts";
import { Metrics } from "./metrics.ts";
import type { Socket } from "./runtime/contract.ts";
import { eventually, startTestServer } from "./testkit.ts";

/** A socket that counts the frames written to it; its network takes everything at once. */
class CountingSocket implements Socket {
  frames = 0;
  send() {
    this.frames++;
  }
  bufferedAmount() {
    return 0;
  }
  whenDrained() {}
  close() {}
}

test("a reconnect storm into a presence group writes frames in proportion to its size, not its square", () => {
  const metrics = new Metrics();
  const hub = new Hub({
    logger: new NullLogger(),
    metrics,
    maxQueueBytes: 1 << 20,
    maxPresenceMembers: 50,
  });
  const sockets: CountingSocket[] = [];
  for (let i = 0; i < 400; i++) {
    const socket = new CountingSocket();
    sockets.push(socket);
    hub.connect({ uid: `u${i}`, groups: ["all-hands"] }, "json", socket, true);
  }
  const frames = sockets.reduce((sum, s) => sum + s.frames, 0);
  // Each welcome is one frame; joins are announced only while the group has at most 50 members.
  assert.equal(frames, 400 + (50 * 51) / 2, `${frames} frames`);
  assert.equal(metrics.presenceSuppressed, 350);
});

test("past MAX_PRESENCE_MEMBERS a group's joins and leaves go unannounced; within it they are", async () => {
  await using server = await startTestServer({ maxPresenceMembers: 2 });
  const a = await server.connectAs("a", { groups: ["room"] }, "&presence=true");
  const b = await server.connectAs("b", { groups: ["room"] }, "&presence=true");
  // A watcher hears its own join too.
  assert.deepEqual(await a.client.nextJson(), { type: "join", group: "room", uid: "a" });
  assert.deepEqual(await a.client.nextJson(), { type: "join", group: "room", uid: "b" });
  assert.deepEqual(await b.client.nextJson(), { type: "join", group: "room", uid: "b" });
  const c = await server.connectAs("c", { groups: ["room"] });
  await c.client[Symbol.asyncDispose]();
  await eventually(() => server.hub.groupSize("room")?.members === 2, 5000, "c to leave");
  // A marker sent to the group after c came and went is the next frame: no join, no leave.
  const marker = await server.api("POST", "/groups/room/send", { message: "marker" });
  assert.equal(marker.status, 200, JSON.stringify(marker.body));
  for (const watcher of [a, b]) {
    const frame = await watcher.client.nextJson();
    assert.equal(frame.data, "marker", JSON.stringify(frame));
  }
  assert.equal(await server.metric("presence_events_suppressed_total"), 2);
  await a.client[Symbol.asyncDispose]();
  assert.deepEqual(await b.client.nextJson(), { type: "leave", group: "room", uid: "a" });
  await b.client[Symbol.asyncDispose]();
});
