"""What the running service holds in memory: settings, the HSM module, the job runner,
the drives' last answers, and backup previews waiting for their start."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from ..drivestatus import DriveStatus
from ..hsm import Hsm, HsmSession
from .audit import ServiceKey
from .core.errors import NotFound
from .jobs import JobRunner
from .settings import Settings

DRAFT_SECONDS = 120.0
"""How long a backup preview keeps its logged-in HSM session, waiting for Start."""
DRAFTS_PER_USER = 3
"""Previews a user may keep open at once; a new one closes the oldest (each holds an HSM
session)."""


@dataclass
class Draft:
    """A previewed backup: the logged-in session waits here (in memory only) for Start."""

    user: str
    slot_id: int
    so_id: str
    label: str
    session: HsmSession
    expires: float


@dataclass
class ServiceState:
    settings: Settings
    key: ServiceKey
    hsm: Hsm
    runner: JobRunner
    drives_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held by whatever talks to the drives: a job, or a survey for the dashboard."""
    last_survey: list[DriveStatus] = field(default_factory=list)
    last_survey_at: float = 0.0
    _drafts: dict[str, Draft] = field(default_factory=dict)
    _drafts_lock: threading.Lock = field(default_factory=threading.Lock)

    def keep_draft(self, draft: Draft) -> str:
        self.expire_drafts()
        draft_id = secrets.token_urlsafe(16)
        with self._drafts_lock:
            mine = sorted((d.expires, k) for k, d in self._drafts.items() if d.user == draft.user)
            oldest = [
                self._drafts.pop(k) for _, k in mine[: max(0, len(mine) + 1 - DRAFTS_PER_USER)]
            ]
            self._drafts[draft_id] = draft
        for old in oldest:
            old.session.close()
        return draft_id

    def take_draft(self, draft_id: str, user: str) -> Draft:
        self.expire_drafts()
        with self._drafts_lock:
            draft = self._drafts.get(draft_id)
            if draft is None or draft.user != user:
                raise NotFound(
                    "this preview has expired or is not yours: start the backup again "
                    "from the slot and SO password"
                )
            del self._drafts[draft_id]
        return draft

    def expire_drafts(self, now: float | None = None, *, everything: bool = False) -> None:
        now = time.monotonic() if now is None else now
        with self._drafts_lock:
            gone = [k for k, d in self._drafts.items() if everything or d.expires < now]
            drafts = [self._drafts.pop(k) for k in gone]
        for draft in drafts:
            draft.session.close()
