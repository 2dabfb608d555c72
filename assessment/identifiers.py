"""Product identifiers a CSAF ``product_identification_helper`` may carry, reduced to what
matching compares: a CPE (2.3 formatted string or 2.2 URI) to (vendor, product, version), a
package URL to (type, namespace, name, version).

Package URLs are parsed by ``packageurl-python`` (the reference implementation). A CPE
binding is a split on the colons that are not escaped (NIST IR 7695, sections 6.1 and 6.2):
the part, vendor, product and version fields are the ones matching reads; ``*`` and ``-``
are "any" and "not applicable".
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

from assessment.advisories import norm

_UNESCAPED_COLON = re.compile(r"(?<!\\):")


@lru_cache(maxsize=65536)
def cpe_key(text: str | None) -> tuple[str, str, str] | None:
    """(vendor, product, version) of a CPE, vendor and product normalised as device names
    are (``acme_automation`` = ``Acme Automation``); version "" when any. None when it is
    not a CPE."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("cpe:2.3:"):
        fields = _UNESCAPED_COLON.split(text)[2:]
        if len(fields) < 4:
            return None
        vendor, product, version = (f.replace("\\", "") for f in fields[1:4])
    elif text.startswith("cpe:/"):
        fields = text[5:].split(":")
        if len(fields) < 3:
            return None
        vendor, product, version = (unquote(f) for f in (fields[1:4] + [""])[:3])
    else:
        return None
    vendor, product = norm(vendor.replace("_", " ")), norm(product.replace("_", " "))
    if not vendor or not product or vendor in ("*", "-"):
        return None
    return vendor, product, "" if version in ("*", "-", "") else version


@lru_cache(maxsize=65536)
def purl_key(text: str | None) -> tuple[str, str, str, str] | None:
    """(type, namespace, name, version) of a package URL, lower case; None when not one."""
    if not text:
        return None
    from packageurl import PackageURL

    try:
        p = PackageURL.from_string(text.strip())
    except ValueError:
        return None
    return (p.type.lower(), (p.namespace or "").lower(), p.name.lower(), p.version or "")
