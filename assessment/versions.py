"""Version ranges of advisories, and firmware versions of assets, compared exactly.

CSAF 2.0 names an affected range either in the ``vers:`` notation of the Package URL
project (``vers:generic/>=2.0.0|<2.4.2``) or as a free "version-like string" (``<=2.4.1``).
The ``vers:`` text is parsed and checked by ``univers`` (the reference implementation of
vers); the comparison of two versions is ``packaging``'s (numeric parts of any length,
pre-releases before their release, a leading ``V`` ignored), because univers's ``generic``
scheme coerces versions to three-part semver and then misorders four-part firmware versions
(4.2.1.6 fell outside ``>=4.2.1.5|<4.2.2``). Membership follows the vers algorithm:
``*`` matches everything; an ``=`` constraint equal to the version matches, a ``!=`` equal
to it excludes; the other constraints, sorted by version, form intervals (an opening
``<``/``<=``, ``>``/``>=`` followed by ``<``/``<=``, a closing ``>``/``>=``).

A firmware string as devices report it (``V4.2.1``, ``4.2.1 (build 77)``, ``2.4.1-rc1``)
is reduced to its leading version; one that has none is *unknown* (the asset is then
"possibly affected", never silently unaffected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from packaging.version import InvalidVersion, Version

_LEADING = re.compile(
    r"[vV]?\s*(\d+(?:\.\d+)*(?:[-._]?(?:a|b|rc|alpha|beta|pre|c|post|dev)\.?\d*)?)"
)
_VLS = re.compile(r"\s*(<=|>=|!=|<|>|=|==)?\s*([^\s|,]+)\s*")


@lru_cache(maxsize=65536)
def parse_version(text: str | None) -> Version | None:
    """The leading version of a firmware or advisory version string; None if it has none."""
    if not text:
        return None
    m = _LEADING.match(str(text).strip())
    if m is None:
        return None
    try:
        return Version(m.group(1))
    except InvalidVersion:
        return None


class RangeError(ValueError):
    pass


@dataclass(frozen=True)
class Range:
    """One affected range: constraints as (comparator, version), or everything."""

    text: str
    every: bool
    constraints: tuple[tuple[str, Version], ...]

    def __contains__(self, version: Version) -> bool:
        if self.every:
            return True
        rest: list[tuple[str, Version]] = []
        for cmp, v in self.constraints:
            if cmp == "=" and version == v:
                return True
            if cmp == "!=" and version == v:
                return False
            if cmp not in ("=", "!="):
                rest.append((cmp, v))
        for i, (cmp, v) in enumerate(rest):
            if cmp in ("<", "<=") and (i == 0 or rest[i - 1][0] in ("<", "<=")):
                if _holds(cmp, version, v):
                    return True
            elif cmp in (">", ">="):
                nxt = rest[i + 1] if i + 1 < len(rest) else None
                if nxt is None:
                    if _holds(cmp, version, v):
                        return True
                elif (
                    nxt[0] in ("<", "<=")
                    and _holds(cmp, version, v)
                    and _holds(nxt[0], version, nxt[1])
                ):
                    return True
        # only exclusions: everything else is in
        return not rest and any(c == "!=" for c, _ in self.constraints)


def _holds(cmp: str, version: Version, bound: Version) -> bool:
    if cmp == "<":
        return version < bound
    if cmp == "<=":
        return version <= bound
    if cmp == ">":
        return version > bound
    return version >= bound


@lru_cache(maxsize=65536)
def parse_range(text: str) -> Range:
    """A ``vers:`` range or a CSAF version-like string (``<=2.4.1``, ``>=1.0 <2.0``,
    ``2.4.1``); raises RangeError for what is neither."""
    text = text.strip()
    if text.startswith("vers:"):
        scheme, _, body = text[5:].partition("/")
        if body.strip() == "*" or scheme == "all":
            return Range(text, True, ())
        from univers.version_range import VersionRange

        try:
            parsed = VersionRange.from_string(text)
        except Exception as exc:  # univers raises ValueError and others on bad vers
            raise RangeError(f"not a valid vers range {text!r}: {exc}") from None
        items = [(c.comparator, c.version.string) for c in parsed.constraints]
    else:
        if text in ("*", "all", "all versions"):
            return Range(text, True, ())
        items = []
        for part in re.split(r"\s*(?:\||,|\band\b)\s*|\s+(?=[<>!=])", text):
            if not part:
                continue
            m = _VLS.fullmatch(part)
            if m is None:
                raise RangeError(f"not a version range {text!r}")
            items.append(((m.group(1) or "=").replace("==", "="), m.group(2)))
    out = []
    for cmp, raw in items:
        v = parse_version(raw)
        if v is None:
            raise RangeError(f"not a version {raw!r} in range {text!r}")
        out.append((cmp, v))
    out.sort(key=lambda item: item[1])
    return Range(text, False, tuple(out))
