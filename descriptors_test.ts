/** The connection cap follows the process's open-file limit. */
import assert from "node:assert/strict";
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
  const live = openFileLimit();
  if (live !== undefined) assert.ok(live > 0);
});

test("auto keeps a reserve of 5%, at least 512, below the limit", () => {
  assert.equal(autoMaxConnections(20000), 19000);
  assert.equal(autoMaxConnections(1024), 512);
  assert.equal(autoMaxConnections(100), 1);
  assert.equal(autoMaxConnections(undefined), FALLBACK_MAX_CONNECTIONS);
});
