"""Incident reports as structured documents: JSON (the record) and PDF (to send).

The PDF is drawn from an HTML page by WeasyPrint (as the assessment reports are), with the
CJK font fontconfig finds (Debian's ``fonts-noto-cjk``), embedded so any reader shows it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from response.policy import Policy

FONT = "'Noto Sans CJK SC', 'Noto Sans CJK', 'Noto Sans SC', sans-serif"
KIND_NAMES = {
    "first": ("First report", "首报"),
    "escalation": ("Escalation report", "上报"),
    "follow-up": ("Follow-up report", "续报"),
    "final": ("Final report", "总结报告"),
}


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def report_document(
    report: dict[str, Any], incident: dict[str, Any], policy: Policy
) -> dict[str, Any]:
    """The report as a structured document: every policy field with its labels and value."""
    required = set(policy.required_fields(report["kind"]))
    en, zh = KIND_NAMES[report["kind"]]
    return {
        "document": "icsmon.incident-report",
        "version": 1,
        "kind": report["kind"],
        "kind_en": en,
        "kind_zh": zh,
        "seq": report["seq"],
        "status": "submitted" if report["submitted_at"] else "draft",
        "submitted_at": _when(report["submitted_at"]),
        "submitted_by": report["submitted_by"],
        "created_at": _when(report["created_at"]),
        "created_by": report["created_by"],
        "incident": {
            "id": incident["id"],
            "number": incident["number"],
            "title": incident["title"],
            "state": incident["state"],
            "discovered_at": _when(incident["discovered_at"]),
            "level": incident["grade"].get("level"),
            "level_zh": incident["grade"].get("zh"),
            "level_en": incident["grade"].get("en"),
            "rule": incident["grade"].get("rule"),
            "rule_verified": incident["grade"].get("verified"),
            "policy": policy.name,
        },
        "fields": [
            {
                "id": f.id,
                "en": f.en,
                "zh": f.zh,
                "required": f.id in required,
                "value": report["fields"].get(f.id) or None,
            }
            for f in policy.fields
        ],
        "missing": report["missing"],
    }


def report_html(doc: dict[str, Any]) -> str:
    """The report as one HTML page (what the PDF is drawn from)."""
    from html import escape

    def e(value: Any) -> str:
        text = "" if value in (None, "") else str(value)
        return escape(text).replace("\n", "<br>") or "—"

    inc = doc["incident"]
    rows = "".join(
        f"<tr><th>{e(f['zh'])}<br><span class=en>{e(f['en'])}</span>"
        f"{' *' if f['required'] else ''}</th><td>{e(f['value'])}</td></tr>"
        for f in doc["fields"]
    )
    unverified = "" if inc["rule_verified"] else "，阈值未核实 unverified"
    missing = (
        f"<p class=meta>尚缺 Still missing: {e(', '.join(doc['missing']))}</p>"
        if doc["missing"]
        else ""
    )
    submitted = f" {e(doc['submitted_at'])}" if doc["submitted_at"] else ""
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>{e(doc["kind_en"])} {inc["number"]}</title><style>
@page {{ size: A4; margin: 18mm 20mm; }}
body {{ font-family: {FONT}; font-size: 10pt; color: #222; }}
h1 {{ font-size: 16pt; margin: 0 0 4pt; }} .meta {{ color: #555; font-size: 8.5pt; margin: 2pt 0; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 8pt; }}
th, td {{ border: 0.5pt solid #999; padding: 3pt 5pt; vertical-align: top; text-align: left; }}
th {{ width: 32%; background: #eef2f7; font-weight: normal; }} .en {{ color: #555; font-size: 8.5pt; }}
</style></head><body>
<h1>{e(doc["kind_zh"])} {e(doc["kind_en"])} · 事件 Incident {inc["number"]}</h1>
<p>{e(inc["title"])}</p>
<p class=meta>等级 Level: {e(inc["level_zh"])} / {e(inc["level_en"])}（规则 rule {e(inc["rule"])}{unverified}）
· 策略 policy {e(inc["policy"])}</p>
<p class=meta>发现时间 Found: {e(inc["discovered_at"])} · 状态 Status: {e(doc["status"])}{submitted}</p>
<table><tr><th>项目 Item</th><td>内容 Content</td></tr>{rows}</table>
{missing}<p class=meta>* 必填 required for this report · icsmon</p>
</body></html>"""


def report_pdf(doc: dict[str, Any]) -> bytes:
    """The PDF (WeasyPrint, with the CJK font fontconfig finds: Debian's fonts-noto-cjk)."""
    from weasyprint import HTML

    return HTML(string=report_html(doc)).write_pdf()
