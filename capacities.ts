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

/**
 * Where the groups' own bounds are kept (see hub.ts's `setCapacity`). The hub holds them in memory;
 * this is their copy on disk, read once at the start and written whole at each change.
 */
export interface CapacityStore {
  /** Every group's own bound, as kept. Throws, naming where, when it cannot be read. */
  load(): Map<string, number>;
  /** Keeps `all` in place of what was kept. Throws, naming where, when it cannot. */
  save(all: ReadonlyMap<string, number>): void;
}

const FileSchema = z.object({
  version: z.literal(1),
  maxMembers: z.record(z.string(), z.number().int().min(0)),
});

/** The bounds in a file of the data directory; see the module's comment. */
export class CapacityFile implements CapacityStore {
  readonly #file: string;

  constructor(dir: string) {
    this.#file = join(dir, CAPACITIES_FILE);
  }

  load(): Map<string, number> {
    return new Map(Object.entries(read(this.#file)));
  }

  save(all: ReadonlyMap<string, number>): void {
    const text = JSON.stringify({ version: 1, maxMembers: Object.fromEntries(all) });
    try {
      writeDurably(this.#file, `${text}\n`);
    } catch (err) {
      throw new Error(`cannot write ${this.#file}: ${(err as Error).message}`, { cause: err });
    }
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
