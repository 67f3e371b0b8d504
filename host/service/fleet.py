"""The drives as the dashboard sees them: asked HELLO when no job holds them, else the
last answers, marked as such."""

from __future__ import annotations

import time

from ..drivespec import DriveAddress, parse_drives
from ..drivestatus import DriveStatus, survey
from ..errors import SealkeepError
from . import db
from .audit import AuditLog
from .state import ServiceState


def configured_drives(state: ServiceState) -> tuple[list[DriveAddress], str | None]:
    """The drives the service was started with, or none and why (no --drives, and no USB
    serial port found)."""
    try:
        return parse_drives(state.settings.drives), None
    except SealkeepError as exc:
        return [], str(exc)


def drive_condition(status: DriveStatus) -> str:
    """``unreachable`` or the state the drive gives (blank, owned...)."""
    if status.hello is None:
        return "unreachable"
    return status.hello.state


def record_changes(
    state: ServiceState, before: dict[str, DriveStatus], after: list[DriveStatus]
) -> None:
    """An audit record for each drive whose condition changed since the last survey (the
    first survey after a start has nothing to compare with, and records nothing)."""
    changes = []
    for status in after:
        old = before.get(status.address.port)
        if old is None:
            continue
        was, now = drive_condition(old), drive_condition(status)
        if was != now or old.serial != status.serial:
            changes.append((status, was, now, old.serial))
    if not changes:
        return
    conn = db.connect(state.settings.db_path)
    try:
        audit = AuditLog(conn, state.key)
        for status, was, now, old_serial in changes:
            audit.append(
                "drive.event",
                actor=None,
                address=None,
                target=status.serial or old_serial or status.address.port,
                result=now,
                detail={
                    "port": status.address.port,
                    "was": was,
                    "serial_was": old_serial,
                    "error": status.error,
                },
            )
        conn.commit()
    finally:
        conn.close()


def survey_drives(state: ServiceState) -> list[dict[str, object]]:
    """Every configured drive's status; while a job holds the drives (a HELLO now would
    interleave with its session), the last survey with ``busy`` true."""
    if state.drives_lock.acquire(blocking=False):
        try:
            addresses, _ = configured_drives(state)
            before = {s.address.port: s for s in state.last_survey}
            state.last_survey = survey(addresses, state.settings.drive_timeout)
            record_changes(state, before, state.last_survey)
            state.last_survey_at = time.time()
        finally:
            state.drives_lock.release()
        busy = False
    else:
        busy = True
    return [
        {
            **s.as_json(),
            "reachable": s.hello is not None,
            "checked": state.last_survey_at,
            "busy": busy,
        }
        for s in state.last_survey
    ]
