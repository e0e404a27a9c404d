/**
 * The two benchmark profiles, each run 3 times over every peer (11 peers: 33 runs). `quick` is
 * `make bench`: about 25 s a run, so about 12 minutes on a quiet 2-core machine (a run took up to
 * twice that with the cores busy). `full` is `make bench-full`: every scenario of issue 6 at up to
 * 19,000 connections, about 110 s a run, and the 10-minute soak of each of the four deno-pusher
 * peers, about 100 minutes in all.
 */

export interface SoakProfile {
  /**
   * Peers (by name) that run the soak, once each, after their first repeat's scenarios; it is
   * deno-pusher's stability check, not a race.
   */
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
  /** Runs once per product peer named in it, in the first repeat only. */
  soak?: SoakProfile;
  /**
   * Whether issue 16's reconnect storm and /send-cost scenarios run (bench/storm.ts sizes them per
   * profile), for deno-pusher and the ceilings: `make bench-full`, or `--storm` on a quick run.
   */
  storm: boolean;
  /**
   * Runs of every peer, interleaved: each repeat starts every peer once, in PEERS order, each in a
   * fresh process with a fresh data dir; the tables give the median (min–max) of the repeats.
   */
  repeats: number;
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
    // 5,000/s is where issue 11 bounds the default configuration's p99.
    rates: [2_000, 5_000, 0],
    rateDurationMs: 3_000,
    repeats: 3,
    storm: false,
    // About 12 minutes on a quiet machine; room for the cores to be busy twice over.
    deadlineMs: 30 * 60_000,
  },
  full: {
    name: "full",
    levels: [1_000, 5_000, 10_000, MAX_CONNECTIONS_PER_PROCESS],
    fanoutRounds: 100,
    unicastReceivers: 1_000,
    rates: [1_000, 5_000, 10_000, 20_000, 0],
    rateDurationMs: 5_000,
    soak: {
      peers: [
        "deno-pusher (Deno)",
        "deno-pusher (Deno) · default",
        "deno-pusher (Bun exe)",
        "deno-pusher (Bun exe) · default",
      ],
      minutes: 10,
      idleConnections: 5_000,
      rate: 1_000,
      sampleSeconds: 15,
    },
    repeats: 3,
    storm: true,
    // About 100 minutes on a quiet machine, 40 of them the four soaks.
    deadlineMs: 150 * 60_000,
  },
};
