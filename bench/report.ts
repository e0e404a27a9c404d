/**
 * Turns a run's results into the markdown table `make bench` prints, the target checks of issue 6,
 * and an SVG chart of fan-out latency and memory per connection against N.
 */
import type { PeerResult, RateResult } from "./scenarios.ts";

/** A whole run as written to bench/results/*.json. */
export interface RunResult {
  profile: string;
  startedAt: string;
  durationS: number;
  machine: Record<string, unknown>;
  levels: number[];
  rates: number[];
  peers: PeerResult[];
}

const fmt = (n: number | undefined, digits = 1) =>
  n === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits);
const kb = (bytes: number | undefined) => bytes === undefined ? "–" : fmt(bytes / 1024);
const count = (n: number) => n >= 1000 ? `${n / 1000}k` : String(n);

/** The fastest closed-loop or open-loop /send run without failures, by achieved rate. */
export function bestThroughput(p: PeerResult): RateResult | undefined {
  return [...p.unicast].sort((a, b) => b.achievedRate - a.achievedRate)[0];
}

/** The highest fixed rate every measured peer ran (latency is compared there, not at max). */
function latencyRate(run: RunResult): number {
  return Math.max(0, ...run.rates.filter((r) => r > 0));
}

export function table(run: RunResult): string {
  const levels = run.levels;
  const lr = latencyRate(run);
  const head = [
    "peer",
    ...levels.map((n) => `conn/s to ${count(n)}`),
    ...levels.map((n) => `KB/conn @${count(n)}`),
    ...levels.map((n) => `fan-out ${count(n)} p50 / p99 ms`),
    `server CPU ms per fan-out @${count(Math.max(...levels))}`,
    "/send max req/s",
    `/send @${count(lr)}/s p50 / p99 / p999 ms`,
    "server CPU µs per /send",
    "group fan-out",
  ];
  const rows = [head, head.map(() => "---")];
  for (const p of run.peers) {
    if (p.skipped || p.error) {
      rows.push([
        p.peer,
        ...head.slice(1).map((_, i) => i === 0 ? `skipped: ${p.skipped ?? p.error}` : ""),
      ]);
      continue;
    }
    const at = (n: number) => p.levels.find((l) => l.connections === n);
    const best = bestThroughput(p);
    const fixed = p.unicast.find((u) => u.targetRate === lr);
    rows.push([
      p.peer,
      ...levels.map((n) => {
        const l = at(n);
        if (!l) return "–";
        const short = l.connected < n ? ` (${l.connected} open)` : "";
        return `${l.connectPerSecond}${short}`;
      }),
      ...levels.map((n) => kb(at(n)?.rssPerConnectionBytes)),
      ...levels.map((n) => {
        const f = at(n)?.fanout;
        if (!f) return "–";
        const lost = f.complete < f.rounds ? ` (${f.rounds - f.complete} incomplete)` : "";
        return `${fmt(f.p50Ms)} / ${fmt(f.p99Ms)}${lost}`;
      }),
      fmt(at(Math.max(...levels))?.fanout?.serverCpuMsPerRound),
      best ? String(best.achievedRate) : "–",
      fixed
        ? `${fmt(fixed.latency.p50Ms, 2)} / ${fmt(fixed.latency.p99Ms, 2)} / ${
          fmt(fixed.latency.p999Ms, 2)
        }`
        : "–",
      best ? String(best.serverCpuUsPerSend) : "–",
      "pending (group API)",
    ]);
  }
  return rows.map((r) => `| ${r.join(" | ")} |`).join("\n");
}

/** The issue's targets for deno-pusher, each as a line that says met or behind (and by how much). */
export function targets(run: RunResult): string[] {
  const by = (name: string) => run.peers.find((p) => p.peer === name && !p.skipped && !p.error);
  const out: string[] = [];
  const big = Math.max(...run.levels);
  const fan = (p: PeerResult | undefined) =>
    p?.levels.find((l) => l.connections === big)?.fanout?.p50Ms;
  const mem = (p: PeerResult | undefined) =>
    p?.levels.find((l) => l.connections === big)?.rssPerConnectionBytes;
  const thr = (p: PeerResult | undefined) => p ? bestThroughput(p)?.achievedRate : undefined;
  const pairs: [string, string][] = [
    ["deno-pusher (Deno)", "ceiling (Deno)"],
    ["deno-pusher (Bun exe)", "ceiling (Bun)"],
  ];
  for (const [ours, ceil] of pairs) {
    const a = by(ours);
    const c = by(ceil);
    if (!a || !c) {
      out.push(
        `- ${ours} vs ${ceil}: not measured (${!a ? ours : ceil} did not run)`,
      );
      continue;
    }
    const fanRatio = (fan(a) ?? NaN) / (fan(c) ?? NaN);
    const thrRatio = (thr(c) ?? NaN) / (thr(a) ?? NaN);
    out.push(
      `- ${ours} fan-out p50 at ${count(big)} is ${fmt(fanRatio, 2)}× ${ceil}'s ` +
        `(target ≤ 1.2×): ${fanRatio <= 1.2 ? "met" : "BEHIND"}`,
    );
    out.push(
      `- ${ceil} /send throughput is ${fmt(thrRatio, 2)}× ${ours}'s (target ≤ 1.2×): ` +
        `${thrRatio <= 1.2 ? "met" : "BEHIND"}`,
    );
  }
  const go = by("Go gorilla hub");
  const ours = [by("deno-pusher (Deno)"), by("deno-pusher (Bun exe)")].filter((
    p,
  ) => p);
  if (go && ours.length) {
    const best = Math.min(...ours.map((p) => mem(p) ?? Infinity));
    out.push(
      `- memory per idle connection at ${count(big)}: ours ${kb(best)} KB, Go hub ${
        kb(mem(go))
      } KB` +
        ` (target: below Go's): ${best < (mem(go) ?? 0) ? "met" : "BEHIND"}`,
    );
  }
  const others = run.peers.filter((p) => p.role === "peer" && !p.skipped && !p.error);
  if (ours.length && others.length) {
    const checks: [string, (p: PeerResult) => number | undefined, boolean][] = [
      ["fan-out p50", fan, false],
      ["/send throughput", thr, true],
      ["memory per connection", mem, false],
    ];
    for (const [what, get, higherIsBetter] of checks) {
      const mine = ours.map((p) => get(p!) ?? NaN).filter(Number.isFinite);
      const best = higherIsBetter ? Math.max(...mine) : Math.min(...mine);
      const ahead = others.filter((o) => {
        const v = get(o);
        return v === undefined || (higherIsBetter ? best > v : best < v);
      });
      const behind = others.filter((o) => !ahead.includes(o)).map((o) => o.peer);
      out.push(
        `- ${what}: ahead of every peer: ${behind.length ? `BEHIND ${behind.join(", ")}` : "met"}`,
      );
    }
  }
  out.push(
    "- group fan-out: pending until the group API exists (measured as one uid on N sockets)",
  );
  return out;
}

/** Colours for the chart's lines, one per peer in PEERS order. */
const COLOURS = [
  "#d62728",
  "#ff7f0e",
  "#1f77b4",
  "#17becf",
  "#2ca02c",
  "#9467bd",
  "#8c564b",
];

/** Two panels side by side: fan-out p50 (ms) and KB per connection, each against N. */
export function chart(run: RunResult): string {
  const W = 460;
  const H = 300;
  const M = { l: 56, r: 16, t: 30, b: 44 };
  const peers = run.peers.filter((p) => p.levels.length);
  const xs = run.levels;
  const panel = (
    ox: number,
    title: string,
    get: (l: PeerResult["levels"][number]) => number | undefined,
  ) => {
    const values = peers.flatMap((p) => p.levels.map(get)).filter((
      v,
    ): v is number => v !== undefined && Number.isFinite(v));
    const yMax = Math.max(1e-9, ...values) * 1.1;
    const xMax = Math.max(...xs);
    const x = (n: number) => ox + M.l + (n / xMax) * (W - M.l - M.r);
    const y = (v: number) => M.t + (1 - v / yMax) * (H - M.t - M.b);
    const parts = [
      `<text x="${ox + W / 2}" y="18" text-anchor="middle" font-weight="bold">${title}</text>`,
      `<line x1="${x(0)}" y1="${y(0)}" x2="${x(xMax)}" y2="${y(0)}" stroke="#333"/>`,
      `<line x1="${x(0)}" y1="${y(0)}" x2="${x(0)}" y2="${y(yMax)}" stroke="#333"/>`,
    ];
    for (const n of xs) {
      parts.push(
        `<text x="${x(n)}" y="${H - M.b + 16}" text-anchor="middle">${count(n)}</text>`,
      );
    }
    for (let i = 0; i <= 4; i++) {
      const v = yMax * i / 4;
      parts.push(
        `<text x="${x(0) - 6}" y="${y(v) + 4}" text-anchor="end">${fmt(v, v < 10 ? 1 : 0)}</text>`,
        `<line x1="${x(0)}" y1="${y(v)}" x2="${x(xMax)}" y2="${y(v)}" stroke="#eee"/>`,
      );
    }
    parts.push(
      `<text x="${ox + W / 2}" y="${H - 8}" text-anchor="middle">connections (N)</text>`,
    );
    peers.forEach((p) => {
      const colour = COLOURS[run.peers.indexOf(p) % COLOURS.length];
      const pts = p.levels.map((l) => [l.connections, get(l)] as const).filter((
        [, v],
      ) => v !== undefined && Number.isFinite(v)) as [number, number][];
      if (!pts.length) return;
      parts.push(
        `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${
          pts.map(([n, v]) => `${x(n).toFixed(1)},${y(v).toFixed(1)}`).join(" ")
        }"/>`,
        ...pts.map(([n, v]) =>
          `<circle cx="${x(n).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${colour}"/>`
        ),
      );
    });
    return parts.join("\n");
  };
  const legend = peers.map((p, i) => {
    const colour = COLOURS[run.peers.indexOf(p) % COLOURS.length];
    const lx = 20 + (i % 4) * 230;
    const ly = H + 20 + Math.floor(i / 4) * 18;
    return `<rect x="${lx}" y="${ly - 9}" width="12" height="10" fill="${colour}"/>` +
      `<text x="${lx + 18}" y="${ly}">${p.peer}</text>`;
  }).join("\n");
  const height = H + 30 + Math.ceil(peers.length / 4) * 18;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${height}" ` +
    `font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n` +
    panel(
      0,
      "fan-out: time until the last client has it, p50 (ms)",
      (l) => l.fanout?.p50Ms,
    ) +
    "\n" +
    panel(
      W,
      "server memory per connection (KB)",
      (l) => l.rssPerConnectionBytes / 1024,
    ) +
    "\n" + legend + "\n</svg>\n";
}

/** Per-rate detail: one table of every /send run of every peer. */
export function rateTable(run: RunResult): string {
  const rows = [
    "| peer | target req/s | achieved req/s | p50 ms | p99 ms | p999 ms | received / accepted | shed | failed |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const p of run.peers) {
    for (const u of p.unicast) {
      rows.push(
        `| ${p.peer} | ${u.targetRate || "max"} | ${u.achievedRate} | ${
          fmt(u.latency.p50Ms, 2)
        } | ` +
          `${fmt(u.latency.p99Ms, 2)} | ${
            fmt(u.latency.p999Ms, 2)
          } | ${u.received} / ${u.accepted} | ` +
          `${u.shed} | ${u.notFound + u.otherStatus + u.errors} |`,
      );
    }
  }
  return rows.join("\n");
}
