"""COBS, the sans-I/O frame reader and writer, and frame parsing."""

import binascii
import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sealkeep.protocol import cbor, errors, framing
from sealkeep.protocol.framing import (
    MALFORMED,
    OVERSIZE,
    FrameError,
    FrameReader,
    FrameWriter,
    build_frame,
    cobs_decode,
    cobs_encode,
    parse_frame,
)

SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=SLOW)

# Byte strings rich in zeros and long non-zero runs, the cases COBS cares about.
payloads = st.binary(max_size=700) | st.lists(st.sampled_from([0, 1, 0xFF]), max_size=700).map(
    bytes
)


@SETTINGS
@given(payloads)
def test_cobs_round_trip(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= framing.encoded_size(len(data))
    assert cobs_decode(enc) == data


@pytest.mark.parametrize(
    ("plain", "encoded"),
    [
        ("", "01"),
        ("00", "0101"),
        ("0000", "010101"),
        ("001100", "01021101"),
        ("11220033", "0311220233"),
        ("11223344", "0511223344"),
        ("11000000", "0211010101"),
        (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
        ("00" + bytes(range(1, 255)).hex(), "01ff" + bytes(range(1, 255)).hex()),
        (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff"),
        (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "0101"),
        (bytes(range(3, 256)).hex() + "0001", "fe" + bytes(range(3, 256)).hex() + "0201"),
    ],
)
def test_cobs_vectors(plain: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(plain)).hex() == encoded
    assert cobs_decode(bytes.fromhex(encoded)).hex() == plain


@pytest.mark.parametrize("broken", ["05112233", "00", "0300", "02", "030100", "0201000201"])
def test_cobs_decode_refuses_broken_blocks(broken: str) -> None:
    with pytest.raises(ValueError):
        cobs_decode(bytes.fromhex(broken))


def test_cobs_decode_into_overflow() -> None:
    out = bytearray(3)
    enc = cobs_encode(b"\x01\x02\x03\x04")
    with pytest.raises(OverflowError):
        framing.cobs_decode_into(enc, len(enc), out)
    enc = cobs_encode(b"\x01\x02\x03\x00")  # the implied zero does not fit either
    with pytest.raises(OverflowError):
        framing.cobs_decode_into(enc, len(enc), out)


def read_stream(reader: FrameReader, chunks: list[bytes]) -> list[bytes | int]:
    """Push every chunk; collect frames (copied) and OVERSIZE/MALFORMED markers."""
    out: list[bytes | int] = []
    raw_len = len(reader.raw)
    for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            new_pos, result = reader.push(chunk, pos)
            assert pos < new_pos <= len(chunk)
            pos = new_pos
            assert len(reader.raw) == raw_len
            assert reader.n <= reader.max_encoded
            if result is None:
                continue
            out.append(result if isinstance(result, int) else bytes(result))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


frames_st = st.lists(st.binary(min_size=1, max_size=300), max_size=8)


@SETTINGS
@given(frames_st, st.lists(st.integers(0, 10_000), max_size=20), st.booleans())
def test_reader_any_chunking(frames: list[bytes], cuts: list[int], idle: bool) -> None:
    sep = b"\x00\x00" if idle else b"\x00"
    stream = b"".join(cobs_encode(f) + sep for f in frames)
    assert read_stream(FrameReader(512), split(stream, cuts)) == frames


@SETTINGS
@given(frames_st, st.binary(max_size=200), st.lists(st.integers(0, 10_000), max_size=10))
def test_reader_resyncs_after_garbage(frames: list[bytes], garbage: bytes, cuts: list[int]) -> None:
    # Garbage, e.g. the tail of a frame the reader joined halfway, ends at the next 0x00.
    garbage = garbage.replace(b"\x00", b"")
    stream = garbage + b"\x00" + b"".join(cobs_encode(f) + b"\x00" for f in frames)
    got = read_stream(FrameReader(256), split(stream, cuts))
    if garbage:
        assert len(got) == len(frames) + 1
        assert got[0] in (MALFORMED, OVERSIZE) or isinstance(got[0], bytes)
        got = got[1:]
    assert got == frames


def test_reader_idle_delimiters_and_empty_frame() -> None:
    reader = FrameReader(64)
    assert reader.push(b"\x00\x00\x00") == (1, None)
    assert read_stream(reader, [b"\x00\x00", b"\x01\x00"]) == [b""]


def test_reader_reports_malformed() -> None:
    assert read_stream(FrameReader(64), [b"\x05ab\x00", b"\x02a\x00"]) == [MALFORMED, b"a"]


def check_size_limit(max_frame: int, biggest: bytes, too_big: bytes) -> None:
    reader = FrameReader(max_frame)
    raw_len = len(reader.raw)
    worst = b"\xff" * max_frame  # longest COBS encoding of an acceptable frame
    zeros = b"\x00" * (max_frame + 1)  # shortest COBS encoding of an oversize frame
    stream = [cobs_encode(f) + b"\x00" for f in (biggest, too_big, worst, zeros, b"ok")]
    assert read_stream(reader, stream) == [biggest, OVERSIZE, worst, OVERSIZE, b"ok"]
    assert len(reader.raw) == raw_len


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(st.integers(8, 1200), st.data())
def test_reader_size_limit(max_frame: int, data: st.DataObject) -> None:
    biggest = data.draw(st.binary(min_size=max_frame, max_size=max_frame))
    too_big = data.draw(st.binary(min_size=max_frame + 1, max_size=max_frame + 300))
    check_size_limit(max_frame, biggest, too_big)


@pytest.mark.parametrize("max_frame", [framing.MAX_FRAME, 8192, 65535])
def test_reader_size_limit_large(max_frame: int) -> None:
    rng = random.Random(max_frame)
    for extra in (1, 17, 300):
        check_size_limit(max_frame, rng.randbytes(max_frame), rng.randbytes(max_frame + extra))


def test_oversize_stream_never_buffered() -> None:
    reader = FrameReader(4096)
    raw_len = len(reader.raw)
    chunk = b"\x55" * 65536
    for _ in range(64):  # 4 MiB with no delimiter
        assert reader.push(chunk) == (len(chunk), None)
        assert len(reader.raw) == raw_len
        assert reader.n <= reader.max_encoded
    good = build_frame(1, 1, b"\xa0")
    assert read_stream(reader, [b"\x55\x00" + good]) == [OVERSIZE, cobs_decode(good[:-1])]


def test_reader_reset_drops_partial_frame() -> None:
    reader = FrameReader(64)
    reader.push(b"\x03ab")
    reader.reset()
    assert read_stream(reader, [b"\x02z\x00"]) == [b"z"]
    reader.push(b"\x55" * 200)
    assert reader.skipping
    reader.reset()
    assert read_stream(reader, [b"\x02z\x00"]) == [b"z"]


def test_reader_push_window() -> None:
    reader = FrameReader(64)
    buf = b"junk" + cobs_encode(b"abc") + b"\x00" + b"more"
    assert reader.push(buf, 4, 4 + 5) == (9, memoryview(b"abc"))
    assert reader.push(buf, 9, 9) == (9, None)


def decoded(wire: bytes) -> memoryview:
    assert wire[-1] == 0
    assert 0 not in wire[:-1]
    return memoryview(cobs_decode(wire[:-1]))


@SETTINGS
@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
    st.none() | st.binary(min_size=16, max_size=16),
)
def test_build_and_parse(msg_id: int, seq: int, body: bytes, mac: bytes | None) -> None:
    wire = build_frame(msg_id, seq, body, mac)
    frame = decoded(wire)
    got_id, flags, got_seq, got_body, got_mac, signed = parse_frame(frame)
    assert (got_id, got_seq, bytes(got_body)) == (msg_id, seq, body)
    assert flags == (framing.FLAG_MAC if mac else 0)
    assert (None if got_mac is None else bytes(got_mac)) == mac
    header = bytes([framing.VERSION, msg_id, flags, seq >> 8, seq & 0xFF])
    assert bytes(signed) == header + body
    crc = binascii.crc32(bytes(frame[:-4])).to_bytes(4, "little")
    assert bytes(frame) == header + body + (mac or b"") + crc


@SETTINGS
@given(st.binary(max_size=100), st.data())
def test_any_damage_is_a_crc_error(body: bytes, data: st.DataObject) -> None:
    frame = bytearray(decoded(build_frame(0x12, 7, body, b"m" * 16)))
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FrameError) as info:
        parse_frame(memoryview(frame))
    assert info.value.code == errors.CRC


def with_crc(raw: bytes) -> memoryview:
    return memoryview(raw + binascii.crc32(raw).to_bytes(4, "little"))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (memoryview(b""), errors.MALFORMED_FRAME),
        (memoryview(b"\x01\x01\x00\x00\x01\x00\x00\x00"), errors.MALFORMED_FRAME),
        (with_crc(b"\x01\x01\x00\x00"), errors.MALFORMED_FRAME),
        (with_crc(b"\x02\x01\x00\x00\x01\xa0"), errors.UNSUPPORTED_VERSION),
        (with_crc(b"\x00\x01\x00\x00\x01\xa0"), errors.UNSUPPORTED_VERSION),
        (with_crc(b"\x01\x01\x01\x00\x01" + b"m" * 15), errors.MALFORMED_FRAME),
    ],
    ids=["empty", "short", "header only", "version 2", "version 0", "short MAC"],
)
def test_parse_refuses(frame: memoryview, code: int) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(frame)
    assert info.value.code == code
    assert info.value.text


def test_parse_mac_only_and_flag_bits() -> None:
    _, flags, _, body, mac, signed = parse_frame(with_crc(b"\x01\x05\x01\x00\x02" + b"m" * 16))
    assert (flags, bytes(body), mac is not None and bytes(mac)) == (1, b"", b"m" * 16)
    assert bytes(signed) == b"\x01\x05\x01\x00\x02"
    # other flag bits are carried, not interpreted
    _, flags, _, body, mac, _ = parse_frame(with_crc(b"\x01\x05\x80\x00\x02\xa0"))
    assert (flags, bytes(body), mac) == (0x80, b"\xa0", None)


def test_writer_reuses_buffers_and_matches_build_frame() -> None:
    writer = FrameWriter(256)
    first = writer.begin(0x81, 0x0102)
    assert bytes(first) == b"\x01\x81\x00\x01\x02"
    cbor.encode_into({1: 1}, first)
    wire1 = bytes(writer.finish(first))
    assert wire1 == build_frame(0x81, 0x0102, cbor.encode({1: 1}))
    second = writer.begin(0x92, 9, framing.FLAG_MAC)
    assert second is first
    second.extend(b"\xa0")
    wire2 = writer.finish(second, b"M" * 16)
    assert bytes(wire2) == build_frame(0x92, 9, b"\xa0", b"M" * 16)
    assert wire2.obj is writer.wire


def test_writer_refuses_oversize() -> None:
    writer = FrameWriter(64)
    frame = writer.begin(0x92, 1)
    frame.extend(b"x" * (64 - 9))
    assert len(decoded(bytes(writer.finish(frame)))) == 64
    frame = writer.begin(0x92, 1)
    frame.extend(b"x" * (64 - 8))
    with pytest.raises(FrameError) as info:
        writer.finish(frame)
    assert info.value.code == errors.FRAME_TOO_LARGE
    with pytest.raises(FrameError):
        build_frame(1, 1, b"x" * 100, max_frame=100)


@pytest.mark.parametrize("max_frame", [64, 256, 4096, 65535, 65575, 65576, 65580, 1 << 20])
def test_payload_room_fits_the_biggest_data_frames(max_frame: int) -> None:
    room = framing.payload_room(max_frame)
    assert room >= max_frame - framing.DATA_OVERHEAD - 2
    mac = b"m" * 16
    put = cbor.encode({1: 2**64 - 1, 2: b"\xff" * room})
    data = cbor.encode({1: b"\xff" * room})
    for body in (put, data):
        size = framing.HEADER_LEN + len(body) + framing.MAC_LEN + framing.CRC_LEN
        assert size <= max_frame
        build_frame(0x14, 1, body, mac, max_frame=max_frame)  # does not raise
