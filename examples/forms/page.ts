/**
 * The forms example's page (see examples/routes.ts): re-formers' collaborative form rebuilt on
 * talking clients. Several people edit one form, named by `?form=<id>` (default `demo`), in the
 * room `form-<id>`:
 *
 * - the token (POST /examples/token) names the room in its `groups` claim, and the client connects
 *   with `since: 0`, so the room's history is replayed first and rebuilds the form; a full room is
 *   listed in the welcome's `full`, and the page says so;
 * - a `join` then answers the presence (`joined`: members with their name and colour, and the locks
 *   held), kept current by `join`, `leave`, `lock` and `unlock` events;
 * - every edit is a `publish` (echoed, so that each page applies the same operations in the
 *   server's order) carrying one JSON operation: `{op:"add",id,text}`, `{op:"edit",id,text}` or
 *   `{op:"delete",id}`;
 * - a question being edited is locked (`lock` on focus, `unlock` on blur); one locked by someone
 *   else cannot be edited or deleted on this page.
 *
 * One HTML document, its script inline, no build step; the script imports the client SDK the
 * same server serves (GET /sdk/deno-pusher.js), which reconnects, resumes after the last edit it
 * applied, rejoins the room and refreshes the token, and nothing else. Every piece of user text
 * reaches the page through textContent or an input's value, never as HTML. The script avoids
 * backticks and dollar-brace, which would end or splice this template string.
 */
export const FORMS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>deno-pusher forms</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f4f5f7; }
  header { background: #2b553f; color: #fff; padding: 10px 16px; }
  header h1 { font-size: 18px; margin: 0; display: inline; }
  #status { margin-left: 12px; font-size: 13px; opacity: .85; }
  .panel { background: #fff; border-radius: 6px; padding: 10px 16px; margin: 12px; }
  .panel h2 { font-size: 14px; margin: 0 0 8px; color: #555; }
  #login input { font: inherit; padding: 6px; vertical-align: middle; }
  #people { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 6px; }
  #people li { padding: 2px 10px 2px 6px; border-radius: 12px; background: #eee; }
  #people .dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
    margin-right: 6px; }
  #questions { list-style: none; margin: 0; padding: 0; }
  .question { display: flex; gap: 8px; align-items: center; padding: 6px;
    border-left: 4px solid transparent; margin-bottom: 4px; }
  .question .n { width: 2em; color: #888; text-align: right; }
  .question input { flex: 1; font: inherit; padding: 6px; }
  .question input:disabled { background: #f7f7f7; color: #555; }
  .question .holder { font-size: 13px; white-space: nowrap; }
  #add { display: flex; gap: 8px; margin-top: 8px; }
  #add input { flex: 1; font: inherit; padding: 6px; }
  .error { color: #b00020; }
  #full { font-weight: bold; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header><h1>deno-pusher forms: <span id="form-id"></span></h1>
<span id="status">not connected</span></header>
<form id="login" class="panel">
  <p>Pick a name and a colour to edit this form with the others.</p>
  <input id="name" placeholder="your name" maxlength="40" required autofocus>
  <input id="color" type="color" value="#3366cc" aria-label="your colour">
  <button id="join">Edit the form</button>
  <p id="login-error" class="error" role="alert"></p>
</form>
<p id="full" class="panel error" role="alert" hidden>This form's room is full. Try again later.</p>
<div id="editor" hidden>
  <section class="panel">
    <h2>On this form</h2>
    <ul id="people"></ul>
  </section>
  <section class="panel">
    <h2>Questions</h2>
    <ol id="questions"></ol>
    <p id="empty">No question yet.</p>
    <form id="add">
      <input id="new-text" placeholder="a new question" maxlength="500" autocomplete="off">
      <button id="add-button">Add</button>
    </form>
    <p id="notice" class="error" role="alert"></p>
  </section>
</div>
<script type="module">
// The client SDK, served by the same server: it reconnects, resumes, rejoins the room and settles
// each request with its answer (README: SDKs).
import { Client } from "/sdk/deno-pusher.js";

/** How long typing pauses before the edit is published, in ms: a frame per pause, not per key. */
var EDIT_DELAY = 300;
var formId = new URLSearchParams(location.search).get("form") || "demo";
var ROOM = "form-" + formId;
var me = null;            // my uid
var myClient = null;      // my connection's id: a lock's holder.client
var client = null;
var connected = "";       // the status once connected: who I am, how many edits were replayed
var full = false;         // the room was full: the client is closed and the page says so
var people = new Map();   // uid -> info {name, color}
var questions = [];       // [{id, text}], in the form's order
var locks = new Map();    // question id -> holder {uid, client}
var mine = new Set();     // question ids I hold (or asked for)
var timers = new Map();   // question id -> pending edit timer

function $(id) { return document.getElementById(id); }
function status(text) { $("status").textContent = text; }
function notice(text) { $("notice").textContent = text; }
function nameOf(uid) {
  var info = people.get(uid);
  return info && typeof info.name === "string" ? info.name : uid;
}
function colorOf(uid) {
  var info = people.get(uid);
  var c = info && info.color;
  return typeof c === "string" && /^#[0-9a-fA-F]{6}$/.test(c) ? c : "#888888";
}
function newId() {
  return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 8);
}
function lockedByOther(id) {
  var holder = locks.get(id);
  return holder !== undefined && holder.client !== myClient;
}
function fieldOf(id) {
  return document.querySelector("#q-" + CSS.escape(id) + " input");
}

function publish(op) {
  client.publish(ROOM, JSON.stringify(op), { echo: true }).catch(function (err) {
    notice(String(err.message));
  });
}

function renderPeople() {
  var ul = $("people");
  ul.textContent = "";
  Array.from(people.keys()).sort().forEach(function (uid) {
    var li = document.createElement("li");
    li.dataset.uid = uid;
    var dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = colorOf(uid);
    li.appendChild(dot);
    li.appendChild(document.createTextNode(nameOf(uid) + (uid === me ? " (you)" : "")));
    ul.appendChild(li);
  });
}

/** One question's row: built once, then kept current by renderQuestion. */
function rowOf(q) {
  var li = document.getElementById("q-" + q.id);
  if (li) return li;
  li = document.createElement("li");
  li.id = "q-" + q.id;
  li.className = "question";
  li.dataset.id = q.id;
  var input = document.createElement("input");
  input.className = "text";
  input.setAttribute("aria-label", "question");
  input.maxLength = 500;
  var holder = document.createElement("span");
  holder.className = "holder";
  var del = document.createElement("button");
  del.type = "button";
  del.className = "delete";
  del.textContent = "Delete";
  input.addEventListener("focus", function () { takeLock(q.id); });
  input.addEventListener("blur", function () { releaseLock(q.id); });
  input.addEventListener("input", function () { editSoon(q.id, input.value); });
  del.addEventListener("click", function () {
    if (lockedByOther(q.id)) return notice("locked by " + nameOf(locks.get(q.id).uid));
    publish({ op: "delete", id: q.id });
  });
  li.appendChild(input);
  li.appendChild(holder);
  li.appendChild(del);
  return li;
}

function renderQuestion(q) {
  var li = rowOf(q);
  var input = li.querySelector("input");
  // What I am typing wins over the echo of what I typed a moment ago.
  if (document.activeElement !== input && input.value !== q.text) input.value = q.text;
  var holder = locks.get(q.id);
  var other = lockedByOther(q.id);
  input.disabled = other;
  li.querySelector(".delete").disabled = other;
  var badge = li.querySelector(".holder");
  if (holder) {
    var you = holder.client === myClient;
    badge.textContent = you ? "you are editing" : "locked by " + nameOf(holder.uid);
    li.style.borderLeftColor = colorOf(holder.uid);
    li.classList.toggle("locked", !you);
  } else {
    badge.textContent = "";
    li.style.borderLeftColor = "transparent";
    li.classList.remove("locked");
  }
}

function renderQuestions() {
  var ol = $("questions");
  var ids = new Set(questions.map(function (q) { return q.id; }));
  Array.from(ol.children).forEach(function (li) { if (!ids.has(li.dataset.id)) li.remove(); });
  // A row already in its place is not moved: moving it would take the focus from its input.
  questions.forEach(function (q, i) {
    var li = rowOf(q);
    if (ol.children[i] !== li) ol.insertBefore(li, ol.children[i] || null);
    renderQuestion(q);
  });
  $("empty").hidden = questions.length > 0;
}

/** Applies one operation of the room, live or replayed from its history. */
function apply(op) {
  if (!op || typeof op.id !== "string") return;
  var at = questions.findIndex(function (q) { return q.id === op.id; });
  if (op.op === "add" && at < 0) questions.push({ id: op.id, text: String(op.text || "") });
  else if (op.op === "edit" && at >= 0) questions[at].text = String(op.text || "");
  else if (op.op === "delete" && at >= 0) {
    questions.splice(at, 1);
    locks.delete(op.id);
  }
  renderQuestions();
}

function takeLock(id) {
  if (lockedByOther(id)) return;
  mine.add(id);
  client.lock(ROOM, id).then(function () {
    // Blurred before the answer came: the unlock is on its way already.
    if (mine.has(id)) locks.set(id, { uid: me, client: myClient });
    notice("");
    renderQuestions();
  }, function (err) {
    // Someone else took it first (their lock event says who), or too many are held.
    mine.delete(id);
    var field = fieldOf(id);
    if (field && document.activeElement === field) field.blur();
    var holder = locks.get(id);
    notice(holder && holder.client !== myClient ? "locked by " + nameOf(holder.uid) :
      String(err.message));
  });
}
function releaseLock(id) {
  flushEdit(id);
  if (!mine.has(id)) return;
  mine.delete(id);
  if (locks.has(id) && locks.get(id).client === myClient) locks.delete(id);
  // A refusal means the lock is gone already (its connection closed): nothing to show.
  client.unlock(ROOM, id).catch(function () {});
  var q = questions.find(function (q) { return q.id === id; });
  if (q) renderQuestion(q);
}
function editSoon(id, text) {
  clearTimeout(timers.get(id));
  timers.set(id, setTimeout(function () {
    timers.delete(id);
    publish({ op: "edit", id: id, text: text });
  }, EDIT_DELAY));
}
function flushEdit(id) {
  if (!timers.has(id)) return;
  clearTimeout(timers.get(id));
  timers.delete(id);
  var input = fieldOf(id);
  if (input) publish({ op: "edit", id: id, text: input.value });
}

/** The room's presence and locks: the join's answer, and the SDK's rejoin after a reconnect. */
/**
 * Joins the room (its join and leave events, its snapshot); the SDK rejoins it after every
 * reconnect from then on. A join whose connection dropped before its answer is not kept by the
 * SDK: it is asked again once connected.
 */
function joinRoom() {
  client.join(ROOM).then(onJoined, function (err) {
    if (err.name !== "ConnectionLostError") {
      if (!full) notice("could not join " + ROOM + ": " + String(err.message));
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
  people = new Map();
  (joined.members || []).forEach(function (m) { people.set(m.uid, m.info || {}); });
  locks = new Map();
  (joined.locks || []).forEach(function (l) { locks.set(l.key, l.holder); });
  renderPeople();
  renderQuestions();
}

/**
 * After a reconnect: the old connection's locks went with it, so the question being typed in is
 * locked again, or left when someone else took it meanwhile.
 */
function relock() {
  var li = document.activeElement && document.activeElement.closest("#questions li.question");
  if (!li) return;
  if (lockedByOther(li.dataset.id)) document.activeElement.blur();
  else takeLock(li.dataset.id);
}

function connect(who, token) {
  client = new Client("/ws", {
    token: token,
    // A fresh token before this one expires, and after a restart of the server.
    getToken: function () { return fetchToken(who); },
    // The room's whole history comes first, and rebuilds the form; a reconnect resumes after the
    // last edit applied.
    since: 0,
  });
  client.on("welcome", function (welcome) {
    me = welcome.uid;
    myClient = welcome.client;
    if (Array.isArray(welcome.full) && welcome.full.indexOf(ROOM) >= 0) {
      full = true;
      $("editor").hidden = true;
      $("full").hidden = false;
      status("the room is full");
      client.close();
      return;
    }
    connected = "connected as " + me + "; " + (welcome.replayed || 0) + " edits replayed";
  });
  client.on("state", function (state) {
    if (full || state === "closed") return; // the close listener says why
    status(state === "connected" ? connected : state + "...");
  });
  client.on("gap", function (gap) {
    // since=0 always reports one (0 is older than any history); later, edits were trimmed away.
    if (gap.since > 0) notice("Some edits made while you were away are gone; reload the page.");
  });
  client.on("joined", function (joined) {
    onJoined(joined);
    relock();
  });
  client.on("join", function (event) {
    if (event.group !== ROOM) return;
    people.set(event.uid, event.info || {});
    renderPeople();
    renderQuestions();
  });
  client.on("leave", function (event) {
    if (event.group !== ROOM) return;
    people.delete(event.uid);
    renderPeople();
  });
  client.on("lock", function (event) {
    if (event.group !== ROOM) return;
    locks.set(event.key, event.holder);
    var input = fieldOf(event.key);
    // Two took it at once and the other won: this page's typing stops here.
    if (input && document.activeElement === input && event.holder.client !== myClient) {
      input.blur();
    }
    renderQuestions();
  });
  client.on("unlock", function (event) {
    if (event.group !== ROOM) return;
    locks.delete(event.key);
    renderQuestions();
  });
  client.on("message", function (m) {
    if (m.group !== ROOM) return;
    try { apply(JSON.parse(m.data)); } catch (err) { console.warn("not an operation", err); }
  });
  client.on("close", function (closed) {
    if (full) return;
    if (closed.reconnect) {
      // The SDK comes back by itself; the locks this connection held end with it.
      mine = new Set();
      locks.forEach(function (holder, key) {
        if (holder.client === myClient) locks.delete(key);
      });
      renderQuestions();
      return;
    }
    status("disconnected (" + closed.code + (closed.reason ? " " + closed.reason : "") +
      "); reload to rejoin");
    people = new Map();
    locks = new Map();
    renderPeople();
    Array.from(document.querySelectorAll("#questions input, #questions button, #add input"))
      .forEach(function (el) { el.disabled = true; });
  });
  client.on("error", function (err) { notice(String(err.message)); });
  client.connect();
  joinRoom();
}

/** A token for who ({name, color}) in this form's room; rejects with the server's words. */
function fetchToken(who) {
  return fetch("/examples/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ app: "forms", name: who.name, color: who.color, room: ROOM }),
  }).then(function (res) {
    return res.json().then(function (body) {
      if (!res.ok) throw new Error(body.error || ("token refused: " + res.status));
      return body.token;
    });
  });
}

$("form-id").textContent = formId;
document.title = "deno-pusher forms: " + formId;
if (!/^[A-Za-z0-9_-]{1,64}$/.test(formId)) {
  $("login-error").textContent = "a form id is 1 to 64 letters, digits, _ or -";
  $("join").disabled = true;
}
$("color").value = "#" + Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, "0");

$("login").addEventListener("submit", function (e) {
  e.preventDefault();
  var who = { name: $("name").value.trim(), color: $("color").value };
  if (!who.name) return;
  $("join").disabled = true;
  $("login-error").textContent = "";
  fetchToken(who).then(function (token) {
    $("login").hidden = true;
    $("editor").hidden = false;
    connect(who, token);
  }).catch(function (err) {
    $("login-error").textContent = String(err.message || err);
    $("join").disabled = false;
  });
});

$("add").addEventListener("submit", function (e) {
  e.preventDefault();
  var text = $("new-text").value.trim();
  if (!text || !client) return;
  publish({ op: "add", id: newId(), text: text });
  $("new-text").value = "";
});
</script>
</body>
</html>
`;
