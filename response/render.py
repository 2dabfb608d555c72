"""Incident reports as structured documents: JSON (the record) and PDF (to send).

The PDF is drawn with ReportLab; Chinese text uses the standard CID font STSong-Light (a
font every PDF reader provides, so nothing is embedded and the file stays small).
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

from response.policy import Policy

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


def report_pdf(doc: dict[str, Any]) -> bytes:
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = "STSong-Light"
    if font not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(font))
    body = ParagraphStyle("body", fontName=font, fontSize=10, leading=14, wordWrap="CJK")
    head = ParagraphStyle("head", parent=body, fontSize=16, leading=22, spaceAfter=6)
    small = ParagraphStyle(
        "small", parent=body, fontSize=8, leading=11, textColor=colors.HexColor("#555555")
    )
    inc = doc["incident"]

    def p(text: Any, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(
            escape(str(text if text not in (None, "") else "—")).replace("\n", "<br/>"), style
        )

    story: list[Any] = [
        p(f"{doc['kind_zh']} {doc['kind_en']} | 事件 {inc['number']}", head),
        p(f"{inc['title']}"),
        p(
            f"等级 Level: {inc['level_zh']} / {inc['level_en']} (规则 rule {inc['rule']}"
            f"{'' if inc['rule_verified'] else ', 未核实 unverified'}) | 策略 policy {inc['policy']}",
            small,
        ),
        p(
            f"发现时间 Found: {inc['discovered_at']} | 状态 Status: {doc['status']}"
            f"{' ' + doc['submitted_at'] if doc['submitted_at'] else ''}",
            small,
        ),
        Spacer(1, 4 * mm),
    ]
    rows = [[p("项目 Item"), p("内容 Content")]]
    for f in doc["fields"]:
        label = f"{f['zh']}\n{f['en']}" + (" *" if f["required"] else "")
        rows.append([p(label), p(f["value"])])
    table = Table(rows, colWidths=[55 * mm, 115 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story += [table, Spacer(1, 3 * mm)]
    if doc["missing"]:
        story.append(p("尚缺 Still missing: " + ", ".join(doc["missing"]), small))
    story.append(p("* 必填 required for this report | icsmon", small))
    out = io.BytesIO()
    SimpleDocTemplate(
        out,
        pagesize=A4,
        title=f"{doc['kind_en']} {inc['number']}",
        author="icsmon",
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
    ).build(story)
    return out.getvalue()
