/**
 * Streams: what the engine keeps and carries publications by. A stream is named after the target
 * of a message, in the message log's spelling (message.ts's `targetKey`): a uid's messages are one
 * stream, a group's another, and everything sent to everyone a third. Sends to one client id have
 * no stream: a client id dies with its socket, so nobody could ever resume it.
 */

/** A stream's name: `uid:<uid>`, `group:<name>` or `all`. */
export type StreamName = string;

/** The stream of every message sent to everyone. */
export const ALL_STREAM: StreamName = "all";

/** The stream of the messages sent to `uid`, whichever of its connections were open. */
export function uidStream(uid: string): StreamName {
  return `uid:${uid}`;
}

/** The stream of the messages sent to the group `name`. */
export function groupStream(name: string): StreamName {
  return `group:${name}`;
}

/** The connection a client's own publication came from (a `publish` or `send` frame). */
export interface Sender {
  readonly uid: string;
  /** The client id of the connection. */
  readonly client: string;
  /**
   * Whether that connection gets its own publication too (a `publish` frame's `echo`). Live only:
   * a store keeps who sent it, not this, and a replay goes to every connection it is for.
   */
  readonly echo?: boolean;
}

/** One message as the engine keeps it. */
export interface Publication {
  /** The message id (message/ids.ts): a positive safe integer, increasing across all streams. */
  readonly id: number;
  readonly stream: StreamName;
  /** The message, exactly as sent. */
  readonly data: string;
  /** When it was accepted, in milliseconds since the epoch; HISTORY_TTL counts from here. */
  readonly ts: number;
  /** Who sent it, when a client did over its socket; absent for a backend's message. */
  readonly from?: Sender;
}

/** A copy of `publication` that nobody can change, with `from` only when it has one. */
export function frozen(publication: Publication): Publication {
  const { id, stream, data, ts, from } = publication;
  if (!from) return Object.freeze({ id, stream, data, ts });
  const { uid, client, echo } = from;
  const sender = echo === undefined ? { uid, client } : { uid, client, echo };
  return Object.freeze({ id, stream, data, ts, from: Object.freeze(sender) });
}
