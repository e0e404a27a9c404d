/**
 * The webhook deliverer: the hub hands it events (`emit`, which returns at once and never throws),
 * it keeps them in the outbox and POSTs them to every WEBHOOK_URL, signed (signature.ts), as
 * `{"events":[…]}` in batches of up to `batchSize`. A 2xx removes a batch from the outbox; any
 * other answer, a network error or no answer within `timeoutMs` leaves it there, and its queues
 * (one per uid, outbox.ts) are tried again after an exponential backoff with full jitter, until the
 * event is `maxAgeMs` old: then it is dropped, counted and logged. A receiver that accepts again
 * after RECOVERY_SILENCE_MS of nothing gets every queue waiting on its backoff at once. A receiver
 * that is down or hangs holds up only its own URL's deliveries, never `emit`.
 *
 * Invariant: one lane per URL, and a lane has at most one request in flight; so a queue's rows are
 * never in two requests at once, and a queue's events reach the receiver in order.
 */
import { errorMessage } from "../sqlite.ts";
import type { WebhookEvent, WebhookSink } from "./events.ts";
import type { Outbox, OutboxRow } from "./outbox.ts";
import { SIGNATURE_HEADER, signatureHeader } from "./signature.ts";

/** WEBHOOK_MAX_AGE's default, in milliseconds: a receiver down for a day still gets everything. */
export const DEFAULT_MAX_AGE_MS = 24 * 60 * 60 * 1000;

/** Events per POST at most: a body of some tens of KiB, parsed at once by any receiver. */
export const DEFAULT_BATCH_SIZE = 100;

/**
 * Milliseconds an idle lane waits after an event before it POSTs, so that the events of one burst
 * (a page of connects, a group's joins) go in one request. A lane busy sending does not wait.
 */
export const DEFAULT_BATCH_DELAY_MS = 100;

/** Milliseconds a receiver has to answer a POST before it counts as failed and is tried again. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** The backoff's first ceiling, in milliseconds; doubled after each failure of a queue's head. */
export const DEFAULT_MIN_BACKOFF_MS = 1_000;

/** The backoff's highest ceiling, in milliseconds: a receiver back up is found within 5 minutes. */
export const DEFAULT_MAX_BACKOFF_MS = 5 * 60 * 1000;

/**
 * Milliseconds a receiver accepts nothing before its next 2xx counts as coming back from an
 * outage: the queues waiting on their backoff then go at once (Outbox.resume), rather than each
 * at its own time, up to DEFAULT_MAX_BACKOFF_MS later. A receiver that refuses one uid's events
 * while it takes the others' accepts often, so that uid's retries keep their backoff.
 */
export const RECOVERY_SILENCE_MS = 30_000;

/**
 * Milliseconds `close` waits for requests in flight before it aborts them (their events stay in
 * the outbox, and go again after a restart). Less than DEFAULT_TIMEOUT_MS: a shutdown is not held
 * up for a receiver that hangs.
 */
export const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;

/**
 * Longest a lane sleeps with nothing due, in milliseconds: it then drops what expired, which
 * includes the rows of a URL no longer configured, that no lane reads.
 */
export const IDLE_CHECK_MS = 60_000;

/** Milliseconds between two log lines about dropped or lost events; the ones between are summed. */
export const DROP_REPORT_MS = 60_000;

/**
 * Event types counted apart in `stats().emitted`; any beyond count as "other". The hub's types are
 * a dozen: the bound keeps a caller's mistake from growing the metrics without end.
 */
export const MAX_COUNTED_TYPES = 64;

/** Upper bounds of the delivery latency histogram's buckets, in seconds (Prometheus's `le`). */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
  1800,
  3600,
  21600,
  86400,
];

/** How a request is made: `fetch`, or a test's stand-in. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

/** What a deliverer is built from. Durations are in milliseconds. */
export interface WebhookDelivererOptions {
  /** Where every event goes (WEBHOOK_URL): http or https; duplicates count once. */
  urls: readonly string[];
  /** WEBHOOK_SECRET: signs every POST. Not empty. */
  secret: string;
  /** Where events wait. The caller owns it: close it after the deliverer. */
  outbox: Outbox;
  /** An event not accepted this long after its `ts` is dropped. Default DEFAULT_MAX_AGE_MS. */
  maxAgeMs?: number;
  /** Events per POST at most, 1 or more. Default DEFAULT_BATCH_SIZE. */
  batchSize?: number;
  /** Wait of an idle lane before it POSTs, 0 or more. Default DEFAULT_BATCH_DELAY_MS. */
  batchDelayMs?: number;
  /** A POST not answered in this long has failed. Default DEFAULT_TIMEOUT_MS. */
  timeoutMs?: number;
  /** The backoff's first ceiling. Default DEFAULT_MIN_BACKOFF_MS. */
  minBackoffMs?: number;
  /** The backoff's highest ceiling, at least minBackoffMs. Default DEFAULT_MAX_BACKOFF_MS. */
  maxBackoffMs?: number;
  /** `close`'s wait for requests in flight. Default DEFAULT_CLOSE_TIMEOUT_MS. */
  closeTimeoutMs?: number;
  /**
   * Told, to be logged: a URL that starts failing (once until it accepts again), events dropped
   * for their age or lost (at most once per DROP_REPORT_MS, with the count), an outbox that fails.
   * Default: nothing.
   */
  onError?: (err: Error) => void;
  /** Makes the requests. Default the runtime's fetch. */
  fetch?: Fetch;
  /** The clock for ages and backoff, ms since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /** The jitter's source, in [0, 1). Default Math.random. */
  random?: () => number;
}

/** How delivery is going, for /metrics. Counters only grow; `outbox` and `inFlight` are gauges. */
export interface WebhookStats {
  /** Events handed to `emit`, by type (webhook_events_total{type}). */
  emitted: Record<string, number>;
  /** Events a receiver accepted, once per URL. */
  delivered: number;
  /** POSTs without a 2xx: a status, a network error, no answer in time (webhook_failures_total). */
  failures: number;
  /** Events waiting in the outbox, once per URL (webhook_outbox). */
  outbox: number;
  /** Events dropped, the oldest first, to keep the outbox within its bound. */
  dropped: number;
  /** Events dropped because no receiver accepted them within maxAgeMs. */
  expired: number;
  /** Events `emit` could not keep: the outbox was closed, or the event is no JSON. */
  lost: number;
  /** POSTs waiting for their answer. */
  inFlight: number;
  /**
   * Time from each delivered event's `ts` to its receiver's 2xx, as a Prometheus histogram:
   * `buckets[i]` counts the deliveries within LATENCY_BUCKETS_SECONDS[i] (cumulative, as `le`
   * buckets are); `count` is the +Inf bucket; `sum` in seconds.
   */
  latency: { buckets: number[]; count: number; sum: number };
}

/** What every lane shares with the deliverer. */
interface Shared {
  readonly outbox: Outbox;
  readonly secret: string;
  readonly batchSize: number;
  readonly batchDelayMs: number;
  readonly timeoutMs: number;
  readonly maxAgeMs: number;
  readonly fetch: Fetch;
  readonly now: () => number;
  /** Milliseconds before the `attempts`th retry of a queue. */
  backoff(attempts: number): number;
  /** Drops what is older than maxAgeMs. Throws what the outbox threw. */
  expire(): Promise<void>;
  onError(err: Error): void;
  delivered(rows: readonly OutboxRow[], at: number): void;
  failed(): void;
  inFlight: number;
  closed: boolean;
}

/**
 * Delivers webhook events, durably, to one or more URLs. Built, it starts at once, and first
 * delivers what the outbox kept from before.
 */
export class WebhookDeliverer implements WebhookSink {
  readonly #outbox: Outbox;
  readonly #urls: string[];
  readonly #closeTimeoutMs: number;
  readonly #onError: (err: Error) => void;
  readonly #shared: Shared;
  readonly #lanes: Lane[];
  readonly #emitted = new Map<string, number>();
  #delivered = 0;
  #failures = 0;
  #expired = 0;
  #lost = 0;
  readonly #latencyBuckets: number[] = LATENCY_BUCKETS_SECONDS.map(() => 0);
  #latencyCount = 0;
  #latencySum = 0;
  readonly #expiredReport: Throttled;
  readonly #lostReport: Throttled;
  #closing: Promise<void> | undefined;

  /** Throws a RangeError, naming the option, for a URL, a secret or a number out of range. */
  constructor(options: WebhookDelivererOptions) {
    const urls = [...new Set(options.urls)];
    for (const url of urls) checkUrl(url);
    if (typeof options.secret !== "string" || options.secret === "") {
      throw new RangeError("webhooks need a secret to sign them with (WEBHOOK_SECRET)");
    }
    const maxAgeMs = whole("maxAgeMs", options.maxAgeMs ?? DEFAULT_MAX_AGE_MS, 1);
    const batchSize = whole("batchSize", options.batchSize ?? DEFAULT_BATCH_SIZE, 1);
    const batchDelayMs = whole("batchDelayMs", options.batchDelayMs ?? DEFAULT_BATCH_DELAY_MS, 0);
    const timeoutMs = whole("timeoutMs", options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 1);
    const minBackoffMs = whole("minBackoffMs", options.minBackoffMs ?? DEFAULT_MIN_BACKOFF_MS, 1);
    const maxBackoffMs = whole(
      "maxBackoffMs",
      options.maxBackoffMs ?? Math.max(DEFAULT_MAX_BACKOFF_MS, minBackoffMs),
      minBackoffMs,
    );
    this.#closeTimeoutMs = whole(
      "closeTimeoutMs",
      options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS,
      0,
    );
    this.#outbox = options.outbox;
    this.#urls = urls;
    const onError = options.onError ?? (() => {});
    this.#onError = (err) => {
      try {
        onError(err);
      } catch {
        // A logger that throws must not stop deliveries.
      }
    };
    const now = options.now ?? Date.now;
    const random = options.random ?? Math.random;
    this.#expiredReport = new Throttled((n) =>
      this.#onError(
        new Error(
          `webhooks: dropped ${events(n)} that no receiver accepted within ${
            duration(maxAgeMs)
          } (WEBHOOK_MAX_AGE)`,
        ),
      )
    );
    this.#lostReport = new Throttled((n, cause) =>
      this.#onError(new Error(`webhooks: lost ${events(n)}: ${cause}`))
    );
    this.#shared = {
      outbox: this.#outbox,
      secret: options.secret,
      batchSize,
      batchDelayMs,
      timeoutMs,
      maxAgeMs,
      fetch: options.fetch ?? ((url, init) => fetch(url, init)),
      now,
      backoff: (attempts) =>
        Math.floor(random() * Math.min(maxBackoffMs, minBackoffMs * 2 ** (attempts - 1))),
      expire: async () => {
        const n = await this.#outbox.expire(now() - maxAgeMs);
        if (n === 0) return;
        this.#expired += n;
        this.#expiredReport.add(n);
      },
      onError: this.#onError,
      delivered: (rows, at) => this.#countDelivered(rows, at),
      failed: () => void this.#failures++,
      inFlight: 0,
      closed: false,
    };
    this.#lanes = urls.map((url) => new Lane(url, this.#shared));
  }

  /**
   * Keeps `event` in the outbox for every URL and wakes the lanes; returns at once, never throws.
   * An event the outbox refuses (closed, or no JSON) is counted as lost and logged. After `close`
   * events are still kept, for the next start to deliver, while the outbox is open.
   */
  emit(event: WebhookEvent): void {
    try {
      let type = String(event.type);
      if (!this.#emitted.has(type) && this.#emitted.size >= MAX_COUNTED_TYPES) type = "other";
      this.#emitted.set(type, (this.#emitted.get(type) ?? 0) + 1);
      this.#outbox.add(event, this.#urls);
    } catch (err) {
      this.#lost++;
      this.#lostReport.add(1, errorMessage(err));
      return;
    }
    for (const lane of this.#lanes) lane.nudge();
  }

  /** The counters and gauges, for /metrics. */
  stats(): WebhookStats {
    let cumulative = 0;
    const outbox = this.#outbox.stats();
    return {
      emitted: Object.fromEntries(this.#emitted),
      delivered: this.#delivered,
      failures: this.#failures,
      outbox: outbox.rows,
      dropped: outbox.dropped,
      expired: this.#expired,
      lost: this.#lost,
      inFlight: this.#shared.inFlight,
      latency: {
        buckets: this.#latencyBuckets.map((n) => cumulative += n),
        count: this.#latencyCount,
        sum: this.#latencySum,
      },
    };
  }

  /**
   * Stops the lanes: waits for the requests in flight up to `closeTimeoutMs`, then aborts them
   * (their events stay in the outbox). Resolves when no lane will touch the outbox again; the
   * outbox stays open, for the caller to close. Never rejects; calling it again returns the same
   * promise.
   */
  close(): Promise<void> {
    return this.#closing ??= (async () => {
      this.#shared.closed = true;
      for (const lane of this.#lanes) lane.wakeUp();
      const stopped = Promise.all(this.#lanes.map((lane) => lane.done));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waited = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.#closeTimeoutMs);
      });
      await Promise.race([stopped, waited]);
      clearTimeout(timer);
      for (const lane of this.#lanes) lane.abort();
      await stopped;
      this.#expiredReport.flush();
      this.#lostReport.flush();
    })();
  }

  #countDelivered(rows: readonly OutboxRow[], at: number): void {
    this.#delivered += rows.length;
    for (const row of rows) {
      const seconds = Math.max(0, at - row.createdAt) / 1000;
      this.#latencyCount++;
      this.#latencySum += seconds;
      const i = LATENCY_BUCKETS_SECONDS.findIndex((le) => seconds <= le);
      if (i >= 0) this.#latencyBuckets[i]++;
    }
  }
}

/**
 * One URL's deliveries: a loop that reads the due rows, POSTs them and records the answer, then
 * sleeps until the next row is due or an event comes. Its states: reading (the outbox), sending
 * (one request in flight), sleeping, stopped.
 */
class Lane {
  readonly #url: string;
  /** The URL as logs show it: no credentials, no query (either may hold a token). */
  readonly #shown: string;
  readonly #s: Shared;
  #state: "reading" | "sending" | "sleeping" | "stopped" = "reading";
  /** Ends the current sleep. */
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the current sleep ends, by Date.now: timers keep real time, whatever `now` says. */
  #wakeAt = Infinity;
  /** Events emitted since the lane last read the outbox. */
  #fresh = 0;
  #controller: AbortController | undefined;
  /** Whether the URL's last POST failed: the failure was logged, the next ones are not. */
  #failing = false;
  /** When the URL's receiver last accepted a POST, by `now`; undefined since the start. */
  #acceptedAt: number | undefined;
  /** Whether the outbox's last answer to this lane was an error, logged already. */
  #outboxFailing = false;
  /** Settles when the loop has stopped. */
  readonly done: Promise<void>;

  constructor(url: string, shared: Shared) {
    this.#url = url;
    const parsed = new URL(url);
    this.#shown = `${parsed.origin}${parsed.pathname}`;
    this.#s = shared;
    this.done = this.#run();
  }

  /** An event was added: a sleeping lane wakes within batchDelayMs, at once for a full batch. */
  nudge(): void {
    this.#fresh++;
    if (this.#state !== "sleeping") return; // it reads the outbox before it sleeps again
    if (this.#outboxFailing) return; // events do not cut short the wait after an outbox error
    const delay = this.#fresh >= this.#s.batchSize ? 0 : this.#s.batchDelayMs;
    if (Date.now() + delay < this.#wakeAt) this.#setTimer(delay);
  }

  /** Ends a sleep now. */
  wakeUp(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wakeAt = Infinity;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Aborts the request in flight, if any. */
  abort(): void {
    this.#controller?.abort(new Error("the deliverer closed"));
  }

  async #run(): Promise<void> {
    const s = this.#s;
    while (!s.closed) {
      this.#state = "reading";
      this.#fresh = 0;
      let rows: OutboxRow[];
      try {
        await s.expire();
        rows = await s.outbox.due(this.#url, s.now(), s.batchSize);
        if (rows.length === 0) {
          const next = await s.outbox.nextDueAt(this.#url);
          this.#outboxFailing = false;
          const wait = next === undefined ? IDLE_CHECK_MS : next - s.now();
          await this.#sleep(Math.max(0, Math.min(wait, IDLE_CHECK_MS)));
          continue;
        }
        this.#outboxFailing = false;
      } catch (err) {
        this.#outboxError(err);
        await this.#sleep(s.backoff(1) + 1);
        continue;
      }
      if (s.closed) break; // closed while it read: the rows wait for the next start
      await this.#send(rows);
      // The answer could not be recorded: the same rows would go again at once.
      if (this.#outboxFailing) await this.#sleep(s.backoff(1) + 1);
    }
    this.#state = "stopped";
  }

  /** Sleeps `ms`, or less when events came while it was reading; `wakeUp` ends it early. */
  #sleep(ms: number): Promise<void> {
    if (this.#s.closed) return Promise.resolve();
    if (this.#fresh > 0 && !this.#outboxFailing) {
      ms = Math.min(ms, this.#fresh >= this.#s.batchSize ? 0 : this.#s.batchDelayMs);
    }
    this.#state = "sleeping";
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#setTimer(ms);
    });
  }

  #setTimer(ms: number): void {
    clearTimeout(this.#timer);
    this.#wakeAt = Date.now() + ms;
    this.#timer = setTimeout(() => this.wakeUp(), ms);
  }

  /** POSTs `rows` and records the answer in the outbox. */
  async #send(rows: OutboxRow[]): Promise<void> {
    const s = this.#s;
    this.#state = "sending";
    const body = `{"events":[${rows.map((row) => row.json).join(",")}]}`;
    const controller = this.#controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new Error(`no answer within ${duration(s.timeoutMs)}`)),
      s.timeoutMs,
    );
    s.inFlight++;
    let failure: string | undefined;
    try {
      const response = await s.fetch(this.#url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          [SIGNATURE_HEADER]: signatureHeader(s.secret, body),
        },
        body,
        signal: controller.signal,
        // A redirect is not followed with a signed body to wherever it points: it is a failure.
        redirect: "manual",
      });
      // The answer's body is not read: only the status counts.
      await response.body?.cancel().catch(() => {});
      if (response.status < 200 || response.status > 299) {
        failure = `it answered ${response.status}`;
      }
    } catch (err) {
      failure = controller.signal.aborted
        ? errorMessage(controller.signal.reason)
        : errorMessage(err);
    } finally {
      clearTimeout(timer);
      s.inFlight--;
      this.#controller = undefined;
    }
    // Cut short by close: not the receiver's failure; the rows go again after a restart.
    if (s.closed && controller.signal.aborted) return;
    try {
      if (failure === undefined) {
        const at = s.now();
        await s.outbox.delivered(this.#url, rows, at);
        s.delivered(rows, at);
        this.#failing = false;
        // Back after an outage (or the first 2xx since the start, which may follow one): what
        // waits on the backoff goes now.
        const silent = this.#acceptedAt === undefined ||
          at - this.#acceptedAt >= RECOVERY_SILENCE_MS;
        this.#acceptedAt = at;
        if (silent) await s.outbox.resume(this.#url, at);
      } else {
        s.failed();
        await s.outbox.retry(this.#url, rows, (attempts) => s.now() + s.backoff(attempts));
        if (!this.#failing) {
          this.#failing = true;
          s.onError(
            new Error(
              `webhook ${this.#shown}: cannot deliver ${events(rows.length)}: ${failure}; ` +
                `retrying with backoff for up to ${duration(s.maxAgeMs)} after each event ` +
                `(further failures are counted, not logged, until it accepts again)`,
            ),
          );
        }
      }
      this.#outboxFailing = false;
    } catch (err) {
      this.#outboxError(err);
    }
  }

  /** Logs an outbox error, once until the outbox answers this lane again. */
  #outboxError(err: unknown): void {
    if (this.#outboxFailing) return;
    this.#outboxFailing = true;
    this.#s.onError(
      new Error(`webhook ${this.#shown}: ${errorMessage(err)}; trying again`, { cause: err }),
    );
  }
}

/**
 * Reports counts at most once per DROP_REPORT_MS: the first at once, the next ones summed into the
 * first report after the interval (or `flush`).
 */
class Throttled {
  readonly #report: (n: number, cause: string) => void;
  #unreported = 0;
  #cause = "";
  #last = -Infinity;

  constructor(report: (n: number, cause: string) => void) {
    this.#report = report;
  }

  add(n: number, cause = ""): void {
    this.#unreported += n;
    this.#cause = cause;
    if (Date.now() - this.#last >= DROP_REPORT_MS) this.flush();
  }

  flush(): void {
    if (this.#unreported === 0) return;
    this.#report(this.#unreported, this.#cause);
    this.#unreported = 0;
    this.#last = Date.now();
  }
}

/** Throws a RangeError unless `url` is an http or https URL. */
function checkUrl(url: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    // Refused below.
  }
  if (parsed?.protocol !== "http:" && parsed?.protocol !== "https:") {
    throw new RangeError(`a webhook URL must be an http or https URL, not ${JSON.stringify(url)}`);
  }
}

/** `value`, when it is a whole number of `min` or more; else throws a RangeError naming `name`. */
function whole(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(`${name} must be a whole number ${min} or more, not ${value}`);
  }
  return value;
}

/** "1 event", "3 events". */
function events(n: number): string {
  return `${n} event${n === 1 ? "" : "s"}`;
}

/** A duration in milliseconds as a person reads it: "24 h", "5 min", "10 s", "250 ms". */
function duration(ms: number): string {
  for (const [unit, size] of [["h", 3_600_000], ["min", 60_000], ["s", 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}`;
  }
  return `${ms} ms`;
}
