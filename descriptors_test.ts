/** The connection cap follows the process's open-file limit. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import process from "node:process";
import { test } from "node:test";
import { autoMaxConnections, FALLBACK_MAX_CONNECTIONS, openFileLimit } from "./descriptors.ts";

const limits = (soft: string) =>
  `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            ${soft}                20000                files
`;

test("the soft open-file limit is read from /proc/self/limits", () => {
  assert.equal(openFileLimit(limits("20000")), 20000);
  assert.equal(openFileLimit(limits("unlimited")), undefined);
  assert.equal(openFileLimit("garbage"), undefined);
});

test("this process's own open-file limit is read as the kernel states it", (t) => {
  let text: string;
  try {
    text = readFileSync("/proc/self/limits", "utf8");
  } catch (err) {
    // Not Linux: the reader has nothing to read, and the cap falls back (tested above).
    if (process.env.CI === "true") throw err;
    console.log(`SKIP: /proc/self/limits cannot be read here (${err}); CI runs this on Linux`);
    t.skip("/proc/self/limits cannot be read");
    return;
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  assert.ok(soft, `no "Max open files" line in /proc/self/limits:\n${text}`);
  assert.equal(openFileLimit(), soft === "unlimited" ? undefined : Number(soft));
});

test("auto keeps a reserve of 5%, at least 512, below the limit", () => {
  assert.equal(autoMaxConnections(20000), 19000);
  assert.equal(autoMaxConnections(1024), 512);
  assert.equal(autoMaxConnections(100), 1);
  assert.equal(autoMaxConnections(undefined), FALLBACK_MAX_CONNECTIONS);
});
