/**
 * Black-box: the admin page (GET /admin) as an operator uses it, in Debian's Chromium, against the
 * program (`main.ts` on the runtime running the tests, or the executable named by DENO_PUSHER_BIN),
 * with real WebSocket clients on the other end.
 *
 * Every wait is on the page's DOM or on a client's next frame, never a fixed sleep. With
 * SCREENSHOTS=1 the test also saves docs/admin.png.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { test, type TestContext } from "node:test";
import type { Browser, Page } from "playwright-core";
import {
  connectClient,
  launchChromium,
  programToken,
  type TestClient,
  withProgram,
} from "./testkit.ts";

/** How long one wait on a page may take, in ms: a missing line fails fast, well under 60 s. */
const WAIT_MS = 10_000;

/** The admin's window, in CSS pixels: the README's screenshot. */
const VIEWPORT = { width: 1280, height: 1000 };

/** The key the program is started with. */
const KEY = "admin-key-0123456789";

/** Where the page keeps the key (admin/page.ts). */
const KEY_ITEM = "deno-pusher-admin-key";

const here = import.meta.dirname ?? ".";

/** Whether this run saves the README's screenshot (CI never rewrites it). */
const SCREENSHOTS = process.env.SCREENSHOTS === "1";

/** Chromium, or undefined (SKIP, or a failure under CI=true) when it is not installed. */
const launchOrSkip = (t: TestContext) =>
  launchChromium(t, "the admin page was not run in a real browser");

/** What Chromium logs for the page's probe of /api when the server wants a key it has not got. */
const EXPECTED_REFUSAL = /status of 401 \(Unauthorized\) \(http:[^ ]+\/api\/clients\/count\)$/;

/** A page of its own in `browser`, with what its script threw or logged as an error. */
async function openAdmin(browser: Browser, port: number) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  // A Content-Security-Policy violation is a console error too. The 401s of the page's probe
  // (whether the server wants a key, and whether a key typed in is one) are expected.
  page.on("console", (m) => {
    const line = `${m.text()} (${m.location().url})`;
    if (m.type() === "error" && !EXPECTED_REFUSAL.test(line)) errors.push(line);
  });
  await page.goto(`http://127.0.0.1:${port}/admin`);
  return { context, page, errors };
}

/** A json-format client of `uid` in `groups`, past its welcome; answers it and its client id. */
async function connectAs(port: number, uid: string, groups: string[] = []) {
  const token = await programToken(uid, { groups });
  const client = await connectClient(`ws://127.0.0.1:${port}/ws?format=json&token=${token}`);
  const welcome = await client.nextJson();
  assert.equal(welcome.type, "welcome");
  return { client, id: welcome.client as string };
}

/** The next `message` frame of `client` (skipping presence and other events). */
async function nextMessage(client: TestClient): Promise<Record<string, unknown>> {
  for (;;) {
    const frame = await client.nextJson(WAIT_MS);
    if (frame.type === "message") return frame;
  }
}

/**
 * Waits until `selector`'s text on `page` matches `pattern`; fails saying what it read. Through a
 * locator: the page's Content-Security-Policy refuses what waitForFunction would evaluate.
 */
async function waitForText(page: Page, selector: string, pattern: RegExp): Promise<void> {
  try {
    await page.locator(selector).filter({ hasText: pattern }).first().waitFor();
  } catch (err) {
    const seen = await page.locator(selector).first().textContent().catch(() => null);
    throw new Error(`${selector} never read ${pattern}: ${JSON.stringify(seen)}`, { cause: err });
  }
}

test("GET /admin is a page for anyone; the /api it reads refuses callers without the key", async () => {
  await withProgram(["--api-keys", KEY], async (port) => {
    const url = `http://127.0.0.1:${port}`;
    const res = await fetch(`${url}/admin`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(res.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
    const html = await res.text();
    assert.match(html, /<title>deno-pusher admin<\/title>/);
    assert.ok(!html.includes(KEY), "the page holds no key");

    for (const path of ["/api/clients/count", "/api/messages", "/api/uids"]) {
      const bare = await fetch(`${url}${path}`);
      assert.equal(bare.status, 401, path);
      assert.equal(
        (await bare.json()).error,
        `${path} needs an API key: send one of API_KEYS as Authorization: Bearer <key> or ` +
          "X-API-Key: <key>",
      );
      const wrong = await fetch(`${url}${path}`, { headers: { authorization: "Bearer nope" } });
      assert.equal(wrong.status, 401, path);
      const right = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${KEY}` } });
      assert.equal(right.status, 200, path);
      await right.body?.cancel();
    }
    assert.equal((await fetch(`${url}/admin/`, { redirect: "manual" })).status, 302);
  });
});

test("admin: logs in with the key, sees a connection come, sends to it, reads the log, logs it out", async (t) => {
  const browser = await launchOrSkip(t);
  if (!browser) return;
  try {
    await withProgram(["--api-keys", KEY], async (port) => {
      const { context, page, errors } = await openAdmin(browser, port);

      // The server wants a key: the page asks for it, and says so when one is refused.
      await page.locator("#login-form").waitFor();
      await page.fill("#key", "not-the-key");
      await page.click("#login-button");
      await waitForText(page, "#login-error", /That key was refused: API key invalid/);
      await page.fill("#key", KEY);
      await page.click("#login-button");
      await page.locator("#app").waitFor();
      await waitForText(page, "#state", /^live/);
      assert.ok(!page.url().includes(KEY), "the key is never in the URL");
      assert.equal(await page.evaluate(`sessionStorage.getItem("${KEY_ITEM}")`), KEY);
      await waitForText(page, "#count-connections b", /^0$/);

      // ann connects: her connection appears, with its uid and groups, and the counts follow.
      const ann = await connectAs(port, "ann", ["room-1"]);
      await using _ann = ann.client;
      const row = page.locator(`#clients-body tr[data-id="${ann.id}"]`);
      await row.waitFor();
      assert.equal(await row.locator("td.uid").textContent(), "ann");
      assert.equal(await row.locator("td.groups").textContent(), "room-1");
      await waitForText(page, "#count-connections b", /^1$/);
      await waitForText(page, "#count-uids b", /^1$/);
      await waitForText(page, "#count-groups b", /^1$/);
      await page.locator('#uid-list li[data-uid="ann"]').waitFor();
      await page.locator('#group-list li[data-group="room-1"]').waitFor();

      // Her details, and the search that finds her by group and loses her by another name.
      await row.click();
      await waitForText(page, "#detail-list", new RegExp(ann.id));
      await page.fill("#find", "room-1");
      await row.waitFor();
      await page.fill("#find", "nobody-by-this-name");
      await row.waitFor({ state: "detached" });
      await page.fill("#find", "");
      await row.waitFor();

      // A message from the form reaches her socket; the page says where it went.
      await page.selectOption("#send-to", "uid");
      await page.fill("#send-target", "ann");
      await page.fill("#send-message", "hello from the admin page");
      await page.click("#send-button");
      const frame = await nextMessage(ann.client);
      assert.equal(frame.data, "hello from the admin page");
      await waitForText(page, "#send-result", /^message \d+: delivered to 1 of 1 connection$/);

      // The same to her group, then to everyone.
      await page.selectOption("#send-to", "group");
      await page.fill("#send-target", "room-1");
      await page.fill("#send-message", "hello room");
      await page.click("#send-button");
      const toGroup = await nextMessage(ann.client);
      assert.deepEqual([toGroup.data, toGroup.group], ["hello room", "room-1"]);
      await page.selectOption("#send-to", "all");
      await page.fill("#send-message", "hello everyone");
      await page.click("#send-button");
      assert.equal((await nextMessage(ann.client)).data, "hello everyone");

      // The log shows the first message delivered; once she acks it, acked by one uid.
      const logRow = page.locator(`#messages-body tr[data-id="${frame.id}"]`);
      await logRow.locator(".status.delivered").waitFor();
      assert.equal(await logRow.locator("td.target").textContent(), "uid:ann");
      ann.client.ws.send(JSON.stringify({ type: "ack", id: frame.id }));
      await logRow.locator(".status.acked").waitFor();
      assert.equal(await logRow.locator("td.acked").textContent(), "1");

      // Search the log by id, then by uid.
      await page.fill("#log-id", String(frame.id));
      await page.click("#log-search");
      await waitForText(page, "#log-note", new RegExp(`^message ${frame.id}$`));
      assert.equal(await page.locator("#messages-body tr").count(), 1);
      await page.fill("#log-id", "");
      await page.fill("#log-uid", "ann");
      await page.click("#log-search");
      await waitForText(page, "#log-note", /^to uid ann/);
      await logRow.waitFor();
      assert.equal(
        await page.locator("#messages-body td.target").evaluateAll((cells) =>
          cells.every((c) => c.textContent === "uid:ann")
        ),
        true,
        "only ann's messages",
      );
      await page.click("#log-clear");
      await waitForText(page, "#log-note", /^all targets/);

      // The chart has drawn messages per second from at least two readings of /metrics.
      await page.locator("#chart polyline").first().waitFor({ state: "attached" });

      if (SCREENSHOTS) await screenshot(page, port);

      // bob connects; closing his connection from its row closes it with 4009.
      const bob = await connectAs(port, "bob", ["room-1"]);
      const bobRow = page.locator(`#clients-body tr[data-id="${bob.id}"]`);
      await bobRow.locator("button.close").click();
      assert.deepEqual(await bob.client.closed, { code: 4009, reason: "closed by server" });
      await bobRow.waitFor({ state: "detached" });

      // Logging ann out closes her socket with 4009, and her row goes.
      await page.fill("#logout-uid", "ann");
      await page.click("#logout-button");
      assert.deepEqual(await ann.client.closed, { code: 4009, reason: "logged out" });
      await waitForText(page, "#logout-result", /^logged ann out: 1 connection closed/);
      await row.waitFor({ state: "detached" });
      await waitForText(page, "#count-connections b", /^0$/);

      // Forgetting the key asks for it again.
      await page.click("#forget");
      await page.locator("#login-form").waitFor();
      assert.equal(await page.evaluate(`sessionStorage.getItem("${KEY_ITEM}")`), null);

      assert.deepEqual(errors, [], "the page had errors");
      await context.close();
    });
  } finally {
    await browser.close();
  }
});

test("admin: without API_KEYS, a browser on loopback needs no key", async (t) => {
  const browser = await launchOrSkip(t);
  if (!browser) return;
  try {
    await withProgram([], async (port) => {
      const { context, page, errors } = await openAdmin(browser, port);
      await page.locator("#app").waitFor();
      await waitForText(page, "#auth", /no API key needed/);
      assert.ok(await page.isHidden("#login"));
      const cat = await connectAs(port, "cat");
      await using _cat = cat.client;
      await page.locator(`#clients-body tr[data-id="${cat.id}"]`).waitFor();
      assert.deepEqual(errors, [], "the page had errors");
      await context.close();
    });
  } finally {
    await browser.close();
  }
});

/**
 * Saves docs/admin.png: the page with a few more people connected and a minute's worth of
 * traffic, so that the lists and the chart have something to show. Runs only with SCREENSHOTS=1.
 */
async function screenshot(page: Page, port: number): Promise<void> {
  const people = await Promise.all(
    [["bob", ["room-1"]], ["cat", ["room-1", "room-2"]], ["dan", ["room-2"]]].map(
      ([uid, groups]) => connectAs(port, uid as string, groups as string[]),
    ),
  );
  const send = (path: string, message: string) =>
    fetch(`http://127.0.0.1:${port}/api${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ message }),
    }).then((res) => res.body?.cancel());
  // A burst of sends between readings, for 30 of the page's ticks.
  for (let tick = 0; tick < 30; tick++) {
    const state = await page.textContent("#state");
    const burst = 5 + Math.round(20 * Math.abs(Math.sin(tick / 4)));
    for (let i = 0; i < burst; i++) {
      await send(i % 2 ? "/groups/room-1/send" : "/uids/cat/send", `update ${tick}.${i}`);
    }
    await page.locator("#state").filter({ hasNotText: state ?? "" }).waitFor();
  }
  await page.click('#group-list li[data-group="room-1"] summary');
  await page.locator('#group-list li[data-group="room-1"] li').first().waitFor();
  await send("/uids/eve/send", "eve is offline: nobody to send it to");
  await page.locator('#messages-body td.target:text-is("uid:eve")').waitFor();
  writeFileSync(join(here, "docs", "admin.png"), await page.screenshot({ fullPage: true }));
  for (const p of people) {
    p.client.ws.close();
    await p.client.closed;
  }
}
