/* icsmon posture dashboard: one page, no build step. Data from /api (bearer token kept in
   sessionStorage), charts by the vendored ECharts, labels from /static/i18n.json.
   Every value that comes from traffic is inserted as text, never as HTML. */
"use strict";

const SEV = ["critical", "high", "medium", "low"];
const SEV_COLOR = { critical: "#d7263d", high: "#f46036", medium: "#f2c14e", low: "#5aa9e6" };
const RATING_COLOR = { good: "#2e8b57", guarded: "#c9a227", elevated: "#e07b24", poor: "#c0392b" };
const CLOSE_REASONS = ["resolved", "false-positive", "benign", "duplicate", "accepted-risk"];
// network.protocol values the sensor writes (the alert filter offers each; labels: proto.*)
const PROTOCOLS = ["modbus", "s7comm", "s7comm-plus", "opcua", "enip", "dnp3", "iec104"];

const S = {
  token: sessionStorage.getItem("icsmon.token") || "",
  lang: localStorage.getItem("icsmon.lang") || "zh",
  i18n: {},
  me: null,
  org: null,
  hours: Number(localStorage.getItem("icsmon.hours") || 24),
  scope: null,
  summary: null,
  charts: {},
  timer: null,
  refreshS: 30,
  protocol: sessionStorage.getItem("icsmon.protocol") || "",  // the alert list's filter
};

function protoName(p) {
  return p ? t(`proto.${p}`).replace(/^proto\./, "") : "";
}

function setProtocol(p) {
  S.protocol = p || "";
  sessionStorage.setItem("icsmon.protocol", S.protocol);
  refresh();
}

function renderProtocolFilter() {
  const select = document.getElementById("protocol-filter");
  const known = new Set([...PROTOCOLS, ...(S.summary?.alerts.by_protocol || []).map((r) => r[0])]);
  if (S.protocol) known.add(S.protocol);
  select.replaceChildren(el("option", { value: "" }, t("filter.all")),
    ...[...known].map((p) => el("option", { value: p }, protoName(p))));
  select.value = S.protocol;
  select.onchange = () => setProtocol(select.value);
}

function t(key) {
  const table = S.i18n[S.lang] || {};
  return table[key] !== undefined ? table[key] : (S.i18n.en || {})[key] || key;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.setAttribute("style", v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmtTime(value, withDate = true) {
  if (value === null || value === undefined) return t("never");
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (isNaN(d)) return String(value);
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : hm;
}

function band(sev) {
  if (sev >= 90) return "critical";
  if (sev >= 70) return "high";
  if (sev >= 40) return "medium";
  return "low";
}

function get(obj, path) {
  return path.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
}

class AuthError extends Error {}

async function api(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${S.token}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (resp.status === 401) throw new AuthError("unauthorised");
  if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).slice(0, 200)}`);
  return resp.status === 204 ? null : resp.json();
}

/* ---- names ---------------------------------------------------------------------------- */

function nameOf(kind, id) {
  if (!S.org) return id;
  if (kind === "province") return S.lang === "zh" ? (S.org.province?.name_zh || t("province")) : (S.org.province?.name || t("province"));
  for (const c of S.org.cities) {
    if (kind === "city" && c.id === id) return S.lang === "zh" && c.name_zh ? c.name_zh : c.name;
    for (const e of c.enterprises) {
      if (kind === "enterprise" && e.id === id) return S.lang === "zh" && e.name_zh ? e.name_zh : e.name;
      for (const s of e.sites) {
        if (kind === "site" && s.id === id) return `${S.lang === "zh" && e.name_zh ? e.name_zh : e.name} · ${s.name || s.id}`;
      }
    }
  }
  if (kind === "industry") return t(`industry.${id}`);
  return id;
}

function childName(row) {
  if (row.kind === "site") return row.name ? `${row.name} (${row.id})` : row.id;
  return S.lang === "zh" && row.name_zh ? row.name_zh : row.name || row.id;
}

/* ---- routing -------------------------------------------------------------------------- */

function route() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { scope: params.get("scope") || (S.me ? S.me.scope : "province"), alert: params.get("alert") };
}

function go(scope, alert) {
  const p = new URLSearchParams();
  p.set("scope", scope);
  if (alert) p.set("alert", alert);
  location.hash = p.toString();
}

/* ---- rendering: overview -------------------------------------------------------------- */

function translatePage() {
  document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  document.getElementById("lang").textContent = S.lang === "zh" ? "EN" : "中文";
  if (S.me) document.getElementById("whoami").textContent = `${S.me.name} · ${t("role." + S.me.role)}`;
}

function renderCrumbs(scope) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren();
  const parts = [];
  const homeKind = S.me.scope.split(":")[0];
  const levels = ["province", "city", "enterprise", "site"];
  const desc = S.summary?.scope;
  const chain = [];
  if (desc) {
    for (const p of desc.path || []) chain.push(`${p.kind}:${p.id}`);
    chain.push(desc.kind === "province" ? "province" : `${desc.kind}:${desc.id}`);
  } else {
    chain.push(scope);
  }
  // Only offer levels at or below the caller's home scope.
  const homeLevel = levels.indexOf(homeKind);
  if (homeLevel <= 0 && chain[0] !== "province") chain.unshift("province");
  for (const key of chain) {
    const [kind, id] = key.includes(":") ? key.split(/:(.*)/s) : [key, null];
    if (levels.indexOf(kind) < homeLevel && kind !== "industry") continue;
    parts.push(el("a", { href: `#scope=${encodeURIComponent(key)}`, "data-scope": key, class: key === scope ? "current" : "" },
      `${t(kind)}: ${nameOf(kind, id)}`));
  }
  parts.forEach((p, i) => { if (i) nav.append(el("span", { class: "sep" }, "›")); nav.append(p); });
}

function kpi(label, value, cls) {
  return el("div", { class: `kpi ${cls || ""}` }, el("div", { class: "kpi-value" }, value), el("div", { class: "kpi-label" }, label));
}

function chart(id) {
  if (!S.charts[id]) S.charts[id] = echarts.init(document.getElementById(id), null, { renderer: "canvas" });
  return S.charts[id];
}

const AXIS = { axisLabel: { color: "#9fb3c8" }, axisLine: { lineStyle: { color: "#3b4c63" } }, splitLine: { lineStyle: { color: "#24344a" } } };

function renderOverview() {
  const s = S.summary;
  const sc = s.score;
  chart("score-gauge").setOption({
    series: [{
      type: "gauge", min: 0, max: 100, startAngle: 210, endAngle: -30, radius: "95%",
      axisLine: { lineStyle: { width: 14, color: [[0.5, RATING_COLOR.poor], [0.7, RATING_COLOR.elevated], [0.85, RATING_COLOR.guarded], [1, RATING_COLOR.good]] } },
      pointer: { width: 4, itemStyle: { color: "#e6edf3" } }, axisTick: { show: false }, splitLine: { length: 10, lineStyle: { color: "#0d1726" } },
      axisLabel: { color: "#9fb3c8", distance: 16, fontSize: 10 },
      detail: { valueAnimation: false, fontSize: 30, color: RATING_COLOR[sc.rating], offsetCenter: [0, "38%"], formatter: (v) => v.toFixed(1) },
      title: { offsetCenter: [0, "70%"], color: "#c9d6e3", fontSize: 14 },
      data: [{ value: sc.score, name: t(`rating.${sc.rating}`) }],
    }],
  });
  document.getElementById("score-parts").replaceChildren(
    ...["alerts", "deviations", "sensor_health"].map((k) =>
      el("div", { class: "part" }, el("span", {}, t(`score.${k}`)), el("b", {}, `−${sc[k]}`))),
    el("div", { class: "formula" }, t("score.formula")));

  const a = s.alerts;
  document.getElementById("kpis").replaceChildren(
    kpi(t("kpi.alerts"), a.total.toLocaleString()),
    kpi(t("kpi.open"), a.open.toLocaleString(), "warn"),
    kpi(t("kpi.critical"), a.by_severity.critical.toLocaleString(), "crit"),
    kpi(t("kpi.assets"), s.assets.seen.toLocaleString()),
    kpi(t("kpi.assets_new"), s.assets.new.toLocaleString(), s.assets.new ? "warn" : ""),
    kpi(t("kpi.sensors"), `${s.sensors.reporting} / ${s.sensors.total}`),
    kpi(t("kpi.silent"), String(s.sensors.silent), s.sensors.silent ? "crit" : ""),
    kpi(t("kpi.no_traffic"), String(s.sensors.no_traffic || 0), s.sensors.no_traffic ? "warn" : ""));

  // Tiles: the next level down, coloured by score.
  const kind = s.children[0]?.kind || (s.scope.kind === "province" ? "city" : s.scope.kind === "site" ? "site" : "enterprise");
  document.getElementById("children-title").textContent = t(`panel.children.${kind}`);
  const tiles = s.children.map((c) => el("button", {
    class: `tile ${c.rating}`, type: "button", style: `--tile:${RATING_COLOR[c.rating]}`,
    "data-scope": `${c.kind}:${c.id}`, title: `${childName(c)}: ${c.score}`,
    onclick: () => { if (c.kind !== "site" || s.scope.kind !== "site") go(`${c.kind}:${c.id}`); },
  },
  el("div", { class: "tile-name" }, childName(c)),
  el("div", { class: "tile-score" }, c.score.toFixed(1)),
  el("div", { class: "tile-meta" }, `${t("rating." + c.rating)} · ${c.open} ${t("open_alerts")} · ${c.sites} ${t("sites")}`)));
  document.getElementById("tiles").replaceChildren(...tiles);

  const trend = s.trend.buckets;
  const daily = s.trend.interval >= 86400;
  chart("trend").setOption({
    grid: { left: 48, right: 12, top: 30, bottom: 28 },
    legend: { top: 0, textStyle: { color: "#c9d6e3" }, data: SEV.map((k) => t(`sev.${k}`)) },
    tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: trend.map((b) => { const d = new Date(b.t * 1000); return daily ? `${d.getMonth() + 1}/${d.getDate()}` : fmtTime(b.t, false).slice(0, 5); }), ...AXIS },
    yAxis: { type: "value", ...AXIS },
    series: SEV.slice().reverse().map((k) => ({ name: t(`sev.${k}`), type: "bar", stack: "sev", data: trend.map((b) => b[k]), itemStyle: { color: SEV_COLOR[k] }, barMaxWidth: 18 })),
  }, true);

  const tech = a.by_technique.slice().reverse();
  chart("techniques").setOption({
    grid: { left: 64, right: 40, top: 8, bottom: 20 }, tooltip: {},
    xAxis: { type: "value", ...AXIS }, yAxis: { type: "category", data: tech.map((r) => r[0]), ...AXIS },
    series: [{ type: "bar", data: tech.map((r) => r[1]), itemStyle: { color: "#4f8fd6" }, label: { show: true, position: "right", color: "#c9d6e3" } }],
  }, true);

  chart("tactics").setOption({
    tooltip: { trigger: "item" },
    legend: { type: "scroll", orient: "vertical", right: 0, top: "middle", textStyle: { color: "#c9d6e3" } },
    series: [{ type: "pie", radius: ["40%", "70%"], center: ["35%", "50%"], label: { show: false },
      data: a.by_tactic.map((r) => ({ name: t(`tactic.${r[0]}`), value: r[1] })) }],
  }, true);

  // Alerts per protocol; a bar filters the alert list to its protocol (again: all)
  const protos = a.by_protocol.slice().reverse();
  const protoChart = chart("protocols");
  protoChart.setOption({
    grid: { left: 120, right: 40, top: 8, bottom: 20 }, tooltip: {},
    xAxis: { type: "value", ...AXIS }, yAxis: { type: "category", data: protos.map((r) => protoName(r[0])), ...AXIS },
    series: [{ type: "bar", data: protos.map((r) => ({ value: r[1], protocol: r[0],
      itemStyle: { color: r[0] === S.protocol ? "#f2c14e" : "#4f8fd6" } })),
      label: { show: true, position: "right", color: "#c9d6e3" } }],
  }, true);
  protoChart.off("click");
  protoChart.on("click", (e) => setProtocol(e.data.protocol === S.protocol ? "" : e.data.protocol));
  renderProtocolFilter();

  const head = (...cols) => el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c))));
  document.getElementById("top-sites").replaceChildren(
    head(t("col.site"), t("col.enterprise"), t("col.risk"), t("col.open")),
    el("tbody", {}, s.top_sites.map((r) => el("tr", { class: "clickable", "data-scope": `site:${r.site}`, onclick: () => go(`site:${r.site}`) },
      el("td", {}, r.name && r.name !== r.site ? `${r.name} (${r.site})` : r.site),
      el("td", {}, r.enterprise ? nameOf("enterprise", r.enterprise) : "—"),
      el("td", { class: "num" }, r.risk.toFixed(1)),
      el("td", {}, SEV.filter((k) => r.open[k]).map((k) => el("span", { class: `pill ${k}` }, `${t("sev." + k)} ${r.open[k]}`)))))));

  const silent = s.sensors.silent_list;
  document.getElementById("silent").replaceChildren(
    head(t("sensor"), t("col.site"), t("col.state"), t("col.last_seen")),
    el("tbody", {}, silent.length ? silent.map((r) => el("tr", {},
      el("td", {}, r.name), el("td", {}, nameOf("site", r.site)), el("td", {}, t(`sensor.state.${r.state || "silent"}`)),
      el("td", { class: "crit-text" }, fmtTime(r.last_seen))))
      : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, t("none")))]));
}

// Traffic from the sensors' rollups (never raw events): who talks to whom, operations, new talkers.
function renderTraffic(tr) {
  const head = (...cols) => el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c))));
  const none = (n) => [el("tr", {}, el("td", { colspan: n, class: "muted" }, t("none")))];
  const total = tr.operations.reduce((a, [, n]) => a + n, 0) || 1;
  document.getElementById("operations").textContent = tr.operations.length
    ? `${t("traffic.operations")}: ` + tr.operations.map(([k, n]) => `${k ? opName(k) : "—"} ${Math.round((100 * n) / total)}%`).join(" · ")
    : "";
  document.getElementById("talkers").replaceChildren(
    head(t("col.client"), t("col.server"), t("col.protocol"), t("col.transactions")),
    el("tbody", {}, tr.talkers.length ? tr.talkers.map((r) => el("tr", {},
      el("td", {}, r.client), el("td", {}, r.server), el("td", {}, protoName(r.protocol)),
      el("td", { class: "num" }, r.transactions.toLocaleString()))) : none(4)));
  document.getElementById("controls").replaceChildren(
    head(t("col.client"), t("col.server"), t("col.protocol"), t("col.function"), t("col.transactions")),
    el("tbody", {}, tr.controls.length ? tr.controls.map((r) => el("tr", { "data-protocol": r.protocol },
      el("td", {}, r.client), el("td", {}, r.server), el("td", {}, protoName(r.protocol)),
      el("td", {}, functionName(r.function), el("span", { class: "muted" }, ` ${opName(r.operation)}`)),
      el("td", { class: "num" }, r.transactions.toLocaleString()))) : none(5)));
  document.getElementById("new-talkers").replaceChildren(
    head(t("col.client"), t("col.server"), t("col.protocol"), t("col.first_seen")),
    el("tbody", {}, tr.new_talkers.length ? tr.new_talkers.map((r) => el("tr", {},
      el("td", {}, r.client), el("td", {}, r.server), el("td", {}, protoName(r.protocol)),
      el("td", {}, fmtTime(r.first_seen)))) : none(4)));
}

function opName(op) {
  return t(`op.${op}`).replace(/^op\./, "");
}

function functionName(f) {
  return f ? t(`fn.${f}`).replace(/^fn\./, "").replace(/_/g, " ") : "—";
}

// Telecontrol stations (DNP3 outstations, IEC 104 controlled stations) from the asset records:
// the addresses they answer for and the identity their device attributes give.
function renderStations(lists) {
  const rows = lists.flatMap(([proto, page]) => page.items.map((a) => [proto, a]));
  const addresses = (proto, a) => proto === "dnp3"
    ? `${t("station.link")} ${(get(a, "asset.dnp3.link_addresses") || []).join(", ")}`
    : `${t("station.ca")} ${(get(a, "asset.iec104.common_addresses") || []).join(", ")}`;
  document.getElementById("stations").replaceChildren(
    el("thead", {}, el("tr", {}, [t("col.asset"), t("col.protocol"), t("col.addresses"), t("col.device"), t("col.last_seen")].map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.length ? rows.map(([proto, a]) => {
      const dev = get(a, "ics.device") || {};
      const id = get(a, "asset.id");
      return el("tr", { class: "clickable", "data-asset": id, onclick: () => aHash({ asset: id }) },
        el("td", {}, get(a, "host.ip") || id), el("td", {}, protoName(proto)), el("td", {}, addresses(proto, a)),
        el("td", {}, [dev.vendor, dev.product, dev.firmware].filter(Boolean).join(" ") || "—"),
        el("td", {}, fmtTime(get(a, "asset.last_seen"))));
    }) : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, t("none")))]));
}

function renderAlerts(page) {
  const head = el("thead", {}, el("tr", {}, [t("col.time"), t("col.severity"), t("col.rule"), t("col.technique"), t("col.site"), t("col.protocol"), t("col.status")].map((c) => el("th", {}, c))));
  const rows = page.items.map((a) => {
    const sev = get(a, "event.severity") || 0;
    const id = get(a, "event.id");
    return el("tr", { class: "clickable", "data-alert": id, onclick: () => go(S.scope, id) },
      el("td", {}, fmtTime(a["@timestamp"])),
      el("td", {}, el("span", { class: `pill ${band(sev)}` }, `${t("sev." + band(sev))} ${sev}`)),
      el("td", {}, get(a, "rule.name") || ""),
      el("td", {}, (get(a, "threat.technique.id") || []).join(", ")),
      el("td", {}, nameOf("site", get(a, "labels.site"))),
      el("td", {}, protoName(get(a, "network.protocol"))),
      el("td", {}, t(`status.${a.workflow.status}`)));
  });
  document.getElementById("alerts").replaceChildren(head, el("tbody", {}, rows));
}

/* ---- rendering: one alert ------------------------------------------------------------- */

function facts(pairs) {
  return pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) =>
    el("div", { class: "fact" }, el("span", { class: "k" }, k), el("span", { class: "v" }, Array.isArray(v) ? v.join(", ") : String(v))));
}

function eventRows(events) {
  const head = el("thead", {}, el("tr", {}, [t("col.time"), t("col.action"), t("col.source"), t("col.destination"), t("col.protocol"), "outcome"].map((c) => el("th", {}, c))));
  const body = events.length ? events.map((e) => el("tr", {},
    el("td", {}, fmtTime(e["@timestamp"])), el("td", {}, get(e, "event.action") || ""),
    el("td", {}, `${get(e, "source.ip") || ""}:${get(e, "source.port") || ""}`),
    el("td", {}, `${get(e, "destination.ip") || ""}:${get(e, "destination.port") || ""}`),
    el("td", {}, protoName(get(e, "network.protocol"))), el("td", {}, get(e, "event.outcome") || "")))
    : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, t("none")))];
  return [head, el("tbody", {}, body)];
}

async function renderAlert(id) {
  const [d, audit] = await Promise.all([api(`/api/alerts/${encodeURIComponent(id)}`), api(`/api/alerts/${encodeURIComponent(id)}/audit`)]);
  const sev = get(d, "event.severity") || 0;
  document.getElementById("alert-title").replaceChildren(
    el("span", { class: `pill ${band(sev)}` }, `${t("sev." + band(sev))} ${sev}`), " ", get(d, "rule.name") || id);
  const st = document.getElementById("alert-status");
  st.textContent = t(`status.${d.workflow.status}`);
  st.className = `badge ${d.workflow.status}`;
  const org = d.org || {};
  document.getElementById("alert-facts").replaceChildren(...facts([
    [t("col.time"), fmtTime(d["@timestamp"])],
    [t("col.city"), org.city ? nameOf("city", org.city) : null],
    [t("col.enterprise"), org.enterprise ? nameOf("enterprise", org.enterprise) : null],
    [t("col.site"), get(d, "labels.site")],
    [t("criticality"), org.criticality],
    [t("sensor"), get(d, "observer.name")],
    [t("col.source"), `${get(d, "source.ip")}:${get(d, "source.port")}`],
    [t("col.destination"), `${get(d, "destination.ip")}:${get(d, "destination.port")}`],
    [t("col.protocol"), protoName(get(d, "network.protocol"))],
    [t("col.action"), get(d, "event.action")],
    [t("col.technique"), (get(d, "threat.technique.id") || []).map((x, i) => `${x} ${(get(d, "threat.technique.name") || [])[i] || ""}`)],
    [t("panel.tactics"), (get(d, "threat.tactic.name") || []).map((x) => t(`tactic.${x}`))],
    ["community_id", get(d, "network.community_id")],
    ["event.id", get(d, "event.id")],
  ]));
  const rule = d.evidence.rule || {};
  const ruleFacts = facts([["id", rule.id], ["name", rule.name], ["ruleset", rule.ruleset], ["description", rule.description], ["reference", rule.reference]]);
  if (d.evidence.baseline) ruleFacts.push(...facts([[t("alert.baseline"), JSON.stringify(d.evidence.baseline.icsmon?.baseline || d.evidence.baseline)]]));
  document.getElementById("alert-rule").replaceChildren(...ruleFacts);
  document.getElementById("evidence").replaceChildren(...eventRows(d.evidence.events));
  document.getElementById("flow").replaceChildren(...eventRows(d.evidence.flow.events));
  document.getElementById("audit").replaceChildren(...(audit.length ? audit.map((r) => el("div", { class: "audit-row" },
    el("span", { class: "muted" }, fmtTime(r.at)), " ", el("b", {}, r.actor), " ", r.action, " ",
    el("span", { class: "muted" }, Object.entries(r.detail).map(([k, v]) => (typeof v === "object" ? `${k}: ${v.from ?? "—"} → ${v.to ?? "—"}` : `${k}: ${v}`)).join("; "))))
    : [el("div", { class: "muted" }, t("none"))]));
  renderWorkflow(d);
  if (window.ResponseUI) window.ResponseUI.alertIncident(d);
  await renderEdgeEvidence(d.event.id);
}

/* ---- evidence from the sensor (fetched on demand over the control channel) --------------- */

let edgeTimer = null;
const EDGE_ROWS = 100;  // events shown in the page; all of them are in the answer (and the pcap)

async function download(path, fallbackName) {
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${S.token}` } });
  if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).slice(0, 200)}`);
  const disposition = resp.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || fallbackName;
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function edgeRequest(r, events) {
  const bits = [[t("edge.requested_at"), fmtTime(r.requested_at)], [t("edge.requested_by"), r.requested_by], [t("edge.sensor"), r.sensor],
    [t("edge.window"), r.window.start ? `${fmtTime(r.window.start)} – ${fmtTime(r.window.end, false)}` : null]];
  if (r.reason) bits.push([t("edge.reason"), r.reason]);
  if (r.message) bits.push([t("edge.note"), r.message]);
  const box = el("div", { class: "edge-request", "data-request": r.id, "data-state": r.state },
    el("div", { class: "edge-head" }, el("span", { class: `badge edge-${r.state}` }, t(`edge.state.${r.state}`)), " ", el("span", { class: "muted" }, r.id)),
    el("div", { class: "facts" }, ...facts(bits)));
  if (r.state === "delivered") {
    const packets = r.pcap_bytes
      ? `${(r.pcap_frames || 0).toLocaleString()} ${t("edge.frames")} · ${(r.pcap_bytes || 0).toLocaleString()} ${t("edge.bytes")} · ${t("edge.source." + (r.pcap_source || "none"))}${r.pcap_truncated ? " · " + t("edge.truncated") : ""}`
      : t("edge.source.none");
    box.append(el("div", { class: "facts" }, ...facts([
      [t("edge.events"), `${r.events_sent} ${t("edge.of")} ${r.events_total}${r.events_truncated ? " · " + t("edge.truncated") : ""}`],
      [t("edge.packets"), packets]])));
    if (!r.complete) box.append(el("div", { class: "muted" }, t("edge.incomplete")));
    if (r.pcap_available) {
      box.append(el("button", { type: "button", class: "ev-pcap", onclick: () => download(`/api/evidence/${encodeURIComponent(r.id)}/pcap`, "evidence.pcap").catch((e) => alert(e.message)) }, t("edge.download")));
    }
    if (events) {
      const shown = events.slice(0, EDGE_ROWS);
      box.append(el("table", { class: "grid ev-events" }, ...eventRows(shown)));
      if (events.length > shown.length) box.append(el("div", { class: "muted" }, `${shown.length} ${t("edge.of")} ${events.length} · pcap`));
    }
  }
  return box;
}

async function renderEdgeEvidence(alertId) {
  clearTimeout(edgeTimer);
  const box = document.getElementById("edge-evidence");
  const data = await api(`/api/alerts/${encodeURIComponent(alertId)}/evidence`);
  const reqs = data.requests;
  const open = reqs.some((r) => r.state === "requested");
  const fetchButton = el("button", { id: "ev-fetch", type: "button", disabled: !data.configured || open ? "disabled" : null,
    onclick: async () => {
      fetchButton.disabled = true;
      fetchButton.textContent = t("edge.fetching");
      try { await api(`/api/alerts/${encodeURIComponent(alertId)}/evidence`, { method: "POST", body: JSON.stringify({}) }); }
      catch (e) { box.append(el("div", { class: "error" }, e.message)); }
      await renderEdgeEvidence(alertId);
    } }, t("edge.fetch"));
  // the newest delivered answer shows its events; older ones their counts
  const newest = reqs.find((r) => r.state === "delivered");
  const events = newest ? (await api(`/api/evidence/${encodeURIComponent(newest.id)}`)).events : null;
  box.replaceChildren(
    el("div", { class: "wf-actions" }, fetchButton, data.configured ? null : el("span", { class: "muted" }, " ", t("edge.not_configured"))),
    ...(reqs.length ? reqs.map((r) => edgeRequest(r, r === newest ? events : null)) : [el("div", { class: "muted" }, t("edge.none"))]));
  if (open) {  // follow the request until the sensor answers or it expires
    edgeTimer = setTimeout(() => {
      if (!document.getElementById("alert-view").hidden && route().alert === alertId) renderEdgeEvidence(alertId).catch(() => {});
    }, 2000);
  }
}

function renderWorkflow(d) {
  const box = document.getElementById("workflow");
  const wf = d.workflow;
  const info = facts([[t("col.status"), t(`status.${wf.status}`)], [t("alert.assignee"), wf.assignee], [t("alert.reason"), wf.close_reason ? t(`reason.${wf.close_reason}`) : null]]);
  const notes = d.notes.map((n) => el("div", { class: "note" }, el("span", { class: "muted" }, `${fmtTime(n.at)} ${n.author}: `), n.text));
  if (!S.me.can_workflow) {
    box.replaceChildren(...info, el("div", { class: "muted" }, t("readonly")), ...notes);
    return;
  }
  const id = encodeURIComponent(d.event.id);
  const act = async (path, body) => { await api(`/api/alerts/${id}/${path}`, { method: "POST", body: JSON.stringify(body || {}) }); await renderAlert(d.event.id); };
  const assignee = el("input", { id: "wf-assignee", placeholder: t("alert.assignee"), value: wf.assignee || "" });
  const reason = el("select", { id: "wf-reason" }, CLOSE_REASONS.map((r) => el("option", { value: r }, t(`reason.${r}`))));
  const note = el("textarea", { id: "wf-note", rows: 2, placeholder: t("alert.note") });
  const noteText = () => note.value.trim() || null;
  box.replaceChildren(...info,
    el("div", { class: "wf-actions" },
      wf.status === "open" ? el("button", { id: "wf-ack", type: "button", onclick: () => act("acknowledge", { note: noteText() }) }, t("btn.acknowledge")) : null,
      el("span", { class: "inline" }, assignee, el("button", { id: "wf-assign", type: "button", onclick: () => act("assign", { assignee: assignee.value.trim(), note: noteText() }) }, t("btn.assign"))),
      wf.status !== "closed"
        ? el("span", { class: "inline" }, reason, el("button", { id: "wf-close", type: "button", onclick: () => act("close", { reason: reason.value, note: noteText() }) }, t("btn.close")))
        : el("button", { id: "wf-reopen", type: "button", onclick: () => act("reopen", { note: noteText() }) }, t("btn.reopen"))),
    note,
    el("button", { id: "wf-note-add", type: "button", onclick: () => { if (noteText()) act("notes", { text: noteText() }); } }, t("btn.note")),
    el("div", { class: "card-title small" }, t("alert.notes")), ...(notes.length ? notes : [el("div", { class: "muted" }, t("none"))]));
}

/* ---- data flow ------------------------------------------------------------------------ */

async function refreshNow() {
  const r = route();
  S.scope = r.scope;
  const params = new URLSearchParams(location.hash.slice(1));
  const hunting = window.HuntUI && window.HuntUI.handles(params);
  const assessing = !hunting && window.AssessmentUI && window.AssessmentUI.handles(params);
  const response = !hunting && !assessing && window.ResponseUI && window.ResponseUI.handles(params);
  document.getElementById("response-view").hidden = !response;
  document.getElementById("assessment-view").hidden = !assessing;
  document.getElementById("hunt-view").hidden = !hunting;
  try {
    if (hunting) {
      document.getElementById("overview").hidden = true;
      document.getElementById("alert-view").hidden = true;
      await window.HuntUI.render(params);
    } else if (assessing) {
      document.getElementById("overview").hidden = true;
      document.getElementById("alert-view").hidden = true;
      await window.AssessmentUI.render(params);
    } else if (response) {
      document.getElementById("overview").hidden = true;
      document.getElementById("alert-view").hidden = true;
      await window.ResponseUI.render(params);
    } else if (r.alert) {
      document.getElementById("overview").hidden = true;
      document.getElementById("alert-view").hidden = false;
      await renderAlert(r.alert);
    } else {
      document.getElementById("alert-view").hidden = true;
      document.getElementById("overview").hidden = false;
      const q = `scope=${encodeURIComponent(r.scope)}&hours=${S.hours}`;
      const only = S.protocol ? `&protocol=${encodeURIComponent(S.protocol)}` : "";
      const stations = (role) => api(`/api/assets?scope=${encodeURIComponent(r.scope)}&role=${role}&limit=10`);
      const [summary, page, traffic, dnp3, iec104] = await Promise.all([
        api(`/api/summary?${q}`), api(`/api/alerts?${q}&limit=15${only}`), api(`/api/traffic?${q}&top=10`),
        stations("dnp3-server"), stations("iec104-server")]);
      S.summary = summary;
      renderOverview();
      renderAlerts(page);
      renderTraffic(traffic);
      renderStations([["dnp3", dnp3], ["iec104", iec104]]);
      Object.values(S.charts).forEach((c) => c.resize());
    }
    if (assessing || hunting) document.getElementById("crumbs").replaceChildren();
    else if (!response) {
      renderCrumbs(r.scope);
      if (window.ResponseUI) window.ResponseUI.tabs("overview");
    } else document.getElementById("crumbs").replaceChildren();
    document.getElementById("refreshed").textContent = fmtTime(Date.now() / 1000, false);
    document.body.classList.remove("stale");
  } catch (err) {
    if (err instanceof AuthError) return showLogin();
    document.body.classList.add("stale");
    document.getElementById("refreshed").textContent = `${t("error.load")}: ${err.message}`;
  }
}

/* One refresh at a time: a timer tick and a click landing together must not interleave
   their renders (the later one always draws last). */
let refreshing = Promise.resolve();
function refresh() {
  refreshing = refreshing.then(refreshNow, refreshNow);
  return refreshing;
}

function showLogin(message) {
  clearInterval(S.timer);
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function start() {
  try {
    S.me = await api("/api/me");
    S.org = await api("/api/org");
    S.refreshS = (await api("/api/config")).refresh_s || 30;
  } catch (err) {
    if (err instanceof AuthError) return showLogin(S.token ? t("login.failed") : "");
    throw err;
  }
  document.getElementById("login").hidden = true;
  translatePage();
  await refresh();
  clearInterval(S.timer);
  S.timer = setInterval(() => { if (!document.hidden) refresh(); }, S.refreshS * 1000);
}

async function init() {
  S.i18n = await (await fetch("/static/i18n.json")).json();
  S.refreshS = 30;  // /api/config needs the token: read in start()
  translatePage();
  const range = document.getElementById("range");
  range.value = String(S.hours);
  range.addEventListener("change", () => { S.hours = Number(range.value); localStorage.setItem("icsmon.hours", range.value); refresh(); });
  document.getElementById("lang").addEventListener("click", () => {
    S.lang = S.lang === "zh" ? "en" : "zh";
    localStorage.setItem("icsmon.lang", S.lang);
    translatePage();
    refresh();
  });
  document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem("icsmon.token"); S.token = ""; showLogin(); });
  document.getElementById("alert-back").addEventListener("click", () => go(S.scope));
  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    S.token = document.getElementById("token").value.trim();
    sessionStorage.setItem("icsmon.token", S.token);
    start();
  });
  window.addEventListener("hashchange", refresh);
  window.addEventListener("resize", () => Object.values(S.charts).forEach((c) => c.resize()));
  await start();
}

init();
