"""Agreement with tshark broken down per function or type, and the tables of
docs/conformance.md made from it (regenerated with ``ICSMON_UPDATE_GOLDEN=1``, checked
otherwise, so the document never drifts from what the tests measure)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

from tests.support import REPO

DOC = REPO / "docs" / "conformance.md"


class Tally:
    """Per category: PDUs tshark reports, how many of them icsmon reports with the same key
    fields, and how many icsmon reports that tshark does not."""

    def __init__(self) -> None:
        self.theirs: Counter[Hashable] = Counter()
        self.agree: Counter[Hashable] = Counter()
        self.only_ours: Counter[Hashable] = Counter()

    def add(self, ours: Counter, theirs: Counter, category: Callable[[Hashable], Hashable]) -> None:
        for key, n in theirs.items():
            self.theirs[category(key)] += n
        for key, n in (ours & theirs).items():
            self.agree[category(key)] += n
        for key, n in (ours - theirs).items():
            self.only_ours[category(key)] += n

    def rows(self) -> list[tuple[Hashable, int, int, int]]:
        keys = set(self.theirs) | set(self.only_ours)
        return [
            (k, self.theirs[k], self.agree[k], self.only_ours[k])
            for k in sorted(keys, key=lambda k: tuple(str(x).zfill(6) for x in _tuple(k)))
        ]

    def totals(self) -> tuple[int, int, int]:
        return (
            sum(self.theirs.values()),
            sum(self.agree.values()),
            sum(self.only_ours.values()),
        )


def _tuple(key: Hashable) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def table(header: Iterable[str], tally: Tally, label: Callable[[Hashable], tuple[str, ...]]) -> str:
    """A markdown table: the label columns, tshark's count, agreeing, icsmon only."""
    cols = [*header, "tshark", "agree", "icsmon only"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) - 3) + " ---: |" * 3]
    for key, theirs, agree, only in tally.rows():
        lines.append("| " + " | ".join([*label(key), str(theirs), str(agree), str(only)]) + " |")
    theirs, agree, only = tally.totals()
    blank = [""] * (len(cols) - 4)
    lines.append(
        "| " + " | ".join(["**all**", *blank, f"**{theirs}**", f"**{agree}**", str(only)]) + " |"
    )
    return "\n".join(lines)


def check_section(name: str, text: str, update: bool, doc: Path = DOC) -> None:
    """The part of ``doc`` between ``<!-- name -->`` and ``<!-- /name -->`` is ``text``."""
    current = doc.read_text()
    pattern = re.compile(rf"(<!-- {name} -->\n)(.*?)(<!-- /{name} -->)", re.S)
    text += "\n"
    found = pattern.search(current)
    assert found, f"{doc} has no <!-- {name} --> section"
    if update:
        doc.write_text(current[: found.start(2)] + text + current[found.end(2) :])
        return
    assert found.group(2) == text, (
        f"{doc}, section {name}, is behind what the test measures: rerun with"
        " ICSMON_UPDATE_GOLDEN=1 and review the change"
    )
