"""The drives as the dashboard sees them: asked HELLO when no job holds them, else the
last answers, marked as such."""

from __future__ import annotations

import time

from ..drivespec import NoDrivesFound, parse_drives
from ..drivestatus import survey
from .state import ServiceState


def survey_drives(state: ServiceState) -> list[dict[str, object]]:
    """Every configured drive's status; while a job holds the drives (a HELLO now would
    interleave with its session), the last survey with ``busy`` true."""
    if state.drives_lock.acquire(blocking=False):
        try:
            try:
                addresses = parse_drives(state.settings.drives)
            except NoDrivesFound:
                # None plugged in and none named: the dashboard says so, it is no error.
                addresses = []
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
