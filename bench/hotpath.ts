/**
 * Summarises a V8 or Bun .cpuprofile (from `bench/run.ts --cpu-prof`) as the functions with the
 * most self time, each marked as ours (the repo's own modules), a dependency (node_modules: hono,
 * zod, jose) or the runtime's (its built-in JS, native ops, GC); then the split between the three,
 * and the inclusive time of our hottest functions. The hot-path notes in docs/BENCHMARKS.md come
 * from this.
 *
 *   deno run --allow-read bench/hotpath.ts <file.cpuprofile> [top]
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export type Owner = "ours" | "dependency" | "runtime";

/** Who a frame's code belongs to, from its script URL. */
export function ownerOf(url: string): Owner {
  if (/node_modules|registry\.npmjs\.org/.test(url)) return "dependency";
  if (/^file:\/\//.test(url) && !url.includes("/$bunfs/")) return "ours";
  return "runtime";
}

export interface FunctionTime {
  name: string;
  owner: Owner;
  /** Self time (ms). */
  ms: number;
  /** Self time inside this function and everything it called (ms), counted once per sample. */
  totalMs: number;
  /** Share of the non-idle samples. */
  share: number;
}

/** Self and inclusive time per function, highest self time first; idle samples are left out. */
export function selfTimes(profile: CpuProfile): FunctionTime[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const key = (n: ProfileNode) => {
    const f = n.callFrame;
    const file = f.url.replace(/^.*\/(node_modules\/|)/, "$1");
    return `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const owner = new Map<string, Owner>();
  let busy = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const node = byId.get(id);
    if (!node || node.callFrame.functionName === "(idle)") return; // shares are of busy time
    busy += us;
    const name = key(node);
    self.set(name, (self.get(name) ?? 0) + us);
    owner.set(name, ownerOf(node.callFrame.url));
    // Inclusive time: once for every distinct function on the sample's stack.
    const seen = new Set<string>();
    for (
      let n: ProfileNode | undefined = node;
      n;
      n = byId.get(parent.get(n.id) ?? -1)
    ) {
      const k = key(n);
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + us);
      if (!owner.has(k)) owner.set(k, ownerOf(n.callFrame.url));
    }
  });
  return [...total.keys()].map((name) => ({
    name,
    owner: owner.get(name) ?? "runtime",
    ms: Math.round((self.get(name) ?? 0) / 1000),
    totalMs: Math.round((total.get(name) ?? 0) / 1000),
    share: (self.get(name) ?? 0) / busy,
  })).sort((a, b) => b.ms - a.ms);
}

if (import.meta.main) {
  const [path, top = "20"] = Deno.args;
  if (!path) throw new Error("usage: hotpath.ts <file.cpuprofile> [top]");
  const all = selfTimes(JSON.parse(await Deno.readTextFile(path)));
  const busyMs = all.reduce((a, r) => a + r.ms, 0);
  console.log(
    "| self ms | share | owner | function |\n| --- | --- | --- | --- |",
  );
  for (const r of all.slice(0, Number(top))) {
    console.log(
      `| ${r.ms} | ${(r.share * 100).toFixed(1)}% | ${r.owner} | \`${r.name}\` |`,
    );
  }
  const split = (["ours", "dependency", "runtime"] as const).map((o) => {
    const ms = all.filter((r) => r.owner === o).reduce((a, r) => a + r.ms, 0);
    return `${o} ${ms} ms (${(ms / busyMs * 100).toFixed(1)}%)`;
  });
  console.log(
    `\nBusy ${busyMs} ms, self time by owner: ${split.join(", ")}.\n`,
  );
  console.log("Our functions by inclusive time (self + callees):\n");
  console.log("| inclusive ms | self ms | function |\n| --- | --- | --- |");
  for (
    const r of all.filter((r) => r.owner === "ours").sort((a, b) => b.totalMs - a.totalMs)
      .slice(0, Number(top) / 2)
  ) {
    console.log(`| ${r.totalMs} | ${r.ms} | \`${r.name}\` |`);
  }
}
