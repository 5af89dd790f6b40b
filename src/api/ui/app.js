// The Aqueduct dashboard: reads this peer's API and its event stream, and
// writes only the A/B switch. Vanilla JavaScript, no dependencies.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const ACTIVITY_MAX = 200;
const TOKEN_KEY = "aqueduct.apiToken";

const state = {
  frontends: [],
  backends: [],
  registrations: new Map(), // service name -> registrations
  stats: null, // the latest snapshot
  history: new Map(), // "frontend web" / "backend api" -> [{at, sessions, rate}]
  signatures: new Map(), // backend -> what its card was built from
  pollOk: true,
  streamOk: null,
  needsToken: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// --- API ------------------------------------------------------------------

// Every request carries the token typed into the page, if any: a peer with
// tokens answers nothing but /health and these files without one. The token
// lives in sessionStorage (this tab only, gone when it closes), never in a URL.
function withToken(headers) {
  const token = $("api-token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

async function get(path) {
  const response = await fetch(path, { headers: withToken({ Accept: "application/json" }) });
  if (response.status === 401) state.needsToken = true;
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  state.needsToken = false;
  return response.json();
}

async function write(method, path, body) {
  const headers = withToken({ "Content-Type": "application/json", Accept: "application/json" });
  const response = await fetch(path, { method, headers, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
  return answer;
}

// --- connection state -------------------------------------------------------

function showConnection() {
  const node = $("connection");
  // streamOk is null until the stream has answered or failed once.
  let value = "connecting";
  if (state.needsToken) value = "token";
  else if (!state.pollOk || state.streamOk === false) value = "disconnected";
  else if (state.streamOk) value = "connected";
  node.dataset.state = value;
  const labels = {
    connected: "live",
    connecting: "connecting…",
    disconnected: "disconnected",
    token: "this peer needs an API token",
  };
  node.textContent = labels[value];
}

// --- health -------------------------------------------------------------------

// HAProxy's `status` reduced to one word: `UP 1/3` is still UP, `no check`
// is NOCHECK.
function health(status) {
  if (!status) return "UNKNOWN";
  const word = status.trim().split(/\s+/)[0].toUpperCase();
  return word === "NO" ? "NOCHECK" : word;
}

function statRow(proxy, name) {
  if (!state.stats) return undefined;
  return state.stats.rows.find((row) => row.proxy === proxy && row.name === name);
}

function memberKey(member) {
  return `${member.host}:${member.port}`;
}

// --- overview -------------------------------------------------------------------

function renderFrontends() {
  const list = $("frontends");
  list.replaceChildren();
  if (state.frontends.length === 0) list.append(el("p", { class: "muted", text: "no frontends" }));
  for (const frontend of state.frontends) {
    const rules = el("ul", { class: "rules" });
    for (const rule of frontend.rules) {
      const what = [rule.header, rule.operation, rule.value].filter((x) => x).join(" ");
      rules.append(el("li", { "data-rule-backend": rule.backend, text: `${rule.type} ${what} → ${rule.backend}` }));
    }
    list.append(
      el("div", { class: "card frontend", "data-frontend": frontend.key },
        el("div", { class: "title", text: frontend.key }),
        el("div", { class: "meta" },
          el("span", { class: "bind", text: frontend.bind }), ` · ${frontend.mode} · default → `,
          el("span", { class: "default-backend", text: frontend.backend }), " · ",
          el("span", { class: "sessions" }), " sessions · ",
          el("span", { class: "request-rate" }), " req/s"),
        rules));
  }
}

// What a backend's card is built from (not lease renewal times, which
// change with every heartbeat).
function backendSignature(backend) {
  const versions = backend.type === "dynamic" ? [...versionCounts(backend.name)] : null;
  const { key, type, name, version, mode, balance } = backend;
  return JSON.stringify([key, type, name, version, mode, balance, backend.members.map(memberKey), versions]);
}

// Live instances per version of a service.
function versionCounts(service) {
  const counts = new Map();
  for (const registration of state.registrations.get(service) || []) {
    counts.set(registration.version, (counts.get(registration.version) || 0) + 1);
  }
  return counts;
}

function versionSelector(backend) {
  const counts = versionCounts(backend.name);
  if (!counts.has(backend.version)) counts.set(backend.version, 0);
  const select = el("select", { class: "version-select", "data-version-select": backend.key });
  for (const version of [...counts.keys()].sort()) {
    const option = el("option", { value: version, text: `${version} (${counts.get(version)} live)` });
    if (version === backend.version) option.selected = true;
    select.append(option);
  }
  const error = el("div", { class: "switch-error", "data-switch-error": backend.key });
  select.addEventListener("change", async () => {
    error.textContent = "";
    try {
      await write("POST", `/backends/${encodeURIComponent(backend.key)}`, { version: select.value });
      await refresh();
    } catch (e) {
      error.textContent = e.message;
      select.value = backend.version;
    }
  });
  return el("div", { class: "switch" }, el("label", { text: "version " }, select), error);
}

function renderBackends() {
  const list = $("backends");
  const keys = new Set(state.backends.map((b) => b.key));
  for (const card of [...list.querySelectorAll("[data-backend]")]) {
    if (!keys.has(card.dataset.backend)) card.remove();
  }
  list.querySelector(".muted")?.remove();
  if (state.backends.length === 0) list.append(el("p", { class: "muted", text: "no backends" }));
  for (const backend of state.backends) {
    const signature = backendSignature(backend);
    let card = list.querySelector(`[data-backend="${CSS.escape(backend.key)}"]`);
    // A card is rebuilt only when what it shows changed, so that a
    // selector in use is not replaced under the user.
    if (card && state.signatures.get(backend.key) === signature) {
      list.append(card);
      continue;
    }
    state.signatures.set(backend.key, signature);
    const service = backend.type === "dynamic" ? ` · ${backend.name}@${backend.version}` : "";
    const members = el("tbody");
    for (const member of backend.members) {
      members.append(
        el("tr", { class: "member", "data-member": memberKey(member), "data-health": "UNKNOWN" },
          el("td", { text: memberKey(member) }),
          el("td", {}, el("span", { class: "health", text: "…" })),
          el("td", { class: "sessions" }),
          el("td", { class: "rate" })));
    }
    const fresh = el("div", { class: "card backend", "data-backend": backend.key, "data-type": backend.type },
      el("div", { class: "title" }, backend.key, " ",
        el("span", { class: "count", title: "healthy / total members" })),
      el("div", { class: "meta", text: `${backend.type}${service} · ${backend.mode} · ${backend.balance}` }),
      backend.type === "dynamic" ? versionSelector(backend) : null,
      el("table", { class: "members" },
        el("thead", {}, el("tr", {},
          el("th", { text: "member" }), el("th", { text: "health" }),
          el("th", { text: "sessions" }), el("th", { text: "sessions/s" }))),
        members));
    if (card) card.replaceWith(fresh);
    else list.append(fresh);
  }
  renderHealth();
}

// Health, sessions and rates into the cards as they are.
function renderHealth() {
  for (const card of document.querySelectorAll("#backends [data-backend]")) {
    const proxy = card.dataset.backend;
    let healthy = 0;
    let total = 0;
    for (const row of card.querySelectorAll("[data-member]")) {
      const stat = statRow(proxy, row.dataset.member);
      const value = stat ? health(stat.status) : "UNKNOWN";
      row.dataset.health = value;
      row.querySelector(".health").textContent = stat ? stat.status : "no stats";
      row.querySelector(".sessions").textContent = stat ? stat.currentSessions : "";
      row.querySelector(".rate").textContent = stat ? stat.sessionRate : "";
      total += 1;
      if (value === "UP" || value === "NOCHECK") healthy += 1;
    }
    const count = card.querySelector(".count");
    count.textContent = `${healthy}/${total}`;
    count.dataset.healthy = healthy;
    count.dataset.total = total;
    count.dataset.allHealthy = String(healthy === total);
  }
  for (const card of document.querySelectorAll("#frontends [data-frontend]")) {
    const stat = statRow(card.dataset.frontend, "FRONTEND");
    card.querySelector(".sessions").textContent = stat ? stat.currentSessions : "–";
    card.querySelector(".request-rate").textContent = stat ? (stat.requestRate ?? stat.sessionRate) : "–";
  }
}

// --- charts -------------------------------------------------------------------

// Frontends chart requests per second (what users send); backends
// sessions per second (HAProxy 2.6 has no request rate for backends).
function recordHistory(snapshot) {
  const now = snapshot.atMs;
  for (const row of snapshot.rows) {
    if (row.kind !== "frontend" && row.kind !== "backend") continue;
    const key = `${row.kind} ${row.proxy}`;
    const points = state.history.get(key) || [];
    const rate = row.kind === "frontend" ? (row.requestRate ?? row.sessionRate) : row.sessionRate;
    points.push({ at: now, sessions: row.currentSessions, rate });
    while (points.length && points[0].at < now - HISTORY_MS) points.shift();
    state.history.set(key, points);
  }
}

function drawCharts() {
  const list = $("chart-list");
  for (const [key, points] of state.history) {
    let figure = list.querySelector(`[data-chart="${CSS.escape(key)}"]`);
    if (!figure) {
      const unit = key.startsWith("frontend ") ? "requests/s" : "sessions/s";
      figure = el("figure", { class: "chart", "data-chart": key },
        el("canvas", { width: 300, height: 80 }),
        el("figcaption", {}, `${key}: `,
          el("span", { class: "legend-sessions", text: "sessions" }), " · ",
          el("span", { class: "legend-rate", text: unit })));
      list.append(figure);
    }
    figure.dataset.points = points.length;
    const canvas = figure.querySelector("canvas");
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (points.length === 0) continue;
    const last = points[points.length - 1].at;
    const top = Math.max(1, ...points.map((p) => Math.max(p.sessions, p.rate)));
    for (const [field, colour] of [["sessions", "#1565c0"], ["rate", "#ef6c00"]]) {
      context.strokeStyle = colour;
      context.beginPath();
      points.forEach((point, i) => {
        const x = canvas.width - ((last - point.at) / HISTORY_MS) * canvas.width;
        const y = canvas.height - 2 - (point[field] / top) * (canvas.height - 4);
        if (i === 0) context.moveTo(x, y);
        else context.lineTo(x, y);
      });
      context.stroke();
    }
    context.fillStyle = "#555";
    context.fillText(`max ${top}`, 4, 10);
  }
}

// --- mesh -------------------------------------------------------------------

function definitions(list, pairs) {
  list.replaceChildren();
  for (const [term, value] of pairs) {
    list.append(el("dt", { text: term }), el("dd", { "data-field": term, text: value ?? "–" }));
  }
}

function shortDigest(digest) {
  return digest ? digest.slice(0, 8) : "–";
}

// What a peer last reported of its HAProxy, in a few words.
function haproxySummary(haproxy) {
  if (!haproxy) return "–";
  if (!haproxy.managed) return "render only";
  const words = [haproxy.running ? "running" : "not running",
    `${haproxy.reloads} reloads`, `${haproxy.runtimeChanges} runtime`];
  if (haproxy.rejected) words.push(`${haproxy.rejected} rejected`);
  return words.join(" · ");
}

function renderMesh(mesh, peers, status) {
  $("peer-name").textContent = mesh.name;
  document.title = `Aqueduct · ${mesh.name}`;
  const body = $("peers").querySelector("tbody");
  body.replaceChildren();
  for (const peer of peers) {
    const report = peer.report;
    const converged = report ? (report.converged ? "yes" : "no") : "unknown";
    const lastError = report?.haproxy?.lastError;
    // A revoked certificate: shown whatever SWIM still says of the peer.
    const revoked = peer.revoked
      ? el("div", { class: "revoked", title: "certificate revoked",
                    text: `revoked ${new Date(peer.revokedAt * 1000).toLocaleString()}` })
      : null;
    body.append(el("tr", { "data-peer": peer.name || peer.peerId, "data-state": peer.state,
                           "data-converged": converged, "data-revoked": peer.revoked ? "true" : "false" },
      el("td", { text: peer.name || peer.peerId }),
      el("td", { text: peer.addr }),
      el("td", { class: "state", text: peer.state }, revoked),
      el("td", { class: "connected", text: peer.connected ? "yes" : "no" }),
      el("td", { class: "digest", title: report?.digest, text: shortDigest(report?.digest) }),
      el("td", { class: "converged", text: converged }),
      el("td", { class: "haproxy", text: haproxySummary(report?.haproxy) },
        lastError ? el("div", { class: "last-error", text: lastError }) : null),
      el("td", { class: "age", text: report ? `${report.ageSeconds.toFixed(1)} s` : "–" })));
  }
  definitions($("this-peer"), [
    ["name", mesh.name],
    ["digest", mesh.digest],
    ["version vector", Object.entries(mesh.versionVector).map(([r, c]) => `${r.slice(0, 6)}:${c}`).join(" ")],
    ["generation", mesh.generation],
    ["uptime", `${Math.round(mesh.uptimeSeconds)} s`],
    ["convergence lag", mesh.convergenceLagSeconds == null ? null : `${mesh.convergenceLagSeconds.toFixed(1)} s`],
  ]);
  definitions($("haproxy-status"), status
    ? [
        ["running", status.running ? `yes (pid ${status.pid})` : "no"],
        ["version", status.version],
        ["reloads", status.reloads],
        ["reload failures", status.reloadFailures],
        ["runtime changes", status.runtimeChanges],
        ["rejected", status.rejected],
        ["restarts", status.restarts],
        ["last error", status.lastError],
      ]
    : [["running", "no driver on this peer"]]);
}

// --- activity -------------------------------------------------------------------

function describe(item) {
  switch (item.type) {
    case "member": return `${item.backend}/${item.server}: ${item.from} → ${item.to}`;
    case "applied": return `applied (${item.how}${item.how === "runtime" ? `, ${item.changes} changes` : ""})`;
    case "rejected": return `rejected: ${item.message}`;
    case "reloaded": return `reloaded in ${item.tookMs.toFixed(1)} ms`;
    case "reloadFailed": return `reload failed: ${item.message}`;
    case "restarted": return `HAProxy restarted: ${item.reason}`;
    case "registration": return `registration ${item.id} ${item.live ? "live" : "gone"}`;
    case "peer": return `peer ${item.peer}: ${item.from ?? "new"} → ${item.to}`;
    case "change": {
      const more = item.objectsTotal - item.objects.length;
      const origin = item.originReplica ? `replica ${item.originReplica}` : "anti-entropy";
      return `change from ${item.from} (${origin}): ${item.objects.join(", ")}${more > 0 ? ` and ${more} more` : ""}`;
    }
    default: return JSON.stringify(item);
  }
}

function addActivity(type, text, atMs) {
  const list = $("activity-list");
  const time = new Date(atMs).toLocaleTimeString();
  const item = el("li", { "data-type": type, text: `${time} ${text}` });
  list.prepend(item);
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild.remove();
  filterItem(item);
}

function filterItem(item) {
  const filter = $("activity-filter").value.trim().toLowerCase();
  item.hidden = filter !== "" && !item.textContent.toLowerCase().includes(filter);
}

// --- refresh loop and event stream ------------------------------------------------

async function refresh() {
  try {
    const [frontends, backends, mesh, peers] = await Promise.all(
      ["/frontends", "/backends", "/mesh", "/mesh/peers"].map(get));
    const status = await get("/haproxy/status").catch(() => null);
    const services = [...new Set(backends.filter((b) => b.type === "dynamic").map((b) => b.name))];
    const registrations = await Promise.all(
      services.map((s) => get(`/registrations/${encodeURIComponent(s)}`)));
    state.registrations = new Map(services.map((s, i) => [s, registrations[i]]));
    if (!state.stats) state.stats = await get("/haproxy/stats").catch(() => null);
    state.frontends = frontends;
    state.backends = backends;
    renderFrontends();
    renderBackends();
    renderMesh(mesh, peers, status);
    state.pollOk = true;
  } catch (e) {
    state.pollOk = false;
  }
  showConnection();
}

// The event stream is read with fetch, not EventSource, so that it can
// carry the token in a header. `stream` aborts the one open.
let stream = null;

const streamHandlers = {
  stats(data) {
    state.stats = JSON.parse(data);
    recordHistory(state.stats);
    renderHealth();
    drawCharts();
  },
  activity(data) {
    const item = JSON.parse(data);
    addActivity(item.type, describe(item), item.atMs);
  },
  lagged(data) {
    addActivity("lagged", `missed ${data} events`, Date.now());
  },
};

// One server-sent event ("event: x\ndata: ...\n" lines) to its handler.
function dispatch(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  const handler = streamHandlers[type];
  if (handler && data.length) handler(data.join("\n"));
}

async function connect() {
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch("/events", {
      headers: withToken({ Accept: "text/event-stream" }),
      signal: controller.signal,
    });
    if (response.status === 401) state.needsToken = true;
    if (!response.ok) throw new Error(`/events: ${response.status}`);
    state.streamOk = true;
    showConnection();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (e) {
    // Aborted for a new token, or the peer went away: reconnect below.
  }
  if (stream !== controller) return; // replaced by a newer connection
  // A peer that is restarting answers nothing for a while: the page
  // reconnects on its own.
  state.streamOk = false;
  showConnection();
  setTimeout(() => {
    if (stream === controller) connect();
  }, 1000);
}

function reconnect() {
  if (stream) stream.abort();
  connect();
}

function start() {
  const token = $("api-token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, token.value.trim());
    refresh();
    reconnect();
  });
  $("activity-filter").addEventListener("input", () => {
    for (const item of $("activity-list").children) filterItem(item);
  });
  refresh();
  setInterval(refresh, POLL_MS);
  connect();
}

start();
