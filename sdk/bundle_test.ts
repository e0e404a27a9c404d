/**
 * GET /sdk/deno-pusher.js serves the current build of sdk/client.ts, cached by version.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import pkg from "../package.json" with { type: "json" };
import { startTestServer } from "../testkit.ts";
import { SDK_JS, SDK_MAP, SDK_SOURCE_SHA256 } from "./bundle.ts";
import { clientSourceHash } from "./build.ts";

test("sdk/bundle.ts is built from sdk/client.ts as it is (else: make sdk)", () => {
  assert.equal(
    SDK_SOURCE_SHA256,
    clientSourceHash(),
    "sdk/client.ts changed since sdk/bundle.ts was built: run `make sdk` and commit sdk/bundle.ts",
  );
  assert.match(SDK_JS, /export \{[^}]*\bClient\b/, "an ES module that exports Client");
  assert.match(SDK_JS, /\/\/# sourceMappingURL=deno-pusher\.js\.map\n$/);
  assert.deepEqual(JSON.parse(SDK_MAP).sources, ["client.ts"]);
});

test("GET /sdk/deno-pusher.js: the module and its map, for any origin, cached by version", async () => {
  await using server = await startTestServer();
  const js = await fetch(`${server.url}/sdk/deno-pusher.js`);
  assert.equal(js.status, 200);
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(js.headers.get("access-control-allow-origin"), "*");
  assert.equal(js.headers.get("cache-control"), "public, max-age=300");
  assert.equal(await js.text(), SDK_JS);
  const etag = js.headers.get("etag")!;
  assert.match(etag, new RegExp(`^"${pkg.version.replaceAll(".", "\\.")}-[0-9a-f]{16}"$`));

  const again = await fetch(`${server.url}/sdk/deno-pusher.js`, {
    headers: { "if-none-match": etag },
  });
  assert.equal(again.status, 304);
  await again.body?.cancel();

  const versioned = await fetch(`${server.url}/sdk/deno-pusher.js?v=${pkg.version}`);
  assert.equal(versioned.headers.get("cache-control"), "public, max-age=31536000, immutable");
  await versioned.body?.cancel();

  const map = await fetch(`${server.url}/sdk/deno-pusher.js.map`);
  assert.equal(map.headers.get("content-type"), "application/json; charset=utf-8");
  assert.deepEqual(JSON.parse(await map.text()).sources, ["client.ts"]);
});
