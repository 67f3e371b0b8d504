"""HMAC-SHA256 on hashlib alone, the authentication transcript and per-direction frame MACs."""

import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sealkeep.protocol import framing, transcript
from sealkeep.protocol.hmac256 import HMAC256, equal, hmac_sha256
from sealkeep.protocol.transcript import SessionMac, derive

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=200), st.lists(st.binary(max_size=300), max_size=5))
def test_hmac_matches_python(key: bytes, parts: list[bytes]) -> None:
    want = hmac.new(key, b"".join(parts), hashlib.sha256).digest()
    assert hmac_sha256(key, *parts) == want
    mac = HMAC256(key)
    views = [memoryview(p) for p in parts]
    assert mac.mac(*views) == want
    assert mac.mac(*[bytearray(p) for p in parts]) == want  # the pads are reusable


# RFC 4231 section 4: (key, data, HMAC-SHA-256)
RFC4231 = [
    (
        "0b" * 20,
        b"Hi There".hex(),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe".hex(),
        b"what do ya want for nothing?".hex(),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    ("aa" * 20, "dd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (
        "0102030405060708090a0b0c0d0e0f10111213141516171819",
        "cd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (
        "aa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        "aa" * 131,
        (
            b"This is a test using a larger than block-size key and a larger than "
            b"block-size data. The key needs to be hashed before being used by the "
            b"HMAC algorithm."
        ).hex(),
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


@pytest.mark.parametrize(("key", "data", "mac"), RFC4231)
def test_rfc4231(key: str, data: str, mac: str) -> None:
    assert hmac_sha256(bytes.fromhex(key), bytes.fromhex(data)).hex() == mac


def test_rfc4231_truncated() -> None:
    mac = hmac_sha256(b"\x0c" * 20, b"Test With Truncation")[:16]
    assert mac.hex() == "a3b6167473100ee06e0c796c2955552b"


def test_key_of_exactly_one_block_is_not_hashed() -> None:
    key = bytes(range(64))
    assert hmac_sha256(key, b"x") == hmac.new(key, b"x", hashlib.sha256).digest()
    assert hmac_sha256(key + b"\x00", b"x") != hmac_sha256(key, b"x")


@SETTINGS
@given(st.binary(max_size=40), st.binary(max_size=40))
def test_equal(a: bytes, b: bytes) -> None:
    assert equal(a, b) == (a == b)
    assert equal(memoryview(a), a)


def test_transcript_layout() -> None:
    host_nonce = bytes(range(32))
    drive_nonce = bytes(range(100, 132))
    tr = transcript.transcript("SK-ü1", transcript.ROLE_CUSTODIAN, host_nonce, drive_nonce)
    serial = "SK-ü1".encode()
    assert tr == bytes([len(serial)]) + serial + b"\x01" + host_nonce + drive_nonce
    assert tr[0] == 6  # UTF-8 length, not characters
    owner = transcript.transcript("SK-ü1", transcript.ROLE_OWNER, host_nonce, drive_nonce)
    assert owner != tr
    assert transcript.transcript("", 0, b"", b"") == b"\x00\x00"
    assert len(transcript.transcript("x" * 255, 0, b"", b"")) == 257
    with pytest.raises(ValueError):
        transcript.transcript("x" * 256, 0, b"", b"")


def test_derivations_are_labelled_hmacs() -> None:
    cred = bytes(range(32))
    tr = transcript.transcript("SK1", 0, b"h" * 32, b"d" * 32)
    labels = [
        transcript.HOST_PROOF,
        transcript.DRIVE_PROOF,
        transcript.SESSION_H2D,
        transcript.SESSION_D2H,
    ]
    outputs = set()
    for label in labels:
        want = hmac.new(cred, label + b"\x00" + tr, hashlib.sha256).digest()
        assert derive(cred, label, tr) == want
        outputs.add(want)
    assert len(outputs) == 4
    assert labels == [
        b"sealkeep host proof",
        b"sealkeep drive proof",
        b"sealkeep session h2d",
        b"sealkeep session d2h",
    ]


def test_session_mac_counters() -> None:
    key = b"K" * 32
    sm = SessionMac(key)
    signed = b"\x01\x14\x01\x00\x07\xa0"
    assert sm.counter == 0
    peeked = sm.peek(signed)
    assert sm.counter == 0
    tags = [sm.tag(signed) for _ in range(3)]
    assert sm.counter == 3
    assert tags[0] == peeked
    assert len(set(tags)) == 3  # a replayed frame carries a stale MAC
    for counter, tag in enumerate(tags):
        want = hmac.new(key, counter.to_bytes(8, "big") + signed, hashlib.sha256).digest()
        assert tag == want[:16]
    sm.counter = 2**64 - 1
    assert sm.peek(signed) == hmac.new(key, b"\xff" * 8 + signed, hashlib.sha256).digest()[:16]


@SETTINGS
@given(st.binary(min_size=5, max_size=100), st.integers(0, 2**40))
def test_session_mac_accepts_any_buffer(signed: bytes, counter: int) -> None:
    a = SessionMac(b"k" * 32)
    a.counter = counter
    b = SessionMac(b"k" * 32)
    b.counter = counter
    assert a.tag(bytearray(signed)) == b.tag(memoryview(signed))


def test_handshake_and_session() -> None:
    """Both ends derive the same proofs and keys; the wrong credential does not."""
    cred = bytes(range(32))
    host_nonce = b"\x11" * transcript.NONCE_LEN
    drive_nonce = b"\x22" * transcript.NONCE_LEN
    tr = transcript.transcript("SK1", transcript.ROLE_OWNER, host_nonce, drive_nonce)
    host_proof = derive(cred, transcript.HOST_PROOF, tr)
    assert equal(host_proof, derive(cred, transcript.HOST_PROOF, tr))
    assert not equal(host_proof, derive(b"\x00" * 32, transcript.HOST_PROOF, tr))
    assert host_proof != derive(cred, transcript.DRIVE_PROOF, tr)

    host_out = SessionMac(derive(cred, transcript.SESSION_H2D, tr))
    drive_in = SessionMac(derive(cred, transcript.SESSION_H2D, tr))
    drive_out = SessionMac(derive(cred, transcript.SESSION_D2H, tr))

    writer = framing.FrameWriter(256)
    frame = writer.begin(0x18, 3, framing.FLAG_MAC)
    frame.extend(b"\xa0")
    wire = bytes(writer.finish(frame, host_out.tag(frame)))
    raw = framing.cobs_decode(wire[:-1])
    _, _, _, _, mac, signed = framing.parse_frame(memoryview(raw))
    assert mac is not None
    assert equal(drive_in.peek(signed), mac)
    assert not equal(drive_out.peek(signed), mac)  # directions have their own keys
    drive_in.tag(signed)
    assert not equal(drive_in.peek(signed), mac)  # the same frame again is a replay
