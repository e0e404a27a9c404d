/**
 * A socket's life where the order of events is the point: token checks that finish out of order.
 * The authenticator here answers when the test says so; everything else is the real code.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Authenticator, Identity } from "./authenticator.ts";
import { defaultConfig } from "./config.ts";
import { connection, ExpiryWatch } from "./connection.ts";
import { Hub } from "./hub.ts";
import { NullLogger } from "./message/logger.ts";
import { Metrics } from "./metrics.ts";
import type { Socket } from "./runtime/contract.ts";

/** A socket that keeps what is written to it; `next` awaits the next frame. */
class RecordingSocket implements Socket {
  frames: string[] = [];
  closedWith: [number, string] | undefined;
  #waiting: ((frame: string) => void) | undefined;
  send(data: string) {
    if (this.#waiting) this.#waiting(data);
    else this.frames.push(data);
    this.#waiting = undefined;
  }
  next(): Promise<Record<string, unknown>> {
    const frame = this.frames.shift();
    if (frame !== undefined) return Promise.resolve(JSON.parse(frame));
    return new Promise((resolve) => this.#waiting = (f) => resolve(JSON.parse(f)));
  }
  bufferedAmount() {
    return 0;
  }
  whenDrained() {}
  readonly #closed = Promise.withResolvers<[number, string]>();
  /** Resolves with the first close's code and reason. */
  readonly closed = this.#closed.promise;
  close(code: number, reason: string) {
    this.closedWith ??= [code, reason];
    this.#closed.resolve(this.closedWith);
  }
}

/** Token checks that resolve when the test resolves them, by token. */
function heldAuthenticator() {
  const held = new Map<string, (who: Identity) => void>();
  const authenticator = {
    verify: (token: string) => new Promise<Identity>((resolve) => held.set(token, resolve)),
  } as unknown as Authenticator;
  return { authenticator, release: (token: string, who: Identity) => held.get(token)!(who) };
}

test("two refreshes whose checks finish out of order leave the newer token's exp in force", async () => {
  const metrics = new Metrics();
  const hub = new Hub({ logger: new NullLogger(), metrics, maxQueueBytes: 1 << 20 });
  const { authenticator, release } = heldAuthenticator();
  const now = Math.floor(Date.now() / 1000);
  const handlers = connection({
    config: defaultConfig(),
    hub,
    metrics,
    authenticator,
    unauthenticated: { count: 0 },
    open: new Set(),
    onClosed: () => {},
    expiries: new ExpiryWatch(),
  }, { identity: { uid: "u", exp: now + 600 }, format: "json", presence: false });
  const socket = new RecordingSocket();
  handlers.open(socket);
  assert.equal((await socket.next()).type, "welcome");

  handlers.message(JSON.stringify({ type: "auth", token: "older" }));
  handlers.message(JSON.stringify({ type: "auth", token: "newer" }));
  release("newer", { uid: "u", exp: now + 7200 });
  assert.deepEqual(await socket.next(), { type: "auth", ok: true, exp: now + 7200 });
  release("older", { uid: "u", exp: now + 900 });
  assert.deepEqual(await socket.next(), {
    type: "error",
    error: "a later auth frame superseded this one",
  });
  assert.equal(socket.frames.length, 0);
  assert.equal(socket.closedWith, undefined);
  handlers.close(1000, "");
});

test("a token that expires past the watch's window waits there, then closes its socket with 4004 at exp", async () => {
  const metrics = new Metrics();
  const hub = new Hub({ logger: new NullLogger(), metrics, maxQueueBytes: 1 << 20 });
  // A window of 500 ms instead of a minute: exp, in whole seconds, is at least 1 s away, so the
  // connection starts in the watch, whose sweep hands it a timer of its own once it is near.
  const expiries = new ExpiryWatch(500);
  const deps = {
    config: defaultConfig(),
    hub,
    metrics,
    authenticator: heldAuthenticator().authenticator,
    unauthenticated: { count: 0 },
    open: new Set<never>(),
    onClosed: () => {},
    expiries,
  };
  const exp = Math.floor(Date.now() / 1000) + 2;
  const expiring = connection(deps, {
    identity: { uid: "a", exp },
    format: "json",
    presence: false,
  });
  const lasting = connection(deps, {
    identity: { uid: "b", exp: exp + 3600 },
    format: "json",
    presence: false,
  });
  const [a, b] = [new RecordingSocket(), new RecordingSocket()];
  expiring.open(a);
  lasting.open(b);
  assert.deepEqual(await a.closed, [4004, "token expired"]);
  // At exp, not at the first sweep (250 ms after open, a second or more early). A timer may fire a
  // few ms before the wall clock says so (they run on different clocks): 100 ms of slack.
  assert.ok(Date.now() >= exp * 1000 - 100, `closed ${exp * 1000 - Date.now()} ms before exp`);
  assert.equal(b.closedWith, undefined);
  expiring.close(4004, "token expired");
  lasting.close(1000, "");
});
