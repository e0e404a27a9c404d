/**
 * The coordinator's side of the load generators: spawns `bun loadgen/client.ts` processes and sends
 * them commands (protocol.ts). One LoadGen is one process; the coordinator owns and kills them all.
 */
import type { Command, Reply } from "./protocol.ts";

/** Most sockets one load generator holds: well under its 20,000-file limit, and cheap to drive. */
export const MAX_SOCKETS_PER_LOADGEN = 5_000;

const CLIENT_TS = new URL("./client.ts", import.meta.url).pathname;

/** Every spawned load generator gets its own server address in 127.0.1.0/24 and up. */
let spawned = 0;

/**
 * A fresh destination address per load generator (servers listen on 0.0.0.0, so every 127.x.y.z
 * reaches them). The kernel keeps a separate ephemeral port range per destination, so each process
 * has all ~28k ports to itself and a run never meets its own TIME_WAIT sockets.
 */
function serverAddress(n: number): string {
  return `127.0.${1 + Math.floor(n / 250)}.${(n % 250) + 1}`;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

/** One load-generator process; requests are answered in any order, matched by id. */
export class LoadGen {
  /** The server address this process connects its clients to. */
  readonly serverAddress: string;
  private readonly child: Deno.ChildProcess;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exited = false;

  constructor(bun: string, deadlineMs: number) {
    this.serverAddress = serverAddress(spawned++);
    this.child = new Deno.Command(bun, {
      args: [CLIENT_TS, String(deadlineMs)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.writer = this.child.stdin.getWriter();
    this.readReplies();
    this.child.status.then(() => {
      this.exited = true;
      for (const p of this.pending.values()) {
        p.reject(new Error("load generator exited"));
      }
      this.pending.clear();
    });
  }

  private async readReplies(): Promise<void> {
    const lines = this.child.stdout.pipeThrough(new TextDecoderStream());
    let rest = "";
    for await (const chunk of lines) {
      rest += chunk;
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        if (!line.trim()) continue;
        const reply = JSON.parse(line) as Reply<Record<string, unknown>>;
        const p = this.pending.get(reply.id);
        if (!p) continue;
        this.pending.delete(reply.id);
        if (reply.ok) p.resolve(reply);
        else p.reject(new Error(`load generator: ${reply.error}`));
      }
    }
  }

  /** The process id, for reading its CPU time from /proc. */
  get pid(): number {
    return this.child.pid;
  }

  /** Sends one command; resolves with its reply, rejects if the process fails or has exited. */
  request<T>(command: Command): Promise<T> {
    if (this.exited) return Promise.reject(new Error("load generator exited"));
    const id = this.nextId++;
    const line = new TextEncoder().encode(
      JSON.stringify({ id, ...command }) + "\n",
    );
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, {
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.writer.write(line).catch(reject);
    });
  }

  /** Ends the process: closes stdin (it exits on EOF), then SIGKILL if it lingers. */
  async stop(graceMs = 2_000): Promise<void> {
    if (this.exited) return;
    await this.writer.close().catch(() => {});
    await exitWithin(this.child, graceMs);
  }
}

/** Resolves when `child` has exited, killing it with SIGKILL if it is still there after `graceMs`. */
export async function exitWithin(
  child: Deno.ChildProcess,
  graceMs: number,
): Promise<void> {
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, graceMs);
  await child.status;
  clearTimeout(timer);
}
