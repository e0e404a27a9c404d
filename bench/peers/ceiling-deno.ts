// The Deno bare-runtime ceiling: the smallest Deno server with deno-pusher's delivery contract
// (/ws?token= HS256 uid, /send?uid=&message=) and no hub logic: one Map, one loop of ws.send.
import { createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";

const port = Number(Deno.env.get("PORT"));
const secret = Deno.env.get("JWT_SECRET") ?? "";
const byUid = new Map<string, Set<WebSocket>>();

function verifyUid(token: string | null): string | null {
  const parts = (token ?? "").split(".");
  if (parts.length !== 3) return null;
  const expected = createHmac("sha256", secret).update(
    `${parts[0]}.${parts[1]}`,
  ).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return null;
  }
  const uid = JSON.parse(Buffer.from(parts[1], "base64url").toString()).uid;
  return typeof uid === "string" && uid !== "" ? uid : null;
}

Deno.serve({ port, hostname: "0.0.0.0", onListen() {} }, async (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/ws") {
    const uid = verifyUid(url.searchParams.get("token"));
    if (!uid) return new Response("unauthorized", { status: 401 });
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      let set = byUid.get(uid);
      if (!set) byUid.set(uid, set = new Set());
      set.add(socket);
    };
    socket.onclose = () => {
      const set = byUid.get(uid);
      set?.delete(socket);
      if (set?.size === 0) byUid.delete(uid);
    };
    socket.onerror = () => {};
    return response;
  }
  if (url.pathname === "/send") {
    const params = req.method === "POST"
      ? new URLSearchParams(await req.text())
      : url.searchParams;
    const uid = params.get("uid") ?? "";
    const message = params.get("message") ?? "";
    let delivered = 0;
    for (const ws of byUid.get(uid) ?? []) {
      ws.send(message);
      delivered++;
    }
    return Response.json({ uid, delivered }, { status: delivered ? 200 : 404 });
  }
  if (url.pathname === "/healthz") return new Response("ok");
  return new Response("not found", { status: 404 });
});
