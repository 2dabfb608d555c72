"""Who may see what: roles, and scopes resolved to the list of sites a query may touch.

Every API handler turns the caller's token into a :class:`Principal` and every data query
goes through :func:`resolve_scope` or :func:`can_see_site`, so the site filter is applied on
the server side, always. Anything outside the caller's tenancy raises :class:`NotVisible`,
which the API answers exactly like a missing object (404).
"""

from __future__ import annotations

from dataclasses import dataclass

from posture.state import OrgIndex, TokenInfo

SCOPE_KINDS = ("province", "city", "industry", "enterprise", "site")


class NotVisible(LookupError):
    """Unknown, or outside the caller's tenancy: the API cannot tell the two apart."""


@dataclass(slots=True, frozen=True)
class Principal:
    name: str
    role: str
    scope_id: str | None  # city id or enterprise id, None for the province

    @classmethod
    def from_token(cls, info: TokenInfo) -> Principal:
        return cls(name=info.name, role=info.role, scope_id=info.scope_id)

    @property
    def can_workflow(self) -> bool:
        return self.role != "enterprise-viewer"

    @property
    def is_analyst(self) -> bool:
        return self.role in ("province-analyst", "city-analyst")

    @property
    def home_scope(self) -> str:
        if self.role == "province-analyst":
            return "province"
        if self.role == "city-analyst":
            return f"city:{self.scope_id}"
        return f"enterprise:{self.scope_id}"


@dataclass(slots=True, frozen=True)
class Scope:
    kind: str
    id: str | None
    sites: tuple[str, ...] | None  # None: no site restriction (province analyst, province scope)

    @property
    def key(self) -> str:
        return self.kind if self.id is None else f"{self.kind}:{self.id}"


def visible_sites(p: Principal, org: OrgIndex) -> set[str] | None:
    """The sites ``p`` may see; None means all (including alerts from unregistered sites)."""
    if p.role == "province-analyst":
        return None
    if p.role == "city-analyst":
        return set(org.sites_of_city(p.scope_id or ""))
    return set(org.sites_of_enterprise(p.scope_id or ""))


def can_see_site(p: Principal, org: OrgIndex, site: str | None) -> bool:
    allowed = visible_sites(p, org)
    if allowed is None:
        return True
    return site is not None and site in allowed


def resolve_scope(p: Principal, org: OrgIndex, scope: str | None) -> Scope:
    """``province`` | ``city:ID`` | ``industry:NAME`` | ``enterprise:ID`` | ``site:ID`` (default:
    the caller's own) -> the sites it covers, cut down to what ``p`` may see."""
    scope = scope or p.home_scope
    kind, _, ident = scope.partition(":")
    if kind not in SCOPE_KINDS or (kind == "province") != (ident == ""):
        raise NotVisible(scope)
    allowed = visible_sites(p, org)
    if p.role.startswith("enterprise-") and kind not in ("enterprise", "site"):
        # An enterprise sees its own sites, never a city or industry view (even one made
        # only of its own sites: the scope itself would tell it about the others).
        raise NotVisible(scope)
    if kind == "province":
        if allowed is not None:
            raise NotVisible(scope)
        return Scope("province", None, None)
    if kind == "city":
        if ident not in org.cities:
            raise NotVisible(scope)
        sites = org.sites_of_city(ident)
    elif kind == "enterprise":
        if ident not in org.enterprises:
            raise NotVisible(scope)
        sites = org.sites_of_enterprise(ident)
    elif kind == "site":
        if ident not in org.sites:
            raise NotVisible(scope)
        sites = [ident]
    else:
        sites = org.sites_of_industry(ident)
        if not sites:
            raise NotVisible(scope)
    if allowed is not None:
        # A scope must lie wholly inside the caller's tenancy, except industries, which a city
        # analyst may view within their own city.
        if kind != "industry" and not set(sites) <= allowed:
            raise NotVisible(scope)
        sites = [s for s in sites if s in allowed]
        if not sites:
            raise NotVisible(scope)
    return Scope(kind, ident, tuple(sites))
