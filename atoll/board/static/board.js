// The Atoll board: a client of this node's REST API (/api/v1), with the user's own token.
//
// Safety rules of this file (see atoll/board/__init__.py):
// - everything that comes from the API (job names, error text, column names, partners' words)
//   goes into the page as text: el() makes text nodes; nothing here assigns innerHTML;
// - the token is kept in sessionStorage and sent only as an Authorization header (no cookie,
//   so no cross-site request can use it);
// - links are built only from "#/..." strings with encodeURIComponent.
"use strict";

const TOKEN_KEY = "atoll.board.token";
const API = "/api/v1";
const TERMINAL = ["done", "failed", "rejected", "cancelled"];
const STATES = ["pending", "proposed", "waiting", "accepted", "starting", "running", "done", "failed",
  "skipped", "rejected", "cancelled"];
const LOG_KEEP = 2000;
let me = null;          // {user, role, node}
let live = null;        // the current page's live updates: {stop()}

// ------------------------------------------------------------------ DOM helpers
function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const main = () => document.getElementById("main");
function show(...nodes) { main().replaceChildren(...nodes); }
function flash(text, ok) {
  const f = document.getElementById("flash");
  f.className = ok ? "ok" : "";
  f.textContent = text || "";
}
function stateClass(s) { return "st-" + (STATES.includes(s) ? s : "other"); }
function pill(s) { return el("span", { class: "pill " + stateClass(s), "data-state": s }, s || "—"); }
function fmtTime(t) {
  if (t === null || t === undefined || t === "") return "";
  return new Date(Number(t) * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}
function fmtNum(v, digits) {
  if (typeof v !== "number") return v === null || v === undefined ? "" : String(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 4 : digits);
}
function short(s, n) { s = String(s === null || s === undefined ? "" : s); return s.length > n ? s.slice(0, n) + "…" : s; }
function link(hash, text) { return el("a", { href: hash }, text); }
function jobLink(id, text) { return link("#/job/" + encodeURIComponent(id), text || id); }
const canWrite = () => me && me.role !== "viewer";

// A sortable table: columns [{key, label, value(row), render(row), num}]
function table(columns, rows, attrs) {
  const tbody = el("tbody");
  let order = { key: null, dir: 1 };
  const val = (c, r) => (c.value ? c.value(r) : r[c.key]);
  function fill() {
    const sorted = rows.slice();
    if (order.key !== null) {
      const c = columns[order.key];
      sorted.sort((a, b) => {
        const x = val(c, a), y = val(c, b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * order.dir;
      });
    }
    tbody.replaceChildren(...sorted.map((r) => el("tr", {}, columns.map((c) => {
      const content = c.render ? c.render(r) : val(c, r);
      return el("td", { class: c.num ? "num" : c.wrap ? "wrap" : null },
        typeof content === "number" ? fmtNum(content) : content);
    }))));
  }
  const head = el("tr", {}, columns.map((c, i) => el("th", {
    class: "sortable", title: "sort by " + c.label,
    onclick: () => { order = { key: i, dir: order.key === i ? -order.dir : 1 }; fill(); },
  }, c.label)));
  fill();
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, "none")));
  return el("table", attrs || {}, el("thead", {}, head), tbody);
}

// ------------------------------------------------------------------ the API
function token() { return sessionStorage.getItem(TOKEN_KEY); }
class ApiError extends Error { constructor(status, detail) { super(detail); this.status = status; } }
async function api(method, path, body, tok) {
  const headers = { Authorization: "Bearer " + (tok || token() || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(API + path, {
    method, headers, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let detail = r.statusText;
    try { const j = await r.json(); detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (e) { /* not JSON */ }
    if (r.status === 401 && !tok) logout("the node refused the token (" + detail + "); log in again");
    throw new ApiError(r.status, detail);
  }
  const ct = r.headers.get("content-type") || "";
  return ct.startsWith("application/json") ? r.json() : r.blob();
}
const get = (p) => api("GET", p);
const post = (p, b) => api("POST", p, b === undefined ? {} : b);
async function act(what, fn) {
  try { const out = await fn(); flash(what + ": done", true); return out; } catch (e) { flash(what + ": " + e.message); return null; }
}

// ------------------------------------------------------------------ login
function logout(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  if (live) { live.stop(); live = null; }
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  flash(why || "");
  pageLogin();
}
function pageLogin() {
  const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "atoll-…", required: true });
  const form = el("form", {
    class: "login", id: "login-form",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const tok = input.value.trim();
      try {
        me = await api("GET", "/auth/whoami", undefined, tok);
      } catch (e) { flash("login refused: " + e.message); return; }
      sessionStorage.setItem(TOKEN_KEY, tok);
      flash("");
      if (!location.hash || location.hash === "#/login") location.hash = "#/jobs"; else route();
    },
  }, el("h1", {}, "Log in to this node's board"),
  el("p", {}, "Paste an API token of this node: ", el("code", {}, "atoll login"),
    " saved yours in the credentials file; an admin makes more with ", el("code", {}, "atoll user add NAME --role viewer"), "."),
  el("label", {}, "API token", input), el("p", {}, el("button", { type: "submit", id: "login" }, "Log in")));
  show(form);
}

// ------------------------------------------------------------------ router
const PAGES = { jobs: pageJobs, job: pageJob, approvals: pageApprovals, data: pageData, audit: pageAudit,
  partners: pagePartners, models: pageModels };
async function route() {
  if (live) { live.stop(); live = null; }
  if (!token()) { pageLogin(); return; }
  if (!me) {
    try { me = await get("/auth/whoami"); } catch (e) { return; }
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("node-name").textContent = "node " + me.node;
  document.getElementById("who").textContent = me.user + " (" + me.role + ")";
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = PAGES[parts[0]] ? parts[0] : "jobs";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page || (page === "job" && a.dataset.page === "jobs"));
  document.body.dataset.page = page;
  pendingCount();
  try { await PAGES[page](...parts.slice(1)); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) show(el("div", { class: "banner bad" }, e.message)); }
}
async function pendingCount() {
  try { const p = await get("/jobs?state=pending"); document.getElementById("pending-count").textContent = p.length ? String(p.length) : ""; } catch (e) { /* shown elsewhere */ }
}

// ------------------------------------------------------------------ jobs
async function pageJobs() {
  const partners = await get("/partners");
  const f = { state: el("select", { name: "state" }, el("option", { value: "" }, "any"), ...STATES.map((s) => el("option", { value: s }, s))),
    partner: el("select", { name: "partner" }, el("option", { value: "" }, "any"), ...partners.map((p) => el("option", { value: p.name }, p.name))),
    component: el("input", { name: "component", size: 12, placeholder: "e.g. hetero_lr" }),
    since: el("input", { name: "since", type: "date" }), until: el("input", { name: "until", type: "date" }) };
  const list = el("div", { id: "job-list" });
  async function load() {
    const q = new URLSearchParams();
    for (const k of ["state", "partner", "component"]) if (f[k].value) q.set(k, f[k].value.trim());
    if (f.since.value) q.set("since", String(Date.parse(f.since.value) / 1000));
    if (f.until.value) q.set("until", String(Date.parse(f.until.value) / 1000 + 86400));
    const rows = await get("/board/jobs?" + q.toString());
    list.replaceChildren(table([
      { key: "name", label: "job", render: (r) => jobLink(r.id, r.name) },
      { key: "state", label: "state", render: (r) => pill(r.state) },
      { key: "initiator", label: "initiator" },
      { key: "nodes", label: "nodes", value: (r) => r.nodes.join(", ") },
      { key: "components", label: "components", value: (r) => r.components.join(", "), wrap: true },
      { key: "created", label: "created", render: (r) => fmtTime(r.created) },
      { key: "updated", label: "updated", render: (r) => fmtTime(r.updated) },
      { key: "message", label: "message", wrap: true, render: (r) => short(r.message, 200) },
    ], rows, { id: "jobs" }));
  }
  const filters = el("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); load(); } },
    el("label", {}, "state", f.state), el("label", {}, "partner", f.partner), el("label", {}, "component", f.component),
    el("label", {}, "created from", f.since), el("label", {}, "to", f.until), el("button", { type: "submit" }, "Filter"));
  const parts = [el("h1", {}, "Jobs"), filters, list];
  if (canWrite()) {
    const text = el("textarea", { id: "job-text", name: "job_text", spellcheck: "false", placeholder: "name: …\nparties: …\npipeline: …" });
    parts.push(el("details", {}, el("summary", {}, "Submit a job"),
      el("form", { onsubmit: async (ev) => {
        ev.preventDefault();
        const j = await act("submit", () => post("/jobs", { job_text: text.value }));
        if (j) location.hash = "#/job/" + encodeURIComponent(j.id);
      } }, el("p", { class: "muted" }, "A job file whose parties name their nodes and registered data (examples/nodes/)."),
      text, el("p", {}, el("button", { type: "submit", id: "submit-job" }, "Submit")))));
  }
  show(...parts);
  await load();
  const timer = setInterval(() => { if (!document.activeElement || !filters.contains(document.activeElement)) load().catch(() => {}); }, 3000);
  live = { stop: () => clearInterval(timer) };
}

// The DAG as SVG: one box per step (columns are the waves of the pipeline), one coloured
// row per party inside it; edges from each step to the steps that read its outputs.
function dagSvg(view) {
  const parties = view.parties.map((p) => p.party);
  const W = 190, ROW = 20, HEAD = 34, GX = 50, GY = 18, PAD = 12;
  const H = HEAD + ROW * parties.length + 6;
  const byWave = {};
  for (const s of view.steps) (byWave[s.wave] = byWave[s.wave] || []).push(s);
  const pos = {};
  let maxY = 0, maxX = 0;
  for (const [w, steps] of Object.entries(byWave)) {
    steps.forEach((s, i) => {
      pos[s.id] = { x: PAD + Number(w) * (W + GX), y: PAD + i * (H + GY) };
      maxX = Math.max(maxX, pos[s.id].x + W); maxY = Math.max(maxY, pos[s.id].y + H);
    });
  }
  const svg = el("svg:svg", { class: "dag", id: "dag", width: maxX + PAD, height: maxY + PAD,
    viewBox: "0 0 " + (maxX + PAD) + " " + (maxY + PAD), role: "img", "aria-label": "the job's steps and each party's task state" });
  for (const s of view.steps) {
    for (const n of s.needs) {
      if (!pos[n]) continue;
      const a = pos[n], b = pos[s.id];
      const x1 = a.x + W, y1 = a.y + HEAD / 2, x2 = b.x, y2 = b.y + HEAD / 2, mx = (x1 + x2) / 2;
      svg.append(el("svg:path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
  }
  for (const s of view.steps) {
    const { x, y } = pos[s.id];
    const g = el("svg:g", { class: "step", "data-step": s.id, transform: `translate(${x},${y})` },
      el("svg:rect", { class: "box", width: W, height: H, rx: 5 }),
      el("svg:text", { x: 8, y: 15, "font-weight": "bold" }, short(s.id, 24)),
      el("svg:text", { class: "comp", x: 8, y: 28 }, short(s.component, 28)));
    parties.forEach((p, i) => {
      const t = s.tasks[p];
      const cell = el("svg:g", { class: "task", "data-party": p, "data-step": s.id, "data-state": t.reported },
        el("svg:title", {}, p + ": " + t.reported + (t.error ? " — " + t.error : "")),
        el("svg:rect", { class: "cell " + stateClass(t.state), x: 6, y: HEAD + i * ROW, width: W - 12, height: ROW - 3, rx: 3 }),
        el("svg:text", { x: 11, y: HEAD + i * ROW + 13 }, short(p, 12) + ": " + short(t.reported, 12)));
      g.append(cell);
    });
    svg.append(g);
  }
  return svg;
}

function errorsOf(view) {
  const out = [];
  for (const s of view.steps) for (const [p, t] of Object.entries(s.tasks)) if (t.error) out.push({ step: s.id, party: p, state: t.reported, error: t.error });
  return out;
}

async function pageJob(id) {
  const head = el("div", { id: "job-head" });
  const actions = el("div", { id: "job-actions" });
  const dagBox = el("div", { id: "dag-box" });
  const parties = el("div", { id: "parties" });
  const errors = el("div", { id: "errors" });
  const steps = el("div", { id: "steps" });
  const metrics = el("div", { id: "metrics" }, el("p", { class: "muted" }, "Metrics and plots appear when the job is done."));
  const logBox = el("pre", { class: "log", id: "log" });
  const partySel = el("select", { id: "log-party" });
  const logNote = el("div", { id: "log-note" });
  const stepDetail = el("div", { id: "step-detail" });
  let view = null, reportShown = false;
  show(head, actions, el("h2", {}, "DAG"), dagBox, el("h2", {}, "Parties"), parties, errors,
    el("h2", {}, "Steps"), steps, el("h2", {}, "Metrics and plots"), metrics,
    el("h2", {}, "Logs"), el("form", { class: "inline" }, el("label", {}, "party", partySel)), logNote, logBox);

  function render(v) {
    view = v;
    const j = v.job;
    head.replaceChildren(el("h1", {}, "Job ", el("span", { id: "job-name" }, j.name), " ", el("span", { id: "job-state" }, pill(j.state))),
      el("p", { class: "muted" }, "id ", el("code", {}, j.id), " · initiator ", j.initiator, " · this node plays ", j.own_party,
        " · attempt ", String(j.attempt), " · updated ", fmtTime(j.updated)),
      j.message ? el("div", { id: "job-message", class: "banner " + (j.state === "failed" || j.state === "rejected" ? "bad" : "warn") }, j.message) : "");
    actions.replaceChildren();
    if (canWrite()) {
      if (j.state === "pending") actions.append(link("#/approvals", "This proposal waits for your decision: open the approvals"));
      if (!TERMINAL.includes(j.state)) actions.append(" ", el("button", { class: "danger", type: "button", id: "cancel", onclick: () => act("cancel", () => post("/jobs/" + encodeURIComponent(j.id) + "/cancel")) }, "Cancel the job"));
      if (j.state === "failed" && j.initiator === me.node) actions.append(" ", el("button", { type: "button", id: "resume", onclick: () => act("resume", () => post("/jobs/" + encodeURIComponent(j.id) + "/resume")) }, "Resume"));
    }
    dagBox.replaceChildren(dagSvg(v));
    parties.replaceChildren(table([
      { key: "party", label: "party" }, { key: "node", label: "node" }, { key: "role", label: "role" },
      { key: "decision", label: "decision", render: (r) => (r.decision ? pill(r.decision) : pill("pending")) },
      { key: "reason", label: "reason", wrap: true }, { key: "state", label: "state" },
    ], v.parties, { id: "party-table" }));
    const errs = errorsOf(v);
    errors.replaceChildren(...(errs.length ? [el("h2", {}, "Failures"), table([
      { key: "party", label: "party" }, { key: "step", label: "step" }, { key: "state", label: "state", render: (r) => pill(r.state) },
      { key: "error", label: "error (as the failing party reported it)", wrap: true },
    ], errs, { id: "error-table" })] : []));
    const names = v.parties.map((p) => p.party);
    steps.replaceChildren(table([
      { key: "id", label: "step", render: (s) => el("a", { href: "#/job/" + encodeURIComponent(j.id), class: "step-link", "data-step": s.id,
        onclick: (ev) => { ev.preventDefault(); showStep(j.id, s.id); } }, s.id) },
      { key: "component", label: "component" },
      ...names.map((p) => ({ key: p, label: p, value: (s) => s.tasks[p].reported, render: (s) => {
        const t = s.tasks[p];
        const secs = t.started && t.finished ? " " + (t.finished - t.started).toFixed(1) + " s" : "";
        return [pill(t.reported), secs];
      } })),
      { key: "params", label: "parameters", wrap: true, value: (s) => JSON.stringify(s.params), render: (s) => el("code", {}, Object.keys(s.params).length ? JSON.stringify(s.params) : "") },
    ], v.steps, { id: "step-table" }), stepDetail);
    if (partySel.options.length === 0) {
      for (const p of names) partySel.append(el("option", { value: p }, p + (p === j.own_party ? " (this node)" : "")));
      partySel.value = j.own_party;
      partySel.addEventListener("change", showLogs);
      showLogs();
    } else if (partySel.value !== j.own_party) showLogs();
    if (j.state === "done" && !reportShown) { reportShown = true; showReport(j.id, 0); }
  }
  function showLogs() {
    const p = partySel.value;
    if (!view) return;
    if (p === view.job.own_party) {
      logNote.replaceChildren(el("p", { class: "muted" }, "This node's log of its party (live, last " + LOG_KEEP + " lines)."));
      logBox.hidden = false;
    } else {
      logBox.hidden = true;
      const rows = view.steps.map((s) => ({ step: s.id, ...s.tasks[p] }));
      logNote.replaceChildren(el("p", { class: "muted" }, "Party " + p + " runs at another node: its log stays there. These are the task states it reported:"),
        table([{ key: "step", label: "step" }, { key: "reported", label: "state", render: (r) => pill(r.reported) },
          { key: "started", label: "started", render: (r) => fmtTime(r.started) }, { key: "finished", label: "finished", render: (r) => fmtTime(r.finished) },
          { key: "error", label: "error", wrap: true }], rows));
    }
  }
  function addLog(lines) {
    const atEnd = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 20;
    logBox.append(...lines.map((l) => el("div", { class: ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].includes(l.level) ? l.level : null },
      fmtTime(l.t) + " " + l.level + " " + l.message)));
    while (logBox.childElementCount > LOG_KEEP) logBox.firstElementChild.remove();
    if (atEnd) logBox.scrollTop = logBox.scrollHeight;
  }
  async function showReport(jobId, tries) {
    const r = (await get("/jobs/" + encodeURIComponent(jobId) + "/report")).report;
    if (!r) { if (tries < 20 && live) setTimeout(() => showReport(jobId, tries + 1), 1000); return; }
    const models = [];
    for (const s of view.steps) {
      const d = await get("/jobs/" + encodeURIComponent(jobId) + "/steps/" + encodeURIComponent(s.id));
      if (d.model) models.push(el("h3", {}, "Model — " + s.id + " (this party's part)"), ...modelView(d.model));
    }
    metrics.replaceChildren(...reportView(jobId, r), ...models);
  }
  async function showStep(jobId, step) {
    const d = await get("/jobs/" + encodeURIComponent(jobId) + "/steps/" + encodeURIComponent(step));
    const s = view.steps.find((x) => x.id === step) || { params: {}, component: "" };
    stepDetail.replaceChildren(el("div", { class: "card", "data-step": step }, el("h3", {}, "Step " + step + " (" + s.component + ")"),
      el("p", {}, "parameters: ", el("code", {}, JSON.stringify(s.params))),
      el("p", { class: "muted" }, d.done ? "this party's outputs: " + (d.outputs.join(", ") || "none") + " · " + fmtNum(d.seconds, 2) + " s · finished " + fmtTime(d.finished)
        : "this party has not completed the step"),
      ...(d.model ? modelView(d.model) : [])));
  }

  // live: server-sent events read with fetch (so the token travels in the header); the
  // stream is re-opened when it ends before the job does, and the page falls back to
  // polling the DAG when streaming is not available
  const ctl = new AbortController();
  let stopped = false;
  live = { stop: () => { stopped = true; ctl.abort(); } };
  let cursor = 0;
  async function stream() {
    const r = await fetch(API + "/jobs/" + encodeURIComponent(id) + "/stream?after=" + cursor, {
      headers: { Authorization: "Bearer " + token() }, cache: "no-store", credentials: "omit", signal: ctl.signal });
    if (!r.ok) { let d = r.statusText; try { d = (await r.json()).detail; } catch (e) { /* */ } throw new ApiError(r.status, d); }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "", ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i); buf = buf.slice(i + 2);
        let ev = "message", data = "";
        for (const line of frame.split("\n")) {
          if (line.startsWith("event: ")) ev = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (ev === "dag") render(JSON.parse(data));
        else if (ev === "log") { const lines = JSON.parse(data); if (lines.length) cursor = lines[lines.length - 1].id; addLog(lines); }
        else if (ev === "end") ended = true;
      }
    }
    return ended;
  }
  (async () => {
    while (!stopped) {
      try {
        if (await stream()) return;
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError) { show(el("div", { class: "banner bad" }, e.message)); return; }
        try { render(await get("/jobs/" + encodeURIComponent(id) + "/dag")); } catch (e2) { /* the next round says */ }
      }
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  })();
}

// The report's metrics, the federated-vs-centralised panel, training histories and plots.
function reportView(jobId, r) {
  // the report's row warnings (psi left rows of this party without a match); a model's own
  // warnings (not converged) show with its part, below (the same views as report.html)
  const out = (r.warnings || []).filter((w) => w.kind !== "not_converged")
    .map((w) => el("div", { class: "banner warn report-warning" }, "warning: " + w.text));
  const evals = r.evaluations || [];
  if (evals.length) {
    const keys = [...new Set(evals.flatMap((e) => Object.keys(e.metrics || {})))].sort();
    out.push(el("h3", {}, "Metrics (held-out rows)"), table([
      { key: "step", label: "step" }, { key: "party", label: "party" }, { key: "n", label: "rows", num: true },
      ...keys.map((k) => ({ key: k, label: k, num: true, value: (e) => (e.metrics || {})[k] })),
    ], evals, { id: "metric-table" }));
  }
  if (r.centralized_baseline && r.centralized_baseline.length) {
    const rows = [];
    for (const b of r.centralized_baseline) for (const [k, v] of Object.entries(b.metrics)) rows.push({ model: b.model_step + " vs " + b.twin, party: b.party, metric: k, ...v });
    out.push(el("h3", {}, "Federated (V_FED) vs centralised (V_SUM), same held-out rows"), table([
      { key: "model", label: "model" }, { key: "party", label: "party" }, { key: "metric", label: "metric" }, { key: "V_FED", label: "V_FED", num: true },
      { key: "V_SUM", label: "V_SUM", num: true }, { key: "diff", label: "diff", num: true }], rows, { id: "baseline-table" }));
  }
  for (const [step, hist] of Object.entries(r.histories || {})) {
    const names = Object.keys(hist);
    const n = Math.max(0, ...names.map((k) => hist[k].length));
    const rows = [...Array(n).keys()].map((i) => ({ iteration: i + 1, ...Object.fromEntries(names.map((k) => [k, hist[k][i]])) }));
    out.push(el("h3", {}, "Training — " + step), table([{ key: "iteration", label: "iteration", num: true },
      ...names.map((k) => ({ key: k, label: k, num: true }))], rows));
  }
  const plots = (r.plots || []).map((p) => String(p).replace(/^plots\//, ""));
  if (plots.length) {
    const box = el("div", { class: "plots", id: "plots" });
    for (const name of plots) {
      const img = el("img", { alt: name, "data-plot": name });
      box.append(el("figure", {}, img, el("figcaption", {}, name)));
      get("/jobs/" + encodeURIComponent(jobId) + "/plots/" + encodeURIComponent(name))
        .then((blob) => { img.src = URL.createObjectURL(blob); img.dataset.loaded = "1"; })
        .catch((e) => img.replaceWith(el("span", { class: "muted" }, e.message)));
    }
    out.push(el("h3", {}, "Plots"), box);
  }
  return out.length ? out : [el("p", { class: "muted" }, "The report has no metrics.")];
}

// A party's own model part: warnings first, then its facts and the weight of each of its columns.
function modelView(m) {
  const out = m.warnings.map((w) => el("div", { class: "banner warn model-warning" }, (m.component || "model") + ": " + w));
  out.push(table([{ key: "k", label: "fact" }, { key: "v", label: "value" }],
    Object.entries(m.facts).map(([k, v]) => ({ k, v: typeof v === "number" ? fmtNum(v) : String(v) })), { class: "model-facts" }));
  if (m.weights.length) {
    out.push(table([{ key: "column", label: "column" }, { key: "value", label: m.weight_kind, num: true }], m.weights, { class: "model-weights" }));
  }
  return out;
}

// ------------------------------------------------------------------ approvals
async function pageApprovals() {
  const pending = await get("/approvals");
  const cards = [];
  for (const j of pending) {
    const p = j.proposal || {};
    let view = null;
    try { view = await get("/jobs/" + encodeURIComponent(j.id) + "/dag"); } catch (e) { /* shown as text */ }
    const data = (view && view.data) || {};
    const reason = el("input", { name: "reason", size: 40, placeholder: "reason (optional)" });
    const card = el("div", { class: "card approval", "data-job": j.id },
      el("h2", {}, jobLink(j.id, j.name), " from ", p.initiator || j.initiator),
      el("p", { class: "muted" }, "id ", el("code", {}, j.id), " · proposed ", fmtTime(p.created), " · this node plays ", j.own_party),
      table([{ key: "party", label: "party" }, { key: "node", label: "node" }, { key: "role", label: "role" },
        { key: "data", label: "data", render: (r) => el("code", {}, data[r.party] ? JSON.stringify(data[r.party]) : "") }],
      Object.entries(p.parties || {}).map(([party, v]) => ({ party, node: v.node, role: v.role }))),
      view ? dagSvg(view) : "",
      view ? table([{ key: "id", label: "step" }, { key: "component", label: "component" },
        { key: "params", label: "parameters", wrap: true, value: (s) => JSON.stringify(s.params), render: (s) => el("code", {}, JSON.stringify(s.params)) }], view.steps) : "",
      el("details", {}, el("summary", {}, "job file"), el("pre", {}, p.job_text || "")));
    if (canWrite()) {
      const decide = (verb) => async () => {
        const ok = await act(verb + " " + j.name, () => post("/jobs/" + encodeURIComponent(j.id) + "/" + verb, { reason: reason.value }));
        if (ok) route();
      };
      card.append(el("form", { class: "inline", onsubmit: (ev) => ev.preventDefault() }, el("label", {}, "reason", reason),
        el("button", { type: "button", class: "approve", onclick: decide("approve") }, "Approve"),
        el("button", { type: "button", class: "danger reject", onclick: decide("reject") }, "Reject")));
    } else card.append(el("p", { class: "muted viewer-note" }, "You are a viewer: an admin of this node decides."));
    cards.push(card);
  }
  show(el("h1", {}, "Approvals"), el("p", { class: "muted" }, "Proposals waiting for this node's decision."),
    ...(cards.length ? cards : [el("p", { id: "no-approvals" }, "Nothing waits for a decision.")]));
}
// ------------------------------------------------------------------ data registry and grants
async function pageData() {
  const [sets, grants, partners] = await Promise.all([get("/data"), get("/grants"), get("/partners")]);
  const parts = [el("h1", {}, "Data registry"), el("p", { class: "muted" }, "This node's registered data: name, version, schema, rows, SHA-256 (never the content)."),
    table([{ key: "name", label: "name" }, { key: "version", label: "version", num: true }, { key: "rows", label: "rows", num: true },
      { key: "id_column", label: "id" }, { key: "label_column", label: "label" },
      { key: "columns", label: "columns", wrap: true, value: (d) => (d.columns || []).map((c) => (typeof c === "string" ? c : c.name || JSON.stringify(c))).join(", ") },
      { key: "sha256", label: "SHA-256", render: (d) => el("code", { title: d.sha256 }, short(d.sha256, 12)) },
      { key: "path", label: "path", wrap: true }, { key: "created", label: "registered", render: (d) => fmtTime(d.created) }], sets, { id: "datasets" })];
  if (canWrite()) {
    const f = { name: el("input", { name: "name", required: true, size: 12 }), path: el("input", { name: "path", required: true, size: 30 }),
      id: el("input", { name: "id", required: true, size: 8 }), label: el("input", { name: "label", size: 8 }) };
    parts.push(el("form", { class: "inline", id: "register-form", onsubmit: async (ev) => {
      ev.preventDefault();
      if (await act("register " + f.name.value, () => post("/data", { name: f.name.value, path: f.path.value, id: f.id.value, label: f.label.value || null }))) route();
    } }, el("label", {}, "name", f.name), el("label", {}, "file on this node", f.path), el("label", {}, "id column", f.id),
    el("label", {}, "label column", f.label), el("button", { type: "submit" }, "Register")));
  }
  parts.push(el("h2", {}, "Grants given"), el("p", { class: "muted" }, "Signed grants of this node's data to partners (checked again at every task start). Grants partners gave stay at their nodes."),
    table([{ key: "id", label: "grant", render: (g) => el("code", {}, g.id) }, { key: "dataset", label: "data" }, { key: "grantee", label: "to" },
      { key: "components", label: "components", wrap: true, value: (g) => (g.components || []).join(", ") },
      { key: "expires", label: "expires", render: (g) => (g.expires ? fmtTime(g.expires) : "never") },
      { key: "uses", label: "uses", num: true, value: (g) => g.uses, render: (g) => String(g.uses) + (g.max_uses ? " of " + g.max_uses : "") },
      { key: "job_id", label: "job" }, { key: "initiator", label: "initiator" },
      { key: "bounds", label: "bounds", wrap: true, value: (g) => JSON.stringify(g.bounds || {}), render: (g) => el("code", {}, Object.keys(g.bounds || {}).length ? JSON.stringify(g.bounds) : "") },
      { key: "revoked", label: "state", render: (g) => (g.revoked ? pill("revoked") : g.expires && g.expires * 1000 < Date.now() ? pill("expired") : pill("active")) },
      { key: "act", label: "", value: () => "", render: (g) => (canWrite() && !g.revoked ? el("button", { type: "button", class: "danger revoke", "data-grant": g.id,
        onclick: async () => { if (await act("revoke " + g.id, () => post("/grants/" + encodeURIComponent(g.id) + "/revoke"))) route(); } }, "Revoke") : "") }],
    grants, { id: "grants" }));
  if (canWrite()) {
    const f = { dataset: el("select", { name: "dataset" }, ...[...new Set(sets.map((d) => d.name))].map((n) => el("option", { value: n }, n))),
      grantee: el("select", { name: "grantee" }, ...partners.map((p) => el("option", { value: p.name }, p.name))),
      components: el("input", { name: "components", size: 40, value: "*" }), expires: el("input", { name: "expires", type: "date" }),
      max: el("input", { name: "max_uses", type: "number", min: 1, size: 4 }) };
    parts.push(el("form", { class: "inline", id: "grant-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { dataset: f.dataset.value, grantee: f.grantee.value, components: f.components.value.split(",").map((s) => s.trim()).filter(Boolean) };
      if (f.expires.value) body.expires = Date.parse(f.expires.value) / 1000 + 86400;
      if (f.max.value) body.max_uses = Number(f.max.value);
      if (await act("grant " + body.dataset + " to " + body.grantee, () => post("/grants", body))) route();
    } }, el("label", {}, "data", f.dataset), el("label", {}, "to partner", f.grantee), el("label", {}, "components (comma-separated, * = any)", f.components),
    el("label", {}, "expires", f.expires), el("label", {}, "max jobs", f.max), el("button", { type: "submit" }, "Grant")));
  }
  show(...parts);
}

// ------------------------------------------------------------------ audit
async function pageAudit(jobFilter) {
  const box = el("div", { id: "verify" }, el("p", { class: "muted" }, "checking the chain…"));
  const jobIn = el("input", { name: "job", size: 40, value: jobFilter || "", placeholder: "job id" });
  const recs = el("div", { id: "audit-records" });
  async function verify(partners) {
    const v = await get("/audit/verify" + (partners ? "?partners=true" : ""));
    const asked = Object.entries(v.partners || {});
    box.replaceChildren(el("div", { class: "banner " + (v.ok ? "good" : "bad"), id: "verify-status", "data-ok": String(v.ok) },
      v.ok ? "Audit chain OK: " + v.records + " records, head " + short(v.head, 16) + ", " + v.heads_checked + " signed heads checked"
        : "Audit chain BROKEN: " + v.problems.join("; ")),
    asked.length ? table([{ key: "partner", label: "partner asked" }, { key: "answer", label: "answer", wrap: true }], asked.map(([partner, answer]) => ({ partner, answer }))) : "");
    return v;
  }
  async function load(total) {
    const job = jobIn.value.trim();
    const q = new URLSearchParams({ limit: "500" });
    if (job) q.set("job_id", job); else if (total > 500) q.set("after", String(total - 500));
    const rows = await get("/audit?" + q.toString());
    recs.replaceChildren(table([{ key: "seq", label: "seq", num: true }, { key: "t", label: "time", render: (r) => fmtTime(r.t) },
      { key: "kind", label: "kind" }, { key: "job_id", label: "job", render: (r) => (r.job_id ? jobLink(r.job_id) : "") },
      { key: "actor", label: "actor" }, { key: "peer", label: "peer" }, { key: "event_id", label: "event", render: (r) => el("code", { title: r.event_id }, short(r.event_id, 10)) },
      { key: "body", label: "details", wrap: true, value: (r) => JSON.stringify(r.body), render: (r) => el("code", {}, short(JSON.stringify(r.body), 300)) }],
    rows.reverse(), { id: "audit" }));
  }
  show(el("h1", {}, "Audit trail"), box,
    el("p", {}, el("button", { type: "button", class: "secondary", id: "verify-partners", onclick: () => verify(true) }, "Verify with the heads partners hold")),
    el("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); load(0); } }, el("label", {}, "only job", jobIn), el("button", { type: "submit" }, "Show")),
    recs);
  const v = await verify(false);
  await load(v.records);
}

// ------------------------------------------------------------------ partners, models
async function pagePartners() {
  const [info, partners] = await Promise.all([get("/node"), get("/board/partners")]);
  const warn = partners.filter((p) => p.warning);
  const ownDays = (info.certificate_expires - Date.now() / 1000) / 86400;
  show(el("h1", {}, "Partners"),
    ...(ownDays < 30 ? [el("div", { class: "banner warn" }, "This node's certificate expires in " + ownDays.toFixed(0) + " days")] : []),
    ...warn.map((p) => el("div", { class: "banner warn partner-warning" }, p.name + ": " + p.warning)),
    table([{ key: "name", label: "partner" }, { key: "address", label: "address" },
      { key: "certificate_expires", label: "certificate expires", render: (p) => fmtTime(p.certificate_expires) },
      { key: "days_left", label: "days left", num: true, render: (p) => (p.days_left === null ? "" : p.days_left.toFixed(0)) },
      { key: "warning", label: "warning" },
      { key: "certificate_sha256", label: "certificate SHA-256", render: (p) => el("code", { title: p.certificate_sha256 || "" }, short(p.certificate_sha256, 16)) }],
    partners, { id: "partners" }),
    el("h2", {}, "This node"),
    table([{ key: "k", label: "" }, { key: "v", label: "", wrap: true }], [
      ["name", info.name], ["federation", info.federation], ["REST API", info.api], ["Atoll", info.atoll],
      ["certificate expires", fmtTime(info.certificate_expires)], ["store", info.store + " (schema " + info.schema + ")"],
      ["running jobs", (info.running || []).join(", ")]].map(([k, v]) => ({ k, v }))));
}
async function pageModels() {
  const models = await get("/models");
  show(el("h1", {}, "Models"), el("p", { class: "muted" }, "This node's parts of the models its jobs trained (atoll model get ID --out FILE)."),
    table([{ key: "name", label: "name" }, { key: "version", label: "version", num: true }, { key: "party", label: "party" },
      { key: "component", label: "component" }, { key: "job_id", label: "job", render: (m) => jobLink(m.job_id) },
      { key: "sha256", label: "SHA-256", render: (m) => el("code", { title: m.sha256 }, short(m.sha256, 12)) },
      { key: "bytes", label: "bytes", num: true }, { key: "created", label: "created", render: (m) => fmtTime(m.created) }], models, { id: "models" }));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => logout("logged out"));
  window.addEventListener("hashchange", route);
  route();
});
