/**
 * The history store: where the publications of each stream are kept, so that a client that was
 * away can resume after the last id it saw. It is one interface with one implementation per
 * backend (history_memory.ts, history_sqlite.ts), as centrifuge splits its history from its broker:
 * the broker assigns ids and carries publications, the history keeps and reads them.
 *
 * What is kept: per stream, an unbroken run of its newest publications, at most `size` of them and
 * none older than `ttl`. Trimming always takes a stream's oldest publications first, and the store
 * remembers per stream the highest id it ever trimmed (its trim mark). So a reader that has seen
 * every id up to `since` has missed nothing exactly when `since` is at or above the mark; that is
 * what `HistoryPage.recovered` says, and it is exact, not a guess from sizes or clocks.
 */
import type { Publication, StreamName } from "./stream.ts";

/** One page of a stream's history. */
export interface HistoryPage {
  /** Kept publications with id > since, oldest first, at most `limit` of them. */
  publications: Publication[];
  /**
   * True when nothing of this stream with id > since was ever trimmed (by size or by age), so the
   * publications read from `since` on are all there were. False when some were trimmed: the reader
   * missed something and must fetch the rest elsewhere (its backend). It is about the stream as it
   * stands when read, so each page of a long read answers for itself.
   */
  recovered: boolean;
  /** The `since` to read the next page with, or null when no kept publication follows this page. */
  next: number | null;
}

/** How much a store keeps of each stream. */
export interface HistoryBounds {
  /**
   * Publications kept per stream, the newest (HISTORY_SIZE): a whole number, 0 or more. 0 keeps
   * nothing: every append is trimmed as it lands, and only the stream's trim mark moves, so a read
   * finds no publications and answers recovered=true only to a reader that had seen the stream's
   * newest id already. (HISTORY_SIZE=0 in the configuration turns history off; the server then
   * builds no store at all.)
   */
  size: number;
  /**
   * Seconds a publication is kept after its `ts` (HISTORY_TTL): more than 0. Older ones are trimmed
   * from the oldest on, lazily: a read never returns one and counts it as trimmed at once, and the
   * store frees its space where that is cheap (on the stream's next append or read in memory) and
   * at an occasional sweep. A publication whose `ts` is older than that of a publication with a
   * lower id (the clock stepped back) goes only once the older-by-id one has gone.
   */
  ttl: number;
}

/**
 * Where the publications of each stream are kept. All methods report errors by rejecting, never
 * by throwing. A store is used by one process; two stores on the same backend break each other's
 * trim marks.
 */
export interface HistoryStore {
  /**
   * Keeps `publication` in its stream, trimming the stream to its bounds. Resolves once the
   * publication is as durable as the store makes anything: in memory for the memory store,
   * committed for SQLite (and so it survives a `kill -9`). Rejects, naming the store's file or
   * server, when it could not be kept; it is then not in the store.
   *
   * The caller assigns ids (message/ids.ts); the appends of one stream should come in id order,
   * which is the fast path. One that comes late is put in its place, but a reader may have read
   * past it already and is not told. An id the stream holds, or at or below its trim mark, changes
   * nothing, so an append whose outcome was not learnt can be retried. Rejects with a RangeError
   * when the id is not a positive safe integer or `ts` not a finite number.
   */
  append(publication: Publication): Promise<void>;

  /**
   * One page of `stream`: its kept publications with id > `since` (0 or more), at most `limit` (1
   * or more), oldest first. Sees every append called before it that did not reject, whether or not
   * it had resolved yet. An unknown stream answers an empty page with recovered=true: nothing of
   * it was ever trimmed. Rejects with a RangeError for a negative or fractional `since` or a
   * `limit` below 1. Asynchronous because a store behind a network (Redis) cannot answer at once.
   */
  read(stream: StreamName, since: number, limit: number): Promise<HistoryPage>;

  /**
   * Notes that message `id` of `uid`'s stream was written to one of `uid`'s sockets. The mailbox
   * (OFFLINE_TTL) mails a uid's next connection only what lies above the highest such id, so that
   * nothing it was written is mailed again. Kept in memory at once, and as durable as the store
   * makes anything soon after (SQLite: with the next commit, at most MARK_FLUSH_MS later), so a
   * crash may forget the last marks: a message can then be mailed twice, never not at all. Never
   * throws; a mark that cannot be written is tried again with the next commit.
   */
  wrote(uid: string, id: number): void;

  /**
   * The highest id `wrote` noted for `uid` less than HISTORY_TTL ago, or 0 when there is none:
   * a mark older than that no longer matters, since everything it could hide has expired.
   */
  writtenThrough(uid: string): number;

  /**
   * `writtenThrough`, after taking in the mark as every store sharing this one's data wrote it (a
   * cluster's nodes, each writing its own marks within MARK_FLUSH_MS). Only a shared store has it;
   * it rejects when the shared data cannot be read.
   */
  sharedMark?(uid: string): Promise<number>;

  /**
   * Writes what is pending, then releases the store's resources and timers. Appends it could not
   * write reject, as they would have; `close` itself resolves. After it, appends and reads reject.
   */
  close(): Promise<void>;
}

/**
 * Milliseconds between two sweeps of streams nobody appends to: their expired publications go
 * within HISTORY_TTL plus this. A sweep costs one pass over what expired since the last.
 */
export const HISTORY_SWEEP_MS = 60_000;

/**
 * Milliseconds a written mark (`wrote`) may wait for a commit when no append comes to take it
 * along: what a crash can make the mailbox forget.
 */
export const MARK_FLUSH_MS = 100;

/** Where a uid's written mark stands: the id, and when it was noted (ms since the epoch). */
export interface WrittenMark {
  id: number;
  at: number;
}

/**
 * The written marks of uids, in memory, as both stores keep them: raised only, and forgotten once
 * older than the history's TTL (`forget`).
 */
export class WrittenMarks {
  readonly #marks = new Map<string, WrittenMark>();

  constructor(private readonly ttlMs: number, private readonly now: () => number) {}

  /** Raises `uid`'s mark to `id`; answers whether it moved. */
  raise(uid: string, id: number): boolean {
    const mark = this.#marks.get(uid);
    if (mark && mark.id >= id) return false;
    this.#marks.set(uid, { id, at: this.now() });
    return true;
  }

  /** Sets a mark as a file kept it. */
  load(uid: string, mark: WrittenMark): void {
    this.#marks.set(uid, mark);
  }

  get(uid: string): WrittenMark | undefined {
    return this.#marks.get(uid);
  }

  /** See HistoryStore.writtenThrough. */
  through(uid: string): number {
    const mark = this.#marks.get(uid);
    return mark && mark.at >= this.now() - this.ttlMs ? mark.id : 0;
  }

  /** The uids with a mark. */
  uids(): IterableIterator<string> {
    return this.#marks.keys();
  }

  /** Forgets the marks older than the TTL; answers how many. */
  forget(): number {
    const cutoff = this.now() - this.ttlMs;
    let n = 0;
    for (const [uid, mark] of this.#marks) {
      if (mark.at < cutoff) this.#marks.delete(uid), n++;
    }
    return n;
  }
}

/** Throws a RangeError, saying what is allowed, when `bounds` cannot be a store's bounds. */
export function checkBounds(bounds: HistoryBounds): void {
  if (!Number.isSafeInteger(bounds.size) || bounds.size < 0) {
    throw new RangeError(
      `history size must be a whole number of publications, 0 or more, not ${bounds.size}`,
    );
  }
  if (!(bounds.ttl > 0) || !Number.isFinite(bounds.ttl)) {
    throw new RangeError(`history ttl must be a number of seconds above 0, not ${bounds.ttl}`);
  }
}

/** Throws a RangeError, saying what is allowed, when `publication` cannot be kept. */
export function checkPublication(publication: Publication): void {
  const { id, ts } = publication;
  if (!Number.isSafeInteger(id) || id < 1) {
    throw new RangeError(`a publication id must be a positive safe integer, not ${id}`);
  }
  if (!Number.isFinite(ts)) {
    throw new RangeError(`publication ${id}: ts must be milliseconds since the epoch, not ${ts}`);
  }
}

/** Throws a RangeError, saying what is allowed, when `since` and `limit` cannot be read. */
export function checkRead(since: number, limit: number): void {
  if (!Number.isSafeInteger(since) || since < 0) {
    throw new RangeError(`since must be a message id, a whole number 0 or more, not ${since}`);
  }
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be a whole number 1 or more, not ${limit}`);
  }
}
