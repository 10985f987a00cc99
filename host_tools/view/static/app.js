// thingkit view: the page. One EventSource (server-sent events) per route; the server
// sends a snapshot and then only what changes. No polling of the server: the 1 s timer
// below only refreshes the "x s ago" texts from times already received.
"use strict";

const CSRF = document.querySelector('meta[name="thingkit-csrf"]').content;
const READONLY = document.querySelector('meta[name="thingkit-readonly"]').content === "1";
if (READONLY) document.body.classList.add("readonly");

const $ = (s) => document.querySelector(s);
const rows = new Map();
let rollouts = [];
let sortKey = "name", sortDir = 1;
let es = null, kit = null, renderPending = false;
let UNAV = {};  // what this cloud cannot tell (remote mode), and why: {cert, console, ...}

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function ago(t) {
  if (!t) return "–";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function when(t) { return t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : ""; }
function num(v) { return v === null || v === undefined ? "" : esc(v); }
function stateBadge(on) {
  return on === true ? '<span class="badge on">online</span>'
       : on === false ? '<span class="badge off">offline</span>' : '<span class="badge">unknown</span>';
}

// -- event stream --------------------------------------------------------------------
function connect(thing) {
  if (es) es.close();
  const link = $("#link");
  link.textContent = "connecting…"; link.classList.remove("live");
  es = new EventSource("/events" + (thing ? "?thing=" + encodeURIComponent(thing) : ""));
  es.onopen = () => { link.textContent = "live"; link.classList.add("live"); };
  es.onerror = () => { link.textContent = "reconnecting…"; link.classList.remove("live"); };
  const on = (name, f) => es.addEventListener(name, (e) => f(JSON.parse(e.data)));
  on("snapshot", (d) => {
    rows.clear();
    for (const r of d.rows) rows.set(r.name, r);
    rollouts = d.rollouts;
    UNAV = d.unavailable || {};
    $("#unavailable-note").textContent = UNAV.refused ? `Refused connections: ${UNAV.refused}.` : "";
    kit = d.kit || null;
    renderAll();
  });
  on("rows", (d) => {
    rowsChanged(d.rows);
    if (kit && rows.has(kit.name)) kit.row = rows.get(kit.name);
  });
  on("rollouts", (d) => { rollouts = d; if (route().page === "rollouts") renderRollouts(); });
  on("telemetry", (pts) => {
    if (!kit) return;
    for (const p of pts) {
      for (const [comp, vals] of Object.entries(p.readings)) {
        const c = (kit.telemetry[comp] = kit.telemetry[comp] || {});
        for (const [k, v] of Object.entries(vals)) {
          (c[k] = c[k] || []).push([p.t, v]);
          const cut = p.t - 3600;
          while (c[k].length && c[k][0][0] < cut) c[k].shift();
        }
      }
    }
    renderTelemetry();
  });
  on("shadows", (d) => { if (kit) { kit.shadows = d; renderShadows(); } });
  on("vitals", (d) => { if (kit) { kit.vitals = d; renderVitals(); } });
  on("jobs", (d) => { if (kit) { kit.jobs = d; renderJobs(); } });
  on("cert", (d) => { if (kit) { kit.cert = d; renderCert(); } });
  on("console", (lines) => appendConsole(lines));
}

function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    const r = route();
    if (r.page === "fleet") {
      if (fullRender) renderFleet(); else patchFleet();
    } else if (r.page === "kit") renderKitHead();
    fullRender = false;
    renderSummary();
  });
}

// -- routing -------------------------------------------------------------------------
function route() {
  const h = location.hash.replace(/^#\/?/, "");
  if (h.startsWith("kit/")) return { page: "kit", thing: decodeURIComponent(h.slice(4)) };
  if (h === "rollouts") return { page: "rollouts" };
  return { page: "fleet" };
}
function go() {
  const r = route();
  $("#fleet-page").hidden = r.page !== "fleet";
  $("#kit-page").hidden = r.page !== "kit";
  $("#rollouts-page").hidden = r.page !== "rollouts";
  if (r.page === "kit") { kit = null; $("#kit-console").textContent = ""; }
  connect(r.page === "kit" ? r.thing : null);
}
window.addEventListener("hashchange", go);

function renderAll() {
  renderSummary();
  const r = route();
  if (r.page === "fleet") renderFleet();
  if (r.page === "rollouts") renderRollouts();
  if (r.page === "kit" && kit) renderKit();
}
function renderSummary() {
  let on = 0;
  for (const r of rows.values()) if (r.online) on++;
  $("#summary").textContent = `${on} online / ${rows.size} things`;
}

// -- fleet ---------------------------------------------------------------------------
function matches(r, text, state) {
  if (state === "online" && r.online !== true) return false;
  if (state === "offline" && r.online !== false) return false;
  if (state === "drift" && !r.drift) return false;
  if (state === "degraded" && !r.degraded) return false;
  if (!text) return true;
  return [r.name, r.board, r.fw, r.target, r.reason].join(" ").toLowerCase().includes(text);
}
function cmp(a, b) {
  const x = a[sortKey], y = b[sortKey];
  if (x === y) return a.name < b.name ? -1 : 1;
  if (x === null || x === undefined || x === "") return 1;  // blanks last either way
  if (y === null || y === undefined || y === "") return -1;
  return (x < y ? -1 : 1) * sortDir;
}
function rowHtml(r) {
  const fw = r.drift ? `<span class="drift" title="target ${esc(r.target)}">${esc(r.fw)} → ${esc(r.target)}</span>` : esc(r.fw);
  return `<tr data-thing="${esc(r.name)}" data-online="${r.online}">` +
    `<td><a href="#/kit/${encodeURIComponent(r.name)}">${esc(r.name)}</a>${r.revoked ? ' <span class="revoked">revoked</span>' : ""}</td>` +
    `<td>${stateBadge(r.online)}</td>` +
    `<td data-t="${r.since || ""}" title="${when(r.since)}">${ago(r.since)}</td>` +
    `<td>${esc(r.reason)}</td><td>${fw}</td><td>${esc(r.board)}</td>` +
    `<td class="num">${num(r.heap_free)}</td><td class="num">${num(r.heap_min_free)}</td>` +
    `<td class="num">${num(r.rssi)}</td><td class="num">${num(r.reconnects)}</td>` +
    `<td class="num">${num(r.outbox)}</td><td>${esc(r.degraded)}</td></tr>`;
}
function renderFleet() {
  patchRows.clear();
  const text = $("#filter").value.trim().toLowerCase(), state = $("#state-filter").value;
  const list = [...rows.values()].filter((r) => matches(r, text, state)).sort(cmp);
  $("#fleet tbody").innerHTML = list.map(rowHtml).join("");
  $("#shown").textContent = `${list.length} shown`;
  for (const th of document.querySelectorAll("#fleet th")) {
    th.classList.toggle("asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("desc", th.dataset.key === sortKey && sortDir === -1);
  }
}
// Rows whose place in the table does not change are replaced where they are: a
// thousand-row table is not rebuilt for each update.
const patchRows = new Set();
let fullRender = false;
function rowsChanged(changed) {
  const text = $("#filter").value.trim().toLowerCase(), state = $("#state-filter").value;
  for (const r of changed) {
    const old = rows.get(r.name);
    rows.set(r.name, r);
    if (!old || old[sortKey] !== r[sortKey] || matches(old, text, state) !== matches(r, text, state)) fullRender = true;
    else patchRows.add(r.name);
  }
  scheduleRender();
}
function patchFleet() {
  const body = $("#fleet tbody");
  for (const name of patchRows) {
    const tr = body.querySelector(`tr[data-thing="${CSS.escape(name)}"]`);
    if (tr) tr.outerHTML = rowHtml(rows.get(name));
  }
  patchRows.clear();
}
for (const th of document.querySelectorAll("#fleet th")) {
  th.addEventListener("click", () => {
    if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
    renderFleet();
  });
}
$("#filter").addEventListener("input", renderFleet);
$("#state-filter").addEventListener("change", renderFleet);

// -- one kit -------------------------------------------------------------------------
function renderKit() {
  renderKitHead(); renderTelemetry(); renderVitals(); renderShadows(); renderJobs(); renderCert();
  if (!kit.console) $("#kit-console").textContent = UNAV.console ? `Console: ${UNAV.console}.` : "(not a virtual kit on this machine: no console)";
}
function renderKitHead() {
  if (!kit) return;
  const r = kit.row = rows.get(kit.name) || kit.row;
  $("#kit-name").textContent = kit.name;
  const st = $("#kit-state");
  st.className = "badge " + (r.online === true ? "on" : r.online === false ? "off" : "");
  st.textContent = r.online === true ? "online" : r.online === false ? "offline" : "unknown";
  st.dataset.online = String(r.online);
  $("#kit-line").innerHTML =
    `since <span data-t="${r.since || ""}" title="${when(r.since)}">${ago(r.since)}</span>` +
    (r.reason ? ` · last disconnect: ${esc(r.reason)}` : "") +
    ` · board ${esc(r.board || "?")} · firmware ${esc(r.fw || "?")}` +
    (r.target ? ` (target ${esc(r.target)}${r.drift ? ', <span class="drift">drift</span>' : ""})` : "") +
    (r.degraded ? ` · <span class="drift">degraded: ${esc(r.degraded)}</span>` : "");
}
function chart(key, pts) {
  const W = 260, H = 64, now = Date.now() / 1000;
  // From the first point kept (at most an hour back), at least a minute wide.
  const t1 = Math.max(now, pts.length ? pts[pts.length - 1][0] : now);
  const t0 = Math.min(t1 - 60, Math.max(t1 - 3600, pts.length ? pts[0][0] : t1));
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === hi) { lo -= 1; hi += 1; }
  const x = (t) => ((t - t0) / (t1 - t0)) * (W - 4) + 2;
  const y = (v) => H - 4 - ((v - lo) / (hi - lo)) * (H - 8);
  const path = pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const last = pts.length ? pts[pts.length - 1] : null;
  const dot = last ? `<circle cx="${x(last[0]).toFixed(1)}" cy="${y(last[1]).toFixed(1)}" r="2.5" fill="#1570ef"/>` : "";
  return `<div class="chart" data-series="${esc(key)}" data-n="${pts.length}">` +
    `<div>${esc(key)} <span class="val">${last ? esc(+last[1].toFixed(3)) : "–"}</span>` +
    ` <span class="muted">(${pts.length} pts, ${esc(+lo.toFixed(2))}…${esc(+hi.toFixed(2))})</span></div>` +
    `<svg width="${W}" height="${H}" role="img" aria-label="${esc(key)} over the last hour">` +
    `<polyline fill="none" stroke="#1570ef" stroke-width="1.5" points="${path}"/>${dot}</svg></div>`;
}
function renderTelemetry() {
  if (!kit) return;
  const parts = [];
  for (const comp of Object.keys(kit.telemetry).sort()) {
    parts.push(`<div class="comp"><h3>${esc(comp)}</h3>`);
    for (const k of Object.keys(kit.telemetry[comp]).sort()) parts.push(chart(`${comp}.${k}`, kit.telemetry[comp][k]));
    parts.push("</div>");
  }
  $("#kit-telemetry").innerHTML = parts.join("") || '<p class="muted">no telemetry seen yet</p>';
}
function dl(obj) {
  return Object.entries(obj).map(([k, v]) =>
    `<dt>${esc(k)}</dt><dd>${esc(typeof v === "object" && v !== null ? JSON.stringify(v) : v)}</dd>`).join("");
}
function renderVitals() { if (kit) $("#kit-vitals").innerHTML = dl(kit.vitals || {}) || '<p class="muted">no diag yet</p>'; }
function pretty(v) { return v === null || v === undefined ? "–" : esc(JSON.stringify(v, null, 1)); }
function renderShadows() {
  if (!kit) return;
  const open = new Set([...document.querySelectorAll("#kit-shadows details[open]")].map((d) => d.dataset.shadow));
  $("#kit-shadows").innerHTML = Object.entries(kit.shadows).map(([name, s]) =>
    `<h3>${esc(name)} <span class="muted">version <span class="version">${esc(s.version)}</span></span></h3>` +
    `<div class="shadow" data-shadow="${esc(name)}">` +
    `<div>desired<pre class="desired">${pretty(s.desired)}</pre></div>` +
    `<div>reported<pre class="reported">${pretty(s.reported)}</pre></div>` +
    `<div>delta<pre class="delta">${pretty(s.delta)}</pre></div></div>` +
    `<details data-shadow="${esc(name)}"${open.has(name) ? " open" : ""}><summary>metadata (update times)</summary><pre>${pretty(s.metadata)}</pre></details>`
  ).join("") || '<p class="muted">no shadow</p>';
}
function renderJobs() {
  if (!kit) return;
  const j = kit.jobs || [];
  $("#kit-jobs").innerHTML = j.length ? "<table><tr><th>job</th><th>operation</th><th>version</th><th>this kit</th><th>job</th><th></th></tr>" +
    j.slice().reverse().map((e) => `<tr data-job="${esc(e.jobId)}"><td>${esc(e.jobId)}</td><td>${esc(e.operation)}</td>` +
      `<td>${esc(e.version)}</td><td><span class="chip ${esc(e.status)}">${esc(e.status)}</span></td><td>${esc(e.jobStatus)}</td>` +
      `<td>${e.jobStatus === "IN_PROGRESS" ? `<button class="action cancel" data-job="${esc(e.jobId)}">Cancel…</button>` : ""}</td></tr>`).join("") +
    "</table>" : `<p class="muted">${UNAV.cancel ? "no pending jobs" : "no jobs"}</p>`;
  if (UNAV.cancel) $("#kit-jobs").insertAdjacentHTML("beforeend", `<p class="muted unavailable">Job documents and cancelling: ${esc(UNAV.cancel)}.</p>`);
}
function renderCert() {
  if (!kit) return;
  const c = kit.cert || {};
  if (c.unavailable) {
    $("#kit-cert").innerHTML = dl({ "certificate (expiry, revoked)": c.unavailable });
    $("#kit-cert").dataset.revoked = "unknown";
    $("#revoke").disabled = true;
    $("#revoke").title = UNAV.revoke || c.unavailable;
    return;
  }
  const days = c.not_after ? Math.floor((c.not_after - Date.now() / 1000) / 86400) : null;
  const shown = {
    subject: c.subject, issuer: c.issuer, serial: c.serial, "SHA-256 fingerprint": c.fingerprint,
    "valid until": c.not_after ? `${when(c.not_after)} (${days} days)` : undefined,
    revoked: c.revoked ? "YES" : "no",
    "matches registry": c.matches_registry ? "yes" : `no (registry: ${c.registered_fingerprint || "none"})`,
  };
  $("#kit-cert").innerHTML = dl(Object.fromEntries(Object.entries(shown).filter(([, v]) => v !== undefined)));
  $("#kit-cert").dataset.revoked = String(!!c.revoked);
  $("#revoke").disabled = !!c.revoked || !c.serial;
}
function appendConsole(lines) {
  const pre = $("#kit-console");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const all = (pre.textContent ? pre.textContent.split("\n") : []).concat(lines).slice(-500);
  pre.textContent = all.join("\n");
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

// -- actions (each confirmed; CSRF token in a header) --------------------------------
async function act(url, body) {
  const r = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Thingkit-CSRF": CSRF }, body: JSON.stringify(body),
  });
  let d; try { d = await r.json(); } catch { d = { ok: false, error: `HTTP ${r.status}` }; }
  return d;
}
$("#desired-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("#desired-key").value, raw = $("#desired-value").value.trim();
  let value; try { value = JSON.parse(raw); } catch { value = raw; }
  if (!kit || raw === "") return;
  if (!confirm(`Set desired settings.${key} = ${JSON.stringify(value)} on ${kit.name}?`)) return;
  const d = await act(`/api/things/${encodeURIComponent(kit.name)}/desired`, { desired: { settings: { [key]: value } } });
  $("#desired-result").textContent = d.ok ? (d.result.accepted ? `accepted (version ${d.result.version})` : `rejected: ${d.result.message}`) : `refused: ${d.error}`;
});
$("#revoke").addEventListener("click", async () => {
  if (!kit || !confirm(`Revoke the certificate of ${kit.name}? The broker restarts and refuses it from now on.`)) return;
  const d = await act(`/api/things/${encodeURIComponent(kit.name)}/revoke`, { reason: "unspecified" });
  $("#revoke-result").textContent = d.ok ? "revoked" : `refused: ${d.error}`;
});
document.addEventListener("click", async (e) => {
  const b = e.target.closest("button.cancel");
  if (!b) return;
  if (!confirm(`Cancel job ${b.dataset.job}? Queued executions end CANCELED.`)) return;
  const d = await act(`/api/jobs/${encodeURIComponent(b.dataset.job)}/cancel`, { force: false });
  b.textContent = d.ok ? "cancelled" : `refused: ${d.error}`;
});

// -- rollouts ------------------------------------------------------------------------
function renderRollouts() {
  $("#rollouts").innerHTML = rollouts.map((r) =>
    `<div class="card" data-rollout="${esc(r.id)}"><h2>${esc(r.id)} → ${esc(r.version)} <span class="chip state">${esc(r.state)}</span></h2>` +
    ["canary", "rest"].filter((s) => r.stages[s]).map((s) => {
      const st = r.stages[s], pct = st.total ? (100 * st.ended) / st.total : 0;
      return `<p><b>${s}</b> ${esc(st.jobId)} (${esc(st.status)}) <progress max="${st.total}" value="${st.ended}">${pct.toFixed(0)}%</progress>` +
        ` ${st.ended}/${st.total} ended · failure rate ${st.failure_rate}%` +
        (st.abort_threshold !== null ? ` (aborts above ${st.abort_threshold}%)` : "") +
        (st.status === "IN_PROGRESS" ? ` <button class="action cancel" data-job="${esc(st.jobId)}">Cancel…</button>` : "") +
        `<br>${st.executions.map((e) => `<span class="chip ${esc(e.status)}" title="${esc(e.status)}">${esc(e.thing)}</span>`).join("")}</p>`;
    }).join("") + "</div>").join("") || (UNAV.rollouts ? `<p class="muted unavailable">Rollouts: ${esc(UNAV.rollouts)}.</p>` : '<p class="muted">no OTA rollouts on this bench</p>');
}

setInterval(() => {
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = ago(+el.dataset.t || 0);
}, 1000);
go();
