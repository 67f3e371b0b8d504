"""Our COBS against the `cobs` package: the same inputs accepted, the same bytes out.

The reference is strict: a zero byte anywhere in an encoded frame (as a code or inside a
block) and a block running past the end are refused. Our decoder must refuse exactly those
and decode everything else to the same bytes, and our encoder must agree byte for byte.
"""

import itertools
import random

import pytest
from cobs import cobs as reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sealkeep.protocol.framing import cobs_decode, cobs_encode

SETTINGS = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reference_decode(data: bytes) -> bytes | None:
    """The reference's answer: the decoded bytes, or None when it refuses the input."""
    try:
        return bytes(reference.decode(data))
    except reference.DecodeError:
        return None


def ours(data: bytes) -> bytes | None:
    try:
        return cobs_decode(data)
    except ValueError:
        return None


def describe(answer: bytes | None) -> str:
    return "refused" if answer is None else answer.hex()[:200]


def assert_decoders_agree(data: bytes) -> None:
    want = reference_decode(data)
    got = ours(data)
    assert got == want, f"{data.hex()[:200]}: reference {describe(want)}, ours {describe(got)}"


# Bytes that matter to COBS: zero, the smallest codes, the largest codes.
edge_bytes = st.sampled_from([0x00, 0x01, 0x02, 0x03, 0xFE, 0xFF])
raw_inputs = (
    st.binary(max_size=600)
    | st.lists(edge_bytes, max_size=600).map(bytes)
    | st.lists(edge_bytes | st.integers(0, 255), max_size=40).map(bytes)
)


@st.composite
def damaged_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with a zero put inside, a byte changed, or its end cut or extended."""
    plain = draw(st.binary(max_size=600) | st.lists(edge_bytes, max_size=600).map(bytes))
    enc = bytearray(reference.encode(plain))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(enc)))
        action = draw(st.sampled_from(["zero", "set", "cut", "extend", "insert"]))
        if action == "zero" and where < len(enc):
            enc[where] = 0
        elif action == "set" and where < len(enc):
            enc[where] = draw(st.integers(0, 255))
        elif action == "cut":
            del enc[where:]
        elif action == "extend":
            enc.extend(draw(st.binary(min_size=1, max_size=4)))
        else:
            enc.insert(where, draw(edge_bytes))
    return bytes(enc)


@SETTINGS
@given(raw_inputs | damaged_encodings())
def test_decoder_accepts_exactly_what_the_reference_accepts(data: bytes) -> None:
    assert_decoders_agree(data)


@SETTINGS
@given(st.binary(max_size=1200) | st.lists(edge_bytes, max_size=1200).map(bytes))
def test_encoder_matches_the_reference(plain: bytes) -> None:
    enc = cobs_encode(plain)
    assert enc == reference.encode(plain)
    assert cobs_decode(enc) == plain


def test_every_input_of_up_to_two_bytes() -> None:
    for n in range(3):
        for data in itertools.product(range(256), repeat=n):
            assert_decoders_agree(bytes(data))


def test_every_input_of_up_to_five_edge_bytes() -> None:
    for n in range(6):
        for data in itertools.product([0x00, 0x01, 0x02, 0x03, 0x04, 0xFF], repeat=n):
            assert_decoders_agree(bytes(data))


def test_long_blocks_around_the_254_byte_limit() -> None:
    rng = random.Random(0xC0B5)
    for run in (252, 253, 254, 255):
        body = bytes(rng.randrange(1, 256) for _ in range(run))
        for code in (run, run + 1, run + 2, 0xFE, 0xFF):
            if code > 0xFF:
                continue
            for tail in (b"", b"\x01", b"\x02\x07", b"\x00", b"\x01\x00"):
                assert_decoders_agree(bytes([code]) + body + tail)
                inside = bytearray([code]) + body + tail
                inside[1 + rng.randrange(run)] = 0
                assert_decoders_agree(bytes(inside))


@pytest.mark.parametrize(
    "encoded",
    [
        "030100",  # a zero inside a block's data
        "0300",  # a zero where the block's second byte belongs
        "0100",  # a zero after a complete block
        "0201" + "00" + "0201",  # a zero between two blocks
        "ff" + "01" * 253 + "00",  # a zero at the end of a full block
    ],
)
def test_zero_inside_a_frame_is_refused_like_the_reference(encoded: str) -> None:
    data = bytes.fromhex(encoded)
    assert reference_decode(data) is None
    with pytest.raises(ValueError, match="zero byte"):
        cobs_decode(data)
