/**
 * Small statistics helpers for the bench: percentiles by nearest rank over sorted samples, and the
 * median and min–max of a number measured in several repeats, with the overlap rule the verdicts use.
 */

/** The q-quantile (0..1) of ascending `sorted` by nearest rank; NaN when empty. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

/** p50, p99, p999 and max of samples in µs, reported in ms. */
export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export function summarize(samplesUs: number[]): LatencySummary {
  const sorted = Float64Array.from(samplesUs).sort();
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    count: sorted.length,
    p50Ms: ms(quantile(sorted, 0.5)),
    p99Ms: ms(quantile(sorted, 0.99)),
    p999Ms: ms(quantile(sorted, 0.999)),
    maxMs: ms(sorted.length ? sorted[sorted.length - 1] : NaN),
  };
}

/** The median of `xs` (the lower middle one for an even count); NaN when empty. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
}

/** A number measured in several repeats: its median and the range the repeats covered. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  /** Repeats that gave a finite value. */
  n: number;
}

/** The median and min–max of the finite values of `xs`; NaN everywhere when there are none. */
export function spread(xs: readonly number[]): Spread {
  const finite = xs.filter(Number.isFinite);
  return {
    median: median(finite),
    min: finite.length ? Math.min(...finite) : NaN,
    max: finite.length ? Math.max(...finite) : NaN,
    n: finite.length,
  };
}

/**
 * Whether two spreads share a value: then their repeats cannot tell the two apart. False when
 * either has no finite value.
 */
export function overlaps(a: Spread, b: Spread): boolean {
  return a.n > 0 && b.n > 0 && a.min <= b.max && b.min <= a.max;
}

/**
 * How `ours` stands against `theirs`, "better" meaning higher when `higherIsBetter`: "ahead" or
 * "behind" only when the two ranges do not overlap, "tie" when they do, "unknown" when either has
 * no finite value.
 */
export function versus(
  ours: Spread,
  theirs: Spread,
  higherIsBetter: boolean,
): "ahead" | "behind" | "tie" | "unknown" {
  if (!ours.n || !theirs.n) return "unknown";
  if (overlaps(ours, theirs)) return "tie";
  return (ours.median > theirs.median) === higherIsBetter ? "ahead" : "behind";
}

/**
 * "median (min–max)" with `digits` decimals, e.g. "6202 (5810–6533)"; just the median when one
 * repeat gave a number, "[n of m]" after it when only n of `repeats` did, "–" when none did.
 */
export function spreadText(s: Spread, digits: number, repeats = s.n): string {
  if (!s.n) return "–";
  const f = (x: number) => x.toFixed(digits);
  const range = s.n > 1 ? ` (${f(s.min)}–${f(s.max)})` : "";
  return `${f(s.median)}${range}${s.n < repeats ? ` [${s.n} of ${repeats}]` : ""}`;
}
