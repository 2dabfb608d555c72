"""The sensor control channel: signed requests from the province to one sensor, via Kafka.

A sensor makes only outbound connections. The province writes each request to the control
topic (``<prefix>.control``) keyed by the sensor's id; the sensor reads the one partition
its key maps to and answers with ``response`` documents (``pipeline.kinds``), which the
indexer stores like any other kind. Every request is an *envelope*::

    {"type": "evidence.request", "id": "<uuid>", "target": "<sensor id>",
     "issued_at": 1795000000, "expires_at": 1795000600, "payload": {...},
     "signature": "<base64 Ed25519 signature>"}

signed with the province's private key over the canonical bytes of every field but
``signature`` (JSON, keys sorted, no spaces, UTF-8; times are whole epoch seconds and
payloads hold no floats, so the bytes have one form). The sensor holds the public key and
refuses, and counts by reason: an envelope that is not JSON or lacks a field
(``malformed``), has no signature (``unsigned``) or a wrong one (``bad_signature``), is
addressed to another sensor (``misaddressed``), is not yet valid or already expired
(``not_yet_valid``, ``expired``: with ``MAX_CLOCK_SKEW_S`` of tolerance), lives longer than
``MAX_LIFETIME_S`` (``too_long``), was seen before (``replayed``: ids are remembered until
they expire, on disk, so a restart does not reopen the window) or has a type nobody
registered (``unknown_type``). The signature is checked before anything else is believed.

A refusal is answered (a ``response`` with status ``refused`` and the reason) only when the
envelope is the province's own (signed) and addressed to this sensor: ``expired``,
``not_yet_valid``, ``too_long`` and ``unknown_type`` tell the analyst why nothing came. The
rest are only counted: an answer to an unsigned message would let anyone make a sensor talk.

Message types are registered by name (:func:`register`); a later feature adds a type and
its handler without touching the channel: the province signs an envelope of the new type
(:class:`Signer`), and the sensor's wiring gives :meth:`Receiver.on` the handler. The Kafka
transport (the province's publisher, the sensor's listener) is ``pipeline.control_kafka``. How to
add a type, step by step: docs/control.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

MAX_CLOCK_SKEW_S = 300  # a sensor's clock may be this far off the province's
MAX_LIFETIME_S = 7 * 86400  # no request is valid for longer than this
DEFAULT_LIFETIME_S = 900
FIELDS = ("type", "id", "target", "issued_at", "expires_at", "payload")
#: refusals of a signed envelope for this sensor: answered, so the province learns why
ANSWERED_REFUSALS = ("expired", "not_yet_valid", "too_long", "unknown_type")
REFUSALS = (
    "malformed",
    "unsigned",
    "bad_signature",
    "misaddressed",
    "not_yet_valid",
    "expired",
    "too_long",
    "replayed",
    "unknown_type",
)


class ControlError(Exception):
    """A key or setting of the control channel is unusable; one line naming the file."""


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    id: str
    target: str
    issued_at: int
    expires_at: int
    payload: dict[str, Any]


# -- message types ------------------------------------------------------------------------

Handler = Callable[[Envelope], list[dict]]
"""Acts on one accepted envelope; returns the ``response`` documents to send (one or more
parts, made with :func:`response_doc`)."""
_TYPES: dict[str, str] = {}  # type -> one line saying what it asks


def register(name: str, description: str) -> str:
    """Declare a message type (idempotent). Handlers are given to :class:`Receiver` by the
    process that can act on the type (the sensor's wiring)."""
    if not name or not all(c.isalnum() or c in "._-" for c in name):
        raise ValueError(f"not a message type name: {name!r}")
    _TYPES.setdefault(name, description)
    return name


def types() -> Mapping[str, str]:
    return dict(_TYPES)


EVIDENCE_REQUEST = register(
    "evidence.request",
    "the events of one flow in a time window, and the alert's packet capture",
)


# -- keys and canonical bytes --------------------------------------------------------------


def generate_keys(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair: the private key (PKCS#8 PEM, mode 0600) for the province, the
    public key (SubjectPublicKeyInfo PEM) for every sensor's configuration."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ControlError(
            f"{path}: cannot read the control private key ({exc.strerror})"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ControlError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ControlError(f"{path}: the control key must be an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ControlError(f"{path}: cannot read the control public key ({exc.strerror})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ControlError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ControlError(f"{path}: the control key must be an Ed25519 key")
    return key


def _check_plain(value: Any, where: str) -> None:
    """Only values with one JSON form: no floats (1.0 vs 1), no NaN."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(item, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be text")
            _check_plain(item, where)
        return
    raise ValueError(f"{where}: {type(value).__name__} values have no canonical form here")


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The signed bytes: the envelope's fields but the signature, as canonical JSON."""
    body = {name: fields[name] for name in FIELDS}
    _check_plain(body, "envelope")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- the province's side ---------------------------------------------------------------------


class Signer:
    """Makes signed envelopes with the province's private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Signer:
        return cls(load_private_key(path))

    def envelope(
        self,
        type_: str,
        target: str,
        payload: dict[str, Any],
        lifetime_s: int = DEFAULT_LIFETIME_S,
        now: float | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        if type_ not in _TYPES:
            raise ValueError(f"unregistered message type {type_!r}")
        issued = int(time.time() if now is None else now)
        fields: dict[str, Any] = {
            "type": type_,
            "id": message_id or str(uuid.uuid4()),
            "target": target,
            "issued_at": issued,
            "expires_at": issued + int(lifetime_s),
            "payload": payload,
        }
        signature = self.key.sign(canonical_bytes(fields))
        fields["signature"] = base64.b64encode(signature).decode()
        return fields

    @staticmethod
    def encode(envelope: Mapping[str, Any]) -> bytes:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


# -- the sensor's side ------------------------------------------------------------------------


class Receiver:
    """Checks envelopes addressed to one sensor and hands the good ones to their handler."""

    def __init__(
        self,
        sensor_id: str,
        public_key: Ed25519PublicKey,
        handlers: Mapping[str, Handler],
        seen_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        max_seen: int = 100_000,
        common: Mapping[str, Any] | None = None,
    ) -> None:
        self.sensor_id = sensor_id
        self.public_key = public_key
        self.handlers: dict[str, Handler] = {}
        for name, handler in handlers.items():
            self.on(name, handler)
        self.common = dict(common or {})  # fields of every answer: labels.site, organization.id
        self._answered_refusals: dict[str, None] = {}  # ids refused with an answer (bounded)
        self.clock = clock
        self.max_seen = max_seen
        self.seen_file = Path(seen_file) if seen_file is not None else None
        self._seen: dict[str, int] = self._load_seen()  # message id -> expires_at
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {"received": 0, "accepted": 0, "handled": 0, "errors": 0}
        self.counters.update({f"refused_{r}": 0 for r in REFUSALS})

    def on(self, name: str, handler: Handler) -> None:
        """Hand messages of type ``name`` (registered with :func:`register`) to ``handler``:
        how a feature adds what a sensor does on request."""
        if name not in _TYPES:
            raise ValueError(f"handler for an unregistered message type: {name!r}")
        self.handlers[name] = handler

    # -- checks ---------------------------------------------------------------------------

    def check(self, raw: bytes | None) -> Envelope | str:
        """The envelope, or the reason (one of ``REFUSALS``) it is refused (and counted)."""
        return self._verdict(raw)[0]

    def _verdict(self, raw: bytes | None) -> tuple[Envelope | str, Envelope | None]:
        with self._lock:
            self.counters["received"] += 1
            verdict, signed = self._check(raw)
            if isinstance(verdict, str):
                self.counters[f"refused_{verdict}"] += 1
            else:
                self.counters["accepted"] += 1
            return verdict, signed

    def _check(self, raw: bytes | None) -> tuple[Envelope | str, Envelope | None]:
        """(the envelope or the reason it is refused, the envelope when it is the province's
        own and for this sensor even though refused)."""
        try:
            fields = json.loads(raw or b"")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "malformed", None
        if not isinstance(fields, dict) or any(name not in fields for name in FIELDS):
            return "malformed", None
        signature = fields.get("signature")
        if not signature:
            return "unsigned", None
        try:
            sig = base64.b64decode(signature, validate=True)
            body = canonical_bytes(fields)
            self.public_key.verify(sig, body)
        except (binascii.Error, ValueError, TypeError, InvalidSignature):
            return "bad_signature", None
        # Signed by the province: the fields can be believed from here on.
        t, mid, target = fields["type"], fields["id"], fields["target"]
        issued, expires, payload = fields["issued_at"], fields["expires_at"], fields["payload"]
        if not (
            isinstance(t, str)
            and isinstance(mid, str)
            and mid
            and isinstance(target, str)
            and isinstance(issued, int)
            and isinstance(expires, int)
            and isinstance(payload, dict)
        ):
            return "malformed", None
        if target != self.sensor_id:
            return "misaddressed", None
        env = Envelope(t, mid, target, issued, expires, payload)
        now = self.clock()
        if mid in self._seen:
            return "replayed", None
        if issued > now + MAX_CLOCK_SKEW_S:
            return "not_yet_valid", env
        if expires < now - MAX_CLOCK_SKEW_S:
            return "expired", env
        if expires - issued > MAX_LIFETIME_S or expires < issued:
            return "too_long", env
        if t not in self.handlers:
            return "unknown_type", env
        self._remember(mid, expires, now)
        return env, env

    # -- handling -------------------------------------------------------------------------

    def handle(self, raw: bytes | None) -> list[dict]:
        """Check and act on one message: the response documents to send (none, or one
        refusal, if refused)."""
        verdict, signed = self._verdict(raw)
        if isinstance(verdict, str):
            log.warning("control message refused: %s", verdict)
            if signed is None or verdict not in ANSWERED_REFUSALS:
                return []
            with self._lock:  # each refused id answered once
                if signed.id in self._answered_refusals:
                    return []
                self._answered_refusals[signed.id] = None
                if len(self._answered_refusals) > 10_000:
                    del self._answered_refusals[next(iter(self._answered_refusals))]
            return [
                response_doc(
                    signed,
                    self.sensor_id,
                    "refused",
                    fields={**self.common, "icsmon.control.reason": verdict},
                    now=self.clock(),
                )
            ]
        try:
            out = self.handlers[verdict.type](verdict)
        except Exception as exc:  # a handler's bug answers with an error, never stops the sensor
            self.counters["errors"] += 1
            log.exception("control handler %s failed", verdict.type)
            return [
                response_doc(
                    verdict,
                    self.sensor_id,
                    "error",
                    fields={
                        **self.common,
                        "icsmon.control.message": f"{type(exc).__name__}: {exc}",
                    },
                    now=self.clock(),
                )
            ]
        self.counters["handled"] += 1
        return out

    # -- replay protection ----------------------------------------------------------------

    def _load_seen(self) -> dict[str, int]:
        if self.seen_file is None or not self.seen_file.exists():
            return {}
        try:
            data = json.loads(self.seen_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning(
                "%s: unreadable list of seen control messages; starting afresh", self.seen_file
            )
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _remember(self, mid: str, expires: int, now: float) -> None:
        seen = self._seen
        horizon = now - MAX_CLOCK_SKEW_S
        if len(seen) >= self.max_seen:
            for old in [k for k, v in seen.items() if v < horizon]:
                del seen[old]
            while len(seen) >= self.max_seen:  # still full: forget the soonest to expire
                del seen[min(seen, key=seen.__getitem__)]
        seen[mid] = expires
        if self.seen_file is not None:
            tmp = self.seen_file.with_name(self.seen_file.name + ".tmp")
            try:
                live = {k: v for k, v in seen.items() if v >= horizon}
                tmp.write_text(json.dumps(live), encoding="utf-8")
                os.replace(tmp, self.seen_file)
            except OSError as exc:
                log.error("%s: cannot record a seen control message: %s", self.seen_file, exc)


def response_doc(
    envelope: Envelope,
    sensor_id: str,
    status: str,
    part: int = 0,
    parts: int = 1,
    fields: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A ``response`` document answering ``envelope`` (one part of ``parts``)."""
    doc: dict[str, Any] = {
        "@timestamp": time.time() if now is None else float(now),
        "event.kind": "event",
        "event.dataset": "icsmon.response",
        "event.action": envelope.type,
        "event.id": f"{envelope.id}-{part}",
        "observer.name": sensor_id,
        "icsmon.control.request_id": envelope.id,
        "icsmon.control.type": envelope.type,
        "icsmon.control.status": status,
        "icsmon.control.part": part,
        "icsmon.control.parts": parts,
    }
    if fields:
        doc.update(fields)
    return doc
