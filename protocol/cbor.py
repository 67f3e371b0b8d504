"""A small CBOR codec for the drive (RFC 8949 subset).

Supported: unsigned and negative integers up to 64 bits, byte strings, text strings,
arrays, maps, false/true/null. Floats, tags, indefinite lengths, invalid UTF-8, map keys
other than integers and text, and duplicate map keys are refused, so a malformed or hostile
body is rejected early. Encoding is canonical: shortest heads, map keys sorted by length
then bytes (what ``cbor2.dumps(..., canonical=True)`` does).
"""

MAX_DEPTH = 8


class CBORError(ValueError):
    pass


def _head(major: int, n: int, out: bytearray) -> None:
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError("integer too large for CBOR")


def _encode(obj: object, out: bytearray) -> None:
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(0, obj, out)
        else:
            _head(1, -1 - obj, out)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(2, len(obj), out)
        out.extend(obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _head(3, len(raw), out)
        out.extend(raw)
    elif isinstance(obj, (list, tuple)):
        _head(4, len(obj), out)
        for item in obj:
            _encode(item, out)
    elif isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            kb = bytearray()
            _encode(key, kb)
            items.append((len(kb), bytes(kb), value))
        items.sort(key=lambda item: (item[0], item[1]))
        _head(5, len(items), out)
        for _, key_bytes, value in items:
            out.extend(key_bytes)
            _encode(value, out)
    else:
        raise CBORError("cannot encode " + type(obj).__name__)


def encode(obj: object) -> bytes:
    out = bytearray()
    _encode(obj, out)
    return bytes(out)


def encode_into(obj: object, out: bytearray) -> None:
    """Append the encoding of obj to out (lets the device reuse one buffer)."""
    _encode(obj, out)


def _utf8_ok(raw: bytes) -> bool:
    """Well-formed UTF-8 (RFC 3629): shortest forms, no surrogates, at most U+10FFFF."""
    n = len(raw)
    i = 0
    while i < n:
        c = raw[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            k = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if i + k >= n:
            return False
        if not lo <= raw[i + 1] <= hi:
            return False
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= raw[j] <= 0xBF:
                return False
        i += k + 1
    return True


class _Decoder:
    def __init__(self, data: "bytes | bytearray | memoryview", views: bool) -> None:
        self.mv = memoryview(data)
        self.pos = 0
        self.views = views

    def need(self, n: int) -> int:
        start = self.pos
        if n < 0 or n > len(self.mv) - start:
            raise CBORError("truncated CBOR")
        self.pos = start + n
        return start

    def argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            p = self.need(1)
            return int(self.mv[p])
        if info == 25:
            p = self.need(2)
            return int.from_bytes(bytes(self.mv[p : p + 2]), "big")
        if info == 26:
            p = self.need(4)
            return int.from_bytes(bytes(self.mv[p : p + 4]), "big")
        if info == 27:
            p = self.need(8)
            return int.from_bytes(bytes(self.mv[p : p + 8]), "big")
        raise CBORError("indefinite or reserved length")

    def item(self, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise CBORError("CBOR nested too deeply")
        p = self.need(1)
        initial = int(self.mv[p])
        major = initial >> 5
        info = initial & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 22:
                return None
            raise CBORError("unsupported CBOR simple value or float")
        n = self.argument(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            p = self.need(n)
            if self.views:
                return self.mv[p : p + n]
            return bytes(self.mv[p : p + n])
        if major == 3:
            p = self.need(n)
            raw = bytes(self.mv[p : p + n])
            try:
                text = str(raw, "utf-8")
            except Exception:
                raise CBORError("invalid UTF-8 in text string") from None
            # MicroPython's str() lets overlong forms and surrogates through; check non-ASCII.
            if len(text) != n and not _utf8_ok(raw):
                raise CBORError("invalid UTF-8 in text string")
            return text
        if major == 4:
            # Each element takes at least one byte: a count beyond what is left is a lie.
            if n > len(self.mv) - self.pos:
                raise CBORError("truncated CBOR")
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            if 2 * n > len(self.mv) - self.pos:
                raise CBORError("truncated CBOR")
            result = {}
            for _ in range(n):
                key = self.item(depth + 1)
                if not isinstance(key, (int, str)) or key is True or key is False:
                    raise CBORError("map keys must be integers or text")
                if key in result:
                    raise CBORError("duplicate map key")
                result[key] = self.item(depth + 1)
            return result
        raise CBORError("CBOR tags are not supported")


def decode(data: "bytes | bytearray | memoryview", views: bool = False) -> object:
    """Decode exactly one CBOR item filling all of data.

    With views=True byte strings come back as memoryview slices of data (no copy); they are
    valid only as long as data is not overwritten.
    """
    dec = _Decoder(data, views)
    obj = dec.item(0)
    if dec.pos != len(dec.mv):
        raise CBORError("trailing bytes after CBOR item")
    return obj
