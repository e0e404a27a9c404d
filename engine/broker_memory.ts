/**
 * The in-process broker: publications go from `publish` to the subscribers of the same process.
 * It is the broker of a single node, and of tests.
 */
import type { IdSource } from "../message/ids.ts";
import type { Broker, PublicationHandler } from "./broker.ts";
import type { HistoryStore } from "./history.ts";
import { frozen, type Publication, type Sender, type StreamName } from "./stream.ts";

/** What a memory broker is built from. */
export interface MemoryBrokerOptions {
  /** Where ids come from: message/ids.ts's MessageIds, or `countFrom` for ids kept in memory. */
  ids: IdSource;
  /** Where publications are kept before delivery; none when history is off (HISTORY_SIZE=0). */
  history?: HistoryStore;
  /** The clock for `ts`, in milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /**
   * Told when a subscriber throws; the publication still reaches the other subscribers. Default:
   * console.error, naming the publication.
   */
  onError?: (error: unknown, publication: Publication) => void;
}

/** A publication on its way: issued, and waiting for its append to settle. */
interface Issued {
  publication: Publication;
  /** False while the append is in flight. */
  settled: boolean;
  /** True when the append rejected (with `error`): the publication is dropped, never delivered. */
  failed: boolean;
  error?: unknown;
  resolve: (publication: Publication) => void;
  reject: (error: unknown) => void;
}

/**
 * The in-process broker. Invariant: `#issued[#head..]` holds, in the order publish was called
 * (which is id order), every publication not yet delivered or dropped, and only `#drain` takes from
 * it, from the front, and only entries whose append has settled. That is what keeps delivery in id
 * order across all streams when appends settle out of order.
 */
export class MemoryBroker implements Broker {
  readonly #ids: IdSource;
  readonly #history: HistoryStore | undefined;
  readonly #now: () => number;
  readonly #onError: (error: unknown, publication: Publication) => void;
  readonly #subscribers = new Set<PublicationHandler>();
  #issued: Issued[] = [];
  /** The first entry of `#issued` not yet delivered or dropped; compacted as in history_memory.ts. */
  #head = 0;
  /** True while `#drain` runs: a subscriber that publishes must not start a second drain. */
  #draining = false;
  #closed = false;
  /** What `close` waits for, and what resolves it once nothing is in flight. */
  #idle: { promise: Promise<void>; resolve: () => void } | undefined;

  constructor(options: MemoryBrokerOptions) {
    this.#ids = options.ids;
    this.#history = options.history;
    this.#now = options.now ?? Date.now;
    this.#onError = options.onError ?? logSubscriberError;
  }

  publish(stream: StreamName, data: string, from?: Sender): Promise<Publication> {
    return this.#publish(stream, data, from, true);
  }

  /**
   * Publishes to one connection (`client:<id>`): kept nowhere, but delivered in id order behind
   * the publications issued before it, whose appends may still be in flight (see Broker).
   */
  publishToClient(client: string, data: string): Promise<Publication> {
    return this.#publish(`client:${client}`, data, undefined, false);
  }

  #publish(
    stream: StreamName,
    data: string,
    from: Sender | undefined,
    keep: boolean,
  ): Promise<Publication> {
    const history = keep ? this.#history : undefined;
    // The executor runs now: ids are assigned, and appends called, in the order publish is called.
    return new Promise<Publication>((resolve, reject) => {
      if (this.#closed) {
        throw new Error(`the broker is closed; nothing more is published to ${stream}`);
      }
      const publication = frozen({ id: this.#ids.next(), stream, data, ts: this.#now(), from });
      const issued: Issued = {
        publication,
        settled: !history,
        failed: false,
        resolve,
        reject,
      };
      this.#issued.push(issued);
      if (history) {
        // Promise.try: a store that throws instead of rejecting must not leave an entry unsettled
        // at the front of #issued, which would hold back every later publication for ever.
        Promise.try(() => history.append(publication)).then(
          () => this.#settle(issued, false),
          (error) => this.#settle(issued, true, error),
        );
      } else {
        this.#drain();
      }
    });
  }

  subscribe(handler: PublicationHandler): () => void {
    // A wrapper, so that one function subscribed twice is two subscriptions, each undone alone.
    const subscription: PublicationHandler = (publication, origin) => handler(publication, origin);
    this.#subscribers.add(subscription);
    return () => void this.#subscribers.delete(subscription);
  }

  close(): Promise<void> {
    this.#closed = true;
    if (!this.#idle) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#idle = { promise: promise.then(() => this.#subscribers.clear()), resolve };
      if (this.#head === this.#issued.length) resolve();
    }
    return this.#idle.promise;
  }

  #settle(issued: Issued, failed: boolean, error?: unknown): void {
    issued.settled = true;
    issued.failed = failed;
    issued.error = error;
    this.#drain();
  }

  /** Delivers or drops, in id order, every settled publication at the front of `#issued`. */
  #drain(): void {
    if (this.#draining) return; // the drain below us picks up what was added
    this.#draining = true;
    try {
      while (this.#head < this.#issued.length && this.#issued[this.#head].settled) {
        const { publication, failed, error, resolve, reject } = this.#issued[this.#head++];
        if (failed) {
          reject(error);
          continue;
        }
        // A Set's iterator skips a subscriber removed meanwhile, so unsubscribe takes effect at once.
        for (const subscriber of this.#subscribers) {
          try {
            subscriber(publication);
          } catch (err) {
            this.#onError(err, publication);
          }
        }
        resolve(publication);
      }
      // Compacted once half of it is delivered: a burst of settles stays linear, not quadratic.
      if (this.#head * 2 >= this.#issued.length) {
        this.#issued = this.#issued.slice(this.#head);
        this.#head = 0;
      }
    } finally {
      this.#draining = false;
    }
    if (this.#head === this.#issued.length) this.#idle?.resolve();
  }
}

function logSubscriberError(error: unknown, publication: Publication): void {
  console.error(
    `a broker subscriber threw on publication ${publication.id} of ${publication.stream}; ` +
      `the other subscribers still got it:`,
    error,
  );
}
