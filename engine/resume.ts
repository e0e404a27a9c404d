/**
 * The resume of one connection: the kept publications of its streams after the `since` it came
 * back with, then its live ones, each once and in id order, with nothing lost at the seam between
 * the two.
 *
 * The seam is closed by a horizon, not by comparing what was read with what arrived. The hub is a
 * broker subscriber, and the broker hands it every publication in id order across all streams, and
 * only once the publication is kept (broker.ts). So when the hub makes a Resume, the id of the last
 * publication it was handed (the horizon) splits every publication in two, whatever the timing:
 *   - id <= horizon: its append had resolved before the Resume was made, so a read started after
 *     that returns it (unless it was trimmed, which the read reports as recovered=false);
 *   - id > horizon: the hub is handed it after the Resume was made, and passes it to `live`.
 * So the replay takes from history only ids in (since, horizon], and live only ids above both.
 * Nothing is in both halves (no duplicate) and nothing in neither (no gap), even though the reads of
 * several streams happen at different times. A history read may return ids above the horizon
 * (appended, not yet delivered, maybe yet to fail); those are left to `live`, so a connection never
 * gets a publication whose publish may still reject.
 */
import type { HistoryStore } from "./history.ts";
import type { Publication, StreamName } from "./stream.ts";

/**
 * Publications read per page of history: a resume of a stream with HISTORY_SIZE kept (1000 by
 * default) takes one read, and a page of a larger history costs a bounded amount of memory at once.
 */
export const RESUME_PAGE_SIZE = 1000;

/** What a Resume is made of. */
export interface ResumeOptions {
  /** The streams whose history is replayed: the connection's `uid:`, its `group:`s and `all`. */
  streams: Iterable<StreamName>;
  /** The last id the client saw: a whole number, 0 or more. Only ids above it are delivered. */
  since: number;
  /**
   * The id of the last publication the broker handed the hub before this Resume was made (0 when
   * none): every publication above it must reach `live` from now on. See the file's comment.
   */
  horizon: number;
  /** Where the history is read from; the store the broker appends to. */
  history: HistoryStore;
  /**
   * Called once per publication delivered to the connection, in increasing id order. It runs inside
   * `flush` and `live`, and must not throw.
   */
  deliver: (publication: Publication) => void;
  /** Publications per history read (RESUME_PAGE_SIZE); 1 or more. */
  pageSize?: number;
}

/** What a resume found, for the connection's `welcome`. */
export interface ResumeOutcome {
  /**
   * True when no read of any of the streams reported a trimmed publication after `since`, so the
   * connection misses nothing. False when one did: the client must refetch from its backend. It may
   * be false needlessly when more than HISTORY_SIZE publications reach one stream while the resume
   * reads it (the store says only that something after `since` went, not what, and those would
   * have come live); it is never true when something was missed.
   */
  recovered: boolean;
  /** How many publications `flush` delivers from history, before the buffered live ones. */
  replayed: number;
}

/**
 * Where a resume is: reading history while live ones are buffered; read (the outcome known, live
 * ones still buffered); live (flushed, live ones go straight through); cancelled (nothing more is
 * delivered).
 */
type ResumeState = "reading" | "read" | "live" | "cancelled";

/**
 * The replay of one connection's streams after `since`, joined to its live publications. Use:
 *
 *     const resume = new Resume({ streams, since, horizon, history, deliver });
 *     // route the connection's live publications to resume.live(publication) from here on
 *     const { recovered, replayed } = await resume.read();  // then send the welcome with them
 *     resume.flush();                                       // the replay, then what was buffered
 *
 * Invariant: `deliver` is called with strictly increasing ids, each id above `since`, once.
 * Live publications arriving before `flush` wait in memory; a resume reads for as long as its
 * store takes, so the buffer holds what the connection's streams get meanwhile.
 */
export class Resume {
  readonly #streams: StreamName[];
  readonly #since: number;
  readonly #horizon: number;
  readonly #history: HistoryStore;
  readonly #deliver: (publication: Publication) => void;
  readonly #pageSize: number;
  #state: ResumeState = "reading";
  /** The publications to replay, in id order, once `read` has resolved. */
  #replay: Publication[] = [];
  /** Live publications above the horizon that came before `flush`, in the order they came. */
  #buffered: Publication[] = [];
  /** The highest id delivered so far (or that must not be delivered again): starts at `since`. */
  #last: number;
  #reading: Promise<ResumeOutcome> | undefined;

  /**
   * Starts buffering live publications at once, before any history is read. Throws a RangeError
   * when `since`, `horizon` or `pageSize` is out of range.
   */
  constructor(options: ResumeOptions) {
    const { since, horizon, pageSize = RESUME_PAGE_SIZE } = options;
    if (!Number.isSafeInteger(since) || since < 0) {
      throw new RangeError(`since must be a message id, a whole number 0 or more, not ${since}`);
    }
    if (!Number.isSafeInteger(horizon) || horizon < 0) {
      throw new RangeError(
        `horizon must be the id of the last publication handed to the hub (0 when none), not ${horizon}`,
      );
    }
    if (!Number.isSafeInteger(pageSize) || pageSize < 1) {
      throw new RangeError(`pageSize must be a whole number 1 or more, not ${pageSize}`);
    }
    this.#streams = [...new Set(options.streams)];
    this.#since = since;
    this.#horizon = horizon;
    this.#history = options.history;
    this.#deliver = options.deliver;
    this.#pageSize = pageSize;
    this.#last = since;
  }

  /**
   * Reads every stream's history in (since, horizon], all pages, and resolves with the outcome;
   * delivers nothing (that is `flush`'s job, so the hub can send the welcome first). Calling it
   * again returns the same promise. When since >= horizon nothing in history can be delivered, and
   * nothing is read. Rejects, naming the stream, when a read rejects; `flush` then delivers only
   * what came live, and the hub should say recovered=false.
   */
  read(): Promise<ResumeOutcome> {
    this.#reading ??= this.#readAll().then(
      (outcome) => {
        if (this.#state === "reading") this.#state = "read";
        return outcome;
      },
      (error) => {
        this.#replay = [];
        if (this.#state === "reading") this.#state = "read";
        throw error;
      },
    );
    return this.#reading;
  }

  /**
   * Delivers the replay in id order, then the live publications buffered meanwhile, then switches
   * to delivering live ones as they come. Throws an Error when `read` has not settled yet;
   * delivers nothing after `cancel`.
   */
  flush(): void {
    if (this.#state === "reading") {
      throw new Error("flush() before read() settled: the replay is not known yet; await read()");
    }
    if (this.#state !== "read") return;
    this.#state = "live";
    // A deliver that cancels the resume (the connection closed) stops the flush there.
    for (const publication of this.#replay) {
      if (this.#state !== "live") return;
      this.#pass(publication);
    }
    this.#replay = [];
    const buffered = this.#buffered;
    this.#buffered = [];
    for (const publication of buffered) {
      if (this.#state !== "live") return;
      this.#pass(publication);
    }
  }

  /**
   * A live publication for this connection, as the broker handed it to the hub, in id order. The
   * hub decides which ones (the connection's uid, groups and `all`, including a group it joins
   * later); the resume only orders them after the replay. Before `flush` it is buffered, after it
   * it is delivered at once; one at or below the horizon or `since` is dropped, as history has it
   * or the client saw it.
   */
  live(publication: Publication): void {
    switch (this.#state) {
      case "reading":
      case "read":
        if (publication.id > this.#horizon && publication.id > this.#since) {
          this.#buffered.push(publication);
        }
        return;
      case "live":
        this.#pass(publication);
        return;
      case "cancelled":
        return;
    }
  }

  /**
   * Stops the resume (the connection closed): reads stop after the page in flight, `read` still
   * settles, and nothing more is delivered. Idempotent.
   */
  cancel(): void {
    this.#state = "cancelled";
    this.#replay = [];
    this.#buffered = [];
  }

  /** Delivers `publication` unless it is not above everything delivered already. */
  #pass(publication: Publication): void {
    if (publication.id <= this.#last) return;
    this.#last = publication.id;
    this.#deliver(publication);
  }

  async #readAll(): Promise<ResumeOutcome> {
    if (this.#since >= this.#horizon) return { recovered: true, replayed: 0 };
    const read = await Promise.all(this.#streams.map((stream) => this.#readStream(stream)));
    const replay = read.flatMap((r) => r.publications).sort((a, b) => a.id - b.id);
    if (this.#state === "reading") this.#replay = replay;
    return { recovered: read.every((r) => r.recovered), replayed: replay.length };
  }

  /** The publications of `stream` in (since, horizon], and whether every page said recovered. */
  async #readStream(
    stream: StreamName,
  ): Promise<{ publications: Publication[]; recovered: boolean }> {
    const publications: Publication[] = [];
    let recovered = true;
    let since: number | null = this.#since;
    // Pages past the horizon are not read: what lies there comes live.
    while (since !== null && since < this.#horizon && this.#state === "reading") {
      let page;
      try {
        page = await this.#history.read(stream, since, this.#pageSize);
      } catch (err) {
        throw new Error(
          `cannot resume ${stream} after ${this.#since}: ${(err as Error)?.message ?? err}`,
          { cause: err },
        );
      }
      // Each page answers for itself: a trim between two pages shows on the later one.
      recovered &&= page.recovered;
      for (const publication of page.publications) {
        if (publication.id > this.#horizon) break;
        publications.push(publication);
      }
      since = page.next;
    }
    return { publications, recovered };
  }
}
