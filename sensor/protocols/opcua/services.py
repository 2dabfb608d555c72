"""OPC UA services (Part 4): the request and response headers, and the bodies of the
services that matter for monitoring (sessions, endpoints, reads, writes, calls, browsing,
subscriptions, node management), decoded from a reassembled message into flat fields."""

from __future__ import annotations

from collections.abc import Callable

from sensor.protocols.certificates import fields as certificate_fields
from sensor.protocols.opcua.encoding import DecodeError, Reader
from sensor.protocols.opcua.identity import server_identity
from sensor.protocols.opcua.tables import (
    APPLICATION_TYPES,
    ATTRIBUTES,
    IDENTITY_TOKENS,
    REQUEST_IDS,
    RESPONSE_IDS,
    SECURITY_MODES,
    SERVICE_FAULT_ID,
    USER_TOKEN_TYPES,
    status_name,
)


def _request_header(r: Reader, f: dict) -> None:
    r.node_id()  # authentication token: a session secret, deliberately not reported
    r.need(8)  # timestamp
    f["opcua.request_handle"] = r.u32()
    r.need(4)  # return diagnostics
    r.skip_raw()  # audit entry id
    r.need(4)  # timeout hint
    r.extension_object()


def _response_header(r: Reader, f: dict) -> None:
    r.need(8)
    f["opcua.request_handle"] = r.u32()
    code = r.u32()
    f["opcua.status_code"] = code
    f["opcua.status"] = status_name(code)
    r.diagnostic_info()
    r.strings()
    r.extension_object()


def _append_unique(f: dict, key: str, value: object) -> None:
    if value is None:
        return
    lst = f.setdefault(key, [])
    if value not in lst:
        lst.append(value)


def _application_description(r: Reader) -> dict:
    app = {
        "application_uri": r.string(),
        "product_uri": r.string(),
        "application_name": r.localized_text(),
    }
    atype = r.u32()
    app["application_type"] = APPLICATION_TYPES.get(atype, str(atype))
    r.skip_raw()  # gateway server uri
    r.skip_raw()  # discovery profile uri
    app["discovery_urls"] = r.strings()
    return app


def _endpoint_descriptions(r: Reader, f: dict) -> None:
    n = r.count()
    f["opcua.endpoint_count"] = n
    for _ in range(n):
        _append_unique(f, "opcua.endpoint_urls", r.string())
        server_identity(f, _application_description(r))
        cert = r.raw()
        if cert and "opcua.server_certificate.sha1" not in f:
            f.update(certificate_fields(cert, "opcua.server_certificate"))
        mode = r.u32()
        _append_unique(f, "opcua.security_modes", SECURITY_MODES.get(mode, str(mode)))
        _append_unique(f, "opcua.security_policy_uris", r.string())
        for _t in range(r.count()):
            r.skip_raw()  # policy id
            ttype = r.u32()
            _append_unique(f, "opcua.user_token_types", USER_TOKEN_TYPES.get(ttype, str(ttype)))
            r.skip_raw()
            r.skip_raw()
            r.skip_raw()
        r.skip_raw()  # transport profile uri
        r.u8()  # security level


def _read_value_id(r: Reader) -> tuple[str, int]:
    node = r.node_id()
    attr = r.u32()
    r.skip_raw()  # index range
    r.qualified_name()  # data encoding
    return node, attr


def _set_nodes_attrs(f: dict, items: list[tuple[str, int]]) -> None:
    f["opcua.node_ids"] = [n for n, _a in items]
    f["opcua.attribute_ids"] = [a for _n, a in items]
    f["opcua.attributes"] = [ATTRIBUTES.get(a, str(a)) for _n, a in items]


def _status_codes(r: Reader, f: dict) -> None:
    f["opcua.result_codes"] = r.array(r.u32)


def _req_get_endpoints(r: Reader, f: dict) -> None:
    f["opcua.endpoint_url"] = r.string()
    r.strings()
    r.strings()


def _resp_get_endpoints(r: Reader, f: dict) -> None:
    _endpoint_descriptions(r, f)


def _req_find_servers(r: Reader, f: dict) -> None:
    f["opcua.endpoint_url"] = r.string()
    r.strings()
    r.strings()


def _resp_find_servers(r: Reader, f: dict) -> None:
    n = r.count()
    f["opcua.server_count"] = n
    for _ in range(n):
        app = _application_description(r)
        _append_unique(f, "opcua.server_application_uris", app["application_uri"])
        _append_unique(f, "opcua.server_names", app["application_name"])
        for url in app["discovery_urls"]:
            _append_unique(f, "opcua.discovery_urls", url)


def _resp_find_servers_on_network(r: Reader, f: dict) -> None:
    r.need(8)
    n = r.count()
    f["opcua.server_count"] = n
    for _ in range(n):
        r.u32()
        _append_unique(f, "opcua.server_names", r.string())
        _append_unique(f, "opcua.discovery_urls", r.string())
        r.strings()


def _req_open_secure_channel(r: Reader, f: dict) -> None:
    r.u32()  # client protocol version
    rtype = r.u32()
    f["opcua.request_type"] = {0: "issue", 1: "renew"}.get(rtype, str(rtype))
    mode = r.u32()
    f["opcua.security_mode"] = SECURITY_MODES.get(mode, str(mode))
    r.skip_raw()  # client nonce
    f["opcua.requested_lifetime"] = r.u32()


def _resp_open_secure_channel(r: Reader, f: dict) -> None:
    r.u32()  # server protocol version
    f["opcua.issued_channel_id"] = r.u32()
    f["opcua.issued_token_id"] = r.u32()
    r.need(8)
    f["opcua.revised_lifetime"] = r.u32()
    r.skip_raw()  # server nonce


def _req_create_session(r: Reader, f: dict) -> None:
    app = _application_description(r)
    for key in ("application_uri", "product_uri", "application_name", "application_type"):
        if app.get(key) is not None:
            f[f"opcua.client.{key}"] = app[key]
    f["opcua.server_uri"] = r.string()
    f["opcua.endpoint_url"] = r.string()
    f["opcua.session_name"] = r.string()
    r.skip_raw()  # client nonce
    r.skip_raw()  # client certificate
    r.f64()
    r.u32()


def _resp_create_session(r: Reader, f: dict) -> None:
    f["opcua.session_id"] = r.node_id()
    r.node_id()  # authentication token: a session secret, not reported
    r.f64()
    r.skip_raw()  # server nonce
    f.update(certificate_fields(r.raw(), "opcua.server_certificate"))
    _endpoint_descriptions(r, f)


def _req_activate_session(r: Reader, f: dict) -> None:
    r.skip_raw()  # signature algorithm
    r.skip_raw()  # signature
    for _ in range(r.count()):  # software certificates
        r.skip_raw()
        r.skip_raw()
    r.strings()  # locale ids
    num, text, body = r.extension_object()
    f["opcua.identity_token"] = IDENTITY_TOKENS.get(num or -1, text)
    if body is not None:
        tr = Reader(body, r.max_items)
        f["opcua.identity_policy_id"] = tr.string()
        if num == 324:
            f["opcua.user_name"] = tr.string()
            tr.skip_raw()  # the password: never decoded, never reported
            algorithm = tr.string()
            f["opcua.password_encrypted"] = bool(algorithm)


def _resp_activate_session(r: Reader, f: dict) -> None:
    r.skip_raw()  # server nonce
    _status_codes(r, f)


def _req_close_session(r: Reader, f: dict) -> None:
    f["opcua.delete_subscriptions"] = r.boolean()


def _browse_results(r: Reader, f: dict) -> None:
    codes = []
    refs = 0
    names: list[str] = []
    for _ in range(r.count()):
        codes.append(r.u32())
        r.skip_raw()  # continuation point
        n = r.count()
        refs += n
        for _i in range(n):
            r.node_id()
            r.boolean()
            r.expanded_node_id()
            name = r.qualified_name()
            if len(names) < r.max_items:
                names.append(name)
            else:
                r.truncated = True
            r.localized_text()
            r.u32()
            r.expanded_node_id()
    f["opcua.result_codes"] = codes[: r.max_items]
    f["opcua.reference_count"] = refs
    f["opcua.browse_names"] = names


def _req_browse(r: Reader, f: dict) -> None:
    r.node_id()
    r.need(12)  # view timestamp and version
    r.u32()  # requested max references per node

    def item() -> str:
        node = r.node_id()
        r.u32()
        r.node_id()
        r.boolean()
        r.need(8)
        return node

    f["opcua.node_ids"] = r.array(item)


def _resp_browse(r: Reader, f: dict) -> None:
    _browse_results(r, f)


def _req_browse_next(r: Reader, f: dict) -> None:
    r.boolean()
    f["opcua.continuation_point_count"] = len(r.array(r.skip_raw))


def _req_translate(r: Reader, f: dict) -> None:
    nodes: list[str] = []
    paths: list[str] = []
    for _ in range(r.count()):
        start = r.node_id()
        parts = [start]
        for _e in range(r.count()):
            r.node_id()
            r.boolean()
            r.boolean()
            parts.append(r.qualified_name())
        if len(nodes) < r.max_items:
            nodes.append(start)
            paths.append("/".join(parts))
        else:
            r.truncated = True
    f["opcua.node_ids"] = nodes
    f["opcua.browse_paths"] = paths


def _resp_translate(r: Reader, f: dict) -> None:
    codes = []
    targets: list[str] = []
    for _ in range(r.count()):
        codes.append(r.u32())
        for _t in range(r.count()):
            target = r.expanded_node_id()
            r.u32()
            if len(targets) < r.max_items:
                targets.append(target)
            else:
                r.truncated = True
    f["opcua.result_codes"] = codes[: r.max_items]
    f["opcua.target_node_ids"] = targets


def _req_register_nodes(r: Reader, f: dict) -> None:
    f["opcua.node_ids"] = r.array(r.node_id)


def _resp_register_nodes(r: Reader, f: dict) -> None:
    f["opcua.registered_node_ids"] = r.array(r.node_id)


def _req_read(r: Reader, f: dict) -> None:
    r.f64()  # max age
    r.u32()  # timestamps to return
    _set_nodes_attrs(f, r.array(lambda: _read_value_id(r)))


def _resp_read(r: Reader, f: dict) -> None:
    f["opcua.values"] = r.array(r.data_value)


def _req_write(r: Reader, f: dict) -> None:
    # lists go into the record first, so a body that breaks half-way keeps what was read
    nodes: list[str] = f.setdefault("opcua.node_ids", [])
    attrs: list[int] = f.setdefault("opcua.attribute_ids", [])
    names: list[str] = f.setdefault("opcua.attributes", [])
    values: list[dict] = f.setdefault("opcua.values", [])
    for i in range(r.count()):
        node = r.node_id()
        attr = r.u32()
        r.skip_raw()
        value = r.data_value()
        if i < r.max_items:
            nodes.append(node)
            attrs.append(attr)
            names.append(ATTRIBUTES.get(attr, str(attr)))
            values.append(value)
        else:
            r.truncated = True


def _resp_write(r: Reader, f: dict) -> None:
    _status_codes(r, f)


def _req_call(r: Reader, f: dict) -> None:
    objects: list[str] = f.setdefault("opcua.object_ids", [])
    methods: list[str] = f.setdefault("opcua.method_ids", [])
    args: list[dict] = f.setdefault("opcua.input_arguments", [])
    for i in range(r.count()):
        obj = r.node_id()
        method = r.node_id()
        if i < r.max_items:
            objects.append(obj)
            methods.append(method)
        else:
            r.truncated = True
        for a in r.array(r.variant):
            if len(args) < r.max_items:
                args.append(a)


def _resp_call(r: Reader, f: dict) -> None:
    codes: list[int] = f.setdefault("opcua.result_codes", [])
    outputs: list[dict] = f.setdefault("opcua.output_arguments", [])
    for i in range(r.count()):
        code = r.u32()
        if i < r.max_items:
            codes.append(code)
        r.array(r.u32)
        r.diagnostic_infos()
        for v in r.array(r.variant):
            if len(outputs) < r.max_items:
                outputs.append(v)


def _req_create_subscription(r: Reader, f: dict) -> None:
    f["opcua.publishing_interval"] = r.f64()
    f["opcua.lifetime_count"] = r.u32()
    f["opcua.max_keep_alive_count"] = r.u32()
    r.u32()
    f["opcua.publishing_enabled"] = r.boolean()
    f["opcua.priority"] = r.u8()


def _resp_create_subscription(r: Reader, f: dict) -> None:
    f["opcua.subscription_id"] = r.u32()
    f["opcua.revised_publishing_interval"] = r.f64()
    r.u32()
    r.u32()


def _req_create_monitored_items(r: Reader, f: dict) -> None:
    f["opcua.subscription_id"] = r.u32()
    r.u32()
    items: list[tuple[str, int]] = []
    modes: list[int] = []

    def item() -> None:
        items.append(_read_value_id(r))
        modes.append(r.u32())
        r.u32()  # client handle
        r.f64()  # sampling interval
        r.extension_object()  # filter
        r.u32()
        r.boolean()

    for _ in range(r.count()):
        item()
    _set_nodes_attrs(f, items[: r.max_items])
    if modes:
        f["opcua.monitoring_mode"] = {0: "disabled", 1: "sampling", 2: "reporting"}.get(
            modes[0], str(modes[0])
        )


def _resp_create_monitored_items(r: Reader, f: dict) -> None:
    codes = []
    ids = []
    for _ in range(r.count()):
        codes.append(r.u32())
        ids.append(r.u32())
        r.f64()
        r.u32()
        r.extension_object()
    f["opcua.result_codes"] = codes[: r.max_items]
    f["opcua.monitored_item_ids"] = ids[: r.max_items]


def _req_publish(r: Reader, f: dict) -> None:
    f["opcua.acknowledgement_count"] = len(r.array(lambda: r.need(8)))


def _resp_publish(r: Reader, f: dict) -> None:
    f["opcua.subscription_id"] = r.u32()
    r.array(r.u32)
    f["opcua.more_notifications"] = r.boolean()
    f["opcua.notification_sequence_number"] = r.u32()
    r.need(8)
    count = 0
    values: list[dict] = []
    for _ in range(r.count()):
        num, _text, body = r.extension_object()
        if body is None:
            continue
        nr = Reader(body, r.max_items)
        if num == 811:  # DataChangeNotification
            for _i in range(nr.count()):
                nr.u32()
                v = nr.data_value()
                count += 1
                if len(values) < r.max_items:
                    values.append(v)
        elif num == 916:  # EventNotificationList
            for _i in range(nr.count()):
                nr.u32()
                nr.array(nr.variant)
                count += 1
        elif num == 820:  # StatusChangeNotification
            count += 1
    f["opcua.notification_count"] = count
    if values:
        f["opcua.values"] = values
    _status_codes(r, f)


def _req_delete_subscriptions(r: Reader, f: dict) -> None:
    f["opcua.subscription_ids"] = r.array(r.u32)


def _req_add_nodes(r: Reader, f: dict) -> None:
    parents: list[str] = []
    nodes: list[str] = []
    names: list[str] = []
    for _ in range(r.count()):
        parents.append(r.expanded_node_id())
        r.node_id()
        nodes.append(r.expanded_node_id())
        names.append(r.qualified_name())
        r.u32()
        r.extension_object()
        r.expanded_node_id()
    f["opcua.parent_node_ids"] = parents[: r.max_items]
    f["opcua.node_ids"] = nodes[: r.max_items]
    f["opcua.browse_names"] = names[: r.max_items]


def _resp_add_nodes(r: Reader, f: dict) -> None:
    codes = []
    for _ in range(r.count()):
        codes.append(r.u32())
        r.node_id()
    f["opcua.result_codes"] = codes[: r.max_items]


def _req_delete_nodes(r: Reader, f: dict) -> None:
    def item() -> str:
        node = r.node_id()
        r.boolean()
        return node

    f["opcua.node_ids"] = r.array(item)


_REQUEST_BODY: dict[str, Callable[[Reader, dict], None]] = {
    "GetEndpoints": _req_get_endpoints,
    "FindServers": _req_find_servers,
    "OpenSecureChannel": _req_open_secure_channel,
    "CreateSession": _req_create_session,
    "ActivateSession": _req_activate_session,
    "CloseSession": _req_close_session,
    "Browse": _req_browse,
    "BrowseNext": _req_browse_next,
    "TranslateBrowsePathsToNodeIds": _req_translate,
    "RegisterNodes": _req_register_nodes,
    "UnregisterNodes": _req_register_nodes,
    "Read": _req_read,
    "Write": _req_write,
    "Call": _req_call,
    "CreateSubscription": _req_create_subscription,
    "CreateMonitoredItems": _req_create_monitored_items,
    "Publish": _req_publish,
    "DeleteSubscriptions": _req_delete_subscriptions,
    "AddNodes": _req_add_nodes,
    "DeleteNodes": _req_delete_nodes,
}
_RESPONSE_BODY: dict[str, Callable[[Reader, dict], None]] = {
    "GetEndpoints": _resp_get_endpoints,
    "FindServers": _resp_find_servers,
    "FindServersOnNetwork": _resp_find_servers_on_network,
    "OpenSecureChannel": _resp_open_secure_channel,
    "CreateSession": _resp_create_session,
    "ActivateSession": _resp_activate_session,
    "Browse": _resp_browse,
    "BrowseNext": _resp_browse,
    "TranslateBrowsePathsToNodeIds": _resp_translate,
    "RegisterNodes": _resp_register_nodes,
    "Read": _resp_read,
    "Write": _resp_write,
    "Call": _resp_call,
    "CreateSubscription": _resp_create_subscription,
    "CreateMonitoredItems": _resp_create_monitored_items,
    "Publish": _resp_publish,
    "DeleteSubscriptions": _resp_write,
    "DeleteMonitoredItems": _resp_write,
    "SetMonitoringMode": _resp_write,
    "SetPublishingMode": _resp_write,
    "AddNodes": _resp_add_nodes,
    "DeleteNodes": _resp_write,
    "AddReferences": _resp_write,
    "DeleteReferences": _resp_write,
    "UnregisterNodes": lambda r, f: None,
}


class Body:
    """A decoded service body: type, direction, header fields and service fields."""

    __slots__ = ("type_id", "type_text", "service", "is_request", "fields", "error", "truncated")

    def __init__(self) -> None:
        self.type_id: int | None = None
        self.type_text = ""
        self.service = "unknown"
        self.is_request: bool | None = None  # None: not a known request or response id
        self.fields: dict = {}
        self.error: str | None = None
        self.truncated = False


def decode_body(body: bytes, max_items: int = 4096) -> Body:
    """Decode one reassembled service body (type NodeId, header, service). Never raises."""
    out = Body()
    r = Reader(body, max_items)
    try:
        out.type_id, out.type_text = r.numeric_node_id()
    except DecodeError as exc:
        out.error = f"service type NodeId: {exc}"
        return out
    tid = out.type_id
    if tid in REQUEST_IDS:
        out.service = REQUEST_IDS[tid]
        out.is_request = True
        decoder = _REQUEST_BODY.get(out.service)
        header: Callable[[Reader, dict], None] = _request_header
    elif tid in RESPONSE_IDS or tid == SERVICE_FAULT_ID:
        out.service = RESPONSE_IDS.get(tid, "ServiceFault")  # type: ignore[arg-type]
        out.is_request = False
        decoder = _RESPONSE_BODY.get(out.service)
        header = _response_header
    else:
        return out
    f = out.fields
    try:
        header(r, f)
        if decoder is not None:
            decoder(r, f)
    except DecodeError as exc:
        out.error = f"{out.service}: {exc}"
    except (ValueError, OverflowError) as exc:  # e.g. an impossible Guid or date
        out.error = f"{out.service}: {exc}"
    out.truncated = r.truncated
    return out
