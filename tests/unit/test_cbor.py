"""The drive's CBOR codec against cbor2, in both directions, and against hostile input."""

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sealkeep.protocol import cbor
from sealkeep.protocol.cbor import CBORError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

U64 = 2**64 - 1
ints = st.integers(min_value=-(2**64), max_value=U64) | st.sampled_from(
    [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, U64, -1, -24, -25, -(2**64)]
)
texts = st.text(max_size=40) | st.sampled_from(["", "a", "ü", "水", "\U0001f511", "\x00"])
leaves = st.none() | st.booleans() | ints | st.binary(max_size=300) | texts
keys = ints | st.text(max_size=12)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


values = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(keys, kids, max_size=6),
    max_leaves=30,
).filter(lambda v: _depth(v) <= cbor.MAX_DEPTH)


def tagged(value: object) -> Any:
    """A form of value where equal means same types too (True != 1, b"" != "")."""
    if isinstance(value, dict):
        return ("map", sorted((repr(tagged(k)), tagged(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", [tagged(v) for v in value])
    if isinstance(value, (bytearray, memoryview)):
        return ("bytes", bytes(value))
    return (type(value).__name__, value)


@SETTINGS
@given(values)
def test_our_encoding_is_cbor2_canonical(value: object) -> None:
    ours = cbor.encode(value)
    assert ours == cbor2.dumps(value, canonical=True)
    assert tagged(cbor2.loads(ours)) == tagged(value)


@SETTINGS
@given(values)
def test_we_decode_what_cbor2_encodes(value: object) -> None:
    assert tagged(cbor.decode(cbor2.dumps(value, canonical=True))) == tagged(value)
    # cbor2 without canonical ordering still gives shortest heads: decodes the same
    assert tagged(cbor.decode(cbor2.dumps(value))) == tagged(value)


@SETTINGS
@given(values)
def test_round_trip_and_views(value: object) -> None:
    data = cbor.encode(value)
    assert tagged(cbor.decode(data)) == tagged(value)
    assert tagged(cbor.decode(bytearray(data), views=True)) == tagged(value)
    assert tagged(cbor.decode(memoryview(data))) == tagged(value)
    out = bytearray(b"prefix")
    cbor.encode_into(value, out)
    assert out == b"prefix" + data


def test_views_point_into_the_input() -> None:
    data = bytearray(cbor.encode({1: b"abc", 2: [b"de"]}))
    body = cbor.decode(data, views=True)
    assert isinstance(body, dict)
    assert isinstance(body[1], memoryview)
    assert bytes(body[1]) == b"abc"
    data[data.index(b"abc")] = ord("X")
    assert bytes(body[1]) == b"Xbc"
    assert isinstance(cbor.decode(data)[1], bytes)  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "hexed"),
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (U64, "1bffffffffffffffff"),
        (-1, "20"),
        (-24, "37"),
        (-25, "3818"),
        (-(2**64), "3bffffffffffffffff"),
        (b"", "40"),
        (bytearray(b"\x01\x02"), "420102"),
        (memoryview(b"\x03"), "4103"),
        ("", "60"),
        ("ü", "62c3bc"),
        ((1, 2), "820102"),
        ({}, "a0"),
        (
            {"b": 1, "a": 2, 10: 3, -1: 4, "aa": 5},
            "a5" + "0a03" + "2004" + "6161" + "02" + "6162" + "01" + "626161" + "05",
        ),
        ({256: 0, 24: 0, 23: 0}, "a3" + "1700" + "181800" + "19010000"),
    ],
)
def test_known_encodings(value: object, hexed: str) -> None:
    assert cbor.encode(value).hex() == hexed
    if isinstance(value, memoryview):
        value = bytes(value)  # cbor2 writes a memoryview as an array of its items
    assert cbor2.dumps(value, canonical=True).hex() == hexed


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 1.0, {1, 2}, object(), {b"k": 1}.keys()])
def test_encoder_refuses(value: object) -> None:
    with pytest.raises(CBORError):
        cbor.encode(value)


REFUSED = {
    "half float": "f93c00",
    "single float": "fa47c35000",
    "double float": "fb3ff199999999999a",
    "simple value": "f0",
    "simple value 32": "f820",
    "undefined": "f7",
    "lone break": "ff",
    "tag 0": "c074323031332d30332d32315432303a30343a30305a",
    "bignum": "c249010000000000000000",
    "tag with 8-byte number": "db000000000000000100",
    "indefinite bytes": "5f42010243030405ff",
    "indefinite text": "7f657374726561646d696e67ff",
    "indefinite array": "9f01ff",
    "indefinite map": "bf6161016162ff",
    "reserved 28": "1c",
    "reserved 30": "3e",
    "empty input": "",
    "truncated argument": "1901",
    "truncated u64": "1b00000000000000",
    "truncated bytes": "4201",
    "truncated text": "6361",
    "truncated array": "830102",
    "truncated map": "a201020304"[:-2],
    "map missing a value": "a101",
    "trailing byte": "0000",
    "trailing after map": "a0f6",
    "huge byte string": "5bffffffffffffffff00",
    "huge text": "7affffffff00",
    "huge array": "9bffffffffffffffff",
    "huge map": "bbffffffffffffffff",
    "array count past the end": "99ffff01",
    "map count past the end": "b9ffff0101",
    "invalid UTF-8": "61ff",
    "truncated UTF-8": "62c328",
    "overlong UTF-8": "62c080",
    "surrogate": "63eda080",
    "beyond U+10FFFF": "64f4908080",
    "bool key": "a1f501",
    "null key": "a1f601",
    "bytes key": "a1410101",
    "array key": "a1800101",
    "map key": "a1a00101",
    "duplicate key": "a2010201f4",
    "duplicate text key": "a2616101616102",
    "nested arrays": "81" * (cbor.MAX_DEPTH + 1) + "00",
    "nested maps": "a101" * (cbor.MAX_DEPTH + 1) + "00",
    "very deep": "81" * 100_000,
}


@pytest.mark.parametrize("hexed", REFUSED.values(), ids=REFUSED.keys())
def test_decoder_refuses(hexed: str) -> None:
    with pytest.raises(CBORError):
        cbor.decode(bytes.fromhex(hexed))


def test_deepest_accepted_nesting() -> None:
    deepest = bytes.fromhex("81" * cbor.MAX_DEPTH + "00")
    value: object = 0
    for _ in range(cbor.MAX_DEPTH):
        value = [value]
    assert cbor.decode(deepest) == value
    assert cbor.encode(value) == deepest


def test_decoder_accepts_valid_non_ascii_text() -> None:
    for text in [
        "\u0080",
        "\u07ff",
        "\u0800",
        "\ud7ff",
        "\ue000",
        "\uffff",
        "\U00010000",
        "\U0010ffff",
        "bär \U0001f511 水",
    ]:
        assert cbor.decode(cbor2.dumps(text)) == text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_cbor_error(data: bytes) -> None:
    try:
        value = cbor.decode(data)
    except CBORError:
        return
    # whatever is accepted is valid CBOR that cbor2 reads the same way
    assert tagged(cbor2.loads(data)) == tagged(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data())
def test_damaged_encodings_decode_or_raise_cbor_error(value: object, data: st.DataObject) -> None:
    raw = bytearray(cbor.encode(value))
    action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if action == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif action == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = bytes([data.draw(st.integers(0, 255))])
    try:
        cbor.decode(bytes(raw))
    except CBORError:
        pass
