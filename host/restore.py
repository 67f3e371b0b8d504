"""Restore a backup set into a slot that holds the domain key.

The set is read from the first healthy drive, falling back to the next one on any error
(unreachable, refused, absent, damaged on the drive, or not authentic in the HSM) but the
HSM's own (a mechanism the token lacks fails every copy alike and condemns none); the HSM
unwraps the set key with the domain key and every key with the set key, replaying its
attributes; keys already in the slot (same class, label and id) are left alone; every
restored key is proven by use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from . import manifest
from .backupset import find_set, set_id_of, set_object_name
from .domain import (
    Drive,
    Note,
    Problem,
    drive_problems,
    error_code,
    explain,
    login_domain_drives,
    short,
)
from .drivegroup import join_all
from .errors import EXIT_INCOMPLETE, EXIT_INTEGRITY, SealkeepError
from .hsm import DomainError, HsmError, HsmSession, RestoreOutcome, SetKey, SetKeyError, UnsealError
from .manifest import Manifest, ManifestError
from .pins import InputError


def _quiet(_: str) -> None:
    pass


class RestoreFailed(SealkeepError):
    """Some keys could not be restored or proven."""

    exit_code = EXIT_INTEGRITY


class RestoreIncomplete(SealkeepError):
    """Everything else restored, but the slot holds other objects under some of the set's
    names: left alone, the set's not restored (``--replace`` puts them in place)."""

    exit_code = EXIT_INCOMPLETE


@dataclass
class Fetched:
    """A set read from a drive and authenticated in the HSM."""

    manifest: Manifest = field(repr=False)
    kek: SetKey = field(repr=False)
    serial: str
    address: str
    attempts: list[Problem]


class _CopyReader(threading.Thread):
    """One drive's copy of a set, read in the background while the HSM does other work
    (only the drive is called here: the HSM is never called from two threads at once)."""

    def __init__(self, drive: Drive, name: str) -> None:
        super().__init__(daemon=True)  # Ctrl-C ends the process without waiting for it
        self.drive = drive
        self.name = name
        self._data: bytes | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._data = self.drive.use()[0].get(self.name)
        except BaseException as exc:  # raised again in the caller's thread by result()
            self._error = exc

    def wait(self) -> None:
        join_all([self])

    def result(self) -> bytes:
        self.wait()
        if self._error is not None:
            raise self._error
        if self._data is None:
            raise RuntimeError("the copy was not read")
        return self._data


def fetch_set(
    session: HsmSession,
    drives: Sequence[Drive],
    reference: str,
    note: Note = _quiet,
    meanwhile: Callable[[], object] | None = None,
) -> Fetched:
    """The set from the first drive whose copy is intact and authentic; errors are named.

    ``meanwhile`` is HSM work run while the first drive's copy is read."""
    domain_id = session.domain_id()
    if domain_id is None:
        raise DomainError(
            f"{session.where} holds no backup domain key: run `sealkeep domain recover "
            f"--slot {session.slot_id} --drives ...` with k drives and their custodians first"
        )
    logged, problems, _ = login_domain_drives(session, drives, domain_id)
    if not logged:
        raise drive_problems(
            f"no drive of domain {short(domain_id.hex())} (held by {session.where}) can be read",
            problems,
        )
    name = find_set(logged, reference)
    attempts: list[Problem] = []
    first = _CopyReader(logged[0], name)
    first.start()
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        first.wait()  # the drive is not left in the middle of a read, whatever happened
    for drive in logged:
        client, hello = drive.use()
        try:
            data = first.result() if drive is first.drive else client.get(name)
            header = manifest.read_header(data)
            if set_object_name(header.set_id) != name:
                raise ManifestError(f"the object holds set {header.set_id_hex} instead")
            kek = session.open_set(header)
            try:
                opened = manifest.unseal(data, kek)
            except BaseException:
                kek.destroy()
                raise
        except (ManifestError, SetKeyError, UnsealError) as exc:
            attempts.append(Problem(drive.name, f"not authentic: {exc}", EXIT_INTEGRITY))
            note(f"{drive.name}: its copy does not authenticate; trying the next drive")
            continue
        except HsmError:
            # The HSM failing (a mechanism it lacks, a session gone) fails on every drive's
            # copy alike and says nothing of any: no copy is called corrupt for it.
            raise
        except SealkeepError as exc:
            attempts.append(Problem(drive.name, explain(exc), error_code(exc)))
            note(f"{drive.name}: {explain(exc)}; trying the next drive")
            continue
        return Fetched(opened, kek, hello.serial, drive.address, problems + attempts)
    raise drive_problems(
        f"no drive holds a usable copy of set {set_id_of(name)}",
        problems + attempts,
        "Nothing was restored.",
    )


@dataclass
class RestoreResult:
    set_id: str
    label: str
    slot_id: int
    token: str
    source: str
    source_address: str
    outcomes: list[RestoreOutcome]
    attempts: list[Problem]
    skipped_at_backup: list[manifest.SkippedEntry]
    seconds: float
    dry_run: bool = False
    # of ``seconds``: reading the set (the slot listed meanwhile) and opening it in the HSM
    fetch_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[RestoreOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, object]:
        return {
            "set_id": self.set_id,
            "label": self.label,
            "slot": self.slot_id,
            "token": self.token,
            "source": {"serial": self.source, "port": self.source_address},
            "fallbacks": [p.to_json() for p in self.attempts],
            "restored": self.count("restored"),
            "replaced": self.count("replaced"),
            "present": self.count("present"),
            "different": self.count("different"),
            "failed": len(self.failed),
            "keys": [o.to_json() for o in self.outcomes],
            "not_in_set": [
                {"label": s.label, "id": s.id.hex(), "reason": s.reason}
                for s in self.skipped_at_backup
            ],
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "ok": self.ok,
        }


def check_labels(opened: Manifest, labels: Collection[str]) -> None:
    known = {e.label for e in opened.entries}
    unknown = sorted(set(labels) - known)
    left_out = {s.label: s.reason for s in opened.skipped if s.label in unknown}
    if left_out and len(left_out) == len(unknown):
        raise InputError(
            f"set {opened.set_id_hex} does not hold "
            + "; ".join(f"{label!r}: left out at backup ({why})" for label, why in left_out.items())
        )
    if unknown:
        raise InputError(
            f"set {opened.set_id_hex} holds no key labelled {', '.join(map(repr, unknown))}; "
            f"it holds {', '.join(map(repr, sorted(known))) or 'nothing'}"
        )


def restore_set(
    session: HsmSession,
    drives: Sequence[Drive],
    reference: str,
    labels: Collection[str] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    note: Note = _quiet,
    replace: bool = False,
    dry_run: bool = False,
) -> RestoreResult:
    """Restore the set (or the keys with ``labels``) into ``session``'s slot; ``replace``
    puts the set's object in place of a different one with the same class, label and id."""
    started = time.monotonic()
    present: list[set[tuple[int, str, bytes]]] = []
    # The slot is listed (what is in it already) while a drive sends the set.
    fetched = fetch_set(
        session, drives, reference, note, lambda: present.append(session.present_keys())
    )
    fetched_after = time.monotonic() - started
    try:
        opened = fetched.manifest
        if labels:
            check_labels(opened, labels)
        outcomes = session.restore(
            fetched.kek,
            opened.entries,
            labels=set(labels) if labels else None,
            progress=progress,
            replace=replace,
            dry_run=dry_run,
            present=present[0],
        )
    finally:
        with suppress(Exception):
            fetched.kek.destroy()
    return RestoreResult(
        set_id=opened.set_id_hex,
        label=opened.label,
        slot_id=session.slot_id,
        token=session.info.label,
        source=fetched.serial,
        source_address=fetched.address,
        outcomes=outcomes,
        attempts=fetched.attempts,
        # With --key, only what was asked for: the rest of the slot is not this restore's news.
        skipped_at_backup=[s for s in opened.skipped if not labels or s.label in labels],
        seconds=time.monotonic() - started,
        fetch_seconds=fetched_after,
        dry_run=dry_run,
    )


def why(outcome: RestoreOutcome) -> str:
    """Why an object was not restored, or not proven."""
    if outcome.status == "failed":
        return outcome.detail
    if outcome.proof is not None and not outcome.proof.ok:
        return f"restored but not proven ({outcome.proof.method}: {outcome.proof.detail})"
    return outcome.detail


def restore_failure(result: RestoreResult) -> SealkeepError:
    names = "; ".join(f"{o.label or o.id.hex()}: {why(o)}" for o in result.failed)
    if all(o.status == "different" for o in result.failed):
        return RestoreIncomplete(
            f"{len(result.failed)} object(s) of set {result.set_id} not restored: the slot "
            f"holds other objects under their class, label and id: {names}"
        )
    return RestoreFailed(
        f"{len(result.failed)} object(s) of set {result.set_id} were not restored or not "
        f"proven: {names}"
    )
