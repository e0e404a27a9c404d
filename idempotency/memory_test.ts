/** The memory idempotency store: the contract every store keeps. */
import { idempotencyContract } from "./contract.ts";
import { MemoryIdempotency } from "./memory.ts";

idempotencyContract("memory", (options) => {
  const store = new MemoryIdempotency({ ...options, sweepMs: 0 });
  return { store, sweep: () => store.sweepNow(), [Symbol.asyncDispose]: () => store.close() };
});
