/**
 * Advisory locks, per group, for collaborative editing: a member takes a key ("field-3") so that the
 * others know it is being edited. The hub owns a Locks and tells the group's members of every take
 * and release; this file only keeps who holds what, and the expiry timers.
 *
 * Invariant: a lock is held by a member of its group. The hub releases a holder's locks in a group
 * when it leaves it or closes (`releaseMember`), so no lock outlives its holder's membership.
 */
import type { Client } from "./client.ts";

/** Default of MAX_LOCKS_PER_CONNECTION: keys one connection may hold at once, all groups together. */
export const DEFAULT_MAX_LOCKS_PER_CONNECTION = 16;

/** The longest `ttl` a lock may ask for, in seconds: a day. */
export const MAX_LOCK_TTL = 86_400;

/** One held key. */
export interface Lock {
  group: string;
  key: string;
  holder: Client;
  /** Milliseconds since the epoch when it expires; null when it lasts until released. */
  expiresAt: number | null;
}

/** Why a lock was not granted. */
export type LockRefusal = { heldBy: Client } | { tooMany: number };

/** Who holds which key of which group. */
export class Locks {
  /** group → key → lock. */
  readonly #groups = new Map<
    string,
    Map<string, Lock & { timer?: ReturnType<typeof setTimeout> }>
  >();
  /** How many keys each connection holds. */
  readonly #held = new Map<Client, number>();

  /**
   * @param maxPerConnection keys one connection may hold at once; 0: no bound.
   * @param expired called when a lock's ttl passes, after it was released.
   */
  constructor(
    private readonly maxPerConnection: number,
    private readonly expired: (lock: Lock) => void,
  ) {}

  /**
   * Gives `key` of `group` to `holder` for `ttl` seconds (none: until released). Taking a key one
   * holds already renews it (a new ttl). Answers the lock, or why not.
   */
  take(holder: Client, group: string, key: string, ttl?: number): Lock | LockRefusal {
    let keys = this.#groups.get(group);
    const current = keys?.get(key);
    if (current && current.holder !== holder) return { heldBy: current.holder };
    if (!current) {
      const held = this.#held.get(holder) ?? 0;
      if (this.maxPerConnection > 0 && held >= this.maxPerConnection) {
        return { tooMany: this.maxPerConnection };
      }
      this.#held.set(holder, held + 1);
    } else clearTimeout(current.timer);
    const lock: Lock & { timer?: ReturnType<typeof setTimeout> } = {
      group,
      key,
      holder,
      expiresAt: ttl === undefined ? null : Date.now() + ttl * 1000,
    };
    if (ttl !== undefined) {
      lock.timer = setTimeout(() => {
        if (this.#groups.get(group)?.get(key) !== lock) return;
        this.#drop(lock);
        this.expired(view(lock));
      }, ttl * 1000);
    }
    if (!keys) this.#groups.set(group, keys = new Map());
    keys.set(key, lock);
    return view(lock);
  }

  /** The lock on `key` of `group`, if any. */
  get(group: string, key: string): Lock | undefined {
    const lock = this.#groups.get(group)?.get(key);
    return lock && view(lock);
  }

  /** Releases `key` of `group`, whoever holds it; answers the lock released, if there was one. */
  release(group: string, key: string): Lock | undefined {
    const lock = this.#groups.get(group)?.get(key);
    if (!lock) return undefined;
    this.#drop(lock);
    return view(lock);
  }

  /** Releases every lock `holder` has in `group` (it left the group or closed); answers them. */
  releaseMember(holder: Client, group: string): Lock[] {
    if (!this.#held.has(holder)) return [];
    const keys = this.#groups.get(group);
    if (!keys) return [];
    const released: Lock[] = [];
    for (const lock of [...keys.values()]) {
      if (lock.holder === holder) {
        this.#drop(lock);
        released.push(view(lock));
      }
    }
    return released;
  }

  /** The locks of `group`, in the order they were taken. */
  of(group: string): Lock[] {
    return [...(this.#groups.get(group)?.values() ?? [])].map(view);
  }

  #drop(lock: Lock & { timer?: ReturnType<typeof setTimeout> }): void {
    clearTimeout(lock.timer);
    const keys = this.#groups.get(lock.group)!;
    keys.delete(lock.key);
    if (keys.size === 0) this.#groups.delete(lock.group);
    const held = this.#held.get(lock.holder)! - 1;
    if (held > 0) this.#held.set(lock.holder, held);
    else this.#held.delete(lock.holder);
  }
}

/** A lock without its timer. */
function view({ group, key, holder, expiresAt }: Lock): Lock {
  return { group, key, holder, expiresAt };
}
