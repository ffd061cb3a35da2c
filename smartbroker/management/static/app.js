// smartbroker dashboard: vanilla JS over the management API, refreshed every 2 s.
// Message rates are computed here from successive counter readings.
"use strict";

const REFRESH_MS = 2000;
const PAGE_SIZE = 500; // rows per list and refresh (RabbitMQ's largest page)
const HISTORY = 60; // chart points (2 minutes)
const KEY = "smartbroker.auth";
const $ = (id) => document.getElementById(id);

let auth = sessionStorage.getItem(KEY);
let timer = null;
const previous = new Map(); // counter key -> {t, v}
const history = { publish: [], deliver: [], ack: [] };

class AuthError extends Error {}

async function api(path, options = {}) {
  const resp = await fetch("/api/" + path, {
    ...options,
    // X-Requested-With: the 401 then has no Basic challenge, so no browser login dialog
    headers: { Authorization: "Basic " + auth, "Content-Type": "application/json",
      "X-Requested-With": "XMLHttpRequest" },
  });
  if (resp.status === 401) throw new AuthError("Login failed");
  if (!resp.ok) {
    let reason = resp.statusText;
    try { reason = (await resp.json()).reason || reason; } catch (e) { /* not JSON */ }
    throw new Error(reason);
  }
  return resp.status === 204 ? null : resp.json();
}

// rate of a monotonically increasing counter, per second, since its last reading
function rate(key, value, now) {
  const prev = previous.get(key);
  previous.set(key, { t: now, v: value });
  if (!prev || now <= prev.t || value < prev.v) return 0;
  return (value - prev.v) / ((now - prev.t) / 1000);
}

const enc = encodeURIComponent;
const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r.toFixed(1));
function fmtBytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

// rows: arrays of cells; a cell is a value, or {text, cls, node, attrs}
function fill(tbodyId, rows, columns, rowAttrs) {
  const tbody = $(tbodyId);
  const frag = document.createDocumentFragment();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = columns;
    td.className = "empty";
    td.textContent = "none";
    tr.appendChild(td);
    frag.appendChild(tr);
  }
  rows.forEach((cells, i) => {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries((rowAttrs && rowAttrs[i]) || {})) tr.setAttribute(k, v);
    for (const cell of cells) {
      const td = document.createElement("td");
      const c = cell !== null && typeof cell === "object" ? cell : { text: cell };
      if (c.node) td.appendChild(c.node);
      else td.textContent = c.text == null ? "" : String(c.text);
      if (typeof c.text === "number" || c.num) td.classList.add("n");
      if (c.cls) td.classList.add(c.cls);
      for (const [k, v] of Object.entries(c.attrs || {})) td.setAttribute(k, v);
      tr.appendChild(td);
    }
    frag.appendChild(tr);
  });
  tbody.replaceChildren(frag);
}

function drawChart() {
  const svg = $("chart");
  const W = 600, H = 160, pad = 4;
  const all = [...history.publish, ...history.deliver, ...history.ack];
  const max = Math.max(1, ...all);
  const ns = "http://www.w3.org/2000/svg";
  const parts = [];
  for (let g = 1; g < 4; g++) {
    const line = document.createElementNS(ns, "line");
    const y = (H * g) / 4;
    Object.entries({ x1: 0, x2: W, y1: y, y2: y, stroke: "#eef0f3" })
      .forEach(([k, v]) => line.setAttribute(k, v));
    parts.push(line);
  }
  for (const [name, color] of [["publish", "#ff6600"], ["deliver", "#1f77b4"], ["ack", "#2ca02c"]]) {
    const pts = history[name];
    if (!pts.length) continue;
    const step = W / (HISTORY - 1);
    const x0 = W - (pts.length - 1) * step;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.map((v, i) =>
      `${(x0 + i * step).toFixed(1)},${(H - pad - (v / max) * (H - 2 * pad)).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("data-series", name);
    parts.push(line);
  }
  svg.replaceChildren(...parts);
  $("chart-max").textContent = `· scale ${fmtRate(max)} msg/s`;
}

function renderOverview(o, now) {
  const t = o.queue_totals || {}, obj = o.object_totals || {}, s = o.message_stats || {};
  $("node").textContent = `${o.product_name || ""} ${o.product_version || ""} · ${o.node || ""}`;
  $("t-messages").textContent = t.messages ?? 0;
  $("t-ready").textContent = t.messages_ready ?? 0;
  $("t-unacked").textContent = t.messages_unacknowledged ?? 0;
  $("t-connections").textContent = obj.connections ?? 0;
  $("t-queues").textContent = obj.queues ?? 0;
  $("t-consumers").textContent = obj.consumers ?? 0;
  // the Kafka listener's port(s), Kafka connections and the groups Kafka clients see
  const kafka = (o.listeners || []).filter((l) => String(l.protocol).startsWith("kafka"));
  for (const el of document.querySelectorAll(".card.kafka")) el.hidden = !kafka.length;
  $("t-kafka-port").textContent = kafka.map((l) =>
    l.protocol === "kafka/ssl" ? `${l.port} (TLS)` : `${l.port}`).join(", ") || "-";
  $("t-kafka-connections").textContent = (o.connection_totals || {}).kafka ?? 0;
  $("t-kafka-groups").textContent = (o.kafka || {}).groups ?? "-";
  const rates = {
    publish: rate("all.publish", s.publish || 0, now),
    deliver: rate("all.deliver", s.deliver_get || 0, now),
    ack: rate("all.ack", s.ack || 0, now),
  };
  for (const [k, v] of Object.entries(rates)) {
    $("r-" + k).textContent = fmtRate(v);
    history[k].push(v);
    if (history[k].length > HISTORY) history[k].shift();
  }
  drawChart();
}

function fmtUptime(ms) {
  const s = Math.floor((ms || 0) / 1000);
  if (s >= 86400) return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${s}s`;
}

// the cluster's nodes (one on a single node): down ones stay listed until forgotten
function renderNodes(nodes) {
  fill("nodes-body", nodes.map((n) => [n.name,
    { text: n.running ? "running" : "down", cls: n.running ? null : "down" },
    n.host ?? "", { text: n.amqp_port ?? "", num: true },
    { text: n.running ? fmtUptime(n.uptime) : "-", num: true },
    { text: n.mem_used == null ? "-" : fmtBytes(n.mem_used), num: true }]), 6,
    nodes.map((n) => ({ "data-node": n.name, "data-running": String(!!n.running) })));
}

function renderQueues(queues, now) {
  fill("queues-body", queues.map((q) => {
    const s = q.message_stats || {};
    const id = `q.${q.vhost}.${q.name}`;
    return [q.vhost, q.name, q.type,
      { text: q.messages ?? 0, attrs: { "data-col": "messages" } },
      q.messages_ready ?? 0, q.messages_unacknowledged ?? 0, q.consumers ?? 0,
      { text: fmtRate(rate(id + ".publish", s.publish || 0, now)), num: true },
      { text: fmtRate(rate(id + ".deliver", s.deliver_get || 0, now)), num: true }];
  }), 9, queues.map((q) => ({ "data-queue": q.name, "data-vhost": q.vhost })));
}

function renderStreams(streams) {
  const rows = [];
  for (const s of streams) {
    for (const p of s.partitions) {
      rows.push([s.vhost, s.name, p.partition, p.first_offset,
        p.last_offset == null ? { text: "-", num: true } : p.last_offset, p.messages,
        { text: fmtBytes(p.size_bytes), num: true }, p.segments]);
    }
  }
  fill("streams-body", rows, 8);
}

function renderGroups(groups) {
  const rows = [];
  for (const g of groups) {
    for (const p of g.partitions) {
      const state = g.protocol === "kafka" ? `${g.state} (Kafka)` : g.state;
      rows.push([g.vhost, g.queue, g.group, state, p.partition, p.owner || "-",
        p.committed_offset, p.end_offset,
        { text: p.lag, cls: p.lag > 1000 ? "lag-high" : null, attrs: { "data-col": "lag" } }]);
    }
  }
  fill("groups-body", rows, 9);
}

async function redrive(d, button) {
  button.disabled = true;
  const out = $("dlq-result");
  out.textContent = `redriving ${d.name}…`;
  try {
    let moved = 0, left = 0, result = null;
    for (;;) { // batches of 500, like `smartbroker dlq redrive`
      result = await api(`dlq/${enc(d.vhost)}/${enc(d.name)}/redrive`,
        { method: "POST", body: JSON.stringify({ limit: left + 500 }) });
      moved += result.moved;
      left = result.unroutable + result.skipped_no_death;
      out.textContent = `redriving ${d.name}: ${moved} moved…`;
      if (result.moved === 0 || result.remaining <= left) break;
    }
    out.textContent = `moved ${moved} message(s) from '${d.name}' back to where they died; ` +
      `${result.remaining} left in the queue` + (left ? ` (${left} cannot be routed)` : "");
  } catch (e) {
    if (e instanceof AuthError) return signOut(e.message);
    out.textContent = `redrive of '${d.name}' failed: ${e.message}`;
  } finally {
    button.disabled = false;
    refresh();
  }
}

function renderDlq(dlqs) {
  fill("dlq-body", dlqs.map((d) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Redrive";
    button.dataset.redrive = d.name;
    button.disabled = !d.messages;
    button.addEventListener("click", () => redrive(d, button));
    return [d.vhost, d.name, { text: d.messages, attrs: { "data-col": "messages" } },
      (d.dead_letter_sources || []).join(", "), (d.oldest || {}).reason || "",
      (d.oldest || {}).time || "", { node: button }];
  }), 7, dlqs.map((d) => ({ "data-dlq": d.name })));
}

async function refresh() {
  clearTimeout(timer);
  const now = Date.now();
  const names = ["overview", "nodes", "queues", "exchanges", "bindings", "connections", "streams",
    "groups", "dlq"];
  // lists are asked for one bounded page each: a broker with 20k queues renders 500 rows
  // per refresh, not 20k (the envelope's total_count says how many there are)
  const results = await Promise.allSettled(names.map((n) =>
    api(n === "overview" || n === "nodes" ? n : `${n}?page=1&page_size=${PAGE_SIZE}`)));
  const failed = results.find((r) => r.status === "rejected" && r.reason instanceof AuthError);
  if (failed) return signOut(failed.reason.message);
  const truncated = [];
  const data = Object.fromEntries(names.map((n, i) => {
    const value = results[i].status === "fulfilled" ? results[i].value : null;
    if (value && Array.isArray(value.items)) {
      if (value.total_count > value.items.length) truncated.push(`${n} ${value.items.length}/${value.total_count}`);
      return [n, value.items];
    }
    return [n, value];
  }));
  if (data.overview) renderOverview(data.overview, now);
  if (data.nodes) renderNodes(data.nodes);
  if (data.queues) renderQueues(data.queues, now);
  if (data.exchanges) {
    fill("exchanges-body", data.exchanges.map((e) =>
      [e.vhost, e.name || "(AMQP default)", e.type, e.durable ? "yes" : "no"]), 4);
  }
  if (data.bindings) {
    fill("bindings-body", data.bindings.filter((b) => b.source !== "").map((b) =>
      [b.vhost, b.source, `${b.destination} (${b.destination_type})`, b.routing_key]), 4);
  }
  if (data.connections) {
    fill("connections-body", data.connections.map((c) => {
      const p = c.client_properties || {};
      return [c.name, c.user, c.vhost, c.channels, [p.product, p.version].filter(Boolean).join(" "),
        { text: fmtBytes(c.recv_oct), num: true }, { text: fmtBytes(c.send_oct), num: true }];
    }), 7);
  }
  if (data.streams) renderStreams(data.streams);
  if (data.groups) renderGroups(data.groups);
  if (data.dlq) renderDlq(data.dlq);
  const errors = results.filter((r) => r.status === "rejected").length;
  $("status").textContent = errors ? `${errors} request(s) failed` : "connected";
  $("updated").textContent = "updated " + new Date(now).toLocaleTimeString() +
    (truncated.length ? ` (first page only: ${truncated.join(", ")})` : "");
  timer = setTimeout(refresh, REFRESH_MS);
}

function signOut(message) {
  clearTimeout(timer);
  auth = null;
  sessionStorage.removeItem(KEY);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("status").textContent = "signed out";
  $("login-error").textContent = message || "";
}

async function signIn(user, password, quiet = false) {
  auth = btoa(unescape(encodeURIComponent(`${user}:${password}`)));
  try {
    const me = await api("whoami");
    sessionStorage.setItem(KEY, auth);
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("status").textContent = `signed in as ${me.name}`;
    refresh();
  } catch (e) {
    signOut(quiet ? "" : e instanceof AuthError ? "Login failed"
      : `cannot reach the broker: ${e.message}`);
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("user").value, $("password").value);
});
$("logout").addEventListener("click", () => signOut(""));

if (auth) {
  const [user, ...rest] = decodeURIComponent(escape(atob(auth))).split(":");
  signIn(user, rest.join(":"));
} else {
  signIn("guest", "guest", true); // RabbitMQ's default user; the form appears if it is refused
}
