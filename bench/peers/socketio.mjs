// The benchmark's Socket.IO peer: each socket joins a room named by its uid, /send emits to that room.
// Clients use the websocket transport directly (no polling), token in the handshake query.
import http from "node:http";
import { Server } from "socket.io";
import { sendParams, verifyUid } from "./jwt.mjs";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;

const server = http.createServer(async (req, res) => {
  if (req.url.startsWith("/socket.io/")) return; // engine.io answers these
  const { url, uid, message } = await sendParams(req);
  if (url.pathname === "/healthz") return res.end("ok");
  if (url.pathname !== "/send") {
    res.statusCode = 404;
    return res.end();
  }
  const delivered = io.sockets.adapter.rooms.get(uid)?.size ?? 0;
  if (delivered) io.to(uid).emit("message", message);
  res.statusCode = delivered ? 200 : 404;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ uid, delivered }));
});

const io = new Server(server, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});
io.use((socket, next) => {
  const uid = verifyUid(socket.handshake.query.token, secret);
  if (!uid) return next(new Error("unauthorized"));
  socket.data.uid = uid;
  next();
});
io.on("connection", (socket) => socket.join(socket.data.uid));
server.keepAliveTimeout = 60_000;
server.listen(port, "0.0.0.0");
