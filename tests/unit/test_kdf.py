"""Custodian passphrases: Argon2id, the two HKDF labels, sealing shares, strength."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

import pytest
from argon2.low_level import Type, hash_secret_raw
from sealkeep.kdf import (
    CREDENTIAL_LABEL,
    MIN_GUESSES,
    SHARE_SEAL_LABEL,
    KdfError,
    KdfFloor,
    KdfParams,
    ShareSealError,
    derive_custodian_keys,
    estimate_guesses,
    generate_passphrase,
    generated_word_count,
    passphrase_weakness,
    passphrase_words,
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
        # Each has every character class (or length) a class-counting check asks for, and
        # each is among the first things a dictionary attacker tries.
        "Summer2024!!",
        "P@ssword2024!!",
        "correcthorsebattery",
    ],
)
def test_weak_passphrases_are_refused_with_a_reason(weak: str) -> None:
    reason = passphrase_weakness(weak)
    assert reason is not None
    assert reason.startswith(("too short", "too guessable"))


def test_the_refusal_says_why_and_what_to_do() -> None:
    reason = passphrase_weakness("P@ssword2024!!")
    assert reason is not None
    assert "10^12 are needed" in reason and "offline" in reason
    assert "generated passphrase" in reason


def test_the_drive_serial_counts_as_known_to_the_attacker() -> None:
    phrase = "SK-0042-7731 SK-0042-7731"
    assert passphrase_weakness(phrase) is None
    assert passphrase_weakness(phrase, ("SK-0042-7731",)) is not None


@pytest.mark.parametrize(
    "strong",
    [
        "correct horse battery staple",
        "Tr0ub4dor&3xyz",
        "river otter piano 42",
        "überzeugend Wolke sieben",
    ],
)
def test_strong_passphrases_pass(strong: str) -> None:
    assert passphrase_weakness(strong) is None


def test_a_long_random_passphrase_passes() -> None:
    for _ in range(20):
        assert passphrase_weakness(secrets.token_urlsafe(18)) is None


def test_generated_passphrases_pass_and_carry_80_bits() -> None:
    words = passphrase_words()
    assert len(words) == len(set(words)) == 4096
    assert all(4 <= len(w) <= 8 and w.isascii() and w.isalpha() for w in words)
    count = generated_word_count()
    assert count * math.log2(len(words)) >= 80
    seen = set()
    for _ in range(20):
        phrase = generate_passphrase()
        parts = phrase.split(" ")
        assert len(parts) == count and all(p in words for p in parts)
        assert passphrase_weakness(phrase) is None
        seen.add(phrase)
    assert len(seen) == 20


def test_guess_estimates_order_sensibly() -> None:
    assert estimate_guesses("aaaaaaaaaaaa") < estimate_guesses("a7Kq!zP3m9Lx")
    assert (
        estimate_guesses("Summer2024!!")
        < MIN_GUESSES
        <= estimate_guesses("orbit lantern quietly 42 maple")
    )


def test_floor_refuses_cheaper_costs() -> None:
    floor = KdfFloor()
    assert (floor.t_cost, floor.m_cost_kib) == (3, 65536)
    assert floor.shortfall(KdfParams.new()) is None
    reason = floor.shortfall(KdfParams(SALT, 1, 8, 1))
    assert reason is not None and "below the floor" in reason
    assert floor.shortfall(KdfParams(SALT, 3, 65535, 1)) is not None
    assert floor.shortfall(KdfParams(SALT, 2, 1 << 20, 1)) is not None
    assert KdfFloor(1, 8).shortfall(KdfParams(SALT, 1, 8, 1)) is None
