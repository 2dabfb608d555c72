"""EtherNet/IP and CIP: explicit messaging on TCP 44818, ListIdentity and the other list
commands on UDP 44818 (broadcast discovery), implicit I/O counted per connection on UDP 2222
(``datagram``).

Encapsulation: the 24-byte header of every message (``enip.command`` / ``command_name``,
``session_handle``, ``status`` of the reply and its name when not zero, ``sender_context``
(hex) of unconnected exchanges); messages split across TCP segments are buffered (at most
``limits.max_buffer``), and after a gap or garbage the parser scans for the next plausible
header (known command, known status, options 0). ListIdentity, ListServices,
ListInterfaces, RegisterSession (``enip.protocol_version``) and UnRegisterSession each give a
record; a ListIdentity reply carries the device's identity (``enip.identity.*``: vendor id and
name, device type and name, product code, revision, status, serial number, product name,
state, socket address) and so do Identity object reads (class 0x01: Get_Attributes_All,
Get_Attribute_Single, Get_Attribute_List answers). Identity fills ``ics.device.vendor``,
``product`` / ``model`` (product name), ``product_code``, ``firmware`` (revision
``major.minor``, minor on three digits as Rockwell writes it), ``serial`` and
``module_type`` (device type).

SendRRData (unconnected) and SendUnitData (connected: ``enip.connection_id`` of the address
item, ``enip.sequence`` of the data item) carry CIP in common packet format items. One record
per CIP service: ``cip.service_code`` / ``cip.service`` (named in the context of the target
class: common services, Connection Manager, File object, Logix tag services on symbolic paths
and the Symbol/Template classes, ``service_0x4c`` otherwise), the path (``cip.class`` /
``class_name``, ``instance``, ``attribute``, ``member``, ``connection_point``, ``cip.tag`` for
symbolic segments such as ``Program:Main.Speed[2]``), the reply's general status
(``cip.status`` / ``status_name``) and extended status. A Multiple Service Packet gives one
record per embedded request (``cip.multiple_index`` / ``multiple_count``); an Unconnected
Send the request it routes (``cip.via``, ``cip.route`` of port/link hops). Service data:
Logix read/write tag (``cip.data_type``, ``elements``, ``values`` of elementary types,
``offset`` of fragmented services), attribute lists, Reset type, Set_Attribute data (hex),
Forward Open / Large Forward Open / Forward Close (``cip.connection.*``: connection ids,
serial, originator, RPIs, sizes, types, transport class, trigger, target path).

Pairing: unconnected exchanges by (command, sender context), connected ones by (connection,
sequence count) with the O->T / T->O ids learnt from Forward Open replies (by sequence count
alone when the Forward Open was not seen). ``ics.pairing``: ``paired``, ``request-only``,
``response-only``. Unanswered requests are reported after 30 s of capture time, beyond
``limits.max_pending`` or at close.

Fields: ``fields.py`` declares each one with its type (docs/schema.md lists them).
Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``encap`` (header, CPF, probe), ``cip`` (messages, embedded requests, service data),
``epath`` (paths), ``identity`` (ListIdentity and the Identity object), ``records`` (one
record per CIP service), ``parser`` (the connection: framing, pairing), ``tables``.
"""

from __future__ import annotations

from sensor.protocols import facts
from sensor.protocols.enip import fields
from sensor.protocols.enip.anomalies import Anomaly
from sensor.protocols.enip.datagram import IO_REPORT_INTERVAL, DatagramParser, datagram_to_server
from sensor.protocols.enip.encap import probe
from sensor.protocols.enip.parser import REQUEST_TIMEOUT, Parser
from sensor.protocols.enip.tables import CLASSES, COMMANDS, GENERAL_STATUS, VENDORS

NAME = facts.ENIP_NAME
PORTS = facts.ENIP_PORTS
UDP_PORTS = facts.ENIP_UDP_PORTS
HEURISTIC_DEFAULT = facts.ENIP_HEURISTIC_DEFAULT

__all__ = [
    "CLASSES",
    "COMMANDS",
    "IO_REPORT_INTERVAL",
    "UDP_PORTS",
    "DatagramParser",
    "datagram_to_server",
    "GENERAL_STATUS",
    "HEURISTIC_DEFAULT",
    "NAME",
    "PORTS",
    "REQUEST_TIMEOUT",
    "VENDORS",
    "Anomaly",
    "Parser",
    "fields",
    "probe",
]
