"""The direct attribute reads of the HSM listing, against a fake C_GetAttributeValue.

The fake follows PKCS#11 v2.40 (each entry gets its value, or CK_UNAVAILABLE_INFORMATION
with ATTRIBUTE_TYPE_INVALID / ATTRIBUTE_SENSITIVE / BUFFER_TOO_SMALL), or, as some tokens
do, refuses a template with one unknown attribute without touching the others.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

import pytest
from sealkeep import hsm_raw

OK = 0x0
SENSITIVE = 0x11
TYPE_INVALID = 0x12
BUFFER_TOO_SMALL = 0x150
UNAVAILABLE = hsm_raw.CK_UNAVAILABLE

LABEL, ID, VALUE, SECRET = 0x3, 0x102, 0x11, 0x163
TOKEN, SIGN = 0x1, 0x108  # a CK_BBOOL each


class FakeToken:
    """Objects as ``handle -> {attribute: value}``; ``SECRET`` is always sensitive."""

    def __init__(self, objects: dict[int, dict[int, bytes]], *, strict: bool = False) -> None:
        self.objects = objects
        self.strict = strict  # refuse the whole template for one unknown attribute
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, session: int, handle: int, array: Any, count: int) -> int:
        entries = [array[i] for i in range(count)]
        self.calls.append(tuple(e.type for e in entries))
        values = self.objects[handle]
        if self.strict and count > 1 and any(e.type not in values for e in entries):
            return TYPE_INVALID
        rv = OK
        for entry in entries:
            if entry.type == SECRET:
                entry.ulValueLen = UNAVAILABLE
                rv = rv or SENSITIVE
            elif entry.type not in values:
                entry.ulValueLen = UNAVAILABLE
                rv = rv or TYPE_INVALID
            elif not entry.pValue:
                entry.ulValueLen = len(values[entry.type])
            elif entry.ulValueLen < len(values[entry.type]):
                entry.ulValueLen = UNAVAILABLE
                rv = rv or BUFFER_TOO_SMALL
            else:
                data = values[entry.type]
                ctypes.memmove(entry.pValue, data, len(data))
                entry.ulValueLen = len(data)
        return rv


def raw_module(token: FakeToken) -> hsm_raw.RawModule:
    module = hsm_raw.RawModule.__new__(hsm_raw.RawModule)
    module._get = token
    module._templates = {}
    module._lock = threading.Lock()
    return module


def test_one_call_reads_every_attribute_the_object_has() -> None:
    token = FakeToken({7: {LABEL: b"aes-1", ID: b"\x01", TOKEN: b"\x01"}})
    got = raw_module(token).read(1, 7, (LABEL, ID, TOKEN, SIGN))
    assert got == {LABEL: b"aes-1", ID: b"\x01", TOKEN: b"\x01"}
    assert token.calls == [(LABEL, ID, TOKEN, SIGN)]


def test_unavailable_values_that_could_be_long_have_their_lengths_asked() -> None:
    """An entry too long for its room reads unavailable, like an absent or sensitive one."""
    token = FakeToken({7: {LABEL: b"aes-1", ID: b"\x01"}})
    got = raw_module(token).read(1, 7, (LABEL, ID, SIGN, VALUE, SECRET))
    assert got == {LABEL: b"aes-1", ID: b"\x01"}
    # SIGN, absent, and SECRET (0x163, CKA_LOCAL), sensitive here, are CK_BBOOLs: never long.
    assert token.calls == [(LABEL, ID, SIGN, VALUE, SECRET), (VALUE,)]


def test_a_long_value_is_read_when_the_token_answers_for_another_entry() -> None:
    """openCryptoki answers CKR_ATTRIBUTE_TYPE_INVALID for an absent attribute and leaves a
    value too long for its room unavailable, without CKR_BUFFER_TOO_SMALL."""
    big = bytes(range(256)) * 40
    token = FakeToken({7: {LABEL: b"cert", VALUE: big}})
    got = raw_module(token).read(1, 7, (LABEL, ID, VALUE))
    assert got == {LABEL: b"cert", VALUE: big}


def test_empty_values_are_values() -> None:
    token = FakeToken({7: {LABEL: b"", ID: b""}})
    assert raw_module(token).read(1, 7, (LABEL, ID)) == {LABEL: b"", ID: b""}


def test_values_larger_than_the_room_are_read_in_two_calls() -> None:
    big = bytes(range(256)) * 40
    assert len(big) > hsm_raw.VALUE_ROOM
    token = FakeToken({7: {LABEL: b"cert", VALUE: big}})
    got = raw_module(token).read(1, 7, (LABEL, VALUE, ID))
    assert got == {LABEL: b"cert", VALUE: big}
    assert len(token.calls) == 3  # the refused one, then lengths, then values


def test_a_template_refused_whole_is_read_one_by_one() -> None:
    token = FakeToken({7: {LABEL: b"aes-1", ID: b"\x01"}}, strict=True)
    got = raw_module(token).read(1, 7, (LABEL, VALUE, ID))
    assert got == {LABEL: b"aes-1", ID: b"\x01"}
    assert (LABEL,) in token.calls and (VALUE,) in token.calls


def test_the_reusable_template_is_reset_between_objects() -> None:
    token = FakeToken({7: {LABEL: b"a much longer label"}, 8: {LABEL: b"short", ID: b"\x02"}})
    module = raw_module(token)
    assert module.read(1, 7, (LABEL, ID)) == {LABEL: b"a much longer label"}
    assert module.read(1, 8, (LABEL, ID)) == {LABEL: b"short", ID: b"\x02"}
    assert module.read(1, 7, (LABEL, ID)) == {LABEL: b"a much longer label"}


def test_a_module_that_cannot_be_loaded_is_reported_for_the_fallback(tmp_path: Any) -> None:
    missing = tmp_path / "no-such-module.so"
    with pytest.raises(hsm_raw.RawError):
        hsm_raw.RawModule(str(missing))
    not_pkcs11 = ctypes.util.find_library("m")  # a library without C_GetFunctionList
    if not_pkcs11 is not None:
        with pytest.raises(hsm_raw.RawError):
            hsm_raw.RawModule(not_pkcs11)


def _entry_bytes(entry: Any) -> bytes:
    return ctypes.string_at(entry.pValue, entry.ulValueLen)


def test_a_packed_template_points_each_attribute_at_its_value() -> None:
    secret = bytearray(b"\x11" * 32)
    template: hsm_raw.RawTemplate = {
        0x001: True,  # CKA_TOKEN
        0x100: 0x1F,  # CKA_KEY_TYPE
        0x003: "aes-00001",  # CKA_LABEL
        0x102: b"",  # CKA_ID, empty
        0x011: secret,  # CKA_VALUE: read in place
        0x40000211: {0x104: True, 0x162: False},  # CKA_UNWRAP_TEMPLATE
    }
    packed = hsm_raw.PackedTemplate(template)
    entries = packed.array
    assert packed.count == 6 and [entries[i].type for i in range(6)] == list(template)
    assert _entry_bytes(entries[0]) == b"\x01"
    assert _entry_bytes(entries[1]) == bytes(hsm_raw.CK_ULONG(0x1F))
    assert _entry_bytes(entries[2]) == b"aes-00001"
    assert entries[3].ulValueLen == 0 and entries[3].pValue
    # The key value is the caller's own buffer: no copy of it is made.
    assert entries[4].pValue == ctypes.addressof(ctypes.c_char.from_buffer(secret))
    inner = (hsm_raw.CkAttribute * 2).from_address(entries[5].pValue)
    assert [inner[0].type, inner[1].type] == [0x104, 0x162]
    assert [_entry_bytes(inner[0]), _entry_bytes(inner[1])] == [b"\x01", b"\x00"]
    # Values a module may read as a CK_ULONG in place sit at 8-byte boundaries.
    assert all(entries[i].pValue % 8 == 0 for i in (0, 1, 2, 3))
