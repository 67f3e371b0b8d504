"""The backup set container: header readable without the HSM, sealed body, tamper detection."""

from __future__ import annotations

import dataclasses
import secrets
import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sealkeep import manifest as manifest_module
from sealkeep.manifest import (
    FORMAT_COMPRESSED,
    MAGIC,
    PREFIX_LEN,
    AesGcmSealer,
    Attributes,
    KeyEntry,
    Manifest,
    ManifestError,
    SkippedEntry,
    TokenInfo,
    header_length,
    read_header,
    seal,
    unseal,
)

TOKEN = TokenInfo(slot_id=7, label="payments", serial="0123456789abcdef", model="SoftHSM v2")
CKA_CLASS, CKA_LABEL, CKA_ID, CKA_KEY_TYPE = 0x000, 0x003, 0x102, 0x100


def entry(label: str, ident: bytes, wrapped: bytes | None = b"\x01" * 40) -> KeyEntry:
    return KeyEntry(
        {CKA_CLASS: 4, CKA_KEY_TYPE: 0x1F, CKA_LABEL: label, CKA_ID: ident, 0x104: True},
        wrapped,
    )


def sample(n: int = 3) -> Manifest:
    return Manifest.new(
        label="nightly",
        token=TOKEN,
        domain_id=b"D" * 16,
        wrapped_kek=b"K" * 40,
        entries=[entry(f"key-{i}", bytes([i])) for i in range(n)]
        + [KeyEntry({CKA_CLASS: 2, CKA_LABEL: "pub", 0x120: b"\x01\x00\x01"}, None)],
        skipped=[SkippedEntry(4, "local", b"\x09", "not extractable")],
        created=1_700_000_000,
    )


@pytest.fixture
def sealer() -> AesGcmSealer:
    return AesGcmSealer(secrets.token_bytes(32))


def test_round_trip(sealer: AesGcmSealer) -> None:
    m = sample()
    blob = seal(m, sealer)
    assert blob.startswith(MAGIC)
    assert unseal(blob, sealer) == m
    assert m.entries[0].label == "key-0" and m.entries[0].id == b"\x00"
    assert m.entries[0].object_class == 4 and m.entries[0].key_type == 0x1F
    assert m.entries[-1].wrapped is None


def test_sets_with_a_manifest_key_are_format_2_and_older_ones_format_1(
    sealer: AesGcmSealer,
) -> None:
    old = sample()
    new = dataclasses.replace(old, wrapped_manifest_key=b"M" * 40)
    old_blob, new_blob = seal(old, sealer), seal(new, sealer)
    assert old_blob[len(MAGIC)] == 1 and new_blob[len(MAGIC)] == 2
    assert read_header(old_blob).wrapped_manifest_key is None
    assert read_header(new_blob).wrapped_manifest_key == b"M" * 40
    assert unseal(new_blob, sealer) == new and unseal(old_blob, sealer) == old
    # The format byte is authenticated: a format-2 set passed off as format 1 fails.
    forged = new_blob[: len(MAGIC)] + b"\x01" + new_blob[len(MAGIC) + 1 :]
    with pytest.raises(ManifestError):
        unseal(forged, sealer)


def test_new_sets_are_format_4_with_the_body_compressed_before_it_is_sealed(
    sealer: AesGcmSealer,
) -> None:
    made = Manifest.new(
        label="nightly",
        token=TOKEN,
        domain_id=b"D" * 16,
        wrapped_kek=b"K" * 40,
        wrapped_manifest_key=b"M" * 40,
        entries=[
            entry(f"key-{i:04d}", i.to_bytes(2, "big"), secrets.token_bytes(40)) for i in range(500)
        ],
    )
    blob = seal(made, sealer)
    assert blob[len(MAGIC)] == FORMAT_COMPRESSED and read_header(blob).compressed
    assert unseal(blob, sealer) == made
    # Attributes repeat from key to key: the set takes well under the room of format 2.
    plain = seal(dataclasses.replace(made, compressed=False), sealer)
    assert plain[len(MAGIC)] == 2 and len(blob) < 0.6 * len(plain)
    # The format byte is authenticated: a format-4 set passed off as format 2 fails.
    for forged_format in (b"\x02", b"\x03"):
        forged = blob[: len(MAGIC)] + forged_format + blob[len(MAGIC) + 1 :]
        with pytest.raises(ManifestError):
            unseal(forged, sealer)


def test_a_format_4_body_that_does_not_decompress_whole_is_refused(
    sealer: AesGcmSealer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = dataclasses.replace(sample(2), wrapped_manifest_key=b"M" * 40, compressed=True)
    prefix = seal(made, sealer)[: header_length(seal(made, sealer))]
    whole = zlib.compress(made.body())
    for body, message in (
        (b"not deflate at all", "does not decompress"),
        (whole[:-5], "not one whole compressed stream"),
        (whole + b"trailing", "not one whole compressed stream"),
    ):
        with pytest.raises(ManifestError, match=message):
            unseal(prefix + sealer.seal(body, prefix), sealer)
    # A body that inflates past the bound is refused before it fills the memory.
    monkeypatch.setattr(manifest_module, "MAX_BODY_LEN", 64)
    with pytest.raises(ManifestError, match="decompresses past 64 bytes"):
        unseal(prefix + sealer.seal(whole, prefix), sealer)


def test_header_is_readable_without_the_key(sealer: AesGcmSealer) -> None:
    m = sample(5)
    blob = seal(m, sealer)
    header = read_header(blob)
    assert header == m.header
    assert header.key_count == 6
    assert (header.label, header.created, header.token, header.domain_id) == (
        "nightly",
        1_700_000_000,
        TOKEN,
        b"D" * 16,
    )
    assert header.wrapped_kek == b"K" * 40
    assert header.set_id_hex == m.set_id_hex and len(m.set_id) == 16
    # The header alone (the first bytes of the object on a drive) is enough.
    end = header_length(blob[:PREFIX_LEN])
    assert read_header(blob[:end]) == header
    with pytest.raises(ManifestError, match="truncated"):
        read_header(blob[: end - 1])


def test_the_body_is_not_readable_without_the_key(sealer: AesGcmSealer) -> None:
    blob = seal(sample(), sealer)
    end = header_length(blob)
    assert b"key-0" not in blob[end:]
    assert b"not extractable" not in blob


def test_sets_have_fresh_ids_and_times() -> None:
    a = Manifest.new(label="", token=TOKEN, domain_id=b"", wrapped_kek=b"")
    b = Manifest.new(label="", token=TOKEN, domain_id=b"", wrapped_kek=b"")
    assert a.set_id != b.set_id
    assert a.created > 1_600_000_000


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_detected(data: st.DataObject) -> None:
    sealer = AesGcmSealer(bytes(32))
    blob = seal(sample(2), sealer)
    position = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    tampered = bytearray(blob)
    tampered[position] ^= 1 << bit
    with pytest.raises(ManifestError):
        unseal(bytes(tampered), sealer)


def test_tampered_header_fields_are_detected(sealer: AesGcmSealer) -> None:
    blob = seal(sample(), sealer)
    edited = blob.replace(b"nightly", b"Nightly", 1)
    assert read_header(edited).label == "Nightly"  # readable, but...
    with pytest.raises(ManifestError, match="does not authenticate"):
        unseal(edited, sealer)


def test_truncated_and_extended_containers_are_refused(sealer: AesGcmSealer) -> None:
    blob = seal(sample(), sealer)
    for bad in (blob[:-1], blob + b"\0", blob[: header_length(blob) + 5], b"", blob[:3]):
        with pytest.raises(ManifestError):
            unseal(bad, sealer)


def test_another_key_does_not_open_it(sealer: AesGcmSealer) -> None:
    blob = seal(sample(), sealer)
    with pytest.raises(ManifestError, match="sealed under another key"):
        unseal(blob, AesGcmSealer(secrets.token_bytes(32)))


def test_swapped_body_is_detected(sealer: AesGcmSealer) -> None:
    """The body of one set under the header of another (same key) does not open."""
    one, two = seal(sample(1), sealer), seal(sample(1), sealer)
    spliced = one[: header_length(one)] + two[header_length(two) :]
    with pytest.raises(ManifestError):
        unseal(spliced, sealer)


def test_not_a_set(sealer: AesGcmSealer) -> None:
    with pytest.raises(ManifestError, match="bad magic"):
        read_header(b"NOTASET" + bytes(20))
    with pytest.raises(ManifestError, match="format 9"):
        read_header(MAGIC + b"\x09" + bytes(10))
    with pytest.raises(ManifestError, match="claims"):
        read_header(MAGIC + b"\x01" + (1 << 30).to_bytes(4, "big") + bytes(10))
    garbage = MAGIC + b"\x01" + (3).to_bytes(4, "big") + b"\xff\xff\xff"
    with pytest.raises(ManifestError, match="not valid CBOR"):
        read_header(garbage)


def _container(header: object, body: bytes = b"") -> bytes:
    encoded = cbor2.dumps(header, canonical=True)
    return MAGIC + b"\x01" + len(encoded).to_bytes(4, "big") + encoded + body


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h.pop("label"), "label"),
        (lambda h: h.update(set_id=b"short"), "set id"),
        (lambda h: h.update(created="yesterday"), "created"),
        (lambda h: h.update(token=[1, 2]), "token"),
        (lambda h: h.update(keys=True), "keys"),
        (lambda h: h.update(wrapped_kek=None), "wrapped_kek"),
    ],
)
def test_malformed_headers_are_named(mutate: object, message: str) -> None:
    header = sample().header.to_cbor()
    mutate(header)  # type: ignore[operator]
    with pytest.raises(ManifestError, match=message):
        read_header(_container(header))


def test_malformed_bodies_are_refused(sealer: AesGcmSealer) -> None:
    m = sample(1)
    prefix_header = m.header.encode()
    prefix = MAGIC + b"\x01" + len(prefix_header).to_bytes(4, "big") + prefix_header
    bodies = [
        b"\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({"set_id": b"x" * 16, "entries": [], "skipped": []}),
        cbor2.dumps({"set_id": m.set_id, "entries": "nope", "skipped": []}),
        cbor2.dumps({"set_id": m.set_id, "entries": [{"attrs": {"x": 1}}], "skipped": []}),
        cbor2.dumps({"set_id": m.set_id, "entries": [{"attrs": {1: 1.5}}], "skipped": []}),
        cbor2.dumps({"set_id": m.set_id, "entries": [{"attrs": {}, "wrapped": 5}]}),
        cbor2.dumps({"set_id": m.set_id, "entries": [], "skipped": []}),  # count mismatch
    ]
    for body in bodies:
        blob = prefix + sealer.seal(body, prefix)
        with pytest.raises(ManifestError):
            unseal(blob, sealer)


def test_attribute_values_survive_exactly(sealer: AesGcmSealer) -> None:
    attrs: Attributes = {
        0: 3,
        3: "label ✓",
        0x102: b"\x00\xff",
        0x162: False,
        0x170: True,
        0x121: 2048,
    }
    m = Manifest.new(
        label="x",
        token=TOKEN,
        domain_id=b"",
        wrapped_kek=b"",
        entries=[KeyEntry(attrs, b"w")],
    )
    back = unseal(seal(m, sealer), sealer).entries[0]
    assert back.attributes == attrs
    assert {k: type(v) for k, v in back.attributes.items()} == {
        k: type(v) for k, v in attrs.items()
    }


_attribute_values = st.one_of(
    st.booleans(), st.integers(0, 2**64 - 1), st.binary(max_size=40), st.text(max_size=20)
)


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            # negative types (none exist) take the slow path, canonical all the same
            st.dictionaries(st.integers(-(2**20), 2**40), _attribute_values, max_size=12),
            st.none() | st.binary(min_size=1, max_size=48),
        ),
        max_size=12,
    ),
    audit_head=st.none() | st.binary(min_size=32, max_size=32),
)
def test_the_body_is_the_canonical_cbor_of_the_manifest(
    entries: list[tuple[Attributes, bytes | None]], audit_head: bytes | None
) -> None:
    made = dataclasses.replace(
        sample(1),
        entries=tuple(KeyEntry(attrs, wrapped) for attrs, wrapped in entries),
        audit_head=audit_head,
    )
    reference: dict[str, object] = {
        "set_id": made.set_id,
        "entries": [e.to_cbor() for e in made.entries],
        "skipped": [e.to_cbor() for e in made.skipped],
    }
    if audit_head is not None:
        reference["audit_head"] = audit_head
    assert made.body() == cbor2.dumps(reference, canonical=True)
