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

Fields: ``fields.py`` declares each one with its type (and docs/schema.md lists them): the
master and outstation link addresses, the function, every object header (``objects``,
``object_types``), the response's function, objects and internal indications, the output
points commanded with their operations and values, time, file transfer and device attributes.

Device identity: group 0 attributes in responses give ``ics.device.vendor`` (manufacturer's
name, 252), ``product`` (product name and model, 250), ``firmware`` (software version,
242), ``hardware`` (243), ``serial`` (248), ``name`` (user-assigned device name, 247),
``plant`` (user-assigned location, 245).

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``link`` (frames, checksums, probe), ``parser`` (the connection: framing, transport
reassembly, pairing, records), ``objects`` (object headers and values), ``tables`` (codes).
"""

from __future__ import annotations

from sensor.protocols import facts
from sensor.protocols.dnp3 import fields
from sensor.protocols.dnp3.anomalies import Anomaly
from sensor.protocols.dnp3.link import datagram_to_server, probe
from sensor.protocols.dnp3.parser import REQUEST_TIMEOUT, Parser, function_name, iin_flags
from sensor.protocols.dnp3.tables import FUNCTIONS, GROUPS, OPERATION

NAME = facts.DNP3_NAME
PORTS = facts.DNP3_PORTS
UDP_PORTS = facts.DNP3_UDP_PORTS
HEURISTIC_DEFAULT = facts.DNP3_HEURISTIC_DEFAULT
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
    "fields",
    "DatagramParser",
    "Parser",
    "datagram_to_server",
    "function_name",
    "iin_flags",
    "probe",
    "probe_datagram",
]
