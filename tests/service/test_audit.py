"""The audit log on real SQLite files and SoftHSM2 tokens: the chain, its signatures, what
tampering it shows, the head signed inside a slot, and the bundle an auditor checks."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from sealkeep.hsm import Hsm
from sealkeep.service.audit import (
    AUDIT_SCHEMA,
    DB_NAME,
    AuditHead,
    AuditLog,
    BundleError,
    ServiceKey,
    export_bundle,
    verify_bundle,
    verify_state,
)
from sealkeep.service.audit_hsm import (
    AUDIT_KEY_LABEL,
    ECDSA_P256,
    RSA_PKCS1_2048,
    AuditKeyError,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

if TYPE_CHECKING:
    from hsm_fixtures import OpenCryptokiToken, SoftHsmToken

pytest_plugins = ["hsm_fixtures"]


def open_db(state: Path) -> sqlite3.Connection:
    """A connection as the service opens one: rows readable by name too, WAL."""
    conn = sqlite3.connect(state / DB_NAME, timeout=10, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(AUDIT_SCHEMA)
    conn.commit()
    return conn


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def log(state: Path) -> Iterator[AuditLog]:
    conn = open_db(state)
    yield AuditLog(conn, ServiceKey.load_or_create(state))
    conn.close()


def fill(log: AuditLog, count: int) -> None:
    for n in range(count):
        log.append(
            "login",
            actor=f"user{n}",
            address="127.0.0.1",
            target=None,
            result="ok" if n % 2 else "refused",
            detail={"n": n, "why": "test"},
        )
    log.conn.commit()


def tamper(state: Path, *statements: str) -> None:
    """What someone holding the database file can do: the triggers go first."""
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    conn.execute("DROP TRIGGER IF EXISTS audit_hsm_heads_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


# --- the chain --------------------------------------------------------------------------------


def test_records_chain_and_verify(log: AuditLog, state: Path) -> None:
    fill(log, 5)
    result = verify_state(state)
    assert result.ok and result.records == 5 and result.first_bad is None
    assert result.head == log.head() and result.head is not None and result.head.seq == 5
    newest = log.records(limit=3)
    assert [r.seq for r in newest] == [5, 4, 3]
    assert [r.seq for r in log.records(before=3)] == [2, 1]
    first = log.records(before=2)[0]
    assert first.prev == "00" * 32 and newest[-1].prev == log.records(before=3)[0].hash
    assert first.to_json()["detail"] == {"n": 0, "why": "test"}
    assert first.at.endswith("Z") and first.at.startswith("20")
    assert stat.S_IMODE((state / "audit-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "audit-key.pub.pem").stat().st_mode) == 0o644
    assert ServiceKey.load_or_create(state).public_pem() == log.key.public_pem()


def test_append_leaves_the_commit_to_the_caller(log: AuditLog, state: Path) -> None:
    fill(log, 1)
    log.append("backup", actor="op", address="10.0.0.7", target="slot 1")
    other = sqlite3.connect(state / DB_NAME)
    assert other.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
    log.conn.rollback()
    assert log.head() == AuditHead(1, log.records()[0].hash)
    log.append("backup", actor="op", address="10.0.0.7", target="slot 1")
    log.conn.commit()
    assert other.execute("SELECT count(*) FROM audit").fetchone()[0] == 2
    other.close()
    assert verify_state(state).ok


def test_the_service_cannot_edit_its_own_log(log: AuditLog) -> None:
    fill(log, 2)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("UPDATE audit SET result = 'ok' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("DELETE FROM audit WHERE seq = 2")


def test_writers_on_two_connections_keep_one_chain(log: AuditLog, state: Path) -> None:
    fill(log, 1)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        conn = sqlite3.connect(state / DB_NAME, timeout=20, check_same_thread=False)
        other = AuditLog(conn, log.key)
        try:
            for n in range(15):
                other.append("drive", actor=name, address=None, detail={"n": n})
                conn.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = verify_state(state)
    assert result.ok and result.records == 31


@pytest.mark.parametrize(
    ("statements", "first_bad", "reason"),
    [
        (['UPDATE audit SET detail = \'{"n":2,"why":"other"}\' WHERE seq = 3'], 3, "changed"),
        (["UPDATE audit SET result = 'failed' WHERE seq = 4"], 4, "changed"),
        (["DELETE FROM audit WHERE seq = 3"], 3, "removed"),
        (
            [
                "UPDATE audit SET seq = -1 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = -1",
            ],
            3,
            "reordered",
        ),
    ],
    ids=["detail-edited", "result-edited", "middle-deleted", "two-swapped"],
)
def test_tampering_names_the_record(
    log: AuditLog, state: Path, statements: list[str], first_bad: int, reason: str
) -> None:
    fill(log, 6)
    assert verify_state(state).ok
    tamper(state, *statements)
    result = verify_state(state)
    assert not result.ok
    assert (result.first_bad, result.reason) == (first_bad, reason), result.message
    assert f"record {first_bad}" in result.message


def test_a_rehashed_record_needs_the_service_key(log: AuditLog, state: Path) -> None:
    """Someone who edits a record and recomputes its hash still cannot sign the head."""
    fill(log, 3)
    row = log.records(before=3, limit=1)[0]
    from sealkeep.service.audit import record_hash

    forged = record_hash(
        row.prev,
        seq=row.seq,
        at=row.at,
        actor="nobody",
        address=row.address,
        action=row.action,
        target=row.target,
        result=row.result,
        detail=row.detail,
    )
    tamper(state, f"UPDATE audit SET actor = 'nobody', hash = '{forged}' WHERE seq = 2")
    result = verify_state(state)
    assert (result.first_bad, result.reason) == (2, "bad signature")


def test_a_replaced_service_signature_is_named(log: AuditLog, state: Path) -> None:
    fill(log, 4)
    stranger = ServiceKey.load_or_create(state / "elsewhere")
    head = AuditHead(2, log.records(before=3, limit=1)[0].hash)
    forged = stranger.sign(head.to_bytes()).hex()
    tamper(state, f"UPDATE audit SET signature = '{forged}' WHERE seq = 2")
    result = verify_state(state)
    assert (result.ok, result.first_bad, result.reason) == (False, 2, "bad signature")


def test_an_empty_log_holds(log: AuditLog, state: Path) -> None:
    result = verify_state(state)
    assert result.ok and result.records == 0 and result.head is None


# --- heads signed in a slot -------------------------------------------------------------------


def audit_keys(hsm: Hsm, token: SoftHsmToken) -> tuple[list[object], list[object]]:
    with hsm.open(token.slot_id, token.pin) as session:
        query = {Attribute.LABEL: AUDIT_KEY_LABEL, Attribute.TOKEN: True}
        private = list(
            session.session.get_objects({**query, Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        )
        public = list(
            session.session.get_objects({**query, Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        )
        attributes = [
            {
                a: o[a]
                for a in (
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.ALWAYS_SENSITIVE,
                    Attribute.NEVER_EXTRACTABLE,
                    Attribute.SIGN,
                    Attribute.DECRYPT,
                    Attribute.UNWRAP,
                    Attribute.KEY_TYPE,
                )
            }
            for o in private
        ]
        return attributes, [o[Attribute.KEY_TYPE] for o in public]


def test_the_slot_signs_the_head_with_a_key_that_never_leaves_it(
    log: AuditLog, state: Path, hsm: Hsm, tokens: dict[str, SoftHsmToken]
) -> None:
    fill(log, 3)
    token = tokens["source"]
    with hsm.open(token.slot_id, token.pin) as session:
        signed = log.sign_head_in_slot(session)
        log.conn.commit()
        again = log.sign_head_in_slot(session)
        log.conn.commit()
    private, public = audit_keys(hsm, token)
    assert len(private) == 1 and public == [KeyType.EC]
    with hsm.open(token.slot_id, token.pin) as session:
        own = [o for o in session.objects() if o.label == AUDIT_KEY_LABEL]
    # the pair is the slot's own, like the domain's keys: never in a backup set
    assert len(own) == 2 and all(o.is_domain_key and not o.exportable for o in own)
    assert private[0] == {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ALWAYS_SENSITIVE: True,
        Attribute.NEVER_EXTRACTABLE: True,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.KEY_TYPE: KeyType.EC,
    }
    assert signed.algorithm == ECDSA_P256 and again.public_key == signed.public_key
    assert (signed.seq, signed.slot, signed.token_serial) == (3, token.slot_id, token.serial)
    # the signature checked here with `cryptography` alone, against the stored public key
    stored = log.conn.execute("SELECT public_key, signature FROM audit_hsm_heads").fetchall()
    assert len(stored) == 2
    key = serialization.load_pem_public_key(stored[0][0].encode())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    raw = bytes.fromhex(stored[0][1])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, log.head().to_bytes(), ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    result = verify_state(state)
    assert result.ok and result.last_hsm_signed == 3 and result.hsm_heads == 2
    assert result.last_hsm_signature is not None
    assert result.last_hsm_signature.slot == token.slot_id


def test_rsa_where_the_token_lacks_ec(
    log: AuditLog, hsm: Hsm, tokens: dict[str, SoftHsmToken]
) -> None:
    """The RSA-2048 path a token without EC (openCryptoki's soft token) takes."""
    fill(log, 2)
    token = tokens["target"]
    with hsm.open(token.slot_id, token.pin) as session:
        signed = log.sign_head_in_slot(session, prefer=RSA_PKCS1_2048)
        log.conn.commit()
    private, public = audit_keys(hsm, token)
    assert public == [KeyType.RSA] and private[0][Attribute.EXTRACTABLE] is False
    assert private[0][Attribute.SENSITIVE] is True
    key = serialization.load_pem_public_key(signed.public_key.encode())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    key.verify(
        bytes.fromhex(signed.signature),
        AuditHead(2, signed.hash).to_bytes(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


@pytest.mark.integration
@pytest.mark.opencryptoki
def test_opencryptoki_signs_with_rsa(
    log: AuditLog, state: Path, opencryptoki: OpenCryptokiToken
) -> None:
    """openCryptoki's soft token has no EC at all: its audit key is RSA-2048, chosen by the
    token's mechanism list, and sensitive and never extractable there too."""
    fill(log, 2)
    with Hsm(opencryptoki.module).open(opencryptoki.slot_id, opencryptoki.pin) as session:
        signed = log.sign_head_in_slot(session)
        log.conn.commit()
        private = list(
            session.session.get_objects(
                {Attribute.LABEL: AUDIT_KEY_LABEL, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
            )
        )
        assert len(private) == 1
        assert private[0][Attribute.SENSITIVE] is True
        assert private[0][Attribute.EXTRACTABLE] is False
        assert private[0][Attribute.KEY_TYPE] == KeyType.RSA
    assert signed.algorithm == RSA_PKCS1_2048 and signed.token_serial
    key = serialization.load_pem_public_key(signed.public_key.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(
        bytes.fromhex(signed.signature),
        AuditHead(2, signed.hash).to_bytes(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    result = verify_state(state)
    assert result.ok and result.last_hsm_signed == 2


def test_an_extractable_key_under_the_audit_label_is_refused(
    log: AuditLog, hsm: Hsm, tokens: dict[str, SoftHsmToken]
) -> None:
    fill(log, 1)
    token = tokens["spare"]
    with hsm.open(token.slot_id, token.pin) as session:
        session.session.generate_keypair(
            KeyType.EC,
            public_template={
                Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107"),
                Attribute.LABEL: AUDIT_KEY_LABEL,
                Attribute.TOKEN: True,
            },
            private_template={
                Attribute.LABEL: AUDIT_KEY_LABEL,
                Attribute.TOKEN: True,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
                Attribute.SIGN: True,
            },
            mechanism=Mechanism.EC_KEY_PAIR_GEN,
        )
        with pytest.raises(AuditKeyError, match="could leave the token") as refused:
            log.sign_head_in_slot(session)
        assert "EXTRACTABLE" in str(refused.value)
    assert log.conn.execute("SELECT count(*) FROM audit_hsm_heads").fetchone()[0] == 0


@pytest.fixture
def slot_signed(log: AuditLog, hsm: Hsm, tokens: dict[str, SoftHsmToken]) -> Callable[[], None]:
    token = tokens["source"]

    def sign() -> None:
        with hsm.open(token.slot_id, token.pin) as session:
            log.sign_head_in_slot(session)
        log.conn.commit()

    return sign


def test_a_cut_through_a_slot_signed_head_is_named(
    log: AuditLog, state: Path, slot_signed: Callable[[], None]
) -> None:
    fill(log, 5)
    slot_signed()
    fill(log, 2)
    tamper(state, "DELETE FROM audit WHERE seq >= 4")
    result = verify_state(state)
    assert (result.ok, result.first_bad, result.reason) == (False, 4, "removed")
    assert "records 4 to 5 are missing" in result.message and "slot" in result.message


def test_a_cut_after_the_slot_signed_head_shows_against_a_sets_head(
    log: AuditLog, state: Path, slot_signed: Callable[[], None]
) -> None:
    fill(log, 5)
    slot_signed()
    fill(log, 2)
    carried = log.head()
    assert carried is not None and carried.seq == 7
    fill(log, 1)
    tamper(state, "DELETE FROM audit WHERE seq >= 6")
    alone = verify_state(state)
    assert alone.ok and alone.records == 5
    assert alone.last_hsm_signed == 5
    against = verify_state(state, heads=[AuditHead.from_bytes(carried.to_bytes())])
    assert (against.ok, against.first_bad, against.reason) == (False, 6, "removed")


def test_a_forged_slot_signature_is_named(
    log: AuditLog, state: Path, slot_signed: Callable[[], None]
) -> None:
    fill(log, 3)
    slot_signed()
    bad = "00" * 64
    tamper(
        state,
        "DROP TRIGGER audit_hsm_heads_no_update",
        f"UPDATE audit_hsm_heads SET signature = '{bad}'",
    )
    result = verify_state(state)
    assert (result.ok, result.first_bad, result.reason) == (False, 3, "bad HSM signature")


# --- the bundle -------------------------------------------------------------------------------


def test_a_bundle_verifies_elsewhere_and_shows_edits(
    log: AuditLog, state: Path, tmp_path: Path, slot_signed: Callable[[], None]
) -> None:
    fill(log, 4)
    slot_signed()
    bundle = tmp_path / "out" / "audit.json"
    bundle.parent.mkdir()
    export_bundle(state, bundle)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    shutil.copy(bundle, elsewhere / "audit.json")
    shutil.copy(state / "audit-key.pub.pem", elsewhere / "service.pem")
    result = verify_bundle(elsewhere / "audit.json", elsewhere / "service.pem")
    assert result.ok and result.records == 4 and result.key_source == "given"
    assert result.last_hsm_signed == 4

    document = json.loads((elsewhere / "audit.json").read_text())
    document["records"][1]["actor"] = "somebody else"
    edited = elsewhere / "edited.json"
    edited.write_text(json.dumps(document))
    broken = verify_bundle(edited, elsewhere / "service.pem")
    assert (broken.ok, broken.first_bad, broken.reason) == (False, 2, "changed")

    document = json.loads((elsewhere / "audit.json").read_text())
    document["records"][1], document["records"][2] = document["records"][2], document["records"][1]
    edited.write_text(json.dumps(document))
    swapped = verify_bundle(edited, elsewhere / "service.pem")
    assert (swapped.ok, swapped.first_bad, swapped.reason) == (False, 2, "reordered")

    stranger = ServiceKey.load_or_create(tmp_path / "stranger")
    other = verify_bundle(elsewhere / "audit.json", tmp_path / "stranger" / "audit-key.pub.pem")
    assert (
        not other.ok
        and other.reason == "bad signature"
        and "another service key" in (other.message)
    )
    assert stranger.public_pem() != log.key.public_pem()

    (elsewhere / "junk.json").write_text("{not json")
    with pytest.raises(BundleError, match="not JSON"):
        verify_bundle(elsewhere / "junk.json", None)
    alone = verify_bundle(elsewhere / "audit.json", None)
    assert alone.ok and alone.key_source == "bundle"
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert digest == hashlib.sha256((elsewhere / "audit.json").read_bytes()).hexdigest()
