"""The service's audit log: append-only records in a hash chain."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..hsm import HsmSession

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
"""


class ServiceKey:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, state_dir: Path) -> ServiceKey:
        path = state_dir / "audit-key.pem"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            assert isinstance(key, Ed25519PrivateKey)
            return cls(key)
        key = Ed25519PrivateKey.generate()
        path.touch(mode=0o600)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class AuditHead:
    seq: int
    hash: str

    def to_bytes(self) -> bytes:
        return self.seq.to_bytes(8, "big") + bytes.fromhex(self.hash)


@dataclass(frozen=True)
class AuditRecord:
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
        return dict(self.__dict__)


class AuditLog:
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
        head = self.head()
        seq = head.seq + 1 if head else 1
        prev = head.hash if head else "00" * 32
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = json.dumps(
            [seq, at, actor, address, action, target, result, dict(detail or {})],
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(bytes.fromhex(prev) + body.encode()).hexdigest()
        self.conn.execute(
            "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                seq,
                at,
                actor,
                address,
                action,
                target,
                result,
                json.dumps(dict(detail or {}), sort_keys=True),
                prev,
                digest,
                self.key.sign(AuditHead(seq, digest).to_bytes()).hex(),
            ),
        )
        return AuditRecord(
            seq, at, actor, address, action, target, result, dict(detail or {}), prev, digest
        )

    def head(self) -> AuditHead | None:
        row = self.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return AuditHead(row[0], row[1]) if row else None

    def records(self, *, before: int | None = None, limit: int = 100) -> list[AuditRecord]:
        rows = self.conn.execute(
            "SELECT seq, at, actor, address, action, target, result, detail, prev, hash "
            "FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
        return [
            AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], r[9])
            for r in rows
        ]

    def sign_head_in_slot(self, session: HsmSession) -> None:
        return None
