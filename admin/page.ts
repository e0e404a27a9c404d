/**
 * The admin page (GET /admin, see admin/routes.ts): what the server holds and what it did, live,
 * and forms to act on it. One HTML document with its style and its module script inline, kept as
 * strings so that the compiled executable serves it without files beside it; no build step, no
 * framework.
 *
 * The page itself holds no data: every figure comes from /api and /metrics, fetched by the script
 * with the API key (as `Authorization: Bearer`), polled every POLL_MS. The key is typed in once and
 * kept in the tab's sessionStorage, never in a URL; with API_KEYS empty the server answers loopback
 * callers without one, and so does the page. Every piece of server text reaches the page through
 * textContent, never as HTML, and routes.ts serves it under a Content-Security-Policy that allows
 * this style and this script (by their hashes) and nothing else.
 *
 * The script avoids backticks, dollar-brace and backslashes, which would end, splice or escape
 * these template strings.
 */

/** The page's style: the text between its <style> tags, hashed by the CSP. */
export const ADMIN_STYLE = `
  * { box-sizing: border-box; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1f2430; background: #eef0f4; }
  header { background: #2b3a55; color: #fff; padding: 8px 16px; display: flex; gap: 14px;
    align-items: center; }
  header h1 { font-size: 17px; margin: 0; }
  #state { font-size: 13px; opacity: .9; flex: 1; }
  #state.error { color: #ffb4b4; opacity: 1; }
  header button { font: inherit; font-size: 12px; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 12px;
    padding: 12px; }
  section { background: #fff; border-radius: 6px; padding: 10px 12px; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 14px; margin: 0 0 8px; color: #4a5263; }
  h2 small { font-weight: normal; color: #7a8294; }
  #login { max-width: 460px; margin: 48px auto; }
  #login input { font: inherit; padding: 6px; width: 260px; }
  .error { color: #b00020; }
  .muted { color: #7a8294; }
  #counts { display: flex; gap: 10px; flex-wrap: wrap; }
  .count { background: #f4f6fa; border-radius: 6px; padding: 6px 12px; min-width: 110px; }
  .count b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
  .count span { font-size: 12px; color: #5a6275; }
  #chart { width: 100%; height: auto; display: block; background: #fbfcfe;
    border: 1px solid #e3e6ec; border-radius: 4px; }
  #legend { font-size: 12px; margin-top: 4px; display: flex; gap: 14px; flex-wrap: wrap; }
  .key { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
    margin-right: 4px; vertical-align: -1px; }
  .key.accepted { background: #3366cc; }
  .key.sent { background: #2e9e5b; }
  .key.slow { background: #d13a3a; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th { text-align: left; color: #5a6275; font-weight: 600; border-bottom: 1px solid #dde1e8;
    padding: 3px 6px; white-space: nowrap; }
  td { border-bottom: 1px solid #eef0f4; padding: 3px 6px; vertical-align: top;
    overflow-wrap: anywhere; }
  tr.selected td { background: #e4ecff; }
  #clients tbody tr { cursor: pointer; }
  #clients tbody tr:hover td { background: #f2f5fb; }
  .scroll { max-height: 300px; overflow: auto; }
  code, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
  input, select, textarea, button { font: inherit; }
  input, select, textarea { padding: 4px 6px; border: 1px solid #c8cdd7; border-radius: 4px; }
  button { padding: 4px 10px; border: 1px solid #9aa3b5; border-radius: 4px; background: #f7f8fb;
    cursor: pointer; }
  button:hover { background: #e8ecf4; }
  button.danger { border-color: #d9a3a3; color: #a11; }
  .bar { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
  #lists { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
  #lists ul { list-style: none; margin: 0; padding: 0; max-height: 260px; overflow: auto; }
  #lists li { padding: 2px 0; }
  #lists summary { cursor: pointer; }
  #lists summary .n { color: #5a6275; font-size: 12px; margin-left: 4px; }
  #lists li ul { margin: 2px 0 4px 18px; }
  #lists li li button { all: unset; cursor: pointer; color: #2554b5; font-family: ui-monospace,
    monospace; font-size: 12px; }
  #detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
  #detail dt { color: #5a6275; }
  #detail dd { margin: 0; overflow-wrap: anywhere; }
  .status { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px;
    background: #e8eaef; }
  .status.delivered { background: #dcefe3; color: #1d6b3d; }
  .status.acked { background: #cfe3ff; color: #1b4d99; }
  .status.queued, .status.accepted { background: #fff1cc; color: #7a5a00; }
  .status.offline, .status.expired, .status.interrupted { background: #eceef2; color: #5a6275; }
  .status.failed, .status.dropped { background: #fbd9d9; color: #a11; }
  #actions form { display: flex; gap: 6px; align-items: center; flex-wrap: wrap;
    margin-bottom: 8px; }
  #actions label { color: #5a6275; min-width: 92px; }
  #send-message { flex: 1; min-width: 200px; }
  output { display: block; font-size: 13px; margin: -2px 0 10px 98px; min-height: 1.2em; }
  [hidden] { display: none !important; }
`;

/** The page's module script: the text between its <script> tags, hashed by the CSP. */
export const ADMIN_SCRIPT = `
/** Where the tab keeps the API key: this tab's session only, never a URL. */
const KEY_ITEM = "deno-pusher-admin-key";
/** How often the figures are fetched, in ms: the chart's step. */
const POLL_MS = 1000;
/** Points the chart keeps: two minutes at POLL_MS. */
const SAMPLES = 120;
/** Most connections, uids and groups listed: one page of /api (its limit's bound). */
const LIST_LIMIT = 1000;
/** Messages of the log shown per page. */
const LOG_LIMIT = 50;

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY_ITEM);
/** Whether the live view is shown: polling stops when it is not. */
let live = false;
/** The next tick's timer; a tick under way, and whether another was asked for meanwhile. */
let timer = undefined;
let busy = false;
let again = false;
/** Each /metrics reading: { t, accepted, sent, slow, pending }. */
const samples = [];
/** What the last tick fetched, to draw only what changed. */
const last = { clients: "", lists: "", log: "" };
let clients = [];
let selected = null;
/** The uids and groups whose connections are shown (kept across redraws). */
const opened = new Set();
/** The log's query: { uid, id, before }, and where its next (older) page starts. */
let logQuery = { uid: "", id: "", before: null };
let logNext = null;

/** An element with attributes and children; strings become text, never HTML. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

/** An answer of the server the page cannot go on with: a refused key, or no loopback. */
class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Calls the server with the key; answers { status, body } for any status but 401 and 403, which
 * throw Refused. A network failure throws as fetch does.
 */
async function call(method, path, body) {
  const headers = {};
  if (key) headers.authorization = "Bearer " + key;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (res.status === 401 || res.status === 403) {
    throw new Refused(res.status, (parsed && parsed.error) || text);
  }
  return { status: res.status, body: parsed, text };
}

/** The body of a 2xx answer, or an Error with the server's own words. */
async function get(path) {
  const res = await call("GET", path);
  if (res.status >= 300) throw new Error((res.body && res.body.error) || res.text);
  return res.body;
}

const enc = encodeURIComponent;
const plural = (n, noun) => n + " " + noun + (n === 1 ? "" : "s");
const clip = (text, n) => (text.length > n ? text.slice(0, n) + "…" : text);
const time = (ms) => new Date(ms).toLocaleTimeString();
const shortId = (id) => id.slice(0, 8);

function since(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function setState(text, error) {
  $("state").textContent = text;
  $("state").className = error ? "error" : "";
}

// ---- Logging in: the key is asked for only when the server wants one. ----

function showLogin(message) {
  live = false;
  clearTimeout(timer);
  $("app").hidden = true;
  $("login").hidden = false;
  $("forget").hidden = true;
  $("login-error").textContent = message || "";
  setState("not logged in");
  $("key").focus();
}

/** Asks the server whether this tab may read /api, then goes live or asks for the key. */
async function start() {
  try {
    await get("/api/clients/count");
  } catch (err) {
    if (err instanceof Refused && err.status === 401) {
      const had = key;
      forgetKey();
      return showLogin(had ? "That key was refused: " + err.message : "");
    }
    if (err instanceof Refused) {
      $("login-form").hidden = true;
      return showLogin(err.message);
    }
    return showLogin("The server cannot be reached: " + err.message);
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("forget").hidden = !key;
  $("auth").textContent = key
    ? "API key kept for this tab"
    : "no API key needed: API_KEYS is empty and this browser is on loopback";
  live = true;
  refresh();
}

function forgetKey() {
  key = null;
  sessionStorage.removeItem(KEY_ITEM);
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  $("key").value = "";
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  start();
});

$("forget").addEventListener("click", () => {
  forgetKey();
  showLogin("The key was forgotten.");
});

// ---- The live view: one tick reads everything, then draws what changed. ----

/** Reads and draws now (after the tick under way, if one is), then every POLL_MS. */
function refresh() {
  if (busy) {
    again = true;
    return;
  }
  clearTimeout(timer);
  busy = true;
  tick().finally(() => {
    busy = false;
    if (!live) return;
    if (again) {
      again = false;
      refresh();
    } else timer = setTimeout(refresh, POLL_MS);
  });
}

async function tick() {
  try {
    const [nClients, nUids, nGroups, metrics, clientPage, uidPage, groupPage] = await Promise.all([
      get("/api/clients/count"),
      get("/api/uids/count"),
      get("/api/groups/count"),
      call("GET", "/metrics").then((r) => r.text),
      get("/api/clients?limit=" + LIST_LIMIT),
      get("/api/uids?limit=" + LIST_LIMIT),
      get("/api/groups?limit=" + LIST_LIMIT),
    ]);
    const m = parseMetrics(metrics);
    drawCounts(nClients.count, nUids.count, nGroups.count, m);
    sample(m);
    drawChart();
    drawClients(clientPage);
    drawLists(clientPage, uidPage, groupPage);
    drawDetail();
    await readLog();
    setState("live: updated " + time(Date.now()));
  } catch (err) {
    if (err instanceof Refused) {
      forgetKey();
      return showLogin("The server refused the key: " + err.message);
    }
    setState("cannot read the server: " + err.message + " (trying again)", true);
  }
}

/** Prometheus text: name (with labels) to value. */
function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split(String.fromCharCode(10))) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

function drawCounts(connections, uids, groups, m) {
  const figures = [
    ["connections", connections, "connections"],
    ["uids", uids, "uids online"],
    ["groups", groups, "groups"],
    ["pending", m.get("pending") || 0, "frames queued (all connections)"],
    ["slow", m.get("slow_consumers_total") || 0, "slow consumers cut off"],
    ["accepted", m.get("messages_accepted_total") || 0, "messages accepted"],
  ];
  $("counts").replaceChildren(
    ...figures.map(([id, n, label]) =>
      el("div", { class: "count", id: "count-" + id }, el("b", {}, n), el("span", {}, label))
    ),
  );
}

function sample(m) {
  samples.push({
    t: Date.now(),
    accepted: m.get("messages_accepted_total") || 0,
    sent: m.get("messages_sent_total") || 0,
    slow: m.get("slow_consumers_total") || 0,
    pending: m.get("pending") || 0,
  });
  if (samples.length > SAMPLES + 1) samples.shift();
}

/** Per-second rates between consecutive samples: { accepted, sent, slow } for each step. */
function rates() {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    const dt = Math.max(0.001, (b.t - a.t) / 1000);
    // A counter that went down is a restarted server: that step counts from zero.
    const step = (name) => (b[name] >= a[name] ? b[name] - a[name] : b[name]);
    out.push({ accepted: step("accepted") / dt, sent: step("sent") / dt, slow: step("slow") });
  }
  return out;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/** Messages per second (accepted, sent) as lines; slow consumers cut off as red bars. */
function drawChart() {
  const W = 600;
  const H = 150;
  const top = 14;
  const bottom = H - 16;
  const r = rates();
  const peak = Math.max(1, ...r.map((p) => Math.max(p.accepted, p.sent)));
  const scale = niceCeil(peak);
  const x = (i) => W - (r.length - 1 - i) * (W / SAMPLES);
  const y = (v) => bottom - (v / scale) * (bottom - top);
  const chart = $("chart");
  chart.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    const at = y(scale * f);
    chart.append(svg("line", { x1: 0, x2: W, y1: at, y2: at, stroke: "#e3e6ec" }));
    const label = svg("text", { x: 4, y: at - 2, "font-size": 10, fill: "#7a8294" });
    label.textContent = formatRate(scale * f) + "/s";
    chart.append(label);
  }
  const axis = svg("text", {
    x: W - 4,
    y: H - 3,
    "font-size": 10,
    fill: "#7a8294",
    "text-anchor": "end",
  });
  axis.textContent = "last " + Math.round((SAMPLES * POLL_MS) / 60000) + " min";
  chart.append(axis);
  r.forEach((p, i) => {
    if (p.slow > 0) {
      const h = Math.min(bottom - top, 12 + 6 * p.slow);
      const bar = { x: x(i) - 2, y: bottom - h, width: 4, height: h, fill: "#d13a3a" };
      chart.append(svg("rect", bar));
    }
  });
  for (const [name, color] of [["accepted", "#3366cc"], ["sent", "#2e9e5b"]]) {
    if (r.length === 0) continue;
    const points = r.map((p, i) => x(i).toFixed(1) + "," + y(p[name]).toFixed(1)).join(" ");
    chart.append(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 1.6 }));
  }
  const now = r[r.length - 1] || { accepted: 0, sent: 0 };
  const lastSample = samples[samples.length - 1];
  const slowSeen = r.reduce((n, p) => n + p.slow, 0);
  const entry = (kind, text) => el("span", {}, el("i", { class: "key " + kind }), text);
  $("legend").replaceChildren(
    entry("accepted", "accepted " + formatRate(now.accepted) + "/s"),
    entry("sent", "pushes written " + formatRate(now.sent) + "/s"),
    entry("slow", "slow consumers cut off: " + slowSeen),
    el("span", { class: "muted" }, "queued frames now: " + (lastSample ? lastSample.pending : 0)),
  );
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const f of [1, 2, 5, 10]) if (v <= f * p) return f * p;
  return 10 * p;
}

const formatRate = (v) => (v >= 10 || v === 0 ? Math.round(v).toString() : v.toFixed(1));

// ---- Connections, uids and groups ----

function matches(client, q) {
  if (!q) return true;
  return client.id.toLowerCase().includes(q) ||
    (client.uid || "").toLowerCase().includes(q) ||
    client.groups.some((g) => g.toLowerCase().includes(q));
}

function drawClients(page) {
  const q = $("find").value.trim().toLowerCase();
  const json = JSON.stringify([page, q, selected]);
  if (json === last.clients) return;
  last.clients = json;
  clients = page.items;
  const shown = clients.filter((c) => matches(c, q));
  $("clients-note").textContent = page.total > page.items.length
    ? "the first " + page.items.length + " of " + page.total
    : shown.length + " of " + page.total;
  $("clients-body").replaceChildren(
    ...shown.map((c) =>
      el(
        "tr",
        {
          dataset: { id: c.id, uid: c.uid || "" },
          class: c.id === selected ? "selected" : null,
          onclick: () => select(c.id),
        },
        el("td", { class: "mono", title: c.id }, shortId(c.id)),
        el("td", { class: "uid" }, c.uid === null ? el("i", { class: "muted" }, "unbound") : c.uid),
        el("td", { class: "groups" }, c.groups.join(", ")),
        el("td", {}, c.format),
        el("td", { title: new Date(c.connectedAt).toISOString() }, time(c.connectedAt)),
        el("td", {}, el("button", {
          class: "danger close",
          type: "button",
          title: "close this connection (4009)",
          onclick: (e) => {
            e.stopPropagation();
            closeClient(c.id, $("close-result"));
          },
        }, "close")),
      )
    ),
  );
}

function select(id) {
  selected = selected === id ? null : id;
  last.clients = "";
  refresh();
}

/** The selected connection's details, as the last list of connections had them. */
function drawDetail() {
  const c = clients.find((client) => client.id === selected);
  $("detail").hidden = !c;
  if (!c) return;
  const row = (name, value) => [el("dt", {}, name), el("dd", {}, value)];
  const m = samples[samples.length - 1];
  $("detail-list").replaceChildren(
    ...row("connection", el("code", {}, c.id)),
    ...row("uid", c.uid === null ? "(unbound)" : c.uid),
    ...row("groups", c.groups.length ? c.groups.join(", ") : "(none)"),
    ...row("format", c.format),
    ...row("connected", time(c.connectedAt) + ", for " + since(c.connectedAt)),
    ...row("info", el("code", {}, JSON.stringify(c.info))),
    ...row(
      "queue",
      c.queuedBytes + " bytes waiting (all connections together: " + (m ? m.pending : 0) +
        " frames)",
    ),
  );
}

function drawLists(clientPage, uidPage, groupPage) {
  const q = $("find").value.trim().toLowerCase();
  const json = JSON.stringify([clientPage, uidPage, groupPage, q, [...opened]]);
  if (json === last.lists) return;
  last.lists = json;
  const byUid = new Map();
  const byGroup = new Map();
  for (const c of clientPage.items) {
    if (c.uid !== null) byUid.set(c.uid, [...(byUid.get(c.uid) || []), c]);
    for (const g of c.groups) byGroup.set(g, [...(byGroup.get(g) || []), c]);
  }
  const partial = clientPage.total > clientPage.items.length;
  const list = (kind, page, members) => {
    const names = page.items.filter((n) => n.toLowerCase().includes(q));
    const counted = page.total > page.items.length
      ? "the first " + page.items.length + " of " + page.total
      : names.length + " of " + page.total;
    $(kind + "-note").textContent = counted + (partial ? ", in the listed connections" : "");
    $(kind + "-list").replaceChildren(
      ...names.map((name) => {
        const of = members.get(name) || [];
        const details = el(
          "details",
          { open: opened.has(kind + ":" + name) },
          el("summary", {}, name, el("span", { class: "n" }, plural(of.length, "connection"))),
          el(
            "ul",
            {},
            ...of.map((c) =>
              el(
                "li",
                {},
                el("button", { type: "button", onclick: () => select(c.id) }, shortId(c.id)),
                " " + (kind === "uid" ? c.groups.join(", ") : c.uid || "(unbound)"),
              )
            ),
          ),
        );
        details.addEventListener("toggle", () => {
          if (details.open) opened.add(kind + ":" + name);
          else opened.delete(kind + ":" + name);
        });
        return el("li", { dataset: { [kind]: name } }, details);
      }),
    );
  };
  list("uid", uidPage, byUid);
  list("group", groupPage, byGroup);
}

$("find").addEventListener("input", () => {
  last.clients = "";
  last.lists = "";
  refresh();
});

// ---- The message log ----

/** Reads the log as its query says: one id, one uid's latest, or everyone's latest. */
async function readLog() {
  let page;
  const note = $("log-note");
  try {
    if (logQuery.id) {
      const res = await call("GET", "/api/messages/" + enc(logQuery.id));
      if (res.status === 404) {
        page = { items: [], next: null, error: res.body && res.body.error };
      } else if (res.status >= 300) throw new Error((res.body && res.body.error) || res.text);
      else page = { items: [res.body], next: null };
    } else {
      const query = new URLSearchParams({ limit: String(LOG_LIMIT) });
      if (logQuery.uid) query.set("uid", logQuery.uid);
      if (logQuery.before) query.set("before", String(logQuery.before));
      const res = await call("GET", "/api/messages?" + query);
      if (res.status >= 300) page = { items: [], next: null, error: res.body && res.body.error };
      else page = res.body;
    }
  } catch (err) {
    if (err instanceof Refused) throw err;
    page = { items: [], next: null, error: err.message };
  }
  const json = JSON.stringify([page, logQuery]);
  if (json === last.log) return;
  last.log = json;
  logNext = page.next;
  $("log-older").hidden = page.next === null || page.next === undefined;
  $("log-latest").hidden = !logQuery.before;
  const order = logQuery.before ? ", older than " + logQuery.before : ", newest first";
  note.textContent = page.error ||
    (logQuery.id
      ? "message " + logQuery.id
      : (logQuery.uid ? "to uid " + logQuery.uid : "all targets") + order);
  note.className = page.error ? "error" : "muted";
  $("messages-body").replaceChildren(
    ...page.items.map((m) =>
      el(
        "tr",
        { dataset: { id: m.id } },
        el("td", { class: "mono" }, m.id),
        el("td", { title: new Date(m.ts).toISOString() }, time(m.ts)),
        el("td", { class: "target" }, m.target),
        el("td", { class: "message", title: m.message }, clip(m.message, 120)),
        el("td", {}, el("span", { class: "status " + m.status }, m.status)),
        el("td", { class: "written" }, m.written),
        el("td", { class: "acked" }, m.acked),
      )
    ),
  );
}

$("log-form").addEventListener("submit", (e) => {
  e.preventDefault();
  logQuery = { uid: $("log-uid").value.trim(), id: $("log-id").value.trim(), before: null };
  refresh();
});
$("log-clear").addEventListener("click", () => {
  $("log-uid").value = "";
  $("log-id").value = "";
  logQuery = { uid: "", id: "", before: null };
  refresh();
});
$("log-older").addEventListener("click", () => {
  logQuery = { ...logQuery, before: logNext };
  refresh();
});
$("log-latest").addEventListener("click", () => {
  logQuery = { ...logQuery, before: null };
  refresh();
});

// ---- Actions ----

/** Shows an action's answer: the server's error, or what ok() makes of its body. */
function report(out, res, ok) {
  const failed = res.status >= 300;
  out.textContent = failed ? (res.body && res.body.error) || res.text : ok(res.body, res.status);
  out.className = failed ? "error" : "";
  last.clients = "";
  last.lists = "";
  last.log = "";
  refresh();
}

async function act(out, run) {
  out.textContent = "…";
  out.className = "muted";
  try {
    await run();
  } catch (err) {
    if (err instanceof Refused) {
      forgetKey();
      return showLogin("The server refused the key: " + err.message);
    }
    out.textContent = String(err.message || err);
    out.className = "error";
  }
}

$("send-to").addEventListener("change", () => {
  const everyone = $("send-to").value === "all";
  $("send-target").disabled = everyone;
  $("send-target").required = !everyone;
  $("send-target").placeholder = everyone ? "every connection" : $("send-to").value;
});

$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const to = $("send-to").value;
  const target = $("send-target").value.trim();
  const path = {
    uid: "/api/uids/" + enc(target) + "/send",
    group: "/api/groups/" + enc(target) + "/send",
    client: "/api/clients/" + enc(target) + "/send",
    all: "/api/broadcast",
  }[to];
  const out = $("send-result");
  act(out, async () => {
    const res = await call("POST", path, { message: $("send-message").value });
    report(out, res, (b, status) =>
      "message " + b.id + ": " + (status === 202
        ? "queued for the uid's next connection"
        : "delivered to " + b.delivered + " of " + plural(b.connections, "connection")));
  });
});

function closeClient(id, out) {
  act(out, async () => {
    const res = await call("DELETE", "/api/clients/" + enc(id));
    report(out, res, () => "closed connection " + shortId(id) + " (4009)");
  });
}

$("close-form").addEventListener("submit", (e) => {
  e.preventDefault();
  closeClient($("close-id").value.trim(), $("close-result"));
});

$("logout-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const uid = $("logout-uid").value.trim();
  const out = $("logout-result");
  act(out, async () => {
    const res = await call("DELETE", "/api/uids/" + enc(uid));
    report(out, res, (b) =>
      "logged " + uid + " out: " + plural(b.closed, "connection") + " closed (4009)");
  });
});

start();
`;

/** The whole page. */
export const ADMIN_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>deno-pusher admin</title>
<style>${ADMIN_STYLE}</style>
</head>
<body>
<header>
  <h1>deno-pusher admin</h1>
  <span id="state">starting</span>
  <span id="auth" class="muted"></span>
  <button id="forget" type="button" hidden>Forget the key</button>
</header>
<section id="login" hidden>
  <h2>Log in</h2>
  <form id="login-form">
    <p>Type one of the server's <code>API_KEYS</code>. It is kept in this tab's session only, and
    sent with every call to <code>/api</code> and <code>/metrics</code>.</p>
    <input id="key" type="password" autocomplete="off" placeholder="API key" required>
    <button id="login-button">Open</button>
  </form>
  <p id="login-error" class="error" role="alert"></p>
</section>
<main id="app" hidden>
  <section>
    <h2>Now</h2>
    <div id="counts"></div>
  </section>
  <section>
    <h2>Messages per second <small>from /metrics</small></h2>
    <svg id="chart" viewBox="0 0 600 150" role="img"
      aria-label="messages per second and slow consumers"></svg>
    <div id="legend"></div>
  </section>
  <section class="wide">
    <div class="bar">
      <h2>Connections <small id="clients-note"></small></h2>
      <input id="find" type="search" placeholder="search uid, group or connection id" size="36">
    </div>
    <div class="scroll">
      <table id="clients">
        <thead><tr><th>connection</th><th>uid</th><th>groups</th><th>format</th>
          <th>connected at</th><th></th></tr></thead>
        <tbody id="clients-body"></tbody>
      </table>
    </div>
    <div id="detail" hidden>
      <h2>Connection</h2>
      <dl id="detail-list"></dl>
    </div>
  </section>
  <section>
    <h2>Uids and groups <small>(the search above filters them too)</small></h2>
    <div id="lists">
      <div><h2>Uids <small id="uid-note"></small></h2><ul id="uid-list"></ul></div>
      <div><h2>Groups <small id="group-note"></small></h2><ul id="group-list"></ul></div>
    </div>
  </section>
  <section id="actions">
    <h2>Act</h2>
    <form id="send-form">
      <label for="send-to">Send to</label>
      <select id="send-to">
        <option value="uid">uid</option>
        <option value="group">group</option>
        <option value="client">connection</option>
        <option value="all">everyone</option>
      </select>
      <input id="send-target" placeholder="uid" required size="14">
      <input id="send-message" placeholder="message" required>
      <button id="send-button">Send</button>
    </form>
    <output id="send-result"></output>
    <form id="close-form">
      <label for="close-id">Close</label>
      <input id="close-id" placeholder="connection id" required size="38">
      <button id="close-button" class="danger">Close connection</button>
    </form>
    <output id="close-result"></output>
    <form id="logout-form">
      <label for="logout-uid">Log out</label>
      <input id="logout-uid" placeholder="uid" required size="14">
      <button id="logout-button" class="danger">Log the uid out</button>
    </form>
    <output id="logout-result"></output>
  </section>
  <section class="wide">
    <div class="bar">
      <h2>Message log <small id="log-note"></small></h2>
      <form id="log-form" class="bar">
        <input id="log-uid" placeholder="uid" size="14">
        <input id="log-id" placeholder="message id" size="10" inputmode="numeric">
        <button id="log-search">Search</button>
        <button id="log-clear" type="button">All</button>
      </form>
    </div>
    <div class="scroll">
      <table id="messages">
        <thead><tr><th>id</th><th>at</th><th>target</th><th>message</th><th>status</th>
          <th>written</th><th>acked</th></tr></thead>
        <tbody id="messages-body"></tbody>
      </table>
    </div>
    <div class="bar">
      <button id="log-older" type="button" hidden>Older</button>
      <button id="log-latest" type="button" hidden>Back to the latest</button>
    </div>
  </section>
</main>
<script type="module">${ADMIN_SCRIPT}</script>
</body>
</html>
`;
