/**
 * Black-box stories of the first release's defects, told against the program as users run it:
 * main.ts on this runtime, or the executable under `make test-bin`. Each failed before its fix.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import process from "node:process";
import { test } from "node:test";
import {
  connectClient,
  eventually,
  programMetric as metric,
  programToken as token,
  rawRequest,
  rawUpgrade,
  stopProgram,
  until,
  within,
  withProgram,
} from "./testkit.ts";

test("malformed handshakes get 400 and never use up MAX_CONNECTIONS", async () => {
  await withProgram(["--max-connections", "2", "--max-connects-per-ip", "0"], async (port) => {
    const good = {
      Host: `127.0.0.1:${port}`,
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    };
    const path = "/ws?auth=frame";
    for (const missing of ["Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"]) {
      for (let i = 0; i < 3; i++) {
        const headers = Object.entries(good).filter(([name]) => name !== missing);
        const answer = await rawRequest(
          port,
          [`GET ${path} HTTP/1.1`, ...headers.map(([k, v]) => `${k}: ${v}`)].join("\r\n"),
        );
        assert.equal(answer.status, 400, `without ${missing}: ${answer.body}`);
        assert.match(JSON.parse(answer.body).error, /WebSocket handshake needs/, missing);
      }
    }
    const badKey = Object.entries({ ...good, "Sec-WebSocket-Key": "short" });
    const answer = await rawRequest(
      port,
      [`GET ${path} HTTP/1.1`, ...badKey.map(([k, v]) => `${k}: ${v}`)].join("\r\n"),
    );
    assert.equal(answer.status, 400);
    // A slot frees when the server sees a socket's close, a moment after the client dropped it:
    // until then a handshake may be refused by the cap (503), and by nothing else. `open` gives
    // what opened, the status that refused it, or undefined to try again.
    const whenFree = async <T extends object>(
      what: string,
      open: () => Promise<T | number | undefined>,
    ): Promise<T> => {
      let opened: T | number | undefined;
      await until(async () => {
        opened = await open();
        if (typeof opened === "number") {
          assert.equal(opened, 503, `only the cap itself may refuse ${what}`);
        }
        return typeof opened === "object";
      }, `a slot for ${what}`);
      return opened as T;
    };
    const upgrade = async (uid: string) => {
      const upgraded = await rawUpgrade(port, `/ws?token=${await token(uid)}`);
      return upgraded.status === 101 ? upgraded : upgraded.status;
    };
    // Handshakes dropped by the client right after sending them give their slot back too.
    for (let i = 0; i < 4; i++) {
      const upgraded = await whenFree(`gone${i}`, () => upgrade(`gone${i}`));
      const gone = new Promise((resolve) => upgraded.socket.once("close", resolve));
      upgraded.socket.destroy();
      await gone;
    }
    // Both slots are still there for real browsers.
    const tabs = [];
    for (const uid of ["a", "b"]) {
      tabs.push(
        await whenFree(uid, async () => {
          try {
            return await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token(uid)}`);
          } catch {
            // The client tells no status: a handshake of our own does. One that opens (the slot
            // came free meanwhile) is dropped, and the client tries again.
            const answer = await upgrade(uid);
            if (typeof answer === "number") return answer;
            answer.socket.destroy();
            return undefined;
          }
        }),
      );
    }
    const third = await rawUpgrade(port, `/ws?token=${await token("c")}`);
    assert.equal(third.status, 503, "the cap still holds");
    for (const tab of tabs) await tab[Symbol.asyncDispose]();
  });
});

test("made-up HTTP methods are counted as other and add no series to /metrics", async () => {
  await withProgram([], async (port) => {
    let answered = 0;
    for (const method of ["FOO1", "FOO2", "BREW"]) {
      const answer = await rawRequest(port, `${method} /healthz HTTP/1.1\r\nHost: x`);
      // Deno hands any method to the app (405); Bun refuses unknown ones itself (400, or a
      // closed connection).
      assert.ok([0, 400, 405].includes(answer.status), `${method}: ${answer.status}`);
      if (answer.status === 405) answered++;
    }
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.doesNotMatch(metrics, /FOO|BREW/);
    const other = /^http_requests_total\{method="other",route="\/healthz",status="405"\} (\d+)$/m
      .exec(metrics);
    assert.equal(Number(other?.[1] ?? 0), answered, metrics);
  });
});

test("shutdown closes every socket with 1001 and the documented reason, waiting or not", async () => {
  await withProgram([], async (port, started) => {
    const tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${await token("u")}`);
    const waiting = await connectClient(`ws://127.0.0.1:${port}/ws?auth=frame`);
    assert.equal(await stopProgram(started), 0);
    assert.deepEqual(await tab.closed, { code: 1001, reason: "server going away" });
    assert.deepEqual(await waiting.closed, { code: 1001, reason: "server going away" });
  });
});

test("a refused /ws handshake is logged in one line, with the token redacted", async () => {
  await withProgram([], async (port, started) => {
    const forged = "eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiIxIn0.forged-signature";
    const refused = await rawUpgrade(port, `/ws?token=${forged}`);
    assert.equal(refused.status, 401);
    await within(
      10_000,
      "refusal line",
      started.printed(/\/ws refused 401 for 127\.0\.0\.1 \/ws\?token=\[redacted\]: [^\n]+\n/),
    );
    const printed = await new Promise<string>((resolve) => {
      let out = "";
      started.child.stderr!.on("data", (d) => out += d);
      started.child.stdout!.on("data", (d) => out += d);
      started.child.once("exit", () => resolve(out));
      process.kill(started.child.pid!, "SIGTERM");
    });
    assert.doesNotMatch(printed + started.banner, /forged-signature/);
  });
});

test("the access log redacts tokens in URLs, and /metrics names no uid", async () => {
  await withProgram(["--access-log", "true"], async (port, started) => {
    const secret = await token("secret-uid");
    const tab = await connectClient(`ws://127.0.0.1:${port}/ws?token=${secret}`);
    await (await fetch(`http://127.0.0.1:${port}/ws?token=${secret}`)).body?.cancel();
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.doesNotMatch(metrics, /secret-uid/);
    await within(10_000, "access log line", started.printed(/GET \/ws\?token=\[redacted\] 101/));
    await within(10_000, "access log line", started.printed(/GET \/metrics 200/));
    await tab[Symbol.asyncDispose]();
    assert.ok(!started.output().includes(secret.split(".")[2]), "no token in the access log");
  });
});

test("JSON answers end with a newline, as a terminal expects", async () => {
  await withProgram([], async (port) => {
    for (const path of ["/healthz", "/send?uid=nobody&message=x", "/nowhere", "/api/clients"]) {
      const text = await (await fetch(`http://127.0.0.1:${port}${path}`)).text();
      assert.ok(text.endsWith("}\n"), `${path}: ${JSON.stringify(text)}`);
      JSON.parse(text);
    }
  });
});

test("IPv6 callers share one connect bucket per /64", async () => {
  const args = ["--trusted-proxies", "127.0.0.1", "--max-connects-per-ip", "2"];
  await withProgram(args, async (port) => {
    const from = (address: string) =>
      rawUpgrade(port, "/ws?auth=frame", { "X-Forwarded-For": address });
    const statuses = [];
    for (const address of ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]) {
      const answer = await from(address);
      statuses.push(answer.status);
      answer.socket.destroy();
    }
    assert.deepEqual(statuses, [101, 101, 429], "three addresses of one /64 are one caller");
    const other = await from("2001:db8:1:3::1");
    assert.equal(other.status, 101, "the next /64 has its own bucket");
    other.socket.destroy();
  });
});

test("a group past MAX_PRESENCE_MEMBERS announces no joins or leaves", async () => {
  await withProgram(["--max-presence-members", "2"], async (port) => {
    const join = async (uid: string, presence: boolean) => {
      const tab = await connectClient(
        `ws://127.0.0.1:${port}/ws?format=json${
          presence ? "&presence=true" : ""
        }&token=${await token(
          uid,
          { groups: ["room"] },
        )}`,
      );
      assert.equal((await tab.nextJson()).type, "welcome");
      return tab;
    };
    const a = await join("a", true);
    assert.deepEqual(await a.nextJson(), { type: "join", group: "room", uid: "a" });
    const b = await join("b", false);
    assert.deepEqual(await a.nextJson(), { type: "join", group: "room", uid: "b" });
    const c = await join("c", false);
    await c[Symbol.asyncDispose]();
    await until(
      async () => await metric(port, "presence_events_suppressed_total") === 2,
      "c's join and leave to be left out",
    );
    const sent = await fetch(`http://127.0.0.1:${port}/api/groups/room/send`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message: "marker" }),
    });
    assert.equal(sent.status, 200);
    assert.equal((await a.nextJson()).data, "marker", "no join or leave of c came first");
    await b[Symbol.asyncDispose]();
    assert.deepEqual(await a.nextJson(), { type: "leave", group: "room", uid: "b" });
    await a[Symbol.asyncDispose]();
  });
});

test("a message log that cannot write keeps its batch and writes it once the file is free", async () => {
  await withProgram(
    ["--message-logger", "sqlite", "--log-flush-ms", "20"],
    async (port, started) => {
      const send = (message: string) =>
        fetch(`http://127.0.0.1:${port}/send?uid=u&message=${message}`);
      assert.equal((await send("first")).status, 404);
      const path = join(started.dir, "data", "messages.db");
      const rows = () => {
        const db = new DatabaseSync(path);
        try {
          return (db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n;
        } finally {
          db.close();
        }
      };
      await eventually(() => rows() === 1, 10_000, "the first row");
      const holder = new DatabaseSync(path);
      holder.exec("BEGIN IMMEDIATE"); // another writer holds the file
      try {
        for (const m of ["a", "b", "c"]) assert.equal((await send(m)).status, 404);
        await until(
          async () => await metric(port, "message_log_write_errors_total") >= 1,
          "the refused write to be counted",
        );
        assert.equal(await metric(port, "message_log_backlog"), 3);
      } finally {
        holder.exec("ROLLBACK");
        holder.close();
      }
      await eventually(() => rows() === 4, 20_000, "the kept batch to land");
      assert.equal(await metric(port, "message_log_dropped_total"), 0);
    },
  );
});
