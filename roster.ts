/**
 * The roster: every node's connections as the management API sees them. A client by its id, the
 * lists (clients, uids, groups, a group's members, a uid's clients), and the actions on them
 * (close, log out, bind, join, leave, dissolve, locks), on whichever node each connection is.
 *
 * One path for one node and for many: a request goes to every node (engine/nodes.ts's channel; a
 * single node has none and answers itself), each node answers from its own hub (`answerHere`), and
 * the roster puts the answers together. A list is every node's part in turn, ordered by node name,
 * so its pages do not shift between two calls unless connections come or go.
 */
import type { Client, Format } from "./client.ts";
import { type Hub, type LockView, type Page, StoreUnavailableError } from "./hub.ts";
import type { NodeAnswer, NodeChannel } from "./engine/nodes.ts";
import type { DeliveryStatus, LoggedMessage } from "./message/logger.ts";

/**
 * Which node's status a message shows when the nodes' logs differ: the one furthest along (a
 * node whose connections took it says more than one that only took the send).
 */
const STATUS_RANK: readonly DeliveryStatus[] = [
  "offline",
  "interrupted",
  "failed",
  "dropped",
  "expired",
  "accepted",
  "queued",
  "delivered",
  "acked",
];

/** A connection as the API shows it. */
export interface ClientView {
  id: string;
  uid: string | null;
  groups: string[];
  info: unknown;
  format: Format;
  /** Milliseconds since the epoch. */
  connectedAt: number;
  /** Outbound bytes waiting for it (its queue and its socket's buffer), when it was asked. */
  queuedBytes: number;
}

/** One node's part of a list: its first `take` items, and how many it has. */
interface Part<T> {
  items: T[];
  total: number;
}

/** What a join or leave changed on one node. */
interface Membership {
  /** Connections of the target found on the node. */
  found: number;
  /** Those whose membership changed. */
  changed: number;
  /** The group's members on the node, after the change. */
  members: number;
  /** Why nobody joined on the node: the group is full there. */
  full?: string;
}

/** What one node is asked; answered by `answerHere`. */
export type RosterRequest =
  | { op: "client"; id: string }
  | { op: "clients"; take: number }
  | { op: "clientsOf"; uid: string; take: number }
  | { op: "members"; group: string; take: number }
  | { op: "uids" }
  | { op: "groups" }
  | { op: "groupSize"; group: string }
  | { op: "close"; id: string; code: number; reason: string }
  | { op: "closeUid"; uid: string; code: number; reason: string }
  | { op: "bind"; id: string; uid: string | null }
  | {
    op: "membership";
    group: string;
    join: boolean;
    id?: string;
    uid?: string;
    /** The asking node checked the group's room for the whole cluster already. */
    checked?: boolean;
  }
  | { op: "newcomers"; group: string; id?: string; uid?: string }
  | { op: "dissolve"; group: string }
  | { op: "message"; id: number };

/** A connection as the API shows it. */
export function viewOf(client: Client): ClientView {
  return {
    id: client.id,
    uid: client.uid ?? null,
    groups: [...client.groups],
    info: client.info ?? null,
    format: client.format,
    connectedAt: client.connectedAt,
    queuedBytes: client.queuedBytes,
  };
}

/** This node's answer to `request`, from its own hub; JSON, to travel between nodes. */
export function answerHere(hub: Hub, request: RosterRequest): unknown {
  switch (request.op) {
    case "client": {
      const client = hub.client(request.id);
      return client ? viewOf(client) : null;
    }
    case "clients":
      return part(hub.clients(0, request.take));
    case "clientsOf":
      return part(hub.clientsOf(request.uid, 0, request.take));
    case "members":
      return part(hub.members(request.group, 0, request.take));
    case "uids":
      return hub.uids(0, Infinity).items;
    case "groups":
      return hub.groups(0, Infinity).items;
    case "groupSize": {
      const size = hub.groupSize(request.group);
      if (!size) return null;
      const uids = new Set<string>();
      for (const member of hub.members(request.group, 0, Infinity)!.items) {
        if (member.uid !== undefined) uids.add(member.uid);
      }
      return { members: size.members, uids: [...uids] };
    }
    case "close": {
      const client = hub.client(request.id);
      if (client) hub.close(client, request.code, request.reason);
      return client ? 1 : 0;
    }
    case "closeUid":
      return hub.closeUid(request.uid, request.code, request.reason);
    case "bind": {
      const client = hub.client(request.id);
      if (!client) return null;
      hub.bind(client, request.uid ?? undefined);
      return viewOf(client);
    }
    case "membership":
      return membership(hub, request);
    case "newcomers": {
      const clients = targets(hub, request);
      return {
        found: clients.length,
        newcomers: clients.filter((c) => !c.groups.has(request.group)).length,
      };
    }
    case "dissolve":
      return hub.dissolve(request.group) ?? null;
    case "message": {
      const found = hub.message(request.id);
      return found === null ? "no log" : found ?? null;
    }
  }
}

function part(page: Page<Client> | undefined): Part<ClientView> {
  return page ? { items: page.items.map(viewOf), total: page.total } : { items: [], total: 0 };
}

/** The connection `id`, or every connection of `uid`, on this node. */
function targets(hub: Hub, { id, uid }: { id?: string; uid?: string }): Client[] {
  const one = id === undefined ? undefined : hub.client(id);
  if (one) return [one];
  return uid === undefined ? [] : hub.clientsOf(uid, 0, Infinity)?.items ?? [];
}

function membership(
  hub: Hub,
  request: { group: string; join: boolean; id?: string; uid?: string; checked?: boolean },
): Membership {
  const { group, join, checked } = request;
  const clients = targets(hub, request);
  const members = () => hub.groupSize(group)?.members ?? 0;
  if (join && !checked && !hub.hasRoomFor(clients, group)) {
    return {
      found: clients.length,
      changed: 0,
      members: members(),
      full: `group is full: ${group} holds ${members()} of ${hub.capacity(group)} members`,
    };
  }
  let changed = 0;
  for (const client of clients) {
    if (client.groups.has(group) !== join) changed++;
    if (join) hub.join(client, group);
    else hub.leave(client, group);
  }
  return { found: clients.length, changed, members: members() };
}

/** The cluster's connections (or a single node's), for the API. */
export class Roster {
  readonly #hub: Hub;
  readonly #channel: NodeChannel | undefined;

  /** With a channel, this node also answers the other nodes' requests from `hub`. */
  constructor(hub: Hub, channel?: NodeChannel) {
    this.#hub = hub;
    this.#channel = channel;
    channel?.serve((request) => answerHere(hub, request as RosterRequest));
  }

  /**
   * Every node's answer, ordered by node name. Rejects with StoreUnavailableError (503) when the
   * other nodes cannot be asked, or one did not answer.
   */
  async #ask<T>(request: RosterRequest): Promise<T[]> {
    if (!this.#channel) return [answerHere(this.#hub, request) as T];
    let answers: NodeAnswer[];
    try {
      answers = await this.#channel.ask(request);
    } catch (err) {
      throw new StoreUnavailableError(
        `the cluster's nodes cannot be asked now: ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
    answers.sort((a, b) => a.node < b.node ? -1 : a.node > b.node ? 1 : 0);
    return answers.map((a) => a.answer as T);
  }

  /** The connection `id` on any node; undefined when none has it. */
  async client(id: string): Promise<ClientView | undefined> {
    return (await this.#ask<ClientView | null>({ op: "client", id })).find((v) => v) ?? undefined;
  }

  /** A page of every node's connections. */
  clients(offset: number, limit: number): Promise<Page<ClientView>> {
    return this.#page({ op: "clients", take: offset + limit }, offset, limit);
  }

  /** A page of `uid`'s connections on every node; undefined when it has none. */
  async clientsOf(uid: string, offset: number, limit: number) {
    const p = await this.#page({ op: "clientsOf", uid, take: offset + limit }, offset, limit);
    return p.total > 0 ? p : undefined;
  }

  /** A page of `group`'s members on every node; undefined when it has none. */
  async members(group: string, offset: number, limit: number) {
    const p = await this.#page({ op: "members", group, take: offset + limit }, offset, limit);
    return p.total > 0 ? p : undefined;
  }

  /** A page of the uids online on any node, each once. */
  async uids(offset: number, limit: number): Promise<Page<string>> {
    return slice(unique(await this.#ask<string[]>({ op: "uids" })), offset, limit);
  }

  /** A page of the groups with members on any node, each once. */
  async groups(offset: number, limit: number): Promise<Page<string>> {
    return slice(unique(await this.#ask<string[]>({ op: "groups" })), offset, limit);
  }

  /** `group`'s members and distinct uids on every node; undefined when it has none. */
  async groupSize(group: string): Promise<{ members: number; uids: number } | undefined> {
    const parts = (await this.#ask<{ members: number; uids: string[] } | null>({
      op: "groupSize",
      group,
    })).filter((p) => p !== null);
    if (parts.length === 0) return undefined;
    return {
      members: parts.reduce((n, p) => n + p.members, 0),
      uids: new Set(parts.flatMap((p) => p.uids)).size,
    };
  }

  /** Closes the connection `id` wherever it is; false when no node has it. */
  async close(id: string, code: number, reason: string): Promise<boolean> {
    return sum(await this.#ask<number>({ op: "close", id, code, reason })) > 0;
  }

  /** Closes every connection of `uid` on every node (logout); answers how many. */
  async closeUid(uid: string, code: number, reason: string): Promise<number> {
    return sum(await this.#ask<number>({ op: "closeUid", uid, code, reason }));
  }

  /** Binds the connection `id` to `uid` (none: unbinds it); undefined when no node has it. */
  async bind(id: string, uid: string | undefined): Promise<ClientView | undefined> {
    const views = await this.#ask<ClientView | null>({ op: "bind", id, uid: uid ?? null });
    return views.find((v) => v) ?? undefined;
  }

  /**
   * The connection `id`, or every connection of `uid`, joins (or leaves) `group`, on every node.
   * Answers how many were found and changed, the group's members after, and, for a join, why it
   * was refused on a node where the group is full (nobody joined there).
   */
  async membership(
    group: string,
    join: boolean,
    who: { id: string } | { uid: string },
  ): Promise<Membership> {
    // A cluster's bounded group: the room is checked for every node's members first, then the
    // nodes join without checking their own. (One node checks and joins in one step.)
    let checked = false;
    if (join && this.#channel && this.#hub.capacity(group) > 0) {
      const found = await this.#ask<{ found: number; newcomers: number }>({
        op: "newcomers",
        group,
        ...who,
      });
      const { room, members } = await this.#hub.roomAnywhere(
        group,
        sum(found.map((f) => f.newcomers)),
      );
      if (!room) {
        return {
          found: sum(found.map((f) => f.found)),
          changed: 0,
          members,
          full: `group is full: ${group} holds ${members} of ${this.#hub.capacity(group)} members`,
        };
      }
      checked = true;
    }
    const parts = await this.#ask<Membership>({
      op: "membership",
      group,
      join,
      ...who,
      ...(checked ? { checked } : {}),
    });
    return {
      found: sum(parts.map((p) => p.found)),
      changed: sum(parts.map((p) => p.changed)),
      members: sum(parts.map((p) => p.members)),
      full: parts.find((p) => p.full)?.full,
    };
  }

  /** Every member of `group` leaves, on every node; answers how many, or undefined if none. */
  async dissolve(group: string): Promise<number | undefined> {
    const parts = (await this.#ask<number | null>({ op: "dissolve", group }))
      .filter((n) => n !== null);
    return parts.length === 0 ? undefined : sum(parts);
  }

  /** The locks of `group`, oldest first: a cluster's are in its registry (hub.ts). */
  locks(group: string): Promise<LockView[]> {
    return this.#hub.locks(group);
  }

  /** Breaks the lock on `key` in `group` wherever it is held; false when none. */
  breakLock(group: string, key: string): Promise<boolean> {
    return this.#hub.breakLock(group, key);
  }

  /**
   * Message `id` as the nodes' logs keep it: each node logs the messages its own connections were
   * sent, and those it took that nobody had (README: Cluster on Redis). One row: `written` and
   * `acked` summed over the nodes, the status furthest along, the latest change. Undefined when no
   * node has it, null when no node keeps a log that can be read.
   */
  async message(id: number): Promise<LoggedMessage | undefined | null> {
    const answers = await this.#ask<LoggedMessage | null | "no log">({ op: "message", id });
    const rows = answers.filter((a): a is LoggedMessage => a !== null && a !== "no log");
    if (rows.length === 0) return answers.every((a) => a === "no log") ? null : undefined;
    const rank = (row: LoggedMessage) => STATUS_RANK.indexOf(row.status);
    const furthest = rows.reduce((a, b) => rank(b) > rank(a) ? b : a);
    return {
      ...furthest,
      written: sum(rows.map((r) => r.written)),
      acked: sum(rows.map((r) => r.acked)),
      updatedAt: Math.max(...rows.map((r) => r.updatedAt)),
    };
  }

  /** A page of the nodes' parts, one node after another. */
  async #page(request: RosterRequest, offset: number, limit: number): Promise<Page<ClientView>> {
    const parts = await this.#ask<Part<ClientView>>(request);
    const total = sum(parts.map((p) => p.total));
    const items: ClientView[] = [];
    let start = 0; // the index, in the whole list, of the current part's first item
    for (const p of parts) {
      for (let i = Math.max(0, offset - start); i < p.items.length; i++) {
        if (items.length === limit) break;
        items.push(p.items[i]);
      }
      start += p.total;
      if (items.length === limit || start >= offset + limit) break;
    }
    return { items, total, next: offset + items.length < total ? offset + items.length : null };
  }
}

function sum(numbers: number[]): number {
  return numbers.reduce((n, m) => n + m, 0);
}

/** The lists joined, each item once, in the order first seen. */
function unique(lists: string[][]): string[] {
  return [...new Set(lists.flat())];
}

function slice<T>(items: T[], offset: number, limit: number): Page<T> {
  const page = items.slice(offset, offset + limit);
  const end = offset + page.length;
  return { items: page, total: items.length, next: end < items.length ? end : null };
}
