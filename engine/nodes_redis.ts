/**
 * The nodes' channel on Redis pub/sub (see nodes.ts), on ioredis.
 *
 * Channels, under `prefix` (default "deno-pusher:"):
 *   nodes:requests          every node subscribes; a request is {"rid","from","request"}
 *   nodes:answers:<node>    the asking node subscribes; an answer is {"rid","node","answer"} or
 *                           {"rid","node","error"}
 *
 * PUBLISH answers how many subscribers received the request: that many answers are awaited, so a
 * node that died (its connection gone, its subscription with it) is never waited for, and nothing
 * else needs to know how many nodes there are. A node that received the request and does not
 * answer within `answerMs` fails the ask.
 */
import { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import type { NodeAnswer, NodeChannel } from "./nodes.ts";
import { connectionOptions, DEFAULT_PREFIX, quit, redactedUrl, reportErrors } from "./redis.ts";

/**
 * Milliseconds an ask waits for every node's answer: a node answers from memory in well under one,
 * so this is about a node that is stuck, never about one that is slow.
 */
export const NODE_ANSWER_MS = 3_000;

/** What a Redis channel is built from. */
export interface RedisNodesOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every channel; the same on every node of a deployment. Default DEFAULT_PREFIX. */
  prefix?: string;
  /** This node's name, unique in the cluster. */
  node: string;
  /** Milliseconds to wait for the answers of an ask. Default NODE_ANSWER_MS. */
  answerMs?: number;
  /** Told, naming the Redis (never its password), when a connection fails. Default: nothing. */
  onError?: (err: Error) => void;
}

/** An ask waiting for its answers. */
interface Asking {
  /** How many nodes received the request; unknown until PUBLISH answers. */
  expected?: number;
  answers: NodeAnswer[];
  errors: string[];
  resolve: (answers: NodeAnswer[]) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A node's end of the channel. Invariant: an ask is in `#asking` from before its request is
 * published until it settles, so an answer that arrives before PUBLISH's reply is not lost.
 */
export class RedisNodes implements NodeChannel {
  readonly #redis: Redis;
  readonly #subscriber: Redis;
  readonly #name: string;
  readonly #node: string;
  readonly #requests: string;
  readonly #answers: string;
  readonly #prefix: string;
  readonly #answerMs: number;
  readonly #asking = new Map<string, Asking>();
  #handler: (request: unknown) => unknown = () => {
    throw new Error("this node answers no requests yet");
  };
  #subscribed = false;
  #closed = false;

  /** Throws a TypeError when `url` is not a redis:// or rediss:// URL. Connects in the background. */
  constructor(options: RedisNodesOptions) {
    this.#name = redactedUrl(options.url);
    this.#node = options.node;
    this.#prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#requests = `${this.#prefix}nodes:requests`;
    this.#answers = `${this.#prefix}nodes:answers:${this.#node}`;
    this.#answerMs = options.answerMs ?? NODE_ANSWER_MS;
    const onError = options.onError ?? (() => {});
    this.#redis = new Redis(options.url, connectionOptions("deno-pusher-nodes"));
    this.#subscriber = new Redis(options.url, {
      ...connectionOptions("deno-pusher-nodes-subscriber"),
      enableAutoPipelining: false,
    });
    for (const redis of [this.#redis, this.#subscriber]) reportErrors(redis, this.#name, onError);
    this.#subscriber.on("ready", () => {
      this.#subscriber.subscribe(this.#requests, this.#answers).then(
        () => void (this.#subscribed = true),
        () => {}, // the connection broke meanwhile: the next `ready` subscribes again
      );
    });
    this.#subscriber.on("close", () => void (this.#subscribed = false));
    this.#subscriber.on("message", (channel: string, message: string) => {
      if (channel === this.#requests) this.#answer(message);
      else if (channel === this.#answers) this.#received(message);
    });
  }

  serve(handler: (request: unknown) => unknown): void {
    this.#handler = handler;
  }

  async ask(request: unknown): Promise<NodeAnswer[]> {
    if (this.#closed) throw new Error("the nodes' channel is closed");
    if (!this.#subscribed) {
      throw new Error(`redis ${this.#name}: not subscribed; cannot ask the other nodes now`);
    }
    const rid = randomUUID();
    const { promise, resolve, reject } = Promise.withResolvers<NodeAnswer[]>();
    const timer = setTimeout(() => {
      const asking = this.#asking.get(rid);
      this.#asking.delete(rid);
      const got = asking?.answers.length ?? 0;
      reject(
        new Error(
          `only ${got} of ${asking?.expected ?? "?"} nodes answered within ${this.#answerMs} ms`,
        ),
      );
    }, this.#answerMs);
    this.#asking.set(rid, { answers: [], errors: [], resolve, reject, timer });
    try {
      const received = await this.#redis.publish(
        this.#requests,
        JSON.stringify({ rid, from: this.#node, request }),
      );
      const asking = this.#asking.get(rid);
      if (asking) {
        asking.expected = received;
        this.#settle(rid, asking);
      }
    } catch (err) {
      clearTimeout(timer);
      this.#asking.delete(rid);
      throw new Error(`redis ${this.#name}: cannot ask the other nodes: ${messageOf(err)}`, {
        cause: err,
      });
    }
    return await promise;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const [rid, asking] of this.#asking) {
      clearTimeout(asking.timer);
      asking.reject(new Error("the nodes' channel closed before every node answered"));
      this.#asking.delete(rid);
    }
    await Promise.all([quit(this.#redis), quit(this.#subscriber)]);
  }

  /** Runs the handler on another node's request (or this node's own) and publishes the answer. */
  async #answer(message: string): Promise<void> {
    let rid: string, from: string, request: unknown;
    try {
      ({ rid, from, request } = JSON.parse(message));
    } catch {
      return; // not a request of ours
    }
    let reply: Record<string, unknown>;
    try {
      reply = { rid, node: this.#node, answer: await this.#handler(request) ?? null };
    } catch (err) {
      reply = { rid, node: this.#node, error: messageOf(err) };
    }
    await this.#redis.publish(`${this.#prefix}nodes:answers:${from}`, JSON.stringify(reply))
      .catch(() => {}); // the asker times out and says so
  }

  #received(message: string): void {
    let reply: { rid: string; node: string; answer?: unknown; error?: string };
    try {
      reply = JSON.parse(message);
    } catch {
      return;
    }
    const asking = this.#asking.get(reply.rid);
    if (!asking) return; // timed out already
    if (reply.error !== undefined) asking.errors.push(`node ${reply.node}: ${reply.error}`);
    else asking.answers.push({ node: reply.node, answer: reply.answer });
    this.#settle(reply.rid, asking);
  }

  #settle(rid: string, asking: Asking): void {
    if (asking.expected === undefined) return;
    if (asking.answers.length + asking.errors.length < asking.expected) return;
    clearTimeout(asking.timer);
    this.#asking.delete(rid);
    if (asking.errors.length > 0) asking.reject(new Error(asking.errors.join("; ")));
    else asking.resolve(asking.answers);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
