"""What only a drive's custodian may do: delete a set, reset a drive.

A drive lets its owner (the host, with credentials the HSM derives) add sets and never take
one away, so malware on the HSM host cannot erase the backups. Reclaiming space and retiring
a drive are the custodian's, through a custodian session opened with their passphrase (or
the drive's presence button, which these commands do not need).

The one exception is a domain created with a retention rule N: each of its drives lets the
owner drop a set once N sets committed after it are on that drive. Pruning then asks the
drives first, in owner sessions, and needs custodians only where a drive keeps the set.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .backupset import resolve_set, set_id_of
from .client import DriveClient, Role
from .domain import (
    SET_PREFIX,
    Drive,
    Problem,
    drive_kdf_params,
    drive_problems,
    error_code,
    explain,
    login_domain_drives,
)
from .errors import EXIT_AUTH, SealkeepError
from .hsm import HsmSession
from .kdf import derive_custodian_keys
from .pins import InputError, Passphrases

Note = Callable[[str], None]


@dataclass(frozen=True)
class EraseResult:
    """What was erased where, and the drives that could not be."""

    what: str
    done: list[str]
    problems: list[Problem]
    #: of ``done``, the drives whose retention rule let the owner session delete it
    by_owner: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "erased": self.what,
            "drives": self.done,
            "by_owner": self.by_owner,
            "problems": [p.to_json() for p in self.problems],
        }


def custodians_can_answer(passphrases: Passphrases) -> bool:
    """A passphrases file, or a terminal to ask each custodian at."""
    return passphrases.from_file or sys.stdin.isatty()


def require_custodians(passphrases: Passphrases, what: str) -> None:
    """Refuse at once when no custodian can answer: no file and no terminal to ask at."""
    if not custodians_can_answer(passphrases):
        raise InputError(
            f"{what} needs each drive's custodian: give --passphrases FILE, or run at a "
            "terminal where the custodians can type their passphrases"
        )


def custodian_session(drive: Drive, passphrases: Passphrases) -> DriveClient:
    """A custodian session on ``drive``, its passphrase checked by the drive."""
    client, hello = drive.use()
    params = drive_kdf_params(hello)  # a drive announcing weak costs gets no passphrase
    keys = derive_custodian_keys(passphrases.existing(hello.serial), params)
    client.authenticate(Role.CUSTODIAN, keys.credential)
    return client


def _each(
    drives: Sequence[Drive],
    passphrases: Passphrases,
    act: Callable[[Drive, DriveClient], bool],
) -> tuple[list[str], list[Problem]]:
    done: list[str] = []
    problems: list[Problem] = []
    for drive in drives:
        try:
            client = custodian_session(drive, passphrases)
            if act(drive, client):
                done.append(drive.name)
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
    return done, problems


def prune_set(
    drives: Sequence[Drive],
    reference: str,
    passphrases: Passphrases,
    note: Note,
    owner: HsmSession | None = None,
) -> EraseResult:
    """Delete set ``reference`` from every drive given that holds it.

    With ``owner`` (a session on the slot holding the drives' domain), the drives of that
    domain are asked in owner sessions first: where a drive's retention rule allows it the
    owner deletes the set, and custodians are needed only for the drives that keep it (and
    for drives the owner cannot open). When a drive keeps it and no custodian can answer,
    nothing is deleted anywhere."""
    if owner is not None:
        result = _prune_as_owner(drives, reference, passphrases, note, owner)
        if result is not None:
            return result
    return _prune_with_custodians(drives, reference, passphrases, note)


def _prune_as_owner(
    drives: Sequence[Drive],
    reference: str,
    passphrases: Passphrases,
    note: Note,
    owner: HsmSession,
) -> EraseResult | None:
    """The owner's part of a prune and the custodians' for the rest; None when the owner
    finds the set on none of its drives (the custodians then look for it as before)."""
    domain_id = owner.require_domain()
    logged, not_opened, _ = login_domain_drives(owner, drives, domain_id)
    held: dict[str, list[str]] = {}
    for drive in list(logged):
        try:
            held[drive.name] = [info.name for info in drive.use()[0].list(SET_PREFIX)]
        except SealkeepError as exc:  # its custodian looks instead
            not_opened.append(Problem(drive.name, explain(exc), error_code(exc)))
            logged.remove(drive)
    try:
        name = resolve_set(reference, sorted({n for names in held.values() for n in names}))
    except InputError:
        if len(logged) == len(drives):
            raise
        return None
    allowed: list[tuple[Drive, int]] = []
    kept: list[Problem] = []
    for drive in logged:
        if name not in held[drive.name]:
            continue
        try:
            newer = drive.use()[0].stat(name).newer
        except SealkeepError:
            newer = None
        retention = drive.use()[1].retention
        if retention and newer is not None and newer >= retention:
            allowed.append((drive, newer))
        else:
            kept.append(Problem(drive.name, _kept_because(retention, newer), EXIT_AUTH))
    others = [d for d in drives if d not in logged]
    if kept and not custodians_can_answer(passphrases):
        raise drive_problems(
            f"set {set_id_of(name)} cannot be deleted by the host alone",
            kept,
            "Nothing was deleted. Give --passphrases FILE, or run at a terminal where each of "
            "these drives' custodians can type their passphrase, or wait until enough newer "
            "backups are on them",
        )
    done: list[str] = []
    problems: list[Problem] = []
    for drive, newer in allowed:
        try:
            drive.use()[0].delete(name)
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
            continue
        note(
            f"drive {drive.serial}: set {set_id_of(name)} deleted by the owner (retention "
            f"{drive.use()[1].retention}: {newer} newer set(s) on the drive)"
        )
        done.append(drive.name)
    by_owner = list(done)
    rest = [d for d in logged if any(p.drive == d.name for p in kept)]
    if custodians_can_answer(passphrases):
        rest += others
    else:  # only drives the owner could not open are left: they are named, not opened
        problems += [p for p in not_opened if any(p.drive == d.name for d in others)]
    if rest:
        for problem in kept:
            note(f"{problem.drive}: {problem.reason}; its custodian deletes it")
        try:
            more = _prune_with_custodians(rest, name, passphrases, note)
        except InputError:
            if kept:
                raise
            # The set is on none of the drives only custodians could open: all done.
            more = EraseResult("", [], [])
        done += more.done
        problems += more.problems
    return EraseResult(f"set {set_id_of(name)}", done, problems, by_owner)


def _kept_because(retention: int, newer: int | None) -> str:
    if not retention:
        return "no retention rule: only its custodian deletes sets"
    if newer is None:
        return f"retention {retention} keeps it: the drive has no commit order for it"
    return f"retention {retention} keeps it: {newer} newer set(s) on the drive"


def _prune_with_custodians(
    drives: Sequence[Drive], reference: str, passphrases: Passphrases, note: Note
) -> EraseResult:
    """Delete set ``reference`` from every drive given that holds it, each opened by its
    custodian."""
    require_custodians(passphrases, "deleting a set")
    held: list[tuple[Drive, list[str]]] = []
    problems: list[Problem] = []
    for drive in drives:  # each custodian opens their drive, which then lists its sets
        try:
            client = custodian_session(drive, passphrases)
            held.append((drive, [info.name for info in client.list(SET_PREFIX)]))
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
    if not held:  # no custodian opened a drive: say why, drive by drive
        return EraseResult(f"set {reference}", [], problems)
    name = resolve_set(reference, sorted({n for _, names in held for n in names}))
    done: list[str] = []
    for drive, names in held:
        if name not in names:
            continue
        try:
            client, _ = drive.use()
            client.delete(name)
            client.end_session()
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
            continue
        note(f"drive {drive.serial}: set {set_id_of(name)} deleted by its custodian")
        done.append(drive.name)
    return EraseResult(f"set {set_id_of(name)}", done, problems)


def reset_drives(drives: Sequence[Drive], passphrases: Passphrases, note: Note) -> EraseResult:
    """Factory reset every drive given: blank again, everything on it erased."""
    require_custodians(passphrases, "a factory reset")

    def reset(drive: Drive, client: DriveClient) -> bool:
        client.factory_reset()
        note(f"drive {drive.serial}: factory reset, blank")
        return True

    done, problems = _each(drives, passphrases, reset)
    return EraseResult("everything (factory reset)", done, problems)
