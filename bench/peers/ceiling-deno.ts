// The Deno bare-runtime ceiling: the smallest Deno server with deno-pusher's delivery contract
// (/ws?token= HS256 uid and optional groups claim, /send?uid=&message=, POST /api/broadcast and
// /api/groups/{group}/send with {"message"}) and no hub logic: a Set and two Maps, a loop of ws.send.
import { createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";

const port = Number(Deno.env.get("PORT"));
const secret = Deno.env.get("JWT_SECRET") ?? "";
const all = new Set<WebSocket>();
const byUid = new Map<string, Set<WebSocket>>();
const byGroup = new Map<string, Set<WebSocket>>();

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

function add(index: Map<string, Set<WebSocket>>, key: string, ws: WebSocket) {
  let set = index.get(key);
  if (!set) index.set(key, set = new Set());
  set.add(ws);
}

function remove(
  index: Map<string, Set<WebSocket>>,
  key: string,
  ws: WebSocket,
) {
  const set = index.get(key);
  set?.delete(ws);
  if (set?.size === 0) index.delete(key);
}

function push(set: Iterable<WebSocket> | undefined, message: string): Response {
  let delivered = 0;
  for (const ws of set ?? []) {
    ws.send(message);
    delivered++;
  }
  return Response.json({ delivered, connections: delivered }, {
    status: delivered ? 200 : 404,
  });
}

async function jsonMessage(req: Request): Promise<string> {
  try {
    return String((await req.json()).message ?? "");
  } catch {
    return "";
  }
}

Deno.serve({ port, hostname: "0.0.0.0", onListen() {} }, async (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/ws") {
    const who = verify(url.searchParams.get("token"));
    if (!who) return new Response("unauthorized", { status: 401 });
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      all.add(socket);
      add(byUid, who.uid, socket);
      for (const g of who.groups) add(byGroup, g, socket);
    };
    socket.onclose = () => {
      all.delete(socket);
      remove(byUid, who.uid, socket);
      for (const g of who.groups) remove(byGroup, g, socket);
    };
    socket.onerror = () => {};
    return response;
  }
  if (url.pathname === "/send") {
    const params = req.method === "POST"
      ? new URLSearchParams(await req.text())
      : url.searchParams;
    return push(
      byUid.get(params.get("uid") ?? ""),
      params.get("message") ?? "",
    );
  }
  if (req.method === "POST" && url.pathname === "/api/broadcast") {
    return push(all, await jsonMessage(req));
  }
  const group = url.pathname.match(/^\/api\/groups\/([^/]+)\/send$/)?.[1];
  if (req.method === "POST" && group) {
    return push(byGroup.get(decodeURIComponent(group)), await jsonMessage(req));
  }
  if (url.pathname === "/healthz") return new Response("ok");
  return new Response("not found", { status: 404 });
});
