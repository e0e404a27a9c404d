/**
 * The README's webhook verifiers (Node, Deno and Go), run as printed against signatures made by
 * webhook/signature.ts: a signed body passes; a changed body, another secret and a stale
 * timestamp fail. A backend that copies them gets what the server sends.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { runtimeName } from "../runtime/serve.ts";
import { signatureHeader } from "./signature.ts";

const SECRET = "webhook-secret-0123456789abcdef012345";
const BODY = JSON.stringify({ events: [{ id: "e1", type: "uid.online", ts: 1, uid: "ann" }] });

/** The README's code block of `lang` in its Webhooks section. */
function verifierOf(lang: "js" | "ts" | "go"): string {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("## Webhooks"), readme.indexOf("## Admin page"));
  const block = new RegExp("```" + lang + "\\n([\\s\\S]*?)\\n```").exec(section);
  assert.ok(block, `README's Webhooks section has a ${lang} block`);
  return block[1];
}

/** The cases every verifier is run on: a header, a body, and whether it must pass. */
function cases(): { name: string; header: string; body: string; pass: boolean }[] {
  const now = Math.floor(Date.now() / 1000);
  return [
    { name: "signed", header: signatureHeader(SECRET, BODY, now), body: BODY, pass: true },
    {
      name: "tampered body",
      header: signatureHeader(SECRET, BODY, now),
      body: BODY.replace("ann", "eve"),
      pass: false,
    },
    {
      name: "another secret",
      header: signatureHeader("another-secret-0123456789abcdef01234", BODY, now),
      body: BODY,
      pass: false,
    },
    {
      name: "stale timestamp",
      header: signatureHeader(SECRET, BODY, now - 600),
      body: BODY,
      pass: false,
    },
  ];
}

/** Runs `cmd args` in `dir`; answers its stdout. */
function run(cmd: string, args: string[], dir: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd: dir, timeout: 60_000, env: { ...process.env, HOME: dir } }, (
      err,
      stdout,
      stderr,
    ) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${err.message}\n${stderr}`)) : resolve(
        stdout,
      ))
  );
}

/**
 * The program on PATH (Deno: the one running this, or the Makefile's `DENO` when this runs on Bun,
 * since the pinned Deno may not be on PATH); undefined when missing.
 */
function which(name: string): string | undefined {
  if (name === "deno" && runtimeName === "deno") return process.execPath;
  if (name === "deno" && process.env.DENO && existsSync(process.env.DENO)) return process.env.DENO;
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Skips loudly without `name`, or fails under CI=true. */
function missing(t: { skip(why: string): void }, name: string): boolean {
  if (which(name)) return false;
  const why = `SKIP: ${name} is not on PATH; the README's verifier for it did not run`;
  if (process.env.CI === "true") assert.fail(why);
  console.warn(why);
  t.skip(why);
  return true;
}

/** Runs the verifier in `dir` with the harness, and checks each case's outcome. */
async function check(cmd: string, args: string[], dir: string): Promise<void> {
  const out = (await run(cmd, args, dir)).trim().split("\n");
  const expected = cases().map((c) => `${c.name}: ${c.pass}`);
  assert.deepEqual(out, expected);
}

const casesJson = () => JSON.stringify(cases());

test("the README's Node verifier passes a signed body and refuses a changed one, another secret and a stale time", async (t) => {
  if (missing(t, "node")) return;
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-verify-node-"));
  try {
    writeFileSync(join(dir, "verify.mjs"), verifierOf("js"));
    writeFileSync(
      join(dir, "run.mjs"),
      `import { verify } from "./verify.mjs";
for (const c of ${casesJson()}) {
  console.log(c.name + ": " + verify(${JSON.stringify(SECRET)}, c.header, c.body));
}
`,
    );
    await check(which("node")!, ["run.mjs"], dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the README's Deno verifier does the same", async (t) => {
  if (missing(t, "deno")) return;
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-verify-deno-"));
  try {
    writeFileSync(join(dir, "verify.ts"), verifierOf("ts"));
    writeFileSync(
      join(dir, "run.ts"),
      `import { verify } from "./verify.ts";
for (const c of ${casesJson()}) {
  console.log(c.name + ": " + await verify(${JSON.stringify(SECRET)}, c.header, c.body));
}
`,
    );
    await check(which("deno")!, ["run", "--no-config", "--quiet", "run.ts"], dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the README's Go verifier does the same", async (t) => {
  if (missing(t, "go")) return;
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-verify-go-"));
  try {
    const lines = cases().map((c) =>
      `\tfmt.Printf("%s: %v\\n", ${JSON.stringify(c.name)}, Verify(${JSON.stringify(SECRET)}, ${
        JSON.stringify(c.header)
      }, []byte(${JSON.stringify(c.body)}), 5*time.Minute))`
    );
    writeFileSync(
      join(dir, "main.go"),
      `package main

import (
\t"crypto/hmac"
\t"crypto/sha256"
\t"encoding/hex"
\t"fmt"
\t"math"
\t"strconv"
\t"strings"
\t"time"
)

${verifierOf("go")}

func main() {
${lines.join("\n")}
}
`,
    );
    await check(which("go")!, ["run", "main.go"], dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
