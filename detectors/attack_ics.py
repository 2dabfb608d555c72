"""A small table of MITRE ATT&CK for ICS techniques that network traffic can show.

Names and tactics as in ATT&CK for ICS v18.1 (``mitre/cti`` ``ics-attack.json``). Only the
techniques icsmon's rules can evidence are listed; ``rules check`` refuses tags outside
this table, which also catches revoked ids such as T0875.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAMEWORK = "MITRE ATT&CK for ICS"

TACTICS: dict[str, str] = {
    "collection": "TA0100",
    "command-and-control": "TA0101",
    "discovery": "TA0102",
    "evasion": "TA0103",
    "execution": "TA0104",
    "impact": "TA0105",
    "impair-process-control": "TA0106",
    "inhibit-response-function": "TA0107",
    "initial-access": "TA0108",
    "lateral-movement": "TA0109",
    "persistence": "TA0110",
    "privilege-escalation": "TA0111",
}

TACTIC_NAMES: dict[str, str] = {
    "collection": "Collection",
    "command-and-control": "Command and Control",
    "discovery": "Discovery",
    "evasion": "Evasion",
    "execution": "Execution",
    "impact": "Impact",
    "impair-process-control": "Impair Process Control",
    "inhibit-response-function": "Inhibit Response Function",
    "initial-access": "Initial Access",
    "lateral-movement": "Lateral Movement",
    "persistence": "Persistence",
    "privilege-escalation": "Privilege Escalation",
}


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]  # tactic short names (keys of TACTICS)

    @property
    def reference(self) -> str:
        return f"https://attack.mitre.org/techniques/{self.id}/"


_TABLE: tuple[Technique, ...] = (
    Technique("T0800", "Activate Firmware Update Mode", ("inhibit-response-function",)),
    Technique("T0801", "Monitor Process State", ("collection",)),
    Technique("T0803", "Block Command Message", ("inhibit-response-function",)),
    Technique("T0804", "Block Reporting Message", ("inhibit-response-function",)),
    Technique("T0806", "Brute Force I/O", ("impair-process-control",)),
    Technique("T0812", "Default Credentials", ("lateral-movement",)),
    Technique("T0814", "Denial of Service", ("inhibit-response-function",)),
    Technique("T0816", "Device Restart/Shutdown", ("inhibit-response-function",)),
    Technique("T0821", "Modify Controller Tasking", ("execution",)),
    Technique("T0822", "External Remote Services", ("initial-access",)),
    Technique("T0830", "Adversary-in-the-Middle", ("collection",)),
    Technique("T0831", "Manipulation of Control", ("impact",)),
    Technique("T0835", "Manipulate I/O Image", ("inhibit-response-function",)),
    Technique("T0836", "Modify Parameter", ("impair-process-control",)),
    Technique("T0838", "Modify Alarm Settings", ("inhibit-response-function",)),
    Technique("T0839", "Module Firmware", ("persistence", "impair-process-control")),
    Technique("T0840", "Network Connection Enumeration", ("discovery",)),
    Technique("T0842", "Network Sniffing", ("discovery",)),
    Technique("T0843", "Program Download", ("lateral-movement",)),
    Technique("T0845", "Program Upload", ("collection",)),
    Technique("T0846", "Remote System Discovery", ("discovery",)),
    Technique("T0848", "Rogue Master", ("initial-access",)),
    Technique("T0855", "Unauthorized Command Message", ("impair-process-control",)),
    Technique("T0856", "Spoof Reporting Message", ("evasion", "impair-process-control")),
    Technique("T0857", "System Firmware", ("persistence", "inhibit-response-function")),
    Technique("T0858", "Change Operating Mode", ("execution", "evasion")),
    Technique("T0859", "Valid Accounts", ("persistence", "lateral-movement")),
    Technique("T0861", "Point & Tag Identification", ("collection",)),
    Technique("T0866", "Exploitation of Remote Services", ("initial-access", "lateral-movement")),
    Technique("T0868", "Detect Operating Mode", ("collection",)),
    Technique("T0869", "Standard Application Layer Protocol", ("command-and-control",)),
    Technique("T0877", "I/O Image", ("collection",)),
    Technique("T0878", "Alarm Suppression", ("inhibit-response-function",)),
    Technique("T0881", "Service Stop", ("inhibit-response-function",)),
    Technique("T0882", "Theft of Operational Information", ("impact",)),
    Technique("T0885", "Commonly Used Port", ("command-and-control",)),
    Technique("T0886", "Remote Services", ("initial-access", "lateral-movement")),
    Technique("T0888", "Remote System Information Discovery", ("discovery",)),
    Technique("T0889", "Modify Program", ("persistence",)),
)

TECHNIQUES: dict[str, Technique] = {t.id: t for t in _TABLE}


def technique_from_tag(namespace: str, name: str) -> str | None:
    """``attack.t0855`` -> ``T0855``; None for tags that are not ICS technique ids."""
    if namespace != "attack":
        return None
    name = name.lower()
    if len(name) == 5 and name[0] == "t" and name[1:].isdigit() and name[1] == "0":
        return name.upper()
    return None


def tactic_from_tag(namespace: str, name: str) -> str | None:
    """``attack.impair-process-control`` -> ``impair-process-control`` (or ``impair_process_control``)."""
    if namespace != "attack":
        return None
    key = name.lower().replace("_", "-")
    return key if key in TACTICS else None
