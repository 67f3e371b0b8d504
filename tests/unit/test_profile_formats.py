"""Where a domain's profile is written down: the domain record (an eighth field, only when it
is not ``standard``) and a set's header (formats 3 and 4, authenticated with the body)."""

from __future__ import annotations

import dataclasses
import secrets

import cbor2
import pytest
from sealkeep import shamir
from sealkeep.domainrecord import DomainRecord, Member, RecordError
from sealkeep.hsm import new_domain_secret
from sealkeep.hsm_caps import PORTABLE, STANDARD, cbc_pad_reference
from sealkeep.kdf import KdfParams
from sealkeep.manifest import (
    FORMAT_COMPRESSED,
    FORMAT_PROFILED,
    FORMAT_VERSION,
    AesGcmSealer,
    Manifest,
    ManifestError,
    TokenInfo,
    read_header,
    seal,
    unseal,
)


def record() -> tuple[DomainRecord, bytearray]:
    secret = new_domain_secret()
    (share,) = shamir.split(secret, 1, 1)
    params = KdfParams(b"s" * 16, 1, 8, 1)
    plain = DomainRecord(b"d" * 16, 1, (Member("SK-1", params),), 0, share.share_set.set_id)
    return plain.signed(secret), secret


def test_a_standard_record_keeps_its_fields_and_a_portable_one_says_so() -> None:
    plain, secret = record()
    assert len(cbor2.loads(plain.body())) == 6 and plain.profile == STANDARD.number
    portable = dataclasses.replace(plain, profile=PORTABLE.number).signed(secret)
    fields = cbor2.loads(portable.body())
    assert len(fields) == 8 and fields[6] is None and fields[7] == PORTABLE.number
    assert portable.mac != plain.mac and portable.verify_secret(secret)
    decoded = DomainRecord.decode(portable.encode())
    assert decoded == portable and decoded.profile == PORTABLE.number
    kept = dataclasses.replace(portable, retention=4).signed(secret)
    assert DomainRecord.decode(kept.encode()).retention == 4
    with pytest.raises(RecordError, match="profile"):
        DomainRecord.decode(dataclasses.replace(plain, profile=0).encode())


def manifest(profile: int) -> Manifest:
    return Manifest.new(
        label="nightly",
        token=TokenInfo(slot_id=3, label="t", serial="s"),
        domain_id=b"D" * 16,
        wrapped_kek=b"K" * 48,
        wrapped_manifest_key=b"M" * 48,
        wrapped_mac_key=b"H" * 48 if profile != STANDARD.number else None,
        profile=profile,
    )


def test_a_portable_set_names_its_profile_in_the_authenticated_header() -> None:
    sealer = AesGcmSealer(secrets.token_bytes(32))
    standard = seal(manifest(STANDARD.number), sealer)
    assert standard[5] == FORMAT_COMPRESSED and read_header(standard).profile == STANDARD.number
    assert b"gprofile\x01" in standard  # format 4 names every profile, standard included
    uncompressed = dataclasses.replace(manifest(STANDARD.number), compressed=False)
    assert seal(uncompressed, sealer)[5] == FORMAT_VERSION
    portable = seal(manifest(PORTABLE.number), sealer)
    header = read_header(portable)
    assert portable[5] == FORMAT_COMPRESSED
    assert (
        seal(dataclasses.replace(manifest(PORTABLE.number), compressed=False), sealer)[5]
        == FORMAT_PROFILED
    )
    assert header.profile == PORTABLE.number and header.wrapped_mac_key == b"H" * 48
    assert unseal(portable, sealer).profile == PORTABLE.number
    # The profile is covered by the authentication: a header naming another fails.
    forged = portable.replace(b"gprofile\x02", b"gprofile\x03")
    assert forged != portable
    with pytest.raises(ManifestError, match="does not authenticate"):
        unseal(forged, sealer)


def test_cbc_pad_reference_is_pkcs7_padded_cbc() -> None:
    key, iv = bytes(32), bytes(16)
    assert len(cbc_pad_reference(key, iv, b"")) == 16
    assert len(cbc_pad_reference(key, iv, bytes(16))) == 32
    assert cbc_pad_reference(key, iv, b"a") != cbc_pad_reference(key, bytes([1]) * 16, b"a")
