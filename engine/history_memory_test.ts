/** The memory history store: the contract every store keeps. */
import { historyContract } from "./history_contract.ts";
import { MemoryHistory } from "./history_memory.ts";

historyContract("memory", (options) => {
  const store = new MemoryHistory({ ...options, sweepMs: 0 });
  return { store, sweep: () => store.sweep(), [Symbol.asyncDispose]: () => store.close() };
});
