/**
 * The chat example's page (see examples/routes.ts): dashjay's hub rebuilt on talking clients. A
 * person picks a name, gets a token from POST /examples/token, joins the room `chat-lobby` with a
 * `join` frame, sees who is online (the `joined` snapshot, then `join` and `leave` events), talks
 * to the room with `publish` frames and to one person with `send` frames.
 *
 * One HTML document, its script inline, no build step; the script imports the client SDK the
 * same server serves (GET /sdk/deno-pusher.js), which reconnects, resumes and rejoins the room, and
 * nothing else. Every piece of user text reaches the page through textContent, never as HTML. The
 * script avoids backticks and dollar-brace, which would end or splice this template string.
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
<script type="module">
// The client SDK, served by the same server: it reconnects, resumes, rejoins the room and settles
// each request with its answer (README: SDKs).
import { Client } from "/sdk/deno-pusher.js";

var ROOM = "chat-lobby";
var me = null;          // my uid
var client = null;
var online = new Map(); // uid -> info
var target = null;      // uid of a direct message's receiver, or null for the room

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

/** A token for name from the example's token route; rejects with the server's words. */
function fetchToken(name) {
  return fetch("/examples/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ app: "chat", name: name }),
  }).then(function (res) {
    return res.json().then(function (body) {
      if (!res.ok) throw new Error(body.error || ("token refused: " + res.status));
      return body.token;
    });
  });
}

function connect(name, token) {
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  client = new Client(scheme + location.host + "/ws", {
    token: token,
    // A fresh token before this one expires, and after a restart of the server.
    getToken: function () { return fetchToken(name); },
  });
  client.on("welcome", function (welcome) { me = welcome.uid; });
  client.on("state", function (state) {
    status(state === "connected" ? "connected as " + me : state + "...");
  });
  // The room's presence: the join's answer, and the SDK's rejoin after every reconnect.
  client.on("joined", onJoined);
  client.on("join", function (event) {
    if (event.group !== ROOM) return;
    online.set(event.uid, event.info || {});
    renderOnline();
    if (event.uid !== me) line("system", null, nameOf(event.uid) + " joined.");
  });
  client.on("leave", function (event) {
    if (event.group !== ROOM) return;
    line("system", null, nameOf(event.uid) + " left.");
    online.delete(event.uid);
    if (target === event.uid) chooseTarget(null);
    renderOnline();
  });
  client.on("message", function (m) {
    var from = m.from ? nameOf(m.from.uid) : "server";
    if (m.group === ROOM) line("room", from, String(m.data));
    else if (!m.group) line("dm in", from + " \u2192 you", String(m.data));
  });
  client.on("close", function (closed) {
    if (closed.reconnect) return; // the SDK comes back by itself
    status("disconnected (" + closed.code + (closed.reason ? " " + closed.reason : "") + ")");
    line("system", null, "Disconnected. Reload the page to join again.");
    online = new Map();
    renderOnline();
  });
  client.on("error", function (err) { line("error", null, String(err.message)); });
  client.connect();
  joinRoom();
}

/**
 * Joins the room; the SDK rejoins it after every reconnect from then on. A join whose connection
 * dropped before its answer is not kept by the SDK: it is asked again once connected.
 */
function joinRoom() {
  client.join(ROOM).then(onJoined, function (err) {
    if (err.name !== "ConnectionLostError") {
      line("error", null, "could not join " + ROOM + ": " + String(err.message));
      return;
    }
    var off = client.on("state", function (state) {
      if (state !== "connected") return;
      off();
      joinRoom();
    });
  });
}

function onJoined(joined) {
  if (joined.group !== ROOM) return;
  online = new Map();
  (joined.members || []).forEach(function (m) { online.set(m.uid, m.info || {}); });
  renderOnline();
  line("system", null, "You joined " + joined.group + ".");
}

$("login").addEventListener("submit", function (e) {
  e.preventDefault();
  var name = $("name").value.trim();
  if (!name) return;
  $("join").disabled = true;
  $("login-error").textContent = "";
  fetchToken(name).then(function (token) {
    $("login").hidden = true;
    $("chat").hidden = false;
    connect(name, token);
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
  if (!text || !client) return;
  var shown = function (err) { line("error", null, String(err.message)); };
  if (target === null) {
    // Room lines show as their echo.
    client.publish(ROOM, text, { echo: true }).catch(shown);
  } else {
    // A direct message shows once the server took it.
    var to = target;
    client.send(to, text).then(function () {
      line("dm out", "you \u2192 " + nameOf(to), text);
    }, function (err) {
      line("error", null, "not sent to " + to + ": " + String(err.message));
    });
  }
  $("text").value = "";
});
</script>
</body>
</html>
`;
