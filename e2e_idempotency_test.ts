/**
 * Idempotent sends, told against the program as users run it (main.ts on this runtime, or the
 * executable under `make test-bin`): a backend retries with the same Idempotency-Key and the tab
 * gets the message once, even across a restart.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  connectClient,
  PROGRAM_SECRET,
  programToken as token,
  startProgram,
  stopProgram,
} from "./testkit.ts";

/** POST /send with `key`; answers the status and the JSON. */
async function send(port: number, key: string, message: string) {
  const res = await fetch(`http://127.0.0.1:${port}/send`, {
    method: "POST",
    headers: { "idempotency-key": key, "content-type": "application/json" },
    body: JSON.stringify({ uid: "ida", message }),
  });
  return { status: res.status, body: await res.json() };
}

const portOf = (banner: string) => Number(/listening on [^:]+:(\d+)/.exec(banner)![1]);

test("a retried send with the same Idempotency-Key is answered again and pushed once, across a restart", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-idem-"));
  const env = { DATA_DIR: dataDir, JWT_SECRET: PROGRAM_SECRET };
  try {
    let started = await startProgram(["--port", "0"], env);
    let port = portOf(started.banner);
    const tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("ida")}`);
    const first = await send(port, "order-42", "hello");
    assert.equal(first.status, 200);
    assert.equal(await tab.next(), "hello");
    const again = await send(port, "order-42", "hello");
    assert.deepEqual(again, { status: 200, body: { ...first.body, duplicate: true } });
    const other = await send(port, "order-42", "something else");
    assert.equal(other.status, 422);
    assert.match(other.body.error, /use a new key for a new message/);
    const bad = await send(port, "has space", "x");
    assert.equal(bad.status, 400);
    const fresh = await send(port, "order-43", "next");
    assert.equal(fresh.status, 200);
    assert.equal(await tab.next(), "next", "nothing came between: the retries pushed nothing");
    await tab[Symbol.asyncDispose]();
    assert.equal(await stopProgram(started), 0);

    started = await startProgram(["--port", "0"], env);
    port = portOf(started.banner);
    const afterRestart = await send(port, "order-42", "hello");
    assert.deepEqual(afterRestart.body, { ...first.body, duplicate: true });
    assert.equal(await stopProgram(started), 0);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
