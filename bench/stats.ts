/** Small statistics helpers for the bench: percentiles by nearest rank over sorted samples. */

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
