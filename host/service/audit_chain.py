"""The audit log's building blocks: how a record is hashed, what a head is and how it is
signed, the service's key, and the rows as stored. Used by :mod:`sealkeep.service.audit`
(writing) and :mod:`sealkeep.service.audit_verify` (checking)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import EXIT_INTEGRITY, EXIT_USAGE, SealkeepError
from .audit_hsm import verify_signature

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


class AuditError(SealkeepError):
    """The audit log's state folder or key cannot be used as given."""

    exit_code = EXIT_USAGE


class BundleError(SealkeepError):
    """An audit bundle that is not one: unreadable JSON, or fields missing or mistyped."""

    exit_code = EXIT_INTEGRITY


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_json(value: object) -> str:
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
    body = canonical_json(
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

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def load_public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise AuditError(f"{where} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{where} is not an Ed25519 public key: it is not the audit key")
    return key


def raw_public_key(key: Ed25519PublicKey) -> bytes:
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


RECORD_COLUMNS = "seq, at, actor, address, action, target, result, detail, prev, hash"
HSM_COLUMNS = "seq, hash, at, slot, token_serial, token_label, algorithm, public_key, signature"


def record_from_row(row: Sequence[object]) -> AuditRecord:
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


def hsm_head_from_row(row: Sequence[object]) -> HsmHeadSignature:
    return HsmHeadSignature(
        int(row[0]),  # type: ignore[call-overload]
        str(row[1]),
        str(row[2]),
        int(row[3]),  # type: ignore[call-overload]
        *(str(value) for value in row[4:9]),
    )
