/**
 * A set that stays an array while it is small, in insertion order like a `Set`. Every connection holds two sets (its groups, and its
 * uid's connections in the hub's index), nearly always of one to a few members; an empty `Set` costs
 * about 380 bytes in Bun's JavaScriptCore and 100 to 200 in V8, an array of one about 50. Past
 * SMALL members it becomes a `Set`, so that `has` stays O(1) for a client in many groups.
 *
 * Iterating while adding or deleting is not supported (the array shifts): callers that change the
 * set in a loop iterate a copy, as they would for the indexes anyway.
 */

/** Members kept in the array; past it, a Set. Scanning 8 strings or objects beats hashing one. */
export const SMALL = 8;

export class SmallSet<T> implements Iterable<T> {
  #few: T[] | undefined;
  #many: Set<T> | undefined;

  constructor(members?: Iterable<T>) {
    if (members) { for (const m of members) this.add(m); }
  }

  get size(): number {
    return this.#many?.size ?? this.#few?.length ?? 0;
  }

  has(member: T): boolean {
    return this.#many ? this.#many.has(member) : this.#few?.includes(member) ?? false;
  }

  add(member: T): this {
    if (this.#many) {
      this.#many.add(member);
    } else if (!this.#few) {
      this.#few = [member];
    } else if (!this.#few.includes(member)) {
      if (this.#few.length < SMALL) this.#few.push(member);
      else {
        this.#many = new Set(this.#few).add(member);
        this.#few = undefined;
      }
    }
    return this;
  }

  /** Removes `member`; true when it was there. */
  delete(member: T): boolean {
    if (this.#many) return this.#many.delete(member);
    const i = this.#few?.indexOf(member) ?? -1;
    if (i < 0) return false;
    // Insertion order is kept, as a Set keeps it: lists of groups show them in the order joined.
    this.#few!.splice(i, 1);
    return true;
  }

  [Symbol.iterator](): Iterator<T> {
    return (this.#many ?? this.#few ?? [])[Symbol.iterator]();
  }
}
