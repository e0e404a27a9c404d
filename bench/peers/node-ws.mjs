// The benchmark's Node peer: a `ws` hub with the deno-pusher contract (/ws?token=, /send?uid=&message=,
// POST /api/broadcast and /api/groups/{group}/send). Three indexes own the sockets: all of them,
// uid -> sockets and group -> sockets (groups from the token's `groups` claim); delivery is a plain
// loop of ws.send.
import http from "node:http";
import { WebSocketServer } from "ws";
import { answer, pushCall, verifyToken } from "./jwt.mjs";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;
const all = new Set();
const byUid = new Map();
const byGroup = new Map();
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false,
});

function add(index, key, ws) {
  let set = index.get(key);
  if (!set) index.set(key, set = new Set());
  set.add(ws);
}

function remove(index, key, ws) {
  const set = index.get(key);
  if (!set) return;
  set.delete(ws);
  if (set.size === 0) index.delete(key);
}

const server = http.createServer(async (req, res) => {
  if (req.url === "/healthz") return res.end("ok");
  const call = await pushCall(req);
  if (!call) {
    res.statusCode = 404;
    return res.end();
  }
  const { target, message } = call;
  const set = "broadcast" in target
    ? all
    : "group" in target
    ? byGroup.get(target.group)
    : byUid.get(target.uid);
  let delivered = 0;
  if (set) { for (const ws of set) ws.send(message), delivered++; }
  answer(res, delivered);
});

server.on("upgrade", (req, socket, head) => {
  const who = verifyToken(
    new URL(req.url, "http://x").searchParams.get("token"),
    secret,
  );
  if (!who) {
    socket.end("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    all.add(ws);
    add(byUid, who.uid, ws);
    for (const g of who.groups) add(byGroup, g, ws);
    ws.on("close", () => {
      all.delete(ws);
      remove(byUid, who.uid, ws);
      for (const g of who.groups) remove(byGroup, g, ws);
    });
    ws.on("error", () => {});
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "0.0.0.0");
