"""Weekly and monthly reports of a scope (province, city, enterprise): data, HTML, PDF.

The data (``report_data``) is the posture summary of the period and of the period before
(score and trend), the assessment (risk with its parts, top-risk enterprises, findings by
kind, exposure by advisory), sensor coverage, and alerts by ATT&CK for ICS technique. It
is plain JSON: golden tests compare it, and both renderings are made from it.

Rendering: one HTML document (Chinese by default, English with ``lang="en"``) with its
charts as inline SVG, so the HTML a browser downloads and the PDF are the same page. The
PDF is WeasyPrint's rendering of that HTML: text stays text (searchable, read back in the
tests with pdftotext), and the CJK glyphs come from the fonts named in the style sheet
(Noto Sans CJK SC, Debian's ``fonts-noto-cjk``) through fontconfig. WeasyPrint needs
Pango (Debian ``libpango-1.0-0``, ``libpangoft2-1.0-0``); reportlab would have needed a
second layout of every page and registered TTC subfonts by hand.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

PERIODS = {"weekly": 7, "monthly": 30}
FONT = "'Noto Sans CJK SC', 'Noto Sans CJK', 'Noto Sans SC', sans-serif"

TEXT = {
    "zh": {
        "title": {"weekly": "工业互联网安全态势周报", "monthly": "工业互联网安全态势月报"},
        "scope": "范围",
        "period": "报告周期",
        "generated": "生成时间",
        "score": "态势评分",
        "previous": "上一周期",
        "risk": "风险指数",
        "parts": "风险构成",
        "findings": "安全发现",
        "vulnerabilities": "漏洞暴露",
        "alerts": "告警",
        "exposure": "暴露面",
        "trend": "告警趋势（每日）",
        "top_enterprises": "高风险企业",
        "enterprise": "企业",
        "city": "城市",
        "by_kind": "安全发现（按类型）",
        "kind": "类型",
        "open": "未处置",
        "resolved": "已消除",
        "accepted": "已接受",
        "advisories": "漏洞通告与受影响资产",
        "advisory": "通告",
        "affected": "受影响",
        "possibly": "可能受影响",
        "exploited": "已被利用",
        "coverage": "监测覆盖",
        "required": "须接入企业",
        "state_connected": "已接入",
        "state_no_traffic": "在线无流量",
        "state_disconnected": "断开",
        "state_stale": "长期失联",
        "state_never_onboarded": "未接入",
        "sensors": "传感器",
        "reporting": "在线",
        "silent": "静默",
        "techniques": "告警技术（ATT&CK for ICS）",
        "technique": "技术",
        "count": "数量",
        "none": "无",
        "cities": "城市分布",
        "score_parts": "评分扣分项",
        "score_alerts": "告警",
        "score_deviations": "基线偏离",
        "score_sensor_health": "传感器健康",
        "score_risk": "风险",
    },
    "en": {
        "title": {
            "weekly": "ICS security posture: weekly report",
            "monthly": "ICS security posture: monthly report",
        },
        "scope": "Scope",
        "period": "Period",
        "generated": "Generated",
        "score": "Posture score",
        "previous": "previous period",
        "risk": "Risk",
        "parts": "Risk parts",
        "findings": "Findings",
        "vulnerabilities": "Vulnerabilities",
        "alerts": "Alerts",
        "exposure": "Exposure",
        "trend": "Alerts per day",
        "top_enterprises": "Top-risk enterprises",
        "enterprise": "Enterprise",
        "city": "City",
        "by_kind": "Findings by kind",
        "kind": "Kind",
        "open": "open",
        "resolved": "resolved",
        "accepted": "accepted",
        "advisories": "Advisories and affected assets",
        "advisory": "Advisory",
        "affected": "affected",
        "possibly": "possibly",
        "exploited": "exploited",
        "coverage": "Coverage",
        "required": "Enterprises that must connect",
        "state_connected": "connected",
        "state_no_traffic": "connected, no traffic",
        "state_disconnected": "disconnected",
        "state_stale": "stale",
        "state_never_onboarded": "never onboarded",
        "sensors": "Sensors",
        "reporting": "reporting",
        "silent": "silent",
        "techniques": "Alerts by technique (ATT&CK for ICS)",
        "technique": "Technique",
        "count": "Count",
        "none": "none",
        "cities": "Cities",
        "score_parts": "Score penalties",
        "score_alerts": "alerts",
        "score_deviations": "deviations",
        "score_sensor_health": "sensor health",
        "score_risk": "risk",
    },
}

KIND_ZH = {
    "opcua-security-mode-none": "OPC UA 端点未启用安全模式",
    "opcua-deprecated-security-policy": "OPC UA 使用已弃用的安全策略",
    "opcua-anonymous-session": "OPC UA 接受匿名会话",
    "opcua-password-in-clear": "OPC UA 口令明文传输",
    "opcua-self-signed-certificate": "OPC UA 服务器证书自签名",
    "opcua-expired-certificate": "OPC UA 服务器证书过期",
    "s7-no-protection-level": "S7 控制器未设置保护级别",
    "s7-plc-stop-without-password": "S7 无口令接受停机命令",
    "s7-program-transfer-without-password": "S7 无口令接受程序传输",
    "modbus-multiple-masters": "Modbus 控制器被多个主站写入",
    "modbus-write-from-unlearned-master": "Modbus 控制器被未知主站写入",
    "engineering-access-outside-segment": "控制网段外可访问工程协议",
    "firmware-observed": "发现固件版本",
}


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def report_data(
    service: Any, assessment: Any, scope: Any, period: str, now: float | None = None
) -> dict:
    """Everything a report shows, as JSON-ready data."""
    days = PERIODS[period]
    now = time.time() if now is None else now
    since = now - days * 86400
    summary = service.summary(scope, since, now, now=now)
    before = service.summary(scope, since - days * 86400, since, now=now)
    sites = list(scope.sites) if scope.sites is not None else None
    result = assessment.assess(sites, now=now)
    cov = assessment.coverage(sites, now=now)
    per_day: dict[str, int] = {}
    for b in summary["trend"]["buckets"]:
        day = _day(b["t"])
        per_day[day] = per_day.get(day, 0) + sum(
            b[k] for k in ("critical", "high", "medium", "low")
        )
    sc = summary["scope"]
    org = assessment.state.org()
    cities = {e["city"] for e in result.top_enterprises} | set(cov["by_city"])
    for row in result.by_advisory[:15]:
        cities |= set(row["by_city"])
    names = {
        "cities": {
            c: {
                "name": org.cities.get(c, {}).get("name", c),
                "name_zh": org.cities.get(c, {}).get("name_zh", ""),
            }
            for c in sorted(cities)
            if c and c != "?"
        },
        "enterprises": {
            e["enterprise"]: {
                "name": org.enterprises.get(e["enterprise"], {}).get("name", e["name"]),
                "name_zh": org.enterprises.get(e["enterprise"], {}).get("name_zh", ""),
            }
            for e in result.top_enterprises
        },
    }
    return {
        "names": names,
        "period": period,
        "since": _day(since),
        "until": _day(now),
        "scope": {"key": scope.key, "name": sc.get("name", ""), "name_zh": sc.get("name_zh", "")},
        "score": summary["score"],
        "previous_score": before["score"]["score"],
        "alerts": {
            "total": summary["alerts"]["total"],
            "by_severity": summary["alerts"]["by_severity"],
            "per_day": sorted(per_day.items()),
            "by_technique": summary["alerts"]["by_technique"],
        },
        "coverage": {
            **{k: summary["sensors"][k] for k in ("total", "reporting", "silent")},
            **{
                k: cov[k]
                for k in ("by_state", "required", "required_connected", "ratio", "by_city")
            },
        },
        "risk": result.risk,
        "top_enterprises": [
            {k: e[k] for k in ("enterprise", "name", "city", "risk", "parts")}
            for e in result.top_enterprises
        ],
        "findings": result.by_kind,
        "exposure": [
            {
                k: r[k]
                for k in (
                    "advisory",
                    "title",
                    "cves",
                    "cvss",
                    "exploited",
                    "affected",
                    "possibly",
                    "by_city",
                )
            }
            for r in result.by_advisory[:15]
        ],
    }


# -- rendering ---------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _bars(items: list[tuple[str, float]], width: int = 640, color: str = "#3b6fb6") -> str:
    """A horizontal bar chart as inline SVG."""
    if not items:
        return ""
    top = max(v for _k, v in items) or 1
    row, label_w = 22, 230
    height = row * len(items) + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">'
    ]
    for i, (label, value) in enumerate(items):
        y = i * row + 3
        w = (width - label_w - 60) * value / top
        out.append(f'<text x="0" y="{y + 15}" font-size="12">{_e(label)[:40]}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="15" fill="{color}"/>')
        out.append(
            f'<text x="{label_w + w + 5:.1f}" y="{y + 15}" font-size="12">{_e(value)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _columns(items: list[tuple[str, float]], width: int = 640, height: int = 160) -> str:
    """A column chart (alerts per day) as inline SVG."""
    if not items:
        return ""
    top = max(v for _k, v in items) or 1
    n = len(items)
    step = (width - 40) / n
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" class="chart">'
    ]
    for i, (label, value) in enumerate(items):
        h = (height - 20) * value / top
        x = 30 + i * step
        out.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" fill="#c0504d"/>'
        )
        if n <= 10 or i % max(1, n // 8) == 0:
            out.append(f'<text x="{x:.1f}" y="{height + 14}" font-size="10">{_e(label[5:])}</text>')
        if value:
            out.append(
                f'<text x="{x:.1f}" y="{height - h - 3:.1f}" font-size="10">{_e(value)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def _percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.0f}%"


def _named(names: dict, kind: str, ident: str, lang: str) -> str:
    """A city's or enterprise's name in the report's language (its id when unknown)."""
    entry = names.get(kind, {}).get(ident) or {}
    return (entry.get("name_zh") if lang == "zh" else "") or entry.get("name") or ident or "?"


def render_html(data: dict, lang: str = "zh") -> str:
    t = TEXT[lang]
    names = data.get("names", {})

    def city(ident: str) -> str:
        return _named(names, "cities", ident, lang)

    sc = data["scope"]
    name = (sc.get("name_zh") if lang == "zh" else sc.get("name")) or sc.get("name") or sc["key"]
    score = data["score"]
    risk = data["risk"]
    parts = [
        (t[p], risk["parts"].get(p, 0.0))
        for p in ("findings", "vulnerabilities", "alerts", "exposure")
    ]
    ent_rows = (
        "".join(
            f"<tr><td>{_e(_named(names, 'enterprises', e['enterprise'], lang))}</td>"
            f"<td>{_e(city(e['city']))}</td><td class=n>{e['risk']}</td>"
            f"<td>{_e(' / '.join(f'{v}' for v in e['parts'].values()))}</td></tr>"
            for e in data["top_enterprises"]
        )
        or f"<tr><td colspan=4>{t['none']}</td></tr>"
    )
    kind_rows = (
        "".join(
            f"<tr><td>{_e(KIND_ZH.get(f['kind'], f['title']) if lang == 'zh' else f['title'])}</td>"
            f"<td class=n>{f['open']}</td><td class=n>{f['resolved']}</td><td class=n>{f['accepted']}</td></tr>"
            for f in data["findings"]
        )
        or f"<tr><td colspan=4>{t['none']}</td></tr>"
    )
    adv_rows = (
        "".join(
            f"<tr><td>{_e(a['advisory'])}{' ⚠' if a['exploited'] else ''}</td><td>{_e(', '.join(a['cves']))}</td>"
            f"<td class=n>{_e(a['cvss'])}</td><td class=n>{a['affected']}</td><td class=n>{a['possibly']}</td>"
            f"<td>{_e(' · '.join(f'{city(c)} {n}' for c, n in a['by_city'].items()))}</td></tr>"
            for a in data["exposure"]
        )
        or f"<tr><td colspan=6>{t['none']}</td></tr>"
    )
    city_rows = "".join(
        f"<tr><td>{_e(city(c))}</td><td class=n>{g['required']}</td><td class=n>{g['connected']}</td>"
        f"<td class=n>{_percent(g['ratio'])}</td></tr>"
        for c, g in data["coverage"]["by_city"].items()
        if g["required"]
    )
    city_table = (
        f"<table><tr><th>{t['city']}</th><th>{t['required']}</th>"
        f"<th>{t['state_connected']}</th><th>%</th></tr>{city_rows}</table>"
        if city_rows
        else ""
    )
    score_parts = " · ".join(
        f"{t['score_' + k]} −{score.get(k, 0)}"
        for k in ("alerts", "deviations", "sensor_health", "risk")
    )
    cov = data["coverage"]
    ratio = f" ({cov['ratio'] * 100:.0f}%)" if cov.get("ratio") is not None else ""
    delta = round(score["score"] - data["previous_score"], 1)
    return f"""<!DOCTYPE html>
<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">
<title>{_e(t["title"][data["period"]])} · {_e(name)}</title>
<style>
@page {{ size: A4; margin: 16mm 14mm; }}
body {{ font-family: {FONT}; font-size: 11pt; color: #222; }}
h1 {{ font-size: 18pt; margin: 0 0 4pt; }} h2 {{ font-size: 13pt; border-bottom: 1px solid #999; margin-top: 14pt; }}
.meta {{ color: #555; }} .kpi {{ display: inline-block; margin-right: 24pt; }}
.kpi b {{ font-size: 20pt; }} table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 2pt 4pt; text-align: left; }} td.n {{ text-align: right; }}
svg text {{ font-family: {FONT}; }}
</style></head><body>
<h1>{_e(t["title"][data["period"]])}</h1>
<p class="meta">{t["scope"]}: {_e(name)} · {t["period"]}: {data["since"]} – {data["until"]}</p>
<div><span class="kpi">{t["score"]} <b>{score["score"]}</b> ({t["previous"]} {data["previous_score"]}, {"+" if delta >= 0 else ""}{delta})</span>
<span class="kpi">{t["risk"]} <b>{risk["risk"]}</b></span>
<span class="kpi">{t["alerts"]} <b>{data["alerts"]["total"]}</b></span></div>
<p class="meta">{t["score_parts"]}: {_e(score_parts)}</p>
<h2>{t["parts"]}</h2>{_bars(parts, color="#8064a2")}
<h2>{t["trend"]}</h2>{_columns(data["alerts"]["per_day"])}
<h2>{t["top_enterprises"]}</h2>
<table><tr><th>{t["enterprise"]}</th><th>{t["city"]}</th><th>{t["risk"]}</th><th>{t["parts"]}</th></tr>{ent_rows}</table>
<h2>{t["by_kind"]}</h2>
<table><tr><th>{t["kind"]}</th><th>{t["open"]}</th><th>{t["resolved"]}</th><th>{t["accepted"]}</th></tr>{kind_rows}</table>
<h2>{t["advisories"]}</h2>
<table><tr><th>{t["advisory"]}</th><th>CVE</th><th>CVSS</th><th>{t["affected"]}</th><th>{t["possibly"]}</th><th>{t["cities"]}</th></tr>{adv_rows}</table>
<h2>{t["coverage"]}</h2>
<p>{t["sensors"]}: {cov["total"]} · {t["reporting"]} {cov["reporting"]} · {t["silent"]} {cov["silent"]}</p>
<p>{t["required"]}: {cov["required"]} · {t["state_connected"]} {cov["required_connected"]}{ratio}</p>
{_bars([(t["state_" + k.replace("-", "_")], v) for k, v in cov["by_state"].items()], color="#4f81bd")}
{city_table}
<h2>{t["techniques"]}</h2>{_bars([(k, v) for k, v in data["alerts"]["by_technique"]], color="#c0504d")}
</body></html>"""


def render_pdf(page: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=page).write_pdf()
