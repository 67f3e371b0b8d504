"""Backup sets on the domain's drives: back up a slot, list the sets, verify their copies.

A set is one object, ``set-<set id hex>``, stored whole on every drive of the domain (see
:mod:`sealkeep.manifest` for its format). Backup follows the order the product promises:
check the slot, list what will and will not be backed up, wrap every key under a fresh set
key inside the HSM, seal the manifest, check that the set's drives are present, of this
domain and have room, write to every drive in parallel (each drive checks the digest at
commit), then have every drive rehash its copy and compare with the local digest.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from . import manifest
from .client import DriveClient
from .domain import (
    OBJECT_OVERHEAD,
    SET_PREFIX,
    Drive,
    DriveProblems,
    Note,
    Problem,
    drive_problems,
    error_code,
    explain,
    login_domain_drives,
    short,
)
from .drivegroup import DomainLogins, join_all
from .errors import (
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
    EXIT_UNREACHABLE,
    DigestMismatch,
    ObjectNotFound,
    SealkeepError,
)
from .hsm import HsmSession, ObjectInfo, SetKey, SetKeyError, UnsealError
from .hsm_base import HIERARCHY_SHARED_KEK, class_name
from .hsm_caps import profile_label
from .manifest import KeyEntry, ManifestError, SetHeader, SkippedEntry
from .pins import InputError

HEADER_PROBE = 4096

Progress = Callable[[str, int, int], None]
"""``progress(serial, done, total)``: bytes of the set written to one drive."""


def _quiet(_: str) -> None:
    pass


class BackupError(SealkeepError):
    """The backup could not be made; nothing was left on the drives."""


class NothingToBackUp(BackupError):
    pass


def set_object_name(set_id: bytes) -> str:
    return SET_PREFIX + set_id.hex()


def set_id_of(name: str) -> str:
    return name.removeprefix(SET_PREFIX)


def resolve_set(reference: str, names: Sequence[str]) -> str:
    """The object name of the set ``reference`` names (its id, a unique prefix, or the name)."""
    wanted = reference.strip().lower().removeprefix(SET_PREFIX)
    if len(wanted) < 4 or any(c not in "0123456789abcdef" for c in wanted):
        raise InputError(
            f"{reference!r} is not a set id: give the hex id `sealkeep sets` shows "
            "(at least its first 4 characters)"
        )
    matches = sorted({n for n in names if set_id_of(n).startswith(wanted)})
    if not matches:
        raise InputError(f"no set {reference} on the drives given (see `sealkeep sets`)")
    if len(matches) > 1:
        raise InputError(
            f"set id {reference} is ambiguous: it starts "
            + ", ".join(set_id_of(m) for m in matches)
            + "; give more of it"
        )
    return matches[0]


def read_set_header(drive: Drive, name: str) -> SetHeader:
    """The header of a set on a drive, read without fetching the whole set."""
    client, _ = drive.use()
    head = client.read(name, 0, HEADER_PROBE)
    end = manifest.header_length(head)
    if end > len(head):
        head += client.read(name, len(head), end - len(head))
    return manifest.read_header(head)


# --- backup -------------------------------------------------------------------------------------


@dataclass
class DriveWrite:
    serial: str
    address: str
    size: int
    digest: bytes
    verified: bool
    resumed_from: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "port": self.address,
            "bytes": self.size,
            "sha256": self.digest.hex(),
            "verified": self.verified,
        }


@dataclass
class BackupResult:
    set_id: bytes
    label: str
    slot_id: int
    token: str
    keys: int
    objects: list[ObjectInfo] = field(repr=False)
    skipped: list[SkippedEntry]
    size: int
    digest: bytes
    drives: list[DriveWrite]
    seconds: float
    timings: dict[str, float]
    missing: list[str] = field(default_factory=list)
    """Serials of the domain's drives that were not connected (``allow_missing``): no copy."""

    @property
    def name(self) -> str:
        return set_object_name(self.set_id)

    @property
    def incomplete(self) -> bool:
        """Less than a full backup: objects left out that no policy of the token explains
        (it refused to wrap them), or drives of the domain that got no copy."""
        return bool(self.missing) or any(s.refused for s in self.skipped)

    def to_json(self) -> dict[str, object]:
        return {
            "set_id": self.set_id.hex(),
            "label": self.label,
            "slot": self.slot_id,
            "token": self.token,
            "keys": self.keys,
            "skipped": [
                {
                    "class": class_name(s.object_class),
                    "label": s.label,
                    "id": s.id.hex(),
                    "reason": s.reason,
                    "refused": s.refused,
                }
                for s in self.skipped
            ],
            "missing": self.missing,
            "incomplete": self.incomplete,
            "bytes": self.size,
            "sha256": self.digest.hex(),
            "drives": [d.to_json() for d in self.drives],
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _free_space(client: DriveClient) -> int:
    return client.space().free


def start_drive_check(
    session: HsmSession, drives: Sequence[Drive], domain_id: bytes
) -> DomainLogins:
    """Owner sessions and free space of the domain's drives, asked in the background while
    the HSM lists and wraps (see :func:`finish_drive_check`)."""
    return DomainLogins(session, drives, domain_id, then=_free_space).start()


def finish_drive_check(
    logins: DomainLogins,
    size: int,
    *,
    allow_missing: bool = False,
    note: Note = _quiet,
) -> tuple[list[Drive], list[str]]:
    """The set's drives, once ``logins`` are done: present, of this domain, owner sessions
    open, room for ``size``.

    Raises naming every problem. Drives that are blank or of another domain are skipped
    with a warning through ``note``. Returns the drives, and the serials of members of the
    domain that are absent (only when ``allow_missing``).
    """
    logged, found, record = logins.finish()
    problems = [p for p in found if not p.foreign]
    for skipped in (p for p in found if p.foreign):
        note(f"warning: {skipped.drive} skipped: {skipped.reason}")
    missing: list[str] = []
    if record is not None:
        present = {d.use()[1].serial for d in logged}
        missing = [s for s in record.members if s not in present]
        if missing and not allow_missing:
            problems += [
                Problem(
                    f"drive {s}",
                    "missing: a drive of this domain is not connected (connect it, or "
                    "write to the others alone with --allow-missing)",
                    EXIT_UNREACHABLE,
                )
                for s in missing
            ]
    need = size + OBJECT_OVERHEAD
    for drive in logged:
        free = logins.result(drive)
        if isinstance(free, int) and free < need:
            problems.append(
                Problem(drive.name, f"full: {free} bytes free, the set needs {need}", EXIT_STORAGE)
            )
    if problems:
        raise drive_problems(
            "the set cannot be written to every drive of the domain",
            problems,
            "Nothing was written.",
        )
    if not logged:
        raise drive_problems(
            f"no drive of domain {short(logins.domain_id.hex())} is connected",
            [],
            "Connect the domain's drives and give them with --drives.",
        )
    return logged, missing


class BackupInterrupted(SealkeepError):
    """Ctrl-C during the write: the message says on which drives the set is committed."""

    exit_code = EXIT_INTERRUPTED


class _Stopped(Exception):
    """Raised in a writer thread, at its next frame, once the operator asked to stop."""


def _write_one(
    drive: Drive,
    name: str,
    data: bytes,
    digest: bytes,
    progress: Progress | None,
    stop: threading.Event,
) -> DriveWrite:
    client, hello = drive.use()
    serial = hello.serial

    def report(done: int, total: int) -> None:
        if stop.is_set() and done < total:
            raise _Stopped
        if progress is not None:
            progress(serial, done, total)

    result = client.put(name, data, progress=report)
    check = client.verify(name)
    if not check.intact or check.digest != digest or check.size != len(data):
        raise DigestMismatch(
            0,
            f"{name} reads back with another digest",
            serial=serial,
            port=drive.address,
            summary="the copy written does not read back intact",
        )
    return DriveWrite(serial, drive.address, len(data), check.digest, True, result.resumed_from)


def write_everywhere(
    drives: Sequence[Drive],
    name: str,
    data: bytes,
    progress: Progress | None = None,
    note: Note = _quiet,
) -> list[DriveWrite]:
    """Write ``data`` as ``name`` to every drive in parallel, then read back each digest.

    An owner session cannot delete, so a failure on one drive leaves the copies committed
    on the others: the error names every drive that failed and every drive that holds the
    set. Ctrl-C makes every writer stop at its next frame (a second one abandons them at
    once); then :class:`BackupInterrupted` says where the set was committed, if anywhere.
    A put stopped before its commit is never readable: the drive drops it when it needs room.
    """
    digest = hashlib.sha256(data).digest()
    results: dict[int, DriveWrite] = {}
    failures: list[Problem] = []
    stopped: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def one(index: int) -> None:
        drive = drives[index]
        try:
            outcome = _write_one(drive, name, data, digest, progress, stop)
        except _Stopped:
            with lock:
                stopped.append(drive.name)
            return
        except SealkeepError as exc:
            with lock:
                failures.append(Problem(drive.name, explain(exc), error_code(exc)))
            return
        with lock:
            results[index] = outcome

    # Daemon threads: a second Ctrl-C ends the process without waiting for them.
    writers = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(drives))]
    for writer in writers:
        writer.start()
    interrupted = False
    try:
        join_all(writers)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        note("stopping at the next frame; Ctrl-C again to abandon the drives now")
        try:
            join_all(writers)
        except KeyboardInterrupt:
            raise BackupInterrupted(
                "backup abandoned: " + _where_committed(drives, results, name)
            ) from None
    if interrupted:
        raise BackupInterrupted("backup interrupted: " + _where_committed(drives, results, name))
    if failures:
        raise drive_problems(
            f"writing the set failed on {len(failures)} drive(s)",
            failures,
            _where_committed(drives, results, name) + "; fix the problem and run the backup again.",
        )
    return [results[i] for i in range(len(drives))]


def _where_committed(drives: Sequence[Drive], results: dict[int, DriveWrite], name: str) -> str:
    done = [results[i].serial for i in sorted(results)]
    if not done:
        return f"no drive committed set {set_id_of(name)}: nothing was kept"
    others = [drives[i].name for i in range(len(drives)) if i not in results]
    left = f"; not on {', '.join(others)}" if others else ""
    return (
        f"set {set_id_of(name)} is committed and verified on {', '.join(done)}{left} "
        "(restorable from there; `sealkeep sets` lists it)"
    )


def seal_set(
    session: HsmSession,
    kek: SetKey,
    domain_id: bytes,
    entries: list[KeyEntry],
    skipped: list[SkippedEntry],
    *,
    label: str = "",
    audit_head: bytes | None = None,
) -> tuple[manifest.Manifest, bytes]:
    """The manifest of a set of ``session``'s slot whose keys ``kek`` wrapped, and the set's
    bytes as drives store it (its header, then the manifest sealed in the HSM)."""
    sealed_manifest = manifest.Manifest.new(
        label=label,
        audit_head=audit_head,
        token=session.token_info(),
        domain_id=domain_id,
        wrapped_kek=kek.wrapped,
        wrapped_manifest_key=kek.wrapped_manifest_key,
        entries=entries,
        skipped=skipped,
        wrapped_mac_key=kek.wrapped_mac_key,
        profile=kek.profile.number,
    )
    return sealed_manifest, manifest.seal(sealed_manifest, kek)


def backup(
    session: HsmSession,
    drives: Sequence[Drive],
    *,
    label: str = "",
    allow_missing: bool = False,
    on_plan: Callable[[list[ObjectInfo]], None] | None = None,
    progress: Progress | None = None,
    note: Note = _quiet,
    audit_head: bytes | None = None,
) -> BackupResult:
    """Back up every key of ``session``'s slot to the domain's ``drives``; ``audit_head``
    (the service's audit log head) is sealed into the set's manifest."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    listed = session.objects()  # first: the session learns the domain's keys from it
    domain_id = session.require_domain()
    session.require_mechanisms(f"cannot back up {session.where}")
    if session.domain_hierarchy() == HIERARCHY_SHARED_KEK:
        note(
            f"warning: {session.where} holds its domain under the old key hierarchy, where a "
            "PIN holder can read the keys of its sets; re-share the domain to upgrade it"
        )
    # The drives log in and say their free space while the HSM lists and wraps.
    logins = start_drive_check(session, drives, domain_id)
    try:
        if not logins.members:  # nothing to write to: said before the slot is read
            finish_drive_check(logins, 0, allow_missing=allow_missing, note=note)
        objects = session.check_wrapping(listed)
        if on_plan is not None:
            on_plan(objects)
        candidates = [o for o in objects if o.exportable and not o.is_domain_key]
        if not candidates:
            raise NothingToBackUp(
                f"{session.where} holds no key or certificate that can be backed up"
            )
        timings["list"] = time.monotonic() - started

        mark = time.monotonic()
        kek = session.new_set_key()
        try:
            entries, skipped = session.backup_entries(kek, objects)
            timings["wrap"] = time.monotonic() - mark
            mark = time.monotonic()
            sealed_manifest, data = seal_set(
                session, kek, domain_id, entries, skipped, label=label, audit_head=audit_head
            )
        finally:
            kek.destroy()
        timings["seal"] = time.monotonic() - mark
    finally:
        logins.wait()  # no drive is left in the middle of a login
    digest = hashlib.sha256(data).digest()
    name = set_object_name(sealed_manifest.set_id)

    mark = time.monotonic()
    targets, missing = finish_drive_check(logins, len(data), allow_missing=allow_missing, note=note)
    if missing:
        note(f"warning: drive(s) {', '.join(missing)} of the domain are missing and get no copy")
    timings["check"] = time.monotonic() - mark
    mark = time.monotonic()
    writes = write_everywhere(targets, name, data, progress, note)
    timings["write"] = time.monotonic() - mark
    return BackupResult(
        set_id=sealed_manifest.set_id,
        label=label,
        slot_id=session.slot_id,
        token=session.info.label,
        keys=len(entries),
        objects=objects,
        skipped=list(skipped),
        size=len(data),
        digest=digest,
        drives=writes,
        seconds=time.monotonic() - started,
        timings=timings,
        missing=missing,
    )


# --- listing ------------------------------------------------------------------------------------


@dataclass
class SetListing:
    """One set as found on the connected drives: its size (as a drive stores it, besides
    the drive's own 40-byte header), the drives that hold it, and those where the owner may
    drop it because their retention rule allows it."""

    header: SetHeader
    size: int = 0
    present: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    owner_may_drop: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        h = self.header
        return {
            "set_id": h.set_id.hex(),
            "created": h.created,
            "label": h.label,
            "slot": h.token.slot_id,
            "token": h.token.label,
            "token_serial": h.token.serial,
            "domain_id": h.domain_id.hex(),
            "profile": profile_label(h.profile),
            "keys": h.key_count,
            "bytes": self.size,
            "present": self.present,
            "verified": self.verified,
            "damaged": self.damaged,
            "owner_may_drop": self.owner_may_drop,
        }


def list_sets(
    session: HsmSession, drives: Sequence[Drive], domain_id: bytes
) -> tuple[list[SetListing], list[Problem]]:
    """The sets on the drives of ``domain_id`` (owner sessions from ``session``)."""
    logged, problems, _ = login_domain_drives(session, drives, domain_id)
    found: dict[str, SetListing] = {}
    for drive in logged:
        client, hello = drive.use()
        try:
            held = client.list(SET_PREFIX)
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
            continue
        for info in held:
            name = info.name
            try:
                header = read_set_header(drive, name)
            except SealkeepError as exc:
                listing = found.get(name)
                if listing is not None:
                    listing.present.append(hello.serial)
                    listing.damaged.append(hello.serial)
                else:
                    problems.append(Problem(drive.name, f"{name}: {explain(exc)}", error_code(exc)))
                continue
            listing = found.setdefault(name, SetListing(header, info.size))
            listing.present.append(hello.serial)
            with suppress(SealkeepError):  # a drive that cannot say keeps it: not droppable
                if owner_may_drop(drive, name):
                    listing.owner_may_drop.append(hello.serial)
            try:
                check = client.verify(name)
            except SealkeepError:
                listing.damaged.append(hello.serial)
                continue
            if check.intact:
                listing.verified.append(hello.serial)
            else:
                listing.damaged.append(hello.serial)
    listings = sorted(found.values(), key=lambda s: (s.header.created, s.header.set_id))
    return listings, problems


def owner_may_drop(drive: Drive, name: str) -> bool:
    """Whether the drive's retention rule lets its owner delete set ``name`` now: the drive
    says how many sets committed after it it holds."""
    client, hello = drive.use()
    if not hello.retention:
        return False
    newer = client.stat(name).newer
    return newer is not None and newer >= hello.retention


def find_set(drives: Sequence[Drive], reference: str) -> str:
    """The object name of the set ``reference`` among the sets on the (logged-in) drives.

    A drive that cannot list its sets is named when the set is found on none of the others
    (it may be the one that holds it)."""
    names: set[str] = set()
    problems: list[Problem] = []
    for drive in drives:
        try:
            names.update(o.name for o in drive.use()[0].list(SET_PREFIX))
        except SealkeepError as exc:
            problems.append(
                Problem(drive.name, f"cannot list its sets: {explain(exc)}", error_code(exc))
            )
    if not _looks_like_an_id(reference):
        try:
            return _set_by_header(drives, sorted(names), reference)
        except InputError:
            if not problems:
                raise
            raise drive_problems(
                f"no set {reference} on the drives that could be read", problems
            ) from None
    try:
        return resolve_set(reference, sorted(names))
    except InputError:
        wanted = reference.strip().lower().removeprefix(SET_PREFIX)
        if not problems or len(wanted) < 4 or any(set_id_of(n).startswith(wanted) for n in names):
            raise
        raise drive_problems(
            f"no set {reference} on the drives that could be read", problems
        ) from None


LATEST = "latest"


def _looks_like_an_id(reference: str) -> bool:
    wanted = reference.strip().lower().removeprefix(SET_PREFIX)
    return len(wanted) >= 4 and all(c in "0123456789abcdef" for c in wanted)


def _set_by_header(drives: Sequence[Drive], names: Sequence[str], reference: str) -> str:
    """The set ``latest`` names (the newest), or a label names (the newest with it).

    Creation times and labels come from the sets' headers, which a drive could alter; the
    set then opened is authenticated all the same, and the command reports its id, label
    and time from the authenticated manifest.
    """
    wanted = reference.strip()
    if not wanted:
        raise InputError("--set is empty: give a set id, `latest` or a set's label")
    headers: dict[str, SetHeader] = {}
    for name in names:
        for drive in drives:
            try:
                headers[name] = read_set_header(drive, name)
                break
            except (SealkeepError, ManifestError):
                continue
    if wanted == LATEST:
        chosen = sorted(headers.items(), key=lambda item: (item[1].created, item[0]))
        if not chosen:
            raise InputError("no set on the drives given (see `sealkeep sets`)")
        return chosen[-1][0]
    labelled = [(h.created, n) for n, h in headers.items() if h.label == wanted]
    if not labelled:
        raise InputError(
            f"no set has the id or label {wanted!r} on the drives given: give the hex id "
            "`sealkeep sets` shows (at least 4 characters), `latest`, or a set's label"
        )
    return max(labelled)[1]


# --- verify -------------------------------------------------------------------------------------


@dataclass
class CopyCheck:
    """What verify found about one drive's copy of a set."""

    serial: str
    address: str
    status: str  # "good", "bad", "absent"
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "port": self.address,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass
class VerifyResult:
    set_id: str
    header: SetHeader | None
    copies: list[CopyCheck]
    problems: list[Problem]
    missing: list[str] = field(default_factory=list)
    """Serials of the domain's drives whose copy was not checked (not connected, or no
    session): a verify that names them is incomplete."""

    @property
    def incomplete(self) -> bool:
        return bool(self.missing)

    @property
    def good(self) -> list[CopyCheck]:
        return [c for c in self.copies if c.status == "good"]

    @property
    def bad(self) -> list[CopyCheck]:
        return [c for c in self.copies if c.status == "bad"]

    @property
    def ok(self) -> bool:
        return bool(self.good) and not self.bad

    def to_json(self) -> dict[str, object]:
        h = self.header
        return {
            "set_id": self.set_id,
            "label": h.label if h else None,
            "keys": h.key_count if h else None,
            "ok": self.ok,
            "copies": [c.to_json() for c in self.copies],
            "missing": self.missing,
            "incomplete": self.incomplete,
            "problems": [p.to_json() for p in self.problems],
        }


def authenticate_copy(session: HsmSession, data: bytes) -> manifest.Manifest:
    """Open a set in the HSM: unwrap its KEK with the domain key, authenticate and decode it."""
    header = manifest.read_header(data)
    kek = session.open_set(header)
    try:
        return manifest.unseal(data, kek)
    finally:
        kek.destroy()


def check_copy(
    session: HsmSession, drive: Drive, name: str, proven: dict[bytes, str]
) -> tuple[CopyCheck, SetHeader | None]:
    """Check one drive's copy: digest on the drive, then authenticity in the HSM.

    ``proven`` caches digests already authenticated in the HSM (identical copies are
    opened once).
    """
    client, hello = drive.use()

    def result(status: str, detail: str = "") -> CopyCheck:
        return CopyCheck(hello.serial, drive.address, status, detail)

    try:
        stat = client.stat(name)
    except ObjectNotFound:
        return result("absent", "the drive does not hold this set"), None
    except SealkeepError as exc:
        return result("bad", explain(exc)), None
    try:
        check = client.verify(name)
    except SealkeepError as exc:
        return result("bad", explain(exc)), None
    if not check.intact or check.digest != stat.digest:
        return result("bad", "damaged on the drive: it no longer matches its digest"), None
    try:
        data = client.get(name)
    except SealkeepError as exc:
        return result("bad", explain(exc)), None
    digest = hashlib.sha256(data).digest()
    header: SetHeader | None = None
    try:
        header = manifest.read_header(data)
        if set_object_name(header.set_id) != name:
            return result("bad", f"it holds set {header.set_id_hex}, not {set_id_of(name)}"), None
        if digest not in proven:
            authenticate_copy(session, data)
            proven[digest] = hello.serial
    except (ManifestError, SetKeyError, UnsealError) as exc:
        return result("bad", f"does not authenticate in the HSM: {exc}"), header
    return result("good", "digest on the drive and manifest authenticity in the HSM"), header


def verify_set(
    session: HsmSession, drives: Sequence[Drive], domain_id: bytes, reference: str
) -> VerifyResult:
    """Check every drive's copy of a set without restoring anything."""
    logged, problems, record = login_domain_drives(session, drives, domain_id)
    if not logged:
        raise drive_problems(f"no drive of domain {short(domain_id.hex())} can be read", problems)
    checked = {d.use()[1].serial for d in logged}
    missing = [s for s in record.members if s not in checked] if record is not None else []
    name = find_set(logged, reference)
    proven: dict[bytes, str] = {}
    copies: list[CopyCheck] = []
    header: SetHeader | None = None
    for drive in logged:
        copy, found = check_copy(session, drive, name, proven)
        copies.append(copy)
        if header is None and copy.status == "good":
            header = found
    return VerifyResult(set_id_of(name), header, copies, problems, missing)


def verify_failure(result: VerifyResult) -> DriveProblems:
    """The error for a set with bad copies (or none good)."""
    bad = [Problem(f"drive {c.serial}", c.detail, EXIT_INTEGRITY) for c in result.bad]
    if not result.good:
        return drive_problems(f"no good copy of set {result.set_id}", bad + result.problems)
    return drive_problems(
        f"set {result.set_id}: {len(bad)} bad cop{'y' if len(bad) == 1 else 'ies'}",
        bad,
        "Restore works from the good copies; run a new backup to replace the bad ones.",
    )
