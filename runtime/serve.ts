/** Picks the adapter for the runtime this process is on. The core never asks which one it is. */
import type { App } from "../server.ts";
import { serveBun } from "./bun.ts";
import { serveDeno } from "./deno.ts";

/** Where and how to listen. */
export interface ServeOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Seconds without a pong before a socket is closed. */
  idleTimeout: number;
  maxFrameBytes: number;
  maxQueueBytes: number;
}

/** A listening server. */
export interface Listening {
  port: number;
  /** Stops accepting and closes the listener; resolves when it is closed. */
  stop(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

/** The name of the runtime this process runs on. */
export const runtimeName: "bun" | "deno" = "Bun" in globalThis ? "bun" : "deno";

/** Serves `app` on Deno or Bun, whichever runs this process. */
export function serve(app: App, options: ServeOptions): Promise<Listening> {
  return runtimeName === "bun" ? serveBun(app, options) : serveDeno(app, options);
}
