/**
 * SmallSet against the built-in Set: any sequence of adds and deletes, across the switch from the
 * array to a Set and back through emptying, leaves the same members in the same order, the same
 * size and the same answers to `has` and `delete`.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { SMALL, SmallSet } from "./smallset.ts";

test("SmallSet answers as a Set does, in the same insertion order, small and large", () => {
  // Few distinct names, so that sequences revisit them; enough that a set passes SMALL members.
  const name = fc.integer({ min: 0, max: SMALL * 3 }).map((n) => `g${n}`);
  const op = fc.tuple(fc.constantFrom("add", "delete", "has"), name);
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      const small = new SmallSet<string>();
      const real = new Set<string>();
      for (const [kind, member] of ops) {
        if (kind === "add") small.add(member), real.add(member);
        else if (kind === "delete") assert.equal(small.delete(member), real.delete(member));
        else assert.equal(small.has(member), real.has(member));
        assert.equal(small.size, real.size);
      }
      assert.deepEqual([...small], [...real]);
    }),
    { numRuns: 500 },
  );
});

test("SmallSet starts from any iterable, without repeats", () => {
  const set = new SmallSet(["a", "b", "a", "c"]);
  assert.deepEqual([...set], ["a", "b", "c"]);
  assert.equal(set.size, 3);
  assert.deepEqual([...new SmallSet()], []);
});
