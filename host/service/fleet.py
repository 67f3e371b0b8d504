"""The drives as the dashboard sees them: asked HELLO when no job holds them, else the
last answers, marked as such."""

from __future__ import annotations

import time

from ..drivespec import DriveAddress, parse_drives
from ..drivestatus import survey
from ..errors import SealkeepError
from .state import ServiceState


def configured_drives(state: ServiceState) -> tuple[list[DriveAddress], str | None]:
    """The drives the service was started with, or none and why (no --drives, and no USB
    serial port found)."""
    try:
        return parse_drives(state.settings.drives), None
    except SealkeepError as exc:
        return [], str(exc)


def survey_drives(state: ServiceState) -> list[dict[str, object]]:
    """Every configured drive's status; while a job holds the drives (a HELLO now would
    interleave with its session), the last survey with ``busy`` true."""
    if state.drives_lock.acquire(blocking=False):
        try:
            addresses, _ = configured_drives(state)
            state.last_survey = survey(addresses, state.settings.drive_timeout)
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
