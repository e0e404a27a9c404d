/**
 * One socket's life after the upgrade: the optional auth frame, the inbound limits, the token's
 * expiry and its refresh, then a hub client until it closes. The HTTP side of /ws (checks before
 * the upgrade) is in server.ts.
 *
 * A socket is in one state at a time: `opening` (upgraded, not open yet), `authenticating`
 * (an ?auth=frame socket waiting for its auth frame, with a deadline), `open` (a hub client), or
 * `closed`. Every move between them is made in this file, and `closed` is final.
 */
import { type Authenticator, AuthError, type Identity } from "./authenticator.ts";
import { type Client, CloseCode, closeReason, type Format } from "./client.ts";
import type { Config } from "./config.ts";
import type { Hub } from "./hub.ts";
import { utf8Length } from "./message/message.ts";
import type { Metrics } from "./metrics.ts";
import { Bucket } from "./ratelimit.ts";
import type { ClientMessageGate } from "./webhook/gate.ts";
import { answerFrame, errorFrame } from "./frames.ts";
import { permissionsOf } from "./permissions.ts";
import type { Socket, SocketHandlers } from "./runtime/contract.ts";

export type { SocketHandlers };

/** What every connection shares: the hub, the settings, and the gauges of sockets not in the hub. */
export interface ConnectionDeps {
  config: Config;
  hub: Hub;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Sockets waiting for their auth frame, counted up and down here. */
  unauthenticated: { count: number };
  /** Every open socket's way to be closed (shutdown closes them all); each removes its own. */
  open: Set<Closable>;
  /** Called exactly once when the socket has closed, whatever closed it, even if it never opened. */
  onClosed(): void;
  /** CLIENT_MESSAGE_HOOK's gate, for the socket's publish and send frames. */
  gate?: ClientMessageGate;
}

/** A socket as shutdown sees it. */
export interface Closable {
  close(code: number, reason: string): void;
}

/** setTimeout's longest delay; a later expiry is checked again after this long. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** How a connection starts: with an identity from the handshake, or waiting for an auth frame. */
export interface ConnectionStart {
  identity?: Identity;
  format: Format;
  presence: boolean;
  /**
   * The last message id the client saw (`since` in the query, or in the auth frame): it resumes
   * after it, when history is kept.
   */
  since?: number;
}

/** Where a socket is in its life; see the file's comment. */
type State =
  | { name: "opening" }
  | {
    name: "authenticating";
    socket: Socket;
    deadline: ReturnType<typeof setTimeout>;
    /** The auth frame's token is being checked; later frames wait for the outcome. */
    verifying: boolean;
  }
  | { name: "open"; socket: Socket; client: Client }
  | { name: "closed" };

/** The handlers for one socket. */
export function connection(deps: ConnectionDeps, start: ConnectionStart): SocketHandlers {
  const { config, hub, metrics, authenticator } = deps;
  const { format, presence } = start;
  let since = start.since;
  const frames = new Bucket(config.maxFramesPerSecond);
  let state: State = { name: "opening" };
  let expiryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Auth frames received after the connection opened, and the newest whose check has applied. */
  let refreshesStarted = 0;
  let refreshApplied = 0;
  const closable: Closable = { close: (code, reason) => close(code, reason) };

  /** Leaves `authenticating`: its deadline and its place in the gauge go. */
  const stopWaiting = () => {
    if (state.name !== "authenticating") return;
    clearTimeout(state.deadline);
    deps.unauthenticated.count--;
  };

  /** Closes with `code`: through the hub once the socket is a client, directly before. */
  const close = (code: number, reason: string) => {
    clearTimeout(expiryTimer);
    if (state.name === "open") return hub.close(state.client, code, reason);
    if (state.name !== "authenticating") return;
    stopWaiting();
    const { socket } = state;
    state = { name: "closed" };
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

  /**
   * Registers the verified socket with the hub, unless its uid already has all it may: on this
   * node, or `anywhere` (the cluster's count, when it was asked).
   */
  const admit = (socket: Socket, who: Identity, anywhere = 0) => {
    const cap = config.maxConnectionsPerUid;
    if (cap > 0 && Math.max(anywhere, hub.connectionsOf(who.uid)) >= cap) {
      state = { name: "closed" };
      try {
        socket.close(CloseCode.tooManyForUid.code, CloseCode.tooManyForUid.reason);
      } catch {
        // Already closed.
      }
      return;
    }
    state = { name: "open", socket, client: hub.connect(who, format, socket, presence, since) };
    expireAt(who.exp);
  };

  /** The first frame of an `auth=frame` socket. */
  const authenticate = async (token: string | undefined) => {
    if (state.name !== "authenticating") return;
    if (token === undefined) {
      return close(CloseCode.authExpected.code, CloseCode.authExpected.reason);
    }
    state.verifying = true;
    let who: Identity;
    try {
      who = await authenticator.verify(token);
    } catch (err) {
      metrics.authFailures++;
      return close(
        CloseCode.authFailed.code,
        err instanceof AuthError ? err.message : "token invalid",
      );
    }
    // The cluster's count; this node's alone when the registry cannot answer now.
    const anywhere = config.maxConnectionsPerUid > 0
      ? await hub.connectionsAnywhere(who.uid).catch(() => 0)
      : 0;
    if (state.name !== "authenticating") return; // timed out or closed meanwhile
    const { socket } = state;
    stopWaiting();
    admit(socket, who, anywhere);
  };

  /**
   * A fresh token for a connected client: same uid, later expiry; the connection keeps all. Checks
   * may finish out of order: only a check newer than the last applied one changes the expiry.
   */
  const refresh = async (current: Client, token: string | undefined) => {
    if (token === undefined) return current.control(errorFrame("auth frame needs a token"));
    const seq = ++refreshesStarted;
    try {
      const who = await authenticator.verify(token);
      if (current.closed) return; // it went while the token was checked
      if (who.uid !== current.uid) {
        return current.control(errorFrame("a refreshed token must carry the same uid"));
      }
      if (seq < refreshApplied) {
        return current.control(errorFrame("a later auth frame superseded this one"));
      }
      refreshApplied = seq;
      expireAt(who.exp);
      current.permissions = permissionsOf(who.permissions);
      current.control(JSON.stringify({ type: "auth", ok: true, exp: who.exp ?? null }));
    } catch (err) {
      metrics.authFailures++;
      current.control(errorFrame(err instanceof AuthError ? err.message : "token invalid"));
    }
  };

  return {
    open(socket) {
      deps.open.add(closable);
      if (start.identity) return admit(socket, start.identity);
      deps.unauthenticated.count++;
      state = {
        name: "authenticating",
        socket,
        verifying: false,
        deadline: setTimeout(() => {
          metrics.authFailures++;
          close(CloseCode.authTimeout.code, CloseCode.authTimeout.reason);
        }, config.authTimeout * 1000),
      };
    },
    ping() {
      // Answered by the runtime, but a frame all the same: a ping flood costs like any other.
      if (!frames.take()) close(CloseCode.tooManyFrames.code, CloseCode.tooManyFrames.reason);
    },
    message(data) {
      if (!frames.take()) {
        return close(CloseCode.tooManyFrames.code, CloseCode.tooManyFrames.reason);
      }
      if (typeof data !== "string") {
        return close(CloseCode.unsupportedData.code, CloseCode.unsupportedData.reason);
      }
      // `data.length` counts UTF-16 units; one unit is at most 3 UTF-8 bytes, so count the bytes
      // exactly only when the frame could be over MAX_FRAME_BYTES.
      if (data.length * 3 > config.maxFrameBytes && utf8Length(data) > config.maxFrameBytes) {
        return close(CloseCode.tooBig.code, CloseCode.tooBig.reason);
      }
      if (state.name === "authenticating") {
        if (state.verifying) return;
        const frame = authFrame(data);
        // A `since` in the auth frame counts when the query had none.
        since ??= frame?.since;
        authenticate(frame?.token);
        return;
      }
      if (state.name !== "open") return;
      const { client } = state;
      if (data === "ping") return void client.control("pong");
      if (format === "json") answerFrame(client, data, { hub, config, refresh, gate: deps.gate });
    },
    close(code, reason) {
      clearTimeout(expiryTimer);
      if (state.name === "open") hub.disconnected(state.client, code, reason);
      else stopWaiting();
      state = { name: "closed" };
      deps.open.delete(closable);
      deps.onClosed();
    },
    drain() {
      if (state.name === "open") state.client.drain();
    },
  };
}

/**
 * The token (and `since`, a message id, if it has one) of an `{"type":"auth","token":"…"}` frame;
 * undefined for any other frame. A `since` that is not a whole number is left out.
 */
function authFrame(data: string): { token: string; since?: number } | undefined {
  try {
    const frame = JSON.parse(data);
    if (frame?.type !== "auth" || typeof frame.token !== "string") return undefined;
    const since = Number.isSafeInteger(frame.since) && frame.since >= 0 ? frame.since : undefined;
    return { token: frame.token, since };
  } catch {
    return undefined;
  }
}
