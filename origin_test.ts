/** The /ws origin allowlist, pattern by pattern. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { originAllowed } from "./origin.ts";

test("exact origins, wildcard subdomains, and * behave as documented", () => {
  const list = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"];
  const cases: [string | undefined, boolean][] = [
    [undefined, true], // not a browser: no Origin header
    ["https://app.example.com", true],
    ["HTTPS://APP.EXAMPLE.COM", true],
    ["http://app.example.com", false], // scheme matters
    ["https://app.example.com:8443", false], // port matters
    ["https://evil.com", false],
    ["https://app.example.com.evil.com", false],
    ["https://a.example.org", true],
    ["https://a.b.example.org", true],
    ["https://example.org", false], // the apex is not a subdomain
    ["https://evilexample.org", false],
    ["http://a.example.org", false],
    ["http://localhost:3000", true],
    ["http://localhost:3001", false],
    ["null", false],
  ];
  for (const [origin, allowed] of cases) {
    assert.equal(originAllowed(origin, list), allowed, String(origin));
  }
  assert.ok(originAllowed("https://anything.test", ["*"]));
});
