/**
 * The client-message gate (CLIENT_MESSAGE_HOOK): a client's `publish` or `send` frame, once its
 * permission is checked, is POSTed to the backend first, signed as the webhooks are, and delivered
 * only if the backend answers 2xx. A 2xx may rewrite the message (`{"data":"…"}`); anything else,
 * or no answer within the timeout, refuses the frame with an `error` the client reads. This is how
 * a backend moderates a chat.
 */
import { SIGNATURE_HEADER, signatureHeader } from "./signature.ts";
import { webhookEvent } from "./events.ts";

/** CLIENT_MESSAGE_HOOK_TIMEOUT's default, in milliseconds: a chat message may wait this long. */
export const DEFAULT_GATE_TIMEOUT_MS = 2_000;

/** Longest answer body read from the backend, in bytes: a rewritten message and some room. */
const MAX_ANSWER_BYTES = 1024 * 1024;

/** A client's own message, as the gate is asked about it. */
export interface ClientMessage {
  uid: string;
  client: string;
  /** The room of a `publish` frame. */
  group?: string;
  /** The uid of a `send` frame. */
  to?: string;
  data: string;
}

/** The backend's word: deliver `data` (the client's, or the backend's rewrite), or refuse. */
export type GateDecision = { ok: true; data: string } | { ok: false; error: string };

/** What a gate is built from. */
export interface GateOptions {
  url: string;
  /** WEBHOOK_SECRET: signs the POST as the webhooks are. */
  secret: string;
  /** Milliseconds the backend has to answer. Default DEFAULT_GATE_TIMEOUT_MS. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** Asks the backend about each client message. */
export class ClientMessageGate {
  readonly #url: string;
  readonly #secret: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: GateOptions) {
    this.#url = options.url;
    this.#secret = options.secret;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_GATE_TIMEOUT_MS;
    this.#fetch = options.fetch ?? fetch;
  }

  /**
   * POSTs `message` as one `message.client` event (`{"events":[…]}`, as the webhooks send them)
   * and answers the backend's decision. Never throws: a failure is a refusal, in words for the
   * client (which never sees the backend's URL).
   */
  async check(message: ClientMessage): Promise<GateDecision> {
    const body = JSON.stringify({ events: [webhookEvent("message.client", { ...message })] });
    let res: Response;
    try {
      res = await this.#fetch(this.#url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          [SIGNATURE_HEADER]: signatureHeader(this.#secret, body),
        },
        body,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const late = err instanceof DOMException && err.name === "TimeoutError";
      return {
        ok: false,
        error: late
          ? `the backend did not answer within ${this.#timeoutMs} ms (CLIENT_MESSAGE_HOOK)`
          : "the backend cannot be reached (CLIENT_MESSAGE_HOOK)",
      };
    }
    const text = await res.text().catch(() => "");
    let answer: { data?: unknown; error?: unknown } = {};
    if (text.length > 0 && text.length <= MAX_ANSWER_BYTES) {
      try {
        const parsed = JSON.parse(text);
        if (typeof parsed === "object" && parsed !== null) answer = parsed;
      } catch {
        // Not JSON: the status alone decides.
      }
    }
    if (res.status < 200 || res.status > 299) {
      const why = typeof answer.error === "string" ? `: ${answer.error.slice(0, 200)}` : "";
      return { ok: false, error: `refused by the backend (${res.status})${why}` };
    }
    return { ok: true, data: typeof answer.data === "string" ? answer.data : message.data };
  }
}
