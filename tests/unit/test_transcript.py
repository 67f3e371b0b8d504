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


def test_transcript_hash_layout() -> None:
    x, y, ident = bytes(range(32)), bytes(range(100, 132)), bytes(range(200, 232))
    th = transcript.transcript_hash(transcript.ROLE_CUSTODIAN, "SK-ü1", x, y, ident)
    serial = "SK-ü1".encode()
    want = hashlib.sha256(
        b"sealkeep auth 2\x00\x01" + bytes([len(serial)]) + serial + x + y + ident
    )
    assert th == want.digest()
    assert serial[0:2] == b"SK" and len(serial) == 6  # UTF-8 length, not characters
    others = {
        transcript.transcript_hash(transcript.ROLE_OWNER, "SK-ü1", x, y, ident),
        transcript.transcript_hash(transcript.ROLE_CUSTODIAN, "SK-ü2", x, y, ident),
        transcript.transcript_hash(transcript.ROLE_CUSTODIAN, "SK-ü1", y, x, ident),
        transcript.transcript_hash(transcript.ROLE_CUSTODIAN, "SK-ü1", x, y, bytes(32)),
    }
    assert th not in others and len(others) == 4
    transcript.transcript_hash(0, "x" * 255, x, y, ident)
    with pytest.raises(ValueError):
        transcript.transcript_hash(0, "x" * 256, x, y, ident)


def test_derivations_are_labelled_hmacs() -> None:
    key = bytes(range(32))
    th = hashlib.sha256(b"th").digest()
    labels = [
        transcript.DRIVE_CONFIRM,
        transcript.HOST_CONFIRM,
        transcript.SESSION_H2D,
        transcript.SESSION_D2H,
        transcript.CLAIM_OWNER,
        transcript.CLAIM_CUSTODIAN,
    ]
    outputs = set()
    for label in labels:
        want = hmac.new(key, label + b"\x00" + th, hashlib.sha256).digest()
        assert derive(key, label, th) == want
        outputs.add(want)
    assert len(outputs) == len(labels)
    assert transcript.identity_message(th) == b"sealkeep drive identity\x00" + th


def test_mask_is_its_own_inverse() -> None:
    secret, pad = bytes(range(32)), hashlib.sha256(b"pad").digest()
    masked = transcript.mask(secret, pad)
    assert masked != secret and transcript.mask(masked, pad) == secret


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
    """Both ends derive the same confirmations and keys from one SPAKE2 key; another key
    does not."""
    key = bytes(range(32))
    th = transcript.transcript_hash(0, "SK1", b"\x11" * 32, b"\x22" * 32, b"\x33" * 32)
    host_confirm = derive(key, transcript.HOST_CONFIRM, th)
    assert equal(host_confirm, derive(key, transcript.HOST_CONFIRM, th))
    assert not equal(host_confirm, derive(b"\x00" * 32, transcript.HOST_CONFIRM, th))
    assert host_confirm != derive(key, transcript.DRIVE_CONFIRM, th)

    host_out = SessionMac(derive(key, transcript.SESSION_H2D, th))
    drive_in = SessionMac(derive(key, transcript.SESSION_H2D, th))
    drive_out = SessionMac(derive(key, transcript.SESSION_D2H, th))

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
