/** Picks the adapter for the runtime this process is on. The core never asks which one it is. */
import { serveBun } from "./bun.ts";
import type { Listening, Served, ServeOptions } from "./contract.ts";
import { serveDeno } from "./deno.ts";

/** The name of the runtime this process runs on. */
export const runtimeName: "bun" | "deno" = "Bun" in globalThis ? "bun" : "deno";

/** Serves `app` on Deno or Bun, whichever runs this process. */
export function serve(app: Served, options: ServeOptions): Promise<Listening> {
  return runtimeName === "bun" ? serveBun(app, options) : serveDeno(app, options);
}
