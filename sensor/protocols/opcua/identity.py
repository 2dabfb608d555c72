"""What an OPC UA server says about itself: its ApplicationDescription (GetEndpoints,
CreateSession, FindServers answers) and a Read of its BuildInfo variables become the
``ics.device.*`` fields of its record."""

from __future__ import annotations

from sensor.protocols.opcua.tables import BUILD_INFO


def server_identity(f: dict, app: dict) -> None:
    for key in ("application_uri", "product_uri", "application_name", "application_type"):
        if app.get(key) is not None:
            f.setdefault(f"opcua.{key}", app[key])
    if app.get("application_uri"):
        f.setdefault("ics.device.application_uri", app["application_uri"])
    if app.get("product_uri"):
        f.setdefault("ics.device.product_uri", app["product_uri"])
    if app.get("application_name"):
        f.setdefault("ics.device.name", app["application_name"])


def device_from_read(f: dict) -> None:
    """Read answers for the server's BuildInfo variables give vendor, model and firmware."""
    if f.get("opcua.service") not in (None, "Read") or "opcua.values" not in f:
        return
    nodes = f.get("opcua.node_ids") or []
    attrs = f.get("opcua.attribute_ids") or []
    values = f["opcua.values"]
    found: dict[str, str] = {}
    for i, node in enumerate(nodes):
        if not node.startswith("i=") or i >= len(values) or (i < len(attrs) and attrs[i] != 13):
            continue
        try:
            key = BUILD_INFO.get(int(node[2:]))
        except ValueError:
            continue
        value = values[i].get("value")
        if key and isinstance(value, str) and value:
            found[key] = value
    for key in ("vendor", "product", "product_uri"):
        if key in found:
            f[f"ics.device.{key}"] = found[key]
    if "product" in found:
        f["ics.device.model"] = found["product"]  # OPC UA has no separate model name
    if "firmware" in found:
        build = found.get("build_number")
        f["ics.device.firmware"] = (
            f"{found['firmware']} (build {build})" if build else found["firmware"]
        )
