/**
 * `uid.online` and `uid.offline`, debounced: a uid's first connection makes it online, its last
 * one closing makes it offline only if none comes back within WEBHOOK_OFFLINE_DELAY, so that a page
 * reload is no offline-online pair. The hub tells it when a uid's connections go from none to one
 * (`up`) and from one to none (`down`).
 *
 * Invariant: a uid has a timer here exactly while it is down and its `uid.offline` is not yet
 * told; the backend has been told `uid.online` for every uid that is up or has a timer.
 */
import { webhookEvent, type WebhookSink } from "./events.ts";

/** WEBHOOK_OFFLINE_DELAY's default, in milliseconds. */
export const DEFAULT_OFFLINE_DELAY_MS = 5_000;

/** The debounce of one node's uids. */
export class UidHooks {
  readonly #sink: WebhookSink;
  readonly #delayMs: number;
  /** uid → the timer that tells its `uid.offline`. */
  readonly #leaving = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(sink: WebhookSink, delayMs = DEFAULT_OFFLINE_DELAY_MS) {
    this.#sink = sink;
    this.#delayMs = delayMs;
  }

  /** `uid` has a connection again (its first, or the first since `down`). */
  up(uid: string): void {
    const leaving = this.#leaving.get(uid);
    if (leaving !== undefined) {
      // Back within the delay: the backend never knew it was gone.
      clearTimeout(leaving);
      this.#leaving.delete(uid);
      return;
    }
    this.#sink.emit(webhookEvent("uid.online", { uid }));
  }

  /** `uid`'s last connection closed. */
  down(uid: string): void {
    if (this.#leaving.has(uid)) return;
    const timer = setTimeout(() => {
      this.#leaving.delete(uid);
      this.#sink.emit(webhookEvent("uid.offline", { uid }));
    }, this.#delayMs);
    this.#leaving.set(uid, timer);
  }

  /** Tells now every `uid.offline` still waiting (at shutdown: the uids are gone). */
  flush(): void {
    for (const [uid, timer] of this.#leaving) {
      clearTimeout(timer);
      this.#sink.emit(webhookEvent("uid.offline", { uid }));
    }
    this.#leaving.clear();
  }
}
