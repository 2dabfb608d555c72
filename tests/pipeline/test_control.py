"""The control channel's envelopes: Ed25519 signatures over canonical bytes, and a sensor
that refuses and counts unsigned, tampered, expired, early, replayed, misaddressed and
unknown messages (replays are remembered across a restart)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline import control
from pipeline.control import ControlError, Receiver, Signer

NOW = 1_800_000_000


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Signer, object]:
    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    assert (tmp_path / "province.key").stat().st_mode & 0o777 == 0o600
    return Signer.from_file(tmp_path / "province.key"), control.load_public_key(
        tmp_path / "sensor.pub"
    )


def receiver(pub, seen: Path | None = None, now: float = NOW) -> tuple[Receiver, list]:
    handled: list = []

    def handle(env: control.Envelope) -> list[dict]:
        handled.append(env)
        return [control.response_doc(env, "sensor-1", "ok", now=now)]

    return Receiver(
        "sensor-1", pub, {control.EVIDENCE_REQUEST: handle}, seen_file=seen, clock=lambda: now
    ), handled


def wire(signer: Signer, **kw) -> bytes:
    env = signer.envelope(
        kw.pop("type_", control.EVIDENCE_REQUEST),
        kw.pop("target", "sensor-1"),
        kw.pop("payload", {"alert_id": "a1", "window": [NOW - 5, NOW + 5]}),
        now=kw.pop("now", NOW),
        **kw,
    )
    return Signer.encode(env)


def test_a_signed_request_for_this_sensor_is_handled_once(keys, tmp_path: Path) -> None:
    signer, pub = keys
    rx, handled = receiver(pub, tmp_path / "seen.json")
    raw = wire(signer)
    out = rx.handle(raw)
    assert [d["icsmon.control.status"] for d in out] == ["ok"]
    assert out[0]["icsmon.control.request_id"] == handled[0].id
    assert handled[0].payload == {"alert_id": "a1", "window": [NOW - 5, NOW + 5]}
    assert rx.handle(raw) == [] and rx.counters["refused_replayed"] == 1
    # a restarted sensor remembers what it already did
    rx2, handled2 = receiver(pub, tmp_path / "seen.json")
    assert rx2.handle(raw) == [] and rx2.counters["refused_replayed"] == 1 and not handled2


def test_every_bad_message_is_refused_and_counted(keys, tmp_path: Path) -> None:
    signer, pub = keys
    rx, handled = receiver(pub)
    good = json.loads(wire(signer))

    def variant(**changes) -> bytes:
        return json.dumps({**good, **changes}).encode()

    tampered = dict(good["payload"], alert_id="a2")
    cases = {
        "malformed": [b"not json", b"[]", json.dumps({"type": "x"}).encode(), None],
        "unsigned": [
            variant(signature=""),
            json.dumps(
                {k: v for k, v in good.items() if k != "signature"} | {"signature": None}
            ).encode(),
        ],
        "bad_signature": [
            variant(payload=tampered),
            variant(target="sensor-2"),  # re-addressed after signing: the signature says no
            variant(signature=base64.b64encode(b"x" * 64).decode()),
            variant(signature="%%%"),
        ],
        "misaddressed": [wire(signer, target="sensor-2")],
        "expired": [wire(signer, now=NOW - 7200)],
        "not_yet_valid": [wire(signer, now=NOW + 7200)],
        "too_long": [wire(signer, lifetime_s=30 * 86400)],
    }
    for reason, messages in cases.items():
        for raw in messages:
            out = rx.handle(raw)
            if reason in control.ANSWERED_REFUSALS:
                # the province's own message for this sensor: it learns why nothing came
                assert [d["icsmon.control.status"] for d in out] == ["refused"], reason
                assert out[0]["icsmon.control.reason"] == reason
                assert out[0]["icsmon.control.request_id"] == json.loads(raw)["id"]
                assert rx.handle(raw) == []  # answered once
            else:
                assert out == [], reason  # anyone could send these: counted, never answered
        assert rx.counters[f"refused_{reason}"] >= len(messages), reason
    assert not handled


def test_a_type_the_sensor_has_no_handler_for_is_refused(keys) -> None:
    signer, pub = keys
    control.register("test.ping", "a test message")
    rx, _ = receiver(pub)
    out = rx.handle(wire(signer, type_="test.ping"))
    assert [(d["icsmon.control.status"], d["icsmon.control.reason"]) for d in out] == [
        ("refused", "unknown_type")
    ]
    assert rx.counters["refused_unknown_type"] == 1
    rx.on("test.ping", lambda env: [control.response_doc(env, "sensor-1", "ok", now=NOW)])
    assert rx.handle(wire(signer, type_="test.ping"))[0]["icsmon.control.status"] == "ok"
    with pytest.raises(ValueError, match="unregistered"):
        signer.envelope("no.such.type", "sensor-1", {})
    with pytest.raises(ValueError, match="unregistered"):
        Receiver("s", pub, {"no.such.type": lambda e: []})


def test_another_provinces_key_is_refused(keys, tmp_path: Path) -> None:
    _signer, pub = keys
    control.generate_keys(tmp_path / "other.key", tmp_path / "other.pub")
    rx, _ = receiver(pub)
    assert rx.handle(wire(Signer.from_file(tmp_path / "other.key"))) == []
    assert rx.counters["refused_bad_signature"] == 1


def test_payloads_have_one_canonical_form(keys) -> None:
    signer, _ = keys
    with pytest.raises(ValueError, match="canonical"):
        signer.envelope(control.EVIDENCE_REQUEST, "sensor-1", {"window": 1.5})
    a = control.canonical_bytes(
        {
            "type": "t",
            "id": "i",
            "target": "s",
            "issued_at": 1,
            "expires_at": 2,
            "payload": {"b": 1, "a": "é"},
        }
    )
    assert (
        a
        == '{"expires_at":2,"id":"i","issued_at":1,"payload":{"a":"é","b":1},"target":"s","type":"t"}'.encode()
    )


def test_a_failing_handler_answers_with_an_error(keys) -> None:
    signer, pub = keys

    def broken(env):
        raise RuntimeError("disk gone")

    rx = Receiver("sensor-1", pub, {control.EVIDENCE_REQUEST: broken}, clock=lambda: NOW)
    out = rx.handle(wire(signer))
    assert out[0]["icsmon.control.status"] == "error"
    assert "disk gone" in out[0]["icsmon.control.message"] and rx.counters["errors"] == 1


def test_bad_key_files_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ControlError, match="junk.pem: not a PEM"):
        control.load_public_key(tmp_path / "junk.pem")
    with pytest.raises(ControlError, match="cannot read"):
        control.load_private_key(tmp_path / "missing.key")
