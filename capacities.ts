/**
 * The groups' own bounds on members, set through the API (`PUT /api/groups/{group}/settings`): a
 * single node keeps them in `<data dir>/group-settings.json`, so that a restart keeps them too. A
 * cluster keeps them in Redis instead (engine/presence_redis.ts). The file is written whole at each
 * change, durably (datadir.ts's writeDurably): changes are an operator's, rare, and the file holds
 * one number per group.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { writeDurably } from "./datadir.ts";

/** The file in the data directory. */
export const CAPACITIES_FILE = "group-settings.json";

/** Where the groups' own bounds are kept (see hub.ts's `setCapacity`). */
export interface CapacityStore {
  /** Every group's own bound, as kept. */
  readonly all: ReadonlyMap<string, number>;
  /** Keeps `group`'s bound, or forgets it with null. Throws, naming where, when it cannot. */
  set(group: string, maxMembers: number | null): void;
}

const FileSchema = z.object({
  version: z.literal(1),
  maxMembers: z.record(z.string(), z.number().int().min(0)),
});

/** The bounds in a file of the data directory; see the module's comment. */
export class CapacityFile implements CapacityStore {
  readonly #file: string;
  readonly #capacities: Map<string, number>;

  /** Reads the file in `dir` (none yet: no bounds). Throws, naming it, when it cannot be read. */
  constructor(dir: string) {
    this.#file = join(dir, CAPACITIES_FILE);
    this.#capacities = new Map(Object.entries(read(this.#file)));
  }

  get all(): ReadonlyMap<string, number> {
    return this.#capacities;
  }

  set(group: string, maxMembers: number | null): void {
    const next = new Map(this.#capacities);
    if (maxMembers === null) next.delete(group);
    else next.set(group, maxMembers);
    const text = JSON.stringify({ version: 1, maxMembers: Object.fromEntries(next) });
    try {
      writeDurably(this.#file, `${text}\n`);
    } catch (err) {
      throw new Error(`cannot write ${this.#file}: ${(err as Error).message}`, { cause: err });
    }
    // Only once it is on disk: a bound the file does not have would be gone after a restart.
    this.#capacities.clear();
    for (const [name, max] of next) this.#capacities.set(name, max);
  }
}

/** The bounds in `file`, none when it does not exist yet. */
function read(file: string): Record<string, number> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return {};
    throw new Error(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const result = FileSchema.safeParse(parsed);
  if (!result.success) {
    throw new Error(
      `${file} should hold the groups' bounds set through PUT /api/groups/{group}/settings, ` +
        `{"version":1,"maxMembers":{"<group>":<n>}}, but does not: mend it, or remove it to ` +
        `forget those bounds`,
    );
  }
  return result.data.maxMembers;
}
