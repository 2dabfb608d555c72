/* Assessment views of the dashboard: a scope's assessment (risk and its parts, findings by
   kind, exposure by advisory, top-risk assets, coverage, report downloads), who is affected
   by one advisory (one click from the exposure table), and an asset's page (its findings,
   with acceptance, its advisories and its risk). Uses app.js's helpers (el, t, api, S,
   fmtTime) and response.js's (download, post, guard, table, card). Values from the API are
   inserted as text, never as HTML. */
"use strict";

const PART_COLOR = { findings: "#8064a2", vulnerabilities: "#c0504d", alerts: "#e07b24", exposure: "#4f81bd" };

function aHash(params) {
  location.hash = new URLSearchParams(params).toString();
}

function kindName(kind, title) {
  const key = `kind.${kind}`;
  const text = t(key);
  return text === key ? title || kind : text;
}

function riskBar(risk) {
  const parts = ["findings", "vulnerabilities", "alerts", "exposure"];
  return el("div", { class: "risk", id: "risk" },
    el("div", { class: "risk-head" }, el("span", { class: "risk-value", id: "risk-value" }, String(risk.risk)), " / 100"),
    el("div", { class: "bar stacked" }, parts.map((p) => el("div", {
      class: `seg seg-${p}`, title: `${t("part." + p)} ${risk.parts[p]}`,
      style: `width:${risk.risk ? (risk.parts[p] / 100) * 100 : 0}%;background:${PART_COLOR[p]}`,
    }))),
    el("div", { class: "risk-parts" }, parts.map((p) => el("span", { class: "part", "data-part": p },
      el("i", { style: `background:${PART_COLOR[p]}` }), `${t("part." + p)} ${risk.parts[p]}`))));
}

function reportButtons(scope) {
  const q = (period, fmt) => `/api/assessment/reports/${period}?scope=${encodeURIComponent(scope)}&format=${fmt}&lang=${S.lang}`;
  const name = (period, fmt) => `icsmon-${period}-${scope.replace(":", "-")}.${fmt}`;
  return el("div", { class: "wf-actions", id: "report-buttons" },
    ["weekly", "monthly"].flatMap((period) => ["pdf", "html"].map((fmt) => el("button", {
      type: "button", id: `report-${period}-${fmt}`,
      onclick: guard(() => download(q(period, fmt), name(period, fmt))),
    }, `${t("report." + period)} ${fmt.toUpperCase()}`))), errorBox());
}

async function renderAssessment(root, scope) {
  const a = await api(`/api/assessment?scope=${encodeURIComponent(scope)}&top=15`);
  const kinds = a.findings.by_kind.map((k) => el("tr", { "data-kind": k.kind },
    el("td", {}, kindName(k.kind, k.title)), el("td", { class: "num" }, k.severity),
    el("td", { class: "num" }, k.open), el("td", { class: "num" }, k.resolved), el("td", { class: "num" }, k.accepted)));
  const advisories = a.exposure.advisories.map((r) => el("tr", {
    class: "clickable", "data-advisory": r.advisory,
    onclick: () => aHash({ advisory: r.advisory, scope }),
  },
  el("td", {}, r.advisory, r.exploited ? el("span", { class: "pill dl-overdue" }, t("exploited")) : ""),
  el("td", {}, r.cves.join(", ")), el("td", { class: "num" }, r.cvss ?? "—"),
  el("td", { class: "num" }, r.affected), el("td", { class: "num" }, r.possibly),
  el("td", {}, Object.entries(r.by_city).map(([c, n]) => `${cityName(c)} ${n}`).join(" · "))));
  const assets = a.top_assets.map((r) => el("tr", { class: "clickable", "data-asset": r["asset.id"], onclick: () => aHash({ asset: r["asset.id"] }) },
    el("td", {}, r["asset.id"]), el("td", {}, [r.vendor, r.product].filter(Boolean).join(" ")), el("td", {}, r.firmware || "—"),
    el("td", { class: "num" }, r.findings), el("td", { class: "num" }, r.advisories), el("td", { class: "num" }, r.risk)));
  const cov = a.coverage;
  const missing = cov.enterprises.filter((e) => e.required && e.state !== "connected").map((e) => el("tr", { "data-enterprise": e.enterprise },
    el("td", {}, e.name || e.enterprise), el("td", {}, cityName(e.city)), el("td", {}, e.grade ?? "—"),
    el("td", {}, el("span", { class: `pill cov-${e.state}` }, t("coverage." + e.state)))));
  const byCity = Object.entries(cov.by_city).filter(([, g]) => g.required).map(([c, g]) => el("tr", {},
    el("td", {}, cityName(c)), el("td", { class: "num" }, g.required), el("td", { class: "num" }, g.connected),
    el("td", { class: "num" }, g.ratio === null ? "—" : `${Math.round(g.ratio * 100)}%`)));
  root.replaceChildren(
    el("section", { class: "row two" },
      card(t("assess.risk"), riskBar(a.risk), reportButtons(scope)),
      card(t("assess.coverage"),
        el("div", { class: "kpi-line", id: "coverage-ratio" }, `${t("coverage.required")} ${cov.required} · ${t("coverage.connected")} ${cov.required_connected}`,
          cov.ratio === null ? "" : ` (${Math.round(cov.ratio * 100)}%)`),
        el("div", { class: "risk-parts" }, Object.entries(cov.by_state).map(([s, n]) => el("span", { class: `pill cov-${s}`, "data-state": s }, `${t("coverage." + s)} ${n}`))),
        el("table", { class: "grid", id: "coverage-missing" }, ...table([t("col.enterprise"), t("col.city"), t("col.grade"), t("col.state")], missing)),
        el("table", { class: "grid", id: "coverage-cities" }, ...table([t("col.city"), t("coverage.required"), t("coverage.connected"), "%"], byCity)))),
    el("section", { class: "row two" },
      card(t("assess.findings"), el("table", { class: "grid", id: "finding-kinds" },
        ...table([t("col.kind"), t("col.severity"), t("finding.open"), t("finding.resolved"), t("finding.accepted")], kinds))),
      card(t("assess.top_assets"), el("table", { class: "grid clickable", id: "top-assets" },
        ...table([t("col.asset"), t("col.device"), t("col.firmware"), t("assess.findings"), t("assess.advisories"), t("assess.risk")], assets)))),
    el("section", { class: "row" }, el("div", { class: "card wide" },
      el("div", { class: "card-title" }, `${t("assess.exposure")} (${a.advisories_loaded} ${t("assess.loaded")})`),
      el("table", { class: "grid clickable", id: "exposure" },
        ...table([t("col.advisory"), "CVE", "CVSS", t("match.affected"), t("match.possibly"), t("col.cities")], advisories)))));
}

function cityName(id) {
  const c = S.org && S.org.cities ? S.org.cities.find((x) => x.id === id) : null;
  return c ? (S.lang === "zh" && c.name_zh ? c.name_zh : c.name) : id || "?";
}

async function renderAdvisory(root, id, scope) {
  const d = await api(`/api/advisories/${encodeURIComponent(id)}?scope=${encodeURIComponent(scope)}`);
  const adv = d.advisory;
  const rows = d.items.map((m) => el("tr", { class: "clickable", "data-asset": m.asset.id, onclick: () => aHash({ asset: m.asset.id }) },
    el("td", {}, m.asset.id), el("td", {}, m.enterprise || ""), el("td", {}, cityName(m.city)),
    el("td", {}, m.industry ? t("industry." + m.industry) : ""),
    el("td", {}, el("span", { class: `pill ${m.match.status === "affected" ? "dl-overdue" : "dl-warning"}` }, t("match." + (m.match.status === "affected" ? "affected" : "possibly")))),
    el("td", {}, m.ics.device.firmware || "—"), el("td", {}, m.match.range)));
  const counts = (obj, name) => el("div", { class: "risk-parts" }, Object.entries(obj).map(([k, n]) => el("span", { class: "part" }, `${name(k)} ${n}`)));
  root.replaceChildren(
    el("div", { class: "card wide" },
      el("div", { class: "alert-head" },
        el("button", { type: "button", id: "advisory-back", onclick: () => aHash({ assess: scope }) }, t("alert.back")),
        el("h1", { id: "advisory-title" }, `${adv.id} · ${adv.title}`),
        adv.exploited ? el("span", { class: "pill dl-overdue" }, t("exploited")) : ""),
      el("div", { class: "facts" },
        ...facts([["CVE", adv.cves], ["CVSS", adv.cvss ?? "—"], [t("col.products"), adv.products],
          [t("advisory.remediation"), adv.remediation || "—"]]),
        el("div", { class: "fact" }, el("span", { class: "k" }, t("match.affected")),
          el("span", { class: "v", id: "advisory-affected" }, `${d.affected} · ${t("match.possibly")} ${d.possibly}`)))),
    el("section", { class: "row three" },
      card(t("col.cities"), counts(d.by_city, cityName)),
      card(t("col.industries"), counts(d.by_industry, (k) => t("industry." + k))),
      card(t("col.by_enterprise"), counts(d.by_enterprise, (k) => k))),
    el("section", { class: "row" }, el("div", { class: "card wide" },
      el("div", { class: "card-title" }, t("advisory.who")),
      el("table", { class: "grid clickable", id: "affected-assets" },
        ...table([t("col.asset"), t("col.enterprise"), t("col.city"), t("col.industry"), t("col.status"), t("col.firmware"), t("col.range")], rows)))));
}

async function renderAsset(root, id) {
  const d = await api(`/api/assets/${encodeURIComponent(id)}`);
  const a = d.asset;
  const dev = (a.ics && a.ics.device) || {};
  const writable = S.me.role !== "enterprise-viewer";
  const findings = d.findings.map((f) => {
    const fi = f.finding;
    const reason = el("input", { class: "accept-reason", placeholder: t("finding.reason") });
    const accept = guard(async () => {
      if (!reason.value.trim()) throw new Error(t("finding.reason_needed"));
      await post(`/api/findings/${fi.id}/accept`, { reason: reason.value.trim() });
      await refresh();
    });
    const reopen = guard(async () => { await post(`/api/findings/${fi.id}/reopen`); await refresh(); });
    return el("tr", { "data-finding": fi.id, "data-kind": fi.kind },
      el("td", {}, kindName(fi.kind, fi.title)), el("td", {}, fi.summary || ""),
      el("td", {}, el("span", { class: `pill fs-${fi.state}` }, t("finding." + fi.state)), fi.accepted ? ` ${fi.accepted.reason}` : ""),
      el("td", {}, fmtTime(Date.parse(fi.first_seen) / 1000)), el("td", {}, fmtTime(Date.parse(fi.last_seen) / 1000)),
      el("td", {}, !writable ? "" : fi.state === "accepted"
        ? el("button", { type: "button", class: "finding-reopen", onclick: reopen }, t("btn.reopen"))
        : el("span", { class: "inline" }, reason, el("button", { type: "button", class: "finding-accept", onclick: accept }, t("btn.accept")))));
  });
  const advisories = d.advisories.map((m) => el("tr", { class: "clickable", "data-advisory": m.advisory.id, onclick: () => aHash({ advisory: m.advisory.id, scope: S.scope || S.me.scope }) },
    el("td", {}, m.advisory.id, m.vulnerability.exploited ? el("span", { class: "pill dl-overdue" }, t("exploited")) : ""),
    el("td", {}, (m.vulnerability.id || []).join(", ")), el("td", { class: "num" }, m.vulnerability.score ? m.vulnerability.score.base : "—"),
    el("td", {}, t("match." + (m.match.status === "affected" ? "affected" : "possibly"))), el("td", {}, m.match.range),
    el("td", {}, m.advisory.remediation || "")));
  root.replaceChildren(
    el("div", { class: "card wide" },
      el("div", { class: "alert-head" },
        el("button", { type: "button", id: "asset-back", onclick: () => aHash({ assess: S.scope || S.me.scope }) }, t("alert.back")),
        el("h1", { id: "asset-title" }, a.asset.id)),
      el("div", { class: "facts" },
        ...facts([[t("col.device"), [dev.vendor, dev.product || dev.model].filter(Boolean).join(" ")],
          [t("col.firmware"), dev.firmware || "—"], [t("col.site"), (a.labels && a.labels.site) || ""],
          [t("col.roles"), a.asset.roles || []],
          [t("col.protocols"), (a.asset.protocols || []).map(protoName)],
          [t("asset.dnp3_link"), a.asset.dnp3 && a.asset.dnp3.link_addresses],
          [t("asset.iec104_ca"), a.asset.iec104 && a.asset.iec104.common_addresses]]))),
    el("section", { class: "row" }, card(t("assess.risk"), d.risk ? riskBar(d.risk) : el("div", { class: "muted" }, t("none")))),
    el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("assess.findings")),
      el("table", { class: "grid", id: "asset-findings" }, ...table([t("col.kind"), t("col.summary"), t("col.state"), t("col.first_seen"), t("col.last_seen"), ""], findings)),
      errorBox())),
    el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("assess.advisories")),
      el("table", { class: "grid clickable", id: "asset-advisories" }, ...table([t("col.advisory"), "CVE", "CVSS", t("col.status"), t("col.range"), t("advisory.remediation")], advisories)))));
}

const AssessmentUI = {
  handles(params) {
    return ["assess", "advisory", "asset"].some((k) => params.has(k));
  },
  async render(params) {
    const root = document.getElementById("assessment-view");
    const scope = params.get("scope") || params.get("assess") || S.scope || S.me.scope;
    if (params.has("advisory")) await renderAdvisory(root, params.get("advisory"), scope);
    else if (params.has("asset")) await renderAsset(root, params.get("asset"));
    else await renderAssessment(root, params.get("assess") || scope);
    if (window.ResponseUI) window.ResponseUI.tabs("assessment");
  },
};
window.AssessmentUI = AssessmentUI;
