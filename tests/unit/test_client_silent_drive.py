"""A drive that stops answering during authentication is given up on after the ordinary
timeout, unless it has failures on record, when it may be delaying its answer to
AUTH_BEGIN on purpose (and is then waited for)."""

from __future__ import annotations

import time

import pytest
from sealkeep import errors as E
from sealkeep.client import DriveClient, Role
from sealkeep.protocol import messages
from test_client import CUSTODIAN, DOMAIN, KDF, OWNER, SALT, FakeDrive, FakeLink


def silent_on_challenge(drive: FakeDrive) -> None:
    """The drive answers everything but AUTH_BEGIN (its challenge or its ERROR)."""

    def drop(number: int, frame: bytes) -> list[bytes]:
        return [] if frame[1] in (messages.AUTH_CHALLENGE, messages.ERROR) else [frame]

    drive.reply_filter = drop


def delay_challenges(drive: FakeDrive, seconds: float) -> None:
    """The drive keeps its challenge to itself for that long, saying nothing."""
    real = drive.process
    kept: list[tuple[float, bytes]] = []

    def slow() -> bytes:
        out = real()
        if out and drive.requests and drive.requests[-1][0] == messages.AUTH_BEGIN:
            kept.append((time.monotonic() + seconds, out))
            out = b""
        if kept and time.monotonic() >= kept[0][0]:
            out = kept.pop(0)[1] + out
        return out

    drive.process = slow  # type: ignore[method-assign]


def test_silent_drive_without_failures_is_not_waited_for() -> None:
    drive = FakeDrive()
    with DriveClient(FakeLink(drive), timeout=0.3) as client:
        client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        silent_on_challenge(drive)
        started = time.monotonic()
        with pytest.raises(E.LinkError) as info:
            client.authenticate(Role.OWNER, OWNER)
        assert info.value.timed_out
        assert time.monotonic() - started < 3.0


def test_drive_with_failures_on_record_gets_the_backoff_allowance() -> None:
    drive = FakeDrive()
    with DriveClient(FakeLink(drive), timeout=0.3) as client:
        client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        for _ in range(3):  # refused attempts in this connection: the next may be delayed
            with pytest.raises(E.AuthenticationFailed):
                client.authenticate(Role.CUSTODIAN, OWNER)
        # The drive answers the next AUTH_BEGIN only after 1 s, longer than the timeout.
        delay_challenges(drive, 1.0)
        client.authenticate(Role.CUSTODIAN, CUSTODIAN)
        assert client.session_role == Role.CUSTODIAN


def test_failures_reported_by_hello_count_too() -> None:
    drive = FakeDrive()
    with DriveClient(FakeLink(drive), timeout=0.3) as client:
        client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    drive.failures = [5, 0]  # left by someone else: HELLO says the owner is slowed
    with DriveClient(FakeLink(drive), timeout=0.3) as client:
        delay_challenges(drive, 1.0)
        client.authenticate(Role.OWNER, OWNER)
        assert client.session_role == Role.OWNER
