/**
 * Webhook events: what the server tells the backend about who came, who left and what clients
 * said (README: Webhooks). The hub and the uid presence debounce (webhook/uids.ts) make them; a
 * sink takes them (the deliverer, webhook/deliverer.ts, which keeps them in its outbox and POSTs
 * them, signed) and never makes the caller wait.
 */
import { randomUUID } from "node:crypto";

/** Every event type, as WEBHOOK_EVENTS names them. */
export const WEBHOOK_TYPES = [
  "uid.online",
  "uid.offline",
  "client.connect",
  "client.disconnect",
  "group.join",
  "group.leave",
  "group.created",
  "group.vacated",
  "message.client",
  "message.undelivered",
  "message.acked",
] as const;
export type WebhookType = (typeof WEBHOOK_TYPES)[number];

/** WEBHOOK_EVENTS's default: all but `message.acked`, which comes once per message and uid. */
export const DEFAULT_WEBHOOK_TYPES: readonly WebhookType[] = WEBHOOK_TYPES.filter((t) =>
  t !== "message.acked"
);

/** One event, as it is POSTed (in `{"events":[…]}`). */
export interface WebhookEvent {
  /** Unique: a UUID. A receiver that sees one twice (a retry) can drop it. */
  id: string;
  type: string;
  /** When it happened, ms since the epoch. */
  ts: number;
  /** On every uid event, and on client events of a bound connection. */
  uid?: string;
  /** The client id, on client events. */
  client?: string;
  /** On group events. */
  group?: string;
  [field: string]: unknown;
}

/** What takes events: it must return at once and never throw. */
export interface WebhookSink {
  emit(event: WebhookEvent): void;
}

/** An event of `type` now, with `fields` (which cannot replace its `id`, `type` or `ts`). */
export function webhookEvent(type: WebhookType, fields: Record<string, unknown>): WebhookEvent {
  return { ...fields, id: randomUUID(), type, ts: Date.now() };
}

/** A sink that passes on only the `types` chosen (WEBHOOK_EVENTS) to `sink`. */
export function filtered(sink: WebhookSink, types: readonly string[]): WebhookSink {
  const chosen = new Set(types);
  return {
    emit(event) {
      if (chosen.has(event.type)) sink.emit(event);
    },
  };
}
