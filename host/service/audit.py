"""The service's audit log: append-only records in a hash chain, every head signed.

Each record's hash is SHA-256(previous hash ‖ canonical JSON of the record), record 1
chaining to 32 zero bytes, so changing, removing or reordering a record breaks the chain
from there on. The service's own Ed25519 key (``audit-key.pem`` in the state folder) signs
every new head; at each operation that logs into a slot, a key that never leaves that slot
signs the head too (:mod:`sealkeep.service.audit_hsm`), and each backup set carries the head
of its moment. Records are written in the caller's transaction and never committed here, so
an action and its record land together or not at all. What the chain proves and what it
does not: docs/threat-model.md, "Audit log".
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import EXIT_INTEGRITY, EXIT_USAGE, SealkeepError
from ..hsm import HsmSession
from .audit_hsm import ALGORITHMS, SlotSigner, verify_signature

__all__ = [
    "AUDIT_SCHEMA",
    "DB_NAME",
    "AuditError",
    "AuditHead",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "BundleError",
    "HsmHeadSignature",
    "ServiceKey",
    "export_bundle",
    "verify_bundle",
    "verify_state",
]

DB_NAME = "sealkeep.db"
KEY_NAME = "audit-key.pem"
PUBLIC_KEY_NAME = "audit-key.pub.pem"
GENESIS = "00" * 32
HEAD_MAGIC = b"SKAUDIT1"
HEAD_LEN = len(HEAD_MAGIC) + 8 + 32
BUNDLE_FORMAT = "sealkeep-audit-bundle"
BUNDLE_VERSION = 1

CHANGED = "changed"
REMOVED = "removed"
REORDERED = "reordered"
BAD_SIGNATURE = "bad signature"
BAD_HSM_SIGNATURE = "bad HSM signature"

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT,
    address TEXT,
    action TEXT NOT NULL,
    target TEXT,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_hsm_heads (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    at TEXT NOT NULL,
    slot INTEGER NOT NULL,
    token_serial TEXT NOT NULL,
    token_label TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_hsm_heads_no_update BEFORE UPDATE ON audit_hsm_heads
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_hsm_heads_no_delete BEFORE DELETE ON audit_hsm_heads
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
"""Executed at database initialisation. The triggers keep the service's own code from ever
editing the log; someone with the file can drop them, which the chain then shows."""


class AuditError(SealkeepError):
    """The audit log's state folder or key cannot be used as given."""

    exit_code = EXIT_USAGE


class BundleError(SealkeepError):
    """An audit bundle that is not one: unreadable JSON, or fields missing or mistyped."""

    exit_code = EXIT_INTEGRITY


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(
    prev: str,
    *,
    seq: int,
    at: str,
    actor: str | None,
    address: str | None,
    action: str,
    target: str | None,
    result: str,
    detail: Mapping[str, object],
) -> str:
    """SHA-256(prev ‖ canonical JSON of the record), hex."""
    body = _canonical(
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "address": address,
            "action": action,
            "target": target,
            "result": result,
            "detail": dict(detail),
        }
    )
    return hashlib.sha256(bytes.fromhex(prev) + body.encode()).hexdigest()


# --- the service key --------------------------------------------------------------------------


class ServiceKey:
    """The service's own Ed25519 signing key, kept in the state folder (0600)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, state_dir: Path) -> ServiceKey:
        """The key of ``state_dir/audit-key.pem``, made on first use; its public half is
        written beside it (``audit-key.pub.pem``, 0644) for auditors."""
        path = state_dir / KEY_NAME
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), None)
            except (ValueError, TypeError, OSError):
                raise AuditError(
                    f"{path} is not a readable, unencrypted PEM private key: restore it from "
                    "the state folder's backup (a new key would not match the signed log)"
                ) from None
            if not isinstance(key, Ed25519PrivateKey):
                raise AuditError(f"{path} holds no Ed25519 key: it is not the audit key")
            made = cls(key)
        else:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            made = cls(Ed25519PrivateKey.generate())
            pem = made._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        public = state_dir / PUBLIC_KEY_NAME
        if not public.exists() or public.read_bytes() != made.public_pem():
            public.write_bytes(made.public_pem())
            public.chmod(0o644)
        return made

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _load_public(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise AuditError(f"{where} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{where} is not an Ed25519 public key: it is not the audit key")
    return key


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --- records and heads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditHead:
    """The chain's head: the last record's number and hash (hex)."""

    seq: int
    hash: str

    def to_bytes(self) -> bytes:
        """What is signed, and what a backup set carries: magic ‖ seq (u64) ‖ hash."""
        return HEAD_MAGIC + self.seq.to_bytes(8, "big") + bytes.fromhex(self.hash)

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditHead:
        if len(data) != HEAD_LEN or not data.startswith(HEAD_MAGIC):
            raise BundleError("not an audit head: it must be 48 bytes starting SKAUDIT1")
        magic = len(HEAD_MAGIC)
        return cls(int.from_bytes(data[magic : magic + 8], "big"), data[magic + 8 :].hex())

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "hash": self.hash}


@dataclass(frozen=True)
class AuditRecord:
    """One event: who (``actor``), from where (``address``), did what (``action``) to which
    slot, set or user (``target``), with what ``result``; ``prev`` and ``hash`` chain it."""

    seq: int
    at: str
    actor: str | None
    address: str | None
    action: str
    target: str | None
    result: str
    detail: dict[str, object]
    prev: str
    hash: str

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "address": self.address,
            "action": self.action,
            "target": self.target,
            "result": self.result,
            "detail": self.detail,
            "prev": self.prev,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class HsmHeadSignature:
    """A head signed inside a slot by its audit key, with that key's public half (PEM)."""

    seq: int
    hash: str
    at: str
    slot: int
    token_serial: str
    token_label: str
    algorithm: str
    public_key: str
    signature: str

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.seq, self.hash)

    def verifies(self) -> bool:
        try:
            signature = bytes.fromhex(self.signature)
            message = self.head.to_bytes()
        except ValueError:
            return False
        return verify_signature(self.algorithm, self.public_key, message, signature)

    def where(self) -> str:
        return f"slot {self.slot} (token {self.token_label!r}, serial {self.token_serial})"

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "slot": self.slot,
            "token_serial": self.token_serial,
            "token_label": self.token_label,
            "algorithm": self.algorithm,
            "public_key": self.public_key,
            "signature": self.signature,
        }


_RECORD_COLUMNS = "seq, at, actor, address, action, target, result, detail, prev, hash"
_HSM_COLUMNS = "seq, hash, at, slot, token_serial, token_label, algorithm, public_key, signature"


def _record(row: Sequence[object]) -> AuditRecord:
    detail = json.loads(str(row[7]))
    return AuditRecord(
        int(row[0]),  # type: ignore[call-overload]
        str(row[1]),
        None if row[2] is None else str(row[2]),
        None if row[3] is None else str(row[3]),
        str(row[4]),
        None if row[5] is None else str(row[5]),
        str(row[6]),
        detail if isinstance(detail, dict) else {"value": detail},
        str(row[8]),
        str(row[9]),
    )


def _hsm_head(row: Sequence[object]) -> HsmHeadSignature:
    return HsmHeadSignature(
        int(row[0]),  # type: ignore[call-overload]
        str(row[1]),
        str(row[2]),
        int(row[3]),  # type: ignore[call-overload]
        *(str(value) for value in row[4:9]),
    )


class AuditLog:
    """The log in the service's database. Every method only executes statements: the
    caller commits (with the action the record describes) or rolls back."""

    def __init__(self, conn: sqlite3.Connection, key: ServiceKey) -> None:
        self.conn = conn
        self.key = key

    def append(
        self,
        action: str,
        *,
        actor: str | None,
        address: str | None,
        target: str | None = None,
        result: str = "ok",
        detail: Mapping[str, object] | None = None,
    ) -> AuditRecord:
        """The next record, chained to the head and signed by the service key."""
        if not self.conn.in_transaction and self.conn.isolation_level is not None:
            # Take the write lock before reading the head, so two writers cannot both
            # chain to it; the caller's commit (or rollback) ends this transaction. (In
            # autocommit mode the primary key still refuses a second record of one number.)
            self.conn.execute("BEGIN IMMEDIATE")
        detail_text = _canonical(dict(detail or {}))
        shown_detail = json.loads(detail_text)
        head = self.head()
        seq = head.seq + 1 if head else 1
        prev = head.hash if head else GENESIS
        at = utc_now()
        digest = record_hash(
            prev,
            seq=seq,
            at=at,
            actor=actor,
            address=address,
            action=action,
            target=target,
            result=result,
            detail=shown_detail,
        )
        signature = self.key.sign(AuditHead(seq, digest).to_bytes()).hex()
        self.conn.execute(
            f"INSERT INTO audit ({_RECORD_COLUMNS}, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (seq, at, actor, address, action, target, result, detail_text, prev, digest, signature),
        )
        return AuditRecord(
            seq, at, actor, address, action, target, result, shown_detail, prev, digest
        )

    def head(self) -> AuditHead | None:
        row = self.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return AuditHead(int(row[0]), str(row[1])) if row else None

    def records(self, *, before: int | None = None, limit: int = 100) -> list[AuditRecord]:
        """Up to ``limit`` records, newest first; ``before`` pages back from a record."""
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
        return [_record(row) for row in rows]

    def hsm_heads(self) -> list[HsmHeadSignature]:
        rows = self.conn.execute(f"SELECT {_HSM_COLUMNS} FROM audit_hsm_heads ORDER BY id")
        return [_hsm_head(row) for row in rows.fetchall()]

    def sign_head_in_slot(
        self, session: HsmSession, *, prefer: str | None = None
    ) -> HsmHeadSignature:
        """Sign the current head (record 0 for an empty log) with the slot's audit key,
        made on first use, and keep the signature with the key's public half."""
        head = self.head() or AuditHead(0, GENESIS)
        signer = SlotSigner.find_or_make(session, prefer)
        signed = HsmHeadSignature(
            seq=head.seq,
            hash=head.hash,
            at=utc_now(),
            slot=session.slot_id,
            token_serial=session.info.serial,
            token_label=session.info.label,
            algorithm=signer.algorithm,
            public_key=signer.public_pem,
            signature=signer.sign(head.to_bytes()).hex(),
        )
        self.conn.execute(
            f"INSERT INTO audit_hsm_heads ({_HSM_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            tuple(signed.to_json().values()),
        )
        return signed


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored, before anything about it is believed."""

    seq: int
    at: str
    actor: str | None
    address: str | None
    action: str
    target: str | None
    result: str
    detail: str
    prev: str
    hash: str
    signature: str


@dataclass
class AuditVerification:
    """What checking the log found. ``first_bad`` is the first record that was changed,
    removed or reordered (``reason`` says which), or whose signature fails; a log cut after
    ``last_hsm_signed`` is not visible here, only against a head carried by a set."""

    ok: bool
    records: int
    first_bad: int | None = None
    reason: str | None = None
    message: str = ""
    head: AuditHead | None = None
    last_hsm_signed: int | None = None
    """The last record whose head a slot signed (and that the log still holds)."""
    last_hsm_signature: HsmHeadSignature | None = None
    hsm_heads: int = 0
    heads_checked: list[AuditHead] = field(default_factory=list)
    key_source: str = "state"

    def to_json(self) -> dict[str, object]:
        last = self.last_hsm_signature
        return {
            "ok": self.ok,
            "records": self.records,
            "first_bad": self.first_bad,
            "reason": self.reason,
            "message": self.message,
            "head": self.head.to_json() if self.head else None,
            "last_hsm_signed": last.seq if last else None,
            "last_hsm_signature": (
                {
                    "seq": last.seq,
                    "at": last.at,
                    "slot": last.slot,
                    "token_serial": last.token_serial,
                    "token_label": last.token_label,
                    "algorithm": last.algorithm,
                }
                if last
                else None
            ),
            "hsm_heads": self.hsm_heads,
            "heads_checked": [h.to_json() for h in self.heads_checked],
            "key_source": self.key_source,
        }


@dataclass(frozen=True)
class _Fault:
    seq: int
    reason: str
    message: str


def _chain_fault(rows: Sequence[StoredRecord], key: Ed25519PublicKey) -> tuple[int, _Fault | None]:
    """Walks the records in stored order: how many hold, and the first that does not."""
    present = {row.seq for row in rows}
    followers = {row.prev for row in rows}
    expected_seq, expected_prev = 1, GENESIS
    for row in rows:
        if row.seq != expected_seq:
            if expected_seq in present:
                return expected_seq - 1, _Fault(
                    expected_seq,
                    REORDERED,
                    f"record {expected_seq} is out of place: record {row.seq} stands where "
                    "it should",
                )
            return expected_seq - 1, _Fault(
                expected_seq,
                REMOVED,
                f"record {expected_seq} is missing: the log goes from record "
                f"{expected_seq - 1} to record {row.seq}",
            )
        if row.prev != expected_prev:
            if expected_prev in followers:
                return expected_seq - 1, _Fault(
                    row.seq,
                    REORDERED,
                    f"record {row.seq} is out of place: the record that followed record "
                    f"{row.seq - 1} stands elsewhere in the log",
                )
            return expected_seq - 1, _Fault(
                row.seq,
                REMOVED,
                f"the record that followed record {row.seq - 1} is missing: record {row.seq} "
                "chains to another one",
            )
        try:
            detail = json.loads(row.detail)
            if not isinstance(detail, dict):
                raise ValueError("detail is not an object")
            digest = record_hash(
                expected_prev,
                seq=row.seq,
                at=row.at,
                actor=row.actor,
                address=row.address,
                action=row.action,
                target=row.target,
                result=row.result,
                detail=detail,
            )
        except ValueError:
            digest = ""
        if digest != row.hash:
            return expected_seq - 1, _Fault(
                row.seq,
                CHANGED,
                f"record {row.seq} was changed: its content no longer matches its hash",
            )
        try:
            key.verify(bytes.fromhex(row.signature), AuditHead(row.seq, row.hash).to_bytes())
        except (InvalidSignature, ValueError):
            return expected_seq - 1, _Fault(
                row.seq,
                BAD_SIGNATURE,
                f"record {row.seq}: the service key's signature of the head does not verify",
            )
        expected_seq, expected_prev = row.seq + 1, row.hash
    return len(rows), None


def _check(
    rows: Sequence[StoredRecord],
    hsm_heads: Sequence[HsmHeadSignature],
    key: Ed25519PublicKey,
    heads: Iterable[AuditHead] = (),
) -> AuditVerification:
    good, fault = _chain_fault(rows, key)
    hashes = {row.seq: row.hash for row in rows[:good]}
    faults = [fault] if fault else []
    last_signed: HsmHeadSignature | None = None
    signed_ok = 0
    for signed in hsm_heads:
        if not signed.verifies():
            faults.append(
                _Fault(
                    signed.seq,
                    BAD_HSM_SIGNATURE,
                    f"the head of record {signed.seq} said to be signed in {signed.where()} "
                    "does not verify with its public key",
                )
            )
            continue
        problem = _against(
            signed.head, hashes, good, fault, f"{signed.where()} signed at {signed.at}"
        )
        if problem:
            faults.append(problem)
            continue
        signed_ok += 1
        if signed.seq > 0 and (last_signed is None or signed.seq > last_signed.seq):
            last_signed = signed
    checked = list(heads)
    for given in checked:
        problem = _against(given, hashes, good, fault, "the head given")
        if problem:
            faults.append(problem)
    last = AuditHead(rows[good - 1].seq, rows[good - 1].hash) if good else None
    result = AuditVerification(
        ok=not faults,
        records=len(rows),
        head=last if not faults else None,
        last_hsm_signed=last_signed.seq if last_signed else None,
        last_hsm_signature=last_signed,
        hsm_heads=signed_ok,
        heads_checked=checked,
    )
    if faults:
        first = min(faults, key=lambda f: f.seq)
        result.first_bad, result.reason, result.message = first.seq, first.reason, first.message
    else:
        result.message = _intact(result)
    return result


def _against(
    head: AuditHead, hashes: Mapping[int, str], good: int, fault: _Fault | None, who: str
) -> _Fault | None:
    """What a head signed elsewhere says of the log, if it disagrees."""
    if head.seq == 0:
        return None
    if head.seq in hashes:
        if hashes[head.seq] != head.hash:
            return _Fault(
                head.seq,
                CHANGED,
                f"record {head.seq} differs from the head {who}: the log was rewritten up to there",
            )
        return None
    if fault is None and head.seq > good:
        return _Fault(
            good + 1,
            REMOVED,
            f"records {good + 1} to {head.seq} are missing: the log ends at record {good}, "
            f"but {who} record {head.seq}",
        )
    return None


def _intact(result: AuditVerification) -> str:
    said = (
        f"{result.records} record(s): the chain holds and every head is signed by the service key"
    )
    last = result.last_hsm_signature
    if last is None:
        return (
            said + "; no head is signed in a slot yet, so a cut at the end shows only against "
            "a drive's copy"
        )
    return (
        f"{said}; the last head signed in a slot is record {last.seq} ({last.where()}, "
        f"{last.at}): a cut after it shows only against a drive's copy"
    )


# --- the state folder -------------------------------------------------------------------------


def _open_readonly(state_dir: Path) -> sqlite3.Connection:
    path = state_dir / DB_NAME
    if not path.is_file():
        raise AuditError(
            f"{state_dir} holds no {DB_NAME}: give the service's state folder (--state)"
        )
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open {path}: {exc}") from None


def _stored(conn: sqlite3.Connection) -> tuple[list[StoredRecord], list[HsmHeadSignature]]:
    try:
        # One snapshot for both tables, so a head the running service signs meanwhile is
        # not taken for a record removed.
        conn.execute("BEGIN")
        rows = conn.execute(
            f"SELECT {_RECORD_COLUMNS}, signature FROM audit ORDER BY seq"
        ).fetchall()
        hsm_rows = conn.execute(
            f"SELECT {_HSM_COLUMNS} FROM audit_hsm_heads ORDER BY id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise AuditError(f"the database holds no readable audit log ({exc})") from None
    return [StoredRecord(*row) for row in rows], [_hsm_head(row) for row in hsm_rows]


def _state_public_key(state_dir: Path) -> Ed25519PublicKey:
    if not state_dir.is_dir():
        raise AuditError(f"{state_dir} is not a folder: give the service's state folder (--state)")
    public = state_dir / PUBLIC_KEY_NAME
    if public.is_file():
        return _load_public(public.read_bytes(), str(public))
    private = state_dir / KEY_NAME
    if private.is_file():
        return ServiceKey.load_or_create(state_dir)._key.public_key()
    raise AuditError(f"{state_dir} holds neither {PUBLIC_KEY_NAME} nor {KEY_NAME}")


def verify_state(state_dir: Path, heads: Iterable[AuditHead] = ()) -> AuditVerification:
    """Check the log in a state folder offline: no HSM, no service running. ``heads`` are
    heads carried by backup sets, each of which must be in the log."""
    key = _state_public_key(state_dir)
    conn = _open_readonly(state_dir)
    try:
        rows, hsm_heads = _stored(conn)
    finally:
        conn.close()
    return _check(rows, hsm_heads, key, heads)


def export_bundle(state_dir: Path, out: Path) -> None:
    """Write the log as one JSON file an auditor checks elsewhere (:func:`verify_bundle`):
    every record with its signature, the service's public key, the heads signed in slots
    with their public keys. Exported as stored, whether the chain holds or not."""
    key = _state_public_key(state_dir)
    conn = _open_readonly(state_dir)
    try:
        rows, hsm_heads = _stored(conn)
    finally:
        conn.close()
    records = []
    for row in rows:
        try:
            detail: object = json.loads(row.detail)
        except ValueError:
            detail = row.detail
        records.append(
            {
                "seq": row.seq,
                "at": row.at,
                "actor": row.actor,
                "address": row.address,
                "action": row.action,
                "target": row.target,
                "result": row.result,
                "detail": detail,
                "prev": row.prev,
                "hash": row.hash,
                "signature": row.signature,
            }
        )
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "exported_at": utc_now(),
        "service_public_key": key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "records": records,
        "hsm_heads": [h.to_json() for h in hsm_heads],
    }
    temporary = out.with_name(out.name + ".part")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            json.dump(bundle, stream, indent=1, ensure_ascii=False)
            stream.write("\n")
        temporary.replace(out)
    except OSError as exc:
        raise AuditError(f"cannot write {out}: {exc.strerror or exc}") from None


def _field(obj: Mapping[str, object], name: str, kind: type | tuple[type, ...]) -> object:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"the bundle's {name!r} is missing or of the wrong type")
    return value


def _optional_text(obj: Mapping[str, object], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise BundleError(f"the bundle's {name!r} is of the wrong type")
    return value


def _bundle_record(obj: object) -> StoredRecord:
    if not isinstance(obj, dict):
        raise BundleError("a record of the bundle is not an object")
    detail = obj.get("detail")
    return StoredRecord(
        seq=int(_field(obj, "seq", int)),  # type: ignore[call-overload]
        at=str(_field(obj, "at", str)),
        actor=_optional_text(obj, "actor"),
        address=_optional_text(obj, "address"),
        action=str(_field(obj, "action", str)),
        target=_optional_text(obj, "target"),
        result=str(_field(obj, "result", str)),
        detail=_canonical(detail) if isinstance(detail, dict) else "null",
        prev=str(_field(obj, "prev", str)),
        hash=str(_field(obj, "hash", str)),
        signature=str(_field(obj, "signature", str)),
    )


def _bundle_hsm_head(obj: object) -> HsmHeadSignature:
    if not isinstance(obj, dict):
        raise BundleError("an HSM head of the bundle is not an object")
    algorithm = str(_field(obj, "algorithm", str))
    if algorithm not in ALGORITHMS:
        raise BundleError(f"an HSM head of the bundle names an unknown algorithm {algorithm!r}")
    return HsmHeadSignature(
        seq=int(_field(obj, "seq", int)),  # type: ignore[call-overload]
        hash=str(_field(obj, "hash", str)),
        at=str(_field(obj, "at", str)),
        slot=int(_field(obj, "slot", int)),  # type: ignore[call-overload]
        token_serial=str(_field(obj, "token_serial", str)),
        token_label=str(_field(obj, "token_label", str)),
        algorithm=algorithm,
        public_key=str(_field(obj, "public_key", str)),
        signature=str(_field(obj, "signature", str)),
    )


def verify_bundle(
    bundle: Path, service_public_key: Path | None, heads: Iterable[AuditHead] = ()
) -> AuditVerification:
    """Check an exported bundle: against ``service_public_key`` (a PEM the auditor holds)
    or, without one, against the key the bundle carries, which proves only that the bundle
    is consistent with itself."""
    try:
        document = json.loads(bundle.read_text())
    except OSError as exc:
        raise AuditError(f"cannot read {bundle}: {exc.strerror or exc}") from None
    except ValueError:
        raise BundleError(f"{bundle} is not JSON: it is not an audit bundle") from None
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{bundle} is not a sealkeep audit bundle")
    if document.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"{bundle} is audit bundle version {document.get('version')!r}; this sealkeep "
            f"reads version {BUNDLE_VERSION}"
        )
    records, hsm_heads = document.get("records"), document.get("hsm_heads")
    if not isinstance(records, list) or not isinstance(hsm_heads, list):
        raise BundleError(f"{bundle} lacks its lists of records and HSM heads")
    carried = _load_public(
        str(_field(document, "service_public_key", str)).encode(), "the bundle's service key"
    )
    rows = [_bundle_record(r) for r in records]
    signed = [_bundle_hsm_head(h) for h in hsm_heads]
    if service_public_key is None:
        result = _check(rows, signed, carried, heads)
        result.key_source = "bundle"
        return result
    try:
        trusted = _load_public(service_public_key.read_bytes(), str(service_public_key))
    except OSError as exc:
        raise AuditError(f"cannot read {service_public_key}: {exc.strerror or exc}") from None
    result = _check(rows, signed, trusted, heads)
    result.key_source = "given"
    if _raw(trusted) != _raw(carried):
        result.ok = False
        result.head = None
        result.first_bad = rows[0].seq if rows else None
        result.reason = BAD_SIGNATURE
        result.message = (
            f"the bundle carries another service key than {service_public_key}: its records "
            "were not signed by the service whose key you hold"
        )
    return result
