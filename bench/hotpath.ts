/**
 * Summarises a V8 .cpuprofile (from `bench/run.ts --cpu-prof`, Deno's --cpu-prof) as the functions
 * with the most self time: the hot-path notes in docs/BENCHMARKS.md come from this.
 *
 *   deno run --allow-read bench/hotpath.ts bench/results/profiles/<file>.cpuprofile [top]
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time (ms) per function, highest first; `share` is of the non-idle samples. */
export function selfTimes(
  profile: CpuProfile,
): { name: string; ms: number; share: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const frame = byId.get(id)?.callFrame;
    if (frame?.functionName === "(idle)") return; // shares are of busy time
    const file = frame?.url.replace(/^.*\/(node_modules\/|)/, "$1") ?? "";
    const name = `${frame?.functionName || "(anonymous)"} ${file}:${(frame?.lineNumber ?? 0) + 1}`;
    self.set(name, (self.get(name) ?? 0) + us);
    total += us;
  });
  return [...self].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({
    name,
    ms: Math.round(us / 1000),
    share: us / total,
  }));
}

if (import.meta.main) {
  const [path, top = "20"] = Deno.args;
  if (!path) throw new Error("usage: hotpath.ts <file.cpuprofile> [top]");
  const rows = selfTimes(JSON.parse(await Deno.readTextFile(path))).slice(
    0,
    Number(top),
  );
  console.log("| self ms | share | function |\n| --- | --- | --- |");
  for (const r of rows) {
    console.log(`| ${r.ms} | ${(r.share * 100).toFixed(1)}% | \`${r.name}\` |`);
  }
}
