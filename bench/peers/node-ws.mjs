// The benchmark's Node peer: a `ws` hub with the deno-pusher contract (/ws?token=, /send?uid=&message=).
// One Map owns uid -> sockets; delivery is a plain loop of ws.send.
import http from "node:http";
import { WebSocketServer } from "ws";
import { sendParams, verifyUid } from "./jwt.mjs";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;
const byUid = new Map();
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

const server = http.createServer(async (req, res) => {
  const { url, uid, message } = await sendParams(req);
  if (url.pathname === "/healthz") return res.end("ok");
  if (url.pathname !== "/send") {
    res.statusCode = 404;
    return res.end();
  }
  const set = byUid.get(uid);
  let delivered = 0;
  if (set) { for (const ws of set) ws.send(message), delivered++; }
  res.statusCode = delivered ? 200 : 404;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ uid, delivered }));
});

server.on("upgrade", (req, socket, head) => {
  const uid = verifyUid(
    new URL(req.url, "http://x").searchParams.get("token"),
    secret,
  );
  if (!uid) {
    socket.end("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    let set = byUid.get(uid);
    if (!set) byUid.set(uid, set = new Set());
    set.add(ws);
    ws.on("close", () => {
      set.delete(ws);
      if (set.size === 0 && byUid.get(uid) === set) byUid.delete(uid);
    });
    ws.on("error", () => {});
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "0.0.0.0");
