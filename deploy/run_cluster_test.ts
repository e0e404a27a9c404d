/**
 * `make run-cluster` (deploy/run-cluster.sh), as a user tries it: three nodes and a redis-server
 * come up, a tab on one node gets a /send made through another, a third counts it, a tab that
 * comes back on another node resumes what it missed, and Ctrl-C stops every process. Run on Deno
 * only: the script runs the nodes on Deno, whichever runtime runs the tests.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { findRedisServer, testWithoutRedis } from "../redis_testkit.ts";
import { runtimeName } from "../runtime/serve.ts";
import { connectClient, until, within } from "../testkit.ts";

const root = join(import.meta.dirname ?? ".", "..");

/** Free TCP ports on 127.0.0.1, each held until all are found so that no two are the same. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<ReturnType<typeof createServer>>((resolve) => {
        const server = createServer();
        server.listen(0, "127.0.0.1", () => resolve(server));
      })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** Whether anything accepts a TCP connection on `port` of 127.0.0.1 now. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.on("connect", () => (socket.destroy(), resolve(true)));
    socket.on("error", () => resolve(false));
  });
}

if (runtimeName === "deno" && !process.env.DENO_PUSHER_BIN) {
  if (!findRedisServer()) {
    testWithoutRedis("make run-cluster's story");
  } else {
    test("make run-cluster: three nodes on one Redis act as one, and Ctrl-C stops them all", async () => {
      const dir = mkdtempSync(join(tmpdir(), "deno-pusher-run-cluster-"));
      const [redisPort, ...ports] = await freePorts(4);
      const script = spawn("bash", [join(root, "deploy/run-cluster.sh"), process.execPath], {
        cwd: root,
        env: {
          ...process.env,
          REDIS_PORT: String(redisPort),
          CLUSTER_PORTS: ports.join(" "),
          CLUSTER_DIR: dir,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      const exited = new Promise((resolve) => script.on("exit", resolve));
      let out = "";
      const banner = Promise.withResolvers<void>();
      const onOutput = (chunk: string) => {
        out += chunk;
        if (out.includes("make stop-cluster")) banner.resolve();
      };
      script.stdout!.on("data", onOutput);
      script.stderr!.on("data", onOutput);
      exited.then((code) => banner.reject(new Error(`run-cluster.sh exited ${code}:\n${out}`)));
      try {
        await within(60_000, "cluster banner", banner.promise);
        const token = /valid 24 hours:\n {2}(\S+)/.exec(out)![1];
        const [a, b, c] = ports.map((port) => `127.0.0.1:${port}`);
        assert.match(out, new RegExp(`curl "http://localhost:${ports[1]}/send\\?uid=123`));

        const tab = await connectClient(`ws://${a}/ws?format=json&token=${token}`);
        await tab.nextJson(); // welcome
        await until(
          async () => (await (await fetch(`http://${c}/api/uids/count`)).json()).count === 1,
          "the third node counting the tab",
        );
        const sent = await (await fetch(`http://${b}/send?uid=123&message=Hello`)).json();
        assert.equal(sent.delivered, 1);
        const hello = await tab.nextJson();
        assert.deepEqual([hello.id, hello.data], [sent.id, "Hello"]);
        await tab[Symbol.asyncDispose]();

        await until(
          async () => (await (await fetch(`http://${b}/api/uids/count`)).json()).count === 0,
          "the tab gone",
        );
        const missed = await fetch(`http://${b}/send?uid=123&message=missed`);
        assert.equal(missed.status, 404);
        const back = await connectClient(
          `ws://${c}/ws?format=json&since=${sent.id}&token=${token}`,
        );
        const welcome = await back.nextJson();
        assert.deepEqual([welcome.recovered, welcome.replayed], [true, 1]);
        assert.equal((await back.nextJson()).data, "missed");
        await back[Symbol.asyncDispose]();
      } finally {
        script.kill("SIGINT");
        await exited;
        rmSync(dir, { recursive: true, force: true });
      }
      // Every node and Redis stopped with it: their ports are free again.
      for (const port of [redisPort, ...ports]) {
        assert.equal(await listening(port), false, `port ${port} is still open`);
      }
    });
  }
}
