/**
 * Counters for /metrics, in the Prometheus text format. Gauges are read from their owners when
 * scraped, so they cannot drift; counters only ever grow.
 */

import type { MessageLogStats } from "./message/logger.ts";

/** The exposition format's content type (Prometheus text format 0.0.4). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** The methods counted under their own name in http_requests_total. */
export const HTTP_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
]);

import { LATENCY_BUCKETS_SECONDS, type WebhookStats } from "./webhook/deliverer.ts";

/** Values read at scrape time from whoever owns them. */
export interface Gauges {
  connections: number;
  users: number;
  pending: number;
  unauthenticated: number;
  /** A cluster node's view of its cluster; absent for a single node. */
  cluster?: { node: string; nodes: number; lagSeconds: number };
  /** Webhook delivery (WEBHOOK_URL); absent without it. */
  webhooks?: WebhookStats;
}

/** Process-wide counters. No label ever holds a uid, a token or a raw path. */
export class Metrics {
  messagesAccepted = 0;
  messagesOffline = 0;
  messagesQueued = 0;
  messagesAcked = 0;
  messagesSent = 0;
  messagesFailed = 0;
  messagesDropped = 0;
  slowConsumers = 0;
  authFailures = 0;
  presenceSuppressed = 0;
  sqliteCheckpoints = 0;
  sqliteCheckpointErrors = 0;
  /** method → route → status → count; nested, so counting a request builds no string. */
  readonly #http = new Map<string, Map<string, Map<number, number>>>();

  /**
   * `messageLog` is read at each scrape for the message_log_* samples (all 0 without it); it may be
   * set once the log is open.
   */
  constructor(public messageLog?: { stats?(): MessageLogStats }) {}

  /**
   * Counts one HTTP response; `route` is the matched route pattern, never the raw path. Methods
   * outside HTTP_METHODS count as `other`, so no caller can add series: every label has a bounded
   * set of values (the methods, the app's routes, the status codes).
   */
  httpRequest(rawMethod: string, route: string, status: number): void {
    const method = HTTP_METHODS.has(rawMethod) ? rawMethod : "other";
    let routes = this.#http.get(method);
    if (!routes) this.#http.set(method, routes = new Map());
    let statuses = routes.get(route);
    if (!statuses) routes.set(route, statuses = new Map());
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }

  /** The exposition text. `connections` and `pending` keep go-pusher's names. */
  render(gauges: Gauges): string {
    const out: string[] = [];
    const one = (name: string, type: string, help: string, value: number) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
    };
    one("connections", "gauge", "Open authenticated WebSocket connections.", gauges.connections);
    one("users", "gauge", "Distinct uids with at least one connection.", gauges.users);
    one("pending", "gauge", "Frames queued behind backed-up sockets.", gauges.pending);
    one(
      "connections_unauthenticated",
      "gauge",
      "Sockets still waiting for their auth frame.",
      gauges.unauthenticated,
    );
    if (gauges.webhooks) this.#renderWebhooks(out, gauges.webhooks);
    if (gauges.cluster) {
      const node = gauges.cluster.node.replace(/[\\"\n]/g, "_");
      out.push(
        "# HELP cluster_node_info This node's name in its cluster (NODE_NAME), as a label.",
        "# TYPE cluster_node_info gauge",
        `cluster_node_info{node="${node}"} 1`,
      );
      one(
        "cluster_nodes",
        "gauge",
        "Nodes of the cluster whose heartbeat is current (Redis's count; the last known while " +
          "Redis cannot answer).",
        gauges.cluster.nodes,
      );
      one(
        "cluster_pubsub_lag_seconds",
        "gauge",
        "Time from a publish on any node to its arrival here, for the last one received.",
        gauges.cluster.lagSeconds,
      );
    }
    one(
      "messages_accepted_total",
      "counter",
      "Messages accepted by /send and the /api sends.",
      this.messagesAccepted,
    );
    one(
      "messages_offline_total",
      "counter",
      "Messages whose target had no connection.",
      this.messagesOffline,
    );
    one(
      "messages_queued_total",
      "counter",
      "Messages to an offline uid kept in the mailbox for its next connection (OFFLINE_TTL).",
      this.messagesQueued,
    );
    one(
      "messages_acked_total",
      "counter",
      "Acks from clients recorded: the first per message and uid.",
      this.messagesAcked,
    );
    one("messages_sent_total", "counter", "Pushes written to a connection.", this.messagesSent);
    one("messages_failed_total", "counter", "Pushes whose write threw.", this.messagesFailed);
    one(
      "messages_dropped_total",
      "counter",
      "Pushes dropped from the queue of a closed or slow connection.",
      this.messagesDropped,
    );
    one(
      "slow_consumers_total",
      "counter",
      "Connections cut off for falling behind (close 4008).",
      this.slowConsumers,
    );
    one(
      "auth_failures_total",
      "counter",
      "Refused tokens, at /ws or in auth frames.",
      this.authFailures,
    );
    const log = this.messageLog?.stats?.() ??
      { writeErrors: 0, rejected: 0, dropped: 0, backlog: 0, backlogBytes: 0 };
    one(
      "message_log_write_errors_total",
      "counter",
      "Message log flushes the store refused, in part or in whole; each is retried.",
      log.writeErrors,
    );
    one(
      "message_log_rejected_total",
      "counter",
      "Message log records and status changes the store refuses alone (a constraint); given up.",
      log.rejected,
    );
    one(
      "message_log_dropped_total",
      "counter",
      "Message log records and status changes not kept: the backlog was full, or shutdown came.",
      log.dropped,
    );
    one(
      "message_log_backlog",
      "gauge",
      "Message log records and status changes waiting to be written.",
      log.backlog,
    );
    one(
      "message_log_backlog_bytes",
      "gauge",
      "Estimated memory held by the message log's backlog, in bytes.",
      log.backlogBytes,
    );
    one(
      "presence_events_suppressed_total",
      "counter",
      "Join and leave events not sent because the group had more than MAX_PRESENCE_MEMBERS.",
      this.presenceSuppressed,
    );
    one(
      "sqlite_checkpoints_total",
      "counter",
      "Checkpoints of the SQLite files' write-ahead logs, run off the event loop.",
      this.sqliteCheckpoints,
    );
    one(
      "sqlite_checkpoint_errors_total",
      "counter",
      "Checkpoints that failed (each is also a line on stderr).",
      this.sqliteCheckpointErrors,
    );
    out.push(
      "# HELP http_requests_total HTTP responses by method, route and status.",
      "# TYPE http_requests_total counter",
    );
    for (const [method, routes] of this.#http) {
      for (const [route, statuses] of routes) {
        for (const [status, value] of statuses) {
          out.push(
            `http_requests_total{method="${method}",route="${route}",status="${status}"} ${value}`,
          );
        }
      }
    }
    return out.join("\n") + "\n";
  }

  /** The webhook_* samples. */
  #renderWebhooks(out: string[], stats: WebhookStats): void {
    const head = (name: string, type: string, help: string) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    head("webhook_events_total", "counter", "Webhook events made, by type.");
    for (const [type, count] of Object.entries(stats.emitted)) {
      out.push(`webhook_events_total{type="${type}"} ${count}`);
    }
    const one = (name: string, type: string, help: string, value: number) => {
      head(name, type, help);
      out.push(`${name} ${value}`);
    };
    one(
      "webhook_delivered_total",
      "counter",
      "Webhook events a receiver accepted.",
      stats.delivered,
    );
    one(
      "webhook_failures_total",
      "counter",
      "Webhook POSTs that got no 2xx (a status, a network error, no answer in time).",
      stats.failures,
    );
    one("webhook_outbox", "gauge", "Webhook events waiting in the outbox.", stats.outbox);
    one(
      "webhook_dropped_total",
      "counter",
      "Webhook events dropped, the oldest first, to keep the outbox within its bound.",
      stats.dropped,
    );
    one(
      "webhook_expired_total",
      "counter",
      "Webhook events dropped because no receiver took them within WEBHOOK_MAX_AGE.",
      stats.expired,
    );
    head(
      "webhook_delivery_seconds",
      "histogram",
      "Time from a webhook event to its receiver's 2xx.",
    );
    LATENCY_BUCKETS_SECONDS.forEach((le, i) =>
      out.push(`webhook_delivery_seconds_bucket{le="${le}"} ${stats.latency.buckets[i]}`)
    );
    out.push(
      `webhook_delivery_seconds_bucket{le="+Inf"} ${stats.latency.count}`,
      `webhook_delivery_seconds_sum ${stats.latency.sum}`,
      `webhook_delivery_seconds_count ${stats.latency.count}`,
    );
  }
}
