/**
 * Black-box: the two examples (EXAMPLES=true) as people use them, each person in a browser context
 * of their own in Debian's Chromium. Runs `main.ts` on the runtime running the tests, or the
 * compiled executable named by DENO_PUSHER_BIN.
 *
 * Every wait is on the page's DOM (playwright's locators and waitForFunction), never a fixed sleep.
 * With SCREENSHOTS=1 the tests also save docs/examples-chat.png and docs/examples-forms.png.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { test, type TestContext } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { launchChromium, withProgram } from "./testkit.ts";

/** How long one wait on a page may take, in ms: a missing line fails fast, well under 60 s. */
const WAIT_MS = 10_000;

/** Each person's window, in CSS pixels: two side by side make one screenshot. */
const VIEWPORT = { width: 600, height: 440 };

const here = import.meta.dirname ?? ".";

/** Whether this run saves the README's screenshots (CI never rewrites them). */
const SCREENSHOTS = process.env.SCREENSHOTS === "1";

/** Chromium, or undefined (SKIP, or a failure under CI=true) when it is not installed. */
const launchOrSkip = (t: TestContext) =>
  launchChromium(t, "the examples were not run in a real browser");

/** One person: a browser context of their own (no shared storage) with one page. */
interface Person {
  name: string;
  context: BrowserContext;
  page: Page;
  /** What the page's script threw or logged as an error: none is expected. */
  errors: string[];
}

/** Opens `url` in a new context of `browser` as `name`, and submits the page's name form. */
async function arrive(
  browser: Browser,
  url: string,
  name: string,
  color?: string,
): Promise<Person> {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${m.text()} (${m.location().url})`);
  });
  await page.goto(url);
  await page.fill("#name", name);
  if (color) await page.fill("#color", color);
  await page.click("#join");
  return { name, context, page, errors };
}

/** Fails, naming the person, when a page's script threw or logged an error; then closes it. */
async function leave(person: Person): Promise<void> {
  assert.deepEqual(person.errors, [], `${person.name}'s page had errors`);
  await person.context.close();
}

/**
 * Saves the people's pages side by side, each under its person's name, to docs/`file`: one
 * screenshot per page, laid out by a page of their own.
 */
async function screenshot(browser: Browser, people: Person[], file: string): Promise<void> {
  const shots = await Promise.all(people.map((p) => p.page.screenshot()));
  const cells = people.map((p, i) =>
    `<figure><figcaption>${p.name}'s browser</figcaption>` +
    `<img src="data:image/png;base64,${shots[i].toString("base64")}"></figure>`
  ).join("");
  const context = await browser.newContext({
    viewport: { width: people.length * (VIEWPORT.width + 16) + 8, height: VIEWPORT.height + 40 },
  });
  try {
    const page = await context.newPage();
    // setContent resolves on the load event, which waits for the (inline) images.
    await page.setContent(
      `<style>body{margin:0;padding:4px;display:flex;gap:8px;background:#d0d4da;` +
        `font:13px system-ui,sans-serif}figure{margin:0;padding:4px;background:#fff;` +
        `border-radius:4px}figcaption{padding:0 0 4px;color:#444}img{display:block}</style>` +
        cells,
    );
    writeFileSync(join(here, "docs", file), await page.screenshot({ fullPage: true }));
  } finally {
    await context.close();
  }
}

/** Where a page shows its questions: one input per question, in the form's order. */
const QUESTION_INPUTS = "#questions li.question input";

/** The text of every question on `page`, in the form's order. */
const questionTexts = (page: Page) =>
  page.locator(QUESTION_INPUTS).evaluateAll((inputs) =>
    inputs.map((input) => (input as unknown as { value: string }).value)
  );

/** Waits until `page`'s questions read `texts`, in that order. */
async function waitForQuestions(page: Page, texts: string[]): Promise<void> {
  // An expression, evaluated in the page (this file is type-checked without the DOM's types).
  const expression = `JSON.stringify([...document.querySelectorAll(${
    JSON.stringify(QUESTION_INPUTS)
  })].map((input) => input.value)) === ${JSON.stringify(JSON.stringify(texts))}`;
  try {
    await page.waitForFunction(expression, undefined, { timeout: WAIT_MS });
  } catch (err) {
    const seen = await questionTexts(page);
    throw new Error(`questions never read ${JSON.stringify(texts)}: ${JSON.stringify(seen)}`, {
      cause: err,
    });
  }
}

test("chat: two see each other online, talk in the room and one to one; one leaves", async (t) => {
  const browser = await launchOrSkip(t);
  if (!browser) return;
  try {
    await withProgram(["--examples", "true"], async (port) => {
      const url = `http://127.0.0.1:${port}/examples/chat/`;
      const ann = await arrive(browser, url, "ann");
      const bob = await arrive(browser, url, "bob");

      // Each sees both names online: ann from bob's join event, bob from the joined snapshot.
      for (const { page } of [ann, bob]) {
        await page.locator('#online li[data-uid="ann"]').waitFor();
        await page.locator('#online li[data-uid="bob"]').waitFor();
      }
      assert.equal(await ann.page.textContent('#online li[data-uid="ann"]'), "ann (you)");
      assert.equal(await ann.page.textContent('#online li[data-uid="bob"]'), "bob");

      // A room message from ann, markup and all, reaches bob as text under ann's name.
      const hello = "hello <b>room</b> & all";
      await ann.page.fill("#text", hello);
      await ann.page.press("#text", "Enter");
      const atBob = bob.page.locator("#log li.room", { hasText: hello });
      await atBob.waitFor();
      assert.equal(await atBob.locator(".who").textContent(), "ann");
      assert.equal(await bob.page.locator("#log b").count(), 0, "user text is never HTML");
      await ann.page.locator("#log li.room", { hasText: hello }).waitFor(); // the echo

      // A third person in the room, to show that a direct message stays out of the room.
      const cat = await arrive(browser, url, "cat");
      await cat.page.locator('#online li[data-uid="bob"]').waitFor();
      await bob.page.locator('#online li[data-uid="cat"]').waitFor();

      // bob clicks ann and writes to her alone.
      await bob.page.click('#online li[data-uid="ann"] button');
      assert.equal(await bob.page.textContent("#to"), "direct to ann");
      const secret = "psst, ann: just you";
      await bob.page.fill("#text", secret);
      await bob.page.press("#text", "Enter");
      const dm = ann.page.locator("#log li.dm", { hasText: secret });
      await dm.waitFor();
      assert.equal(await dm.locator(".who").textContent(), "bob \u2192 you");
      await bob.page.locator("#log li.dm.out", { hasText: secret }).waitFor();
      // Back in the room, bob says more; once cat has that, cat would have had the secret too.
      await bob.page.click("#to-room");
      await bob.page.fill("#text", "back in the room");
      await bob.page.press("#text", "Enter");
      await cat.page.locator("#log li.room", { hasText: "back in the room" }).waitFor();
      await ann.page.locator("#log li.room", { hasText: "back in the room" }).waitFor();
      assert.equal(await cat.page.locator("#log li", { hasText: secret }).count(), 0);
      assert.equal(await ann.page.locator("#log li.room", { hasText: secret }).count(), 0);

      await leave(cat);
      await ann.page.locator('#online li[data-uid="cat"]').waitFor({ state: "detached" });
      if (SCREENSHOTS) await screenshot(browser, [ann, bob], "examples-chat.png");

      // bob closes his tab: he leaves ann's list, and her log says so.
      await leave(bob);
      await ann.page.locator('#online li[data-uid="bob"]').waitFor({ state: "detached" });
      await ann.page.locator("#log li.system", { hasText: "bob left." }).waitFor();
      await leave(ann);
    });
  } finally {
    await browser.close();
  }
});

test("forms: live edits and locks, a late joiner rebuilds the form, a full room", async (t) => {
  const browser = await launchOrSkip(t);
  if (!browser) return;
  try {
    await withProgram(["--examples", "true"], async (port) => {
      const url = `http://127.0.0.1:${port}/examples/forms/?form=demo`;
      const ann = await arrive(browser, url, "ann", "#cc3344");
      const bob = await arrive(browser, url, "bob", "#2277cc");
      for (const { page } of [ann, bob]) {
        await page.locator('#people li[data-uid="ann"]').waitFor();
        await page.locator('#people li[data-uid="bob"]').waitFor();
      }
      assert.equal(
        await bob.page.$eval(
          '#people li[data-uid="ann"] .dot',
          (e) => (e as unknown as { style: { background: string } }).style.background,
        ),
        "rgb(204, 51, 68)",
        "each person shows in their colour",
      );

      // ann adds two questions; bob sees them.
      for (const text of ["What is your name?", "Favourite <i>colour</i>?"]) {
        await ann.page.fill("#new-text", text);
        await ann.page.press("#new-text", "Enter");
      }
      await waitForQuestions(bob.page, ["What is your name?", "Favourite <i>colour</i>?"]);
      const first = "#questions li.question:nth-child(1)";

      // ann focuses the first: it is locked. bob sees it locked by ann, and cannot edit or delete.
      await ann.page.focus(`${first} input`);
      await ann.page.locator(`${first} .holder`, { hasText: "you are editing" }).waitFor();
      await bob.page.locator(`${first}.locked .holder`, { hasText: "locked by ann" }).waitFor();
      assert.ok(await bob.page.isDisabled(`${first} input`), "a locked field cannot be edited");
      assert.ok(await bob.page.isDisabled(`${first} .delete`), "nor deleted");
      await ann.page.fill(`${first} input`, "What is your full name?");
      await waitForQuestions(bob.page, ["What is your full name?", "Favourite <i>colour</i>?"]);
      if (SCREENSHOTS) await screenshot(browser, [ann, bob], "examples-forms.png");

      // ann leaves the field: the lock goes, and bob edits it; ann sees bob's edit and his lock.
      await ann.page.locator(`${first} input`).blur();
      await bob.page.locator(`${first}:not(.locked) input:enabled`).waitFor();
      await bob.page.fill(`${first} input`, "Your name, please");
      await ann.page.locator(`${first}.locked .holder`, { hasText: "locked by bob" }).waitFor();
      await waitForQuestions(ann.page, ["Your name, please", "Favourite <i>colour</i>?"]);
      await bob.page.locator(`${first} input`).blur();
      await ann.page.locator(`${first}:not(.locked) input:enabled`).waitFor();

      // bob deletes the second; ann sees it go.
      await bob.page.click("#questions li.question:nth-child(2) .delete");
      await waitForQuestions(ann.page, ["Your name, please"]);

      // cat comes later and rebuilds the form from the room's history.
      const cat = await arrive(browser, url, "cat", "#22aa55");
      await waitForQuestions(cat.page, ["Your name, please"]);
      await cat.page.locator('#people li[data-uid="ann"]').waitFor();
      await cat.page.locator('#people li[data-uid="bob"]').waitFor();
      // Two adds, an edit by each of ann and bob, a delete: at least five.
      const replayed = /(\d+) edits replayed/.exec(await cat.page.textContent("#status") ?? "");
      assert.ok(replayed && Number(replayed[1]) >= 5, `replayed: ${replayed?.[0]}`);
      await ann.page.locator('#people li[data-uid="cat"]').waitFor();

      // A room bounded to one person (through the API, from loopback) refuses the second.
      const small = `http://127.0.0.1:${port}/examples/forms/?form=small`;
      const dan = await arrive(browser, small, "dan");
      await dan.page.locator('#people li[data-uid="dan"]').waitFor();
      const put = await fetch(`http://127.0.0.1:${port}/api/groups/form-small/settings`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ maxMembers: 1 }),
      });
      assert.equal(put.status, 200, await put.text());
      const eve = await arrive(browser, small, "eve");
      await eve.page.locator("#full", { hasText: "This form's room is full" }).waitFor();
      assert.ok(await eve.page.isHidden("#editor"));
      assert.equal(await dan.page.locator('#people li[data-uid="eve"]').count(), 0);

      for (const person of [ann, bob, cat, dan, eve]) await leave(person);
    });
  } finally {
    await browser.close();
  }
});
