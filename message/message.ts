/**
 * A message on its way out: encoded at most once per format, however many connections receive it,
 * and tracking how its delivery ends.
 */
import type { DeliveryStatus } from "./logger.ts";
import type { Sender } from "../engine/stream.ts";

/** One encoded frame and its size in UTF-8 bytes (what it costs a connection's queue). */
export interface Frame {
  data: string;
  bytes: number;
}

/** Version of the JSON frame format; sent in `welcome`. Later fields are additions only. */
export const PROTOCOL_VERSION = 1;

/** UTF-8 length of a string without allocating its encoding. */
export function utf8Length(s: string): number {
  let bytes = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      bytes += 2; // a surrogate pair: 2 UTF-16 units, 4 UTF-8 bytes
      i++;
    } else bytes += 2;
  }
  return bytes;
}

/** Who a message is for: a uid's connections, one connection, a group's members, or everyone. */
export type Target = { uid: string } | { client: string } | { group: string } | { all: true };

/** The target as one string, as the message log keeps it: `uid:123`, `group:chat`, `all`… */
export function targetKey(target: Target): string {
  if ("uid" in target) return `uid:${target.uid}`;
  if ("client" in target) return `client:${target.client}`;
  if ("group" in target) return `group:${target.group}`;
  return "all";
}

/** A pushed message. `text` and `json` are computed on first use and shared by every recipient. */
export class Message {
  #text: Frame | undefined;
  #json: Frame | undefined;
  /** The message this one repeats (see `resent`), whose frames it shares. */
  #original: Message | undefined;
  /** Connections that took the message and have not written or dropped it yet. */
  outstanding = 0;
  /** Connections it was written to. */
  written = 0;
  status: DeliveryStatus = "accepted";
  /** Whether its written count has gone to the log (once no connection holds it any more). */
  writtenLogged = false;
  /** Replayed from the mailbox: its log row says `queued` until a connection is written it. */
  mailed = false;

  constructor(
    readonly id: number,
    readonly target: Target,
    readonly data: string,
    /** Milliseconds since the epoch, when it was accepted. */
    readonly ts: number,
    dataBytes?: number,
    /** The connection that sent it (a client's `publish` or `send` frame); none for a backend's. */
    readonly from?: Sender,
  ) {
    if (dataBytes !== undefined) this.#text = { data, bytes: dataBytes };
  }

  /**
   * The same message for one more connection whose delivery is not this message's to settle (a
   * client that resumes gets it after its replay): a new outcome to track, the same frames, so a
   * message is still encoded once per format however many resuming clients get it.
   */
  resent(): Message {
    const copy = new Message(this.id, this.target, this.data, this.ts, undefined, this.from);
    copy.#original = this.#original ?? this;
    copy.status = "delivered"; // its log row is the original's business
    copy.outstanding = 1;
    return copy;
  }

  /** The go-pusher frame: exactly the message. */
  get text(): Frame {
    if (this.#original) return this.#original.text;
    return this.#text ??= { data: this.data, bytes: utf8Length(this.data) };
  }

  /**
   * The JSON envelope `{type:"message", id, data, ts}`, plus `group` for a group's message and
   * `from: {uid, client}` for a client's.
   */
  get json(): Frame {
    if (this.#original) return this.#original.json;
    if (!this.#json) {
      const envelope: Record<string, unknown> = {
        type: "message",
        id: this.id,
        data: this.data,
        ts: this.ts,
      };
      if ("group" in this.target) envelope.group = this.target.group;
      if (this.from) envelope.from = { uid: this.from.uid, client: this.from.client };
      const data = JSON.stringify(envelope);
      this.#json = { data, bytes: utf8Length(data) };
    }
    return this.#json;
  }
}
