"""Custodian passphrases: Argon2id, the two HKDF labels, sealing shares, strength."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from argon2.low_level import Type, hash_secret_raw
from sealkeep.kdf import (
    CREDENTIAL_LABEL,
    SHARE_SEAL_LABEL,
    KdfError,
    KdfParams,
    ShareSealError,
    derive_custodian_keys,
    estimate_entropy_bits,
    passphrase_weakness,
    seal_share,
    stretch,
    unseal_share,
)

# Small parameters keep the tests fast; the construction is the same.
FAST = {"t_cost": 1, "m_cost_kib": 64, "parallelism": 1}
SALT = bytes(range(16))
PASS = "correct horse battery staple"


def fast(salt: bytes = SALT) -> KdfParams:
    return KdfParams(salt, **FAST)


def _hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with an empty salt, written out independently."""
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def test_derivation_is_argon2id_then_hkdf_with_two_labels() -> None:
    keys = derive_custodian_keys(PASS, fast())
    master = hash_secret_raw(PASS.encode(), SALT, 1, 64, 1, 32, Type.ID)
    assert stretch(PASS, fast()) == master
    assert keys.credential == _hkdf_sha256(master, CREDENTIAL_LABEL)
    assert keys.share_key == _hkdf_sha256(master, SHARE_SEAL_LABEL)
    assert keys.credential != keys.share_key
    assert len(keys.credential) == len(keys.share_key) == 32
    assert repr(keys) == "CustodianKeys()"  # keys never end up in logs


def test_derivation_depends_on_passphrase_salt_and_cost() -> None:
    base = derive_custodian_keys(PASS, fast())
    assert derive_custodian_keys(PASS, fast()) == base
    assert derive_custodian_keys(PASS + "!", fast()) != base
    assert derive_custodian_keys(PASS, fast(bytes(16))) != base
    assert derive_custodian_keys(PASS, KdfParams(SALT, 2, 64, 1)) != base


def test_unicode_is_normalised() -> None:
    composed = "caf\u00e9 au lait, s'il vous pla\u00eet"
    decomposed = "cafe\u0301 au lait, s'il vous plai\u0302t"
    assert composed != decomposed
    assert derive_custodian_keys(composed, fast()) == derive_custodian_keys(decomposed, fast())


def test_params_round_trip_and_new_salt() -> None:
    params = KdfParams.new(**FAST)
    assert len(params.salt) == 16
    assert KdfParams.new(**FAST).salt != params.salt
    assert KdfParams.from_map(params.salt, params.to_map()) == params
    default = KdfParams.new()
    assert (default.t_cost, default.m_cost_kib, default.parallelism) == (3, 65536, 1)


@pytest.mark.parametrize(
    ("salt", "mapping", "message"),
    [
        (SALT, {1: 0, 2: 64, 3: 1}, "t_cost"),
        (SALT, {1: 1, 2: 1 << 30, 3: 1}, "m_cost_kib"),
        (SALT, {1: 1, 2: 64, 3: 99}, "parallelism"),
        (SALT, {1: 1, 2: 64, 3: 16}, "below 8 KiB per lane"),
        (SALT, {1: True, 2: 64, 3: 1}, "t_cost"),
        (SALT, {2: 64, 3: 1}, "t_cost"),
        (SALT, {1: 1, 2: "64", 3: 1}, "m_cost_kib"),
        (b"short", {1: 1, 2: 64, 3: 1}, "salt"),
    ],
)
def test_hostile_params_are_refused(
    salt: bytes, mapping: dict[object, object], message: str
) -> None:
    with pytest.raises(KdfError, match=message):
        KdfParams.from_map(salt, mapping)


def test_share_sealing() -> None:
    keys = derive_custodian_keys(PASS, fast())
    sealed = seal_share(keys, b"share bytes", b"drive SK-1")
    assert sealed != seal_share(keys, b"share bytes", b"drive SK-1")  # fresh nonce
    assert unseal_share(keys, sealed, b"drive SK-1") == b"share bytes"
    wrong = derive_custodian_keys("a different passphrase entirely", fast())
    with pytest.raises(ShareSealError, match="wrong passphrase"):
        unseal_share(wrong, sealed, b"drive SK-1")
    with pytest.raises(ShareSealError):
        unseal_share(keys, sealed, b"drive SK-2")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(ShareSealError):
        unseal_share(keys, bytes(tampered), b"drive SK-1")
    with pytest.raises(ShareSealError, match="truncated"):
        unseal_share(keys, sealed[:20], b"drive SK-1")


def test_the_credential_does_not_open_the_share() -> None:
    keys = derive_custodian_keys(PASS, fast())
    sealed = seal_share(keys, b"share", b"")
    from sealkeep.kdf import CustodianKeys

    swapped = CustodianKeys(credential=keys.credential, share_key=keys.credential)
    with pytest.raises(ShareSealError):
        unseal_share(swapped, sealed, b"")


@pytest.mark.parametrize(
    "weak",
    [
        "",
        "short",
        "elevenchars",
        "aaaaaaaaaaaaaaaa",
        "abcdefghijklmnop",
        "123456789012",
        "passwordpassword",
        "password1234",
        "qwertyuiop12",
        "abcabcabcabcabc",
    ],
)
def test_weak_passphrases_are_refused_with_a_reason(weak: str) -> None:
    reason = passphrase_weakness(weak)
    assert reason is not None
    assert reason.startswith(("too short", "too predictable"))


@pytest.mark.parametrize(
    "strong",
    [
        "correct horse battery staple",
        "Tr0ub4dor&3xyz",
        "Xk9#mP2$vL7q",
        "river otter piano 42",
        "überzeugend Wolke sieben",
    ],
)
def test_strong_passphrases_pass(strong: str) -> None:
    assert passphrase_weakness(strong) is None


def test_entropy_estimate_orders_sensibly() -> None:
    assert estimate_entropy_bits("aaaaaaaaaaaa") < estimate_entropy_bits("a7Kq!zP3m9Lx")
    assert estimate_entropy_bits("abcdabcdabcd") == estimate_entropy_bits("abcd")
