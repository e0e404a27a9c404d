/**
 * deno-pusher in a Bun process that can be asked what its heap holds: bench/heap.ts runs it as
 * `bun bench/heap_server.ts <deno-pusher's flags>`, with deno-pusher's environment. It starts the
 * server as main.ts does (same flags and environment) and prints `listening` once it listens. Each
 * `measure` line on stdin is answered with one JSON line: RSS before and after a full collection,
 * and what the collected heap holds (bun:jsc's heapStats: its size and its objects by type).
 * It stops on EOF.
 */
import process from "node:process";
import { createInterface } from "node:readline";
import { parseConfig } from "../config.ts";
import { start } from "../main.ts";

/** One answer to `measure`: bytes, and object counts by type. */
export interface HeapMeasure {
  rssBefore: number;
  rssAfter: number;
  heapSize: number;
  extraMemorySize: number;
  objectCount: number;
  objectTypeCounts: Record<string, number>;
}

/** The parts of Bun's API this uses (Bun's own types are not loaded under Deno). */
interface BunApi {
  gc(force: boolean): void;
}
interface Jsc {
  heapStats(): {
    heapSize: number;
    extraMemorySize: number;
    objectCount: number;
    objectTypeCounts: Record<string, number>;
  };
}
const bun = (globalThis as unknown as { Bun?: BunApi }).Bun;
if (!bun) throw new Error("heap_server.ts runs on Bun: bun bench/heap_server.ts <flags>");
// A computed specifier: `deno check` would try to resolve a literal one, and Deno has no bun:jsc.
const jscModule = ["bun", "jsc"].join(":");
const { heapStats } = await import(jscModule) as Jsc;

const parsed = parseConfig(process.argv.slice(2), process.env);
if (parsed.kind !== "config") throw new Error("heap_server.ts takes deno-pusher's flags only");
const running = await start(parsed.config);
console.log("listening");
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() !== "measure") continue;
  const rssBefore = process.memoryUsage.rss();
  // Twice: the first collection may leave what finalizers of the first freed.
  bun.gc(true);
  bun.gc(true);
  const stats = heapStats();
  const measure: HeapMeasure = {
    rssBefore,
    rssAfter: process.memoryUsage.rss(),
    heapSize: stats.heapSize,
    extraMemorySize: stats.extraMemorySize,
    objectCount: stats.objectCount,
    objectTypeCounts: stats.objectTypeCounts,
  };
  console.log(JSON.stringify(measure));
}
await running.stop();
process.exit(0);
