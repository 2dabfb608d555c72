"""Make the OPC UA captures in this folder: an asyncua server and client talking on loopback
(127.0.0.21:4840) while tcpdump records them.

    sudo .venv/bin/python pcaps/opcua/make_opcua_captures.py [--out DIR] [--only NAME ...]

Captures (see pcaps/README.md):

- ``opcua_anonymous.pcap``: GetEndpoints on its own connection, then an anonymous session:
  browse, translate a browse path, read (several types and the server's BuildInfo), write,
  call a method, register nodes, a subscription with two monitored items and publish
  notifications, close.
- ``opcua_username.pcap``: a rejected user name/password login, then an accepted one, read
  and write.
- ``opcua_chunked.pcap``: the server limits chunks to 8192 bytes: a 2500-element Double array
  is read (response in chunks) and written (request in chunks).
- ``opcua_midstream.pcap``: ``opcua_anonymous.pcap`` from the first CreateSession request on
  (no TCP handshake, HEL/ACK or OPN): a sensor that starts late.
- ``opcua_sign.pcap``: Basic256Sha256 with mode Sign (readable, signed bodies).
- ``opcua_encrypted.pcap``: Basic256Sha256 with mode SignAndEncrypt (unreadable bodies).
- ``opcua_legacy_policies.pcap``: a server offering None, Basic256 (Sign) and Basic128Rsa15
  (SignAndEncrypt) endpoints with a self-signed certificate that expired 30 days before the
  capture; the client lists the endpoints, then reads over a Basic256 Sign channel.
- ``opcua_ca_signed.pcap``: a server offering only Basic256Sha256 SignAndEncrypt with a
  certificate issued by a test CA, valid for a year; the client lists the endpoints, then logs
  in with a user name and password over the encrypted channel: nothing insecure to see.

Needs root (tcpdump on lo), tcpdump, asyncua and dpkt (the project's test extras).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import math
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import dpkt
from asyncua import Client, Server, ua
from asyncua.common.connection import TransportLimits
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

HOST = "127.0.0.21"
PORT = 4840
URL = f"opc.tcp://{HOST}:{PORT}/icsmon/"
NAMESPACE = "urn:icsmon:test:plant"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loopback import Tcpdump  # noqa: E402  (pcaps/loopback.py: tcpdump on lo, drops counted)


class _Users(UserManager):
    """Accepts operator/secret only."""

    def get_user(
        self,
        iserver: object,
        username: str | None = None,
        password: str | None = None,
        certificate: object = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User)
        if username == "operator" and password == "secret":
            return User(role=UserRole.User)
        return None


async def _server(
    limits: TransportLimits | None = None,
    users: bool = False,
    security: list | None = None,
    cert_dir: Path | None = None,
) -> tuple[Server, dict]:
    server = Server(user_manager=_Users() if users else None)
    await server.init()
    server.set_endpoint(URL)
    server.set_server_name("icsmon test PLC")
    await server.set_application_uri("urn:icsmon:test:plc")
    await server.set_build_info(
        "urn:icsmon:test:plc",
        "Example Automation",
        "Example PLC 1500",
        "4.2.1",
        "77",
        dt.datetime(2026, 1, 1),
    )
    if limits is not None:
        server.limits = limits
    if security is not None:
        server.set_security_policy(security)
        assert cert_dir is not None
        await server.load_certificate(str(cert_dir / "server.der"))
        await server.load_private_key(str(cert_dir / "server.pem"))
    idx = await server.register_namespace(NAMESPACE)
    pump = await server.nodes.objects.add_object(idx, "Pump")
    nodes = {
        "pump": pump,
        "speed": await pump.add_variable(idx, "Speed", 1450.5),
        "running": await pump.add_variable(idx, "Running", True),
        "name": await pump.add_variable(idx, "Name", "P-101"),
        "counter": await pump.add_variable(idx, "Counter", ua.Variant(7, ua.VariantType.Int32)),
        "setpoints": await pump.add_variable(
            idx, "Setpoints", ua.Variant([10.0, 20.0, 30.0], ua.VariantType.Float)
        ),
        "big": await pump.add_variable(
            idx, "Trend", ua.Variant([float(i) for i in range(2500)], ua.VariantType.Double)
        ),
    }
    for key in ("speed", "running", "counter", "setpoints", "big"):
        await nodes[key].set_writable()

    async def start(parent: ua.NodeId, mode: ua.Variant) -> list[ua.Variant]:
        return [ua.Variant(mode.Value > 0, ua.VariantType.Boolean)]

    nodes["start"] = await pump.add_method(
        idx, "Start", start, [ua.VariantType.Int32], [ua.VariantType.Boolean]
    )
    return server, nodes


async def _client_anonymous(nodes: dict) -> None:
    # discovery on a connection of its own, as HMIs do before connecting
    probe = Client(URL)
    await probe.connect_and_get_server_endpoints()
    async with Client(URL) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        objects = client.nodes.objects
        await objects.get_children()
        pump = await objects.get_child([f"{idx}:Pump"])
        speed = client.get_node(nodes["speed"].nodeid)
        await client.read_values(
            [
                speed,
                client.get_node(nodes["running"].nodeid),
                client.get_node(nodes["name"].nodeid),
                client.get_node(nodes["counter"].nodeid),
                client.get_node(nodes["setpoints"].nodeid),
            ]
        )
        await client.read_values(
            [client.get_node(ua.NodeId(i)) for i in (2261, 2262, 2263, 2264, 2265)]
        )
        await speed.write_value(ua.DataValue(ua.Variant(1500.25, ua.VariantType.Double)))
        await client.get_node(nodes["setpoints"].nodeid).write_value(
            ua.DataValue(ua.Variant([11.0, 22.0, 33.0], ua.VariantType.Float))
        )
        await pump.call_method(nodes["start"].nodeid, ua.Variant(2, ua.VariantType.Int32))
        await client.register_nodes([speed])

        class Handler:
            def __init__(self) -> None:
                self.seen = 0

            def datachange_notification(self, node: object, val: object, data: object) -> None:
                self.seen += 1

        handler = Handler()
        sub = await client.create_subscription(100, handler)
        await sub.subscribe_data_change([speed, client.get_node(nodes["counter"].nodeid)])
        for value in (7, 8, 9):
            await nodes["counter"].write_value(ua.Variant(value + 1, ua.VariantType.Int32))
            await asyncio.sleep(0.25)
        await sub.delete()


async def _client_username() -> None:
    bad = Client(URL)
    bad.set_user("operator")
    bad.set_password("wrong-password")
    try:
        await bad.connect()
    except Exception:  # the server refuses the login: that is the traffic we want
        pass
    finally:
        try:
            await bad.disconnect()
        except Exception:
            pass
    client = Client(URL)
    client.set_user("operator")
    client.set_password("secret")
    async with client:
        idx = await client.get_namespace_index(NAMESPACE)
        speed = await client.nodes.objects.get_child([f"{idx}:Pump", f"{idx}:Speed"])
        await speed.read_value()
        await speed.write_value(ua.DataValue(ua.Variant(990.0, ua.VariantType.Double)))


async def _client_chunked(nodes: dict) -> None:
    async with Client(URL) as client:
        big = client.get_node(nodes["big"].nodeid)
        values = await big.read_value()
        await big.write_value(
            ua.DataValue(ua.Variant([v * 2 for v in values], ua.VariantType.Double))
        )


async def _client_secure(mode: ua.MessageSecurityMode, cert_dir: Path) -> None:
    client = Client(URL)
    client.application_uri = "urn:icsmon:test:hmi"
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        str(cert_dir / "client.der"),
        str(cert_dir / "client.pem"),
        server_certificate=str(cert_dir / "server.der"),
        mode=mode,
    )
    async with client:
        idx = await client.get_namespace_index(NAMESPACE)
        speed = await client.nodes.objects.get_child([f"{idx}:Pump", f"{idx}:Speed"])
        await speed.read_value()
        await speed.write_value(ua.DataValue(ua.Variant(1234.5, ua.VariantType.Double)))


async def _client_legacy(cert_dir: Path) -> None:
    probe = Client(URL)
    await probe.connect_and_get_server_endpoints()
    client = Client(URL)
    client.application_uri = "urn:icsmon:test:hmi"
    await client.set_security(
        security_policies.SecurityPolicyBasic256,
        str(cert_dir / "client.der"),
        str(cert_dir / "client.pem"),
        server_certificate=str(cert_dir / "server.der"),
        mode=ua.MessageSecurityMode.Sign,
    )
    async with client:
        idx = await client.get_namespace_index(NAMESPACE)
        speed = await client.nodes.objects.get_child([f"{idx}:Pump", f"{idx}:Speed"])
        await speed.read_value()


async def _client_ca_signed(cert_dir: Path) -> None:
    probe = Client(URL)
    await probe.connect_and_get_server_endpoints()
    client = Client(URL)
    client.application_uri = "urn:icsmon:test:hmi"
    client.set_user("operator")
    client.set_password("secret")
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        str(cert_dir / "client.der"),
        str(cert_dir / "client.pem"),
        server_certificate=str(cert_dir / "server.der"),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    async with client:
        idx = await client.get_namespace_index(NAMESPACE)
        speed = await client.nodes.objects.get_child([f"{idx}:Pump", f"{idx}:Speed"])
        await speed.read_value()


def _issued_cert(folder: Path, expired: bool = False, ca: bool = False) -> None:
    """server.der/pem: self-signed and expired 30 days ago (``expired``), or issued by a test
    CA and valid for a year (``ca``)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    key = generate_private_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "icsmon test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "icsmon test server"),
        ]
    )
    issuer, signer = subject, key
    if ca:
        signer = generate_private_key()
        issuer = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "icsmon test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "icsmon test plant CA"),
            ]
        )
    start, end = (
        (now - dt.timedelta(days=400), now - dt.timedelta(days=30))
        if expired
        else (now - dt.timedelta(days=1), now + dt.timedelta(days=365))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("urn:icsmon:test:plc"),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(HOST)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    (folder / "server.pem").write_bytes(dump_private_key_as_pem(key))
    (folder / "server.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))


def _make_certs(folder: Path) -> None:
    for name, uri, usage in (
        ("server", "urn:icsmon:test:plc", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", "urn:icsmon:test:hmi", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = generate_private_key()
        cert = generate_self_signed_app_certificate(
            key,
            f"icsmon test {name}",
            {"organizationName": "icsmon test"},
            [
                x509.UniformResourceIdentifier(uri),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address(HOST)),
            ],
            [usage],
        )
        (folder / f"{name}.pem").write_bytes(dump_private_key_as_pem(key))
        (folder / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))


async def _scenario(name: str, tmp: Path) -> None:
    if name == "opcua_anonymous":
        server, nodes = await _server()
        async with server:
            await _client_anonymous(nodes)
    elif name == "opcua_username":
        server, _nodes = await _server(users=True)
        async with server:
            await _client_username()
    elif name == "opcua_chunked":
        limits = TransportLimits(
            max_recv_buffer=8192,
            max_send_buffer=8192,
            max_chunk_count=math.ceil((1 << 20) / 8192),
            max_message_size=1 << 20,
        )
        server, nodes = await _server(limits=limits)
        async with server:
            await _client_chunked(nodes)
    elif name in ("opcua_sign", "opcua_encrypted"):
        _make_certs(tmp)
        sign = name == "opcua_sign"
        policy = (
            ua.SecurityPolicyType.Basic256Sha256_Sign
            if sign
            else ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt
        )
        server, _nodes = await _server(security=[policy], cert_dir=tmp)
        async with server:
            mode = ua.MessageSecurityMode.Sign if sign else ua.MessageSecurityMode.SignAndEncrypt
            await _client_secure(mode, tmp)
    elif name == "opcua_legacy_policies":
        _make_certs(tmp)
        _issued_cert(tmp, expired=True)
        server, _nodes = await _server(
            security=[
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256_Sign,
                ua.SecurityPolicyType.Basic128Rsa15_SignAndEncrypt,
            ],
            cert_dir=tmp,
        )
        async with server:
            await _client_legacy(tmp)
    elif name == "opcua_ca_signed":
        _make_certs(tmp)
        _issued_cert(tmp, ca=True)
        server, _nodes = await _server(
            users=True, security=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], cert_dir=tmp
        )
        async with server:
            await _client_ca_signed(tmp)
    else:
        raise SystemExit(f"unknown capture {name}")


def _capture(name: str, out: Path, tmp: Path) -> Path:
    path = out / f"{name}.pcap"
    dump = Tcpdump(path, f"tcp port {PORT} and host {HOST}")
    try:
        asyncio.run(_scenario(name, tmp))
    finally:
        dropped = dump.stop(settle_s=0.5)  # the last FIN/ACKs
    if dropped:
        raise SystemExit(f"{name}: tcpdump dropped {dropped} packets: record it again")
    return path


def _midstream(src: Path, dst: Path) -> None:
    """Copy ``src`` from the first frame that carries a CreateSession request (type id 461)
    on the last connection: no handshake, HEL/ACK or OPN left."""
    with open(src, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        frames = list(reader)
    start = None
    for i, (_ts, buf) in enumerate(frames):
        payload = _tcp_payload(buf, linktype)
        if payload[:3] == b"MSG" and len(payload) > 28 and payload[24:28] == b"\x01\x00\xcd\x01":
            start = i  # keep looking: the last session's CreateSession
    if start is None:
        raise SystemExit(f"{src}: no CreateSession request found")
    with open(dst, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=linktype, snaplen=65535)
        for ts, buf in frames[start:]:
            writer.writepkt(buf, ts)


def _tcp_payload(buf: bytes, linktype: int) -> bytes:
    if linktype == dpkt.pcap.DLT_EN10MB:
        ip = dpkt.ethernet.Ethernet(buf).data
    else:
        ip = dpkt.sll.SLL(buf).data
    if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
        return b""
    return bytes(ip.data.data)


NAMES = (
    "opcua_anonymous",
    "opcua_username",
    "opcua_chunked",
    "opcua_sign",
    "opcua_encrypted",
    "opcua_legacy_policies",
    "opcua_ca_signed",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--only", nargs="*", default=None, choices=NAMES + ("opcua_midstream",))
    args = parser.parse_args()
    if not shutil.which("tcpdump"):
        raise SystemExit("tcpdump is needed (apt-get install tcpdump)")
    with socket.socket() as s:  # fail early if someone else holds the address
        s.bind((HOST, PORT))
    wanted = args.only or list(NAMES) + ["opcua_midstream"]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            if name in wanted or (name == "opcua_anonymous" and "opcua_midstream" in wanted):
                path = _capture(name, args.out, Path(tmp))
                print(f"{path}: {path.stat().st_size} bytes", file=sys.stderr)
    if "opcua_midstream" in wanted:
        _midstream(args.out / "opcua_anonymous.pcap", args.out / "opcua_midstream.pcap")
        print(f"{args.out / 'opcua_midstream.pcap'} made", file=sys.stderr)


if __name__ == "__main__":
    main()
