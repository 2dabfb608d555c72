"""DNP3 (IEEE 1815) over TCP and UDP, port 20000: data-link frames with every checksum
checked, transport reassembly, application fragments with their object headers, requests
paired with responses by application sequence, unsolicited responses.

Link layer (``link``): a frame starts ``05 64`` and its header checksum must be good; every
16-octet block of user data carries its own checksum (a bad one drops the frame's data: an
anomaly). Over TCP frames are cut out of the reassembled stream (split or packed in any way);
over UDP each datagram carries whole frames (the datagram side of ``base.py``). Frames
without user data are link services: reset link states, test link states and request link
status are paired with the secondary frame that answers them; the link acknowledgements of
confirmed user data give no record.

Transport (``parser``): segments are joined per (source, destination) link address pair from
FIR to FIN with consecutive sequence numbers (a repeated segment is a retry and dropped; a
gap, or a continuation without its first segment, is an anomaly), up to 64 KiB per fragment.

Application: one record per transaction. A request is paired with the response of the same
sequence from the addressed outstation (a response of several fragments, FIR ... FIN, is one
record). CONFIRM and the *no ack* functions give a request-only record; unsolicited responses
(and responses whose request was not seen) a response-only one. Unprefixed fields describe the
request (or the response alone); ``dnp3.response.*`` the response of a pair.

Fields (under ``dnp3.``; ints unless noted):

| field | meaning |
| --- | --- |
| ``master``, ``outstation`` | link addresses of the master (requests' source) and outstation |
| ``source``, ``destination`` | link addresses of link-service records and anomalies |
| ``broadcast`` | bool: sent to a broadcast address (0xFFFD-0xFFFF) |
| ``function_code``, ``function`` | application function (``direct_operate``, ``cold_restart``, ``unsolicited_response``...) |
| ``sequence``, ``application.control`` | application sequence and control octet (FIR, FIN, CON, UNS) |
| ``segments`` | transport segments of the request when more than one |
| ``objects`` | list of object headers: ``group``, ``variation``, ``type`` (``g12v1``), ``name``, ``qualifier``, ``start``/``stop`` or ``count``, ``all``, ``points`` (decoded values) |
| ``object_types`` | the ``gXvY`` types of ``objects``, in order, once each |
| ``response.function_code``, ``response.function``, ``response.application.control``, ``response.objects``, ``response.object_types``, ``response.fragments`` | the response of a pair |
| ``iin``, ``iin_flags`` | internal indications of the response (IIN1 << 8 \\| IIN2) and the names of the bits set (``device_restart``, ``need_time``, ``parameter_error``...) |
| ``unsolicited`` | bool: an unsolicited response, or the CONFIRM of one |
| ``points``, ``values``, ``operations`` | the output points commanded (CROB and analog output blocks), the analog output values, the CROB operations (``latch_on``, ``pulse_on``, ``trip``, ``close``...) |
| ``control_status`` | status names of the echoed control objects in the response (``success``, ``no_select``, ``not_supported``...) |
| ``time``, ``time_interval_ms``, ``time_delay_ms`` | time and date written or read (group 50, ISO 8601 UTC), time delay (group 52) |
| ``file.name``, ``file.names``, ``file.mode``, ``file.handle``, ``file.size``, ``file.block``, ``file.last_block``, ``file.data_length``, ``file.status``, ``file.permissions``, ``file.created``, ``file.max_block_size``, ``file.request_id``, ``file.user_name`` | file transfer (group 70); a password is never copied |
| ``attributes`` | device attributes (group 0): name -> value |
| ``iin_written``, ``restart_cleared`` | a WRITE of group 80: the indications written; the device-restart bit cleared |
| ``link.function``, ``link.function_code``, ``link.primary``, ``link.response_function``, ``link.response_function_code`` | link-service records |
| ``decode_error``, ``response.decode_error`` | text: why object decoding stopped early (an object size icsmon does not know) |
| ``truncated`` | bool: more objects than ``limits.max_items`` |
| ``skipped_bytes``, ``direction`` | anomalies: octets skipped to the next link frame |

Device identity: group 0 attributes in responses give ``ics.device.vendor`` (manufacturer's
name, 252), ``product`` (product name and model, 250), ``firmware`` (software version,
242), ``hardware`` (243), ``serial`` (248), ``name`` (user-assigned device name, 247),
``plant`` (user-assigned location, 245).

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``link`` (frames, checksums, probe), ``parser`` (the connection: framing, transport
reassembly, pairing, records), ``objects`` (object headers and values), ``tables`` (codes).
"""

from __future__ import annotations

from sensor.protocols.dnp3.anomalies import Anomaly
from sensor.protocols.dnp3.link import datagram_to_server, probe
from sensor.protocols.dnp3.parser import REQUEST_TIMEOUT, Parser, function_name, iin_flags
from sensor.protocols.dnp3.tables import FUNCTIONS, GROUPS, OPERATION

NAME = "dnp3"
PORTS = (20000,)
UDP_PORTS = (20000,)
# A link header carries its own CRC: a stream or datagram that passes the probe is DNP3.
HEURISTIC_DEFAULT = True
DatagramParser = Parser  # each datagram carries whole link frames: the same decoding
probe_datagram = probe

__all__ = [
    "FUNCTIONS",
    "GROUPS",
    "HEURISTIC_DEFAULT",
    "NAME",
    "OPERATION",
    "PORTS",
    "REQUEST_TIMEOUT",
    "UDP_PORTS",
    "Anomaly",
    "DatagramParser",
    "Parser",
    "datagram_to_server",
    "function_name",
    "iin_flags",
    "probe",
    "probe_datagram",
]
