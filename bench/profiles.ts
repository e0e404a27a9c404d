/**
 * The two benchmark profiles. `quick` is `make bench` (under 6 minutes for every peer and the
 * durable comparison on a 2-core machine); `full` is `make bench-full` (every scenario of issue 6,
 * about 35 minutes with the soak, and the durable comparison with longer rates).
 */

export interface SoakProfile {
  /** Peers (by name) that run the soak; it is deno-pusher's stability check, not a race. */
  peers: string[];
  /** Length of the soak (minutes): issue 6 asks for 10. */
  minutes: number;
  /** Idle connections held during the soak, beside the unicast receivers. */
  idleConnections: number;
  /** Steady /send rate during the soak (calls per second). */
  rate: number;
  /** One sample (RSS, latency) per interval (s). */
  sampleSeconds: number;
}

/**
 * The fixed /send rate (calls per second) at which issue 11 bounds the durable default's p99
 * (under 10 ms; see DURABLE_P99_TARGET_MS in report.ts).
 */
export const DURABLE_FIXED_RATE = 5_000;

/**
 * Issue 11's comparison: deno-pusher's durable default against the stripped configuration the other
 * scenarios run, on each runtime, with the /send scenario only (fresh process, the unicast
 * receivers, the warm-up, then each rate). The two configurations alternate in every repeat, so
 * noise on the shared cores falls on both alike.
 */
export interface DurableProfile {
  /** /send rates (calls per second), 0 meaning closed-loop; DURABLE_FIXED_RATE must be one. */
  rates: number[];
  /** How long each rate runs (ms). */
  rateDurationMs: number;
  /** Runs of each configuration on each runtime; medians and min–max are over them. */
  repeats: number;
}

export interface Profile {
  name: "quick" | "full";
  /** Connection counts for the idle and fan-out scenarios, ascending; connections are added. */
  levels: number[];
  /** Measured fan-out rounds per level; p99 over this few rounds is the worst round or so. */
  fanoutRounds: number;
  /** Receivers of the unicast scenario, each with its own uid. */
  unicastReceivers: number;
  /** Open-loop /send rates (calls per second); 0 means closed-loop, as fast as answered. */
  rates: number[];
  /** How long each rate runs (ms). */
  rateDurationMs: number;
  soak?: SoakProfile;
  /** The durable-default comparison of issue 11; absent: not run. */
  durable?: DurableProfile;
  /** Hard limit on the whole run (ms); the coordinator kills everything and exits after it. */
  deadlineMs: number;
}

/**
 * Pushed message size (bytes): a small JSON notification, like the README's "a QR code was
 * scanned". Large enough to carry the tag and send time the receivers read.
 */
export const PAYLOAD_BYTES = 64;

/**
 * Per-process ceiling used for the largest level: a process here may open at most 20,000 files, and
 * every server needs some for its listener, stdio, runtime and SQLite. 19,000 leaves 1,000 spare.
 */
export const MAX_CONNECTIONS_PER_PROCESS = 19_000;

export const PROFILES: Record<Profile["name"], Profile> = {
  quick: {
    name: "quick",
    levels: [1_000, 10_000],
    fanoutRounds: 30,
    unicastReceivers: 1_000,
    rates: [2_000, 8_000, 0],
    rateDurationMs: 3_000,
    // 3 repeats × 2 configurations × 2 runtimes of ~12 s each: about 2.5 of the run's minutes.
    durable: {
      rates: [DURABLE_FIXED_RATE, 0],
      rateDurationMs: 3_000,
      repeats: 3,
    },
    deadlineMs: 8 * 60_000,
  },
  full: {
    name: "full",
    levels: [1_000, 5_000, 10_000, MAX_CONNECTIONS_PER_PROCESS],
    fanoutRounds: 100,
    unicastReceivers: 1_000,
    rates: [1_000, 5_000, 10_000, 20_000, 0],
    rateDurationMs: 5_000,
    soak: {
      peers: ["deno-pusher (Deno)", "deno-pusher (Bun exe)"],
      minutes: 10,
      idleConnections: 5_000,
      rate: 1_000,
      sampleSeconds: 15,
    },
    durable: {
      rates: [DURABLE_FIXED_RATE, 0],
      rateDurationMs: 5_000,
      repeats: 3,
    },
    deadlineMs: 90 * 60_000,
  },
};
