/* Hunts (回溯排查): ask the sensors of a scope whether a rule already fired in their stored
   history, watch the answers per site, open the alerts the hunt raised. Uses app.js's helpers
   (el, t, api, S, fmtTime, facts, kpi, nameOf, go) and response.js's (table, card, post,
   guard, errorBox). Values from the API are inserted as text, never as HTML. */
"use strict";

const HUNT_STATES = ["done", "running", "accepted", "requested", "refused", "error", "no_answer"];
const HUNT_COLOR = {
  done: "#2e8b57", running: "#4f8fd6", accepted: "#8fb8e8", requested: "#b8c2cc",
  refused: "#e07b24", error: "#d7263d", no_answer: "#7f8c8d",
};
const H = { rules: null, shown: "" };

function hHash(key, value) {
  location.hash = `${key}=${encodeURIComponent(value)}`;
}

function huntPill(state) {
  return el("span", { class: "pill hunt-state", "data-state": state, style: `background:${HUNT_COLOR[state] || "#b8c2cc"}` },
    t(`hunt.state.${state}`));
}

function scopeName(scope) {
  const [kind, id] = scope.split(":");
  return id ? `${t(kind)} · ${nameOf(kind, id)}` : nameOf("province");
}

/* The scopes the user may hunt over: their own and everything below it in the registry. */
function huntScopes() {
  const out = [];
  if (S.me.role === "province-analyst") out.push("province");
  for (const c of S.org.cities) {
    if (S.me.role === "province-analyst" || S.me.scope === `city:${c.id}`) out.push(`city:${c.id}`);
    for (const e of c.enterprises) {
      const mine = S.me.role === "province-analyst" || S.me.scope === `city:${c.id}` || S.me.scope === `enterprise:${e.id}`;
      if (!mine) continue;
      out.push(`enterprise:${e.id}`);
      for (const s of e.sites) out.push(`site:${s.id}`);
    }
  }
  return out;
}

function stateBar(states, total) {
  return el("div", { class: "bar stacked hunt-bar", id: "hunt-bar" }, HUNT_STATES.filter((s) => states[s]).map((s) =>
    el("div", { class: "seg", title: `${t("hunt.state." + s)} ${states[s]}`, style: `width:${(states[s] / Math.max(total, 1)) * 100}%;background:${HUNT_COLOR[s]}` })));
}

function stateCounts(states) {
  return el("div", { class: "risk-parts", id: "hunt-counts" }, HUNT_STATES.filter((s) => states[s]).map((s) =>
    el("span", { class: "part", "data-state": s }, el("i", { style: `background:${HUNT_COLOR[s]}` }), `${t("hunt.state." + s)} ${states[s]}`)));
}

function rangeText(h) {
  return `${h.since ? fmtTime(h.since) : t("hunt.beginning")} — ${h.until ? fmtTime(h.until) : t("hunt.now")}`;
}

/* ---- the form and the list ----------------------------------------------------------- */

function huntForm(can) {
  if (!can) return el("div", { class: "muted", id: "hunt-readonly" }, t("hunt.readonly"));
  const scope = el("select", { id: "hunt-scope" }, huntScopes().map((s) => el("option", { value: s }, scopeName(s))));
  const current = S.scope && huntScopes().includes(S.scope) ? S.scope : S.me.scope;
  scope.value = current;
  const rule = el("select", { id: "hunt-rule" },
    el("option", { value: "" }, t("hunt.pick_rule")),
    H.rules.map((r) => el("option", { value: r.id }, `${r.title} (${r.level}${r.techniques.length ? " · " + r.techniques.join(",") : ""})`)));
  const text = el("textarea", { id: "hunt-text", rows: 6, spellcheck: "false", placeholder: t("hunt.paste") });
  const days = el("select", { id: "hunt-range" }, [1, 7, 30, 90, 0].map((d) => el("option", { value: d }, d ? t(`hunt.last_${d}d`) : t("hunt.all_history"))));
  days.value = "30";
  const submit = el("button", {
    type: "button", id: "hunt-start",
    onclick: guard(async () => {
      const d = Number(days.value);
      const body = { scope: scope.value };
      if (text.value.trim()) body.rule_text = text.value;
      else if (rule.value) body.rule_ids = [rule.value];
      if (d) body.since = Math.floor(Date.now() / 1000 - d * 86400);
      const hunt = await post("/api/hunts", body);
      hHash("hunt", hunt.id);
    }),
  }, t("hunt.start"));
  return el("div", { class: "hunt-form", id: "hunt-form" },
    el("div", { class: "form-grid" },
      el("label", {}, t("hunt.scope"), scope),
      el("label", {}, t("hunt.rule"), rule),
      el("label", {}, t("hunt.range"), days)),
    el("label", { class: "block" }, t("hunt.or_paste"), text),
    el("div", { class: "wf-actions" }, submit), errorBox());
}

function huntRows(hunts) {
  return hunts.map((h) => el("tr", { class: "clickable", "data-hunt": h.id, onclick: () => hHash("hunt", h.id) },
    el("td", {}, fmtTime(h.requested_at)), el("td", {}, h.requested_by), el("td", {}, scopeName(h.scope)),
    el("td", {}, h.rules.map((r) => r.title).join("; ")), el("td", {}, rangeText(h)),
    el("td", {}, stateCounts(h.states)), el("td", { class: "num" }, h.alerts)));
}

async function renderHunts(root) {
  if (!H.rules) H.rules = (await api("/api/hunts/rules")).rules;
  const list = await api("/api/hunts");
  const cols = [t("col.time"), t("hunt.by"), t("hunt.scope"), t("hunt.rule"), t("hunt.range"), t("hunt.progress"), t("hunt.alerts")];
  const rows = el("table", { class: "grid clickable", id: "hunt-list" }, ...table(cols, huntRows(list.hunts), t("hunt.none")));
  const existing = document.getElementById("hunt-list");
  if (existing && H.shown === location.hash) {  // keep the form as the user left it
    existing.replaceWith(rows);
    return;
  }
  H.shown = location.hash;
  root.replaceChildren(
    el("section", { class: "row" }, el("div", { class: "card wide" },
      el("div", { class: "card-title" }, t("hunt.new")),
      el("div", { class: "muted" }, t("hunt.explain")),
      list.configured ? huntForm(list.can_start) : el("div", { class: "muted", id: "hunt-unconfigured" }, t("hunt.unconfigured")))),
    el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("hunt.list")), rows)));
}

/* ---- one hunt ------------------------------------------------------------------------ */

function siteRow(s) {
  const covered = s.first && s.last ? `${fmtTime(s.first)} — ${fmtTime(s.last)}` : "—";
  // events scanned: the summary's when done, the latest progress while running
  const count = s.events ?? (s.state === "running" ? s.scanned : null);
  const hasTotal = s.total !== null && s.total !== undefined;
  const pct = s.state === "running" && s.percent !== null && s.percent !== undefined ? ` (${s.percent}%)` : "";
  const scanned = (count === null || count === undefined ? (hasTotal ? `— / ${s.total}` : "—")
    : (hasTotal ? `${count} / ${s.total}` : String(count))) + pct;
  const why = s.state === "refused" || s.state === "error" ? [s.reason, s.message].filter(Boolean).join(": ")
    : s.stopped ? `${t("hunt.stopped")}: ${s.stopped}` : "";
  return el("tr", { "data-sensor": s.sensor, "data-state": s.state },
    el("td", {}, nameOf("site", s.site)), el("td", {}, s.sensor), el("td", {}, huntPill(s.state)),
    el("td", { class: "num" }, scanned), el("td", {}, covered),
    el("td", { class: "num" }, s.matches ?? "—"),
    el("td", { class: "num" }, s.alerts === null || s.alerts === undefined ? "—" : `${s.alerts} (${t("hunt.new_alerts")} ${s.new ?? 0})`),
    el("td", { class: "muted" }, why));
}

async function renderHunt(root, id) {
  const [h, alerts] = await Promise.all([
    api(`/api/hunts/${encodeURIComponent(id)}`),
    api(`/api/alerts?hunt=${encodeURIComponent(id)}&scope=${encodeURIComponent(S.me.scope)}&limit=100`)]);
  const alertRows = alerts.items.map((a) => el("tr", { class: "clickable", "data-alert": a.event.id, onclick: () => go(S.me.scope, a.event.id) },
    el("td", {}, fmtTime(a["@timestamp"])), el("td", {}, el("span", { class: `sev sev-${band(a.event.severity)}` }, a.event.severity)),
    el("td", {}, get(a, "rule.name") || ""), el("td", {}, nameOf("site", get(a, "labels.site"))),
    el("td", {}, `${get(a, "source.ip") || ""} → ${get(a, "destination.ip") || ""}`)));
  const finished = h.states.done + h.states.refused + h.states.error + h.states.no_answer;
  root.replaceChildren(
    el("div", { class: "card wide" },
      el("div", { class: "alert-head" },
        el("button", { type: "button", id: "hunt-back", onclick: () => hHash("hunts", S.me.scope) }, t("alert.back")),
        el("h1", { id: "hunt-title" }, `${t("hunt.title")} · ${h.rules.map((r) => r.title).join("; ")}`)),
      el("div", { class: "facts" }, ...facts([[t("hunt.id"), h.id], [t("hunt.scope"), scopeName(h.scope)],
        [t("hunt.range"), rangeText(h)], [t("hunt.by"), `${h.requested_by} · ${fmtTime(h.requested_at)}`],
        [t("hunt.expires"), fmtTime(h.expires_at)]]))),
    el("section", { class: "row two" },
      card(t("hunt.progress"),
        el("div", { class: "kpi-line", id: "hunt-finished" }, `${t("hunt.finished")} ${finished} / ${h.sensors}`),
        stateBar(h.states, h.sensors), stateCounts(h.states)),
      el("div", { class: "card kpi-grid", id: "hunt-kpis" },
        kpi(t("hunt.events"), h.events.toLocaleString()), kpi(t("hunt.matches"), h.matches.toLocaleString()),
        kpi(t("hunt.alerts"), h.alerts, h.alerts ? "crit" : ""), kpi(t("hunt.new_alerts"), h.new, h.new ? "warn" : ""))),
    el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("hunt.sites")),
      el("table", { class: "grid", id: "hunt-sites" }, ...table([t("col.site"), t("sensor"), t("col.state"), t("hunt.scanned"),
        t("hunt.covered"), t("hunt.matches"), t("hunt.alerts"), t("hunt.note")], h.sites.map(siteRow))))),
    el("section", { class: "row" }, el("div", { class: "card wide" },
      el("div", { class: "card-title" }, `${t("hunt.its_alerts")} (${alerts.total})`),
      el("table", { class: "grid clickable", id: "hunt-alerts" }, ...table([t("col.time"), t("col.severity"), t("col.rule"), t("col.site"), t("hunt.flow")], alertRows, t("hunt.no_alerts"))))));
}

/* ---- entry --------------------------------------------------------------------------- */

const HuntUI = {
  handles(params) {
    return params.has("hunts") || params.has("hunt");
  },
  async render(params) {
    const root = document.getElementById("hunt-view");
    if (params.has("hunt")) {
      H.shown = "";
      await renderHunt(root, params.get("hunt"));
    } else await renderHunts(root);
    if (window.ResponseUI) window.ResponseUI.tabs("hunts");
  },
};
window.HuntUI = HuntUI;
