// dnsward review console: vanilla JS, no framework, no build step.
// The token lives in sessionStorage and travels only in an Authorization header; every state
// change is a POST with a JSON body. All text goes into the DOM through textContent.
"use strict";

const KEY = "dnsward.review.token";
const SVG = "http://www.w3.org/2000/svg";
let me = null;

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") { for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn); }
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const kid of kids.flat(Infinity)) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

class ApiError extends Error {
  constructor(status, body) { super((body && body.error) || ("HTTP " + status)); this.status = status; this.body = body; }
}

async function api(path, opts = {}) {
  const token = sessionStorage.getItem(KEY);
  const headers = { "Authorization": "Bearer " + token };
  const init = { method: opts.method || "GET", headers, credentials: "omit", cache: "no-store" };
  if (opts.body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(opts.body); }
  const r = await fetch(path, init);
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json().catch(() => null) : await r.text();
  if (r.status === 401) { signOut("Your token was not accepted; sign in again."); throw new ApiError(401, body); }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  showLogin(message || "");
}

function showLogin(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("login-view").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function signIn(token) {
  sessionStorage.setItem(KEY, token);
  try {
    me = await api("/api/v1/review/whoami");
  } catch (e) {
    sessionStorage.removeItem(KEY);
    showLogin(e.status === 401 ? "That token is not known." : e.message);
    return;
  }
  document.getElementById("login-view").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = me.user;
  document.getElementById("who-role").textContent = me.role;
  if (!location.hash || location.hash === "#") location.hash = "#/queue"; else route();
}

const can = (role) => me && ["viewer", "analyst", "admin"].indexOf(me.role) >= ["viewer", "analyst", "admin"].indexOf(role);

function scoreBadge(n) {
  return h("span", { class: "score " + (n >= 60 ? "high" : n < 40 ? "low" : "") }, n);
}

function stateBadge(st) {
  return h("span", { class: "state state-" + st, "data-state": st }, st.replace("_", " "));
}

function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function fmtSecs(n) {
  if (n >= 86400) return Math.round(n / 3600) + " h";
  if (n >= 3600) return (n / 3600).toFixed(1) + " h";
  if (n >= 60) return Math.round(n / 60) + " min";
  return n + " s";
}

function containmentText(active) {
  if (!active || !active.length) return h("span", { class: "muted" }, "none");
  return h("span", { class: "contained" }, active.map(c =>
    c.action + (c.domain ? " " + c.domain : " (whole client)") + ", expires in " + fmtSecs(c.expires_in_secs)).join("; "));
}

function suspectHref(client, domain) {
  return "#/suspect/" + encodeURIComponent(client) + "/" + encodeURIComponent(domain);
}

function setView(title, ...kids) {
  const v = document.getElementById("view");
  v.replaceChildren(h("h1", { id: "view-title" }, title), ...kids.filter(k => k !== null && k !== undefined && k !== false));
  document.title = title + " · dnsward review";
  for (const a of document.querySelectorAll("#nav a")) {
    if (location.hash.startsWith("#/" + a.dataset.view) || (a.dataset.view === "queue" && location.hash.startsWith("#/suspect"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function failed(e) {
  setView("Something went wrong", h("p", { class: "notice error", role: "alert" }, e.message));
}

// ---- queue ----
async function queueView(all, client) {
  const data = await api("/api/v1/review/suspects" + (all ? "?state=all" : "") + (client ? (all ? "&" : "?") + "client=" + encodeURIComponent(client) : ""));
  const rows = data.suspects.map(x => h("tr", { "data-client": x.client, "data-domain": x.domain },
    h("td", { class: "num" }, scoreBadge(x.max_score)),
    h("td", {}, h("a", { href: suspectHref(x.client, x.domain), class: "suspect-link row-link" }, x.domain)),
    h("td", { class: "mono" }, x.client),
    h("td", {}, x.group),
    h("td", { class: "num" }, x.alerts),
    h("td", { class: "num" }, x.bytes_estimate),
    h("td", {}, stateBadge(x.state)),
    h("td", {}, containmentText(x.active)),
    h("td", { class: "muted" }, fmtTime(x.last_seen))));
  const toggle = h("a", { href: all ? "#/queue" : "#/queue/all" }, all ? "Show pending only" : "Show all, including closed");
  setView(client ? "Suspects of " + client : all ? "All suspects" : "Open suspects",
    h("p", { class: "muted" }, rows.length + (all ? " suspects" : " waiting for review") + ", highest score first. ", toggle),
    rows.length ? h("table", { id: "queue" },
      h("thead", {}, h("tr", {}, ["score", "domain", "client", "group", "alerts", "bytes out", "state", "containment", "last alert"].map(t => h("th", { scope: "col", class: ["score", "alerts", "bytes out"].includes(t) ? "num" : "" }, t)))),
      h("tbody", {}, rows))
      : h("p", { class: "notice", id: "queue-empty" }, "Nothing to review."));
}

// ---- suspect ----
function chart(series, bucketSecs) {
  const W = 640, H = 160, P = 32;
  if (!series.length) return h("p", { class: "muted" }, "No queries to this domain in the event log.");
  const maxN = Math.max(1, ...series.map(b => b.names)), maxB = Math.max(1, ...series.map(b => b.bytes));
  const bw = (W - 2 * P) / series.length;
  const bars = series.map((b, i) => {
    const bh = (H - 2 * P) * b.names / maxN;
    return s("rect", { class: "bar-names", x: P + i * bw + 1, y: H - P - bh, width: Math.max(1, bw - 2), height: bh },
      s("title", {}, b.start + ": " + b.names + " names, " + b.bytes + " bytes"));
  });
  const pts = series.map((b, i) => (P + i * bw + bw / 2).toFixed(1) + "," + (H - P - (H - 2 * P) * b.bytes / maxB).toFixed(1)).join(" ");
  return s("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": "Names (bars) and bytes (line) per " + bucketSecs + " s", id: "chart" },
    s("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#999" }),
    bars,
    s("polyline", { class: "line-bytes", points: pts }),
    series.map((b, i) => s("circle", { class: "dot-bytes", r: 3, cx: (P + i * bw + bw / 2).toFixed(1), cy: (H - P - (H - 2 * P) * b.bytes / maxB).toFixed(1) })),
    s("text", { x: P, y: 14 }, "names per " + bucketSecs + " s (bars, max " + maxN + ")"),
    s("text", { x: W - P, y: 14, "text-anchor": "end" }, "bytes (line, max " + maxB + ")"),
    s("text", { x: P, y: H - 8 }, fmtTime(series[0].start)),
    s("text", { x: W - P, y: H - 8, "text-anchor": "end" }, fmtTime(series[series.length - 1].start)));
}

function breakdown(terms) {
  const list = Object.entries(terms || {}).filter(([k]) => !k.startsWith("query.")).sort((a, b) => b[1] - a[1]);
  if (!list.length) return h("p", { class: "muted" }, "No breakdown.");
  const W = 420, row = 20, max = Math.max(1, ...list.map(t => t[1]));
  return s("svg", { viewBox: "0 0 " + W + " " + (list.length * row + 4), width: "100%", role: "img", "aria-label": "Score breakdown", id: "breakdown" },
    list.map(([k, v], i) => [
      s("text", { x: 0, y: i * row + 14 }, k),
      s("rect", { class: "bar-term", x: 200, y: i * row + 4, width: Math.max(1, 180 * v / max), height: 12 }),
      s("text", { x: 200 + 180 * v / max + 6, y: i * row + 14 }, v.toFixed(1)),
    ]));
}

const STEPS = {
  acknowledged: { label: "Acknowledge", from: ["open"], cls: "" },
  confirmed: { label: "Confirm tunnel", from: ["open", "acknowledged"], cls: "danger" },
  false_positive: { label: "False positive", from: ["open", "acknowledged", "confirmed"], cls: "ok" },
  released: { label: "Release", from: ["open", "acknowledged", "confirmed"], cls: "" },
};

async function suspectView(client, domain) {
  const d = await api("/api/v1/review/suspects/" + encodeURIComponent(client) + "/" + encodeURIComponent(domain));
  const x = d.suspect;
  const result = h("div", { id: "result", role: "status", "aria-live": "polite" });
  const note = h("textarea", { id: "note", required: true, maxlength: 2000, placeholder: "Why? (required, recorded with your name)" });
  const days = h("input", { id: "exception-days", type: "number", min: 1, max: 30, value: 7 });
  const extend = h("select", { id: "extend" }, h("option", { value: "" }, "keep as is"), ["6h", "24h", "7d"].map(v => h("option", { value: v }, v)));
  const propose = h("input", { id: "propose-deny", type: "checkbox" });
  const buttons = Object.entries(STEPS).map(([to, st]) => h("button", {
    type: "button", id: "act-" + to, class: st.cls,
    disabled: !can("analyst") || !st.from.includes(x.state),
    on: { click: () => act(to) },
  }, st.label));
  async function act(to) {
    if (!note.value.trim()) { result.replaceChildren(h("p", { class: "notice error" }, "Write a note first.")); note.focus(); return; }
    const body = { to, note: note.value, expect: x.state };
    if (to === "false_positive") body.exception_days = Number(days.value);
    if (to === "confirmed") { if (extend.value) body.extend = extend.value; body.propose_deny = propose.checked; }
    for (const b of buttons) b.disabled = true;
    try {
      const t = await api("/api/v1/review/suspects/" + encodeURIComponent(client) + "/" + encodeURIComponent(domain) + "/transition", { method: "POST", body });
      await suspectView(client, domain);
      const r = document.getElementById("result");
      r.replaceChildren(h("p", { class: "notice", id: "result-ok" }, "Now " + t.to.replace("_", " ") + " by " + t.user + (t.effects && t.effects.length ? ": " + t.effects.join("; ") : ".")));
      r.setAttribute("tabindex", "-1");
      r.focus();
      window.scrollTo(0, 0);
    } catch (e) {
      result.replaceChildren(h("p", { class: "notice error", role: "alert" }, e.message));
      for (const b of buttons) b.disabled = false;
    }
  }
  const items = d.timeline.items.slice().reverse().slice(0, 200);
  setView(domain + " from " + client,
    h("p", {}, h("a", { href: "#/queue" }, "← Queue")),
    result,
    h("div", { class: "grid" },
      h("div", { class: "panel" },
        h("dl", { class: "kv" },
          h("dt", {}, "state"), h("dd", { id: "state" }, stateBadge(x.state)),
          h("dt", {}, "max score"), h("dd", {}, scoreBadge(x.max_score)),
          h("dt", {}, "group"), h("dd", {}, x.group),
          h("dt", {}, "alerts"), h("dd", {}, x.alerts + " (" + x.actions.join(", ") + ")"),
          h("dt", {}, "bytes out (est.)"), h("dd", {}, x.bytes_estimate),
          h("dt", {}, "window"), h("dd", {}, x.window.queries + " queries, " + x.window.unique_subdomains + " names in " + x.window.window_secs + " s"),
          h("dt", {}, "first / last"), h("dd", {}, fmtTime(x.first_seen) + " / " + fmtTime(x.last_seen)),
          h("dt", {}, "containment"), h("dd", { id: "containment" }, containmentText(x.active)),
          h("dt", {}, "exceptions"), h("dd", { id: "exceptions" }, d.exceptions.length
            ? d.exceptions.map(e => "#" + e.id + " " + e.domain + " in " + e.group + " until " + fmtTime(e.expires) + " by " + e.actor).join("; ")
            : h("span", { class: "muted" }, "none")))),
      h("div", { class: "panel" }, h("h2", {}, "Score breakdown"), breakdown(x.breakdown))),
    h("div", { class: "panel" }, h("h2", {}, "Names and bytes over time"), chart(d.timeline.series, d.timeline.bucket_secs)),
    h("div", { class: "panel" },
      h("h2", {}, "Triage"),
      can("analyst") ? null : h("p", { class: "muted" }, "Your role (" + me.role + ") can read but not triage."),
      h("label", { for: "note" }, "Note"), note,
      h("div", { class: "actions" },
        h("label", { for: "exception-days" }, "Exception days"), days,
        h("label", { for: "extend" }, "Extend containment"), extend,
        h("label", { for: "propose-deny" }, "Propose deny-list entry"), propose),
      h("div", { class: "actions" }, buttons)),
    h("div", { class: "panel" }, h("h2", {}, "Samples"), h("ul", { class: "plain mono", id: "samples" }, x.samples.map(v => h("li", {}, v)))),
    d.history.length ? h("div", { class: "panel" }, h("h2", {}, "Triage history"),
      h("table", { id: "history" }, h("tbody", {}, d.history.slice().reverse().map(t => h("tr", {},
        h("td", { class: "muted" }, fmtTime(t.at)), h("td", {}, t.user), h("td", {}, t.from + " → " + t.to), h("td", {}, t.note), h("td", { class: "muted" }, (t.effects || []).join("; "))))))) : null,
    h("div", { class: "panel" }, h("h2", {}, "Timeline (newest first" + (d.timeline.omitted ? ", " + d.timeline.omitted + " older omitted" : "") + ")"),
      h("table", { id: "timeline" }, h("tbody", {}, items.map(t => h("tr", {},
        h("td", { class: "muted" }, fmtTime(t.ts)), h("td", {}, t.kind), h("td", { class: "mono" }, t.name), h("td", {}, t.summary)))))));
}

// ---- agents ----
async function agentsView() {
  const d = await api("/api/v1/review/agents");
  setView("Agents",
    h("p", { class: "muted" }, d.agents.length + " clients in the event log; " + d.active.length + " active containments."),
    h("table", { id: "agents" },
      h("thead", {}, h("tr", {}, ["client", "group", "verdicts", "alerts", "containment", "recent", "last seen"].map(t => h("th", { scope: "col" }, t)))),
      h("tbody", {}, d.agents.map(a => h("tr", {},
        h("td", { class: "mono" }, h("a", { href: "#/queue/all/" + encodeURIComponent(a.client), class: "row-link" }, a.client)),
        h("td", {}, a.group || "—"),
        h("td", {}, Object.entries(a.verdicts).map(([k, v]) => k + " " + v).join(", ")),
        h("td", { class: "num" }, a.alerts),
        h("td", {}, containmentText(a.active)),
        h("td", {}, h("details", {}, h("summary", {}, a.recent.length + " latest"), h("ul", { class: "plain mono" }, a.recent.slice().reverse().map(r => h("li", {}, r))))),
        h("td", { class: "muted" }, fmtTime(a.last_seen)))))));
}

// ---- policy ----
function diffPre(text) {
  return h("pre", { id: "diff" }, text.split("\n").map(l => h("span", { class: l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : "" }, l + "\n")));
}

async function policyView() {
  const [hist, props] = await Promise.all([api("/api/v1/review/policy/history"), api("/api/v1/review/proposals")]);
  const out = h("div", { id: "diff-out" });
  const msg = h("div", { role: "status" });
  const versions = hist.versions.slice().reverse();
  const admin = can("admin");
  async function run(fn) {
    try { await fn(); await policyView(); } catch (e) { msg.replaceChildren(h("p", { class: "notice error", role: "alert" }, e.message)); }
  }
  function diffButton(a, b, label) {
    return h("button", { type: "button", on: { click: async () => { try { out.replaceChildren(h("h2", {}, "Diff " + a + " → " + b), diffPre(await api("/api/v1/review/policy/diff?a=" + a + "&b=" + b))); out.scrollIntoView(); } catch (e) { out.replaceChildren(h("p", { class: "notice error" }, e.message)); } } } }, label);
  }
  function applyButton(v) {
    return h("button", { type: "button", class: "primary", id: "apply-" + v.number, on: { click: () => { const reason = prompt("Reason for applying proposal " + v.number + " (" + (v.change || "") + ")?"); if (reason) run(() => api("/api/v1/review/policy/apply", { method: "POST", body: { version: v.number, reason } })); } } }, "Apply " + v.number);
  }
  // A version that ran is compared with the one that ran before it; a proposal with the
  // running version, which is what applying it would change.
  // A manifest the store does not trust is listed as {number, corrupt}: no diff or rollback.
  const ran = hist.versions.filter(v => !v.corrupt && v.status !== "proposed").map(v => v.number);
  const before = n => ran.filter(m => m < n).pop();
  function statusText(v) {
    if (v.status === "proposed") return v.applied_in ? "applied in " + v.applied_in : "proposed";
    return v.number === hist.active ? "active" : "";
  }
  function corruptRow(v) {
    return h("tr", { class: "corrupt" },
      h("td", { class: "num" }, v.number + (v.number === hist.active ? " (active)" : "")),
      h("td", {}, "—"), h("td", { class: "status" }, "corrupt"), h("td", {}, "—"),
      h("td", {}, "manifest not trusted: " + v.corrupt), h("td", {}), h("td", {}), h("td", {}));
  }
  setView("Policy",
    h("p", { class: "muted" }, "Active version " + hist.active + (hist.note ? " — " + hist.note : "")),
    admin ? h("div", { class: "actions" }, h("button", { type: "button", id: "reload", on: { click: () => run(() => api("/api/v1/review/policy/reload", { method: "POST", body: { message: "reload from the console" } })) } }, "Reload policy from disk")) : null,
    msg,
    h("table", { id: "history" },
      h("thead", {}, h("tr", {}, ["version", "action", "status", "author", "message", "loaded", "hash", ""].map(t => h("th", { scope: "col" }, t)))),
      h("tbody", {}, versions.map(v => v.corrupt ? corruptRow(v) : h("tr", { class: v.status === "proposed" ? "proposed" : "" },
        h("td", { class: "num" }, v.number + (v.number === hist.active ? " (active)" : "")),
        h("td", {}, v.action), h("td", { class: "status" }, statusText(v)), h("td", {}, v.author || "—"),
        h("td", {}, (v.change ? v.change + ": " : "") + (v.message || "")),
        h("td", { class: "muted" }, fmtTime(v.loaded_at)), h("td", { class: "mono" }, (v.hash || "").slice(0, 12)),
        h("td", {},
          v.status === "proposed"
            ? [diffButton(hist.active, v.number, "Diff with active (" + hist.active + ")"), admin && !v.applied_in ? applyButton(v) : null]
            : [before(v.number) ? diffButton(before(v.number), v.number, "Diff with " + before(v.number)) : null,
               admin && v.number !== hist.active ? h("button", { type: "button", on: { click: () => { const reason = prompt("Reason for rolling back to version " + v.number + "?"); if (reason) run(() => api("/api/v1/review/policy/rollback", { method: "POST", body: { to: v.number, reason } })); } } }, "Roll back to " + v.number) : null]))))),
    out,
    h("h2", {}, "Deny-list proposals (" + props.filter(p => !p.applied_in).length + " pending)"),
    props.length ? h("table", { id: "proposals" },
      h("thead", {}, h("tr", {}, ["version", "proposed", "author", "change", "note", "status", ""].map(t => h("th", { scope: "col" }, t)))),
      h("tbody", {}, props.map(p => h("tr", {},
        h("td", { class: "num" }, p.number), h("td", { class: "muted" }, fmtTime(p.loaded_at)), h("td", {}, p.author || "—"),
        h("td", { class: "mono" }, p.change || ""), h("td", {}, p.message || ""),
        h("td", {}, p.applied_in ? "applied in " + p.applied_in : "proposed against " + p.proposed_against),
        h("td", {}, p.applied_in ? null : [diffButton(hist.active, p.number, "Diff with active"), admin ? applyButton(p) : null])))))
      : h("p", { class: "muted" }, "None. Confirming a suspect with “propose deny-list entry” records a proposed policy version for an admin to apply."));
}

// ---- routing and keys ----
async function route() {
  if (!me) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "suspect" && parts.length >= 3) await suspectView(parts[1], parts[2]);
    else if (parts[0] === "agents") await agentsView();
    else if (parts[0] === "policy") await policyView();
    else await queueView(parts[1] === "all", parts[2]);
    const t = document.getElementById("view-title");
    if (t) { t.setAttribute("tabindex", "-1"); }
  } catch (e) { if (e.status !== 401) failed(e); }
}

function moveSelection(delta) {
  const links = [...document.querySelectorAll("#view a.row-link")];
  if (!links.length) return;
  let i = links.indexOf(document.activeElement);
  i = i < 0 ? (delta > 0 ? 0 : links.length - 1) : Math.min(links.length - 1, Math.max(0, i + delta));
  for (const r of document.querySelectorAll("tr.sel")) r.classList.remove("sel");
  links[i].focus();
  const row = links[i].closest("tr");
  if (row) row.classList.add("sel");
}

document.addEventListener("keydown", (e) => {
  if (!me || e.ctrlKey || e.metaKey || e.altKey) return;
  const tag = (e.target.tagName || "").toLowerCase();
  if (["input", "textarea", "select"].includes(tag)) return;
  if (e.key === "j") { moveSelection(1); e.preventDefault(); }
  else if (e.key === "k") { moveSelection(-1); e.preventDefault(); }
  else if (e.key === "g") location.hash = "#/queue";
  else if (e.key === "a") location.hash = "#/agents";
  else if (e.key === "p") location.hash = "#/policy";
});

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = document.getElementById("token");
    const v = t.value.trim();
    t.value = "";
    signIn(v);
  });
  document.getElementById("logout").addEventListener("click", () => signOut("Signed out."));
  const token = sessionStorage.getItem(KEY);
  if (token) signIn(token); else showLogin("");
});
