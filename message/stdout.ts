/** The stdout logger: one JSON line per record or status change, as go-pusher's printed them. */
import { BatchingLogger, type MessageRecord, type RecordChange } from "./logger.ts";

/** Writes JSON lines through `write` (stdout by default), one batch at a time. */
export class StdoutLogger extends BatchingLogger {
  constructor(
    flushMs: number,
    onError: (err: unknown) => void,
    private readonly out: (text: string) => void = (text) => console.log(text),
  ) {
    super(flushMs, onError);
  }

  /**
   * A record is one `message` line; a change is a `status` line (when it has a status), a
   * `written` line (connections written to, to add) and one `ack` line per ack.
   */
  protected write(records: MessageRecord[], updates: Map<number, RecordChange>): void {
    const lines: string[] = [];
    const ack = (id: number, [uid, at]: [string, number]) =>
      lines.push(JSON.stringify({ event: "ack", id, uid, at }));
    for (const { acks, ...r } of records) {
      lines.push(JSON.stringify({ event: "message", ...r }));
      for (const a of acks ?? []) ack(r.id, a);
    }
    for (const [id, { status, written, acks }] of updates) {
      if (status) lines.push(JSON.stringify({ event: "status", id, status }));
      if (written > 0) lines.push(JSON.stringify({ event: "written", id, written }));
      for (const a of acks) ack(id, a);
    }
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
