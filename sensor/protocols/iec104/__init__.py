"""IEC 60870-5-104 (TCP 2404): APCI framing, send/receive sequence numbers, U-format
STARTDT/STOPDT/TESTFR, and the ASDU of every I-format APDU (IEC 60870-5-101 application
layer): type identification, cause of transmission with its P/N and test bits, originator
and common address, every information object address with its value, quality and time tag.

Framing: an APDU starts ``68``, its length octet counts the 4-octet control field and the
ASDU (4 to 253). APDUs split over TCP segments or packed together are cut out of the
reassembled stream; after garbage or ``gap()`` the parser resumes at the next plausible APCI.
The send sequence number N(S) of I-format APDUs is followed per direction: a number that
skips ahead is a gap, one already seen a duplicate (both anomalies). S-format APDUs only
acknowledge: they give no record.

Records: one per transaction. STARTDT, STOPDT and TESTFR act are paired with their con.
A command (single, double, regulating step, set points normalised / scaled / short float,
bitstring, with or without time tag; interrogation, counter interrogation, clock
synchronisation, test, reset process, delay acquisition, parameters) sent with cause
*activation* (or *deactivation*) is paired with its confirmation (positive or negative, or a
refusal: unknown type, cause, common address or IOA) and, for executed commands and
interrogations, with its termination; a read is paired with the data it returns. Select and
execute are two transactions (``iec104.select``). Monitoring ASDUs (spontaneous, periodic,
interrogated, requested) give one record each, ``ics.pairing: response-only``; an
interrogation record counts the ASDUs and objects that answered it.

Fields: ``fields.py`` declares each one with its type (and docs/schema.md lists them).
Time tags (CP56Time2a) are decoded to ISO 8601 as sent (the standard carries no zone).

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``parser`` (the connection: APCI framing, sequence numbers, pairing, records),
``asdu`` (data unit identifier, information objects, time tags), ``tables`` (codes).
"""

from __future__ import annotations

from sensor.protocols import facts
from sensor.protocols.iec104 import fields
from sensor.protocols.iec104.anomalies import Anomaly
from sensor.protocols.iec104.asdu import cp56, decode_asdu
from sensor.protocols.iec104.parser import REQUEST_TIMEOUT, Parser, probe, type_name
from sensor.protocols.iec104.tables import CAUSES, COMMANDS, OPERATION, TYPES

NAME = facts.IEC104_NAME
PORTS = facts.IEC104_PORTS
HEURISTIC_DEFAULT = facts.IEC104_HEURISTIC_DEFAULT

__all__ = [
    "CAUSES",
    "COMMANDS",
    "HEURISTIC_DEFAULT",
    "NAME",
    "OPERATION",
    "PORTS",
    "REQUEST_TIMEOUT",
    "TYPES",
    "Anomaly",
    "Parser",
    "cp56",
    "decode_asdu",
    "fields",
    "probe",
    "type_name",
]
