"""The fields of OPC UA records (``network.protocol: opcua``): the one declaration the Sigma
field list, the Elasticsearch mapping, the baseline's identity fields and docs/schema.md are
derived from. Lists (``node_ids``, ``values``, ...) are aligned with each other."""

from __future__ import annotations

from sensor.protocols.schema import (
    Field,
    FieldType,
    boolean,
    keyword,
    long,
    obj,
    prefixed,
)

CERTIFICATE = "(sensor/protocols/certificates.py)"


def typed_values(description: str) -> Field:
    return obj(
        description,
        type=keyword("built-in type name: Double, Int32, String, ..."),
        value=Field(
            FieldType.ANY,
            "the value as JSON: numbers, strings, bools, lists of at most 100; ByteStrings "
            "as hex, structures as '<type id> (<n> bytes)'",
        ),
        status_code=long("the value's status code, when not Good"),
    )


OPCUA: dict[str, Field] = {
    # transport and secure channel
    "message_type": keyword("HEL, ACK, ERR, RHE, OPN, MSG, CLO (the request's)"),
    "response_message_type": keyword("ACK or ERR answering a HEL"),
    "chunk_count": long("chunks of the request, when more than one"),
    "response_chunk_count": long("chunks of the answer, when more than one"),
    "chunk_size": long("anomaly: the size of the chunk at fault"),
    "secure_channel_id": long("secure channel (an OPN answer carries the one issued)"),
    "token_id": long("security token (an OPN answer carries the one issued)"),
    "sequence_number": long("sequence header (absent when encrypted)"),
    "response_sequence_number": long("the answer's sequence number"),
    "request_id": long("sequence header request id (pairs requests with answers)"),
    "security_policy_uri": keyword("the channel's policy, from the OPN asymmetric header"),
    "security_policy": keyword("its short name: None, Basic256Sha256, ..."),
    "security_mode": keyword(
        "None, Sign, SignAndEncrypt: from the OPN request when readable; Sign also when a "
        "protected policy's bodies visibly parse in clear"
    ),
    "encrypted": boolean("the body could not be read because the channel protects it"),
    "signed": boolean("the channel policy is not None (every chunk carries a signature)"),
    "certificate_present": boolean("the OPN asymmetric header carries a sender certificate"),
    "server_certificate.subject": keyword(f"the server certificate's subject {CERTIFICATE}"),
    "server_certificate.issuer": keyword("its issuer"),
    "server_certificate.not_before": Field(FieldType.DATE, "valid from (UTC)"),
    "server_certificate.not_after": Field(FieldType.DATE, "valid until (UTC)"),
    "server_certificate.self_signed": boolean("issuer is subject and its own key verifies it"),
    "server_certificate.sha1": keyword("SHA-1 thumbprint, hex"),
    "server_certificate.serial_number": keyword("serial number, hex"),
    "server_certificate.key_bits": long("RSA / EC key size"),
    "server_certificate.signature_hash": keyword("sha1, sha256, ..."),
    "server_certificate.parse_error": keyword("why the certificate could not be read"),
    "aborted": boolean("the message was aborted by its sender (A chunk)"),
    "skipped_bytes": long("anomaly: bytes skipped to the next UA TCP header"),
    "direction": keyword("anomaly: request or response"),
    # HEL / ACK / ERR / RHE
    "protocol_version": long("HEL / ACK protocol version"),
    "receive_buffer_size": long("HEL: the client's receive buffer size"),
    "send_buffer_size": long("HEL: the client's send buffer size"),
    "max_message_size": long("HEL: the client's MaxMessageSize"),
    "max_chunk_count": long("HEL: the client's MaxChunkCount"),
    "revised_receive_buffer_size": long("ACK: the server's receive buffer size"),
    "revised_send_buffer_size": long("ACK: the server's send buffer size"),
    "revised_max_message_size": long("ACK: the server's MaxMessageSize"),
    "revised_max_chunk_count": long("ACK: the server's MaxChunkCount"),
    "endpoint_url": keyword("HEL, RHE, GetEndpoints, CreateSession, FindServers"),
    "error_reason": keyword("ERR or abort reason"),
    "server_uri": keyword("RHE, CreateSession"),
    # services
    "service": keyword(
        "service name without Request/Response (Read); unknown when not a Part 4 service"
    ),
    "service_type_id": long("numeric encoding NodeId of the request body"),
    "response_type_id": long("numeric encoding NodeId of the response body"),
    "service_node_id": keyword("the encoding NodeId when it is not numeric in namespace 0"),
    "request_handle": long("RequestHeader.RequestHandle (the answer's when no request was seen)"),
    "response_request_handle": long("the answer's handle, when it differs from the request's"),
    "status_code": long("ServiceResult, or the ERR / abort error"),
    "status": keyword("its symbolic name: Good, BadUserAccessDenied, ..."),
    "service_fault": boolean("the answer was a ServiceFault"),
    "truncated": boolean("lists were cut at limits.max_items"),
    "decode_error": keyword("why the body decoding stopped early (the fields before it stay)"),
    "request_type": keyword("OPN: issue or renew"),
    "requested_lifetime": long("OPN: requested token lifetime, ms"),
    "revised_lifetime": long("OPN answer: token lifetime, ms"),
    # sessions and endpoints
    "application_uri": keyword("the server's ApplicationDescription: application URI"),
    "product_uri": keyword("the server's product URI"),
    "application_name": keyword("the server's application name"),
    "application_type": keyword("server, client, client_and_server, discovery_server"),
    "client.application_uri": keyword("CreateSession ClientDescription: application URI"),
    "client.product_uri": keyword("ClientDescription: product URI"),
    "client.application_name": keyword("ClientDescription: application name"),
    "client.application_type": keyword("ClientDescription: application type"),
    "session_name": keyword("CreateSession: session name"),
    "session_id": keyword("CreateSession answer: session id (a NodeId string)"),
    "endpoint_count": long("GetEndpoints / CreateSession answers: endpoints offered"),
    "endpoint_urls": keyword("the endpoint URLs offered (unique, in order)"),
    "security_policy_uris": keyword("the security policies offered"),
    "security_modes": keyword("the security modes offered"),
    "user_token_types": keyword("the user token types offered: anonymous, username, ..."),
    "server_count": long("FindServers answers: servers listed"),
    "server_application_uris": keyword("FindServers: their application URIs"),
    "discovery_urls": keyword("FindServers: their discovery URLs"),
    "server_names": keyword("FindServers: their names"),
    "identity_token": keyword(
        "ActivateSession: anonymous, username, x509, issued or the token type id"
    ),
    "identity_policy_id": keyword("ActivateSession: the token's policy id"),
    "user_name": keyword("ActivateSession: user name (the password is never decoded)"),
    "password_encrypted": boolean(
        "the UserName token names an encryption algorithm (false: the password is in clear)"
    ),
    "delete_subscriptions": boolean("CloseSession: delete the session's subscriptions"),
    # reading, writing, calling, browsing
    "node_ids": keyword(
        "NodeIds (ns=2;i=5, i=2258, ns=1;s=Name): Read, Write, Browse, RegisterNodes, "
        "CreateMonitoredItems, TranslateBrowsePaths (starting nodes), AddNodes, DeleteNodes"
    ),
    "attribute_ids": long("attribute ids, aligned with node_ids"),
    "attributes": keyword("attribute names (Value, ...), aligned with node_ids"),
    "values": typed_values("Read answers, Write requests, Publish data changes"),
    "result_codes": long("per-operation status codes of the answer"),
    "browse_paths": keyword("TranslateBrowsePathsToNodeIds: paths like i=85/0:Objects/2:Pump"),
    "target_node_ids": keyword("TranslateBrowsePathsToNodeIds: the resolved targets"),
    "reference_count": long("Browse / BrowseNext answers: references returned"),
    "browse_names": keyword("Browse / BrowseNext answers: browse names"),
    "continuation_point_count": long("BrowseNext requests, Browse answers: continuation points"),
    "object_ids": keyword("Call: the objects"),
    "method_ids": keyword("Call: the methods"),
    "input_arguments": typed_values("Call: input arguments"),
    "output_arguments": typed_values("Call answer: output arguments"),
    "registered_node_ids": keyword("RegisterNodes answer: the registered ids"),
    "parent_node_ids": keyword("AddNodes: parent nodes"),
    # subscriptions
    "subscription_id": long("CreateSubscription and Publish"),
    "subscription_ids": long("DeleteSubscriptions: the subscriptions"),
    "publishing_interval": Field(FieldType.DOUBLE, "CreateSubscription: requested, ms"),
    "revised_publishing_interval": Field(FieldType.DOUBLE, "CreateSubscription answer, ms"),
    "lifetime_count": long("CreateSubscription: lifetime count"),
    "max_keep_alive_count": long("CreateSubscription: max keep-alive count"),
    "priority": long("CreateSubscription: priority"),
    "publishing_enabled": boolean("CreateSubscription: publishing enabled"),
    "monitored_item_ids": long("CreateMonitoredItems answer: the item ids"),
    "monitoring_mode": keyword("CreateMonitoredItems: disabled, sampling, reporting"),
    "acknowledgement_count": long("Publish: subscription acknowledgements"),
    "notification_sequence_number": long("Publish answer: notification sequence number"),
    "notification_count": long("Publish answer: data changes + events + status changes"),
    "more_notifications": boolean("Publish answer: more notifications wait"),
}

FIELDS: dict[str, Field] = {
    **prefixed("opcua", OPCUA),
    "ics.device.application_uri": keyword("the server's ApplicationDescription application URI"),
    "ics.device.product_uri": keyword("its product URI, or BuildInfo ProductUri"),
    "ics.device.name": keyword("its application name"),
    "ics.device.vendor": keyword("a Read of BuildInfo ManufacturerName (i=2263)"),
    "ics.device.product": keyword("a Read of BuildInfo ProductName (i=2261)"),
    "ics.device.model": keyword("the same ProductName (OPC UA has no separate model name)"),
    "ics.device.firmware": keyword(
        "a Read of BuildInfo SoftwareVersion (i=2264), with BuildNumber (i=2265)"
    ),
}

SERVICES: dict[str, tuple[str, ...]] = {"opcua": ("opcua.",)}

# What a write carries, for the rollups' min/max written (sensor/rollups.py): service -> a
# list field of numbers, or "<list of objects>.<key>"
WRITTEN_VALUES: dict[str, str] = {"opcua": "opcua.values.value"}
