// The benchmark's Socket.IO peer: each socket joins a room named by its uid and one per group of its
// token's `groups` claim; /send emits to the uid's room, /api/groups/{group}/send to the group's room
// (rooms are prefixed so a uid and a group of the same name stay apart), /api/broadcast to everyone.
// Clients use the websocket transport directly (no polling), token in the handshake query.
import http from "node:http";
import { Server } from "socket.io";
import { answer, pushCall, verifyToken } from "./jwt.mjs";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;

const server = http.createServer(async (req, res) => {
  if (req.url.startsWith("/socket.io/")) return; // engine.io answers these
  if (req.url === "/healthz") return res.end("ok");
  const call = await pushCall(req);
  if (!call) {
    res.statusCode = 404;
    return res.end();
  }
  const { target, message } = call;
  if ("broadcast" in target) {
    const delivered = io.of("/").sockets.size;
    if (delivered) io.emit("message", message);
    return answer(res, delivered);
  }
  const room = "group" in target ? `g:${target.group}` : `u:${target.uid}`;
  const delivered = io.sockets.adapter.rooms.get(room)?.size ?? 0;
  if (delivered) io.to(room).emit("message", message);
  answer(res, delivered);
});

const io = new Server(server, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});
io.use((socket, next) => {
  const who = verifyToken(socket.handshake.query.token, secret);
  if (!who) return next(new Error("unauthorized"));
  socket.data.who = who;
  next();
});
io.on("connection", (socket) => {
  const { uid, groups } = socket.data.who;
  socket.join([`u:${uid}`, ...groups.map((g) => `g:${g}`)]);
});
server.keepAliveTimeout = 60_000;
server.listen(port, "0.0.0.0");
