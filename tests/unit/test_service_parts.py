"""Parts of the service that need no server: backup previews (logged-in HSM sessions held in
memory: few per user, never another user's, closed when they expire or are replaced) and the
time left shown on a job's page."""

from __future__ import annotations

from typing import Any

import pytest
from sealkeep.service.core.errors import NotFound
from sealkeep.service.state import DRAFTS_PER_USER, Draft, ServiceState


class FakeSession:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def state() -> ServiceState:
    nothing: Any = None
    return ServiceState(nothing, nothing, nothing, nothing)


def draft(user: str, expires: float) -> tuple[Draft, FakeSession]:
    session = FakeSession()
    made: Any = session
    return Draft(user, 1, "so", "label", made, expires), session


def test_a_new_preview_beyond_the_limit_closes_the_oldest() -> None:
    service = state()
    sessions = []
    for i in range(DRAFTS_PER_USER + 1):
        made, session = draft("olivia", 10_000_000_000 + i)
        sessions.append(session)
        service.keep_draft(made)
    assert [s.closed for s in sessions] == [True] + [False] * DRAFTS_PER_USER
    other, other_session = draft("oscar", 10_000_000_000)
    service.keep_draft(other)
    assert not other_session.closed


def test_a_preview_is_taken_once_and_only_by_its_user() -> None:
    service = state()
    made, session = draft("olivia", 10_000_000_000)
    key = service.keep_draft(made)
    with pytest.raises(NotFound):
        service.take_draft(key, "mallory")
    assert service.take_draft(key, "olivia").session is made.session and not session.closed
    with pytest.raises(NotFound):
        service.take_draft(key, "olivia")


def test_an_expired_preview_is_closed() -> None:
    service = state()
    made, session = draft("olivia", 5.0)
    key = service.keep_draft(made)
    service.expire_drafts(now=6.0)
    assert session.closed
    with pytest.raises(NotFound, match="expired"):
        service.take_draft(key, "olivia")


def test_time_left_comes_from_the_fraction_done() -> None:
    from sealkeep.service.core.operations import TimeLeft

    left = TimeLeft()
    assert left(0.0) is None and left(1.0) == 0.0
    left.started -= 10.0  # ten seconds in
    assert left(0.25) == 30.0 and left(0.5) == 10.0
