/** The stdout logger: one JSON line per record or status change, as go-pusher's printed them. */
import { BatchingLogger, type DeliveryStatus, type MessageRecord } from "./logger.ts";

/** Writes JSON lines through `write` (stdout by default), one batch at a time. */
export class StdoutLogger extends BatchingLogger {
  constructor(
    flushMs: number,
    onError: (err: unknown) => void,
    private readonly out: (text: string) => void = (text) => console.log(text),
  ) {
    super(flushMs, onError);
  }

  protected write(records: MessageRecord[], updates: Map<number, DeliveryStatus>): void {
    const lines = records.map((r) => JSON.stringify({ event: "message", ...r }));
    for (const [id, status] of updates) lines.push(JSON.stringify({ event: "status", id, status }));
    this.out(lines.join("\n"));
  }

  /** A failed write is stdout's failure, never a line's: the whole batch is tried again. */
  protected isRowError(): boolean {
    return false;
  }

  /** Stdout keeps no state; the data directory keeps the ids instead (see ids.ts). */
  lastId(): number {
    return 0;
  }
}
