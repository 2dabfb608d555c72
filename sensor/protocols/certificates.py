"""X.509 certificates seen on the wire, summarised: bytes in, plain data out.

OPC UA servers show their certificate in GetEndpoints and CreateSession answers and in the
asymmetric header of an OpenSecureChannel answer. A summary (subject, issuer, validity,
whether it signed itself, SHA-1 thumbprint as OPC UA names certificates) is what the
assessment needs to tell a self-signed or expired server certificate; the certificate itself
is not kept. Parsing is the ``cryptography`` package's (a hardened DER parser); anything it
refuses gives ``parse_error`` and nothing else.

Fields (under the caller's prefix): declared, with their types, by the protocol that shows
the certificate (``opcua.server_certificate.*`` in ``sensor/protocols/opcua/fields.py``).
Names are RFC 4514 strings of at most 256 characters, times ISO 8601 UTC.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

MAX_NAME = 256
_CACHE_SIZE = 64  # a server shows the same certificate on every channel and session
_cache: OrderedDict[bytes, dict] = OrderedDict()


def first_der(data: bytes) -> bytes:
    """The first DER element of ``data`` (OPC UA may send a chain: certificates back to back)."""
    if len(data) < 2 or data[0] != 0x30:
        return data
    n = data[1]
    if n < 0x80:
        return data[: 2 + n]
    width = n & 0x7F
    if width == 0 or width > 4 or len(data) < 2 + width:
        return data
    length = int.from_bytes(data[2 : 2 + width], "big")
    return data[: 2 + width + length]


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def summarise(data: bytes) -> dict:
    """Summary of one DER certificate (or the first of a chain); cached by content."""
    der = first_der(bytes(data))
    key = hashlib.sha1(der).digest()
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    out = _summarise(der, key)
    _cache[key] = out
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return out


def _summarise(der: bytes, sha1: bytes) -> dict:
    out: dict = {"sha1": sha1.hex()}
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        out["subject"] = subject[:MAX_NAME]
        out["issuer"] = issuer[:MAX_NAME]
        out["not_before"] = _iso(cert.not_valid_before_utc)
        out["not_after"] = _iso(cert.not_valid_after_utc)
        out["serial_number"] = format(cert.serial_number, "x")
        algorithm = cert.signature_hash_algorithm
        if algorithm is not None:
            out["signature_hash"] = algorithm.name
        try:
            key = cert.public_key()
            if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                out["key_bits"] = key.key_size
        except (ValueError, TypeError):
            key = None
        self_signed = cert.issuer == cert.subject
        if self_signed:
            try:
                cert.verify_directly_issued_by(cert)
            except Exception:  # a wrong signature or an algorithm the library cannot check
                self_signed = False
        out["self_signed"] = self_signed
    except Exception as exc:  # not DER, not X.509, an unsupported field: never the sensor's end
        out["parse_error"] = type(exc).__name__
    return out


def fields(data: bytes | None, prefix: str) -> dict:
    """The summary as flat record fields under ``prefix`` (empty for no certificate)."""
    if not data:
        return {}
    return {f"{prefix}.{k}": v for k, v in summarise(data).items()}
