/**
 * File-descriptor budget. A process here may open a fixed number of files, and a server that runs
 * out of descriptors cannot even accept the connection that would tell a client to go away. So the
 * connection cap sits below the limit, with a reserve for listeners, the SQLite file and HTTP
 * requests in flight.
 */
import { readFileSync } from "node:fs";

/** Descriptors kept back from the cap: at least this many, or 5% of the limit if that is more. */
export const DESCRIPTOR_RESERVE = 512;

/** Used when the limit cannot be read (no /proc): a conservative cap. */
export const FALLBACK_MAX_CONNECTIONS = 10_000;

/** The soft "Max open files" limit of this process, or undefined where /proc is not there. */
export function openFileLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!match || match[1] === "unlimited") return undefined;
  return Number(match[1]);
}

/** The cap for MAX_CONNECTIONS=auto: `limit` (see openFileLimit) minus the reserve. */
export function autoMaxConnections(limit: number | undefined): number {
  if (limit === undefined) return FALLBACK_MAX_CONNECTIONS;
  const reserve = Math.max(DESCRIPTOR_RESERVE, Math.ceil(limit * 0.05));
  return Math.max(1, limit - reserve);
}

/**
 * Descriptors kept back from the TCP connection cap: the listener, the data directory's files
 * (SQLite keeps three), standard streams, and connections accepted in one burst before the server
 * closes those past the cap. Half the connection cap's reserve, so that HTTP requests keep the
 * other half while every WebSocket slot is taken.
 */
export const TCP_RESERVE = DESCRIPTOR_RESERVE / 2;

/**
 * The most TCP connections of every kind (WebSockets, HTTP, connections that have sent nothing)
 * the server keeps open with `limit` descriptors; undefined when the limit is unknown.
 */
export function maxTcpConnections(limit: number | undefined): number | undefined {
  if (limit === undefined) return undefined;
  return Math.max(1, limit - TCP_RESERVE);
}
