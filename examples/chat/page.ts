/**
 * The chat example's page (see examples/routes.ts): dashjay's hub rebuilt on talking clients. A
 * person picks a name, gets a token from POST /examples/token, joins the room `chat-lobby` with a
 * `join` frame, sees who is online (the `joined` snapshot, then `join` and `leave` events), talks
 * to the room with `publish` frames and to one person with `send` frames.
 *
 * One HTML document, its script inline, no build step and nothing fetched from elsewhere. Every
 * piece of user text reaches the page through textContent, never as HTML. The script avoids
 * backticks and dollar-brace, which would end or splice this template string.
 */
export const CHAT_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>deno-pusher chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f4f5f7; }
  header { background: #2b3a55; color: #fff; padding: 10px 16px; }
  header h1 { font-size: 18px; margin: 0; display: inline; }
  #status { margin-left: 12px; font-size: 13px; opacity: .85; }
  main { display: flex; gap: 12px; padding: 12px; height: calc(100vh - 70px);
    box-sizing: border-box; }
  #login { padding: 24px; }
  #login input { font: inherit; padding: 6px; }
  #people { width: 180px; background: #fff; border-radius: 6px; padding: 8px; overflow: auto; }
  #people h2, #room h2 { font-size: 14px; margin: 0 0 6px; color: #555; }
  #online { list-style: none; margin: 0; padding: 0; }
  #online button { all: unset; cursor: pointer; display: block; padding: 4px 6px;
    border-radius: 4px; width: 100%; box-sizing: border-box; }
  #online button:hover { background: #eef; }
  #online li.me button { cursor: default; font-weight: bold; }
  #online li.target button { background: #dde6ff; }
  #room { flex: 1; display: flex; flex-direction: column; background: #fff; border-radius: 6px;
    padding: 8px; min-width: 0; }
  #log { flex: 1; overflow: auto; margin: 0; padding: 0; list-style: none; }
  #log li { padding: 3px 4px; overflow-wrap: anywhere; }
  #log li.system { color: #888; font-style: italic; }
  #log li.dm { background: #fff4d6; border-left: 3px solid #e0a800; }
  #log li.error { color: #b00020; }
  #log .who { font-weight: bold; margin-right: 6px; }
  #send { display: flex; gap: 6px; margin-top: 8px; align-items: center; }
  #send input { flex: 1; font: inherit; padding: 6px; }
  #to { font-size: 13px; white-space: nowrap; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header><h1>deno-pusher chat</h1><span id="status">not connected</span></header>
<form id="login">
  <p>Pick a name to join the room <b>chat-lobby</b>.</p>
  <input id="name" name="name" placeholder="your name" maxlength="40" required autofocus>
  <button id="join">Join</button>
  <p id="login-error" class="error" role="alert"></p>
</form>
<main id="chat" hidden>
  <section id="people">
    <h2>Online</h2>
    <ul id="online"></ul>
    <p><small>Click a name for a direct message.</small></p>
  </section>
  <section id="room">
    <h2>chat-lobby</h2>
    <ul id="log" aria-live="polite"></ul>
    <form id="send">
      <span id="to">to the room</span>
      <button type="button" id="to-room" hidden>back to the room</button>
      <input id="text" placeholder="message" autocomplete="off" maxlength="2000">
      <button id="post">Send</button>
    </form>
  </section>
</main>
<script>
"use strict";
var ROOM = "chat-lobby";
var me = null;          // my uid
var ws = null;
var online = new Map(); // uid -> info
var target = null;      // uid of a direct message's receiver, or null for the room
var pending = new Map(); // ref -> what the frame asked, to show on its answer
var nextRef = 1;

function $(id) { return document.getElementById(id); }
function status(text) { $("status").textContent = text; }

/** A name to show for uid: its info.name when it has one. */
function nameOf(uid) {
  var info = online.get(uid);
  return info && typeof info.name === "string" ? info.name : uid;
}

/** Adds a line to the log; every piece of text is set as text, never parsed as HTML. */
function line(kind, who, text) {
  var li = document.createElement("li");
  li.className = kind;
  if (who !== null) {
    var b = document.createElement("span");
    b.className = "who";
    b.textContent = who;
    li.appendChild(b);
  }
  li.appendChild(document.createTextNode(text));
  var log = $("log");
  var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.appendChild(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
  return li;
}

function renderOnline() {
  var ul = $("online");
  ul.textContent = "";
  var uids = Array.from(online.keys()).sort();
  uids.forEach(function (uid) {
    var li = document.createElement("li");
    li.dataset.uid = uid;
    if (uid === me) li.className = "me";
    else if (uid === target) li.className = "target";
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = nameOf(uid) + (uid === me ? " (you)" : "");
    if (uid !== me) button.addEventListener("click", function () { chooseTarget(uid); });
    li.appendChild(button);
    ul.appendChild(li);
  });
}

function chooseTarget(uid) {
  target = uid;
  $("to").textContent = uid === null ? "to the room" : "direct to " + nameOf(uid);
  $("to-room").hidden = uid === null;
  renderOnline();
  $("text").focus();
}

function request(frame, what) {
  frame.ref = nextRef++;
  pending.set(frame.ref, what);
  ws.send(JSON.stringify(frame));
}

function onFrame(frame) {
  var what = frame.ref !== undefined ? pending.get(frame.ref) : undefined;
  if (what) pending.delete(frame.ref);
  switch (frame.type) {
    case "welcome":
      me = frame.uid;
      status("connected as " + me);
      request({ type: "join", group: ROOM }, { kind: "join" });
      break;
    case "joined":
      online = new Map();
      (frame.members || []).forEach(function (m) { online.set(m.uid, m.info || {}); });
      renderOnline();
      line("system", null, "You joined " + frame.group + ".");
      break;
    case "join":
      if (frame.group !== ROOM) break;
      online.set(frame.uid, frame.info || {});
      renderOnline();
      if (frame.uid !== me) line("system", null, nameOf(frame.uid) + " joined.");
      break;
    case "leave":
      if (frame.group !== ROOM) break;
      line("system", null, nameOf(frame.uid) + " left.");
      online.delete(frame.uid);
      if (target === frame.uid) chooseTarget(null);
      renderOnline();
      break;
    case "message": {
      var from = frame.from ? nameOf(frame.from.uid) : "server";
      if (frame.group === ROOM) line("room", from, String(frame.data));
      else if (!frame.group) line("dm in", from + " \\u2192 you", String(frame.data));
      break;
    }
    case "ack":
      // A direct message shows once the server took it; room lines come back as their echo.
      if (what && what.kind === "send") {
        line("dm out", "you \\u2192 " + nameOf(what.to), what.text);
      }
      break;
    case "error":
      line("error", null, (what && what.kind === "send" ? "not sent to " + what.to + ": " : "") +
        String(frame.error));
      break;
  }
}

function connect(token) {
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/ws?format=json&token=" +
    encodeURIComponent(token));
  status("connecting...");
  ws.onmessage = function (e) {
    try { onFrame(JSON.parse(e.data)); } catch (err) { console.error(err); }
  };
  ws.onclose = function (e) {
    status("disconnected (" + e.code + (e.reason ? " " + e.reason : "") + ")");
    line("system", null, "Disconnected. Reload the page to join again.");
    online = new Map();
    renderOnline();
  };
}

$("login").addEventListener("submit", function (e) {
  e.preventDefault();
  var name = $("name").value.trim();
  if (!name) return;
  $("join").disabled = true;
  $("login-error").textContent = "";
  fetch("/examples/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ app: "chat", name: name }),
  }).then(function (res) {
    return res.json().then(function (body) {
      if (!res.ok) throw new Error(body.error || ("token refused: " + res.status));
      return body;
    });
  }).then(function (body) {
    $("login").hidden = true;
    $("chat").hidden = false;
    connect(body.token);
    $("text").focus();
  }).catch(function (err) {
    $("login-error").textContent = String(err.message || err);
    $("join").disabled = false;
  });
});

$("to-room").addEventListener("click", function () { chooseTarget(null); });

$("send").addEventListener("submit", function (e) {
  e.preventDefault();
  var text = $("text").value;
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  if (target === null) {
    request({ type: "publish", group: ROOM, data: text, echo: true }, { kind: "publish" });
  } else {
    request({ type: "send", uid: target, data: text }, { kind: "send", to: target, text: text });
  }
  $("text").value = "";
});
</script>
</body>
</html>
`;
