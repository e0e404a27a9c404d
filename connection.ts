/**
 * One socket's life after the upgrade: the optional auth frame, the inbound limits, the token's
 * expiry and its refresh, then a hub client until it closes. The HTTP side of /ws (checks before
 * the upgrade) is in server.ts.
 */
import { type Authenticator, AuthError, type Identity } from "./authenticator.ts";
import { type Client, CloseCode, closeReason, type Format, type Socket } from "./client.ts";
import type { Config } from "./config.ts";
import type { Hub } from "./hub.ts";
import { utf8Length } from "./message/message.ts";
import type { Metrics } from "./metrics.ts";
import { Bucket } from "./ratelimit.ts";

/** What a runtime adapter calls as a socket's life goes on. */
export interface SocketHandlers {
  open(socket: Socket): void;
  /** A text frame arrives as a string, a binary one as bytes. */
  message(data: string | Uint8Array): void;
  close(code: number, reason: string): void;
  /** The runtime's buffer for the socket emptied (Bun has this event; Deno does not). */
  drain(): void;
}

/** What every connection shares: the hub, the settings, and the gauges of sockets not in the hub. */
export interface ConnectionDeps {
  config: Config;
  hub: Hub;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Sockets waiting for their auth frame, counted up and down here. */
  unauthenticated: { count: number };
  /** Called once when the socket has closed, whatever closed it. */
  onClosed(): void;
}

/** setTimeout's longest delay; a later expiry is checked again after this long. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** How a connection starts: with an identity from the handshake, or waiting for an auth frame. */
export interface ConnectionStart {
  identity?: Identity;
  format: Format;
  presence: boolean;
}

/** The handlers for one socket. */
export function connection(deps: ConnectionDeps, start: ConnectionStart): SocketHandlers {
  const { config, hub, metrics, authenticator } = deps;
  const { format, presence } = start;
  const frames = new Bucket(config.maxFramesPerSecond);
  let client: Client | undefined;
  let socket: Socket;
  let authTimer: ReturnType<typeof setTimeout> | undefined;
  let expiryTimer: ReturnType<typeof setTimeout> | undefined;
  let verifying = false;

  /** The socket stops waiting for its auth frame, whatever the outcome. Idempotent. */
  const stopWaiting = () => {
    if (authTimer === undefined) return;
    clearTimeout(authTimer);
    authTimer = undefined;
    deps.unauthenticated.count--;
  };

  /** Closes with `code`: through the hub once the socket is a client, directly before. */
  const close = (code: number, reason: string) => {
    stopWaiting();
    clearTimeout(expiryTimer);
    if (client) return hub.close(client, code, reason);
    try {
      socket.close(code, closeReason(reason));
    } catch {
      // Already closed.
    }
  };

  /** Closes with 4004 when the token expires, unless a refresh moves the expiry first. */
  const expireAt = (exp: number | undefined) => {
    clearTimeout(expiryTimer);
    if (exp === undefined) return;
    const ms = exp * 1000 - Date.now();
    expiryTimer = setTimeout(
      () =>
        ms > MAX_TIMER_MS
          ? expireAt(exp)
          : close(CloseCode.tokenExpired.code, CloseCode.tokenExpired.reason),
      Math.max(0, Math.min(ms, MAX_TIMER_MS)),
    );
  };

  /** Registers the verified socket with the hub, unless its uid already has all it may. */
  const admit = (who: Identity) => {
    const cap = config.maxConnectionsPerUid;
    if (cap > 0 && hub.connectionsOf(who.uid) >= cap) {
      return close(CloseCode.tooManyForUid.code, CloseCode.tooManyForUid.reason);
    }
    client = hub.connect(who, format, socket, presence);
    expireAt(who.exp);
  };

  /** The first frame of an `auth=frame` socket. */
  const authenticate = async (token: string | undefined) => {
    if (token === undefined) {
      return close(CloseCode.authExpected.code, CloseCode.authExpected.reason);
    }
    verifying = true;
    try {
      const who = await authenticator.verify(token);
      if (authTimer === undefined) return; // timed out or closed meanwhile
      stopWaiting();
      admit(who);
    } catch (err) {
      metrics.authFailures++;
      close(CloseCode.authFailed.code, err instanceof AuthError ? err.message : "token invalid");
    } finally {
      verifying = false;
    }
  };

  /** A fresh token for a connected client: same uid, later expiry; the connection keeps all. */
  const refresh = async (current: Client, token: string | undefined) => {
    if (token === undefined) return current.control(errorFrame("auth frame needs a token"));
    try {
      const who = await authenticator.verify(token);
      if (current.closed) return; // it went while the token was checked
      if (who.uid !== current.uid) {
        return current.control(errorFrame("a refreshed token must carry the same uid"));
      }
      expireAt(who.exp);
      current.control(JSON.stringify({ type: "auth", ok: true, exp: who.exp ?? null }));
    } catch (err) {
      metrics.authFailures++;
      current.control(errorFrame(err instanceof AuthError ? err.message : "token invalid"));
    }
  };

  return {
    open(s) {
      socket = s;
      if (start.identity) return admit(start.identity);
      deps.unauthenticated.count++;
      authTimer = setTimeout(() => {
        metrics.authFailures++;
        close(CloseCode.authTimeout.code, CloseCode.authTimeout.reason);
      }, config.authTimeout * 1000);
    },
    message(data) {
      if (!frames.take()) {
        return close(CloseCode.tooManyFrames.code, CloseCode.tooManyFrames.reason);
      }
      if (typeof data !== "string") {
        return close(CloseCode.unsupportedData.code, CloseCode.unsupportedData.reason);
      }
      // A UTF-16 unit is at most 3 UTF-8 bytes: count exactly only when it could matter.
      if (data.length * 3 > config.maxFrameBytes && utf8Length(data) > config.maxFrameBytes) {
        return close(CloseCode.tooBig.code, CloseCode.tooBig.reason);
      }
      if (!client) {
        if (!verifying) authenticate(authToken(data));
        return;
      }
      if (data === "ping") return void client.control("pong");
      if (format === "json") answerJson(client, data, refresh);
    },
    close() {
      clearTimeout(expiryTimer);
      if (client) hub.disconnected(client);
      else stopWaiting();
      deps.onClosed();
    },
    drain() {
      client?.drain();
    },
  };
}

/** The token of an `{"type":"auth","token":"…"}` frame, or undefined for any other frame. */
function authToken(data: string): string | undefined {
  try {
    const frame = JSON.parse(data);
    return frame?.type === "auth" && typeof frame.token === "string" ? frame.token : undefined;
  } catch {
    return undefined;
  }
}

function errorFrame(error: string): string {
  return JSON.stringify({ type: "error", error });
}

/**
 * Answers a json-format client's control frame: `{"type":"ping"}` gets `{"type":"pong"}`, an
 * auth frame refreshes the token; anything else gets an `error` frame and the connection stays.
 */
function answerJson(
  client: Client,
  data: string,
  refresh: (client: Client, token: string | undefined) => void,
): void {
  let frame: { type?: unknown; token?: unknown } | null;
  try {
    frame = JSON.parse(data);
  } catch {
    client.control(errorFrame("frame is not valid JSON"));
    return;
  }
  const type = frame?.type;
  if (type === "ping") client.control('{"type":"pong"}');
  else if (type === "auth") {
    refresh(client, typeof frame?.token === "string" ? frame.token : undefined);
  } else client.control(errorFrame(`unknown frame type: ${String(type).slice(0, 64)}`));
}
