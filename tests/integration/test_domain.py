"""Domain ceremonies (create, recover, re-share) on real SoftHSM2 tokens and emulated drives."""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
from sealkeep import shamir
from sealkeep.client import Role
from sealkeep.domain import (
    DOMAIN_OBJECT,
    ENV_KDF_FLOOR,
    SHARE_OBJECT,
    CeremonyError,
    DomainRecord,
    DriveGroup,
    DriveProblems,
    DrivesCorrupt,
    DrivesRefused,
    OwnerKeys,
    check_threshold,
    create_domain,
    kdf_floor,
    login_domain_drives,
    new_kdf_params,
    owner_login,
    read_record,
    share_aad,
)
from sealkeep.domainrecord import Member, RecordError, pack_sealed_share, unpack_sealed_share
from sealkeep.emulator import Emulator
from sealkeep.hsm import DomainError, Hsm, HsmSession, domain_id_from_secret, new_domain_secret
from sealkeep.kdf import KdfFloor, KdfParams, derive_custodian_keys, seal_share, unseal_share
from sealkeep.pins import InputError, Passphrases
from sealkeep.recovery import gather_shares, rebuild, recover_domain
from sealkeep.reshare import reshare_domain

if TYPE_CHECKING:
    from hsm_fixtures import SoftHsmToken

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cheap_kdf")]
pytest_plugins = ["hsm_fixtures"]

Start = Callable[..., Emulator]


def passphrase(serial: str) -> str:
    return f"custodian of {serial}: orbit lantern 7"


def custodians(emulator: Emulator, **override: str) -> Passphrases:
    entries = {d.serial: passphrase(d.serial) for d in emulator.drives}
    entries.update(override)
    return Passphrases(entries=entries)


def ports(emulator: Emulator, *indexes: int) -> list[str]:
    chosen = indexes or tuple(range(len(emulator.drives)))
    return [emulator.drives[i].port for i in chosen]


def open_slot(hsm: Hsm, token: SoftHsmToken) -> HsmSession:
    return hsm.open(token.slot_id, token.pin)


def make_domain(
    hsm: Hsm, token: SoftHsmToken, emulator: Emulator, threshold: int | None = None
) -> bytes:
    with open_slot(hsm, token) as session, DriveGroup(ports(emulator)) as group:
        result = create_domain(session, group.drives, custodians(emulator), threshold)
        assert session.domain_id() == result.domain_id
        return result.domain_id


# --- create and recover ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, 5, 7])
def test_create_then_recover_with_k_drives(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, count: int
) -> None:
    emulator = start(count)
    notes: list[str] = []
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        created = create_domain(session, group.drives, custodians(emulator), note=notes.append)
        assert created.threshold == count // 2 + 1
        assert [s for s, _ in created.drives] == [d.serial for d in emulator.drives]
        for drive in group:
            client, hello = drive.use()
            assert hello.state == "owned" and hello.domain == created.domain_id
            client.authenticate(Role.OWNER, session.owner_credential(hello.serial))
            names = {o.name for o in client.list()}
            assert names == {SHARE_OBJECT, DOMAIN_OBJECT}
            record = DomainRecord.decode(client.get(DOMAIN_OBJECT))
            assert record.threshold == created.threshold
            assert record.members == tuple(d.serial for d in emulator.drives)
    k = created.threshold
    last_k = list(range(count - k, count))
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(ports(emulator, *last_k)) as group:
        recovered = recover_domain(session, group.drives, custodians(emulator))
        assert recovered.domain_id == created.domain_id
        assert session.domain_id() == created.domain_id
        assert sorted(recovered.used) == sorted(emulator.drives[i].serial for i in last_k)
        assert recovered.problems == []
        # The rebuilt domain derives the same owner credentials.
        client, hello = group.drives[0].use()
        client.authenticate(Role.OWNER, session.owner_credential(hello.serial))


def test_every_subset_of_five(hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start) -> None:
    """Every subset of 3 or more of 5 drives rebuilds the domain; every smaller one says
    how many more drives it needs."""
    emulator = start(5)
    domain_id = make_domain(hsm, tokens["source"], emulator, threshold=3)
    source = custodians(emulator)
    with DriveGroup(ports(emulator)) as group:
        for size in range(0, 6):
            for subset in itertools.combinations(group.drives, size):
                gathered = gather_shares(list(subset), source, domain_id)
                assert gathered.problems == []
                if size >= 3:
                    rebuilt = rebuild(gathered)
                    try:
                        assert rebuilt.domain_id == domain_id
                        assert len(rebuilt.used) == 3 and rebuilt.bad == []
                    finally:
                        rebuilt.wipe()
                elif size == 0:
                    with pytest.raises(DriveProblems, match="no drive of domain"):
                        rebuild(gathered)
                else:
                    with pytest.raises(DriveProblems) as caught:
                        rebuild(gathered)
                    message = str(caught.value)
                    assert f"only {size} good share(s) of the 3 needed: {3 - size} more" in message


def test_recover_names_wrong_passphrase_other_domain_and_stops_short(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    stranger = start(3)
    make_domain(hsm, tokens["source"], emulator)
    make_domain(hsm, tokens["spare"], stranger)
    first, second = emulator.drives[0].serial, emulator.drives[1].serial
    wrong = custodians(emulator, **{second: "not the right passphrase at all"})
    addresses = [*ports(emulator, 0, 1), stranger.drives[0].port]
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(addresses) as group:
        with pytest.raises(DriveProblems) as caught:
            recover_domain(session, group.drives, wrong)
        message = str(caught.value)
        assert "only 1 good share(s) of the 2 needed: 1 more" in message
        assert f"drive {second}" in message and "wrong passphrase" in message
        assert f"drive {stranger.drives[0].serial}" in message
        assert "another backup domain" in message
        assert isinstance(caught.value, DrivesRefused) and caught.value.exit_code == 4
        assert session.domain_id() is None
        assert first not in message


def test_recover_refuses_a_slot_with_another_domain(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    other = start(3)
    domain_id = make_domain(hsm, tokens["source"], emulator)
    other_id = make_domain(hsm, tokens["target"], other)
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(ports(emulator)) as group:
        with pytest.raises(DomainError, match="already holds another backup domain"):
            recover_domain(session, group.drives, custodians(emulator))
        assert session.domain_id() == other_id
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        again = recover_domain(session, group.drives, custodians(emulator))
        assert again.already and again.domain_id == domain_id


def forge(hsm: Hsm, token: SoftHsmToken, emulator: Emulator, index: int, mutate: str) -> None:
    """Replace a drive's share with a well-sealed but altered one (as its custodian could)."""
    drive = emulator.drives[index]
    with open_slot(hsm, token) as session, DriveGroup([drive.port]) as group:
        client, hello = group.drives[0].use()
        assert hello.salt is not None and hello.kdf is not None and hello.domain is not None
        keys = derive_custodian_keys(
            passphrase(hello.serial), KdfParams.from_map(hello.salt, hello.kdf)
        )
        client.authenticate(Role.OWNER, session.owner_credential(hello.serial))
        aad = share_aad(hello.domain, hello.serial)
        share, sealed_record = unpack_sealed_share(
            unseal_share(keys, client.get(SHARE_OBJECT), aad)
        )
        value = bytearray(share.value)
        value[0] ^= 1
        record = share.share_set
        if mutate == "record":
            # A cleverer forger also rewrites the check value in its copy of the record.
            checks = list(record.checks)
            checks[share.index - 1] = shamir.share_check_value(
                record.set_id, share.index, bytes(value)
            )
            record = dataclasses.replace(record, checks=tuple(checks))
        share = shamir.Share(share.index, bytes(value), record)
        # Replacing needs the custodian to erase, then the owner to add.
        client.authenticate(Role.CUSTODIAN, keys.credential)
        client.delete(SHARE_OBJECT)
        client.authenticate(Role.OWNER, session.owner_credential(hello.serial))
        client.put(SHARE_OBJECT, seal_share(keys, pack_sealed_share(share, sealed_record), aad))


@pytest.mark.parametrize(("mutate", "reason"), [("value", "corrupt"), ("record", "forged")])
def test_forged_share_is_named(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, mutate: str, reason: str
) -> None:
    emulator = start(3)
    domain_id = make_domain(hsm, tokens["source"], emulator)
    forge(hsm, tokens["source"], emulator, 0, mutate)
    forged = emulator.drives[0].serial
    with DriveGroup(ports(emulator)) as group:
        # With enough good shares besides it, the domain is rebuilt and the forgery named.
        rebuilt = rebuild(gather_shares(group.drives, custodians(emulator)))
        try:
            assert rebuilt.domain_id == domain_id
            assert [p.drive for p in rebuilt.bad] == [f"drive {forged}"]
            assert reason in rebuilt.bad[0].reason
        finally:
            rebuilt.wipe()
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(ports(emulator, 0, 1)) as group:
        with pytest.raises(DrivesCorrupt) as caught:
            recover_domain(session, group.drives, custodians(emulator))
        assert f"drive {forged}" in str(caught.value)
        assert "1 more" in str(caught.value)
        assert caught.value.exit_code == 6
        assert session.domain_id() is None


def test_corrupt_share_on_flash_is_named(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    make_domain(hsm, tokens["source"], emulator)
    damaged = emulator.drives[2]
    path = damaged.flash / "obj" / SHARE_OBJECT
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40
    path.write_bytes(bytes(raw))
    with DriveGroup(ports(emulator, 1, 2)) as group:
        gathered = gather_shares(group.drives, custodians(emulator))
        assert [p.drive for p in gathered.problems] == [group.drives[1].name]
        assert "corrupt share" in gathered.problems[0].reason


# --- create refusals ----------------------------------------------------------------------------


def test_create_refuses_bad_sizes_and_thresholds(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(4)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        with pytest.raises(InputError, match="3, 5 or 7 drives, and 4 were given"):
            create_domain(session, group.drives, custodians(emulator))
        three = group.drives[:3]
        for bad in (0, 4):
            with pytest.raises(InputError, match="between 1 and the number of drives"):
                create_domain(session, three, custodians(emulator), bad)
        assert session.domain_id() is None
        assert all(d.refresh().blank for d in group)
    k, warnings = check_threshold(1, 3)
    assert k == 1 and "threshold of 1" in warnings[0]
    assert check_threshold(None, 7) == (4, [])


def test_create_refuses_owned_drives_and_a_slot_with_a_domain(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    fresh = start(3)
    make_domain(hsm, tokens["source"], emulator)
    mixed = [*ports(fresh, 0, 1), emulator.drives[2].port]
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(mixed) as group:
        with pytest.raises(DriveProblems, match="must be blank") as caught:
            create_domain(session, group.drives, custodians(fresh))
        assert emulator.drives[2].serial in str(caught.value)
        assert fresh.drives[0].serial not in str(caught.value)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(fresh)) as group:
        with pytest.raises(DomainError, match="already holds backup domain"):
            create_domain(session, group.drives, custodians(fresh))
        assert all(d.refresh().blank for d in group)


def test_create_refuses_weak_passphrases(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    weak = custodians(emulator, **{emulator.drives[1].serial: "password1234"})
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        with pytest.raises(InputError, match=f"drive {emulator.drives[1].serial}"):
            create_domain(session, group.drives, weak)
        assert session.domain_id() is None


def test_create_undoes_claims_when_a_drive_fails(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    with (
        open_slot(hsm, tokens["source"]) as session,
        DriveGroup(ports(emulator), timeout=1.0) as group,
    ):
        emulator.kill(2)  # gone after HELLO, before its claim
        with pytest.raises(CeremonyError) as caught:
            create_domain(session, group.drives, custodians(emulator))
        message = str(caught.value)
        assert emulator.drives[2].serial in message and "Undone" in message
        assert session.domain_id() is None
        assert all(d.refresh().blank for d in group.drives[:2])


# --- re-share -----------------------------------------------------------------------------------


def test_reshare_replaces_a_lost_drive(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, make_sample_keys: Any
) -> None:
    from sealkeep.backupset import backup, list_sets

    emulator = start(4)
    old_ports = ports(emulator, 0, 1, 2)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(old_ports) as group:
        old_id = create_domain(session, group.drives, custodians(emulator)).domain_id
        make_sample_keys(session)
        made = backup(session, group.drives, label="before")
    # Drive 2 is lost; drive 3 is a new blank one; two custodians are present.
    new_ports = ports(emulator, 0, 1, 3)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(new_ports) as group:
        result = reshare_domain(session, group.drives, custodians(emulator))
        assert result.domain_id != old_id and session.domain_id() == result.domain_id
        assert [r for _, _, r in result.drives] == ["kept", "kept", "new"]
        assert result.sets == [made.set_id.hex()]
        assert result.retired == [emulator.drives[2].serial]
        listed, problems = list_sets(session, group.drives, result.domain_id)
        assert problems == []
        assert [s.header.set_id for s in listed] == [made.set_id]
        assert len(listed[0].verified) == 3
        assert listed[0].header.domain_id == result.domain_id
    # The lost drive's old share no longer combines with the others.
    with DriveGroup(ports(emulator, 0, 2)) as group:
        with pytest.raises(DriveProblems):
            rebuild(gather_shares(group.drives, custodians(emulator), old_id))
    # Any two drives of the new set rebuild the new domain.
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(ports(emulator, 1, 3)) as group:
        assert recover_domain(session, group.drives, custodians(emulator)).domain_id == (
            result.domain_id
        )


def test_reshare_carries_the_retention_rule_and_the_sets_oldest_first(
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    start: Start,
    make_sample_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every drive of the new set, the blank one too, gets the domain's rule, and receives
    the sets in the order they were made: the owner may drop the oldest ones there."""
    from sealkeep import manifest
    from sealkeep.backupset import backup, owner_may_drop, set_object_name

    clock = itertools.count(1_700_000_000, 60)  # a minute between backups
    monkeypatch.setattr(manifest, "time", types.SimpleNamespace(time=lambda: next(clock)))
    emulator = start(4)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator, 0, 1, 2)) as group:
        created = create_domain(session, group.drives, custodians(emulator), retention=1)
        assert created.retention == 1 and created.to_json()["retention"] == 1
        make_sample_keys(session)
        made = [backup(session, group.drives) for _ in range(4)]
    names = [set_object_name(m.set_id) for m in made]
    new_ports = ports(emulator, 0, 1, 3)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(new_ports) as group:
        result = reshare_domain(session, group.drives, custodians(emulator))
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(new_ports) as group:
        assert [d.use()[1].retention for d in group.drives] == [1, 1, 1]
        logged, problems, record = login_domain_drives(session, group.drives, result.domain_id)
        assert problems == [] and record is not None and record.retention == 1
        for drive in logged:
            assert [owner_may_drop(drive, n) for n in names] == [True, True, True, False]


def test_prune_uses_the_owner_where_retention_allows_and_custodians_elsewhere(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, make_sample_keys: Any
) -> None:
    from sealkeep.backupset import backup, set_object_name
    from sealkeep.erase import prune_set

    emulator = start(3)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        create_domain(session, group.drives, custodians(emulator), retention=1)
        make_sample_keys(session)
        old, new = (backup(session, group.drives) for _ in range(2))
        # On the third drive its custodian has taken the newer set away again: the older
        # one has no newer set there, so that drive keeps it.
        third = group.drives[2]
        hello = third.use()[1]
        assert hello.salt is not None and hello.kdf is not None
        keys = derive_custodian_keys(
            passphrase(hello.serial), KdfParams.from_map(hello.salt, hello.kdf)
        )
        third.use()[0].authenticate(Role.CUSTODIAN, keys.credential)
        third.use()[0].delete(set_object_name(new.set_id))
        notes: list[str] = []
        with pytest.raises(DrivesRefused) as refused:  # no custodian can answer
            prune_set(group.drives, old.set_id.hex(), Passphrases(), notes.append, session)
        assert refused.value.problems == (
            (third.name, "retention 1 keeps it: 0 newer set(s) on the drive"),
        )
        assert notes == []
        result = prune_set(
            group.drives, old.set_id.hex(), custodians(emulator), notes.append, session
        )
        assert result.problems == [] and len(result.done) == 3
        assert result.by_owner == [d.name for d in group.drives[:2]]
        assert any("deleted by its custodian" in n and hello.serial in n for n in notes)
    for drive in emulator.drives:
        assert not (drive.flash / "obj" / set_object_name(old.set_id)).exists()


def test_a_record_without_retention_reads_as_before() -> None:
    """Records of domains without a rule keep their six fields (and their MACs)."""
    secret = new_domain_secret()
    (share,) = shamir.split(secret, 1, 1)
    params = KdfParams(b"s" * 16, 1, 8, 1)
    plain = DomainRecord(b"d" * 16, 1, (Member("SK-1", params),), 0, share.share_set.set_id)
    plain = plain.signed(secret)
    assert len(cbor2.loads(plain.body())) == 6
    assert DomainRecord.decode(plain.encode()) == plain and plain.verify_secret(secret)
    kept = dataclasses.replace(plain, retention=3).signed(secret)
    assert len(cbor2.loads(kept.body())) == 7 and kept.mac != plain.mac
    assert DomainRecord.decode(kept.encode()).retention == 3
    with pytest.raises(RecordError, match="retention"):
        DomainRecord.decode(dataclasses.replace(plain, retention=0).encode())


def delete_aes_data(session: HsmSession) -> None:
    for obj in session.objects():
        if obj.label == "aes-data":
            obj.handle.destroy()


def test_a_domain_of_the_old_key_hierarchy_is_flagged_and_a_reshare_upgrades_it(
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    start: Start,
    make_sample_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import functools

    from sealkeep import manifest
    from sealkeep.backupset import backup, list_sets
    from sealkeep.hsm_base import HIERARCHY, HIERARCHY_SHARED_KEK
    from sealkeep.restore import restore_set

    emulator = start(3)
    # A domain as sealkeep made it before key hierarchy 2, and a set made in it.
    old_import = functools.partialmethod(HsmSession.import_domain, hierarchy=HIERARCHY_SHARED_KEK)
    with monkeypatch.context() as patch:
        patch.setattr(HsmSession, "import_domain", old_import)
        with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
            old_id = create_domain(session, group.drives, custodians(emulator)).domain_id
            make_sample_keys(session)
            old_set = backup(session, group.drives, label="old")
    slot = hsm.slot(tokens["source"].slot_id)
    assert slot.domain_id == old_id and slot.domain_hierarchy == HIERARCHY_SHARED_KEK
    assert slot.old_hierarchy
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        # Sets of the old hierarchy still restore where they were made.
        listed, _ = list_sets(session, group.drives, old_id)
        assert listed[0].header.format_version == manifest.FORMAT_SHARED_KEK
        delete_aes_data(session)
        assert restore_set(session, group.drives, old_set.set_id.hex()).ok
        result = reshare_domain(session, group.drives, custodians(emulator))
        assert session.domain_hierarchy() == HIERARCHY
        listed, problems = list_sets(session, group.drives, result.domain_id)
        assert problems == [] and [s.header.set_id for s in listed] == [old_set.set_id]
        assert listed[0].header.format_version == manifest.FORMAT_COMPRESSED  # upgraded
        delete_aes_data(session)
        restored = restore_set(session, group.drives, old_set.set_id.hex())
        assert restored.ok and restored.count("restored") == 1
    slot = hsm.slot(tokens["source"].slot_id)
    assert slot.domain_hierarchy == HIERARCHY and not slot.old_hierarchy


def test_reshare_needs_k_custodians(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(5)
    make_domain(hsm, tokens["source"], emulator, threshold=3)
    with open_slot(hsm, tokens["source"]) as session:
        before = session.domain_id()
        with DriveGroup(ports(emulator, 0, 3, 4)) as group:
            # Only drive 0 is of the domain; 3 custodians are needed.
            for drive in group.drives[1:]:
                client, hello = drive.use()
                assert hello.salt is not None and hello.kdf is not None
                keys = derive_custodian_keys(
                    passphrase(hello.serial), KdfParams.from_map(hello.salt, hello.kdf)
                )
                client.authenticate(Role.CUSTODIAN, keys.credential)
                client.factory_reset()
                drive.refresh()
            with pytest.raises(CeremonyError, match="needs 3 drives of the current domain"):
                reshare_domain(session, group.drives, custodians(emulator))
        wrong = custodians(emulator, **{emulator.drives[1].serial: "wrong wrong wrong 123"})
        with DriveGroup(ports(emulator, 0, 1, 2)) as group:
            with pytest.raises(DriveProblems, match="wrong passphrase") as refused:
                reshare_domain(session, group.drives, wrong)
        assert "Leave out a drive whose custodian cannot open it" in str(refused.value)
        assert session.domain_id() == before


def test_guesses_never_lock_the_custodian_out(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    """Anyone on the line can slow a custodian down, never shut them out (and so never
    make a recovery impossible by locking n-k+1 drives)."""
    emulator = start(3, backoff_ms=1)
    make_domain(hsm, tokens["source"], emulator)
    victim = emulator.drives[0].serial
    wrong = custodians(emulator, **{victim: "a guess that is wrong 42"})
    with DriveGroup(ports(emulator, 0)) as group:
        for _ in range(12):
            problems = gather_shares(group.drives, wrong).problems
            assert "wrong passphrase" in problems[0].reason
        assert group.drives[0].refresh().custodian_delay_ms > 0  # slowed down
        gathered = gather_shares(group.drives, custodians(emulator))
        assert not gathered.problems and [u.serial for u in gathered.unlocked] == [victim]


def test_reshare_puts_everything_back_when_a_drive_fails(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, make_sample_keys: Any
) -> None:
    from sealkeep.backupset import backup, verify_set

    emulator = start(4)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator, 0, 1, 2)) as group:
        old_id = create_domain(session, group.drives, custodians(emulator)).domain_id
        make_sample_keys(session)
        made = backup(session, group.drives)
    with (
        open_slot(hsm, tokens["source"]) as session,
        DriveGroup(ports(emulator, 0, 1, 3), timeout=1.0) as group,
    ):
        emulator.kill(3)  # the new drive dies after saying HELLO
        with pytest.raises(CeremonyError, match="put back as they were") as caught:
            reshare_domain(session, group.drives, custodians(emulator))
        assert emulator.drives[3].serial in str(caught.value)
        assert session.domain_id() == old_id
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator, 0, 1, 2)) as group:
        assert all(d.domain == old_id for d in group)
        assert verify_set(session, group.drives, old_id, made.set_id.hex()).ok
        rebuilt = rebuild(gather_shares(group.drives[:2], custodians(emulator)))
        assert rebuilt.domain_id == old_id
        rebuilt.wipe()


# --- what a drive announces, and what the record pins -----------------------------------------


def test_a_drive_announcing_costs_below_the_floor_gets_no_passphrase(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drives were claimed with t=1, 8 KiB under a floor the tests lowered; with the
    production floor back, such a HELLO is refused, named, before any proof is sent."""
    emulator = start(3)
    make_domain(hsm, tokens["source"], emulator)
    monkeypatch.delenv(ENV_KDF_FLOOR)
    with DriveGroup(ports(emulator, 0, 1)) as group:
        gathered = gather_shares(group.drives, custodians(emulator))
        assert gathered.unlocked == []
        assert [p.drive for p in gathered.problems] == [d.name for d in group.drives]
        for problem in gathered.problems:
            assert "below the floor of 3 pass(es) and 65536 KiB" in problem.reason
            assert "no passphrase was tried" in problem.reason
        for drive in group.drives:  # no attempt was spent: none is slowed
            assert drive.refresh().custodian_delay_ms == 0
        emulator_flash = [d.flash for d in emulator.drives[:2]]
        assert all(cbor2.loads((f / "auth").read_bytes()) == [0, 0] for f in emulator_flash)
        with pytest.raises(DrivesCorrupt, match="below the floor"):
            rebuild(gathered)


def test_the_kdf_floor_is_a_host_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KDF_FLOOR)
    assert kdf_floor() == KdfFloor(3, 65536)
    with pytest.raises(InputError, match="below the floor"):
        new_kdf_params()  # $SEALKEEP_KDF_MEMORY_KIB=8 and TIME=1 from the fixture
    monkeypatch.setenv(ENV_KDF_FLOOR, "m=16")
    assert kdf_floor() == KdfFloor(3, 16)
    monkeypatch.setenv(ENV_KDF_FLOOR, "t=one")
    with pytest.raises(InputError, match=ENV_KDF_FLOOR):
        kdf_floor()


def test_a_drive_announcing_other_kdf_than_the_record_pins_is_refused(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    make_domain(hsm, tokens["source"], emulator)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        record = read_record(owner_login(session, group.drives[1]), OwnerKeys(session))
        assert [m.kdf for m in record.roster] == [
            KdfParams.from_map(d.use()[1].salt or b"", d.use()[1].kdf or {}) for d in group
        ]
        for drive in group:
            drive.use()[0].end_session()
        # Whatever answers on drive 0's port now announces more passes than its claim used.
        liar = group.drives[0]
        assert liar.hello is not None and liar.hello.kdf is not None
        liar.hello = dataclasses.replace(liar.hello, kdf={**liar.hello.kdf, 1: 2})
        gathered = gather_shares(group.drives, custodians(emulator), pinned=record)
        assert [p.drive for p in gathered.problems] == [liar.name]
        assert "other than the ones the domain record pins" in gathered.problems[0].reason
        assert liar.refresh().custodian_delay_ms == 0
        assert cbor2.loads((emulator.drives[0].flash / "auth").read_bytes()) == [0, 0]
        assert len(gathered.unlocked) == 2


# --- an insider custodian -------------------------------------------------------------------


def write_insider_split(hsm: Hsm, token: SoftHsmToken, emulator: Emulator, index: int) -> bytes:
    """An insider custodian (who knows only their own passphrase) replaces their drive's
    sealed share and domain record with a self-consistent 1-of-1 split of a secret of their
    own, sealed with their own key. The HSM's owner session only stands in for direct
    writes to the drive's flash."""
    drive = emulator.drives[index]
    with open_slot(hsm, token) as session, DriveGroup([drive.port]) as group:
        client, hello = group.drives[0].use()
        assert hello.salt is not None and hello.kdf is not None and hello.domain is not None
        params = KdfParams.from_map(hello.salt, hello.kdf)
        keys = derive_custodian_keys(passphrase(hello.serial), params)
        own = new_domain_secret()
        (share,) = shamir.split(own, 1, 1)
        record = DomainRecord(
            hello.domain,
            1,
            (Member(hello.serial, params, hello.identity),),
            0,
            share.share_set.set_id,
        ).signed(own)
        aad = share_aad(hello.domain, hello.serial)
        client.authenticate(Role.CUSTODIAN, keys.credential)  # erasing is the custodian's
        for name in (SHARE_OBJECT, DOMAIN_OBJECT):
            client.delete(name)
        client.authenticate(Role.OWNER, session.owner_credential(hello.serial))
        client.put(SHARE_OBJECT, seal_share(keys, pack_sealed_share(share, record), aad))
        client.put(DOMAIN_OBJECT, record.encode())
        return domain_id_from_secret(own)


def test_an_insiders_one_of_one_split_is_refused_and_named(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    domain_id = make_domain(hsm, tokens["source"], emulator)
    insider, honest = emulator.drives[0].serial, emulator.drives[1].serial
    write_insider_split(hsm, tokens["source"], emulator, 0)
    # Fewer than k = 2 honest shares: the insider's secret is not taken, and the insider
    # (not the honest drive) is named.
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(ports(emulator, 0, 1)) as group:
        with pytest.raises(DrivesCorrupt) as caught:
            recover_domain(session, group.drives, custodians(emulator))
        assert session.domain_id() is None
        error = caught.value
        assert "only 1 good share(s) of the 2 needed: 1 more" in str(error)
        assert [name for name, _ in error.problems] == [f"drive {insider}"]
        assert "forged share" in error.problems[0][1]
        assert honest not in str(error).split("more drive(s)")[1].split(":", 1)[1]
    # With k honest shares present, the domain is rebuilt and the insider named.
    with DriveGroup(ports(emulator)) as group:
        rebuilt = rebuild(gather_shares(group.drives, custodians(emulator)))
        try:
            assert rebuilt.domain_id == domain_id
            assert (rebuilt.threshold, rebuilt.count) == (2, 3)
            assert [p.drive for p in rebuilt.bad] == [f"drive {insider}"]
            assert rebuilt.record.members == tuple(d.serial for d in emulator.drives)
        finally:
            rebuilt.wipe()


def test_an_insider_alone_rebuilds_nothing(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    make_domain(hsm, tokens["source"], emulator)
    write_insider_split(hsm, tokens["source"], emulator, 2)
    with open_slot(hsm, tokens["target"]) as session, DriveGroup(ports(emulator, 2)) as group:
        with pytest.raises(DrivesCorrupt) as caught:
            recover_domain(session, group.drives, custodians(emulator))
        assert [name for name, _ in caught.value.problems] == [f"drive {emulator.drives[2].serial}"]
        assert session.domain_id() is None


def test_records_are_macd_and_checked_by_the_hsm(
    hsm: Hsm, tokens: dict[str, SoftHsmToken], start: Start
) -> None:
    emulator = start(3)
    make_domain(hsm, tokens["source"], emulator)
    with open_slot(hsm, tokens["source"]) as session, DriveGroup(ports(emulator)) as group:
        owners = OwnerKeys(session)
        client = owner_login(session, group.drives[0], owners)
        record = read_record(client, owners)
        assert record.threshold == 2 and len(record.mac) == 32
        altered = dataclasses.replace(record, threshold=1)
        hello = group.drives[0].use()[1]
        assert hello.salt is not None and hello.kdf is not None
        keys = derive_custodian_keys(
            passphrase(hello.serial), KdfParams.from_map(hello.salt, hello.kdf)
        )
        client.authenticate(Role.CUSTODIAN, keys.credential)  # an insider custodian
        client.delete(DOMAIN_OBJECT)
        client = owner_login(session, group.drives[0], owners)
        client.put(DOMAIN_OBJECT, altered.encode())
        with pytest.raises(RecordError, match="MAC does not verify"):
            read_record(client, owners)
        # Another drive's authentic record is used instead.
        _, problems, found = login_domain_drives(session, group.drives, record.domain_id)
        assert problems == [] and found == record
