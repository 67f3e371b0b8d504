"""A drive that babbles: an unending stream of bytes that never makes a reply.

Requests that allow a drive extra time (AUTH_PROVE while it backs off, up to half a minute)
must not wait all of it for a drive that is plainly not quiet and busy, and an honest drive
that is quiet while it backs off still gets the whole allowance.
"""

from __future__ import annotations

import time

import pytest
from sealkeep.client import BACKOFF_ALLOWANCE, DriveClient
from sealkeep.errors import LinkError
from sealkeep.protocol import framing, messages


class Babbler:
    """A transport whose drive sends bytes without a single delimiter, forever (or, with
    quiet, sends nothing at all, then one reply after ``answer_after`` seconds)."""

    def __init__(
        self, quiet: bool = False, answer_after: float = 0.0, oversized: bool = False
    ) -> None:
        self.quiet = quiet
        self.oversized = oversized
        self.pending = False
        self.answer_after = answer_after
        self.started = 0.0
        self.seq = 0

    @property
    def url(self) -> str:
        return "fake://babbler"

    @property
    def mtu(self) -> int:
        return 1 << 16

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, data: bytes) -> None:
        frame = framing.cobs_decode(data[:-1])
        self.seq = (frame[3] << 8) | frame[4]
        self.started = time.monotonic()
        self.pending = True

    def receive(self, timeout: float) -> bytes:
        if self.oversized:
            # One frame twice the maximum in place of each reply, then silence.
            if self.pending:
                self.pending = False
                return bytes(range(1, 256)) * 33 + b"\x00"
            time.sleep(min(timeout, 0.01))
            return b""
        if not self.quiet:
            time.sleep(0.001)
            return bytes(range(1, 256)) * 16
        due = self.started + self.answer_after
        now = time.monotonic()
        if now < due:
            time.sleep(min(timeout, due - now))
            return b""
        self.answer_after = 1e9  # one reply
        # ERROR AUTH_FAILED {1: 12, 2: "wrong"}: a well-formed answer after the delay.
        return framing.build_frame(messages.ERROR, self.seq, b"\xa2\x01\x0c\x02\x65wrong")


@pytest.mark.parametrize("oversized", [False, True], ids=["endless", "oversized"])
def test_babbling_drive_does_not_get_the_backoff_allowance(oversized: bool) -> None:
    client = DriveClient(Babbler(oversized=oversized), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(LinkError) as info:
        client.call(
            messages.AUTH_PROVE, {1: b"p" * 32}, messages.AUTH_OK, timeout=BACKOFF_ALLOWANCE
        )
    took = time.monotonic() - started
    assert info.value.timed_out
    assert took < 3.0, f"waited {took:.1f} s for a drive that never stops talking"


def test_quiet_drive_backing_off_gets_the_allowance() -> None:
    client = DriveClient(Babbler(quiet=True, answer_after=1.0), timeout=0.3)
    with pytest.raises(Exception) as info:
        client.call(messages.AUTH_PROVE, {1: b"p" * 32}, messages.AUTH_OK, timeout=5.0)
    # The answer came after the ordinary timeout, within the allowance, and was read.
    assert not isinstance(info.value, LinkError)
    assert "wrong" in str(info.value)
