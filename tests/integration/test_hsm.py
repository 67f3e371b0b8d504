"""The HSM layer against real tokens: SoftHSM2, and openCryptoki's soft token for the tests
that take the ``token`` fixture (see ``hsm_fixtures.Token``). openCryptoki has no EC keys:
there the sample keys are AES, RSA and a certificate, each proven by use all the same."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from sealkeep import manifest
from sealkeep.backupset import seal_set
from sealkeep.hsm import (
    DOMAIN_SECRET_LEN,
    DomainError,
    Hsm,
    HsmSession,
    ModuleError,
    PinError,
    RestoreOutcome,
    SetKey,
    SetKeyError,
    SlotError,
    domain_id_from_secret,
    new_domain_secret,
    owner_credential_from_secret,
    replay_template,
)
from sealkeep.hsm_caps import profile_named
from sealkeep.hsm_keys import Wrapping
from sealkeep.manifest import KeyEntry, ManifestError

if TYPE_CHECKING:
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken, Token

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]  # softhsm, hsm, tokens, token, make_sample_keys

SECRET = bytes(range(DOMAIN_SECRET_LEN))


def open_token(hsm: Hsm, token: SoftHsmToken) -> HsmSession:
    return hsm.open(token.slot_id, token.pin)


def import_domain(token: Token, session: HsmSession, secret: bytes = SECRET) -> bytes:
    """The domain of ``secret`` in ``session``'s slot, of the profile the token can do."""
    return session.import_domain(secret, profile=profile_named(token.profile))


# --- slots and sessions ---------------------------------------------------------------------


def test_slots_list_the_tokens(hsm: Hsm, tokens: dict[str, SoftHsmToken]) -> None:
    slots = {s.slot_id: s for s in hsm.slots()}
    for token in tokens.values():
        info = slots[token.slot_id]
        assert info.label == token.label
        assert info.serial == token.serial
        assert info.model == "SoftHSM v2"
        assert info.initialized and info.token_present
        assert not info.holds_domain
    # SoftHSM2 always offers one free slot with an uninitialised token.
    assert any(not s.initialized for s in slots.values())


def test_wrong_pin_is_named(token: Token) -> None:
    slot_id, _ = token.source
    label = token.hsm.slot(slot_id).label
    with pytest.raises(PinError, match=rf"wrong PIN for slot {slot_id} \(token '{label}'\)"):
        token.hsm.open(slot_id, "not-the-pin")
    # Also while another session of this process is logged in to the token.
    with token.open():
        with pytest.raises(PinError, match="wrong PIN"):
            token.hsm.open(slot_id, "not-the-pin")
        with token.open() as second:
            assert second.objects() == []


def test_a_refused_login_leaves_no_session_open(token: Token) -> None:
    """Every session sealkeep opens is closed again. Tokens limit their sessions, and
    openCryptoki will not re-initialise a token while any is open."""
    slot_id, _ = token.source
    before = token.open_sessions()
    if before is None:
        pytest.skip(f"{token.kind} does not count sessions (CK_TOKEN_INFO.ulSessionCount)")
    with pytest.raises(PinError):
        token.hsm.open(slot_id, "not-the-pin")
    with token.open(), token.open() as second:
        assert second.objects() == []
    assert token.open_sessions() == before


def test_bad_slot_and_module(hsm: Hsm, tokens: dict[str, SoftHsmToken]) -> None:
    with pytest.raises(SlotError, match="there is no slot 4242"):
        hsm.open(4242, "1234")
    free = next(s for s in hsm.slots() if not s.initialized)
    with pytest.raises(SlotError, match="not initialised"):
        hsm.open(free.slot_id, "1234")
    with pytest.raises(ModuleError, match="does not exist"):
        Hsm("/nonexistent/libpkcs11.so")


# --- objects --------------------------------------------------------------------------------


def test_objects_are_listed_with_what_can_be_backed_up(token: Token) -> None:
    with token.open() as session:
        token.sample_keys(session)
        listed = {(o.label, o.class_name): o for o in session.objects()}
    rows = {
        key: (o.type_name, o.bits, o.id_hex, o.exportable, o.reason) for key, o in listed.items()
    }
    expected = {
        ("aes-data", "secret key"): ("AES", 256, "01", True, None),
        ("aes-local", "secret key"): ("AES", 256, "02", False, "not extractable"),
        ("rsa-sign", "private key"): ("RSA", 2048, "03", True, None),
        ("rsa-sign", "public key"): ("RSA", 2048, "03", True, None),
    }
    if token.has_ec:
        expected |= {
            ("ec-sign", "private key"): ("EC P-256", 256, "04", True, None),
            ("ec-sign", "public key"): ("EC P-256", 256, "04", True, None),
            ("ec-sign", "certificate"): ("X.509", None, "04", True, None),
        }
    else:
        expected[(token.sample_cert, "certificate")] = ("X.509", None, "04", True, None)
    assert rows == expected
    aes = listed[("aes-data", "secret key")].attributes
    assert aes[Attribute.SENSITIVE] is True and aes[Attribute.EXTRACTABLE] is True
    assert aes[Attribute.CLASS] == ObjectClass.SECRET_KEY and aes[Attribute.KEY_TYPE] == KeyType.AES
    assert Attribute.VALUE not in aes  # never key material
    rsa = listed[("rsa-sign", "private key")].attributes
    modulus = rsa[Attribute.MODULUS]
    assert Attribute.PRIVATE_EXPONENT not in rsa and isinstance(modulus, bytes)
    assert len(modulus) == 256
    # Plain values only (CBOR-ready).
    for obj in listed.values():
        assert all(type(v) in (bool, int, bytes, str) for v in obj.attributes.values())
        assert obj.to_json()["label"] == obj.label


def test_direct_listing_reads_what_python_pkcs11_reads(token: Token) -> None:
    """The fast listing (direct C_FindObjects / C_GetAttributeValue) gives the very
    attributes python-pkcs11 gives, so a set's manifest does not depend on the path."""
    big = bytes(range(256)) * 40  # larger than the room of the one-call read
    with token.open() as session:
        samples = token.sample_keys(session)
        session.session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.LABEL: "big-cert",
                Attribute.SUBJECT: b"0\x00",
                Attribute.VALUE: big,
            }
        )
        session.session.create_object(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.LABEL: "data"}
        )

        def rows(objects: list[Any]) -> list[tuple[Any, ...]]:
            return sorted(
                (o.label, o.object_class, sorted(o.attributes.items()), o.exportable, o.reason)
                for o in objects
            )

        direct = session._objects_direct()
        through_pkcs11 = session._objects_pkcs11()
        assert rows(direct) == rows(through_pkcs11)
        # the samples, the big certificate and the data object
        assert len(direct) == len(samples) + 2
        cert = next(o for o in direct if o.label == "big-cert")
        assert cert.attributes[Attribute.VALUE] == big
        assert session.present_keys() == {(o.object_class, o.label, o.id) for o in through_pkcs11}


def test_listed_objects_can_be_used_and_destroyed(token: Token) -> None:
    with token.open() as session:
        made = token.sample_keys(session)
        listed = {(o.label, o.class_name): o for o in session.objects()}
        aes = listed[("aes-data", "secret key")].handle
        assert aes.handle == made["aes"].handle
        assert aes[Attribute.LABEL] == "aes-data"
        iv = bytes(16)
        sealed = aes.encrypt(b"sixteen byte msg", mechanism_param=iv)
        assert made["aes"].decrypt(sealed, mechanism_param=iv) == b"sixteen byte msg"
        aes.destroy()
        assert ("aes-data", "secret key") not in {
            (o.label, o.class_name) for o in session.objects()
        }


def test_domain_keys_are_searched_for_once_per_session(
    token: Token, monkeypatch: pytest.MonkeyPatch
) -> None:
    with token.open() as session:
        import_domain(token, session)
    with token.open() as session:
        searches: list[dict[Attribute, Any] | None] = []
        search = session._token_objects

        def counted(template: dict[Attribute, Any] | None = None) -> Any:
            searches.append(template)
            return search(template)

        monkeypatch.setattr(session, "_token_objects", counted)
        expected = domain_id_from_secret(SECRET)
        assert session.domain_id() == expected
        assert len(searches) == 1
        assert session.require_domain() == expected
        assert session.owner_credential("DRIVE-1") == owner_credential_from_secret(
            SECRET, "DRIVE-1"
        )
        session.new_set_key().destroy()
        # and the marker, for the domain's profile, once
        assert len(searches) == 2
        session.new_set_key().destroy()
        assert len(searches) == 2
        # Removing the domain forgets the keys; a new search finds none.
        session.remove_domain()
        assert session.domain_id() is None


# --- backup domain --------------------------------------------------------------------------


def test_domain_import_and_owner_credentials(token: Token, tokens: dict[str, SoftHsmToken]) -> None:
    expected_id = domain_id_from_secret(SECRET)
    for which in ("source", "target"):
        with token.open_target() if which == "target" else token.open() as session:
            assert session.domain_id() is None
            with pytest.raises(DomainError, match="holds no backup domain key"):
                session.owner_credential("DRIVE-1")
            assert import_domain(token, session) == expected_id
            assert session.domain_id() == expected_id
            with pytest.raises(DomainError, match="already holds backup domain"):
                import_domain(token, session)
            one = session.owner_credential("DRIVE-1")
            assert one == session.owner_credential("DRIVE-1")
            assert one == owner_credential_from_secret(SECRET, "DRIVE-1")
            assert one != session.owner_credential("DRIVE-2")
            # The domain keys (wrap, seal, owner) are in the slot, never exportable.
            domain_objects = [
                o
                for o in session.objects()
                if o.label.startswith("sealkeep-") and o.object_class == ObjectClass.SECRET_KEY
            ]
            assert len(domain_objects) == 3
            assert all(not o.exportable and "domain" in (o.reason or "") for o in domain_objects)
            for obj in domain_objects:
                assert obj.attributes[Attribute.EXTRACTABLE] is False
                with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                    obj.handle[Attribute.VALUE]
    slots = {s.slot_id: s for s in token.hsm.slots()}
    assert slots[token.source[0]].domain_id == expected_id
    assert not slots[token.source[0]].old_hierarchy
    # Another secret, another domain and other credentials: in a token of its own where
    # there is one, else in the one token once the domain is gone.
    if token.one_token:
        with token.open() as session:
            session.remove_domain()
        spare = token.source
    else:
        spare = (tokens["spare"].slot_id, tokens["spare"].pin)
    assert not token.hsm.slot(spare[0]).holds_domain
    other = new_domain_secret()
    with token.hsm.open(*spare) as session:
        assert import_domain(token, session, other) == domain_id_from_secret(other) != expected_id
        assert session.owner_credential("DRIVE-1") != owner_credential_from_secret(
            SECRET, "DRIVE-1"
        )
        session.remove_domain()
        assert session.domain_id() is None


def test_domain_secret_must_have_the_right_length(
    hsm: Hsm, tokens: dict[str, SoftHsmToken]
) -> None:
    with open_token(hsm, tokens["spare"]) as session:
        with pytest.raises(DomainError, match="64 bytes"):
            session.import_domain(b"short")
        assert session.domain_id() is None


# --- backup and restore ---------------------------------------------------------------------


def back_up(session: HsmSession) -> bytes:
    kek = session.new_set_key()
    entries, skipped = session.backup_entries(kek)
    _, blob = seal_set(session, kek, session.require_domain(), entries, skipped, label="nightly")
    kek.destroy()
    return blob


def test_backup_and_restore_into_another_token(token: Token) -> None:
    with token.open() as source:
        import_domain(token, source)
        made = token.sample_keys(source)
        before = {(o.label, o.class_name): o.attributes for o in source.objects()}
        blob = back_up(source)
        aes_ciphertext = made["aes"].encrypt(b"x" * 16, mechanism=pkcs11.Mechanism.AES_ECB)
        source_label = source.token_info().label

    header = manifest.read_header(blob)
    assert header.key_count == len(made) - 1 and header.label == "nightly"  # aes-local stays
    assert header.token.label == source_label
    assert header.profile == profile_named(token.profile).number

    with token.open_target() as target:
        import_domain(token, target)
        kek = target.open_set(header)
        opened = manifest.unseal(blob, kek)
        assert [(s.label, s.reason) for s in opened.skipped] == [("aes-local", "not extractable")]
        outcomes = target.restore(kek, opened.entries)
        assert all(o.ok for o in outcomes), [o.to_json() for o in outcomes]
        proofs = {(o.label, o.object_class): o.proof.method for o in outcomes if o.proof}
        aes_proof = "encrypt/decrypt + check value + value check"
        if token.kind == "opencryptoki":
            aes_proof = "encrypt/decrypt + value check"  # 3.8 keeps no CKA_CHECK_VALUE
        expected = {
            ("aes-data", ObjectClass.SECRET_KEY): aes_proof,
            ("rsa-sign", ObjectClass.PRIVATE_KEY): "sign/verify + value check",
            ("rsa-sign", ObjectClass.PUBLIC_KEY): "read back",
        }
        if token.has_ec:
            expected |= {
                ("ec-sign", ObjectClass.PRIVATE_KEY): "sign/verify + value check",
                ("ec-sign", ObjectClass.PUBLIC_KEY): "read back",
                ("ec-sign", ObjectClass.CERTIFICATE): "read back",
            }
        else:
            expected[(token.sample_cert, ObjectClass.CERTIFICATE)] = "read back"
        assert proofs == expected
        after = {(o.label, o.class_name): o.attributes for o in target.objects()}
        # The same key: it decrypts what the source key encrypted.
        restored_aes = target.session.get_key(label="aes-data", object_class=ObjectClass.SECRET_KEY)
        assert restored_aes.decrypt(aes_ciphertext, mechanism=pkcs11.Mechanism.AES_ECB) == b"x" * 16
        # Everything replayed is as it was.
        differences = []
        for key, attrs in before.items():
            if key[0] in ("aes-local", "sealkeep-domain-wrap", "sealkeep-domain-owner"):
                continue
            for attribute, value in replay_template(attrs).items():
                if after[key].get(int(attribute)) != value:
                    differences.append((key, attribute.name, value, after[key].get(int(attribute))))
        assert differences == []

        # A second restore finds everything present and duplicates nothing.
        again = target.restore(kek, opened.entries)
        assert {o.status for o in again} == {"present"}
        assert len(target.objects()) == len(after)


def _backed_up_then_emptied(session: HsmSession) -> tuple[SetKey, list[KeyEntry]]:
    """The slot backed up, then every object but the domain's destroyed: the set's key and
    entries, ready to restore."""
    blob = back_up(session)
    for obj in session.objects():
        if not obj.is_domain_key:
            obj.handle.destroy()
    kek = session.open_set(manifest.read_header(blob))
    return kek, list(manifest.unseal(blob, kek).entries)


def _two_keys(session: HsmSession, key_type: KeyType, labels: tuple[str, str]) -> None:
    """Two extractable, sensitive token keys (RSA: key pairs) with ``labels``, ids 1 and 2."""
    protected = {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}
    for label, key_id in zip(labels, (b"\x01", b"\x02"), strict=True):
        if key_type == KeyType.RSA:
            session.session.generate_keypair(
                KeyType.RSA, 2048, label=label, id=key_id, store=True, private_template=protected
            )
        else:
            session.session.generate_key(
                KeyType.AES, 256, label=label, id=key_id, store=True, template=protected
            )


def test_a_restored_key_stays_sensitive(token: Token) -> None:
    """A key that was sensitive in its slot is sensitive once restored: a PIN holder reads
    no more of it than before the backup. openCryptoki 3.8 takes CKA_SENSITIVE in
    C_UnwrapKey's template and ignores it; the restore sets it afterwards."""
    with token.open() as source:
        import_domain(token, source)
        source.session.generate_key(
            KeyType.AES, 256, label="aes-data", id=b"\x01", store=True,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
        )  # fmt: skip
        source.session.generate_keypair(
            KeyType.RSA, 2048, label="rsa-sign", id=b"\x03", store=True,
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
        )  # fmt: skip
        kek, entries = _backed_up_then_emptied(source)
        outcomes = source.restore(kek, entries)
        assert all(o.ok for o in outcomes), [o.to_json() for o in outcomes]
        secret_values = {
            ObjectClass.SECRET_KEY: Attribute.VALUE,
            ObjectClass.PRIVATE_KEY: Attribute.PRIVATE_EXPONENT,
        }
        restored = [
            o for o in source.objects() if o.object_class in secret_values and not o.is_domain_key
        ]
        assert sorted(o.label for o in restored) == ["aes-data", "rsa-sign"]
        for obj in restored:
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                obj.handle[secret_values[ObjectClass(obj.object_class)]]
            assert obj.handle[Attribute.SENSITIVE] is True, obj.label


def test_a_key_the_hsm_will_not_recreate_is_named_and_nothing_is_left(token: Token) -> None:
    """A wrapped value the token refuses (cut short by a byte: no wrapping mechanism takes
    that length) fails that key alone, naming the call and the token's answer; no object is
    left half-made under its name, and the other keys are restored."""
    with token.open() as source:
        import_domain(token, source)
        _two_keys(source, KeyType.AES, ("aes-cut", "aes-whole"))
        kek, entries = _backed_up_then_emptied(source)
        entries = [
            dataclasses.replace(e, wrapped=e.wrapped[:-1]) if e.label == "aes-cut" and e.wrapped
            else e
            for e in entries
        ]  # fmt: skip
        outcomes = {o.label: o for o in source.restore(kek, entries)}
        left = sorted(o.label for o in source.objects() if not o.is_domain_key)
    assert outcomes["aes-cut"].status == "failed"
    refused = "the HSM refused to recreate it (C_UnwrapKey: CKR_"
    assert outcomes["aes-cut"].detail.startswith(refused), outcomes["aes-cut"].detail
    assert outcomes["aes-whole"].status == "restored" and outcomes["aes-whole"].ok
    assert left == ["aes-whole"]


def test_a_restored_key_that_fails_its_proof_is_removed(token: Token) -> None:
    """A key whose proof tells it is not the set's (its signature does not verify against
    the public half the set recorded) does not stay in the slot under the set's label,
    where applications would take it for the original; the other keys are restored."""
    with token.open() as source:
        import_domain(token, source)
        _two_keys(source, KeyType.RSA, ("rsa-a", "rsa-b"))
        kek, entries = _backed_up_then_emptied(source)
        modulus = int(Attribute.MODULUS)
        other = next(
            e.attributes[modulus]
            for e in entries
            if e.label == "rsa-b" and e.object_class == ObjectClass.PRIVATE_KEY
        )
        entries = [
            KeyEntry({**e.attributes, modulus: other}, e.wrapped)
            if e.label == "rsa-a" and e.object_class == ObjectClass.PRIVATE_KEY
            else e
            for e in entries
        ]  # fmt: skip
        outcomes = {(o.label, o.object_class): o for o in source.restore(kek, entries)}
        left = sorted((o.label, o.object_class) for o in source.objects() if not o.is_domain_key)
    failed = outcomes[("rsa-a", ObjectClass.PRIVATE_KEY)]
    assert failed.status == "failed" and not failed.ok
    assert "its proof failed (sign/verify" in failed.detail and "removed" in failed.detail
    assert failed.proof is not None and not failed.proof.ok
    assert all(o.ok for key, o in outcomes.items() if key != ("rsa-a", ObjectClass.PRIVATE_KEY))
    assert ("rsa-a", ObjectClass.PRIVATE_KEY) not in left
    assert ("rsa-b", ObjectClass.PRIVATE_KEY) in left and ("rsa-a", ObjectClass.PUBLIC_KEY) in left


def _many_keys(session: HsmSession, count: int) -> None:
    """``count`` extractable, sensitive AES token keys "aes-0", "aes-1", ... and an RSA pair."""
    protected = {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}
    for number in range(count):
        session.session.generate_key(
            KeyType.AES, 256, label=f"aes-{number}", id=bytes([number]), store=True,
            template=protected,
        )  # fmt: skip
    session.session.generate_keypair(
        KeyType.RSA, 2048, label="rsa-sign", id=b"\xff", store=True, private_template=protected
    )


def _emptied(session: HsmSession) -> None:
    for obj in session.objects():
        if not obj.is_domain_key:
            obj.handle.destroy()


def _summary(outcomes: list[RestoreOutcome]) -> list[tuple[str, int, str, str]]:
    return [
        (o.label, o.object_class, o.status, o.proof.method if o.proof else "") for o in outcomes
    ]


def test_a_restore_in_several_sessions_gives_what_one_gives(
    token: Token, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module is initialised for threads, and a restore unwraps its secret keys in
    sessions of its own at once: the outcomes, their order, the proofs and the keys in the
    slot are those of a restore in one session, every key is sensitive, and every session
    it opened is closed."""
    assert token.hsm.thread_safe
    used: set[tuple[int, int]] = set()  # (thread, session) of each unwrap
    unwrap = Wrapping.unwrap

    def spied(wrapping: Wrapping, unwrapping_key: int, wrapped: bytes, template: Any) -> int:
        used.add((threading.get_ident(), wrapping.session))
        return unwrap(wrapping, unwrapping_key, wrapped, template)

    monkeypatch.setattr(Wrapping, "unwrap", spied)
    with token.open() as source:
        import_domain(token, source)
        _many_keys(source, 12)
        kek, entries = _backed_up_then_emptied(source)
        before = token.open_sessions()
        used.clear()  # opening the set unwrapped its keys in the session
        # Several first: its workers, not an earlier restore, find what the token refuses in
        # an unwrap template (openCryptoki 3.8: CKA_EXTRACTABLE), all at once.
        several = source.restore(kek, entries, sessions=4)
        several_made = sorted((o.label, o.object_class) for o in source.objects())
        readable = [
            o.label
            for o in source.objects()
            if o.object_class == ObjectClass.SECRET_KEY
            and not o.is_domain_key
            and o.handle[Attribute.SENSITIVE] is not True
        ]
        assert readable == []  # openCryptoki 3.8 ignores it in C_UnwrapKey: set after
        again = source.restore(kek, entries, sessions=4)  # compared, nothing made twice
        assert {o.status for o in again} == {"present"}
        assert sorted((o.label, o.object_class) for o in source.objects()) == several_made
        after = token.open_sessions()
        workers = {session for _, session in used}
        _emptied(source)
        used.clear()
        one = source.restore(kek, entries, sessions=1)
        one_made = sorted((o.label, o.object_class) for o in source.objects())
        assert {session for _, session in used} == {kek.direct.session if kek.direct else -1}
    assert all(o.ok for o in one), [o.to_json() for o in one]
    assert _summary(several) == _summary(one)
    assert sum(o.status == "restored" for o in several) == len(entries)
    assert several_made == one_made
    assert len(workers) == 4
    assert kek.direct is not None and kek.direct.session not in workers
    assert after == before  # None where the module does not count them
    assert not [t for t in threading.enumerate() if t.name.startswith("sealkeep-unwrap")]


def test_an_interrupted_restore_leaves_only_what_it_reported(token: Token) -> None:
    """Ctrl-C during a restore in several sessions: the keys it reported stay, those the
    workers had unwrapped already and it had not reported are removed, and no worker is
    left running."""
    with token.open() as source:
        import_domain(token, source)
        _many_keys(source, 12)
        kek, entries = _backed_up_then_emptied(source)
        reported: list[int] = []

        def progress(done: int, total: int) -> None:
            reported.append(done)
            if done == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            source.restore(kek, entries, progress=progress, sessions=4)
        left = sorted(o.label for o in source.objects() if not o.is_domain_key)
    # A restore goes through the set's keys in its order, the public objects after them.
    keys = [e.label for e in entries if e.object_class != ObjectClass.PUBLIC_KEY]
    assert reported == [1, 2, 3]
    assert left == sorted(keys[:3])
    assert not [t for t in threading.enumerate() if t.name.startswith("sealkeep-unwrap")]


def test_a_name_twice_in_a_set_is_made_once(token: Token) -> None:
    """An entry repeated in a set (same class, label and id) is restored once, and the
    repeat is found present, in several sessions as in one."""
    with token.open() as source:
        import_domain(token, source)
        _two_keys(source, KeyType.AES, ("aes-a", "aes-b"))
        kek, entries = _backed_up_then_emptied(source)
        twice = [*entries, next(e for e in entries if e.label == "aes-a")]
        outcomes = source.restore(kek, twice, sessions=4)
        left = sorted(o.label for o in source.objects() if not o.is_domain_key)
    assert [(o.label, o.status) for o in outcomes] == [
        ("aes-a", "restored"),
        ("aes-b", "restored"),
        ("aes-a", "present"),
    ]
    assert left == ["aes-a", "aes-b"]


def test_restore_selected_keys_only(token: Token) -> None:
    with token.open() as source:
        import_domain(token, source)
        token.sample_keys(source)
        blob = back_up(source)
        # Delete the RSA pair, then restore it alone into the same slot.
        for obj in source.objects():
            if obj.label == "rsa-sign":
                obj.handle.destroy()
        kek = source.open_set(manifest.read_header(blob))
        outcomes = source.restore(kek, manifest.unseal(blob, kek).entries, labels={"rsa-sign"})
    assert sorted((o.label, o.status) for o in outcomes) == [
        ("rsa-sign", "restored"),
        ("rsa-sign", "restored"),
    ]
    assert all(o.ok for o in outcomes)


def test_a_set_of_another_domain_does_not_open(token: Token) -> None:
    with token.open() as source:
        import_domain(token, source)
        token.sample_keys(source)
        blob = back_up(source)
    header = manifest.read_header(blob)
    with token.open_target() as target:
        with pytest.raises(DomainError, match="holds no backup domain key"):
            target.open_set(header)
        import_domain(token, target, new_domain_secret())
        with pytest.raises(SetKeyError, match="another backup domain"):
            target.open_set(header)


def test_tampered_set_is_refused_in_the_hsm(token: Token) -> None:
    with token.open() as source:
        import_domain(token, source)
        token.sample_keys(source)
        blob = back_up(source)
        kek = source.open_set(manifest.read_header(blob))
        assert manifest.unseal(blob, kek).label == "nightly"
        body_flip = bytearray(blob)
        body_flip[-40] ^= 0x01
        with pytest.raises(ManifestError, match="does not authenticate"):
            manifest.unseal(bytes(body_flip), kek)
        header_edit = blob.replace(b"nightly", b"nightlY", 1)
        with pytest.raises(ManifestError, match="does not authenticate"):
            manifest.unseal(header_edit, kek)


def test_a_wrong_key_fails_its_proof(token: Token) -> None:
    with token.open() as source:
        import_domain(token, source)
        made = token.sample_keys(source)
        kek = source.new_set_key()
        entries, _ = source.backup_entries(kek)
        aes = next(e for e in entries if e.label == "aes-data")
        rsa = next(
            e
            for e in entries
            if e.label == "rsa-sign" and e.object_class == ObjectClass.PRIVATE_KEY
        )
        other_aes = source.session.generate_key(
            KeyType.AES, 256, store=False, template={Attribute.EXTRACTABLE: True}
        )
        if token.kind == "opencryptoki":
            # openCryptoki 3.8 keeps no CKA_CHECK_VALUE, so the set records none.
            assert int(Attribute.CHECK_VALUE) not in aes.attributes
        else:
            proof = source.prove(other_aes, aes, kek)
            assert not proof.ok and proof.method == "check value"
        # Without a check value, the re-wrap still tells the keys apart.
        no_check = KeyEntry(
            {k: v for k, v in aes.attributes.items() if k != Attribute.CHECK_VALUE}, aes.wrapped
        )
        proof = source.prove(other_aes, no_check, kek)
        assert not proof.ok and proof.method == "value check"
        # An RSA key that is not the set's fails sign/verify against the set's public half.
        _, other_rsa = source.session.generate_keypair(
            KeyType.RSA, 2048, store=False, private_template={Attribute.EXTRACTABLE: True}
        )
        proof = source.prove(other_rsa, rsa, kek)
        assert not proof.ok and proof.method == "sign/verify"
        assert source.prove(made["rsa"], rsa, kek).ok


def test_unwrap_failure_is_reported_not_raised(token: Token) -> None:
    """A wrapped value of zeros fails that key, reported, not raised. AES key wrap refuses it
    (its integrity check); AES-CBC-PAD (openCryptoki's portable profile) has none and may
    now and then find valid padding: then the key it makes fails its value check and is
    removed. Either way nothing is left under the key's name."""
    with token.open() as source:
        import_domain(token, source)
        token.sample_keys(source)
        kek = source.new_set_key()
        entries, _ = source.backup_entries(kek)
    aes = next(e for e in entries if e.label == "aes-data")
    broken = dataclasses.replace(aes, wrapped=bytes(len(aes.wrapped or b"")))
    with token.open_target() as target:
        import_domain(token, target)
        kek2 = target.open_set_key(
            kek.wrapped, kek.wrapped_manifest_key, kek.wrapped_mac_key, kek.profile
        )
        (outcome,) = target.restore(kek2, [broken])
        left = [o.label for o in target.objects() if o.label == "aes-data"]
    assert outcome.status == "failed" and not outcome.ok
    assert "refused" in outcome.detail or (
        "its proof failed (value check" in outcome.detail and "was removed" in outcome.detail
    ), outcome.detail
    assert left == []


def test_softhsm_farm_env_for_subprocesses(softhsm: SoftHsmFarm) -> None:
    assert softhsm.env["SOFTHSM2_CONF"] == str(softhsm.conf)
    assert set(softhsm.tokens) == {"source", "target", "spare"}
