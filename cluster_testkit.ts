/**
 * A cluster for tests: a redis-server of its own (redis_testkit.ts) and several nodes of the
 * program as users run it (main.ts on this runtime, or the executable under `make test-bin`), all
 * with the same REDIS_URL and JWT_SECRET, each on a free port and in a directory of its own.
 */
import { startRedis, type TestRedis } from "./redis_testkit.ts";
import { PROGRAM_SECRET, type Started, startProgram, until } from "./testkit.ts";
import { rmSync } from "node:fs";

/** One node of a test cluster. */
export interface TestNode {
  name: string;
  port: number;
  started: Started;
  /** `http://127.0.0.1:<port>` */
  url: string;
}

/** A running test cluster; `stop` (or `await using`) ends every node, then Redis. */
export interface TestCluster extends AsyncDisposable {
  redis: TestRedis;
  nodes: TestNode[];
  /** Starts one more node (named `n<index>`) and waits until it is ready. */
  addNode(args?: string[]): Promise<TestNode>;
  /** Kills `node` with SIGKILL, as a crash would, and waits for it to exit. */
  kill(node: TestNode): Promise<void>;
  stop(): Promise<void>;
}

/** Whether the node at `port` answers /readyz 200: it has joined the cluster. */
export async function ready(port: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
  } catch {
    return false;
  }
}

/**
 * Starts redis-server (with `redisOptions`: see startRedis) and `count` nodes with `args`, and
 * resolves once every node is ready. With `tls`, the nodes reach Redis by rediss:// and trust its
 * CA through NODE_EXTRA_CA_CERTS. Throws
 * REDIS_MISSING without a redis-server (check findRedisServer first to skip).
 */
export async function startCluster(
  count: number,
  args: string[] = [],
  redisOptions: { dir?: string; password?: string; tls?: boolean } = {},
): Promise<TestCluster> {
  const redis = await startRedis(redisOptions);
  const url = redisOptions.password
    ? `redis://:${redisOptions.password}@127.0.0.1:${redis.port}`
    : redis.tlsUrl ?? redis.url;
  // A TLS Redis's certificate comes from a throwaway CA, which the nodes are told to trust as a
  // user would tell them of a private one (README: Cluster on Redis).
  const trust: Record<string, string> = redis.caFile ? { NODE_EXTRA_CA_CERTS: redis.caFile } : {};
  const nodes: TestNode[] = [];
  const live = new Set<TestNode>();
  const addNode = async (extra: string[] = args) => {
    const name = `n${nodes.length}`;
    const started = await startProgram(
      ["--port", "0", "--node-name", name, ...extra],
      { JWT_SECRET: PROGRAM_SECRET, REDIS_URL: url, ...trust },
    );
    const port = Number(/listening on [^:]+:(\d+)/.exec(started.banner)![1]);
    const node = { name, port, started, url: `http://127.0.0.1:${port}` };
    nodes.push(node);
    live.add(node);
    await until(() => ready(port), `node ${name} ready`);
    return node;
  };
  const kill = async (node: TestNode) => {
    live.delete(node);
    node.started.child.kill("SIGKILL");
    await node.started.exited;
    rmSync(node.started.dir, { recursive: true, force: true });
  };
  const stop = async () => {
    await Promise.all([...live].map(kill));
    await redis.stop();
  };
  try {
    for (let i = 0; i < count; i++) await addNode();
  } catch (err) {
    await stop();
    throw err;
  }
  return { redis, nodes, addNode, kill, stop, [Symbol.asyncDispose]: stop };
}
