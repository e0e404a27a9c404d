/**
 * A webhook receiver for the tests: a real HTTP server on a random port of 127.0.0.1 that checks
 * every POST's signature with verifySignature, as a backend following the README would, and
 * answers as the test tells it: 200, 500, a closed socket, or nothing at all.
 */
import { Buffer } from "node:buffer";
import { createServer, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { WebhookEvent } from "./events.ts";
import { SIGNATURE_HEADER, verifySignature } from "./signature.ts";

/** What a request gets: 200, 500, its socket closed without an answer, or no answer (`release`). */
export type Answer = "ok" | "fail" | "close" | "hang";

/** One request, as the receiver saw it. */
export interface Received {
  events: WebhookEvent[];
  /** Whether its signature held; one that did not was answered 401. */
  verified: boolean;
  contentType: string | undefined;
  answer: Answer;
}

/** A receiver; disposing of it closes it and every connection to it. */
export interface Receiver extends AsyncDisposable {
  url: string;
  /** Every request, in the order they came. */
  requests: Received[];
  /** The events of the requests answered 200, in the order they came. */
  accepted: WebhookEvent[];
  /**
   * Decides each request's answer when it comes (`n` counts the requests, from 1); signatures
   * that fail are answered 401 before it is asked. Default: "ok".
   */
  answer: (events: WebhookEvent[], n: number) => Answer;
  /**
   * Resolves once `check` holds: now, or after one of the requests to come. Rejects, saying
   * `what` it waited for, if that has not happened within 30 s: a test that hangs says why.
   */
  until(check: () => boolean, what: string): Promise<void>;
  /** Answers every request left hanging with 500. */
  release(): void;
}

/** Longest a test waits for the receiver to see something, in milliseconds. */
const UNTIL_MS = 30_000;

/** Starts a receiver that verifies signatures with `secret`. */
export async function startReceiver(secret: string): Promise<Receiver> {
  const sockets = new Set<Socket>();
  const hanging = new Set<ServerResponse>();
  const waiters = new Set<() => void>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const header = req.headers[SIGNATURE_HEADER.toLowerCase()];
      const verified = verifySignature(
        secret,
        typeof header === "string" ? header : undefined,
        body,
      );
      const events = (JSON.parse(body.toString("utf8")) as { events: WebhookEvent[] }).events;
      const answer = verified ? receiver.answer(events, receiver.requests.length + 1) : "fail";
      receiver.requests.push({
        events,
        verified,
        contentType: req.headers["content-type"],
        answer,
      });
      if (!verified) {
        res.writeHead(401).end("bad signature");
      } else if (answer === "ok") {
        receiver.accepted.push(...events);
        res.writeHead(200).end();
      } else if (answer === "fail") {
        res.writeHead(500).end("failing on demand");
      } else if (answer === "close") {
        req.socket.destroy();
      } else {
        hanging.add(res);
        res.on("close", () => hanging.delete(res));
      }
      for (const waiter of [...waiters]) waiter();
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const receiver: Receiver = {
    url: `http://127.0.0.1:${port}/hooks`,
    requests: [],
    accepted: [],
    answer: () => "ok",
    until(check, what) {
      if (check()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`the receiver waited ${UNTIL_MS} ms for ${what} in vain`));
        }, UNTIL_MS);
        const waiter = () => {
          if (!check()) return;
          waiters.delete(waiter);
          clearTimeout(timer);
          resolve();
        };
        waiters.add(waiter);
      });
    },
    release() {
      for (const res of hanging) res.writeHead(500).end("released");
      hanging.clear();
    },
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return receiver;
}

/** Ids of `events`, in their order. */
export function ids(events: readonly WebhookEvent[]): string[] {
  return events.map((event) => event.id);
}
