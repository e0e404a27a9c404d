/**
 * The OpenAPI document as standard tools see it: it passes a maintained linter (@redocly/cli, a
 * devDependency), a client built from it calls the right URLs with the right key, and every refusal
 * the server really gives is declared on the operation that gives it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { startTestServer, type TestServer } from "./testkit.ts";

const REDOCLY = join(import.meta.dirname ?? ".", "node_modules/@redocly/cli/bin/cli.js");

// deno-lint-ignore no-explicit-any -- the document is JSON; each test reads the parts it checks
type Doc = any;

/** Fetches /api/openapi.json with `headers`, as a generator given its URL would. */
async function fetchDoc(server: TestServer, headers: Record<string, string> = {}) {
  const url = `${server.url}/api/openapi.json`;
  const res = await fetch(url, { headers });
  assert.equal(res.status, 200);
  return { url, doc: await res.json() as Doc };
}

/** `redocly lint`'s JSON report on `doc`, run by Node whichever runtime runs the tests. */
async function lint(doc: Doc): Promise<{ totals: Record<string, number>; problems: Doc[] }> {
  assert.ok(
    existsSync(REDOCLY),
    `${REDOCLY} is missing: @redocly/cli is a devDependency; run \`npm ci\` to install it`,
  );
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-openapi-"));
  try {
    const file = join(dir, "openapi.json");
    writeFileSync(file, JSON.stringify(doc));
    const env = {
      ...process.env,
      REDOCLY_TELEMETRY: "off",
      REDOCLY_SUPPRESS_UPDATE_NOTICE: "true",
    };
    // lint exits 1 when it finds errors; the report on stdout says which, so read it either way.
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile("node", [REDOCLY, "lint", "--format=json", file], { env }, (err, out, stderr) => {
        if (err && !out) reject(new Error(`node ${REDOCLY} lint: ${err.message}\n${stderr}`));
        else resolve(out);
      })
    );
    return JSON.parse(stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the OpenAPI document passes @redocly/cli lint with no errors and no warnings", async () => {
  await using server = await startTestServer();
  const { doc } = await fetchDoc(server);
  const report = await lint(doc);
  const problems = report.problems.map((p) =>
    `${p.severity} ${p.ruleId} at ${p.location?.[0]?.pointer}: ${p.message}`
  );
  assert.deepEqual(problems, []);
  assert.deepEqual([report.totals.errors, report.totals.warnings], [0, 0]);
});

test("a client built from the document calls /api's URLs, with the key either way it declares", async () => {
  await using server = await startTestServer({ apiKeys: ["the-key"] });
  const { url, doc } = await fetchDoc(server, { authorization: "Bearer the-key" });
  // As a generator does: the server URL resolves against the document's, each path onto that.
  const base = new URL(doc.servers[0].url, url).href;
  const operation = doc.paths["/clients/count"].get;
  assert.equal(operation.operationId, "countClients");
  const endpoint = `${base}/clients/count`;
  assert.equal(endpoint, `${server.url}/api/clients/count`);

  assert.deepEqual(doc.security, [{ bearer: [] }, { apiKey: [] }], "every operation needs a key");
  const schemes = doc.components.securitySchemes;
  assert.deepEqual([schemes.bearer.type, schemes.bearer.scheme], ["http", "bearer"]);
  assert.deepEqual([schemes.apiKey.type, schemes.apiKey.in], ["apiKey", "header"]);
  const ways: Record<string, string>[] = [
    { authorization: "Bearer the-key" },
    { [schemes.apiKey.name]: "the-key" },
  ];
  for (const headers of ways) {
    const res = await fetch(endpoint, { headers });
    assert.deepEqual([res.status, await res.json()], [200, { count: 0 }], JSON.stringify(headers));
  }
  const without = await fetch(endpoint);
  assert.equal(without.status, 401);
  await without.body?.cancel();
});

/** A request that is refused, and the operation (method and templated path) that refuses it. */
interface Refusal {
  operation: [string, string];
  request: [string, RequestInit?];
  status: number;
  error: string | RegExp;
}

/** Sends each request and checks its status, its error and that its operation declares it. */
async function assertDeclared(server: TestServer, doc: Doc, refusals: Refusal[]) {
  for (const { operation: [method, path], request: [target, init], status, error } of refusals) {
    const res = await fetch(`${server.url}/api${target}`, init);
    const body = await res.json();
    const what = `${method} ${target}`;
    assert.equal(res.status, status, `${what}: ${JSON.stringify(body)}`);
    if (typeof error === "string") assert.equal(body.error, error, what);
    else assert.match(body.error, error, what);
    const declared = doc.paths[path][method.toLowerCase()].responses[String(status)];
    assert.ok(declared, `${method} ${path} does not declare its ${status}`);
    assert.equal(
      declared.content["application/json"].schema.$ref,
      "#/components/schemas/Error",
      `${method} ${path}'s ${status}`,
    );
  }
}

const json = (method: string, body: unknown): RequestInit => ({
  method,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

test("every refusal /api gives is declared, with the Error schema, on the operation that gives it", async () => {
  await using server = await startTestServer({ maxMessageBytes: 8, maxBatch: 1, historySize: 0 });
  const { doc } = await fetchDoc(server);
  const bodyLimit = 1 * (8 + 1024) + 4096;
  await assertDeclared(server, doc, [
    {
      operation: ["GET", "/clients"],
      request: ["/clients?limit=0"],
      status: 400,
      error: "limit must be 1 to 1000",
    },
    {
      operation: ["GET", "/clients/{id}/online"],
      request: [`/clients/${"x".repeat(257)}/online`],
      status: 400,
      error: "client id is longer than 256 characters",
    },
    {
      operation: ["POST", "/broadcast"],
      request: ["/broadcast", { ...json("POST", {}), body: "{not json" }],
      status: 400,
      error: "Malformed JSON in request body",
    },
    {
      operation: ["GET", "/messages"],
      request: ["/messages?before=0"],
      status: 400,
      error: "before must be 1 or more",
    },
    {
      operation: ["GET", "/messages"],
      request: ["/messages"],
      status: 404,
      error: "no message log is kept that can be read (MESSAGE_LOGGER=sqlite keeps one)",
    },
    {
      operation: ["PUT", "/groups/{group}/uids/{uid}"],
      request: ["/groups/g/uids/nobody", { method: "PUT" }],
      status: 404,
      error: "client not found: nobody",
    },
    {
      operation: ["POST", "/groups/{group}/send"],
      request: ["/groups/none/send", json("POST", { message: "x" })],
      status: 404,
      error: "group not found: none",
    },
    {
      operation: ["POST", "/uids/{uid}/send"],
      request: ["/uids/u/send", json("POST", { message: "123456789" })],
      status: 413,
      error: "message is 9 bytes; the limit is 8 (MAX_MESSAGE_BYTES)",
    },
    {
      operation: ["PUT", "/clients/{id}/uid"],
      request: ["/clients/c/uid", json("PUT", { uid: "x".repeat(bodyLimit) })],
      status: 413,
      error: `request body too large: the limit is ${bodyLimit} bytes ` +
        "(MAX_BATCH × (MAX_MESSAGE_BYTES + 1024) + 4096)",
    },
    {
      operation: ["POST", "/batch"],
      request: ["/batch", {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: '{"messages":[]}',
      }],
      status: 415,
      error: "unsupported content type text/plain: send application/json",
    },
    {
      operation: ["POST", "/clients/{id}/send"],
      request: ["/clients/c/send", { method: "POST", body: new URLSearchParams({ message: "x" }) }],
      status: 415,
      error: "unsupported content type application/x-www-form-urlencoded: send application/json",
    },
  ]);
});

test("the API key's refusals (401, 403, 429) are declared on every operation", async () => {
  await using keyed = await startTestServer({ apiKeys: ["k"], maxRequestsPerKey: 1 });
  const { doc } = await fetchDoc(keyed, { "x-api-key": "k" });
  const operations = Object.values(doc.paths as Record<string, Record<string, Doc>>)
    .flatMap((methods) => Object.values(methods));
  assert.equal(operations.length, 35);
  for (const op of operations) {
    for (const status of ["401", "403", "429"]) {
      assert.ok(op.responses[status], `${op.operationId} does not declare ${status}`);
    }
  }
  assert.ok(doc.paths["/uids/count"].get.responses["429"].headers["Retry-After"]);

  // The key above used the one request a second; a burst of four from it meets the limit.
  const burst = await Promise.all(
    Array.from(
      { length: 4 },
      () => fetch(`${keyed.url}/api/uids/count`, { headers: { "x-api-key": "k" } }),
    ),
  );
  const answers = await Promise.all(burst.map(async (r) => ({
    status: r.status,
    retryAfter: r.headers.get("retry-after"),
    error: (await r.json()).error,
  })));
  const limited = answers.find((a) => a.status === 429);
  assert.ok(limited, `statuses ${answers.map((a) => a.status)}`);
  assert.equal(limited.retryAfter, "1");
  assert.match(limited.error, /^rate limit exceeded: 1 requests per second/);
  await assertDeclared(keyed, doc, [
    {
      operation: ["GET", "/groups"],
      request: ["/groups"],
      status: 401,
      error: /^\/api\/groups needs an API key: send one of API_KEYS as Authorization: Bearer/,
    },
  ]);

  await using open = await startTestServer({ trustedProxies: ["127.0.0.1"] });
  await assertDeclared(open, doc, [
    {
      operation: ["DELETE", "/uids/{uid}"],
      request: ["/uids/u", { method: "DELETE", headers: { "x-forwarded-for": "203.0.113.9" } }],
      status: 403,
      error: /^\/api\/uids\/u answers loopback callers only while API_KEYS is empty/,
    },
  ]);
});
