"""Backup, listing, verify and restore on real SoftHSM2 tokens and emulated drives.

Quick restore, disaster recovery and a tampered header run on openCryptoki's soft token
too (the ``token`` fixture; there the "target" is the one token, emptied, and the sample
keys have no EC pair). The rest is the drives' part (fallback, room, missing drives,
listing) or is tried on openCryptoki in ``test_hsm`` (keys restored by label).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pkcs11 import Attribute
from sealkeep import manifest
from sealkeep.backupset import (
    backup,
    list_sets,
    set_object_name,
    verify_failure,
    verify_set,
)
from sealkeep.domain import (
    DriveGroup,
    DriveProblems,
    DrivesCorrupt,
    DrivesFull,
    DrivesUnreachable,
    create_domain,
)
from sealkeep.emulator import Emulator
from sealkeep.hsm import DomainError, Hsm, HsmSession
from sealkeep.pins import InputError, Passphrases
from sealkeep.recovery import recover_domain
from sealkeep.restore import restore_set

if TYPE_CHECKING:
    from hsm_fixtures import SoftHsmToken, Token

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cheap_kdf")]
pytest_plugins = ["hsm_fixtures"]

Start = Callable[..., Emulator]
SAMPLE_LABELS = {"aes-data", "rsa-sign", "ec-sign"}
IN_SET = 6  # AES, RSA private and public, EC private and public, certificate


def custodians(*emulators: Emulator) -> Passphrases:
    return Passphrases(
        entries={
            d.serial: f"custodian of {d.serial}: orbit lantern 7"
            for e in emulators
            for d in e.drives
        }
    )


def ports(emulator: Emulator, *indexes: int) -> list[str]:
    chosen = indexes or tuple(range(len(emulator.drives)))
    return [emulator.drives[i].port for i in chosen]


def open_slot(hsm: Hsm, token: SoftHsmToken) -> HsmSession:
    return hsm.open(token.slot_id, token.pin)


def user_objects(session: HsmSession) -> list[tuple[int, str, bytes]]:
    return sorted((o.object_class, o.label, o.id) for o in session.objects() if not o.is_domain_key)


def delete_samples(session: HsmSession, labels: set[str] = SAMPLE_LABELS) -> None:
    for obj in session.objects():
        if obj.label in labels:
            obj.handle.destroy()


@dataclass
class Backed:
    """A domain over five drives, the sample keys and one set of them."""

    emulator: Emulator
    domain_id: bytes
    set_id: bytes
    in_set: int  # objects in the set
    labels: set[str]  # labels of the keys in the set

    def where(self) -> tuple[Emulator, bytes, bytes]:
        """(emulator, domain id, set id), as :func:`domain5` gives them."""
        return self.emulator, self.domain_id, self.set_id


def back_up_samples(session: HsmSession, emulator: Emulator, make_samples: Any) -> Backed:
    with DriveGroup(ports(emulator)) as group:
        domain_id = create_domain(session, group.drives, custodians(emulator)).domain_id
        samples = make_samples(session)
        in_set = len(samples) - 1  # all but aes-local
        labels = {str(o[Attribute.LABEL]) for o in samples.values()} - {"aes-local"}
        progress: dict[str, int] = {}

        def seen(serial: str, done: int, total: int) -> None:
            progress[serial] = done

        planned: list[int] = []
        made = backup(
            session,
            group.drives,
            label="nightly",
            progress=seen,
            on_plan=lambda objects: planned.append(len(objects)),
        )
        # and the domain: three keys and the marker
        assert made.keys == in_set and planned == [in_set + 1 + 4]
        assert [s.label for s in made.skipped] == ["aes-local"]
        assert "not extractable" in made.skipped[0].reason
        assert progress == {d.serial: made.size for d in emulator.drives}
        assert all(w.verified and w.digest == made.digest for w in made.drives)
    return Backed(emulator, domain_id, made.set_id, in_set, labels)


@pytest.fixture
def domain5(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, make_sample_keys: Any
) -> tuple[Emulator, bytes, bytes]:
    """Five drives with a domain held by SoftHSM2's "source", sample keys, one backup set:
    (emulator, domain id, set id)."""
    with open_slot(hsm, tokens["source"]) as session:
        backed = back_up_samples(session, start(5), make_sample_keys)
    assert backed.in_set == IN_SET and backed.labels == SAMPLE_LABELS
    return backed.emulator, backed.domain_id, backed.set_id


@pytest.fixture
def token_domain5(token: Token, start: Start) -> Backed:
    """:func:`domain5` on the token under test."""
    with token.open() as session:
        return back_up_samples(session, start(5), token.sample_keys)


def set_file(emulator: Emulator, index: int, set_id: bytes) -> Path:
    return emulator.drives[index].flash / "obj" / set_object_name(set_id)


def test_quick_restore_from_one_drive(token: Token, token_domain5: Backed) -> None:
    emulator, domain_id, set_id = token_domain5.where()
    in_set = token_domain5.in_set
    with token.open() as session:
        before = user_objects(session)
        delete_samples(session, token_domain5.labels)
        assert len(user_objects(session)) == 1  # the non-extractable key stays
        for i in range(4):
            emulator.kill(i)
        with DriveGroup(ports(emulator, 4)) as group:
            listed, problems = list_sets(session, group.drives, domain_id)
            assert problems == [] and [s.header.set_id for s in listed] == [set_id]
            assert listed[0].header.label == "nightly" and listed[0].header.key_count == in_set
            result = restore_set(session, group.drives, set_id.hex()[:8])
        assert result.ok and result.source == emulator.drives[4].serial
        assert result.count("restored") == in_set and result.count("present") == 0
        assert all(o.proof is not None and o.proof.ok for o in result.outcomes)
        assert [s.label for s in result.skipped_at_backup] == ["aes-local"]
        assert user_objects(session) == before
        # Already present: reported, not duplicated.
        with DriveGroup(ports(emulator, 4)) as group:
            again = restore_set(session, group.drives, set_id.hex())
        assert again.ok and again.count("present") == in_set
        assert user_objects(session) == before


def test_disaster_recovery_into_target(token: Token, token_domain5: Backed) -> None:
    emulator, domain_id, set_id = token_domain5.where()
    with token.open_target() as session, DriveGroup(ports(emulator, 0, 2, 4)) as group:
        with pytest.raises(DomainError, match="domain recover"):
            restore_set(session, group.drives, set_id.hex())
        recovered = recover_domain(session, group.drives, custodians(emulator))
        assert recovered.domain_id == domain_id
        result = restore_set(session, group.drives, set_id.hex())
        assert result.ok and result.count("restored") == token_domain5.in_set
        labels = {o.label for o in session.objects() if not o.is_domain_key}
        assert labels == token_domain5.labels


def test_verify_names_a_corrupt_copy_and_restore_falls_back(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], domain5: tuple[Emulator, bytes, bytes]
) -> None:
    emulator, domain_id, set_id = domain5
    path = set_file(emulator, 0, set_id)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    bad = emulator.drives[0].serial
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        checked = verify_set(session, group.drives, domain_id, set_id.hex())
        assert [c.serial for c in checked.bad] == [bad]
        assert "damaged on the drive" in checked.bad[0].detail
        assert len(checked.good) == 4 and not checked.ok
        error = verify_failure(checked)
        assert bad in str(error) and error.exit_code == 6
        listed, _ = list_sets(session, group.drives, domain_id)
        assert listed[0].damaged == [bad] and len(listed[0].verified) == 4
        delete_samples(session)
        notes: list[str] = []
        result = restore_set(session, group.drives, set_id.hex(), note=notes.append)
        assert result.ok and result.source == emulator.drives[1].serial
        assert [p.drive for p in result.attempts] == [group.drives[0].name]
        assert bad in notes[0]


def tamper(emulator: Emulator, index: int, set_id: bytes) -> None:
    """Rewrite a set's header on the drive's flash, with a matching digest (as someone with
    the drive's owner credential could): only the HSM can tell."""
    path = set_file(emulator, index, set_id)
    raw = path.read_bytes()
    data = raw[40:].replace(b"nightly", b"nightlz")
    path.write_bytes(hashlib.sha256(data).digest() + len(data).to_bytes(8, "big") + data)


def test_tampered_manifest_is_refused_everywhere(token: Token, token_domain5: Backed) -> None:
    emulator, domain_id, set_id = token_domain5.where()
    tamper(emulator, 1, set_id)
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        checked = verify_set(session, group.drives, domain_id, set_id.hex())
        assert [c.serial for c in checked.bad] == [emulator.drives[1].serial]
        assert "does not authenticate" in checked.bad[0].detail
    for i in (0, 2, 3, 4):
        tamper(emulator, i, set_id)
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        delete_samples(session, token_domain5.labels)
        before = user_objects(session)
        with pytest.raises(DrivesCorrupt) as caught:
            restore_set(session, group.drives, set_id.hex())
        assert caught.value.exit_code == 6
        assert all(d.serial in str(caught.value) for d in emulator.drives)
        assert user_objects(session) == before


def test_key_selection_and_unknown_labels(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], domain5: tuple[Emulator, bytes, bytes]
) -> None:
    emulator, _, set_id = domain5
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator, 3)) as group:
        delete_samples(session)
        result = restore_set(session, group.drives, set_id.hex(), ["rsa-sign"])
        assert result.ok and {o.label for o in result.outcomes} == {"rsa-sign"}
        assert result.count("restored") == 2  # private and public halves
        with pytest.raises(InputError, match="no key labelled 'nope'"):
            restore_set(session, group.drives, set_id.hex(), ["nope"])
        with pytest.raises(InputError, match="no set"):
            restore_set(session, group.drives, "abcdef12")


def test_backup_checks_drives_before_writing(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, make_sample_keys: Any
) -> None:
    roomy = start(2)
    small = start(1, capacity=2600)
    stranger = start(3)
    addresses = [*ports(roomy), *ports(small)]
    with open_slot(hsm, tokens["spare"]) as session, DriveGroup(ports(stranger)) as group:
        create_domain(session, group.drives, custodians(stranger))
    with open_slot(hsm, tokens["source"]) as session:
        with pytest.raises(DomainError, match="holds no backup domain key"):
            backup(session, [])
        with DriveGroup(addresses) as group:
            domain_id = create_domain(session, group.drives, custodians(roomy, small)).domain_id
        make_sample_keys(session)
        full = small.drives[0].serial
        # The small drive has no room: refused before anything is written.
        with DriveGroup(addresses) as group:
            with pytest.raises(DrivesFull) as caught:
                backup(session, group.drives)
            assert f"drive {full}" in str(caught.value) and "full" in str(caught.value)
            assert caught.value.exit_code == 5
            assert list_sets(session, group.drives, domain_id)[0] == []
        # A missing drive of the domain is named; a drive of another domain is skipped with
        # a warning and blocks nothing.
        notes: list[str] = []
        with DriveGroup([*ports(roomy), stranger.drives[0].port]) as group:
            with pytest.raises(DriveProblems) as named:
                backup(session, group.drives, note=notes.append)
            message = str(named.value)
            assert f"drive {full}: missing" in message
            assert stranger.drives[0].serial not in message
            assert isinstance(named.value, DrivesUnreachable)
            assert list_sets(session, group.drives, domain_id)[0] == []
            skipped = [n for n in notes if stranger.drives[0].serial in n]
            assert skipped and "skipped" in skipped[0] and "another backup domain" in skipped[0]
            notes.clear()
            made = backup(session, group.drives, allow_missing=True, note=notes.append)
            assert made.missing == [full] and len(made.drives) == 2
            assert any(stranger.drives[0].serial in n and "skipped" in n for n in notes)


def test_sets_lists_every_set(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], domain5: tuple[Emulator, bytes, bytes]
) -> None:
    emulator, domain_id, first = domain5
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        second = backup(session, group.drives, label="weekly")
        listed, problems = list_sets(session, group.drives, domain_id)
        assert problems == []
        labels = {s.header.set_id: s.header.label for s in listed}
        assert labels == {first: "nightly", second.set_id: "weekly"}
        assert all(len(s.present) == 5 == len(s.verified) for s in listed)
        data = group.drives[0].use()[0].get(set_object_name(second.set_id))
        assert manifest.read_header(data).token.label == "source"
