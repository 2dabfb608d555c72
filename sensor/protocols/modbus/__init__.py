"""Modbus/TCP: MBAP framing over the reassembled stream, every public function code,
request/response pairing by (transaction id, unit id) within a connection.

Fields: ``fields.py`` declares each one with its type (and docs/schema.md lists them): the
MBAP header, the function and its parameters (addresses, quantities, values: of the response
for reads, of the request for writes, ``values[i]`` at ``address + i``), exception codes,
diagnostics, file records, device identification objects. Device identity: FC 43/14 objects
(``ics.device.vendor``, ``product``, ``model``, ``firmware``, ``product_code``) and FC 17
(``ics.device.description``).
"""

from __future__ import annotations

from sensor.protocols.modbus import fields
from sensor.protocols.modbus.anomalies import Anomaly
from sensor.protocols.modbus.parser import (
    DEVICE_OBJECTS,
    DIAGNOSTICS,
    EXCEPTIONS,
    FUNCTIONS,
    HEURISTIC_DEFAULT,
    MAX_LENGTH,
    NAME,
    OPERATION,
    PORTS,
    Parser,
    decode_request,
    decode_response,
    function_name,
    probe,
)

__all__ = [
    "fields",
    "DEVICE_OBJECTS",
    "DIAGNOSTICS",
    "EXCEPTIONS",
    "FUNCTIONS",
    "HEURISTIC_DEFAULT",
    "MAX_LENGTH",
    "NAME",
    "OPERATION",
    "PORTS",
    "Anomaly",
    "Parser",
    "decode_request",
    "decode_response",
    "function_name",
    "probe",
]
