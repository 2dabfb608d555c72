/* Response views of the dashboard: incidents (grade, clock, reports, timeline), notices and
   rectification (replies, verification, closure rates), campaigns, and the emergency command
   view. Uses app.js's helpers (el, t, api, fmtTime, facts, nameOf, go, chart). Values from
   the API are inserted as text, never as HTML. */
"use strict";

const LEVEL_COLOR = { red: "#d7263d", orange: "#f46036", yellow: "#f2c14e", blue: "#5aa9e6" };
const DL_COLOR = { pending: "#4f8fd6", warning: "#f2c14e", overdue: "#d7263d", met: "#2e8b57", late: "#e07b24" };

/* dirty: the user typed or chose a file on the page shown (the hash in ``shown``) and has not
   acted on it yet: the periodic refresh leaves that page alone instead of wiping the input. */
const R = { policy: null, commandTimer: null, dirty: false, shown: "" };

function rHash(key, value) {
  location.hash = `${key}=${encodeURIComponent(value)}`;
}

function levelPill(grade) {
  const g = grade || {};
  return el("span", { class: "pill level", style: `background:${LEVEL_COLOR[g.colour] || "#5aa9e6"}`, "data-level": g.level || "" },
    S.lang === "zh" ? (g.zh || g.level || "") : (g.en || g.level || ""));
}

function stateBadge(kind, state) {
  return el("span", { class: `badge st-${state}`, id: `${kind}-state` }, t(`${kind}.state.${state}`));
}

function table(cols, rows, empty) {
  const head = el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c))));
  const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: cols.length, class: "muted" }, empty || t("none")))];
  return [head, el("tbody", {}, body)];
}

function card(title, ...children) {
  return el("div", { class: "card" }, el("div", { class: "card-title" }, title), ...children);
}

function when(ts) { return ts ? fmtTime(ts) : "—"; }

function dueText(d) {
  const left = d.due_at - Date.now() / 1000;
  const mins = Math.round(Math.abs(left) / 60);
  const span = mins >= 120 ? `${Math.round(mins / 60)} h` : `${mins} min`;
  if (d.state === "met" || d.state === "late") return `${t("clock." + d.state)} ${when(d.met_at)}`;
  return left >= 0 ? `${t("clock.left")} ${span}` : `${t("clock.over")} ${span}`;
}

async function download(path, name) {
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${S.token}` } });
  if (!resp.ok) throw new Error(`${resp.status}`);
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

/* A chosen file as the API takes it: name, type and base64 content. */
async function fileBody(f) {
  const buf = new Uint8Array(await f.arrayBuffer());
  let bin = "";
  for (let i = 0; i < buf.length; i += 0x8000) bin += String.fromCharCode(...buf.subarray(i, i + 0x8000));
  return { name: f.name, content_type: f.type || "application/octet-stream", data: btoa(bin) };
}

async function post(path, body) {
  return api(path, { method: "POST", body: JSON.stringify(body || {}) });
}

/* A confirmation that outlives the next few refreshes of the page (ten seconds). */
function flash(text) {
  R.flash = { text, until: Date.now() + 10_000 };
  const box = document.getElementById("resp-status");
  if (box) box.textContent = text;
}

function errorBox() {
  const status = R.flash && Date.now() < R.flash.until ? R.flash.text : "";
  return el("div", {}, el("div", { class: "error", id: "resp-error" }), el("div", { class: "ok-text", id: "resp-status" }, status));
}

/* Draws a page into ``root`` unless the user started filling in the page shown while its data
   was on the way (the input event came after ``render`` checked ``R.dirty``): the later draw
   would put back the form's defaults (the early-warning level, typed text). False: left as is. */
function draw(root, ...children) {
  if (R.dirty && R.shown === location.hash) return false;
  root.replaceChildren(...children);
  return true;
}

function guard(fn) {
  return async (...args) => {
    const box = document.getElementById("resp-error");
    if (box) box.textContent = "";
    R.dirty = false;  // acting on the page: the refresh that follows draws it anew
    try {
      await fn(...args);
    } catch (err) {
      R.dirty = true;  // keep the input and the message until the user acts again
      const msg = String(err.message || err);
      const m = msg.match(/"detail":"([^"]*)"/);
      if (box) box.textContent = m ? m[1] : msg;
    }
  };
}

/* ---- tabs ------------------------------------------------------------------------------ */

function renderTabs(active) {
  const nav = document.getElementById("tabs");
  if (!nav || !S.me) return;
  const analyst = S.me.role === "province-analyst" || S.me.role === "city-analyst";
  const tabs = [["overview", "#scope=" + encodeURIComponent(S.scope || S.me.scope)]];
  tabs.push(["assessment", "#assess=" + encodeURIComponent(S.scope || S.me.scope)]);
  if (analyst) tabs.push(["incidents", "#view=incidents"]);
  tabs.push(["notices", "#view=notices"]);
  if (analyst) tabs.push(["campaigns", "#view=campaigns"]);
  tabs.push(["warnings", "#view=warnings"]);
  tabs.push(["hunts", "#hunts=" + encodeURIComponent(S.scope || S.me.scope)]);
  nav.replaceChildren(...tabs.map(([k, href]) => el("a", { href, id: `tab-${k}`, class: k === active ? "current" : "" }, t(`tab.${k}`))));
}

/* ---- incidents ------------------------------------------------------------------------- */

async function renderIncidents(root) {
  const list = await api("/api/incidents?limit=200");
  const rows = list.items.map((i) => el("tr", { class: "clickable", "data-incident": i.id, onclick: () => rHash("incident", i.id) },
    el("td", {}, `#${i.number}`), el("td", {}, i.title), el("td", {}, levelPill(i.grade)),
    el("td", {}, t(`incident.state.${i.state}`)), el("td", { class: "num" }, i.enterprises.length),
    el("td", { class: "num" }, i.alerts),
    el("td", {}, i.clock.next ? el("span", { class: `pill dl-${i.clock.next.state}` }, `${t("clock." + i.clock.next.state)} · ${dueText(i.clock.next)}`) : "—"),
    el("td", {}, when(i.created_at))));
  const groups = el("div", { id: "groups" });
  const propose = guard(async () => {
    const got = await post("/api/incidents/group", { hours: S.hours });
    groups.replaceChildren(...(got.groups.length ? got.groups.map((g) => el("div", { class: "audit-row" },
      el("b", {}, g.rule), " ", g.title, " · ", `${g.alert_ids.length} ${t("alerts")}`, " · ", g.sites.join(", ")))
      : [el("div", { class: "muted" }, t("none"))]),
    got.groups.length ? el("button", { id: "groups-apply", type: "button", onclick: guard(async () => { await post("/api/incidents/group", { hours: S.hours, apply: true }); await refresh(); }) }, t("btn.group_apply")) : "");
  });
  draw(root,
    el("section", { class: "row" }, el("div", { class: "card wide" },
      el("div", { class: "card-title" }, t("tab.incidents")),
      el("table", { id: "incidents", class: "grid clickable" }, ...table(
        [t("col.number"), t("col.title"), t("col.level"), t("col.state"), t("col.enterprises"), t("kpi.alerts"), t("col.clock"), t("col.created")], rows)))),
    el("section", { class: "row" }, card(t("incident.grouping"),
      el("button", { id: "groups-propose", type: "button", onclick: propose }, t("btn.group_propose")), groups, errorBox())));
}

function clockPanel(clock) {
  if (!clock.reportable && !clock.deadlines.length) {
    return el("div", { class: "muted", id: "clock" }, t("clock.not_reportable"));
  }
  return el("div", { id: "clock" }, clock.deadlines.map((d) => el("div", { class: `deadline dl-${d.state}`, "data-deadline": d.id },
    el("div", { class: "dl-head" }, el("b", {}, S.lang === "zh" ? d.zh || d.id : d.en || d.id),
      el("span", { class: `pill dl-${d.state}` }, t(`clock.${d.state}`)), d.verified ? "" : el("span", { class: "muted" }, ` (${t("unverified")})`)),
    el("div", { class: "bar" }, el("div", { class: "fill", style: `width:${Math.round(d.elapsed * 100)}%;background:${DL_COLOR[d.state]}` }),
      ...d.warnings.map((w) => el("div", { class: "tick", style: `left:${Math.round(((w - clock.started_at) / (d.due_at - clock.started_at)) * 100)}%` }))),
    el("div", { class: "muted" }, `${t("clock.due")} ${when(d.due_at)} · ${dueText(d)} · ${t("report." + d.report)}`))));
}

function gradePanel(inc) {
  const g = inc.grade;
  const rows = [
    el("div", { class: "grade-head" }, levelPill(g), " ", el("span", { id: "grade-rule" }, `${t("grade.rule")}: ${g.rule}`),
      g.verified ? "" : el("span", { class: "pill dl-warning" }, t("unverified"))),
    el("div", { class: "muted" }, `${t("grade.policy")}: ${g.policy}${g.source ? " · " + g.source : ""}`),
    el("ul", { class: "conds" }, (g.conditions || []).map((c) => el("li", {}, `${c.test}  (${t("grade.value")}: ${c.value ?? "—"})`))),
  ];
  if (inc.writable && R.policy) {
    const inputs = Object.entries(R.policy.facts).filter(([k]) => !["enterprises_affected"].includes(k)).map(([k, spec]) => {
      const v = inc.facts[k];
      const input = spec.type === "boolean"
        ? el("select", { "data-fact": k }, el("option", { value: "" }, "—"), el("option", { value: "true", selected: v === true }, t("yes")), el("option", { value: "false", selected: v === false }, t("no")))
        : el("input", { "data-fact": k, type: "number", min: "0", step: "any", value: v ?? "" });
      return el("label", { class: "fact-input" }, el("span", {}, S.lang === "zh" ? spec.zh : spec.en), input);
    });
    const save = guard(async () => {
      const facts = {};
      for (const node of document.querySelectorAll("[data-fact]")) {
        const k = node.dataset.fact;
        if (node.value === "") facts[k] = null;
        else facts[k] = node.tagName === "SELECT" ? node.value === "true" : Number(node.value);
      }
      await post(`/api/incidents/${inc.id}/facts`, { facts });
      await refresh();
    });
    rows.push(el("div", { class: "facts-form" }, ...inputs), el("button", { id: "facts-save", type: "button", onclick: save }, t("btn.grade")));
  }
  return el("div", { id: "grade" }, ...rows);
}

function reportEditor(inc, rep) {
  const fields = R.policy.reporting.fields;
  const editable = inc.writable && !rep.submitted_at;
  const body = fields.map((f) => {
    const need = rep.kind === "final" ? f.final : f.first;
    const label = el("span", { class: "k" }, `${S.lang === "zh" ? f.zh : f.en}${need ? " *" : ""}`);
    const value = rep.fields[f.id] || "";
    return el("label", { class: "report-field" }, label, editable
      ? el("textarea", { rows: 2, "data-field": f.id }, value)
      : el("div", { class: "v" }, value || "—"));
  });
  const save = guard(async () => {
    const out = {};
    for (const node of document.querySelectorAll(`[data-report="${rep.id}"] [data-field]`)) out[node.dataset.field] = node.value;
    await post(`/api/reports/${rep.id}`, { fields: out });
    await refresh();
  });
  const submit = guard(async () => { await save(); await post(`/api/reports/${rep.id}/submit`); await refresh(); });
  return el("div", { class: "report", "data-report": rep.id },
    el("div", { class: "dl-head" }, el("b", {}, `${t("report." + rep.kind)} #${rep.seq}`),
      el("span", { class: `pill ${rep.submitted_at ? "dl-met" : "dl-pending"}` }, rep.submitted_at ? `${t("report.submitted")} ${when(rep.submitted_at)}` : t("report.draft")),
      rep.missing.length ? el("span", { class: "muted" }, ` ${t("report.missing")}: ${rep.missing.join(", ")}`) : ""),
    ...body,
    el("div", { class: "wf-actions" },
      editable ? el("button", { type: "button", class: "report-save", onclick: save }, t("btn.save")) : "",
      editable ? el("button", { type: "button", class: "report-submit", onclick: submit }, t("btn.submit")) : "",
      el("button", { type: "button", onclick: guard(() => download(`/api/reports/${rep.id}`, `report-${inc.number}-${rep.kind}-${rep.seq}.json`)) }, "JSON"),
      el("button", { type: "button", class: "report-pdf", onclick: guard(() => download(`/api/reports/${rep.id}/pdf`, `report-${inc.number}-${rep.kind}-${rep.seq}.pdf`)) }, "PDF")));
}

function noticeForm(inc) {
  const ents = [...new Map(inc.affected.map((a) => [a.enterprise, a])).values()];
  const ent = el("select", { id: "notice-enterprise" }, ents.map((a) => el("option", { value: a.enterprise }, S.lang === "zh" && a.enterprise_name_zh ? a.enterprise_name_zh : a.enterprise_name || a.enterprise)));
  const title = el("input", { id: "notice-title", value: `${t("notice.about")} #${inc.number} ${inc.title}` });
  const actions = el("textarea", { id: "notice-actions", rows: 3, placeholder: t("notice.actions_hint") });
  const days = el("input", { id: "notice-days", type: "number", min: "1", max: "400", value: String(R.policy.notices.default_working_days) });
  const issue = guard(async () => {
    const n = await post("/api/notices", { subject_kind: "incident", subject_ref: inc.id, enterprise: ent.value, title: title.value,
      actions: actions.value.split("\n").map((x) => x.trim()).filter(Boolean), working_days: Number(days.value) });
    rHash("notice", n.id);
  });
  return el("div", { class: "notice-form" }, el("label", {}, t("col.enterprise"), ent), el("label", {}, t("col.title"), title),
    el("label", {}, t("notice.actions"), actions), el("label", {}, t("notice.working_days"), days),
    el("button", { id: "notice-issue", type: "button", onclick: issue }, t("btn.issue")));
}

async function renderIncident(root, id) {
  const inc = await api(`/api/incidents/${encodeURIComponent(id)}`);
  const notices = (await api("/api/notices?limit=500")).items.filter((n) => n.subject.kind === "incident" && n.subject.ref === inc.id);
  const moves = inc.transitions.map((to) => el("button", { type: "button", "data-to": to, class: "inc-move",
    onclick: guard(async () => { await post(`/api/incidents/${inc.id}/transition`, { to, note: document.getElementById("inc-note").value || null }); await refresh(); }) },
  t(`incident.to.${to}`)));
  const newReport = inc.writable ? ["first", "escalation", "follow-up", "final"].map((kind) => el("button", { type: "button", "data-report-kind": kind,
    onclick: guard(async () => { await post(`/api/incidents/${inc.id}/reports`, { kind }); await refresh(); }) }, `+ ${t("report." + kind)}`)) : [];
  const timeline = inc.timeline.slice(-60).reverse().map((x) => el("div", { class: "audit-row" },
    el("span", { class: "muted" }, fmtTime(x.at)), " ",
    x.kind === "alert" ? el("a", { href: `#scope=${encodeURIComponent(S.me.scope)}&alert=${x.alert_id}` }, `${t("alert")} ${x.what || ""} @ ${x.site}`)
      : [el("b", {}, x.actor), " ", x.what, x.from || x.to ? ` ${x.from ? t("incident.state." + x.from) : "—"} → ${x.to ? t("incident.state." + x.to) : "—"}` : "",
        x.detail && x.detail.level ? ` ${x.detail.level.from || "—"} → ${x.detail.level.to} (${x.detail.rule})` : ""]));
  draw(root,
    el("div", { class: "card wide" }, el("div", { class: "alert-head" },
      el("button", { type: "button", id: "back", onclick: () => { location.hash = "view=incidents"; } }, t("alert.back")),
      el("h1", { id: "incident-title" }, `#${inc.number} ${inc.title}`), levelPill(inc.grade), stateBadge("incident", inc.state),
      el("a", { href: `#command=${inc.id}`, id: "to-command", class: "button" }, t("btn.command")),
      el("button", { type: "button", id: "stix", onclick: guard(() => download(`/api/incidents/${inc.id}/stix`, `incident-${inc.number}.stix.json`)) }, "STIX 2.1")),
    el("div", { class: "facts" }, ...facts([[t("incident.discovered"), when(inc.discovered_at)], [t("col.created"), `${when(inc.created_at)} ${inc.created_by}`],
      [t("incident.origin"), inc.origin], [t("incident.assignees"), inc.assignees.join(", ") || "—"], [t("kpi.alerts"), inc.alerts]])),
    inc.writable ? el("div", { class: "wf-actions" }, ...moves, el("input", { id: "inc-note", placeholder: t("alert.note") })) : el("div", { class: "muted" }, t("incident.readonly")),
    errorBox()),
    el("section", { class: "row two" }, card(t("incident.grade"), gradePanel(inc)), card(t("incident.clock"), clockPanel(inc.clock))),
    el("section", { class: "row two" },
      card(t("incident.affected"), el("table", { class: "grid", id: "affected" }, ...table([t("col.city"), t("col.enterprise"), t("col.site"), t("industry")],
        inc.affected.map((a) => el("tr", {}, el("td", {}, nameOf("city", a.city)), el("td", {}, S.lang === "zh" && a.enterprise_name_zh ? a.enterprise_name_zh : a.enterprise_name),
          el("td", {}, a.site_name), el("td", {}, t(`industry.${a.industry}`))))))),
      card(t("incident.notices"), el("table", { class: "grid clickable", id: "incident-notices" }, ...table([t("col.number"), t("col.enterprise"), t("col.state"), t("notice.deadline")],
        notices.map((n) => el("tr", { onclick: () => rHash("notice", n.id) }, el("td", {}, `#${n.number}`), el("td", {}, nameOf("enterprise", n.enterprise)),
          el("td", {}, t(`notice.state.${n.state}`)), el("td", { class: n.overdue ? "crit-text" : "" }, when(n.deadline)))))),
      inc.writable ? noticeForm(inc) : "")),
    el("section", { class: "row" }, el("div", { class: "card wide", id: "reports" }, el("div", { class: "card-title" }, t("incident.reports")),
      el("div", { class: "wf-actions" }, ...newReport), ...inc.reports.slice().reverse().map((r) => reportEditor(inc, r)))),
    el("section", { class: "row two" }, workPanel(inc), card(t("alert.notes"), el("div", { id: "incident-notes" },
      ...inc.notes.map((n) => el("div", { class: "note" }, el("span", { class: "muted" }, `${fmtTime(n.at)} ${n.author}: `), n.text))))),
    el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("incident.timeline")), el("div", { id: "timeline" }, ...timeline))));
}

/* Who works on the incident (names, comma separated; "me" adds the signed-in user), its
   files (download; upload when the incident is the viewer's to change) and a note. */
function workPanel(inc) {
  const files = inc.attachments.map((a) => el("div", { class: "note attachment" },
    el("button", { type: "button", class: "link", "data-attachment": a.id, onclick: guard(() => download(`/api/attachments/${a.id}`, a.name)) }, a.name),
    el("span", { class: "muted" }, ` ${a.size} B · ${fmtTime(a.at)} ${a.author} · sha256 ${a.sha256.slice(0, 12)}…`)));
  const body = [el("div", { class: "card-title" }, t("incident.files")),
    el("div", { id: "incident-attachments" }, ...(files.length ? files : [el("div", { class: "muted" }, t("none"))]))];
  if (!inc.writable) {
    return el("div", { class: "card", id: "incident-work" }, el("div", { class: "card-title" }, t("incident.assignees")),
      el("div", { id: "assignee-list" }, inc.assignees.join(", ") || "—"), ...body);
  }
  const names = el("input", { id: "assignees-input", value: inc.assignees.join(", "), placeholder: t("assignees.hint"), style: "flex:1;min-width:280px" });
  const save = guard(async (list) => {
    await post(`/api/incidents/${inc.id}/assignees`, { names: list });
    flash(t("assignees.saved"));
    await refresh();
  });
  const parse = () => names.value.split(/[,，;；]/).map((x) => x.trim()).filter(Boolean);
  const file = el("input", { id: "attach-file", type: "file" });
  const upload = guard(async () => {
    if (!file.files.length) throw new Error(t("attach.choose"));
    for (const f of file.files) await post(`/api/incidents/${inc.id}/attachments`, await fileBody(f));
    flash(t("attach.done"));
    await refresh();
  });
  const noteText = el("textarea", { id: "incident-note-text", rows: 2, placeholder: t("alert.note") });
  const addNote = guard(async () => {
    await post(`/api/incidents/${inc.id}/notes`, { text: noteText.value });
    await refresh();
  });
  return el("div", { class: "card", id: "incident-work" }, el("div", { class: "card-title" }, t("incident.assignees")),
    el("div", { class: "wf-actions" }, names,
      el("button", { type: "button", id: "assignees-save", onclick: () => save(parse()) }, t("btn.save")),
      el("button", { type: "button", id: "assign-me", onclick: () => save([...new Set([...parse(), S.me.name])]) }, t("btn.assign_me"))),
    ...body,
    el("div", { class: "wf-actions" }, file, el("button", { type: "button", id: "attach-upload", onclick: upload }, t("btn.attach"))),
    el("div", { class: "muted" }, t("attach.limit")),
    el("div", { class: "wf-actions" }, noteText, el("button", { type: "button", id: "incident-note-add", onclick: addNote }, t("btn.add_note"))));
}

/* ---- notices --------------------------------------------------------------------------- */

async function renderNotices(root) {
  const analyst = S.me.role === "province-analyst" || S.me.role === "city-analyst";
  const list = await api("/api/notices?limit=300");
  const rows = list.items.map((n) => el("tr", { class: "clickable", "data-notice": n.id, onclick: () => rHash("notice", n.id) },
    el("td", {}, `#${n.number}`), el("td", {}, n.title), el("td", {}, `${t("subject." + n.subject.kind)}`),
    el("td", {}, nameOf("enterprise", n.enterprise)), el("td", {}, t(`notice.state.${n.state}`)),
    el("td", { class: n.overdue ? "crit-text" : "" }, when(n.deadline)),
    el("td", {}, n.overdue ? el("span", { class: "pill dl-overdue" }, `${t("notice.overdue")} · ${t("escalation." + n.escalation)}`) : "")));
  const parts = [el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("tab.notices")),
    el("table", { id: "notices", class: "grid clickable" }, ...table([t("col.number"), t("col.title"), t("notice.subject"), t("col.enterprise"), t("col.state"), t("notice.deadline"), ""], rows))))];
  if (analyst) {
    parts.push(el("section", { class: "row" }, card(t("notice.issue_title"), issueForm())));
    const st = await api("/api/notices/stats");
    const statRows = (items, kind) => items.map((r) => el("tr", {}, el("td", {}, kind === "city" ? nameOf("city", r.id) : t(`industry.${r.id}`)),
      el("td", { class: "num" }, r.issued), el("td", { class: "num" }, r.closed), el("td", { class: "num" }, r.open),
      el("td", { class: `num ${r.overdue ? "crit-text" : ""}` }, r.overdue),
      el("td", { class: "num" }, r.closure_rate === null ? "—" : `${(r.closure_rate * 100).toFixed(0)}%`),
      el("td", { class: "num" }, r.days_to_close ?? "—")));
    const cols = [t("stats.unit"), t("stats.issued"), t("stats.closed"), t("stats.open"), t("stats.overdue"), t("stats.rate"), t("stats.days")];
    parts.unshift(el("section", { class: "row two" },
      card(t("stats.by_city"), el("table", { class: "grid", id: "stats-city" }, ...table(cols, statRows(st.by_city, "city")))),
      card(t("stats.by_industry"), el("table", { class: "grid", id: "stats-industry" }, ...table(cols, statRows(st.by_industry, "industry"))))));
  }
  draw(root, ...parts);
}

/* A notice about a finding or an advisory exposure (incidents issue from their own page). */
function issueForm() {
  const ents = S.org.cities.flatMap((c) => c.enterprises);
  const kind = el("select", { id: "issue-kind" }, ["finding", "advisory", "incident"].map((k) => el("option", { value: k }, t(`subject.${k}`))));
  const ref = el("input", { id: "issue-ref", placeholder: t("notice.ref_hint") });
  const ent = el("select", { id: "issue-enterprise" }, ents.map((e) => el("option", { value: e.id }, S.lang === "zh" && e.name_zh ? e.name_zh : e.name)));
  const title = el("input", { id: "issue-title" });
  const actions = el("textarea", { id: "issue-actions", rows: 3, placeholder: t("notice.actions_hint") });
  const days = el("input", { id: "issue-days", type: "number", min: "1", max: "400", value: String(R.policy.notices.default_working_days) });
  const issue = guard(async () => {
    const n = await post("/api/notices", { subject_kind: kind.value, subject_ref: ref.value.trim(), enterprise: ent.value,
      title: title.value || `${t("subject." + kind.value)} ${ref.value.trim()}`,
      actions: actions.value.split("\n").map((x) => x.trim()).filter(Boolean), working_days: Number(days.value) });
    rHash("notice", n.id);
  });
  return el("div", { class: "notice-form" }, el("label", {}, t("notice.subject"), kind), el("label", {}, t("notice.ref"), ref),
    el("label", {}, t("col.enterprise"), ent), el("label", {}, t("col.title"), title), el("label", {}, t("notice.actions"), actions),
    el("label", {}, t("notice.working_days"), days), el("button", { id: "issue-send", type: "button", onclick: issue }, t("btn.issue")), errorBox());
}

function verificationPanel(n, offer) {
  const s = offer.supports || {};
  const rows = [el("div", { id: "verification-state", class: offer.available ? "ok-text" : "muted" }, t(`verify.${offer.reason}`))];
  if (s.since) {
    rows.push(el("div", { class: "facts", id: "verification-data" }, ...facts([
      [t("verify.since"), when(s.since)], [t("verify.events"), s.events_since_reply], [t("verify.last_event"), when(s.last_event)],
      [t("verify.alerts"), s.alerts_since_reply], [t("verify.matching"), s.matching_alerts],
      [t("verify.finding_last_seen"), s.finding_id ? when(s.finding_last_seen) : null],
      [t("verify.asset_last_seen"), s.asset_id ? `${s.asset_id} ${when(s.asset_last_seen)}` : null],
      [t("verify.checked"), Object.values(s.checked || {}).flat()]])));
  }
  if (n.state === "submitted") {
    const note = el("textarea", { id: "verify-note", rows: 2, placeholder: t("verify.note_hint") });
    rows.push(el("div", { class: "wf-actions" },
      offer.available ? el("button", { id: "verify-telemetry", type: "button", onclick: guard(async () => { await post(`/api/notices/${n.id}/verify`, { use_telemetry: true, note: note.value || null }); await refresh(); }) }, t("btn.verify_telemetry")) : "",
      el("button", { id: "verify-manual", type: "button", onclick: guard(async () => { await post(`/api/notices/${n.id}/verify`, { use_telemetry: false, note: note.value }); await refresh(); }) }, t("btn.verify_manual"))), note);
  }
  return el("div", { id: "verification" }, ...rows);
}

async function renderNotice(root, id) {
  const n = await api(`/api/notices/${encodeURIComponent(id)}`);
  const analyst = S.me.role === "province-analyst" || S.me.role === "city-analyst";
  const offer = analyst ? await api(`/api/notices/${n.id}/verification`) : null;
  const note = el("input", { id: "notice-note", placeholder: t("alert.note") });
  const moves = n.moves.filter((to) => to !== "verified").map((to) => el("button", { type: "button", "data-to": to, class: "notice-move",
    onclick: guard(async () => { await post(`/api/notices/${n.id}/transition`, { to, note: note.value || null }); await refresh(); }) }, t(`notice.to.${to}`)));
  const replyText = el("textarea", { id: "reply-text", rows: 3, placeholder: t("reply.hint") });
  const replyFile = el("input", { id: "reply-file", type: "file" });
  const sendReply = guard(async () => {
    const attachments = [];
    for (const f of replyFile.files) attachments.push(await fileBody(f));
    await post(`/api/notices/${n.id}/reply`, { text: replyText.value, attachments });
    await refresh();
  });
  const replies = n.replies.map((r) => el("div", { class: "note reply" }, el("span", { class: "muted" }, `${fmtTime(r.at)} ${r.author}: `), r.text,
    ...r.attachments.map((a) => el("button", { type: "button", class: "link", onclick: guard(() => download(`/api/attachments/${a.id}`, a.name)) }, ` [${t("attachment")}] ${a.name} (${a.size} B)`))));
  draw(root,
    el("div", { class: "card wide" }, el("div", { class: "alert-head" },
      el("button", { type: "button", id: "back", onclick: () => { location.hash = "view=notices"; } }, t("alert.back")),
      el("h1", { id: "notice-title" }, `#${n.number} ${n.title}`), stateBadge("notice", n.state),
      n.overdue ? el("span", { class: "pill dl-overdue", id: "notice-overdue" }, `${t("notice.overdue")} · ${t("escalation." + n.escalation)}`) : ""),
    el("div", { class: "facts" }, ...facts([[t("col.enterprise"), nameOf("enterprise", n.enterprise)], [t("col.city"), nameOf("city", n.city)],
      [t("notice.subject"), `${t("subject." + n.subject.kind)} ${n.subject.ref}`], [t("notice.issued"), `${when(n.issued_at)} ${n.issued_by}`],
      [t("notice.deadline"), `${when(n.deadline)} (${n.working_days} ${t("notice.working_days_short")})`]])),
    n.subject.kind === "incident" && analyst ? el("a", { href: `#incident=${n.subject.ref}` }, t("notice.to_incident")) : "",
    moves.length ? el("div", { class: "wf-actions" }, ...moves, note) : "", errorBox()),
    el("section", { class: "row two" },
      card(t("notice.actions"), el("ol", { id: "notice-actions-list" }, n.actions.map((a) => el("li", {}, a)))),
      card(t("notice.replies"), ...(replies.length ? replies : [el("div", { class: "muted" }, t("none"))]),
        n.can_reply ? el("div", { class: "reply-form" }, replyText, replyFile, el("button", { id: "reply-send", type: "button", onclick: sendReply }, t("btn.reply"))) : "")),
    el("section", { class: "row two" },
      analyst ? card(t("verify.title"), verificationPanel(n, offer)) : el("div"),
      card(t("alert.audit"), el("div", { id: "notice-audit" }, n.audit.map((e) => el("div", { class: "audit-row" }, el("span", { class: "muted" }, fmtTime(e.at)), " ",
        el("b", {}, e.actor), " ", e.action, e.to_state ? ` → ${t("notice.state." + e.to_state)}` : "",
        e.detail && e.detail.method ? ` (${t("verify.method." + e.detail.method)})` : "",
        e.detail && e.detail.escalation ? ` (${t("escalation." + e.detail.escalation.to)})` : ""))))));
}

/* ---- campaigns ------------------------------------------------------------------------- */

async function renderCampaigns(root) {
  const list = await api("/api/campaigns?limit=200");
  const rows = list.items.map((c) => el("tr", { class: "clickable", "data-campaign": c.id, onclick: () => rHash("campaign", c.id) },
    el("td", {}, t(`indicator.${c.kind}`)), el("td", {}, c.indicator), el("td", { class: "num" }, c.enterprises_total),
    el("td", {}, c.cities.map((x) => nameOf("city", x)).join(", ")), el("td", {}, c.industries.map((x) => t(`industry.${x}`)).join(", ")),
    el("td", { class: "num" }, c.alerts), el("td", {}, when(c.first_seen)), el("td", {}, when(c.last_seen))));
  const detect = S.me.role === "province-analyst" ? el("button", { id: "campaigns-detect", type: "button",
    onclick: guard(async () => { await post("/api/campaigns/detect", { hours: S.hours }); await refresh(); }) }, t("btn.detect")) : "";
  let contentPanel = "";
  if (S.me.role === "province-analyst") {
    const pkg = await api("/api/content");
    const ruleText = el("textarea", { id: "rule-yaml", rows: 6, placeholder: t("content.rule_hint") });
    const policy = el("select", { id: "rule-policy" }, ["central", "local"].map((p) => el("option", { value: p }, t(`content.policy.${p}`))));
    contentPanel = el("section", { class: "row two" },
      card(`${t("content.title")} · v${pkg.version}`,
        el("table", { class: "grid", id: "content-watchlist" }, ...table([t("indicator.value"), t("content.source")],
          pkg.watchlist.map((w) => el("tr", {}, el("td", {}, w.value), el("td", {}, w.source))))),
        el("table", { class: "grid", id: "content-rules" }, ...table([t("col.rule"), t("content.policy")],
          pkg.rules.map((r) => el("tr", {}, el("td", {}, r.id), el("td", {}, t(`content.policy.${r.policy}`)))))),
        el("button", { type: "button", id: "content-export", onclick: guard(() => download("/api/content", `icsmon-content-v${pkg.version}.json`)) }, t("content.export"))),
      card(t("content.push"), ruleText, policy,
        el("button", { type: "button", id: "rule-push", onclick: guard(async () => { await post("/api/content/rules", { yaml: ruleText.value, policy: policy.value }); await refresh(); }) }, t("content.push_button"))));
  }
  draw(root, contentPanel, el("section", { class: "row" }, el("div", { class: "card wide" },
    el("div", { class: "alert-head" }, el("div", { class: "card-title" }, t("tab.campaigns")), detect),
    el("table", { id: "campaigns", class: "grid clickable" }, ...table([t("indicator"), t("indicator.value"), t("col.enterprises"), t("col.city"), t("industry"), t("kpi.alerts"), t("campaign.first"), t("campaign.last")], rows)),
    errorBox())));
}

async function renderCampaign(root, id) {
  const c = await api(`/api/campaigns/${encodeURIComponent(id)}`);
  const province = S.me.role === "province-analyst";
  const drawn = draw(root,
    el("div", { class: "card wide" }, el("div", { class: "alert-head" },
      el("button", { type: "button", id: "back", onclick: () => { location.hash = "view=campaigns"; } }, t("alert.back")),
      el("h1", { id: "campaign-title" }, `${t("indicator." + c.kind)}: ${c.indicator}`),
      el("button", { type: "button", id: "campaign-stix", onclick: guard(() => download(`/api/campaigns/${c.id}/stix`, `campaign-${c.id}.stix.json`)) }, "STIX 2.1"),
      province && c.kind === "source-ip" ? el("button", { type: "button", id: "campaign-watch", onclick: guard(async () => { await post(`/api/campaigns/${c.id}/watch`); flash(t("campaign.watched")); }) }, t("btn.watch")) : ""),
    el("div", { class: "facts" }, ...facts([[t("col.enterprises"), c.enterprises_total], [t("col.city"), c.cities.map((x) => nameOf("city", x))],
      [t("industry"), c.industries.map((x) => t(`industry.${x}`))], [t("col.technique"), c.techniques], [t("campaign.first"), when(c.first_seen)], [t("campaign.last"), when(c.last_seen)]])),
    errorBox()),
    el("section", { class: "row" }, el("div", { class: "card wide" }, el("div", { class: "card-title" }, t("incident.timeline")), el("div", { id: "campaign-chart", class: "chart" }))),
    province ? el("section", { class: "row" }, card(t("warning.issue"), warningForm(c))) : "",
    el("section", { class: "row" }, card(t("col.enterprises"), el("table", { class: "grid", id: "campaign-enterprises" }, ...table([t("col.enterprise"), t("col.city"), t("industry")],
      c.enterprise_list.map((e) => el("tr", {}, el("td", {}, S.lang === "zh" && e.name_zh ? e.name_zh : e.name), el("td", {}, nameOf("city", e.city)), el("td", {}, t(`industry.${e.industry}`)))))))));
  if (!drawn) return;
  const ents = c.enterprise_list.map((e) => e.id);
  const ch = echarts.init(document.getElementById("campaign-chart"));
  ch.setOption({
    grid: { left: 160, right: 20, top: 10, bottom: 30 }, tooltip: { trigger: "item", formatter: (p) => `${fmtTime(p.value[0] / 1000)} ${p.data.rule || ""}` },
    xAxis: { type: "time", ...AXIS }, yAxis: { type: "category", data: ents.map((e) => nameOf("enterprise", e)), ...AXIS },
    series: [{ type: "scatter", symbolSize: 12, itemStyle: { color: "#f46036" },
      data: c.timeline.map((x) => ({ value: [x.at * 1000, ents.indexOf(x.enterprise)], rule: x.rule })) }],
  });
}

/* ---- early warning ---------------------------------------------------------------------- */

function warningLevel(id) {
  const lv = (R.levels || []).find((x) => x.id === id) || { id, zh: id, en: id };
  return el("span", { class: "pill level", style: `background:${LEVEL_COLOR[id] || "#5aa9e6"}` }, S.lang === "zh" ? lv.zh : lv.en);
}

/* Which detection content each sensor runs (from its heartbeats): who is behind. */
function fleetPanel(f) {
  const cities = Object.entries(f.by_city).sort((a, b) => b[1].behind - a[1].behind || a[0].localeCompare(b[0]));
  const behind = f.sensors.filter((s) => s.status !== "current").slice(0, 50);
  return el("div", { class: "card wide", id: "content-fleet" },
    el("div", { class: "card-title" }, `${t("fleet.title")} · ${t("fleet.version")} ${f.version}`),
    el("div", { class: "facts" }, ...facts([[t("fleet.current"), String(f.current)], [t("fleet.behind"), String(f.behind)],
      [t("fleet.silent"), String(f.silent)], [t("fleet.total"), String(f.total)]])),
    el("section", { class: "row two" },
      el("table", { class: "grid", id: "fleet-cities" }, ...table([t("col.city"), t("fleet.current"), t("fleet.behind"), t("fleet.silent")],
        cities.map(([c, n]) => el("tr", {}, el("td", {}, nameOf("city", c)), el("td", { class: "num" }, n.current),
          el("td", { class: n.behind ? "num crit-text" : "num" }, n.behind), el("td", { class: "num" }, n.silent))))),
      el("table", { class: "grid", id: "fleet-behind" }, ...table([t("fleet.sensor"), t("col.enterprise"), t("fleet.running"), t("fleet.last_seen")],
        behind.map((s) => el("tr", { "data-status": s.status }, el("td", {}, s.name), el("td", {}, nameOf("enterprise", s.enterprise)),
          el("td", {}, s.status === "silent" ? t("fleet.silent") : s.running === null ? "—" : `${s.running} (−${s.behind_by})`),
          el("td", {}, when(s.last_seen)))), t("fleet.none_behind")))));
}

/* The scopes the analyst may push to: the province (its analysts), then each city with its
   enterprises and their sites, as the registry the dashboard loaded shows them. */
function pushScopes() {
  const out = S.me.role === "province-analyst" ? [el("option", { value: "province" }, nameOf("province"))] : [];
  for (const c of (S.org && S.org.cities) || []) {
    out.push(el("option", { value: `city:${c.id}` }, nameOf("city", c.id)));
    for (const e of c.enterprises) {
      out.push(el("option", { value: `enterprise:${e.id}` }, `\u00a0\u00a0${nameOf("enterprise", e.id)}`));
      for (const s of e.sites) out.push(el("option", { value: `site:${s.id}` }, `\u00a0\u00a0\u00a0\u00a0${nameOf("site", s.id)}`));
    }
  }
  return out;
}

/* Push the current content to a scope's sensors, and what each sensor did with the last push
   (from its answer on the control channel and its heartbeats). */
function pushPanel(list) {
  const scope = el("select", { id: "push-scope" }, pushScopes());
  const send = guard(async () => {
    const p = await post("/api/content/push", { scope: scope.value });
    flash(`${t("push.sent")} ${p.total}`);
    await refresh();
  });
  const counts = (p) => ["applied", "sent", "refused", "expired", "not-sent"].filter((k) => p.counts[k])
    .map((k) => el("span", { class: `push-count st-${k}` }, `${t("push.state." + k)} ${p.counts[k]}`));
  const rows = list.items.map((p) => el("tr", { "data-push": p.id }, el("td", {}, `#${p.number}`), el("td", { class: "num" }, `v${p.version}`),
    el("td", {}, p.scope === "province" ? nameOf("province") : nameOf(...p.scope.split(":"))), el("td", {}, `${p.issued_by} ${when(p.issued_at)}`),
    el("td", { class: "push-counts" }, ...counts(p))));
  const latest = list.items[0];
  const sensors = latest ? latest.sensors.map((x) => el("tr", { "data-sensor": x.sensor, "data-state": x.state },
    el("td", {}, x.sensor), el("td", {}, nameOf("site", x.site)),
    el("td", {}, el("span", { class: `badge push-state st-${x.state}` }, t("push.state." + x.state))),
    el("td", { class: "num" }, x.running === null ? "—" : `v${x.running}`), el("td", { class: "push-reason" }, x.reason || ""))) : [];
  return el("div", { class: "card wide", id: "content-push" },
    el("div", { class: "card-title" }, `${t("push.title")} · ${t("push.version")} v${list.version}`),
    list.configured ? el("div", { class: "wf-actions" }, el("label", {}, t("push.scope"), scope),
      el("button", { type: "button", id: "push-send", onclick: send }, t("push.button"))) : el("div", { class: "muted" }, t("push.not_configured")),
    el("div", { class: "card-title small" }, t("push.history")),
    el("table", { class: "grid", id: "push-list" }, ...table([t("push.number"), t("push.version"), t("push.scope"), t("push.by"), t("col.state")], rows)),
    latest ? el("div", { class: "card-title small" }, `${t("push.latest")} #${latest.number}`) : "",
    latest ? el("table", { class: "grid", id: "push-sensors" }, ...table([t("push.sensors"), t("col.site"), t("col.state"), t("push.running"), t("push.reason")], sensors)) : "");
}

async function renderWarnings(root) {
  const list = await api("/api/warnings?limit=200");
  const analyst = S.me.role === "province-analyst" || S.me.role === "city-analyst";
  const pushes = analyst ? await api("/api/content/pushes?limit=10") : null;
  const fleet = S.me.role === "enterprise-viewer" ? null : await api("/api/content/fleet");
  const operator = S.me.role === "enterprise-operator";
  const cards = list.items.map((w) => {
    const mine = w.recipients.find((r) => r.enterprise_id === S.me.scope.split(":")[1]);
    return el("div", { class: "card warning-card", "data-warning": w.id },
      el("div", { class: "dl-head" }, warningLevel(w.level), el("b", {}, `#${w.number} ${w.title}`),
        el("span", { class: `badge st-${w.state === "active" ? "issued" : "closed"}` }, t(`warning.state.${w.state}`))),
      el("div", { class: "muted" }, `${when(w.issued_at)} · ${w.industries.map((x) => t("industry." + x)).join(", ")}${w.vendors.length ? " · " + w.vendors.join(", ") : ""}`),
      w.text ? el("div", { class: "warning-text" }, w.text) : "",
      el("div", { class: "muted" }, `${t("warning.recipients")} ${w.recipients_total} · ${t("warning.acknowledged")} ${w.acknowledged}`),
      operator && mine && !mine.acknowledged_at && w.state === "active"
        ? el("button", { type: "button", class: "warning-ack", onclick: guard(async () => { await post(`/api/warnings/${w.id}/acknowledge`); await refresh(); }) }, t("btn.acknowledge"))
        : mine && mine.acknowledged_at ? el("span", { class: "ok-text" }, `${t("warning.acknowledged")} ${when(mine.acknowledged_at)}`) : "");
  });
  draw(root, el("section", { class: "row" }, el("div", { class: "card wide" },
    el("div", { class: "card-title" }, t("tab.warnings")), errorBox(),
    el("div", { id: "warnings", class: "ent-grid" }, ...(cards.length ? cards : [el("div", { class: "muted" }, t("none"))])))),
    pushes ? el("section", { class: "row" }, pushPanel(pushes)) : "",
    fleet ? el("section", { class: "row" }, fleetPanel(fleet)) : "");
}

function warningForm(c) {
  const level = el("select", { id: "warning-level" }, (R.levels || []).map((l) => el("option", { value: l.id }, S.lang === "zh" ? l.zh : l.en)));
  const title = el("input", { id: "warning-title", value: `${t("indicator." + c.kind)} ${c.indicator}` });
  const text = el("textarea", { id: "warning-text", rows: 3, placeholder: t("warning.text_hint") });
  const send = guard(async () => {
    const w = await post("/api/warnings", { level: level.value, title: title.value, text: text.value, campaign: c.id });
    flash(`${t("warning.sent")} ${w.recipients_total}`);
  });
  return el("div", { class: "notice-form" }, el("label", {}, t("warning.level"), level), el("label", {}, t("col.title"), title),
    el("label", {}, t("warning.text"), text), el("button", { id: "warning-send", type: "button", onclick: send }, t("btn.warn")));
}

/* ---- emergency command view ------------------------------------------------------------ */

async function renderCommand(root, id) {
  const v = await api(`/api/incidents/${encodeURIComponent(id)}/command`);
  const inc = v.incident;
  const cards = v.enterprises.map((e) => el("div", { class: `card ent-card st-${e.state}`, "data-enterprise": e.id },
    el("div", { class: "dl-head" }, el("b", {}, S.lang === "zh" && e.name_zh ? e.name_zh : e.name),
      el("span", { class: `badge st-${e.state}` }, e.state === "no-notice" ? t("command.no_notice") : e.state === "overdue" ? t("notice.overdue") : t(`notice.state.${e.state}`))),
    el("div", { class: "muted" }, `${nameOf("city", e.city)} · ${t("industry." + e.industry)}`),
    el("div", { class: "sensors" }, e.sensors.map((s) => el("span", { class: `pill ${s.silent ? "critical" : "sensor-ok"}`, title: when(s.last_seen) }, `${s.name} ${s.silent ? t("command.silent") : t("command.reporting")}`))),
    ...e.tasks.map((task) => el("div", { class: "task" },
      el("a", { href: `#notice=${task.id}` }, `#${task.number} ${task.title}`), " ", el("span", { class: "muted" }, `${t("notice.deadline")} ${when(task.deadline)}`),
      el("ol", {}, task.actions.map((a) => el("li", {}, a))),
      ...task.replies.map((r) => el("div", { class: "note reply" }, el("span", { class: "muted" }, `${fmtTime(r.at)} ${r.author}: `), r.text))))));
  draw(root,
    el("div", { class: "card wide command-head" }, el("div", { class: "alert-head" },
      el("button", { type: "button", id: "back", onclick: () => rHash("incident", inc.id) }, t("alert.back")),
      el("h1", { id: "command-title" }, `${t("command.title")} · #${inc.number} ${inc.title}`), levelPill(inc.grade), stateBadge("incident", inc.state),
      el("span", { class: "muted" }, `${t("refreshed")} ${fmtTime(v.generated, false)}`))),
    el("section", { class: "row two" }, card(t("incident.clock"), clockPanel(v.clock)),
      card(t("command.summary"), el("div", { class: "kpi-grid", id: "command-kpis" },
        kpi(t("col.enterprises"), v.enterprises.length),
        kpi(t("command.answered"), v.enterprises.filter((e) => ["submitted", "verified", "closed"].includes(e.state)).length, "warn"),
        kpi(t("notice.overdue"), v.enterprises.filter((e) => e.state === "overdue").length, "crit"),
        kpi(t("command.silent"), v.enterprises.reduce((n, e) => n + e.sensors.filter((s) => s.silent).length, 0), "crit")))),
    el("section", { class: "ent-grid", id: "command-enterprises" }, ...cards));
  clearTimeout(R.commandTimer);
  R.commandTimer = setTimeout(() => { if (location.hash.startsWith("#command=")) refresh(); }, 5000);
}

/* ---- entry ------------------------------------------------------------------------------ */

const ResponseUI = {
  handles(params) {
    return ["view", "incident", "notice", "campaign", "command"].some((k) => params.has(k));
  },
  async render(params) {
    if (!R.policy) {
      R.policy = await api("/api/response/policy");
      R.levels = R.policy.warning_levels;
    }
    const root = document.getElementById("response-view");
    if (!R.watching) {
      R.watching = true;
      for (const kind of ["input", "change"]) root.addEventListener(kind, () => { R.dirty = true; });
    }
    if (R.dirty && R.shown === location.hash) return;
    R.shown = location.hash;
    R.dirty = false;
    const view = params.get("view");
    let tab = "incidents";
    if (params.has("incident")) await renderIncident(root, params.get("incident"));
    else if (params.has("command")) await renderCommand(root, params.get("command"));
    else if (params.has("notice")) { tab = "notices"; await renderNotice(root, params.get("notice")); }
    else if (params.has("campaign")) { tab = "campaigns"; await renderCampaign(root, params.get("campaign")); }
    else if (view === "notices") { tab = "notices"; await renderNotices(root); }
    else if (view === "campaigns") { tab = "campaigns"; await renderCampaigns(root); }
    else if (view === "warnings") { tab = "warnings"; await renderWarnings(root); }
    else await renderIncidents(root);
    renderTabs(tab);
  },
  tabs: renderTabs,
  /* On an alert's page: its incident, or a button to open one from it. */
  alertIncident(d) {
    const box = document.getElementById("alert-incident");
    if (!box) return;
    const analyst = S.me.role === "province-analyst" || S.me.role === "city-analyst";
    if (d.incident) {
      box.replaceChildren(el("a", { href: `#incident=${d.incident.id}`, id: "alert-incident-link" }, `${t("alert.incident")} #${d.incident.number} ${d.incident.title}`));
    } else if (analyst) {
      box.replaceChildren(el("button", { type: "button", id: "alert-open-incident", onclick: guard(async () => {
        const inc = await post("/api/incidents", { title: get(d, "rule.name") || "incident", alert_ids: [get(d, "event.id")] });
        rHash("incident", inc.id);
      }) }, t("btn.open_incident")));
    } else box.replaceChildren();
  },
};
window.ResponseUI = ResponseUI;
