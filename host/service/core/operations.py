"""Backups, restores and the catalogue of sets, as the service runs them.

Each operation takes a logged-in session (the caller logged in with the SO password the
user gave for this operation alone) and the drive spec, and reports progress through a
callback; the same backup and restore code as the command line does the work.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ...backupset import BackupResult, VerifyResult, backup, list_sets, verify_set
from ...domain import DriveGroup
from ...hsm import HsmSession
from ...restore import RestoreResult, restore_set

Progress = Callable[[dict[str, object]], None]


@dataclass
class Warnings:
    """What the backup and restore code noted along the way, for the job's result."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        self.lines.append(text)


class TimeLeft:
    """Seconds left of a piece of work from the fraction done so far (None: too early)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, fraction: float) -> float | None:
        elapsed = time.monotonic() - self.started
        if not 0 < fraction < 1 or elapsed < 0.5:
            return None if fraction < 1 else 0.0
        return round(elapsed * (1 - fraction) / fraction, 1)


def run_backup(
    session: HsmSession,
    drive_spec: str | None,
    *,
    timeout: float,
    label: str,
    progress: Progress,
    audit_head: bytes | None = None,
) -> tuple[BackupResult, list[str]]:
    """Back up every key of ``session``'s slot to every drive of its domain; the set carries
    ``audit_head``, sealed with its manifest."""
    warnings = Warnings()
    drives: dict[str, dict[str, int]] = {}
    progress({"phase": "checking the drives", "drives": drives})
    with DriveGroup.from_spec(drive_spec, timeout) as group:
        for drive in group.drives:
            name = drive.hello.serial if drive.hello else drive.address
            drives[name] = {"done": 0, "total": 0}
        progress({"phase": "wrapping the keys in the HSM", "drives": drives})

        writing = TimeLeft()

        def each(serial: str, done: int, total: int) -> None:
            drives[serial] = {"done": done, "total": total}
            # The slowest drive decides when the write ends.
            slowest = min(
                (d["done"] / d["total"] for d in drives.values() if d["total"]), default=0.0
            )
            progress(
                {"phase": "writing to the drives", "drives": drives, "left_s": writing(slowest)}
            )

        def planned(objects: Collection[object]) -> None:
            progress({"phase": "wrapping the keys in the HSM", "objects": len(objects)})

        result = backup(
            session,
            group.drives,
            label=label,
            allow_missing=False,
            on_plan=planned,
            progress=each,
            note=warnings,
            audit_head=audit_head,
        )
    progress({"phase": "done", "drives": drives, "left_s": 0.0})
    return result, warnings.lines


def run_restore(
    session: HsmSession,
    drive_spec: str | None,
    *,
    timeout: float,
    set_id: str,
    keys: Collection[str] | None,
    progress: Progress,
) -> tuple[RestoreResult, list[str]]:
    """Restore set ``set_id`` (or the objects labelled ``keys``) into ``session``'s slot."""
    warnings = Warnings()
    progress({"phase": "reading the set from the drives"})
    with DriveGroup.from_spec(drive_spec, timeout) as group:
        restoring = TimeLeft()

        def each(done: int, total: int) -> None:
            left = restoring(done / total if total else 0.0)
            progress(
                {"phase": "restoring into the HSM", "done": done, "total": total, "left_s": left}
            )

        result = restore_set(
            session, group.drives, set_id, keys or None, progress=each, note=warnings
        )
    for attempt in result.attempts:
        warnings(f"{attempt.drive}: {attempt.reason}")
    progress({"phase": "done", "left_s": 0.0})
    return result, warnings.lines


def run_verify(
    session: HsmSession,
    drive_spec: str | None,
    *,
    timeout: float,
    set_id: str,
    progress: Progress,
) -> VerifyResult:
    """Check every drive's copy of set ``set_id`` in the HSM, restoring nothing."""
    progress({"phase": "checking each drive's copy"})
    domain_id = session.require_domain()
    with DriveGroup.from_spec(drive_spec, timeout) as group:
        result = verify_set(session, group.drives, domain_id, set_id)
    progress({"phase": "done"})
    return result


# --- the catalogue: what the service knows of the sets without a PIN --------------------------


def record_verification(conn: sqlite3.Connection, result: VerifyResult) -> None:
    """A catalogued set's verified drives become those whose copy just proved good."""
    conn.execute(
        "UPDATE sets SET verified = ?, seen = ? WHERE set_id = ?",
        (json.dumps([c.serial for c in result.good]), time.time(), result.set_id),
    )


def record_backup(conn: sqlite3.Connection, result: BackupResult, domain_id: bytes) -> None:
    _catalogue(
        conn,
        result.set_id.hex(),
        int(time.time()),
        result.label,
        result.slot_id,
        result.token,
        domain_id.hex(),
        result.keys,
        result.size,
        [d.serial for d in result.drives],
        [d.serial for d in result.drives if d.verified],
    )


def _catalogue(
    conn: sqlite3.Connection,
    set_id: str,
    created: int,
    label: str,
    slot: int,
    token: str,
    domain_id: str,
    keys: int,
    size: int,
    drives: list[str],
    verified: list[str],
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO sets (set_id, created, label, slot, token, domain_id, keys, "
        "bytes, drives, verified, seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            set_id,
            created,
            label,
            slot,
            token,
            domain_id,
            keys,
            size,
            json.dumps(drives),
            json.dumps(verified),
            time.time(),
        ),
    )


def refresh_catalogue(
    conn: sqlite3.Connection, session: HsmSession, drive_spec: str | None, timeout: float
) -> int:
    """Read the sets of the slot's domain from the drives (owner sessions) into the
    catalogue; returns how many sets the drives hold."""
    domain_id = session.require_domain()
    with DriveGroup.from_spec(drive_spec, timeout) as group:
        listings, _ = list_sets(session, group.drives, domain_id)
    for listing in listings:
        h = listing.header
        _catalogue(
            conn,
            h.set_id.hex(),
            h.created,
            h.label,
            h.token.slot_id,
            h.token.label,
            h.domain_id.hex(),
            h.key_count,
            listing.size,
            listing.present,
            listing.verified,
        )
    return len(listings)


@dataclass(frozen=True)
class CatalogueEntry:
    set_id: str
    created: int
    label: str
    slot: int
    token: str
    domain_id: str
    keys: int
    bytes: int
    drives: list[str]
    verified: list[str]

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def catalogue(conn: sqlite3.Connection, *, limit: int = 1000) -> list[CatalogueEntry]:
    """The sets the service knows of, newest first."""
    rows = conn.execute(
        "SELECT * FROM sets ORDER BY created DESC, set_id LIMIT ?", (limit,)
    ).fetchall()
    return [
        CatalogueEntry(
            r["set_id"],
            r["created"],
            r["label"],
            r["slot"],
            r["token"],
            r["domain_id"],
            r["keys"],
            r["bytes"],
            json.loads(r["drives"]),
            json.loads(r["verified"]),
        )
        for r in rows
    ]
