"""Frames on the wire: ``COBS(header | body | [mac] | crc32) 0x00``.

Header: version u8, message id u8, flags u8, sequence u16 big-endian (echoed by the reply).
Flag bit 0 says a 16-byte session MAC follows the body. The CRC32 (little-endian) covers
everything before it. This module is sans-I/O: bytes in, frames out, and the same code runs
on the host and on the drive, with preallocated buffers so the drive does not churn its heap.
"""

import binascii

VERSION = 1
HEADER_LEN = 5
MAC_LEN = 16
CRC_LEN = 4
FLAG_MAC = 0x01
DELIMITER = 0

# Largest decoded frame (header through CRC) either side sends by default; a drive
# advertises its own in HELLO and the host never sends more than that.
MAX_FRAME = 4096

# Reader results that are not frames.
OVERSIZE = 1
MALFORMED = 2


def encoded_size(frame_len: int) -> int:
    """Worst-case COBS length of a frame_len-byte frame, without the delimiter."""
    return frame_len + frame_len // 254 + 1


def cobs_encode_into(src: "bytes | bytearray", n: int, out: "bytearray | memoryview") -> int:
    """COBS-encode src[:n] into out; return the encoded length (no delimiter)."""
    smv = memoryview(src)
    i = 0
    o = 0
    while True:
        limit = i + 254
        if limit > n:
            limit = n
        z = src.find(b"\x00", i, limit)
        k = (limit - i) if z < 0 else (z - i)
        out[o] = k + 1
        out[o + 1 : o + 1 + k] = smv[i : i + k]
        o += k + 1
        i += k
        if z >= 0:
            i += 1
            if i == n:
                out[o] = 1
                return o + 1
        elif i >= n:
            return o


def cobs_encode(data: "bytes | bytearray") -> bytes:
    out = bytearray(encoded_size(len(data)))
    n = cobs_encode_into(data, len(data), out)
    return bytes(out[:n])


def cobs_decode_into(src: "bytes | bytearray", n: int, out: bytearray) -> int:
    """Decode COBS src[:n] into out; return the decoded length.

    Raises ValueError on a malformed block and OverflowError when out is too small.
    """
    # COBS never emits a zero, neither as a code nor inside a block: one scan refuses both.
    if src.find(b"\x00", 0, n) >= 0:
        raise ValueError("zero byte inside a COBS frame")
    smv = memoryview(src)
    cap = len(out)
    i = 0
    o = 0
    while i < n:
        code = src[i]
        k = code - 1
        if i + 1 + k > n:
            raise ValueError("COBS block runs past the end of the frame")
        if o + k > cap:
            raise OverflowError("frame too large")
        out[o : o + k] = smv[i + 1 : i + 1 + k]
        o += k
        i += 1 + k
        if code < 0xFF and i < n:
            if o >= cap:
                raise OverflowError("frame too large")
            out[o] = 0
            o += 1
    return o


def cobs_decode(data: "bytes | bytearray") -> bytes:
    out = bytearray(len(data))
    n = cobs_decode_into(data, len(data), out)
    return bytes(out[:n])


class FrameReader:
    """Reassemble frames from a byte stream.

    ``push(data, pos)`` consumes data[pos:] up to and including the next delimiter and
    returns ``(new_pos, result)``: result is None (need more bytes), a memoryview of the
    decoded frame (valid until the next push), ``OVERSIZE`` or ``MALFORMED``. Bytes of a
    frame longer than the maximum are counted, never buffered; any garbage ends at the next
    delimiter, where reading resynchronises.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.max_encoded = encoded_size(max_frame)
        self.raw = bytearray(self.max_encoded)
        self.rawmv = memoryview(self.raw)
        self.out = bytearray(max_frame)
        self.outmv = memoryview(self.out)
        self.n = 0
        self.skipping = False

    def reset(self) -> None:
        self.n = 0
        self.skipping = False

    def push(
        self, data: "bytes | bytearray", pos: int = 0, end: int = -1
    ) -> "tuple[int, memoryview | int | None]":
        if end < 0:
            end = len(data)
        idx = data.find(b"\x00", pos, end)
        stop = end if idx < 0 else idx
        count = stop - pos
        if count and not self.skipping:
            if self.n + count > self.max_encoded:
                self.skipping = True
                self.n = 0
            else:
                self.rawmv[self.n : self.n + count] = memoryview(data)[pos:stop]
                self.n += count
        if idx < 0:
            return end, None
        if self.skipping:
            self.skipping = False
            return idx + 1, OVERSIZE
        n = self.n
        self.n = 0
        if n == 0:
            return idx + 1, None  # idle delimiter between frames
        try:
            size = cobs_decode_into(self.raw, n, self.out)
        except OverflowError:
            return idx + 1, OVERSIZE
        except ValueError:
            return idx + 1, MALFORMED
        return idx + 1, self.outmv[:size]


class FrameError(Exception):
    """A frame that cannot be used; ``code`` is a protocol error code."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def parse_frame(
    frame: memoryview,
) -> "tuple[int, int, int, memoryview, memoryview | None, memoryview]":
    """Check a decoded frame and split it.

    Returns ``(msg_id, flags, seq, body, mac, signed)`` where body, mac and signed are
    memoryviews into frame; ``signed`` is header+body, what the session MAC covers; mac is
    None when the frame carries none. Raises FrameError with an error code.
    """
    from . import errors

    n = len(frame)
    if n < HEADER_LEN + CRC_LEN:
        raise FrameError(errors.MALFORMED_FRAME, "frame shorter than header and CRC")
    crc = int.from_bytes(bytes(frame[n - CRC_LEN : n]), "little")
    if binascii.crc32(frame[: n - CRC_LEN]) & 0xFFFFFFFF != crc:
        raise FrameError(errors.CRC, "CRC mismatch")
    if frame[0] != VERSION:
        raise FrameError(errors.UNSUPPORTED_VERSION, f"protocol version {frame[0]} not supported")
    flags = frame[2]
    seq = (frame[3] << 8) | frame[4]
    end = n - CRC_LEN
    mac = None
    if flags & FLAG_MAC:
        if end - HEADER_LEN < MAC_LEN:
            raise FrameError(errors.MALFORMED_FRAME, "frame too short for its MAC")
        mac = frame[end - MAC_LEN : end]
        end -= MAC_LEN
    return frame[1], flags, seq, frame[HEADER_LEN:end], mac, frame[:end]


class FrameWriter:
    """Build wire frames into preallocated buffers.

    ``begin(msg_id, seq, flags)`` returns a bytearray holding the header; append the CBOR
    body to it, then ``finish(frame, mac)`` adds the MAC and CRC, COBS-encodes and returns
    a memoryview of the wire bytes including the delimiter (valid until the next finish).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.frame = bytearray()
        self.wire = bytearray(encoded_size(max_frame) + 1)
        self.wiremv = memoryview(self.wire)

    def begin(self, msg_id: int, seq: int, flags: int = 0) -> bytearray:
        frame = self.frame
        frame[:] = b""
        frame.append(VERSION)
        frame.append(msg_id)
        frame.append(flags)
        frame.append((seq >> 8) & 0xFF)
        frame.append(seq & 0xFF)
        return frame

    def finish(self, frame: bytearray, mac: "bytes | None" = None) -> memoryview:
        if mac is not None:
            frame.extend(mac)
        frame.extend((binascii.crc32(frame) & 0xFFFFFFFF).to_bytes(4, "little"))
        if len(frame) > self.max_frame:
            raise FrameError(3, f"frame of {len(frame)} bytes exceeds {self.max_frame}")
        n = cobs_encode_into(frame, len(frame), self.wire)
        self.wire[n] = DELIMITER
        return self.wiremv[: n + 1]


def build_frame(
    msg_id: int, seq: int, body: bytes, mac: "bytes | None" = None, max_frame: int = 65535
) -> bytes:
    """One-shot frame builder for the host and for tests."""
    writer = FrameWriter(max_frame)
    frame = writer.begin(msg_id, seq, FLAG_MAC if mac is not None else 0)
    frame.extend(body)
    return bytes(writer.finish(frame, mac))


# Frame bytes that are not payload in the largest data-carrying frames (PUT_DATA with a
# 64-bit offset, DATA replies): header 5, CBOR map/keys/offset/bytes head 15, MAC 16, CRC 4.
DATA_OVERHEAD = 40


def payload_room(max_frame: int) -> int:
    """Most data bytes one PUT_DATA or DATA frame of max_frame bytes can carry."""
    room = max_frame - DATA_OVERHEAD
    if room > 0xFFFF:
        room -= 2  # a byte string of 64 KiB or more has a 5-byte head, not 3
    return room
