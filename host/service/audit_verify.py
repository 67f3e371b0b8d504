"""Checking the audit log offline, with no HSM and no running service: in a state folder,
or in a bundle exported for an auditor, who checks it against the service's public key."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .audit_chain import (
    BAD_HSM_SIGNATURE,
    BAD_SIGNATURE,
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    CHANGED,
    DB_NAME,
    GENESIS,
    HSM_COLUMNS,
    KEY_NAME,
    PUBLIC_KEY_NAME,
    RECORD_COLUMNS,
    REMOVED,
    REORDERED,
    AuditError,
    AuditHead,
    BundleError,
    HsmHeadSignature,
    ServiceKey,
    canonical_json,
    hsm_head_from_row,
    load_public_key,
    raw_public_key,
    record_hash,
    utc_now,
)
from .audit_hsm import ALGORITHMS

__all__ = ["AuditVerification", "StoredRecord", "export_bundle", "verify_bundle", "verify_state"]

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


def _read_state(
    state_dir: Path,
) -> tuple[Ed25519PublicKey, list[StoredRecord], list[HsmHeadSignature]]:
    """The service's public key, and the log's records and slot-signed heads as stored."""
    key = _state_public_key(state_dir)
    conn = _open_readonly(state_dir)
    try:
        rows, hsm_heads = _stored(conn)
    finally:
        conn.close()
    return key, rows, hsm_heads


def _stored(conn: sqlite3.Connection) -> tuple[list[StoredRecord], list[HsmHeadSignature]]:
    try:
        # One snapshot for both tables, so a head the running service signs meanwhile is
        # not taken for a record removed.
        conn.execute("BEGIN")
        rows = conn.execute(
            f"SELECT {RECORD_COLUMNS}, signature FROM audit ORDER BY seq"
        ).fetchall()
        hsm_rows = conn.execute(f"SELECT {HSM_COLUMNS} FROM audit_hsm_heads ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise AuditError(f"the database holds no readable audit log ({exc})") from None
    return [StoredRecord(*row) for row in rows], [hsm_head_from_row(row) for row in hsm_rows]


def _state_public_key(state_dir: Path) -> Ed25519PublicKey:
    if not state_dir.is_dir():
        raise AuditError(f"{state_dir} is not a folder: give the service's state folder (--state)")
    public = state_dir / PUBLIC_KEY_NAME
    if public.is_file():
        return load_public_key(public.read_bytes(), str(public))
    private = state_dir / KEY_NAME
    if private.is_file():
        return ServiceKey.load_or_create(state_dir).public_key()
    raise AuditError(f"{state_dir} holds neither {PUBLIC_KEY_NAME} nor {KEY_NAME}")


def verify_state(state_dir: Path, heads: Iterable[AuditHead] = ()) -> AuditVerification:
    """Check the log in a state folder offline: no HSM, no service running. ``heads`` are
    heads carried by backup sets, each of which must be in the log."""
    key, rows, hsm_heads = _read_state(state_dir)
    return _check(rows, hsm_heads, key, heads)


def export_bundle(state_dir: Path, out: Path) -> None:
    """Write the log as one JSON file an auditor checks elsewhere (:func:`verify_bundle`):
    every record with its signature, the service's public key, the heads signed in slots
    with their public keys. Exported as stored, whether the chain holds or not."""
    key, rows, hsm_heads = _read_state(state_dir)
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
        detail=canonical_json(detail) if isinstance(detail, dict) else "null",
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
    carried = load_public_key(
        str(_field(document, "service_public_key", str)).encode(), "the bundle's service key"
    )
    rows = [_bundle_record(r) for r in records]
    signed = [_bundle_hsm_head(h) for h in hsm_heads]
    if service_public_key is None:
        result = _check(rows, signed, carried, heads)
        result.key_source = "bundle"
        return result
    try:
        trusted = load_public_key(service_public_key.read_bytes(), str(service_public_key))
    except OSError as exc:
        raise AuditError(f"cannot read {service_public_key}: {exc.strerror or exc}") from None
    result = _check(rows, signed, trusted, heads)
    result.key_source = "given"
    if raw_public_key(trusted) != raw_public_key(carried):
        result.ok = False
        result.head = None
        result.first_bad = rows[0].seq if rows else None
        result.reason = BAD_SIGNATURE
        result.message = (
            f"the bundle carries another service key than {service_public_key}: its records "
            "were not signed by the service whose key you hold"
        )
    return result
