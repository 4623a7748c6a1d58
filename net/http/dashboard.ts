/**
 * The dashboard: one self-contained HTML page (inline CSS and script, no CDN, no build step)
 * that polls the JSON API every 2 s and draws the cluster: status and epoch, nodes with
 * capacity bars, the hash ring, each VDI family as a tree, space per VDI and snapshot (`img du`),
 * recovery, scrub and attach locks (which an operator can break, with the token if one is set).
 * A poll reads no inode: listings answer from counts the sheep keep (net/sheep/vdi_summary.ts).
 * Every value from the API is inserted as text, never as HTML.
 *
 * @module
 */

const STYLE = String.raw`
:root {
  color-scheme: light dark;
  --bg: #f4f5f7; --panel: #ffffff; --panel-2: #f8f9fb; --text: #1b1f24; --muted: #5f6b7a;
  --faint: #8a94a3; --line: #e3e6eb; --line-strong: #cfd4dc; --accent: #2f6fde;
  --ok: #1a8f55; --ok-bg: #e4f5ec; --warn: #b26a00; --warn-bg: #fdf1dc; --bad: #c8322f;
  --bad-bg: #fce8e7; --info-bg: #e8effc; --bar-bg: #e9ecf1; --bar-other: #c3c9d3;
  --shadow: 0 1px 2px rgb(16 24 40 / 6%), 0 1px 3px rgb(16 24 40 / 6%);
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1217; --panel: #171b22; --panel-2: #1c2129; --text: #e6e9ee; --muted: #9aa4b2;
    --faint: #6e7886; --line: #262c36; --line-strong: #333b47; --accent: #6ea1ff;
    --ok: #3ecf8e; --ok-bg: #12301f; --warn: #f0b34a; --warn-bg: #33270f; --bad: #ff6b66;
    --bad-bg: #3a1717; --info-bg: #17233a; --bar-bg: #242a34; --bar-other: #3b4452;
    --shadow: none;
  }
}
* { box-sizing: border-box; }
html { font-size: 14px; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 1rem/1.45 ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    "Noto Sans", "Liberation Sans", Arial, sans-serif;
  -webkit-font-smoothing: antialiased;
}
.mono, code { font-family: ui-monospace, "SF Mono", "Cascadia Mono", "JetBrains Mono", Menlo, Consolas,
  "DejaVu Sans Mono", monospace; font-size: .92em; }
.num { font-variant-numeric: tabular-nums; }
header.top {
  position: sticky; top: 0; z-index: 5; display: flex; align-items: center; gap: 1.25rem;
  padding: .7rem 1.5rem; background: var(--panel); border-bottom: 1px solid var(--line);
}
.brand { display: flex; align-items: center; gap: .55rem; font-weight: 650; font-size: 1.15rem;
  letter-spacing: -.01em; }
.brand svg { width: 26px; height: 26px; }
.brand small { font-weight: 450; color: var(--muted); font-size: .85rem; letter-spacing: 0; }
.facts { display: flex; gap: 1.4rem; align-items: center; flex-wrap: wrap; }
.fact { display: flex; flex-direction: column; line-height: 1.15; }
.fact b { font-size: 1.05rem; font-weight: 620; }
.fact span { font-size: .72rem; text-transform: uppercase; letter-spacing: .06em; color: var(--faint); }
.spacer { flex: 1; }
.pill { display: inline-flex; align-items: center; gap: .35rem; padding: .12rem .55rem;
  border-radius: 999px; font-size: .8rem; font-weight: 600; white-space: nowrap; }
.pill.ok { background: var(--ok-bg); color: var(--ok); }
.pill.warn { background: var(--warn-bg); color: var(--warn); }
.pill.bad { background: var(--bad-bg); color: var(--bad); }
.pill.info { background: var(--info-bg); color: var(--accent); }
.pill.plain { background: var(--panel-2); color: var(--muted); border: 1px solid var(--line); }
.dot { width: .5rem; height: .5rem; border-radius: 50%; background: currentColor; flex: none; }
.live { display: flex; align-items: center; gap: .45rem; color: var(--muted); font-size: .85rem; }
.live .dot { color: var(--ok); box-shadow: 0 0 0 0 currentColor; animation: pulse 2s infinite; }
.live.stale .dot { color: var(--bad); animation: none; }
@keyframes pulse { 0% { box-shadow: 0 0 0 0 rgb(26 143 85 / 45%); }
  70% { box-shadow: 0 0 0 .45rem rgb(26 143 85 / 0%); } 100% { box-shadow: 0 0 0 0 rgb(26 143 85 / 0%); } }
@media (prefers-reduced-motion: reduce) { .live .dot { animation: none; } }
.banner { margin: 1rem 1.5rem 0; padding: .65rem .9rem; border-radius: 8px; background: var(--bad-bg);
  color: var(--bad); font-weight: 550; display: none; }
.banner.show { display: block; }
main { padding: 1.1rem 1.5rem 2rem; display: grid; gap: 1rem;
  grid-template-columns: minmax(0, 1fr) 360px; align-items: start; max-width: 1600px; margin: 0 auto; }
.col { display: grid; gap: 1rem; min-width: 0; }
@media (max-width: 1100px) { main { grid-template-columns: minmax(0, 1fr); } }
section.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  box-shadow: var(--shadow); min-width: 0; }
.panel > h2 { margin: 0; padding: .75rem 1rem; font-size: .95rem; font-weight: 640; display: flex;
  align-items: center; gap: .6rem; border-bottom: 1px solid var(--line); }
.panel > h2 .count { color: var(--faint); font-weight: 500; }
.panel > h2 .right { margin-left: auto; font-weight: 450; font-size: .82rem; color: var(--muted); }
.body { padding: .9rem 1rem; }
.empty { color: var(--faint); padding: 1rem; text-align: center; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 1rem; }
.stat { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: .75rem 1rem;
  box-shadow: var(--shadow); }
.stat span { display: block; font-size: .72rem; text-transform: uppercase; letter-spacing: .06em;
  color: var(--faint); }
.stat b { display: block; font-size: 1.5rem; font-weight: 640; letter-spacing: -.02em; margin-top: .1rem; }
.stat small { color: var(--muted); font-size: .8rem; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; font-size: .72rem; text-transform: uppercase; letter-spacing: .06em;
  color: var(--faint); font-weight: 600; padding: .55rem 1rem; border-bottom: 1px solid var(--line); }
td { padding: .6rem 1rem; border-bottom: 1px solid var(--line); vertical-align: middle; }
tr:last-child td { border-bottom: 0; }
td.r, th.r { text-align: right; }
.swatch { display: inline-block; width: .7rem; height: .7rem; border-radius: 3px; margin-right: .5rem;
  vertical-align: -.05rem; }
.self { font-size: .72rem; color: var(--accent); margin-left: .4rem; font-weight: 600; }
.cap { min-width: 220px; }
.bar { position: relative; height: .55rem; border-radius: 999px; background: var(--bar-bg);
  overflow: hidden; display: flex; }
.bar i { display: block; height: 100%; }
.bar i.other { background: var(--bar-other); }
.cap small { display: block; color: var(--muted); font-size: .78rem; margin-top: .25rem; }
.ring-wrap { display: flex; flex-direction: column; align-items: center; gap: .6rem; }
.ring-wrap svg { width: 100%; max-width: 300px; height: auto; }
.ring-wrap svg.sparse path.arc, .ring-wrap svg path.share { stroke: var(--panel); stroke-width: 1; }
.ring-wrap svg path:hover { opacity: .75; }
.legend { width: 100%; display: grid; gap: .25rem; font-size: .85rem; }
.legend div { display: flex; align-items: center; }
.legend .pct { margin-left: auto; color: var(--muted); }
.families { display: grid; gap: .8rem; }
.family { border: 1px solid var(--line); border-radius: 9px; background: var(--panel-2); }
.family > header { display: flex; align-items: baseline; gap: .6rem; padding: .55rem .8rem;
  border-bottom: 1px solid var(--line); }
.family > header b { font-size: 1rem; }
.family > header span { color: var(--muted); font-size: .82rem; }
.family > header .pill { margin-left: auto; }
.lineage { padding: .7rem .8rem .8rem; }
.chain { display: flex; align-items: center; flex-wrap: wrap; row-gap: .5rem; }
.link { width: 1.3rem; height: 2px; background: var(--line-strong); flex: none; }
.branch { position: relative; margin-left: 1.1rem; padding-left: 1.3rem; margin-top: .5rem; }
.branch::before { content: ""; position: absolute; left: 0; top: -.5rem; height: 1.55rem; width: 1rem;
  border-left: 2px solid var(--line-strong); border-bottom: 2px solid var(--line-strong);
  border-bottom-left-radius: 8px; }
.branch .from { font-size: .75rem; color: var(--faint); margin-bottom: .25rem; }
.node { display: inline-flex; flex-direction: column; gap: .05rem; padding: .35rem .6rem; border-radius: 8px;
  border: 1px solid var(--line-strong); background: var(--panel); min-width: 7.5rem; line-height: 1.25; }
.node .t { display: flex; align-items: center; gap: .35rem; font-weight: 600; font-size: .9rem; }
.node .m { color: var(--muted); font-size: .75rem; }
.node.snap .t::before { content: ""; width: .55rem; height: .55rem; transform: rotate(45deg);
  border: 2px solid var(--muted); border-radius: 1px; flex: none; }
.node.work { border-color: var(--accent); box-shadow: 0 0 0 1px var(--accent) inset; }
.node.work .t::before { content: ""; width: .55rem; height: .55rem; border-radius: 50%;
  background: var(--accent); flex: none; }
.here { font-size: .68rem; text-transform: uppercase; letter-spacing: .05em; color: var(--accent);
  font-weight: 700; }
.attached { color: var(--ok); font-weight: 600; }
.recovery .row { display: grid; gap: .3rem; padding: .45rem 0; border-bottom: 1px solid var(--line); }
.recovery .row:last-child { border-bottom: 0; }
.recovery .row div { display: flex; justify-content: space-between; font-size: .85rem; }
.bar i.prog { background: var(--accent); }
.scrub { display: grid; gap: .45rem; }
.scrub .counts { display: flex; flex-wrap: wrap; gap: .4rem; }
.scrub .finding { display: grid; gap: .1rem; font-size: .8rem; padding: .3rem 0;
  border-top: 1px solid var(--line); }
.scrub .finding .no { color: var(--bad); font-weight: 600; }
.okline { display: flex; align-items: center; gap: .5rem; color: var(--ok); font-weight: 600; }
.sub { color: var(--muted); font-size: .82rem; }
.history { display: grid; gap: .3rem; font-size: .85rem; }
.history div { display: flex; gap: .6rem; }
.history b { min-width: 4.5rem; }
.space { max-height: 420px; overflow: auto; }
.space tr.total td { font-weight: 650; border-top: 1px solid var(--line-strong); }
.space td.snap { color: var(--muted); padding-left: 1.8rem; }
.nowrap { white-space: nowrap; }
#attached td { padding-left: .6rem; padding-right: .6rem; }
.btn { font: inherit; font-size: .8rem; padding: .15rem .6rem; border-radius: 6px; cursor: pointer;
  border: 1px solid var(--line-strong); background: var(--panel-2); color: var(--bad); }
.btn:hover { background: var(--bad-bg); }
footer { color: var(--faint); font-size: .78rem; text-align: center; padding: 0 0 1.5rem; }
footer a { color: inherit; }
`;

const SCRIPT = String.raw`
"use strict";
const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;
const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
  "#84cc16", "#f97316", "#14b8a6", "#6366f1", "#eab308"];
let state = { api: null, cluster: null, nodes: [], vdis: [], du: null, locks: [], recovery: null, scrub: null, ring: null, ringKey: "" };
// The HTTP token, asked for once when a change needs it (kept in this page only).
let token = null;
let lastOk = 0;
let failing = null;

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") el.setAttribute("style", v);
    else el.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}
function fill(id, ...children) {
  $(id).replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];
function size(bytes) {
  if (bytes === undefined || bytes === null) return "—";
  let v = bytes, u = 0;
  while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  const text = u === 0 || Number.isInteger(v) ? String(v) : v >= 100 ? v.toFixed(0) : v.toFixed(1);
  return text + " " + UNITS[u];
}
function pct(x) { return (x * 100).toFixed(x >= 0.1 ? 0 : 1) + "%"; }
function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes());
}
function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function colorOf(id) {
  const i = state.nodes.findIndex((n) => n.id === id);
  if (i < 0) return "#888";
  return i < PALETTE.length ? PALETTE[i] : "hsl(" + ((i * 137.5) % 360) + " 65% 55%)";
}

async function get(path) {
  const res = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error((body && body.error) || (path + ": HTTP " + res.status));
  return body;
}

async function refresh() {
  try {
    const [cluster, nodes, vdis, du, locks, recovery, scrub] = await Promise.all([
      get("api/v1/cluster"), get("api/v1/nodes"),
      get("api/v1/vdis").catch((e) => (String(e.message).includes("format") ? [] : Promise.reject(e))),
      // Like the scrub below: the page must not go stale without space or locks (null: unavailable).
      get("api/v1/du").catch(() => null),
      get("api/v1/locks").catch(() => null),
      get("api/v1/recovery"),
      // Scrub status is a nicety: the rest of the page must not go stale without it.
      get("api/v1/scrub").catch(() => null),
    ]);
    if (!state.api) state.api = await get("api/v1").catch(() => null);
    const ringKey = cluster.epoch + "|" + nodes.map((n) => n.id + "/" + n.vnodes).join(",");
    if (ringKey !== state.ringKey) {
      state.ring = await get("api/v1/ring");
      state.ringKey = ringKey;
    }
    Object.assign(state, { cluster, nodes, vdis, du, locks, recovery, scrub });
    lastOk = Date.now();
    failing = null;
    render();
  } catch (error) {
    failing = error.message || String(error);
  }
  renderLive();
}

function renderLive() {
  const live = $("live");
  live.classList.toggle("stale", !!failing);
  fill("live-text", failing ? (lastOk ? "stale · updated " + ago(lastOk) : "no data") : "live · every 2 s");
  const banner = $("banner");
  banner.classList.toggle("show", !!failing);
  banner.textContent = failing ? "Cannot reach this sheep's API: " + failing + ". Retrying every 2 s." : "";
  document.body.style.opacity = "1";
}

function statusPill(status) {
  const map = { running: ["ok", "Running"], "waiting-for-format": ["warn", "Waiting for format"],
    stopped: ["bad", "Stopped"] };
  const [cls, label] = map[status] || ["warn", String(status).replace(/-/g, " ")];
  return h("span", { class: "pill " + cls, id: "status" }, h("i", { class: "dot" }), label);
}
function redundancyPill(r) {
  const cls = r.state === "full" ? "ok" : r.state === "unavailable" ? "plain" : "bad";
  const label = r.state === "full" ? "Full redundancy" : r.state === "unavailable" ? "No I/O" :
    r.state === "none" ? "No copies" : "Degraded";
  return h("span", { class: "pill " + cls, title: r.message }, label);
}

function render() {
  const c = state.cluster;
  document.title = "sheepdog · " + (c.status === "running" ? "epoch " + c.epoch : c.status) + " · " + location.host;
  fill("facts",
    statusPill(c.status),
    h("div", { class: "fact" }, h("b", { class: "num", id: "epoch" }, c.epoch), h("span", {}, "epoch")),
    h("div", { class: "fact" }, h("b", { class: "num" }, c.copies || "—"), h("span", {}, "copies")),
    h("div", { class: "fact" }, h("b", { class: "num" }, c.zones), h("span", {}, c.zones === 1 ? "zone" : "zones")),
    h("div", { class: "fact" }, h("b", { class: "num" }, c.objectSize ? size(c.objectSize) : "—"), h("span", {}, "object size")),
    redundancyPill(c.redundancy),
    state.api && !state.api.mutable ? h("span", { class: "pill plain", title: "Mutating endpoints are disabled" }, "read-only API") : null,
  );
  renderStats();
  renderNodes();
  renderRing();
  renderVdis();
  renderSpace();
  renderRecovery();
  renderScrub();
  renderAttached();
  renderHistory();
}

function renderStats() {
  const working = state.vdis.filter((v) => !v.snapshot);
  const snaps = state.vdis.length - working.length;
  const provisioned = working.reduce((a, v) => a + v.sizeBytes, 0);
  const allocated = state.vdis.reduce((a, v) => a + v.allocatedBytes, 0);
  const used = state.nodes.reduce((a, n) => a + (n.usedBytes || 0), 0);
  const total = state.nodes.reduce((a, n) => a + (n.totalBytes || 0), 0);
  const free = state.nodes.reduce((a, n) => a + (n.freeBytes || 0), 0);
  const attached = state.vdis.filter((v) => v.attachedTo).length;
  const stat = (label, value, sub, id) => h("div", { class: "stat" }, h("span", {}, label),
    h("b", { class: "num", id }, value), h("small", {}, sub));
  fill("stats",
    stat("Nodes", state.nodes.length, state.cluster.zones + " " + (state.cluster.zones === 1 ? "zone" : "zones") + " · " + (state.nodes.some((n) => n.problem) ? state.nodes.filter((n) => n.problem).length + " with disk problems" : "all up"), "stat-nodes"),
    stat("VDIs", working.length, snaps + " snapshot" + (snaps === 1 ? "" : "s") + " · " + size(provisioned) + " provisioned", "stat-vdis"),
    stat("Stored", size(used), total ? size(free) + " free of " + size(total) : "space not reported"),
    stat("Allocated", size(allocated), "data objects of all VDIs"),
    stat("Attached", attached, attached === 1 ? "VDI held open by a VM" : "VDIs held open by VMs"),
  );
}

function renderNodes() {
  fill("node-count", String(state.nodes.length));
  const ring = state.ring;
  const share = new Map((ring ? ring.nodes : []).map((n) => [n.id, n.share]));
  const rows = state.nodes.map((n) => {
    const known = n.totalBytes !== undefined;
    const t = n.totalBytes || 1;
    const other = known ? Math.max(0, n.totalBytes - n.freeBytes - n.usedBytes) : 0;
    const usedFrac = known ? n.usedBytes / t : 0;
    const fullFrac = known ? (n.totalBytes - n.freeBytes) / t : 0;
    const cap = known
      ? h("td", { class: "cap" },
        h("div", { class: "bar", title: "sheepdog objects " + size(n.usedBytes) + ", other files " + size(other) + ", free " + size(n.freeBytes) },
          h("i", { style: "width:max(" + (n.usedBytes > 0 ? 3 : 0) + "px," + (usedFrac * 100).toFixed(2) + "%);background:" + colorOf(n.id) }),
          h("i", { class: "other", style: "width:" + (Math.max(0, fullFrac - usedFrac) * 100).toFixed(2) + "%" })),
        h("small", { class: "num" }, size(n.usedBytes) + " objects · " + size(n.freeBytes) + " free of " + size(n.totalBytes) + " (" + pct(fullFrac) + " full)"))
      : h("td", { class: "cap sub" }, "not reported by this node");
    return h("tr", { "data-node": n.id },
      h("td", {}, h("span", { class: "swatch", style: "background:" + colorOf(n.id) }),
        h("span", { class: "mono" }, n.address || n.id),
        state.api && state.api.self === n.id ? h("span", { class: "self" }, "this sheep") : null),
      h("td", { class: "num" }, n.zone),
      h("td", { class: "r num" }, n.vnodes),
      h("td", { class: "r num" }, share.has(n.id) ? pct(share.get(n.id)) : "—"),
      cap,
      h("td", {}, h("span", { class: n.problem ? "pill bad" : "pill ok", title: n.problem || "" }, h("i", { class: "dot" }), n.problem ? n.problem.split(":")[0] : n.state || "up")));
  });
  fill("nodes-body", rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No nodes in the cluster view")));
}

function renderRing() {
  const ring = state.ring;
  const box = $("ring");
  if (!ring || ring.points === 0) {
    box.replaceChildren(h("div", { class: "empty" }, "No vnodes: the ring is empty"));
    return;
  }
  const R = 112, r = 84, C = 130;
  const svg = s("svg", { viewBox: "0 0 260 260", role: "img", "aria-label": "hash ring" });
  const points = [];
  for (const n of ring.nodes) for (const p of n.positions) points.push({ p, id: n.id });
  points.sort((a, b) => a.p - b.p);
  const xy = (f, rad) => {
    const a = f * 2 * Math.PI - Math.PI / 2;
    return [C + rad * Math.cos(a), C + rad * Math.sin(a)];
  };
  const arc = (from, to, id, R, r, label, cls) => {
    let span = to - from;
    if (span <= 0) span += 1;
    if (span >= 0.9999) {
      svg.append(s("circle", { cx: C, cy: C, r: (R + r) / 2, fill: "none", stroke: colorOf(id), "stroke-width": R - r }, s("title", {}, label(1))));
      return;
    }
    const large = span > 0.5 ? 1 : 0;
    const [x1, y1] = xy(from, R), [x2, y2] = xy(from + span, R);
    const [x3, y3] = xy(from + span, r), [x4, y4] = xy(from, r);
    const d = "M" + x1 + " " + y1 + "A" + R + " " + R + " 0 " + large + " 1 " + x2 + " " + y2 +
      "L" + x3 + " " + y3 + "A" + r + " " + r + " 0 " + large + " 0 " + x4 + " " + y4 + "Z";
    // A hairline of the same colour hides anti-aliasing seams between neighbouring arcs.
    svg.append(s("path", { d, fill: colorOf(id), stroke: colorOf(id), "stroke-width": .4, class: cls },
      s("title", {}, label(span))));
  };
  // A vnode owns the arc from the previous vnode up to itself; runs of one owner merge.
  const runs = [];
  for (let i = 0; i < points.length; i++) {
    const from = points[(i + points.length - 1) % points.length].p;
    const last = runs[runs.length - 1];
    if (last && last.id === points[i].id) last.to = points[i].p;
    else runs.push({ from, to: points[i].p, id: points[i].id });
  }
  if (runs.length > 1 && runs[0].id === runs[runs.length - 1].id) runs[0].from = runs.pop().from;
  const arcLabel = (id) => (span) => id + ": this arc is " + (span * 100).toFixed(2) + "% of the ring";
  if (runs.length === 1) arc(0, 1, runs[0].id, R, r, arcLabel(runs[0].id), "arc");
  else for (const run of runs) arc(run.from, run.to, run.id, R, r, arcLabel(run.id), "arc");
  if (runs.length <= 96) svg.classList.add("sparse");
  // Inside: each node's total share of the ring, as one segment per node.
  let at = 0;
  for (const n of ring.nodes) {
    if (n.share <= 0) continue;
    arc(at, at + n.share, n.id, r - 8, r - 14, () => n.id + " holds " + pct(n.share) + " of the ring in all", "share");
    at += n.share;
  }
  for (const pt of points) {
    const [x1, y1] = xy(pt.p, R + 3), [x2, y2] = xy(pt.p, R + 7);
    svg.append(s("line", { x1, y1, x2, y2, stroke: colorOf(pt.id), "stroke-width": 1, opacity: .55 }));
  }
  svg.append(s("text", { x: C, y: C - 4, "text-anchor": "middle", "font-size": 26, "font-weight": 650, fill: "currentColor" }, ring.points));
  svg.append(s("text", { x: C, y: C + 16, "text-anchor": "middle", "font-size": 11, fill: "currentColor", opacity: .6 }, "vnodes · epoch " + ring.epoch));
  const legend = h("div", { class: "legend" }, ring.nodes.map((n) => h("div", {},
    h("span", { class: "swatch", style: "background:" + colorOf(n.id) }), h("span", { class: "mono" }, n.id),
    h("span", { class: "pct num" }, n.vnodes + " vnodes · " + pct(n.share)))));
  box.replaceChildren(h("div", { class: "ring-wrap" }, svg, legend));
}

function nodeChip(v, named) {
  const meta = [];
  if (v.snapshot) {
    meta.push(when(v.snapshotMs));
    const title = "snapshot " + v.ref + (v.tag ? " (" + v.tag + ")" : "") + "\nvid " + v.vid.toString(16) +
      "\nsize " + size(v.sizeBytes) + ", allocated " + size(v.allocatedBytes) + ", shared " + size(v.sharedBytes);
    return h("div", { class: "node snap", title, "data-ref": v.ref },
      h("div", { class: "t" }, named ? h("span", {}, v.name) : null, h("span", { class: "mono" }, "#" + v.snapId),
        v.tag ? h("span", {}, v.tag) : null),
      h("div", { class: "m num" }, when(v.snapshotMs) + " · " + size(v.allocatedBytes)));
  }
  const title = "working VDI " + v.name + "\nvid " + v.vid.toString(16) + "\nsize " + size(v.sizeBytes) +
    ", allocated " + size(v.allocatedBytes) + ", shared " + size(v.sharedBytes) + ", copies " + v.copies;
  return h("div", { class: "node work", title, "data-ref": v.ref },
    h("div", { class: "t" }, h("span", {}, v.name), h("span", { class: "here" }, "you are here")),
    h("div", { class: "m num" }, size(v.sizeBytes) + " · " + size(v.allocatedBytes) + " own" +
      (v.sharedBytes ? " · " + size(v.sharedBytes) + " shared" : "")),
    v.attachedTo ? h("div", { class: "m attached" }, "● attached · " + v.attachedTo) : null);
}

function renderVdis() {
  const vdis = state.vdis;
  const byVid = new Map(vdis.map((v) => [v.vid, v]));
  const kids = new Map();
  for (const v of vdis) {
    if (!byVid.has(v.parentVid)) continue;
    if (!kids.has(v.parentVid)) kids.set(v.parentVid, []);
    kids.get(v.parentVid).push(v);
  }
  for (const list of kids.values()) list.sort((a, b) => a.vid - b.vid);
  const roots = vdis.filter((v) => !byVid.has(v.parentVid)).sort((a, b) => a.name.localeCompare(b.name) || a.vid - b.vid);
  // A lineage: the chain of same-name descendants drawn left to right; every other child (a
  // clone, or an older branch after a rollback) hangs below as a branch with its own lineage.
  function lineage(start, branch) {
    const chain = [start];
    const branches = [];
    let cur = start;
    for (;;) {
      const children = kids.get(cur.vid) || [];
      const same = children.filter((c) => c.name === cur.name);
      const next = same[same.length - 1];
      for (const c of children) if (c !== next) branches.push({ from: cur, child: c });
      if (!next) break;
      chain.push(next);
      cur = next;
    }
    const row = h("div", { class: "chain" });
    chain.forEach((v, i) => { if (i) row.append(h("span", { class: "link" })); row.append(nodeChip(v, branch && i === 0)); });
    return h("div", {}, row, branches.map((b) => h("div", { class: "branch" },
      h("div", { class: "from" }, (b.child.name === b.from.name ? "branch" : "clone") + " of " + b.from.ref),
      lineage(b.child, true))));
  }
  function familyStats(root) {
    let snaps = 0, clones = 0, attached = 0, allocated = 0;
    const walk = (v) => {
      if (v.snapshot) snaps++;
      if (v !== root && !v.snapshot && v.name !== root.name) clones++;
      if (v.attachedTo) attached++;
      allocated += v.allocatedBytes;
      for (const c of kids.get(v.vid) || []) walk(c);
    };
    walk(root);
    return { snaps, clones, attached, allocated };
  }
  fill("vdi-count", String(vdis.filter((v) => !v.snapshot).length));
  const cards = roots.map((root) => {
    const st = familyStats(root);
    const orphan = root.parentVid !== 0;
    return h("div", { class: "family", "data-family": root.name },
      h("header", {}, h("b", {}, root.name),
        h("span", { class: "num" }, size(root.sizeBytes) + " · " + st.snaps + " snapshot" + (st.snaps === 1 ? "" : "s") +
          (st.clones ? " · " + st.clones + " clone" + (st.clones === 1 ? "" : "s") : "") + " · " + size(st.allocated) + " allocated" +
          (orphan ? " · parent " + root.parentVid.toString(16) + " deleted" : "")),
        st.attached ? h("span", { class: "pill ok" }, h("i", { class: "dot" }), "in use") : h("span", { class: "pill plain" }, "idle")),
      h("div", { class: "lineage" }, lineage(root)));
  });
  const formatted = state.cluster.status !== "waiting-for-format";
  fill("families", cards.length ? cards : h("div", { class: "empty" }, formatted
    ? "No VDIs yet. Create one: shepherd vdi create NAME SIZE, or POST /api/v1/vdis"
    : "The cluster is not formatted yet: shepherd mkfs --copies=N"));
}

function renderRecovery() {
  const rec = state.recovery;
  const active = rec ? rec.nodes.filter((n) => n.state === "recovering") : [];
  fill("recovery-state", rec ? (rec.state === "recovering" ? active.length + " recovering" : "idle") : "");
  if (!rec) return;
  if (!active.length) {
    fill("recovery", h("div", { class: "okline" }, h("i", { class: "dot" }), "Idle"),
      h("div", { class: "sub" }, "Every object is where the ring of epoch " + state.cluster.epoch + " puts it."));
    return;
  }
  fill("recovery", h("div", { class: "recovery" }, active.map((n) => {
    const frac = n.total ? n.done / n.total : 0;
    const left = n.rate > 0 ? Math.round((n.total - n.done) / n.rate) : null;
    return h("div", { class: "row" },
      h("div", {}, h("span", { class: "mono" }, n.id), h("span", { class: "num" }, pct(frac))),
      h("div", { class: "bar" }, h("i", { class: "prog", style: "width:" + (frac * 100).toFixed(1) + "%" })),
      h("div", { class: "sub" }, h("span", { class: "num" }, n.done + " / " + n.total + " objects"),
        h("span", { class: "num" }, n.rate.toFixed(1) + " obj/s" + (left !== null ? " · ~" + left + " s left" : ""))));
  })));
}

function renderScrub() {
  const sc = state.scrub;
  fill("scrub-state", sc ? (sc.state === "running" ? "running" : "idle") : "");
  if (!sc) {
    fill("scrub", h("div", { class: "empty" }, "Scrub status unavailable"));
    return;
  }
  const ran = sc.nodes.filter((n) => n.pass > 0);
  const next = sc.nodes.map((n) => n.nextMs).filter((ms) => ms).sort((a, b) => a - b)[0];
  const nextLine = next ? "Next background pass " + when(next) : "No background scrub scheduled";
  if (!ran.length) {
    fill("scrub", h("div", { class: "sub" }, "Never run. " + nextLine + "."));
    return;
  }
  const parts = [];
  if (sc.state === "running") {
    const frac = sc.objectsTotal ? sc.objectsChecked / sc.objectsTotal : 0;
    parts.push(h("div", { class: "bar" }, h("i", { class: "prog", style: "width:" + (frac * 100).toFixed(1) + "%" })),
      h("div", { class: "sub" }, h("span", { class: "num", id: "scrub-progress" }, sc.objectsChecked + " / " + sc.objectsTotal + " objects · " + pct(frac)),
        " · " + size(sc.bytesVerified) + " verified"));
  } else {
    const finished = Math.max(...ran.map((n) => n.finishedMs || 0));
    const clean = sc.findings === 0;
    parts.push(h("div", { class: clean ? "okline" : "sub" }, clean ? h("i", { class: "dot" }) : null,
      (clean ? "No problems found" : "Last pass") + (finished ? " · finished " + when(finished) : "")),
      h("div", { class: "sub" }, size(sc.bytesVerified) + " verified · " + nextLine));
  }
  const pill = (cls, text, id) => h("span", { class: "pill " + cls, id }, text);
  parts.push(h("div", { class: "counts" },
    pill(sc.findings ? "warn" : "plain", sc.findings + " finding" + (sc.findings === 1 ? "" : "s"), "scrub-findings"),
    pill(sc.badBlocks ? "warn" : "plain", sc.badBlocks + " bad block" + (sc.badBlocks === 1 ? "" : "s")),
    pill(sc.repaired ? "ok" : "plain", sc.repaired + " repaired"),
    pill(sc.repairFailed ? "bad" : "plain", sc.repairFailed + " not repaired")));
  const findings = sc.nodes.flatMap((n) => n.findings || []).sort((a, b) => b.timeMs - a.timeMs).slice(0, 5);
  for (const f of findings) {
    parts.push(h("div", { class: "finding" },
      h("div", {}, h("span", { class: "mono" }, f.oid), " on ", h("span", { class: "mono" }, f.node)),
      h("div", { class: "sub" }, f.problem, " · ", f.repaired ? h("span", {}, "repaired") : h("span", { class: "no" }, "not repaired"))));
  }
  fill("scrub", h("div", { class: "scrub" }, parts));
}

function renderAttached() {
  const rows = state.locks || [];
  const mutable = state.api && state.api.mutable;
  fill("attached-count", state.locks ? String(rows.length) : "");
  fill("attached", !state.locks ? h("div", { class: "empty" }, "Lock list unavailable") : rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "VDI"), h("th", {}, "Holder"), h("th", {}, "Since"), mutable ? h("th", {}) : null)),
      h("tbody", {}, rows.map((l) => h("tr", { "data-lock": l.vdi },
        h("td", {}, l.vdi), h("td", { class: "mono attached", title: l.node ? "through " + l.node : "" }, l.client),
        h("td", { class: "num sub nowrap" }, when(l.sinceMs).slice(5)), mutable ? h("td", { class: "r" }, breakButton(l)) : null))))
    : h("div", { class: "empty" }, "No VM has a VDI open"));
}

function breakButton(lock) {
  const button = h("button", { class: "btn", type: "button", title: "Release this lock, whoever holds it (logged on the sheep)" }, "Break");
  button.addEventListener("click", () => breakLock(lock));
  return button;
}

async function breakLock(lock) {
  if (!confirm("Break the lock of " + lock.vdi + "? " + lock.client + " may still be writing to it.")) return;
  const headers = { accept: "application/json" };
  if (state.api && state.api.tokenRequired) {
    token = token || prompt("Changes on this sheep need its HTTP token:");
    if (!token) return;
    headers.authorization = "Bearer " + token;
  }
  const res = await fetch("api/v1/vdis/" + encodeURIComponent(lock.vdi) + "/lock/break", { method: "POST", headers });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    if (res.status === 401) token = null;
    alert((body && body.error) || "HTTP " + res.status);
  }
  refresh();
}

function renderSpace() {
  const du = state.du;
  fill("space-total", du && du.vdis.length ? size(du.total.allocatedBytes) + " used" : "");
  if (!du || !du.vdis.length) {
    fill("space", h("div", { class: "empty" }, du || !state.vdis.length ? "No VDIs" : "Space unavailable"));
    return;
  }
  const row = (name, v, cls, ref) => h("tr", { class: cls, "data-du": ref },
    h("td", { class: cls === "snapshot" ? "snap" : "" }, name), h("td", { class: "r num" }, size(v.sizeBytes)),
    h("td", { class: "r num" }, size(v.allocatedBytes)), h("td", { class: "r num" }, size(v.sharedBytes)));
  fill("space", h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "VDI"), h("th", { class: "r" }, "Provisioned"), h("th", { class: "r" }, "Used"), h("th", { class: "r" }, "Shared"))),
    h("tbody", {}, du.vdis.map((v) => row(v.snapshot ? v.name + ":" + (v.tag || v.snapId) : v.name, v, v.snapshot ? "snapshot" : "", v.ref)),
      row("Total", du.total, "total", "total"))));
}

function renderHistory() {
  const hist = state.cluster.epochHistory || [];
  fill("history", hist.length
    ? h("div", { class: "history" }, hist.slice(0, 8).map((e) => h("div", {},
      h("b", { class: "num" }, "epoch " + e.epoch), h("span", { class: "sub" }, e.nodes.length + " node" + (e.nodes.length === 1 ? "" : "s") + ": " + e.nodes.join(", ")))))
    : h("div", { class: "empty" }, "No epochs yet"));
  fill("served-by", location.host);
}

refresh();
setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
`;

const LOGO = `<svg viewBox="0 0 32 32" aria-hidden="true"><circle cx="16" cy="16" r="14" fill="none"
stroke="#3b82f6" stroke-width="4" stroke-dasharray="22 7"/><circle cx="16" cy="16" r="5" fill="#3b82f6"/></svg>`;

const ICON = "data:image/svg+xml," +
  encodeURIComponent(LOGO.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" '));

/** The dashboard page. */
export const dashboardHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>sheepdog</title>
<link rel="icon" href="${ICON}">
<style>${STYLE}</style>
</head>
<body style="opacity:.6">
<header class="top">
  <div class="brand">${LOGO}<span>sheepdog</span><small id="served-by"></small></div>
  <div class="facts" id="facts" aria-live="polite"></div>
  <div class="spacer"></div>
  <div class="live" id="live"><i class="dot"></i><span id="live-text">connecting…</span></div>
</header>
<div class="banner" id="banner" role="alert"></div>
<main>
  <div class="col">
    <div class="stats" id="stats"></div>
    <section class="panel">
      <h2>Nodes <span class="count" id="node-count"></span></h2>
      <table>
        <thead><tr><th>Node</th><th>Zone</th><th class="r">Vnodes</th><th class="r">Ring</th>
        <th>Capacity</th><th>State</th></tr></thead>
        <tbody id="nodes-body"></tbody>
      </table>
    </section>
    <section class="panel">
      <h2>VDIs <span class="count" id="vdi-count"></span>
        <span class="right">◆ snapshot · ● working VDI · lines: snapshot chain and clones</span></h2>
      <div class="body families" id="families"></div>
    </section>
    <section class="panel">
      <h2>Space <span class="count" id="space-total"></span>
        <span class="right">used: objects it owns · shared: read from the snapshot it grew from</span></h2>
      <div class="space" id="space"></div>
    </section>
  </div>
  <div class="col">
    <section class="panel">
      <h2>Hash ring <span class="right">who holds the first copy</span></h2>
      <div class="body" id="ring"></div>
    </section>
    <section class="panel">
      <h2>Recovery <span class="right" id="recovery-state"></span></h2>
      <div class="body" id="recovery"></div>
    </section>
    <section class="panel">
      <h2>Scrub <span class="right" id="scrub-state"></span></h2>
      <div class="body" id="scrub"></div>
    </section>
    <section class="panel">
      <h2>Attached VMs <span class="count" id="attached-count"></span></h2>
      <div id="attached"></div>
    </section>
    <section class="panel">
      <h2>Epochs</h2>
      <div class="body" id="history"></div>
    </section>
  </div>
</main>
<footer>JSON API: <a href="api/v1">/api/v1</a> · Prometheus: <a href="metrics">/metrics</a></footer>
<script>${SCRIPT}</script>
</body>
</html>
`;
