/**
 * The Redis broker, on ioredis: the broker of several server processes (nodes) sharing one Redis.
 * A publication made on any node reaches the subscribers (the hubs) of every node, in id order.
 *
 * Keys and channels, under `prefix` (default "deno-pusher:", as the history store's):
 *   broker:id            the cluster's id counter: ids are assigned here, never by a node, so they
 *                        are unique and increasing across nodes
 *   broker:publications  the one channel every publication goes out on, as its JSON
 *                        {"id","stream","data","ts","from"}
 *
 * A publish is one Lua script on the node's command connection: raise the counter to the floor
 * (the node's highest id, see RedisBrokerOptions.floor), INCR it, append the publication to the
 * history (history_redis.ts's historyAppend, so that file stays the only one that knows the
 * history's keys), and PUBLISH it. Redis runs scripts one at a time and hands a channel's messages
 * to each subscriber in the order they were published, so every node's subscriber connection
 * receives the publications of all nodes in id order across all streams, each once: the ordering
 * broker.ts promises and resume.ts's horizon rests on. A publication is kept before anyone can see
 * it, since the append and the PUBLISH are the same step.
 *
 * Each node has two connections: commands, and a subscriber (a connection that subscribed can send
 * nothing else). When Redis restarts, the subscriber reconnects and subscribes again by itself;
 * `subscribed()` says when. Redis's pub/sub delivers at most once: what is published while a node's
 * subscriber is down never reaches that node's hub (it is in the history, for a client's resume).
 *
 * A script is not undone by a failure half way, and a command whose connection broke after it was
 * sent may have run: a publish that rejects (timeout, connection lost) may still have been kept and
 * delivered, and an id may be skipped. It is never run twice: the command connection does not send
 * again what was unanswered when it broke, since that would publish it again under a new id.
 *
 * Redis that restarts without persistence loses the counter: the next script raises it again to
 * the publishing node's highest id seen, so ids go on increasing as long as that node heard the
 * others (a subscriber drops an id at or below one it delivered, rather than deliver out of order).
 * Give Redis persistence (appendonly) for ids that survive it whatever the timing.
 *
 * For one Redis (or a primary with replicas), not Redis Cluster, like the history store.
 */
import { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import type { Broker, Origin, PublicationHandler } from "./broker.ts";
import { HISTORY_APPEND_LUA, type RedisHistory } from "./history_redis.ts";
import { REACH_LUA } from "./presence_redis.ts";
import {
  DEFAULT_PREFIX,
  quit,
  redactedUrl,
  REDIS_COMMAND_TIMEOUT_MS,
  REDIS_CONNECT_TIMEOUT_MS,
  REDIS_RETRIES_PER_COMMAND,
  reportErrors,
} from "./redis.ts";
import { frozen, type Publication, type Sender, type StreamName } from "./stream.ts";

/**
 * Milliseconds a publish waits, once its script ran, for this node's subscriber to hand the
 * publication to the local subscribers. Past it (the subscriber connection is down, and the
 * message lost to it) the publish resolves anyway: the publication is kept and went to the other
 * nodes. As long as REDIS_COMMAND_TIMEOUT_MS, the bound on the script itself.
 */
export const LOCAL_DELIVERY_WAIT_MS = REDIS_COMMAND_TIMEOUT_MS;

/** What a Redis broker is built from. */
export interface RedisBrokerOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every key and the channel; the same on every node of a deployment. */
  prefix?: string;
  /**
   * This node's name, told to every subscriber with each publication it made (broker.ts's
   * Origin); the presence registry's name for the node. Default: a random UUID.
   */
  node?: string;
  /**
   * The last id this node handed out before it joined the cluster (message/ids.ts's
   * MessageIds.last): the counter is raised to it before an id is taken, so ids never go back
   * below ids handed out before, nor below ids this node saw, should Redis lose the counter.
   * Default 0.
   */
  floor?: number;
  /**
   * Where publications are kept, in the same script that publishes them: a store on the same
   * Redis. None when history is off (HISTORY_SIZE=0). The broker does not close it.
   */
  history?: RedisHistory;
  /** The clock for `ts`, in milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
  /**
   * Told when a local subscriber throws; the publication still reaches the other subscribers.
   * Default: console.error, naming the publication.
   */
  onError?: (error: unknown, publication: Publication) => void;
  /**
   * Told, naming the Redis (never its password), when a connection fails (it is tried again on
   * its own) and when a message on the channel is not a publication. Default: nothing.
   */
  onRedisError?: (err: Error) => void;
}

/**
 * KEYS: the counter, then (when the publication is kept) historyAppend's keys. ARGV: the floor, the
 * channel, the publication's JSON without its id, the key prefix, the node's name as JSON, the
 * stream, then (when kept) historyAppend's args. Answers the id and the stream's reach (REACH_LUA).
 */
const PUBLISH_LUA = HISTORY_APPEND_LUA + REACH_LUA + `
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
local id = redis.call('INCR', KEYS[1])
if #KEYS == 5 then
  local keys = {KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
  historyAppend(keys, {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}, id)
end
local reach = reachOf(ARGV[4], ARGV[6])
redis.call('PUBLISH', ARGV[2], '{"id":' .. num(id) .. ',"node":' .. ARGV[5] .. ',"reach":' ..
  reach .. ',' .. string.sub(ARGV[3], 2))
return {num(id), reach}
`;

interface Scripts {
  /** numkeys, keys, args: see PUBLISH_LUA. */
  brokerPublish(...args: (string | number)[]): Promise<[string, number]>;
}

/** A publish whose script ran, waiting for this node's subscriber to deliver its id. */
interface Waiting {
  publication: Publication;
  resolve: (publication: Publication) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A node's broker on a shared Redis. Invariant: local subscribers are handed publications only by
 * the subscriber connection's message handler, one message at a time, and only ids above
 * `#delivered`; so they get them in the order Redis ran the scripts, which is id order.
 */
export class RedisBroker implements Broker {
  readonly #redis: Redis & Scripts;
  readonly #subscriber: Redis;
  /** The URL without its password. */
  readonly #name: string;
  readonly #counterKey: string;
  readonly #channel: string;
  readonly #prefix: string;
  /** The node's name as JSON, as the script writes it into each publication's message. */
  readonly #nodeJson: string;
  readonly #history: RedisHistory | undefined;
  readonly #now: () => number;
  readonly #onError: (error: unknown, publication: Publication) => void;
  readonly #onRedisError: (err: Error) => void;
  readonly #subscribers = new Set<PublicationHandler>();
  /** The node's floor, raised to every id it has seen: the counter never restarts below it. */
  #highest: number;
  /** The highest id handed to the local subscribers. */
  #delivered = 0;
  /** Publishes whose script ran, by id, until their publication is delivered here. */
  readonly #waiting = new Map<number, Waiting>();
  /** Every publish not settled yet: `close` waits for them. */
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Resolved while the subscriber connection is subscribed; replaced when it drops. */
  #subscribed = Promise.withResolvers<void>();
  #isSubscribed = false;
  /** Counts subscriptions: a publish waits only for one that lasted from its send to its answer. */
  #subscription = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  #lagMs = 0;

  /**
   * Throws a TypeError when `url` is not a redis:// or rediss:// URL. Connects in the background:
   * publishes made before the connection is up wait for it (see `publish`).
   */
  constructor(options: RedisBrokerOptions) {
    this.#name = redactedUrl(options.url);
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#prefix = prefix;
    this.#nodeJson = JSON.stringify(options.node ?? randomUUID());
    this.#counterKey = `${prefix}broker:id`;
    this.#channel = `${prefix}broker:publications`;
    this.#history = options.history;
    this.#highest = options.floor ?? 0;
    this.#now = options.now ?? Date.now;
    this.#onError = options.onError ?? logSubscriberError;
    this.#onRedisError = options.onRedisError ?? (() => {});

    const common = {
      // RESP2: the plain replies every Redis since 2.6 gives.
      protocol: 2 as const,
      connectTimeout: REDIS_CONNECT_TIMEOUT_MS,
      maxRetriesPerRequest: REDIS_RETRIES_PER_COMMAND,
    };
    const redis = new Redis(options.url, {
      ...common,
      commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
      // A script unanswered when the connection broke may have run: sent again, it would publish
      // the same message under a second id. It rejects at its timeout instead.
      autoResendUnfulfilledCommands: false,
      connectionName: "deno-pusher-broker",
    });
    redis.defineCommand("brokerPublish", { lua: PUBLISH_LUA });
    this.#redis = redis as Redis & Scripts;
    reportErrors(redis, this.#name, this.#onRedisError);

    // Subscribed again on each `ready` by us, not by ioredis, so that `subscribed()` can tell when.
    this.#subscriber = new Redis(options.url, {
      ...common,
      autoResubscribe: false,
      connectionName: "deno-pusher-broker-subscriber",
    });
    reportErrors(this.#subscriber, this.#name, this.#onRedisError);
    this.#subscriber.on("ready", () => this.#subscribe());
    this.#subscriber.on("close", () => this.#lostSubscription());
    this.#subscriber.on("message", (channel: string, message: string) => {
      if (channel === this.#channel) this.#receive(message);
    });
  }

  /**
   * Publishes `data` to `stream` on every node (see Broker.publish): one script assigns the
   * cluster's next id, keeps the publication in the history and publishes it. Resolves with the
   * publication once this node's subscribers have had it (at once when this node's subscriber
   * connection is not subscribed, and LOCAL_DELIVERY_WAIT_MS after the script ran at most).
   * Rejects, naming the Redis, when the script failed or Redis did not answer within
   * REDIS_COMMAND_TIMEOUT_MS (about REDIS_CONNECT_TIMEOUT_MS times REDIS_RETRIES_PER_COMMAND plus
   * one while Redis is down), and with an Error after `close` or when the history store is closed.
   */
  publish(stream: StreamName, data: string, from?: Sender): Promise<Publication> {
    return this.#publish(stream, data, from, true);
  }

  /** Publishes to the connection `client` on whichever node has it; kept nowhere (broker.ts). */
  publishToClient(client: string, data: string): Promise<Publication> {
    return this.#publish(`client:${client}`, data, undefined, false);
  }

  #publish(
    stream: StreamName,
    data: string,
    from: Sender | undefined,
    keep: boolean,
  ): Promise<Publication> {
    if (this.#closed) {
      return Promise.reject(
        new Error(`the broker is closed; nothing more is published to ${stream}`),
      );
    }
    const ts = this.#now();
    const unnumbered = from ? { stream, data, ts, from } : { stream, data, ts };
    let step: { keys: string[]; args: string[] } | undefined;
    try {
      step = keep ? this.#history?.appendStep(unnumbered, this.#highest) : undefined;
    } catch (err) {
      return Promise.reject(err);
    }
    const keys = [this.#counterKey, ...step?.keys ?? []];
    // Subscribed now, Redis had the subscription before it runs the script, so the message comes.
    const subscription = this.#isSubscribed ? this.#subscription : -1;
    const published = this.#redis.brokerPublish(
      keys.length,
      ...keys,
      String(this.#highest),
      this.#channel,
      JSON.stringify(unnumbered),
      this.#prefix,
      this.#nodeJson,
      stream,
      ...step?.args ?? [],
    ).then(
      ([id]) => this.#deliveredHere(frozen({ id: Number(id), ...unnumbered }), subscription),
      (err) => {
        throw new Error(`redis ${this.#name}: cannot publish to ${stream}: ${errorMessage(err)}`, {
          cause: err,
        });
      },
    );
    this.#inFlight.add(published);
    const forget = () => void this.#inFlight.delete(published);
    published.then(forget, forget);
    return published;
  }

  subscribe(handler: PublicationHandler): () => void {
    // A wrapper, so that one function subscribed twice is two subscriptions, each undone alone.
    const subscription: PublicationHandler = (publication, origin) => handler(publication, origin);
    this.#subscribers.add(subscription);
    return () => void this.#subscribers.delete(subscription);
  }

  /**
   * Resolves once the subscriber connection is subscribed: publications made from then on reach
   * this node's subscribers, so a node waits for it before it takes publishes. After Redis comes
   * back, the next `subscribed()` waits for the new subscription. Never rejects; it stays pending
   * while Redis is down.
   */
  subscribed(): Promise<void> {
    return this.#subscribed.promise;
  }

  /**
   * Milliseconds from the publish of the last publication this node received (its `ts`, the
   * publishing node's clock) to its arrival here: the pub/sub lag, clocks' skew included.
   */
  get lagMs(): number {
    return this.#lagMs;
  }

  /** Whether publications made now reach this node's subscribers (see `subscribed`). */
  get isSubscribed(): boolean {
    return this.#isSubscribed;
  }

  /**
   * The cluster's last id: every publication up to it is kept (or failed). Asked once subscribed,
   * every later one comes to this node's subscribers, so it is where a node's hub catches up to
   * (hub.ts's `caughtUp`). Rejects, naming the Redis, when Redis cannot answer.
   */
  async lastId(): Promise<number> {
    try {
      return Number(await this.#redis.get(this.#counterKey) ?? 0);
    } catch (err) {
      throw new Error(`redis ${this.#name}: cannot read the last id: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  close(): Promise<void> {
    return this.#closing ??= this.#close();
  }

  async #close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
    this.#subscribers.clear();
    if (this.#subscriber.status === "ready") {
      await this.#subscriber.unsubscribe(this.#channel).catch(() => {}); // quit follows anyway
    }
    await Promise.all([quit(this.#redis), quit(this.#subscriber)]);
  }

  /**
   * Resolves with `publication` once the local subscribers have had it; see `publish`.
   * `subscription` is the one in force when the script was sent (-1 for none): unless it still is,
   * the message may never come here, and there is nothing to wait for.
   */
  #deliveredHere(publication: Publication, subscription: number): Promise<Publication> {
    this.#highest = Math.max(this.#highest, publication.id);
    const sure = this.#isSubscribed && subscription === this.#subscription;
    if (publication.id <= this.#delivered || !sure) {
      return Promise.resolve(publication);
    }
    const { promise, resolve } = Promise.withResolvers<Publication>();
    const timer = setTimeout(() => this.#release(publication.id), LOCAL_DELIVERY_WAIT_MS);
    this.#waiting.set(publication.id, { publication, resolve, timer });
    return promise;
  }

  #release(id: number): void {
    const waiting = this.#waiting.get(id);
    if (!waiting) return;
    this.#waiting.delete(id);
    clearTimeout(waiting.timer);
    waiting.resolve(waiting.publication);
  }

  #subscribe(): void {
    this.#subscriber.subscribe(this.#channel).then(() => {
      this.#isSubscribed = true;
      this.#subscription++;
      this.#subscribed.resolve();
    }, (err) => {
      // The connection broke meanwhile: the next `ready` subscribes again.
      this.#onRedisError(
        new Error(
          `redis ${this.#name}: cannot subscribe to ${this.#channel}: ${errorMessage(err)}`,
          {
            cause: err,
          },
        ),
      );
    });
  }

  #lostSubscription(): void {
    if (this.#isSubscribed) {
      this.#isSubscribed = false;
      this.#subscribed = Promise.withResolvers();
    }
    // What was published but not yet received here may be lost to this node: don't wait for it.
    for (const id of [...this.#waiting.keys()]) this.#release(id);
  }

  /** Hands one message of the channel to the local subscribers. */
  #receive(message: string): void {
    let publication: Publication, origin: Origin;
    try {
      const parsed = JSON.parse(message) as Publication & Origin;
      publication = frozen(parsed);
      origin = { node: parsed.node, reach: parsed.reach };
      if (!Number.isSafeInteger(publication.id)) throw new Error("it has no id");
    } catch (err) {
      this.#onRedisError(
        new Error(
          `redis ${this.#name}: a message on ${this.#channel} is not a publication: ` +
            errorMessage(err),
          { cause: err },
        ),
      );
      return;
    }
    // Ids arrive increasing; one that does not is a message seen already, not delivered twice.
    if (publication.id <= this.#delivered) return;
    this.#delivered = publication.id;
    this.#lagMs = Math.max(0, Date.now() - publication.ts);
    this.#highest = Math.max(this.#highest, publication.id);
    // A Set's iterator skips a subscriber removed meanwhile, so unsubscribe takes effect at once.
    for (const subscriber of this.#subscribers) {
      try {
        subscriber(publication, origin);
      } catch (err) {
        this.#onError(err, publication);
      }
    }
    // Every publish of this node up to this id is delivered here, or was lost to this node.
    for (const id of [...this.#waiting.keys()]) {
      if (id <= publication.id) this.#release(id);
    }
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function logSubscriberError(error: unknown, publication: Publication): void {
  console.error(
    `a broker subscriber threw on publication ${publication.id} of ${publication.stream}; ` +
      `the other subscribers still got it:`,
    error,
  );
}
