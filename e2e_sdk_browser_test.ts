/**
 * The SDK in a real browser (Debian's Chromium), as a page uses it with no build step:
 * `import { Client } from "/sdk/deno-pusher.js"`. The page keeps receiving while the server is
 * restarted under it (history on, the default): every message answered 200 reaches it, once and
 * in order.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  launchChromium,
  postJson,
  PROGRAM_SECRET,
  programToken,
  type Started,
  startProgram,
  stopProgram,
} from "./testkit.ts";

/** The program on `dataDir` and `port` (0: a free one), with its defaults (history on). */
async function startOn(dataDir: string, port = 0): Promise<{ started: Started; port: number }> {
  const started = await startProgram(["--port", String(port)], {
    DATA_DIR: dataDir,
    JWT_SECRET: PROGRAM_SECRET,
  });
  return { started, port: Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]) };
}

/** The page's script: the SDK from the server, every message and state kept in `window.heard`. */
const PAGE_SCRIPT = `
import { Client } from "/sdk/deno-pusher.js";
const heard = { messages: [], states: [] };
window.heard = heard;
window.startClient = (token) => {
  const client = new Client("ws://" + location.host + "/ws", {
    token,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
  });
  client.on("message", (m) => heard.messages.push({ id: m.id, data: m.data }));
  client.on("state", (s) => heard.states.push(s));
  client.connect();
};
`;

interface Heard {
  messages: { id: number; data: string }[];
  states: string[];
}

test("a page that imports /sdk/deno-pusher.js keeps receiving while the server restarts under it: nothing missed, nothing twice", async (t) => {
  const browser = await launchChromium(t, "the SDK was not run in a real browser");
  if (!browser) return;
  const dataDir = mkdtempSync(join(tmpdir(), "deno-pusher-e2e-sdk-browser-"));
  let server = await startOn(dataDir);
  const { port } = server;
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.addScriptTag({ type: "module", content: PAGE_SCRIPT });
    await page.waitForFunction(() => "startClient" in globalThis);
    await page.evaluate(
      (token) => (globalThis as unknown as { startClient(t: string): void }).startClient(token),
      await programToken("kim"),
    );
    const heard = () => page.evaluate(() => (globalThis as unknown as { heard: Heard }).heard);
    await page.waitForFunction(() =>
      (globalThis as unknown as { heard: Heard }).heard.states.includes("connected")
    );

    /** Every send's id: answered 200, or 404 while the page was away (kept all the same). */
    const sent: number[] = [];
    let answered200 = 0;
    const sendSome = async (from: number, count: number) => {
      for (let i = from; i < from + count; i++) {
        const res = await postJson(port, "/send", { uid: "kim", message: `m${i}` });
        assert.ok(res.status === 200 || res.status === 404, `send ${i}: ${res.status}`);
        sent.push(res.body.id);
        if (res.status === 200) answered200++;
      }
    };
    const connections = () =>
      page.evaluate(() =>
        (globalThis as unknown as { heard: Heard }).heard.states.filter((s) => s === "connected")
          .length
      );
    await sendSome(0, 50);
    assert.equal(await stopProgram(server.started), 0, "SIGTERM: a clean stop");
    server = await startOn(dataDir, port);
    // Some while the page is still away (or coming back), then some once it is back.
    await sendSome(50, 20);
    await page.waitForFunction(() =>
      (globalThis as unknown as { heard: Heard }).heard.states.filter((s) => s === "connected")
        .length >= 2
    );
    assert.equal(await connections(), 2);
    await sendSome(70, 30);
    assert.ok(answered200 >= 80, `${answered200} answered 200`);

    const last = Math.max(...sent);
    await page.waitForFunction(
      (id) => (globalThis as unknown as { heard: Heard }).heard.messages.some((m) => m.id === id),
      last,
      { timeout: 20_000 },
    );
    const { messages, states } = await heard();
    const ids = messages.map((m) => m.id);
    assert.deepEqual(ids.filter((id, i) => i > 0 && id <= ids[i - 1]), [], "once, in order");
    const got = new Set(ids);
    assert.deepEqual(sent.filter((id) => !got.has(id)), [], "every message sent, kept or answered");
    assert.deepEqual(messages.map((m) => m.data), sent.map((_, i) => `m${i}`), "as sent");
    assert.ok(states.lastIndexOf("connected") > states.indexOf("disconnected"), "it came back");
    assert.deepEqual(errors, [], "no error in the page");
  } finally {
    await browser.close();
    await stopProgram(server.started);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
