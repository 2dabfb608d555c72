"""OPC UA code tables: the services (``nodeids``) with their ``ics.operation``,
``event.action`` and function names, status code names, attribute ids, built-in types,
security modes, token and application types, the BuildInfo variables."""

from __future__ import annotations

from sensor.protocols.base import kebab
from sensor.protocols.opcua.nodeids import SERVICE_FAULT_ID, SERVICES, STATUS_CODES

SECURITY_MODES = {1: "None", 2: "Sign", 3: "SignAndEncrypt"}
USER_TOKEN_TYPES = {0: "anonymous", 1: "username", 2: "x509", 3: "issued"}
IDENTITY_TOKENS = {321: "anonymous", 324: "username", 327: "x509", 940: "issued"}
APPLICATION_TYPES = {0: "server", 1: "client", 2: "client_and_server", 3: "discovery_server"}
ATTRIBUTES = {
    1: "NodeId",
    2: "NodeClass",
    3: "BrowseName",
    4: "DisplayName",
    5: "Description",
    6: "WriteMask",
    7: "UserWriteMask",
    8: "IsAbstract",
    9: "Symmetric",
    10: "InverseName",
    11: "ContainsNoLoops",
    12: "EventNotifier",
    13: "Value",
    14: "DataType",
    15: "ValueRank",
    16: "ArrayDimensions",
    17: "AccessLevel",
    18: "UserAccessLevel",
    19: "MinimumSamplingInterval",
    20: "Historizing",
    21: "Executable",
    22: "UserExecutable",
    23: "DataTypeDefinition",
    24: "RolePermissions",
    25: "UserRolePermissions",
    26: "AccessRestrictions",
    27: "AccessLevelEx",
}
BUILTIN_TYPES = {
    1: "Boolean",
    2: "SByte",
    3: "Byte",
    4: "Int16",
    5: "UInt16",
    6: "Int32",
    7: "UInt32",
    8: "Int64",
    9: "UInt64",
    10: "Float",
    11: "Double",
    12: "String",
    13: "DateTime",
    14: "Guid",
    15: "ByteString",
    16: "XmlElement",
    17: "NodeId",
    18: "ExpandedNodeId",
    19: "StatusCode",
    20: "QualifiedName",
    21: "LocalizedText",
    22: "ExtensionObject",
    23: "DataValue",
    24: "Variant",
    25: "DiagnosticInfo",
}
# Server.ServerStatus.BuildInfo variables (ns=0) -> ics.device field
# Server.ServerStatus.BuildInfo variables (ns=0) -> ics.device field
BUILD_INFO = {
    2261: "product",
    2262: "product_uri",
    2263: "vendor",
    2264: "firmware",
    2265: "build_number",
}

REQUEST_IDS: dict[int, str] = {req: name for name, (req, _resp) in SERVICES.items()}
RESPONSE_IDS: dict[int, str] = {resp: name for name, (_req, resp) in SERVICES.items()}
ACTION = {name: kebab(name) for name in SERVICES}  # event.action: CreateSession -> create-session
FUNCTION = {name: a.replace("-", "_") for name, a in ACTION.items()}  # ics.function

# service -> ics.operation (event.type follows from it: base.event_type)
OPERATION: dict[str, str] = {}
for _names, _op in (
    (
        (
            "Read",
            "HistoryRead",
            "Browse",
            "BrowseNext",
            "TranslateBrowsePathsToNodeIds",
            "QueryFirst",
            "QueryNext",
            "RegisterNodes",
            "UnregisterNodes",
            "CreateSubscription",
            "ModifySubscription",
            "SetPublishingMode",
            "Publish",
            "Republish",
            "TransferSubscriptions",
            "DeleteSubscriptions",
            "CreateMonitoredItems",
            "ModifyMonitoredItems",
            "SetMonitoringMode",
            "SetTriggering",
            "DeleteMonitoredItems",
        ),
        "read",
    ),
    (("Write", "HistoryUpdate"), "write"),
    (("Call",), "control"),
    (("AddNodes", "AddReferences", "DeleteNodes", "DeleteReferences"), "program"),
    (
        (
            "FindServers",
            "FindServersOnNetwork",
            "GetEndpoints",
            "RegisterServer",
            "RegisterServer2",
        ),
        "diagnostic",
    ),
    (
        (
            "OpenSecureChannel",
            "CloseSecureChannel",
            "CreateSession",
            "ActivateSession",
            "CloseSession",
            "Cancel",
        ),
        "session",
    ),
):
    for _n in _names:
        OPERATION[_n] = _op


def status_name(code: int) -> str:
    """Symbolic name of a StatusCode (info bits ignored); ``0x........`` when unknown."""
    name = STATUS_CODES.get(code) or STATUS_CODES.get(code & 0xFFFF0000)
    return name or f"0x{code:08X}"


def is_bad(code: int) -> bool:
    return code & 0x80000000 != 0


__all__ = ["SERVICE_FAULT_ID", "SERVICES", "STATUS_CODES"]
