// The Bun bare-runtime ceilings: the smallest Bun server with deno-pusher's delivery contract
// (/ws?token= HS256 uid and optional groups claim, verified with node:crypto before the upgrade,
// /send?uid=&message=, POST /api/broadcast and /api/groups/{group}/send with {"message"}) and no
// hub logic. The two differ only in their fan-out, chosen by FANOUT:
// - `loop`, the like-for-like ceiling: a Set of every socket and Maps uid → sockets and group →
//   sockets, each push a loop of ws.send over one of them, as bench/peers/ceiling-deno.ts does on
//   Deno and deno-pusher's hub does on both runtimes;
// - `publish` (the default): each socket subscribes to a topic for everyone, one for its uid and one
//   per group, and every push is one server.publish, Bun's native fan-out (frame encoded once).
//   Topic prefixes keep a uid and a group of the same name apart.
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Server, ServerWebSocket } from "bun";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET ?? "";
const fanoutMode = process.env.FANOUT ?? "publish";

interface Who {
  uid: string;
  groups: string[];
}
type Socket = ServerWebSocket<Who>;

/** Who a push is for: every socket, one uid's sockets, or one group's. */
type Audience = { all: true } | { uid: string } | { group: string };

/** Keeps track of the sockets and pushes to an audience; answers how many sockets it sent to. */
interface Fanout {
  open(ws: Socket): void;
  close(ws: Socket): void;
  push(server: Server, to: Audience, message: string): number;
}

function verify(token: string | null): Who | null {
  const parts = (token ?? "").split(".");
  if (parts.length !== 3) return null;
  const expected = createHmac("sha256", secret).update(
    `${parts[0]}.${parts[1]}`,
  ).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return null;
  }
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  if (typeof claims.uid !== "string" || claims.uid === "") return null;
  const groups = Array.isArray(claims.groups)
    ? claims.groups.filter((g: unknown) => typeof g === "string" && g !== "")
    : [];
  return { uid: claims.uid, groups };
}

/** Bun's topics: one server.publish per push. */
function publishFanout(): Fanout {
  const ALL = "all";
  /** Subscribers per topic, for the `delivered` count of the answer. */
  const counts = new Map<string, number>();
  const topicsOf = (
    who: Who,
  ) => [ALL, `u:${who.uid}`, ...who.groups.map((g) => `g:${g}`)];
  const topicOf = (to: Audience) =>
    "all" in to ? ALL : "uid" in to ? `u:${to.uid}` : `g:${to.group}`;
  return {
    open(ws) {
      for (const t of topicsOf(ws.data)) {
        ws.subscribe(t);
        counts.set(t, (counts.get(t) ?? 0) + 1);
      }
    },
    close(ws) {
      for (const t of topicsOf(ws.data)) {
        const left = (counts.get(t) ?? 1) - 1;
        if (left > 0) counts.set(t, left);
        else counts.delete(t);
      }
    },
    push(server, to, message) {
      const topic = topicOf(to);
      const delivered = counts.get(topic) ?? 0;
      if (delivered) server.publish(topic, message);
      return delivered;
    },
  };
}

/** A Set and two Maps, a loop of ws.send per push: ceiling-deno.ts's structure on Bun. */
function loopFanout(): Fanout {
  const all = new Set<Socket>();
  const byUid = new Map<string, Set<Socket>>();
  const byGroup = new Map<string, Set<Socket>>();
  const add = (index: Map<string, Set<Socket>>, key: string, ws: Socket) => {
    let set = index.get(key);
    if (!set) index.set(key, set = new Set());
    set.add(ws);
  };
  const remove = (index: Map<string, Set<Socket>>, key: string, ws: Socket) => {
    const set = index.get(key);
    set?.delete(ws);
    if (set?.size === 0) index.delete(key);
  };
  return {
    open(ws) {
      all.add(ws);
      add(byUid, ws.data.uid, ws);
      for (const g of ws.data.groups) add(byGroup, g, ws);
    },
    close(ws) {
      all.delete(ws);
      remove(byUid, ws.data.uid, ws);
      for (const g of ws.data.groups) remove(byGroup, g, ws);
    },
    push(_server, to, message) {
      const set = "all" in to
        ? all
        : "uid" in to
        ? byUid.get(to.uid)
        : byGroup.get(to.group);
      let delivered = 0;
      for (const ws of set ?? []) {
        ws.send(message);
        delivered++;
      }
      return delivered;
    },
  };
}

const fanout = fanoutMode === "loop" ? loopFanout() : publishFanout();

async function jsonMessage(req: Request): Promise<string> {
  try {
    return String(((await req.json()) as { message?: unknown }).message ?? "");
  } catch {
    return "";
  }
}

/** The push call's audience and message, or null when the request is not a push call. */
async function pushCall(
  req: Request,
  url: URL,
): Promise<{ to: Audience; message: string } | null> {
  if (url.pathname === "/send") {
    const params = req.method === "POST"
      ? new URLSearchParams(await req.text())
      : url.searchParams;
    return {
      to: { uid: params.get("uid") ?? "" },
      message: params.get("message") ?? "",
    };
  }
  if (req.method !== "POST") return null;
  if (url.pathname === "/api/broadcast") {
    return { to: { all: true }, message: await jsonMessage(req) };
  }
  const group = url.pathname.match(/^\/api\/groups\/([^/]+)\/send$/)?.[1];
  return group
    ? {
      to: { group: decodeURIComponent(group) },
      message: await jsonMessage(req),
    }
    : null;
}

const server = Bun.serve<Who>({
  port,
  hostname: "0.0.0.0",
  async fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === "/ws") {
      const who = verify(url.searchParams.get("token"));
      if (!who) return new Response("unauthorized", { status: 401 });
      return server.upgrade(req, { data: who })
        ? undefined
        : new Response("upgrade failed", { status: 400 });
    }
    const call = await pushCall(req, url);
    if (call) {
      const delivered = fanout.push(server, call.to, call.message);
      return Response.json({ delivered, connections: delivered }, {
        status: delivered ? 200 : 404,
      });
    }
    if (url.pathname === "/healthz") return new Response("ok");
    return new Response("not found", { status: 404 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      fanout.open(ws);
    },
    message() {},
    close(ws) {
      fanout.close(ws);
    },
  },
});
void server;
