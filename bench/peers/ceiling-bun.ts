// The Bun bare-runtime ceiling: the smallest Bun server with deno-pusher's delivery contract
// (/ws?token= HS256 uid, /send?uid=&message=) and no hub logic. Each socket subscribes to a topic
// named by its uid, and /send is one server.publish, Bun's native fan-out (frame encoded once).
import { createHmac, timingSafeEqual } from "node:crypto";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET ?? "";
const countByUid = new Map<string, number>();

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

const server = Bun.serve<{ uid: string }>({
  port,
  hostname: "0.0.0.0",
  async fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === "/ws") {
      const uid = verifyUid(url.searchParams.get("token"));
      if (!uid) return new Response("unauthorized", { status: 401 });
      return server.upgrade(req, { data: { uid } })
        ? undefined
        : new Response("upgrade failed", { status: 400 });
    }
    if (url.pathname === "/send") {
      const params = req.method === "POST"
        ? new URLSearchParams(await req.text())
        : url.searchParams;
      const uid = params.get("uid") ?? "";
      const delivered = countByUid.get(uid) ?? 0;
      if (delivered) server.publish(uid, params.get("message") ?? "");
      return Response.json({ uid, delivered }, {
        status: delivered ? 200 : 404,
      });
    }
    if (url.pathname === "/healthz") return new Response("ok");
    return new Response("not found", { status: 404 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe(ws.data.uid);
      countByUid.set(ws.data.uid, (countByUid.get(ws.data.uid) ?? 0) + 1);
    },
    message() {},
    close(ws) {
      const left = (countByUid.get(ws.data.uid) ?? 1) - 1;
      if (left > 0) countByUid.set(ws.data.uid, left);
      else countByUid.delete(ws.data.uid);
    },
  },
});
void server;
