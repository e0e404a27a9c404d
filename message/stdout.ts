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

  /** Stdout keeps no state; ids start from the clock instead (see hub.ts). */
  lastId(): number {
    return 0;
  }
}
