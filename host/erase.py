"""What only a drive's custodian may do: delete a set, reset a drive.

A drive lets its owner (the host, with credentials the HSM derives) add sets and never take
one away, so malware on the HSM host cannot erase the backups. Reclaiming space and retiring
a drive are the custodian's, through a custodian session opened with their passphrase (or
the drive's presence button, which these commands do not need).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .backupset import resolve_set, set_id_of
from .client import DriveClient, Role
from .domain import (
    SET_PREFIX,
    Drive,
    Problem,
    drive_kdf_params,
    error_code,
    explain,
)
from .errors import SealkeepError
from .kdf import derive_custodian_keys
from .pins import InputError, Passphrases

Note = Callable[[str], None]


@dataclass(frozen=True)
class EraseResult:
    """What was erased where, and the drives that could not be."""

    what: str
    done: list[str]
    problems: list[Problem]

    def to_json(self) -> dict[str, object]:
        return {
            "erased": self.what,
            "drives": self.done,
            "problems": [p.to_json() for p in self.problems],
        }


def require_custodians(passphrases: Passphrases, what: str) -> None:
    """Refuse at once when no custodian can answer: no file and no terminal to ask at."""
    if not passphrases.from_file and not sys.stdin.isatty():
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
    drives: Sequence[Drive], reference: str, passphrases: Passphrases, note: Note
) -> EraseResult:
    """Delete set ``reference`` from every drive given that holds it."""
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
        note(f"drive {drive.serial}: set {set_id_of(name)} deleted")
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
