"""The organisation registry file (YAML): province -> city -> enterprise -> site -> sensor.

``icsmon org import FILE`` reads it with :func:`load_org_file`; every problem is reported as
one :class:`OrgFileError` naming the file and the place in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class OrgFileError(ValueError):
    """A registry file that cannot be used; the message names the file and the entry."""


@dataclass(slots=True)
class Site:
    id: str
    name: str
    enterprise_id: str
    criticality: int
    sensors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Enterprise:
    id: str
    name: str
    name_zh: str
    city_id: str
    industry: str
    criticality: int
    sites: list[Site] = field(default_factory=list)
    grade: int | None = None  # classification grade 1-3 (grade 3 must be monitored)
    key_connected: bool = False  # on the province's list of key connected enterprises


@dataclass(slots=True)
class City:
    id: str
    name: str
    name_zh: str
    enterprises: list[Enterprise] = field(default_factory=list)


@dataclass(slots=True)
class Org:
    province_id: str
    province_name: str
    province_name_zh: str
    cities: list[City] = field(default_factory=list)


def _text(entry: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if value is None:
        raise OrgFileError(f"{where}: missing '{key}'")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise OrgFileError(f"{where}: '{key}' must be text")
    return str(value)


def _ident(entry: dict[str, Any], where: str, seen: set[str]) -> str:
    value = _text(entry, "id", where)
    if not ID_RE.match(value):
        raise OrgFileError(f"{where}: id {value!r} must be letters, digits, '_', '.', ':' or '-'")
    if value in seen:
        raise OrgFileError(f"{where}: duplicate id {value!r}")
    seen.add(value)
    return value


def _grade(entry: dict[str, Any], where: str) -> int | None:
    value = entry.get("grade")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3:
        raise OrgFileError(f"{where}: grade must be 1, 2 or 3, got {value!r}")
    return value


def _flag(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise OrgFileError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _criticality(entry: dict[str, Any], where: str, default: int | None) -> int:
    value = entry.get("criticality", default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
        raise OrgFileError(f"{where}: criticality must be an integer from 1 to 5, got {value!r}")
    return value


def _entries(parent: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = parent.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise OrgFileError(f"{where}: '{key}' must be a list of mappings")
    return value


def parse_org(data: Any, source: str = "<registry>") -> Org:
    """Validate a registry already read from YAML/JSON; errors name ``source``."""
    if not isinstance(data, dict):
        raise OrgFileError(f"{source}: expected a mapping with 'province' and 'cities'")
    province = data.get("province")
    if not isinstance(province, dict):
        raise OrgFileError(f"{source}: 'province' must be a mapping with id and name")
    org = Org(
        province_id=_text(province, "id", f"{source}: province"),
        province_name=_text(province, "name", f"{source}: province"),
        province_name_zh=_text(province, "name_zh", f"{source}: province", default=""),
    )
    city_ids: set[str] = set()
    ent_ids: set[str] = set()
    site_ids: set[str] = set()
    sensor_ids: set[str] = set()
    for ci, c in enumerate(_entries(data, "cities", source)):
        cw = f"{source}: cities[{ci}]"
        city = City(
            id=_ident(c, cw, city_ids),
            name=_text(c, "name", cw),
            name_zh=_text(c, "name_zh", cw, default=""),
        )
        for ei, e in enumerate(_entries(c, "enterprises", cw)):
            ew = f"{cw}.enterprises[{ei}]"
            ent = Enterprise(
                id=_ident(e, ew, ent_ids),
                name=_text(e, "name", ew),
                name_zh=_text(e, "name_zh", ew, default=""),
                city_id=city.id,
                industry=_text(e, "industry", ew),
                criticality=_criticality(e, ew, None),
                grade=_grade(e, ew),
                key_connected=_flag(e, "key_connected", ew),
            )
            for si, s in enumerate(_entries(e, "sites", ew)):
                sw = f"{ew}.sites[{si}]"
                site = Site(
                    id=_ident(s, sw, site_ids),
                    name=_text(s, "name", sw, default=""),
                    enterprise_id=ent.id,
                    criticality=_criticality(s, sw, ent.criticality),
                )
                sensors = s.get("sensors") or []
                if not isinstance(sensors, list):
                    raise OrgFileError(f"{sw}: 'sensors' must be a list of sensor names")
                for name in sensors:
                    if not isinstance(name, str) or not ID_RE.match(name):
                        raise OrgFileError(f"{sw}: bad sensor name {name!r}")
                    if name in sensor_ids:
                        raise OrgFileError(f"{sw}: sensor {name!r} is already used by another site")
                    sensor_ids.add(name)
                    site.sensors.append(name)
                ent.sites.append(site)
            city.enterprises.append(ent)
        org.cities.append(city)
    if not org.cities:
        raise OrgFileError(f"{source}: no cities")
    return org


def load_org_file(path: str | Path) -> Org:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OrgFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise OrgFileError(f"{path}: not UTF-8 text: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OrgFileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_org(data, str(path))
