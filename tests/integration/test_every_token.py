"""Backup, restore and disaster recovery on each PKCS#11 implementation the suite has:
SoftHSM2 and openCryptoki's soft token. The same tests run on both; what a token lacks (EC
keys on openCryptoki) is said by a skip naming the mechanism.

A domain takes the profile its token can do: ``standard`` on SoftHSM2, ``portable`` on
openCryptoki (no AES key wrap with padding, no GCM). openCryptoki has one soft token per
machine, so there the "new HSM" of a disaster recovery is the same token emptied, and its
tests hold the machine-wide lock of ``hsm_fixtures.opencryptoki``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from pkcs11 import Attribute, CertificateType, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from sealkeep.backupset import backup, list_sets, set_object_name, verify_set
from sealkeep.domain import (
    DriveGroup,
    DrivesCorrupt,
    create_domain,
)
from sealkeep.emulator import Emulator
from sealkeep.hsm import HsmSession
from sealkeep.hsm_caps import PORTABLE, STANDARD, MechanismMissing, profile_named
from sealkeep.manifest import FORMAT_COMPRESSED, read_header
from sealkeep.pins import Passphrases
from sealkeep.recovery import recover_domain
from sealkeep.reshare import reshare_domain
from sealkeep.restore import restore_set
from sealkeep.samples import self_signed_certificate

if TYPE_CHECKING:
    from hsm_fixtures import Token

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cheap_kdf")]
pytest_plugins = ["hsm_fixtures"]

A = Attribute
Start = Callable[..., Emulator]


def custodians(emulator: Emulator) -> Passphrases:
    return Passphrases(
        entries={d.serial: f"custodian of {d.serial}: orbit lantern 7" for d in emulator.drives}
    )


def ports(emulator: Emulator, *indexes: int) -> list[str]:
    chosen = indexes or tuple(range(len(emulator.drives)))
    return [emulator.drives[i].port for i in chosen]


def make_keys(session: HsmSession) -> set[str]:
    """Keys every token here can make: AES (one not extractable), an HMAC secret, an RSA
    pair, a certificate and a data object. The labels of those a set holds."""
    raw = session.session
    raw.generate_key(
        KeyType.AES, 256, label="aes-data", id=b"\x01", store=True, template={A.EXTRACTABLE: True}
    )
    raw.generate_key(
        KeyType.AES, 256, label="aes-local", id=b"\x02", store=True, template={A.EXTRACTABLE: False}
    )
    raw.create_object(
        {
            A.CLASS: ObjectClass.SECRET_KEY,
            A.KEY_TYPE: KeyType.GENERIC_SECRET,
            A.TOKEN: True,
            A.LABEL: "hmac-key",
            A.ID: b"\x05",
            A.VALUE: bytes(range(32)),
            A.SIGN: True,
            A.VERIFY: True,
            A.SENSITIVE: True,
            A.EXTRACTABLE: True,
        }
    )
    raw.generate_keypair(
        KeyType.RSA,
        2048,
        label="rsa-sign",
        id=b"\x03",
        store=True,
        private_template={A.EXTRACTABLE: True, A.SENSITIVE: True},
    )
    der, subject, serial = self_signed_certificate("sealkeep on every token")
    raw.create_object(
        {
            A.CLASS: ObjectClass.CERTIFICATE,
            A.CERTIFICATE_TYPE: CertificateType.X_509,
            A.TOKEN: True,
            A.LABEL: "rsa-cert",
            A.ID: b"\x03",
            A.VALUE: der,
            A.SUBJECT: subject,
            A.ISSUER: subject,
            A.SERIAL_NUMBER: serial,
        }
    )
    raw.create_object(
        {
            A.CLASS: ObjectClass.DATA,
            A.TOKEN: True,
            A.PRIVATE: True,
            A.LABEL: "config-blob",
            A.APPLICATION: "tests",
            A.VALUE: b"not a key, kept all the same",
        }
    )
    return {"aes-data", "hmac-key", "rsa-sign", "rsa-cert", "config-blob"}


def user_labels(session: HsmSession) -> set[str]:
    return {o.label for o in session.objects() if not o.is_domain_key}


def delete(session: HsmSession, labels: set[str]) -> None:
    for obj in list(session.session.get_objects({A.TOKEN: True})):
        if obj[A.LABEL] in labels:
            obj.destroy()


@pytest.fixture
def domain3(token: Token, start: Start) -> tuple[Emulator, bytes, bytes, set[str]]:
    """Three drives, a domain in the token's source slot, its keys, one set:
    (emulator, domain id, set id, labels in the set)."""
    emulator = start(3)
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        notes: list[str] = []
        created = create_domain(session, group.drives, custodians(emulator), note=notes.append)
        assert created.profile.name == token.profile
        if token.profile == PORTABLE.name:
            assert any("uses the portable profile" in n for n in notes), notes
            # What the token cannot enforce is said plainly, not refused.
            assert any("CKA_UNWRAP_TEMPLATE" in t for t in created.unenforced), created.unenforced
        labels = make_keys(session)
        made = backup(session, group.drives, label="nightly")
        assert [s.label for s in made.skipped] == ["aes-local"]
        assert all(w.verified for w in made.drives)
    return emulator, created.domain_id, made.set_id, labels


def test_the_set_records_its_profile(
    token: Token, domain3: tuple[Emulator, bytes, bytes, set[str]]
) -> None:
    emulator, domain_id, set_id, _ = domain3
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        (listed,), _ = list_sets(session, group.drives, domain_id)
    assert listed.to_json()["profile"] == token.profile
    stored = (emulator.drives[0].flash / "obj" / set_object_name(set_id)).read_bytes()[40:]
    header = read_header(stored)
    assert header.profile == profile_named(token.profile).number
    assert header.format_version == FORMAT_COMPRESSED  # on every token, for every profile
    # and the slot says it without a PIN, as `sealkeep slots` shows it
    (slot,) = [i for i in token.hsm.slots() if i.slot_id == token.source[0]]
    assert slot.profile_name == token.profile and slot.to_json()["profile"] == token.profile


def test_quick_restore_proves_every_key(
    token: Token, domain3: tuple[Emulator, bytes, bytes, set[str]]
) -> None:
    emulator, _, set_id, labels = domain3
    with token.open() as session:
        delete(session, labels)
        assert user_labels(session) == {"aes-local"}
        with DriveGroup(ports(emulator, 2)) as group:
            result = restore_set(session, group.drives, set_id.hex())
        failed = [(o.label, o.detail) for o in result.outcomes if o.status != "restored"]
        assert result.ok, failed
        assert {o.label for o in result.outcomes} >= labels
        assert all(o.proof is not None and o.proof.ok for o in result.outcomes), [
            (o.label, o.proof) for o in result.outcomes
        ]
        assert user_labels(session) == labels | {"aes-local"}
        # The restored HMAC key computes what the original did.
        hmac_key = next(o for o in session.objects() if o.label == "hmac-key")
        signed = bytes(hmac_key.handle.sign(b"message", mechanism=Mechanism.SHA256_HMAC))
        assert signed == hmac.new(bytes(range(32)), b"message", hashlib.sha256).digest()


def test_disaster_recovery_into_an_empty_token(
    token: Token, domain3: tuple[Emulator, bytes, bytes, set[str]]
) -> None:
    emulator, domain_id, set_id, labels = domain3
    token.wipe("target")  # on openCryptoki the one token: the HSM is lost and replaced
    with token.open("target") as session, DriveGroup(ports(emulator, 0, 2)) as group:
        recovered = recover_domain(session, group.drives, custodians(emulator))
        assert recovered.domain_id == domain_id
        assert session.domain_profile().name == token.profile
        result = restore_set(session, group.drives, set_id.hex())
        assert result.ok, [(o.label, o.detail) for o in result.outcomes]
        assert user_labels(session) == labels
        # And the recovered domain makes sets of its own.
        again = backup(session, group.drives, label="after recovery", allow_missing=True)
        assert again.keys == len(result.outcomes)


def test_a_reshare_carries_the_sets_in_their_profile(
    token: Token, domain3: tuple[Emulator, bytes, bytes, set[str]]
) -> None:
    emulator, old_id, set_id, labels = domain3
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        reshared = reshare_domain(session, group.drives, custodians(emulator))
        assert reshared.domain_id != old_id
        assert session.domain_profile().name == token.profile
    stored = (emulator.drives[1].flash / "obj" / set_object_name(set_id)).read_bytes()[40:]
    assert read_header(stored).profile == profile_named(token.profile).number
    with token.open() as session, DriveGroup(ports(emulator, 1)) as group:
        delete(session, labels)
        result = restore_set(session, group.drives, set_id.hex())
        assert result.ok, [(o.label, o.detail) for o in result.outcomes]
        assert user_labels(session) == labels | {"aes-local"}


def test_a_tampered_set_is_not_authentic(
    token: Token, domain3: tuple[Emulator, bytes, bytes, set[str]]
) -> None:
    emulator, domain_id, set_id, labels = domain3
    for drive in emulator.drives:
        path = drive.flash / "obj" / set_object_name(set_id)
        raw = path.read_bytes()
        data = raw[40:-1] + bytes([raw[-1] ^ 1])  # the last byte of the sealed body
        path.write_bytes(hashlib.sha256(data).digest() + len(data).to_bytes(8, "big") + data)
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        checked = verify_set(session, group.drives, domain_id, set_id.hex())
        assert len(checked.bad) == 3
        assert all("does not authenticate" in c.detail for c in checked.bad)
        delete(session, labels)
        with pytest.raises(DrivesCorrupt):
            restore_set(session, group.drives, set_id.hex())
        assert user_labels(session) == {"aes-local"}


def test_ec_keys_round_trip(token: Token, start: Start) -> None:
    if not token.has(Mechanism.EC_KEY_PAIR_GEN):
        pytest.skip(f"{token.kind} lacks CKM_EC_KEY_PAIR_GEN: it has no EC keys to back up")
    emulator = start(3)
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        create_domain(session, group.drives, custodians(emulator))
        params = session.session.create_domain_parameters(
            KeyType.EC, {A.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        params.generate_keypair(
            label="ec-sign",
            id=b"\x04",
            store=True,
            private_template={A.EXTRACTABLE: True, A.SENSITIVE: True},
        )
        made = backup(session, group.drives, label="ec")
        delete(session, {"ec-sign"})
        result = restore_set(session, group.drives, made.set_id.hex())
        assert result.ok and result.count("restored") == 2
        assert all(o.proof is not None and o.proof.ok for o in result.outcomes)


def test_a_profile_the_token_lacks_is_refused_by_name(token: Token, start: Start) -> None:
    """SoftHSM2 2.6.1 lists CKM_AES_CBC_PAD but refuses it in C_WrapKey and C_UnwrapKey;
    openCryptoki 3.8.1 has neither AES key wrap with padding nor GCM. Each is told, before a
    drive is claimed, which mechanism the other profile needs."""
    emulator = start(3)
    other = PORTABLE if token.profile == STANDARD.name else STANDARD
    with token.open() as session, DriveGroup(ports(emulator)) as group:
        with pytest.raises(MechanismMissing) as refused:
            create_domain(session, group.drives, custodians(emulator), profile=other)
        message = str(refused.value)
        assert f"of the {other.name} profile" in message
        if other is PORTABLE:
            assert "CKM_AES_CBC_PAD" in message
        else:
            assert "CKM_AES_KEY_WRAP_PAD" in message and "CKM_AES_GCM" in message
            assert "--profile portable" in message
        assert session.domain_id() is None
    with DriveGroup(ports(emulator)) as group:
        assert all(d.blank for d in group.drives)
