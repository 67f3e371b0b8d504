"""Shamir secret sharing over GF(2^8), with named bad shares."""

from __future__ import annotations

import dataclasses
import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sealkeep.shamir import (
    BadShareError,
    NotEnoughSharesError,
    ShamirError,
    Share,
    ShareFormatError,
    combine,
    gf_div,
    gf_mul,
    interpolate_at_zero,
    recover,
    secret_check_value,
    split,
)

SECRET = bytes(range(64))


def flip(share: Share, position: int = 0) -> Share:
    value = bytearray(share.value)
    value[position] ^= 0x01
    return dataclasses.replace(share, value=bytes(value))


# --- field ------------------------------------------------------------------------------------


def test_field_matches_the_aes_field() -> None:
    # FIPS-197 section 4.2: {57} x {83} = {c1}, {57} x {13} = {fe}.
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE
    for a in range(1, 256):
        assert gf_mul(a, gf_div(1, a)) == 1
        assert gf_div(gf_mul(a, 0x35), 0x35) == a
    assert gf_mul(0, 7) == 0 and gf_div(0, 7) == 0
    with pytest.raises(ZeroDivisionError):
        gf_div(1, 0)


def test_interpolation_rejects_duplicate_points() -> None:
    with pytest.raises(ValueError, match="distinct"):
        interpolate_at_zero([(1, b"a"), (1, b"b")])


# --- split and combine ------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(1, 1), (1, 3), (2, 3), (3, 5), (4, 7), (7, 7)])
def test_every_subset_of_k_rebuilds_the_secret(k: int, n: int) -> None:
    shares = split(SECRET, k, n)
    assert [s.index for s in shares] == list(range(1, n + 1))
    assert all(len(s.value) == len(SECRET) for s in shares)
    for subset in itertools.combinations(shares, k):
        assert bytes(combine(subset)) == SECRET
    assert bytes(combine(shares)) == SECRET


def test_fewer_than_k_says_how_many_more() -> None:
    shares = split(SECRET, 3, 5)
    with pytest.raises(NotEnoughSharesError) as caught:
        combine(shares[:2])
    assert caught.value.needed == 1 and caught.value.threshold == 3
    assert "1 more needed" in str(caught.value)
    with pytest.raises(NotEnoughSharesError) as caught:
        combine([])
    assert caught.value.needed >= 1


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=80),
    k=st.integers(min_value=1, max_value=6),
    extra=st.integers(min_value=0, max_value=4),
    data=st.data(),
)
def test_any_k_shares_in_any_order(secret: bytes, k: int, extra: int, data: st.DataObject) -> None:
    n = k + extra
    shares = split(secret, k, n)
    chosen = data.draw(st.permutations(shares)).__getitem__(slice(0, k))
    assert bytes(combine(chosen)) == secret


def test_k_minus_one_shares_look_the_same_for_any_secret() -> None:
    """With k-1 shares, each share byte is uniform whatever the secret byte is."""
    for secret in (b"\x00", b"\xff"):
        seen = [0] * 256
        for _ in range(4096):
            shares = split(secret, 3, 3)
            seen[shares[0].value[0]] += 1
        assert min(seen) > 0 and max(seen) < 50


def test_shares_are_random_per_split() -> None:
    a = split(SECRET, 2, 3)
    b = split(SECRET, 2, 3)
    assert a[0].value != b[0].value
    assert a[0].share_set.set_id != b[0].share_set.set_id
    assert a[0].share_set.secret_check == b[0].share_set.secret_check == secret_check_value(SECRET)


def test_bad_parameters() -> None:
    for k, n in [(0, 3), (4, 3), (2, 256)]:
        with pytest.raises(ShamirError, match="impossible"):
            split(SECRET, k, n)
    with pytest.raises(ShamirError, match="secret must be"):
        split(b"", 2, 3)


# --- encoding ---------------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    shares = split(SECRET, 3, 5)
    decoded = [Share.decode(s.encode()) for s in shares]
    assert decoded == shares
    assert bytes(combine(decoded[2:])) == SECRET


@pytest.mark.parametrize(
    "blob",
    [b"", b"\xff\xff", b"\x01", b"\xa0", b"\xa1\x01\x02"],
)
def test_malformed_shares_are_refused(blob: bytes) -> None:
    with pytest.raises(ShareFormatError):
        Share.decode(blob)


def test_decode_checks_fields() -> None:
    import cbor2

    good = cbor2.loads(split(SECRET, 2, 3)[0].encode())
    for key, value in [(2, 9), (2, 0), (5, 4), (7, [b"x"]), (4, b"short"), (3, "text"), (1, 2)]:
        broken = dict(good)
        broken[key] = value
        with pytest.raises(ShareFormatError):
            Share.decode(cbor2.dumps(broken))


# --- naming bad shares ------------------------------------------------------------------------


def test_corrupt_share_is_named() -> None:
    shares = split(SECRET, 3, 5)
    named = {f"DRIVE-{s.index}": s for s in shares}
    named["DRIVE-2"] = flip(named["DRIVE-2"], 10)
    with pytest.raises(BadShareError) as caught:
        combine(named)
    assert [b.name for b in caught.value.bad] == ["DRIVE-2"]
    assert "corrupt" in caught.value.bad[0].reason
    # With enough good shares left, recover() still rebuilds it and names the bad one.
    result = recover(named)
    assert bytes(result.secret) == SECRET
    assert [b.name for b in result.bad] == ["DRIVE-2"]
    assert "DRIVE-2" not in result.used


def test_forged_share_with_rewritten_checks_is_named() -> None:
    """A forger rewrites its own share and its copy of the check values to match."""
    shares = split(SECRET, 3, 5)
    forged = flip(shares[0], 3)
    record = forged.share_set
    checks = list(record.checks)
    from sealkeep.shamir import share_check_value

    checks[0] = share_check_value(record.set_id, 1, forged.value)
    forged = dataclasses.replace(
        forged, share_set=dataclasses.replace(record, checks=tuple(checks))
    )
    assert forged.problem() is None  # consistent with its own (forged) copy
    named = {"A": forged, "B": shares[1], "C": shares[2], "D": shares[3]}
    result = recover(named)
    assert bytes(result.secret) == SECRET
    assert [(b.name, "forged" in b.reason) for b in result.bad] == [("A", True)]
    with pytest.raises(BadShareError, match="A: forged"):
        combine(named)


def test_forged_share_at_threshold_is_named_with_count() -> None:
    shares = split(SECRET, 3, 5)
    named = {"A": flip(shares[0]), "B": shares[1], "C": shares[2]}
    with pytest.raises(NotEnoughSharesError) as caught:
        combine(named)
    assert caught.value.needed == 1
    assert [b.name for b in caught.value.bad] == ["A"]
    assert sorted(caught.value.good) == ["B", "C"]


def test_invented_share_set_fails_its_tag() -> None:
    """A whole fake record (checks recomputed for altered shares) fails after combining."""
    from sealkeep.shamir import share_check_value

    shares = split(SECRET, 2, 3)
    record = shares[0].share_set
    fakes = [flip(s, 5) for s in shares]
    checks = tuple(share_check_value(record.set_id, s.index, s.value) for s in fakes)
    fake_record = dataclasses.replace(record, checks=checks)
    fakes = [dataclasses.replace(s, share_set=fake_record) for s in fakes]
    with pytest.raises(NotEnoughSharesError) as caught:
        combine({"X": fakes[0], "Y": fakes[1]})
    assert {b.name for b in caught.value.bad} == {"X", "Y"}
    assert all("forged" in b.reason for b in caught.value.bad)


def test_shares_of_another_domain_are_named() -> None:
    ours = split(SECRET, 2, 3)
    theirs = split(secrets.token_bytes(64), 2, 3)
    named = {"OURS-1": ours[0], "THEIRS-2": theirs[1], "OURS-3": ours[2]}
    result = recover(named, expected_check=secret_check_value(SECRET))
    assert bytes(result.secret) == SECRET
    assert [(b.name, b.reason) for b in result.bad] == [
        ("THEIRS-2", "belongs to another backup domain")
    ]
    # Without the expected check value, the majority split wins and the other is named.
    result = recover(named)
    assert bytes(result.secret) == SECRET
    assert [b.name for b in result.bad] == ["THEIRS-2"]
    assert "another split" in result.bad[0].reason


def test_old_split_shares_are_told_apart() -> None:
    """After a re-share the same secret has a new split; old shares do not mix in."""
    old = split(SECRET, 2, 3)
    new = split(SECRET, 2, 3)
    result = recover({"NEW-1": new[0], "NEW-2": new[1], "OLD-3": old[2]})
    assert bytes(result.secret) == SECRET
    assert [b.name for b in result.bad] == ["OLD-3"]


def test_duplicate_copies_of_one_share_do_not_count_twice() -> None:
    shares = split(SECRET, 3, 5)
    with pytest.raises(NotEnoughSharesError) as caught:
        combine({"A": shares[0], "A-again": shares[0], "B": shares[1]})
    assert caught.value.needed == 1
    assert bytes(combine([shares[0], shares[0], shares[1], shares[2]])) == SECRET


def test_wipe_clears_the_secret() -> None:
    result = recover(split(SECRET, 2, 2))
    result.wipe()
    assert result.secret == bytearray(len(SECRET))
