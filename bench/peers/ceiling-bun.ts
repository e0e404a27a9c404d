// The Bun bare-runtime ceiling: the smallest Bun server with deno-pusher's delivery contract
// (/ws?token= HS256 uid and optional groups claim, /send?uid=&message=, POST /api/broadcast and
// /api/groups/{group}/send with {"message"}) and no hub logic. Each socket subscribes to a topic for
// its uid, one per group, and one for everyone; every push is one server.publish, Bun's native
// fan-out (frame encoded once). Topic prefixes keep a uid and a group of the same name apart.
import { createHmac, timingSafeEqual } from "node:crypto";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET ?? "";
const ALL = "all";
/** Subscribers per topic, for the `delivered` count of the answer. */
const counts = new Map<string, number>();

function verify(
  token: string | null,
): { uid: string; groups: string[] } | null {
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

const topicsOf = (who: { uid: string; groups: string[] }) => [
  ALL,
  `u:${who.uid}`,
  ...who.groups.map((g) => `g:${g}`),
];

async function jsonMessage(req: Request): Promise<string> {
  try {
    return String(((await req.json()) as { message?: unknown }).message ?? "");
  } catch {
    return "";
  }
}

const server = Bun.serve<{ uid: string; groups: string[] }>({
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
    let topic: string | null = null;
    let message = "";
    if (url.pathname === "/send") {
      const params = req.method === "POST"
        ? new URLSearchParams(await req.text())
        : url.searchParams;
      topic = `u:${params.get("uid") ?? ""}`;
      message = params.get("message") ?? "";
    } else if (req.method === "POST" && url.pathname === "/api/broadcast") {
      topic = ALL;
      message = await jsonMessage(req);
    } else {
      const group = url.pathname.match(/^\/api\/groups\/([^/]+)\/send$/)?.[1];
      if (req.method === "POST" && group) {
        topic = `g:${decodeURIComponent(group)}`;
        message = await jsonMessage(req);
      }
    }
    if (topic !== null) {
      const delivered = counts.get(topic) ?? 0;
      if (delivered) server.publish(topic, message);
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
      for (const t of topicsOf(ws.data)) {
        ws.subscribe(t);
        counts.set(t, (counts.get(t) ?? 0) + 1);
      }
    },
    message() {},
    close(ws) {
      for (const t of topicsOf(ws.data)) {
        const left = (counts.get(t) ?? 1) - 1;
        if (left > 0) counts.set(t, left);
        else counts.delete(t);
      }
    },
  },
});
void server;
