"""The service's audit log: append-only records in a hash chain, every head signed.

Each record's hash is SHA-256(previous hash ‖ canonical JSON of the record), record 1
chaining to 32 zero bytes, so changing, removing or reordering a record breaks the chain
from there on. The service's own Ed25519 key (``audit-key.pem`` in the state folder) signs
every new head; at each operation that logs into a slot, a key that never leaves that slot
signs the head too (:mod:`sealkeep.service.audit_hsm`), and each backup set carries the head
of its moment. Records are written in the caller's transaction and never committed here, so
an action and its record land together or not at all. Checking the log offline and the
auditor's bundle: :mod:`sealkeep.service.audit_verify`. What the chain proves and what it
does not: docs/threat-model.md, "Audit log".
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping

from ..hsm import HsmSession
from .audit_chain import (
    DB_NAME,
    GENESIS,
    HSM_COLUMNS,
    RECORD_COLUMNS,
    AuditError,
    AuditHead,
    AuditRecord,
    BundleError,
    HsmHeadSignature,
    ServiceKey,
    canonical_json,
    hsm_head_from_row,
    record_from_row,
    record_hash,
    utc_now,
)
from .audit_hsm import SlotSigner
from .audit_verify import AuditVerification, export_bundle, verify_bundle, verify_state

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
    "record_hash",
    "verify_bundle",
    "verify_state",
]

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
        detail_text = canonical_json(dict(detail or {}))
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
            f"INSERT INTO audit ({RECORD_COLUMNS}, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
            f"SELECT {RECORD_COLUMNS} FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
        return [record_from_row(row) for row in rows]

    def hsm_heads(self) -> list[HsmHeadSignature]:
        rows = self.conn.execute(f"SELECT {HSM_COLUMNS} FROM audit_hsm_heads ORDER BY id")
        return [hsm_head_from_row(row) for row in rows.fetchall()]

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
            f"INSERT INTO audit_hsm_heads ({HSM_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            tuple(signed.to_json().values()),
        )
        return signed
