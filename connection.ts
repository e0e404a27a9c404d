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
  /** Where connections whose token expires later than NEAR_EXPIRY_MS wait (one per app). */
  expiries: ExpiryWatch;
}

/** A socket as shutdown sees it. */
export interface Closable {
  /** Closes the socket with `code`: through the hub once it is a client. */
  shut(code: number, reason: string): void;
}

/**
 * A token that expires within this many milliseconds gets a timer of its own, which closes its
 * socket on the second; one that expires later waits in the app's ExpiryWatch until it is this
 * near.
 */
export const NEAR_EXPIRY_MS = 60_000;

/**
 * The connections whose token expires later than NEAR_EXPIRY_MS from now: nearly all of them, for
 * tokens live for hours. A timer per connection costs about 300 bytes in Bun (the Timeout and its
 * callback) and holds a slot in the runtime's timer heap; an entry in this Set costs a tenth of it.
 * Every half of NEAR_EXPIRY_MS the watch gives the ones whose expiry came near their own timer. Its
 * own timer runs only while it holds a connection, as theirs would.
 */
export class ExpiryWatch {
  readonly #waiting = new Set<Connection>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `nearMs`: NEAR_EXPIRY_MS but in tests, which cannot wait a minute. */
  constructor(readonly nearMs = NEAR_EXPIRY_MS) {}

  add(connection: Connection): void {
    this.#waiting.add(connection);
    this.#timer ??= setTimeout(() => this.#sweep(), this.nearMs / 2);
  }

  delete(connection: Connection): void {
    if (!this.#waiting.delete(connection) || this.#waiting.size > 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #sweep(): void {
    this.#timer = undefined;
    const near = Date.now() + this.nearMs;
    for (const connection of [...this.#waiting]) {
      if (connection.expiresBy(near)) {
        this.#waiting.delete(connection);
        connection.armExpiry();
      }
    }
    if (this.#waiting.size > 0) this.#timer = setTimeout(() => this.#sweep(), this.nearMs / 2);
  }
}

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
  return new Connection(deps, start);
}

/**
 * One socket's handlers and state. A class rather than closures: every open socket holds one, and
 * methods on the prototype cost a connection nothing, where a dozen closures cost it a kilobyte.
 */
export class Connection implements SocketHandlers, Closable {
  readonly #deps: ConnectionDeps;
  readonly #format: Format;
  readonly #presence: boolean;
  /** The handshake's identity until the socket opens (then the client holds what it needs). */
  #identity: Identity | undefined;
  #since: number | undefined;
  readonly #frames: Bucket;
  #state: State = { name: "opening" };
  /** The token's `exp` (seconds since the epoch), and its timer once it is near. */
  #exp: number | undefined;
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Auth frames received after the connection opened, and the newest whose check has applied. */
  #refreshesStarted = 0;
  #refreshApplied = 0;

  constructor(deps: ConnectionDeps, start: ConnectionStart) {
    this.#deps = deps;
    this.#format = start.format;
    this.#presence = start.presence;
    this.#identity = start.identity;
    this.#since = start.since;
    this.#frames = new Bucket(deps.config.maxFramesPerSecond);
  }

  open(socket: Socket): void {
    const deps = this.#deps;
    deps.open.add(this);
    const identity = this.#identity;
    this.#identity = undefined;
    if (identity) return this.#admit(socket, identity);
    deps.unauthenticated.count++;
    this.#state = {
      name: "authenticating",
      socket,
      verifying: false,
      deadline: setTimeout(() => {
        deps.metrics.authFailures++;
        this.shut(CloseCode.authTimeout.code, CloseCode.authTimeout.reason);
      }, deps.config.authTimeout * 1000),
    };
  }

  ping(): void {
    // Answered by the runtime, but a frame all the same: a ping flood costs like any other.
    if (!this.#frames.take()) {
      this.shut(CloseCode.tooManyFrames.code, CloseCode.tooManyFrames.reason);
    }
  }

  message(data: string | Uint8Array): void {
    const { config } = this.#deps;
    if (!this.#frames.take()) {
      return this.shut(CloseCode.tooManyFrames.code, CloseCode.tooManyFrames.reason);
    }
    if (typeof data !== "string") {
      return this.shut(CloseCode.unsupportedData.code, CloseCode.unsupportedData.reason);
    }
    // `data.length` counts UTF-16 units; one unit is at most 3 UTF-8 bytes, so count the bytes
    // exactly only when the frame could be over MAX_FRAME_BYTES.
    if (data.length * 3 > config.maxFrameBytes && utf8Length(data) > config.maxFrameBytes) {
      return this.shut(CloseCode.tooBig.code, CloseCode.tooBig.reason);
    }
    const state = this.#state;
    if (state.name === "authenticating") {
      if (state.verifying) return;
      const frame = authFrame(data);
      // A `since` in the auth frame counts when the query had none.
      this.#since ??= frame?.since;
      this.#authenticate(frame?.token);
      return;
    }
    if (state.name !== "open") return;
    const { client } = state;
    if (data === "ping") return void client.control("pong");
    if (this.#format === "json") {
      answerFrame(client, data, {
        hub: this.#deps.hub,
        config,
        refresh: (current, token) => this.#refresh(current, token),
        gate: this.#deps.gate,
      });
    }
  }

  close(code: number, reason: string): void {
    this.#stopExpiry();
    const state = this.#state;
    if (state.name === "open") this.#deps.hub.disconnected(state.client, code, reason);
    else this.#stopWaiting();
    this.#state = { name: "closed" };
    this.#deps.open.delete(this);
    this.#deps.onClosed();
  }

  drain(): void {
    if (this.#state.name === "open") this.#state.client.drain();
  }

  shut(code: number, reason: string): void {
    this.#stopExpiry();
    const state = this.#state;
    if (state.name === "open") return this.#deps.hub.close(state.client, code, reason);
    if (state.name !== "authenticating") return;
    this.#stopWaiting();
    this.#state = { name: "closed" };
    try {
      state.socket.close(code, closeReason(reason));
    } catch {
      // Already closed.
    }
  }

  /** Leaves `authenticating`: its deadline and its place in the gauge go. */
  #stopWaiting(): void {
    if (this.#state.name !== "authenticating") return;
    clearTimeout(this.#state.deadline);
    this.#deps.unauthenticated.count--;
  }

  /** Whether the token expires at or before `ms` (since the epoch); for ExpiryWatch. */
  expiresBy(ms: number): boolean {
    return this.#exp !== undefined && this.#exp * 1000 <= ms;
  }

  /** Gives a near expiry its own timer, which closes with 4004 at the token's `exp`. */
  armExpiry(): void {
    if (this.#exp === undefined) return;
    this.#expiryTimer = setTimeout(
      () => this.shut(CloseCode.tokenExpired.code, CloseCode.tokenExpired.reason),
      Math.max(0, this.#exp * 1000 - Date.now()),
    );
  }

  /** Forgets the expiry: its timer, or its place in the watch. */
  #stopExpiry(): void {
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    this.#deps.expiries.delete(this);
  }

  /** Closes with 4004 when the token expires, unless a refresh moves the expiry first. */
  #expireAt(exp: number | undefined): void {
    this.#stopExpiry();
    this.#exp = exp;
    if (exp === undefined) return;
    if (exp * 1000 - Date.now() > this.#deps.expiries.nearMs) this.#deps.expiries.add(this);
    else this.armExpiry();
  }

  /**
   * Registers the verified socket with the hub, unless its uid already has all it may: on this
   * node, or `anywhere` (the cluster's count, when it was asked).
   */
  #admit(socket: Socket, who: Identity, anywhere = 0): void {
    const { config, hub } = this.#deps;
    const cap = config.maxConnectionsPerUid;
    if (cap > 0 && Math.max(anywhere, hub.connectionsOf(who.uid)) >= cap) {
      this.#state = { name: "closed" };
      try {
        socket.close(CloseCode.tooManyForUid.code, CloseCode.tooManyForUid.reason);
      } catch {
        // Already closed.
      }
      return;
    }
    const client = hub.connect(who, this.#format, socket, this.#presence, this.#since);
    this.#state = { name: "open", socket, client };
    this.#expireAt(who.exp);
  }

  /** The first frame of an `auth=frame` socket. */
  async #authenticate(token: string | undefined): Promise<void> {
    if (this.#state.name !== "authenticating") return;
    if (token === undefined) {
      return this.shut(CloseCode.authExpected.code, CloseCode.authExpected.reason);
    }
    this.#state.verifying = true;
    const { config, hub, metrics, authenticator } = this.#deps;
    let who: Identity;
    try {
      who = await authenticator.verify(token);
    } catch (err) {
      metrics.authFailures++;
      return this.shut(
        CloseCode.authFailed.code,
        err instanceof AuthError ? err.message : "token invalid",
      );
    }
    // The cluster's count; this node's alone when the registry cannot answer now.
    const anywhere = config.maxConnectionsPerUid > 0
      ? await hub.connectionsAnywhere(who.uid).catch(() => 0)
      : 0;
    const state = this.#state as State; // it may have timed out or closed meanwhile
    if (state.name !== "authenticating") return;
    this.#stopWaiting();
    this.#admit(state.socket, who, anywhere);
  }

  /**
   * A fresh token for a connected client: same uid, later expiry; the connection keeps all. Checks
   * may finish out of order: only a check newer than the last applied one changes the expiry.
   */
  async #refresh(current: Client, token: string | undefined): Promise<void> {
    if (token === undefined) return void current.control(errorFrame("auth frame needs a token"));
    const seq = ++this.#refreshesStarted;
    try {
      const who = await this.#deps.authenticator.verify(token);
      if (current.closed) return; // it went while the token was checked
      if (who.uid !== current.uid) {
        return void current.control(errorFrame("a refreshed token must carry the same uid"));
      }
      if (seq < this.#refreshApplied) {
        return void current.control(errorFrame("a later auth frame superseded this one"));
      }
      this.#refreshApplied = seq;
      this.#expireAt(who.exp);
      current.permissions = permissionsOf(who.permissions);
      current.control(JSON.stringify({ type: "auth", ok: true, exp: who.exp ?? null }));
    } catch (err) {
      this.#deps.metrics.authFailures++;
      current.control(errorFrame(err instanceof AuthError ? err.message : "token invalid"));
    }
  }
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
