"""Modbus/TCP: MBAP framing over the reassembled stream, every public function code,
request/response pairing by (transaction id, unit id) within a connection.

Fields (under ``modbus.``; all ints unless noted):

| field | meaning |
| --- | --- |
| ``transaction_id``, ``unit_id`` | MBAP header |
| ``function_code`` | function code without the exception bit (0x80) |
| ``function`` | name, snake_case (``read_holding_registers``; ``user_defined_65``; ``unknown_42``) |
| ``exception_code``, ``exception`` | on exception responses: code and name (``illegal_data_address``) |
| ``address``, ``quantity`` | first coil/register and count (FC 1-6, 15, 16, 22) |
| ``values`` | list: register or coil values; for reads from the response, for writes from the request; ``values[i]`` is at ``address + i`` |
| ``read_address``, ``read_quantity``, ``write_address``, ``write_quantity`` | FC 23 |
| ``and_mask``, ``or_mask`` | FC 22 |
| ``subfunction``, ``subfunction_name`` | FC 8 diagnostics |
| ``diagnostic_data`` | FC 8 data field (int when 2 bytes) |
| ``exception_status`` | FC 7 response |
| ``event_count``, ``message_count``, ``status`` | FC 11 / 12 responses |
| ``file_records`` | FC 20/21: list of {file, record, length} |
| ``fifo_address`` | FC 24 |
| ``mei_type``, ``read_device_id_code``, ``object_id``, ``conformity_level``, ``objects`` | FC 43 (MEI 13/14); ``objects`` maps object names to strings |
| ``server_id`` | FC 17 response: the device-specific server id and run indicator, hex |
| ``data`` | hex of a PDU body icsmon does not decode (user/unknown functions) |
| ``truncated`` | bool: more values than ``limits.max_items`` were present |

Device identity: FC 43/14 objects fill ``ics.device.vendor`` (VendorName), ``product``
(ProductName, else ProductCode), ``model`` (ModelName), ``firmware`` (MajorMinorRevision),
``product_code``; FC 17 gives ``ics.device.description`` (the longest readable text of its device-specific id).
"""

from __future__ import annotations

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
