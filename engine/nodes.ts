/**
 * The nodes' channel: how one node of a cluster asks every node (itself included) a question about
 * their own connections, and gathers the answers. The roster (roster.ts) asks through it; each
 * node answers from its own hub. One interface, as the broker and presence have: a single node
 * needs none (the roster answers from its hub at once), a cluster has nodes_redis.ts.
 *
 * Requests and answers are plain JSON values; the channel knows nothing of what they mean.
 */

/** A node's answer to one request. */
export interface NodeAnswer {
  /** The answering node's name. */
  node: string;
  answer: unknown;
}

/** How a request goes to every node, and how this node answers the others'. */
export interface NodeChannel {
  /**
   * Sends `request` to every node that listens now, this one included, and resolves with their
   * answers, in no particular order. Rejects, naming the cause, when the request cannot be sent or
   * a node has not answered within the channel's timeout (it may have acted all the same).
   */
  ask(request: unknown): Promise<NodeAnswer[]>;
  /**
   * Answers every request, from any node, with what `handler` returns (or resolves with). What it
   * throws goes back to the asking node as an error. Set once, before the channel is used.
   */
  serve(handler: (request: unknown) => unknown): void;
  /** Stops answering and asking; requests in flight reject. */
  close(): Promise<void>;
}
